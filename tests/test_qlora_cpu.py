"""QLoRA on a CPU computes the right gradients: a LoRA adapter on bitsandbytes' 4-bit weights gets the same gradients
as the same adapter on those weights dequantized to float32 (the 4-bit matmuls pass the gradient to the layers below).
"""

import copy

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")


def _has_avx512bf16() -> bool:
    from bitsandbytes.functional import has_avx512bf16

    return has_avx512bf16()


@pytest.mark.parametrize("after_inference", [False, True], ids=["fresh", "after-a-no-grad-eval-forward"])
def test_lora_gradients_through_4bit_weights_equal_those_through_the_dequantized_weights(tiny_model_dir, after_inference):
    # after_inference: a PPO rollout or a held-out evaluation runs the model in eval mode without gradients first. On
    # an AVX512-BF16 CPU bitsandbytes then repacks the weights for a kernel without autograd, and the gradients below
    # every 4-bit layer were lost; prefkit's trainers keep the weights trainable (keep_4bit_weights_trainable_on_cpu).
    from peft import LoraConfig, get_peft_model

    from prefkit.models import keep_4bit_weights_trainable_on_cpu, load_model

    quantized, tokenizer = load_model(tiny_model_dir, quantization="4bit")
    if after_inference:
        assert keep_4bit_weights_trainable_on_cpu(quantized) > 0
    dense, _ = load_model(tiny_model_dir, dtype="float32")
    replaced = 0
    for name, module in quantized.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
            dense.get_submodule(name).weight.data.copy_(weight)
            replaced += 1
    assert replaced > 0
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)  # B != 0
    torch.manual_seed(1)
    quantized = get_peft_model(quantized, copy.deepcopy(config))
    torch.manual_seed(1)
    dense = get_peft_model(dense, copy.deepcopy(config))
    ids = tokenizer(["hello there, how are you today?"], return_tensors="pt").input_ids
    if after_inference:
        quantized.eval()
        with torch.no_grad():
            quantized(ids)
        packed = [m for m in quantized.modules() if getattr(getattr(m, "weight", None), "quant_state", None) is not None
                  and getattr(m.weight.quant_state, "packing_format_for_cpu", False)]
        assert packed == []
    losses = []
    for model in (quantized, dense):
        model.train()
        loss = model(ids, labels=ids).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    grads_q = {n: p.grad for n, p in quantized.named_parameters() if p.requires_grad}
    grads_d = {n: p.grad for n, p in dense.named_parameters() if p.requires_grad}
    assert grads_q.keys() == grads_d.keys() and len(grads_q) > 0
    first_layer = [n for n in grads_q if ".layers.0." in n]
    assert first_layer  # reaching layer 0 needs the gradient through every 4-bit matmul above it
    for name in grads_q:
        assert grads_d[name].abs().sum() > 0, name
        torch.testing.assert_close(grads_q[name].float(), grads_d[name], rtol=1e-4, atol=1e-6, msg=name)


def test_weights_packed_by_earlier_inference_are_unpacked_for_training(tiny_model_dir):
    from prefkit.models import keep_4bit_weights_trainable_on_cpu, load_model

    if not _has_avx512bf16():
        pytest.skip("bitsandbytes packs 4-bit weights for inference only on CPUs with AVX512-BF16")
    model, tokenizer = load_model(tiny_model_dir, quantization="4bit")
    layer = next(m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    before = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).clone()
    model.eval()
    with torch.no_grad():
        model(tokenizer(["hello"], return_tensors="pt").input_ids)
    assert layer.weight.quant_state.packing_format_for_cpu  # what a user's own inference leaves behind
    keep_4bit_weights_trainable_on_cpu(model)
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    # bitsandbytes' inverse is approximate (its docstring: best effort): bf16 rounding, 2^-8 of the weights' scale.
    after = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
    assert (after - before).abs().max() <= 2**-8 * before.abs().max()


def test_trainers_load_4bit_models_with_trainable_weights(tiny_model_dir, tmp_path, monkeypatch):
    from datasets import Dataset

    from prefkit.trainers.ppo import PPOConfig, PPOTrainer

    # Every layer claims bitsandbytes' packed CPU kernel, as on an AVX512-BF16 CPU, whatever this CPU has: the
    # trainer must switch it off.
    monkeypatch.setattr(bnb.nn.modules, "has_avx512bf16", lambda: True)

    args = PPOConfig(output_dir=str(tmp_path), quantization="4bit", per_device_train_batch_size=2, max_steps=1,
                     report_to="none", save_strategy="no", advantage_estimator="reinforce")
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=lambda prompts, completions, **kwargs: [0.0] * len(completions),
                         args=args, train_dataset=Dataset.from_list([{"prompt": "hi"}] * 4))
    layers = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.support_avx512bf16_for_cpu is False for m in layers)
