"""QLoRA on a CPU computes the right gradients: a LoRA adapter on bitsandbytes' 4-bit weights gets the same gradients
as the same adapter on those weights dequantized to float32 (the 4-bit matmuls pass the gradient to the layers below).
"""

import copy

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")


def test_lora_gradients_through_4bit_weights_equal_those_through_the_dequantized_weights(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from prefkit.models import load_model

    quantized, tokenizer = load_model(tiny_model_dir, quantization="4bit")
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
