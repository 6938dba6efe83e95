"""The memory plan: budgets parse or fail clearly; the estimate grows with what costs memory and matches the bytes
PyTorch saves for backward; the plan keeps the effective batch, turns checkpointing off when it fits without it and
on when it must, refuses what cannot fit; an explicit budget applies to DPO training on CPU and "auto" on CPU changes
nothing."""

import json

import pytest
import torch

from prefkit.memory_plan import (
    MemoryPlanError,
    ModelShape,
    Workload,
    estimate_memory,
    layer_activation_bytes,
    parse_memory_budget,
    plan_for_trainer,
    plan_memory,
)

GiB = 1024**3

# A Llama-3-8B-shaped model: what the users train with QLoRA on a 24 GB card.
LLAMA_8B = ModelShape(num_layers=32, hidden_size=4096, intermediate_size=14336, num_heads=32, num_kv_heads=8,
                      head_dim=128, vocab_size=128256, tie_word_embeddings=False, dtype_bytes=2, model_type="llama")
QLORA_DPO = Workload(method="dpo", seq_len=1024, rows_per_example=2, quantization="4bit", use_peft=True, lora_r=16,
                     weight_bytes=2, activation_bytes=2, reference="adapter")


# -- the budget ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value,expected", [
    ("24GiB", 24 * GiB), ("24GB", 24 * 10**9), ("500MiB", 500 * 1024**2), ("1.5GiB", int(1.5 * GiB)),
    (" 24 gib ", 24 * GiB), ("24G", 24 * GiB), (25769803776, 25769803776), ("25769803776", 25769803776),
    ("auto", "auto"), ("AUTO", "auto"), ("off", None), (None, None),
])
def test_budget_forms_parse(value, expected):
    assert parse_memory_budget(value) == expected


@pytest.mark.parametrize("value", ["12XB", "GiB", "-1GB", "0", 0, -5, "24 GiB please", True])
def test_a_bad_budget_is_a_value_error_naming_the_field_and_the_forms(value):
    with pytest.raises(ValueError, match=r"memory_budget=.*24GiB.*'auto'.*'off'"):
        parse_memory_budget(value)


@pytest.mark.parametrize("config", ["DPOConfig", "RewardConfig", "PPOConfig"])
def test_each_config_refuses_a_bad_budget(config, tmp_path):
    import prefkit

    with pytest.raises(ValueError, match="memory_budget='12XB'"):
        getattr(prefkit, config)(output_dir=str(tmp_path), memory_budget="12XB", report_to="none")


@pytest.mark.parametrize("command", ["dpo", "reward", "ppo"])
def test_a_bad_budget_on_the_command_line_is_one_error_line(command, capsys):
    from prefkit.cli import main

    assert main([command, "--memory_budget", "12XB"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and "12XB" in err and "24GiB" in err


# -- the estimate ----------------------------------------------------------------------------------------------------


def _total(workload=QLORA_DPO, micro=2, checkpointing=True, shape=LLAMA_8B, **changes):
    from dataclasses import replace

    return estimate_memory(shape, replace(workload, **changes), micro_batch_size=micro,
                           gradient_checkpointing=checkpointing).total


def test_the_estimate_grows_with_batch_length_and_rank():
    assert _total(micro=1) < _total(micro=2) < _total(micro=4)
    assert _total(seq_len=512) < _total(seq_len=1024) < _total(seq_len=2048)
    assert _total(lora_r=8) < _total(lora_r=16) < _total(lora_r=64)
    assert _total(checkpointing=True) < _total(checkpointing=False)


def test_four_bit_weights_are_smaller_than_eight_bit_than_bf16_than_float32():
    def weights(**changes):
        from dataclasses import replace

        return estimate_memory(LLAMA_8B, replace(QLORA_DPO, **changes), micro_batch_size=1,
                               gradient_checkpointing=True).weights

    four, eight = weights(quantization="4bit"), weights(quantization="8bit")
    bf16, fp32 = weights(quantization=None, weight_bytes=2), weights(quantization=None, weight_bytes=4)
    assert four < eight < bf16 < fp32
    assert bf16 == LLAMA_8B.num_params * 2
    # NF4: half a byte per linear weight plus statistics; embeddings and head float32 (prepare_model_for_kbit_training)
    assert 0.5 * LLAMA_8B.linear_params < four - 4 * LLAMA_8B.other_params < 0.53 * LLAMA_8B.linear_params


def test_full_fine_tuning_counts_a_reference_copy_that_precomputing_drops():
    from dataclasses import replace

    full = replace(QLORA_DPO, quantization=None, use_peft=False, weight_bytes=4, activation_bytes=2, reference="copy")
    kept = estimate_memory(LLAMA_8B, full, micro_batch_size=1, gradient_checkpointing=True)
    dropped = estimate_memory(LLAMA_8B, full, micro_batch_size=1, gradient_checkpointing=True,
                              precompute_ref_log_probs=True)
    assert kept.reference == LLAMA_8B.num_params * 4 and dropped.reference == 0
    assert dropped.reference_pass == 0 < kept.reference_pass
    # AdamW: gradients and two moments in float32 on top of the float32 weights
    assert kept.trainable == LLAMA_8B.num_params * 4 * 3


def _saved_for_backward(forward, parameters) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``forward()``, parameters excluded."""
    parameter_storages = {p.untyped_storage().data_ptr() for p in parameters}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(saved.values())


@pytest.mark.parametrize("family,hidden,intermediate,heads,kv_heads,layers,batch,length", [
    ("llama", 64, 176, 4, 2, 2, 2, 64),
    ("qwen2", 128, 344, 8, 8, 3, 4, 96),
    ("llama", 96, 256, 6, 3, 2, 3, 128),
])
def test_the_activation_estimate_is_within_a_third_of_what_autograd_saves(
        family, hidden, intermediate, heads, kv_heads, layers, batch, length):
    """The decoder stack's activation term against a count of the bytes saved for backward (float32, CPU, SDPA), with
    and without gradient checkpointing; the estimate must land within 0.75x-1.33x of the count."""
    import transformers

    config_class, model_class = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    }[family]
    config = config_class(hidden_size=hidden, intermediate_size=intermediate, num_attention_heads=heads,
                          num_key_value_heads=kv_heads, num_hidden_layers=layers, vocab_size=512,
                          tie_word_embeddings=True)
    torch.manual_seed(0)
    model = model_class(config).train()
    input_ids = torch.randint(0, 512, (batch, length))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :5] = 0  # left padding, as in a real batch

    def forward():
        return model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state

    measured = _saved_for_backward(forward, model.parameters())
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    measured_stored = _saved_for_backward(forward, model.parameters())  # each layer's input only

    shape = ModelShape.from_config(config)
    workload = Workload(method="reward", seq_len=length, rows_per_example=1, weight_bytes=4, activation_bytes=4)
    plain = estimate_memory(shape, workload, micro_batch_size=batch, gradient_checkpointing=False).activations
    checkpointed = estimate_memory(shape, workload, micro_batch_size=batch, gradient_checkpointing=True).activations
    assert 0.75 <= plain / measured <= 1.33, (plain, measured)
    # with checkpointing the peak is the stored layer inputs plus one layer recomputed during backward
    assert 0.75 <= checkpointed / (measured_stored + measured / layers) <= 1.33, (checkpointed, measured_stored)
    assert layer_activation_bytes(shape, workload) * layers * batch * length < plain


# -- the plan --------------------------------------------------------------------------------------------------------


def test_a_large_budget_keeps_the_effective_batch_in_one_micro_batch_without_checkpointing():
    plan = plan_memory(141 * GiB, LLAMA_8B, QLORA_DPO, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                       gradient_checkpointing=True, precompute_ref_log_probs=False)
    assert (plan.per_device_train_batch_size, plan.gradient_accumulation_steps) == (8, 1)
    assert plan.gradient_checkpointing is False and plan.fits
    assert plan.estimate.total <= plan.usable_bytes < plan.budget_bytes
    assert "gradient_checkpointing" in plan.summary() and "True -> False" in plan.summary()


def test_a_24gib_budget_keeps_the_effective_batch_and_checkpoints():
    plan = plan_memory(24 * GiB, LLAMA_8B, QLORA_DPO, per_device_train_batch_size=8, gradient_accumulation_steps=4,
                       gradient_checkpointing=False, precompute_ref_log_probs=False)
    assert plan.per_device_train_batch_size * plan.gradient_accumulation_steps == 32
    assert plan.gradient_checkpointing is True and plan.fits
    # the micro-batch is the largest divisor of 32 that fits: the next one up does not
    bigger = next(d for d in (32, 16, 8, 4, 2, 1) if d > plan.per_device_train_batch_size and 32 % d == 0) \
        if plan.per_device_train_batch_size < 32 else None
    if bigger:
        assert _total(micro=bigger, checkpointing=True) > plan.usable_bytes


def test_checkpointing_goes_on_exactly_when_the_micro_batch_does_not_fit_without_it():
    without = _total(micro=4, checkpointing=False)
    with_ = _total(micro=4, checkpointing=True)
    budget = int((with_ + without) / 2 / 0.9)  # between the two, once the 10% reserve is taken off
    plan = plan_memory(budget, LLAMA_8B, QLORA_DPO, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                       precompute_ref_log_probs=False)
    assert (plan.per_device_train_batch_size, plan.gradient_checkpointing) == (4, True)


def test_precomputed_reference_log_probs_only_when_nothing_fits_with_the_copy():
    from dataclasses import replace

    full = replace(QLORA_DPO, quantization=None, use_peft=False, weight_bytes=2, reference="copy")
    with_copy = estimate_memory(LLAMA_8B, full, micro_batch_size=1, gradient_checkpointing=True)
    budget = int((with_copy.total - with_copy.reference / 2) / 0.9)
    plan = plan_memory(budget, LLAMA_8B, full, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                       precompute_ref_log_probs=False, can_precompute=True)
    assert plan.precompute_ref_log_probs is True and plan.estimate.reference == 0
    roomy = plan_memory(4 * budget, LLAMA_8B, full, per_device_train_batch_size=2, precompute_ref_log_probs=False,
                        can_precompute=True)
    assert roomy.precompute_ref_log_probs is False


def test_an_impossible_budget_says_the_estimate_the_budget_and_what_to_change():
    from dataclasses import replace

    full = replace(QLORA_DPO, quantization=None, use_peft=False, weight_bytes=2, reference="adapter")
    with pytest.raises(MemoryPlanError) as raised:
        plan_memory(24 * GiB, LLAMA_8B, full, per_device_train_batch_size=8, precompute_ref_log_probs=False)
    message = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert "memory_budget=24.00 GiB" in message and "estimated at" in message
    assert "--quantization 4bit" in message and "max_length" in message and "--use_peft" in message


def test_ppo_keeps_the_mini_batch_and_counts_the_rollout_and_value_adapter(tiny_model_dir, tmp_path):
    from prefkit import PPOConfig

    args = PPOConfig(output_dir=str(tmp_path), use_peft=True, per_device_train_batch_size=2,
                     gradient_accumulation_steps=4, num_mini_batches=2, memory_budget="8GiB", report_to="none")
    before = args.local_batch_size
    plan = plan_for_trainer(tiny_model_dir, args, "PPO", announce=False)
    assert args.local_mini_batch_size == 8 and args.local_batch_size == before
    assert args.per_device_train_batch_size == 8 and args.gradient_checkpointing is False
    assert plan.estimate.rollout > 0 and plan.estimate.extra_models > 0  # KV cache; the value adapter and its AdamW


def test_auto_plans_against_the_device_memory_when_there_is_one(tiny_model_dir, tmp_path, monkeypatch):
    import prefkit.memory_plan as memory_plan
    from prefkit import RewardConfig

    monkeypatch.setattr(memory_plan, "device_memory", lambda: 8 * GiB)
    args = RewardConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                        gradient_checkpointing=True, report_to="none")
    assert args.memory_budget == "auto"
    plan = plan_for_trainer(tiny_model_dir, args, "Reward", announce=False)
    assert plan.budget_bytes == 8 * GiB
    # "auto" never raises the micro-batch above the one asked for: an estimate that is short cannot turn a run that
    # fitted into one that does not; it may turn checkpointing off
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 2)
    assert args.gradient_checkpointing is False and args.activation_checkpointing is False
    explicit = RewardConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                            gradient_checkpointing=True, report_to="none", memory_budget="8GiB")
    plan_for_trainer(tiny_model_dir, explicit, "Reward", announce=False)
    assert (explicit.per_device_train_batch_size, explicit.gradient_accumulation_steps) == (4, 1)  # asked for: planned


# -- in a trainer ----------------------------------------------------------------------------------------------------


def _dpo_args(tmp_path, **overrides):
    from prefkit import DPOConfig

    values = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                  max_steps=1, learning_rate=1e-3, report_to="none", save_strategy="no", disable_tqdm=True,
                  seed=0, bf16=False, max_length=64, use_peft=True, gradient_checkpointing=True)
    values.update(overrides)
    return DPOConfig(**values)


def test_an_explicit_budget_plans_dpo_on_cpu_and_writes_the_plan_with_the_measured_peak(
        tiny_model_dir, separable_pairs, tmp_path, capsys):
    from prefkit import DPOTrainer

    args = _dpo_args(tmp_path, memory_budget="4GiB")
    trainer = DPOTrainer(tiny_model_dir, args=args, train_dataset=separable_pairs.select(range(8)))
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 1)
    assert args.gradient_checkpointing is False and args.activation_checkpointing is False
    assert "memory plan (dpo)" in capsys.readouterr().out
    trainer.train()

    written = json.loads((tmp_path / "out" / "memory_plan.json").read_text())
    assert written["planned"]["per_device_train_batch_size"] == 4
    assert written["requested"]["gradient_checkpointing"] is True
    assert written["budget_bytes"] == 4 * GiB and written["fits"] is True
    assert written["measured"]["kind"] == ("cuda" if torch.cuda.is_available() else "cpu_rss_growth")
    assert written["measured"]["peak_bytes"] >= 0
    assert str(tmp_path) not in (tmp_path / "out" / "memory_plan.json").read_text()
    printed = capsys.readouterr().out
    assert "peak RSS growth during training" in printed or "torch.cuda.max_memory_allocated" in printed


def test_an_explicit_budget_too_small_fails_before_the_model_loads(tiny_model_dir, separable_pairs, tmp_path,
                                                                   monkeypatch):
    import prefkit.trainers.startup as startup
    from prefkit import DPOTrainer

    def refuse_to_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(startup, "load_model_for_training", refuse_to_load)
    with pytest.raises(MemoryPlanError, match="memory_budget=1.00 MiB"):
        DPOTrainer(tiny_model_dir, args=_dpo_args(tmp_path, memory_budget="1MiB"), train_dataset=separable_pairs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="'auto' plans on a CUDA machine")
def test_auto_on_cpu_changes_nothing(tiny_model_dir, separable_pairs, tmp_path):
    from prefkit import DPOTrainer

    args = _dpo_args(tmp_path)
    assert args.memory_budget == "auto"
    trainer = DPOTrainer(tiny_model_dir, args=args, train_dataset=separable_pairs.select(range(8)))
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 2)
    assert args.gradient_checkpointing is True and args.precompute_ref_log_probs is False
    assert trainer.memory_plan is None
    assert not any(type(c).__name__ == "MemoryPlanCallback" for c in trainer.callback_handler.callbacks)


def test_an_explicit_budget_plans_the_reward_trainer_and_the_ppo_trainer(tiny_model_dir, separable_pairs, tmp_path):
    from datasets import Dataset

    from prefkit import PPOConfig, PPOTrainer, RewardConfig, RewardTrainer

    reward_args = RewardConfig(output_dir=str(tmp_path / "rm"), per_device_train_batch_size=2,
                               gradient_accumulation_steps=2, max_length=64, use_peft=True, bf16=False,
                               report_to="none", memory_budget="4GiB")
    reward_trainer = RewardTrainer(tiny_model_dir, args=reward_args, train_dataset=separable_pairs.select(range(8)))
    assert reward_trainer.memory_plan is not None and reward_trainer.memory_plan.method == "reward"
    assert (reward_args.per_device_train_batch_size, reward_args.gradient_accumulation_steps) == (4, 1)

    ppo_args = PPOConfig(output_dir=str(tmp_path / "ppo"), use_peft=True, per_device_train_batch_size=2,
                         gradient_accumulation_steps=2, max_completion_length=4, bf16=False, report_to="none",
                         memory_budget="4GiB")
    prompts = Dataset.from_dict({"prompt": ["Say something kind.", "Tell me about the sea."] * 4})
    ppo_trainer = PPOTrainer(tiny_model_dir, reward_funcs="vader", args=ppo_args, train_dataset=prompts)
    plan = ppo_trainer.memory_plan
    assert plan is not None and plan.method == "ppo" and plan.estimate.rollout > 0
    assert (ppo_args.per_device_train_batch_size, ppo_args.gradient_accumulation_steps) == (4, 1)
    assert any(type(c).__name__ == "MemoryPlanCallback" for c in ppo_trainer.callback_handler.callbacks)
