"""PPOTrainer on the tiny offline Llama: learning with every estimator, the shared base, resuming, outputs, errors."""

from __future__ import annotations

import json
import math
import os
import string

import pytest
import torch
from datasets import Dataset

from prefkit.data.validation import PreferenceDataError
from prefkit.models import is_quantized, load_model, parameter_storage
from prefkit.rl import RewardFunctionError
from prefkit.trainers.ppo import (
    POLICY_ADAPTER,
    VALUE_ADAPTER,
    PolicyAndValue,
    PPOConfig,
    PPOTrainer,
)

# LoRA on every linear layer including the (tied) output head: the tiny model's embeddings are random, so only a
# LoRA on lm_head can move whole groups of tokens (all the letter tokens) at once, as a pretrained model's could.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]

PROMPTS = [
    "Suggest an activity to do with my teddy bear.",
    "How do I make a cup of tea?",
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Say hello to my friend.",
    "Thank you for your help!",
    "Tell me a story about a fox.",
    "Any advice for a rainy day?",
]


def letter_share(prompts, completions):
    """Share of lowercase ASCII letters in each completion: a reward that is a known function of the text."""
    return [sum(ch in string.ascii_lowercase for ch in c) / max(len(c), 1) for c in completions]


@pytest.fixture
def prompts_dataset():
    return Dataset.from_list([{"prompt": p} for p in PROMPTS * 2])


def make_config(tmp_path, **overrides) -> PPOConfig:
    settings = dict(
        output_dir=str(tmp_path / "ppo"),
        use_peft=True,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        lora_target_modules=LORA_TARGETS,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        per_device_train_batch_size=16,
        num_mini_batches=1,
        num_ppo_epochs=2,
        max_completion_length=8,
        temperature=1.0,
        kl_coef=0.01,
        max_steps=30,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        log_completions_steps=10,
    )
    settings.update(overrides)
    return PPOConfig(**settings)


def logged(trainer, key: str) -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def trainable_state(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------------------------------------------------
# It learns
# --------------------------------------------------------------------------------------------------------------------

ESTIMATORS = [
    ("gae", "clip", 1),
    ("gae", "kl_penalty", 1),
    ("reinforce", "clip", 1),
    ("rloo", "clip", 4),
    ("grpo", "clip", 4),
]


# 30 iterations each (minutes on a 2-core CPU for the GAE runs), with thresholds calibrated on seed 0: slow.
@pytest.mark.slow
@pytest.mark.parametrize("estimator,loss_type,num_generations", ESTIMATORS, ids=[f"{e}-{l}" for e, l, _ in ESTIMATORS])
def test_training_raises_the_reward_and_the_kl_penalized_objective(
    tiny_model_dir, prompts_dataset, tmp_path, estimator, loss_type, num_generations
):
    args = make_config(tmp_path, advantage_estimator=estimator, loss_type=loss_type, num_generations=num_generations)
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=args, train_dataset=prompts_dataset)
    trainer.train()

    scores, rlhf_rewards, kls = logged(trainer, "objective/scores"), logged(trainer, "objective/rlhf_reward"), logged(trainer, "objective/kl")
    assert len(scores) == 30
    start, end = sum(scores[:5]) / 5, sum(scores[-5:]) / 5
    # Without learning, a 5-step mean moves by about 0.025 (1 sigma); learning moves it by 0.1 to 0.3.
    assert end > start + 0.07, f"mean reward went from {start:.3f} to {end:.3f}"
    # What PPO maximizes is score - beta * KL: it must improve too, so the KL paid for the reward stays bounded
    # (well under the ~50 nats a deterministic 8-token policy would be from this near-uniform reference). With the KL
    # counted once, in the loss (kl_penalty's default), nothing in the reward holds it back and the run drifts
    # further (to ~28 nats at 30 iterations here; the alignment benchmark shows the same), hence its own bound.
    assert sum(rlhf_rewards[-5:]) / 5 > sum(rlhf_rewards[:5]) / 5 + 0.04
    bound = 40 if args.kl_in_loss and not args.kl_in_reward else 25
    assert all(math.isfinite(kl) for kl in kls) and max(kls[-5:]) < bound


def test_qlora_4bit_path_trains_with_activation_checkpointing(tiny_model_dir, prompts_dataset, tmp_path):
    args = make_config(tmp_path, quantization="4bit", gradient_checkpointing=True, max_steps=2, learning_rate=1e-3)
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=args, train_dataset=prompts_dataset)
    before = trainable_state(trainer)
    trainer.train()
    assert is_quantized(trainer.model.policy)
    assert trainer.model.is_activation_checkpointing  # back on after generation turned it off
    assert trainer.state.global_step == 2
    assert all(math.isfinite(v) for v in logged(trainer, "loss/value_avg") + logged(trainer, "loss/policy_avg"))
    after = trainable_state(trainer)
    assert any(not torch.equal(before[n], after[n]) for n in before if f"lora_B.{POLICY_ADAPTER}" in n)
    assert any(not torch.equal(before[n], after[n]) for n in before if f"lora_B.{VALUE_ADAPTER}" in n)


# --------------------------------------------------------------------------------------------------------------------
# Four roles, one base
# --------------------------------------------------------------------------------------------------------------------


def test_under_lora_the_base_weights_exist_once(tiny_model_dir, prompts_dataset, tmp_path):
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=make_config(tmp_path), train_dataset=prompts_dataset)
    base_alone, _ = load_model(tiny_model_dir, dtype="float32")
    base_bytes = sum(parameter_storage(base_alone).values())
    adapter_bytes = sum(
        p.numel() * p.element_size() for n, p in trainer.model.named_parameters() if "lora_" in n or "value_head" in n
    )
    # Everything the trainer holds (policy, value adapter + head; the reference is the same module) is one base
    # plus the adapters, byte for byte.
    assert sum(parameter_storage(trainer.model).values()) == base_bytes + adapter_bytes
    assert trainer.ref_model is None
    assert set(trainer.model.policy.peft_config) == {POLICY_ADAPTER, VALUE_ADAPTER}
    assert adapter_bytes < 0.5 * base_bytes


def test_value_adapter_rank_can_be_smaller_than_the_policy_adapter(tiny_model_dir, prompts_dataset, tmp_path):
    args = make_config(tmp_path, lora_r=8, lora_alpha=16, value_lora_r=2)
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=args, train_dataset=prompts_dataset)
    configs = trainer.model.policy.peft_config
    assert (configs[POLICY_ADAPTER].r, configs[VALUE_ADAPTER].r) == (8, 2)
    assert configs[VALUE_ADAPTER].lora_alpha / configs[VALUE_ADAPTER].r == 2.0  # same scale as the policy's
    value_a = next(p for n, p in trainer.model.named_parameters() if f"lora_A.{VALUE_ADAPTER}" in n)
    assert value_a.shape[0] == 2


def test_reference_is_the_untouched_base_after_training(tiny_model_dir, prompts_dataset, tmp_path):
    trainer = PPOTrainer(
        tiny_model_dir, reward_funcs=letter_share, args=make_config(tmp_path, max_steps=3), train_dataset=prompts_dataset
    )
    trainer.train()
    base_alone, tokenizer = load_model(tiny_model_dir, dtype="float32")
    encoded = tokenizer(["How do I make tea? Boil water."], return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    positions = mask.cumsum(1) - 1
    wrapper: PolicyAndValue = trainer.model
    wrapper.eval()
    with torch.no_grad():
        with wrapper.reference() as reference:
            reference_logits = reference(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        policy_logits = wrapper.policy(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        base_logits = base_alone(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    torch.testing.assert_close(reference_logits, base_logits)
    assert (policy_logits - base_logits).abs().max() > 0.1  # the policy did move


def _randomize_adapters(wrapper: PolicyAndValue, seed: int = 0) -> None:
    """LoRA B and the value head start at zero (no gradient reaches the rest); give them values for gradient tests."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in wrapper.named_parameters():
            if "lora_B" in name or "value_head" in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


def _batch(tokenizer, texts=("Say hello to my friend. Hello friend!", "What is the capital of France? Paris.")):
    encoded = tokenizer(list(texts), return_tensors="pt", padding=True)
    mask = encoded["attention_mask"]
    return encoded["input_ids"], mask, (mask.cumsum(1) - 1).clamp(min=0)


def _gradients(wrapper, loss) -> dict[str, torch.Tensor]:
    wrapper.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in wrapper.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_value_loss_trains_the_value_adapter_and_head_and_policy_loss_the_policy_adapter(
    tiny_model_dir, prompts_dataset, tmp_path, tiny_tokenizer
):
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=make_config(tmp_path), train_dataset=prompts_dataset)
    wrapper: PolicyAndValue = trainer.model
    _randomize_adapters(wrapper)
    ids, mask, positions = _batch(tiny_tokenizer)
    logits, values = wrapper(ids, mask, positions, response_width=4)

    value_grads = _gradients(wrapper, values.pow(2).mean())
    assert any(f".{VALUE_ADAPTER}." in n for n in value_grads) and any("value_head" in n for n in value_grads)
    assert not any(f".{POLICY_ADAPTER}." in n for n in value_grads)

    logits, values = wrapper(ids, mask, positions, response_width=4)
    policy_grads = _gradients(wrapper, logits.logsumexp(-1).mean())
    assert any(f".{POLICY_ADAPTER}." in n for n in policy_grads)
    assert not any(f".{VALUE_ADAPTER}." in n or "value_head" in n for n in policy_grads)


def test_activation_checkpointing_gives_the_same_gradients_for_both_adapters(
    tiny_model_dir, prompts_dataset, tmp_path, tiny_tokenizer
):
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=make_config(tmp_path), train_dataset=prompts_dataset)
    wrapper: PolicyAndValue = trainer.model
    _randomize_adapters(wrapper)
    wrapper.train()
    ids, mask, positions = _batch(tiny_tokenizer)

    def joint_loss():
        logits, values = wrapper(ids, mask, positions, response_width=4)
        return logits.logsumexp(-1).mean() + values.pow(2).mean()

    plain = _gradients(wrapper, joint_loss())

    # What goes wrong without prefkit's care: plain non-reentrant checkpointing recomputes the value pass's layers
    # under whichever adapter is active at backward time (the policy's), silently giving other gradients.
    wrapper.get_base_model().activation_checkpointing_enable({"use_reentrant": False})
    naive = _gradients(wrapper, joint_loss())
    assert any(not torch.allclose(plain[n], naive[n], atol=1e-6) for n in plain)

    wrapper.activation_checkpointing_enable()
    assert wrapper.is_activation_checkpointing
    checkpointed = _gradients(wrapper, joint_loss())
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints, resuming, saving
# --------------------------------------------------------------------------------------------------------------------


def test_resuming_from_a_checkpoint_continues_the_same_run(tiny_model_dir, prompts_dataset, tmp_path):
    def config(folder):
        return make_config(
            folder, max_steps=4, save_strategy="steps", save_steps=2, adaptive_kl=True, target_kl=0.05, kl_horizon=50,
            per_device_train_batch_size=8, num_ppo_epochs=1,
        )

    uninterrupted = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=config(tmp_path / "a"), train_dataset=prompts_dataset)
    uninterrupted.train()
    checkpoint = tmp_path / "a" / "ppo" / "checkpoint-2"
    saved_beta = json.loads((checkpoint / "ppo_state.json").read_text())["kl_coef"]["value"]
    assert saved_beta != 0.01  # the adaptive controller moved beta before the checkpoint

    resumed = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=config(tmp_path / "b"), train_dataset=prompts_dataset)
    resumed.train(resume_from_checkpoint=str(checkpoint))

    assert resumed.state.global_step == 4
    # Steps 1-2 come back with the checkpoint's state; steps 3-4 are sampled and trained again, identically.
    assert logged(resumed, "objective/scores") == logged(uninterrupted, "objective/scores")
    assert resumed.kl_ctl.value == pytest.approx(uninterrupted.kl_ctl.value, rel=1e-9)
    expected, actual = trainable_state(uninterrupted), trainable_state(resumed)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-7)
    parameter = next(p for p in resumed.model.parameters() if p.requires_grad)
    reference_parameter = next(p for p in uninterrupted.model.parameters() if p.requires_grad)
    torch.testing.assert_close(
        resumed.optimizer.state[parameter]["exp_avg"], uninterrupted.optimizer.state[reference_parameter]["exp_avg"]
    )


def test_outputs_policy_adapter_value_model_samples_and_curves(tiny_model_dir, prompts_dataset, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    args = make_config(tmp_path, max_steps=3, log_completions_steps=2, num_completions_to_log=4)
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=args, train_dataset=prompts_dataset)
    trainer.train()
    trainer.save_model()
    out = tmp_path / "ppo"

    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json", "ppo_state.json"):
        assert (out / name).is_file(), name
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        assert (out / "value" / name).is_file(), name
    # The root folder is the policy: it loads with plain PEFT and gives the trained policy's logits.
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out)).eval()
    ids = torch.tensor([[5, 17, 42, 99]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, trainer.model.policy.eval()(input_ids=ids).logits)

    samples = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1] * 4 + [3] * 4
    assert all(s["prompt"] in PROMPTS and isinstance(s["completion"], str) for s in samples)
    assert all(s["score"] == pytest.approx(letter_share([], [s["completion"]])[0], abs=1e-6) for s in samples)
    assert (out / "ppo_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_logs_trl_ppo_metric_names_and_phase_timings(tiny_model_dir, prompts_dataset, tmp_path):
    trainer = PPOTrainer(
        tiny_model_dir, reward_funcs=letter_share, args=make_config(tmp_path, max_steps=1), train_dataset=prompts_dataset
    )
    trainer.train()
    entry = next(e for e in trainer.state.log_history if "objective/kl" in e)
    expected = {
        "objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward", "objective/scores",
        "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "val/clipfrac_avg",
        "val/var_explained", "val/num_eos_tokens", "time/rollout", "time/scoring", "time/optimization",
    }
    assert expected <= entry.keys()
    assert entry["objective/rlhf_reward"] == pytest.approx(entry["objective/scores"] + entry["objective/non_score_reward"], abs=1e-5)
    assert entry["objective/non_score_reward"] == pytest.approx(-0.01 * entry["objective/kl"], abs=1e-6)
    assert entry["episode"] == 16


def test_push_to_hub_uploads_the_policy_with_a_ppo_model_card(tiny_model_dir, prompts_dataset, tmp_path, monkeypatch):
    import transformers.trainer

    uploads = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return type("Url", (), {"repo_id": f"user/{repo_id}"})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploads.append((repo_id, sorted(os.listdir(folder_path)), open(os.path.join(folder_path, "README.md")).read()))

    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: FakeApi())
    args = make_config(tmp_path, max_steps=1, advantage_estimator="rloo", num_generations=4)
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=args, train_dataset=prompts_dataset)
    trainer.train()
    trainer.push_to_hub()
    repo_id, files, card = uploads[-1]
    assert repo_id == "user/ppo"
    assert "adapter_model.safetensors" in files and "ppo_curves.png" in files
    assert "| advantage_estimator | rloo |" in card and "| reward | letter_share |" in card
    assert "Proximal Policy Optimization" in card and "objective/scores" in card


def test_save_writes_prefkit_card_and_keeps_the_hub_token_out_of_every_file(tiny_model_dir, prompts_dataset, tmp_path):
    args = make_config(tmp_path, max_steps=1, advantage_estimator="rloo", num_generations=4, hub_token="hf_secret_ppo")
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=args, train_dataset=prompts_dataset)
    trainer.train()
    trainer.save_model()
    card = open(os.path.join(args.output_dir, "README.md"), encoding="utf-8").read()
    assert "| advantage_estimator | rloo |" in card  # prefkit's card, not PEFT's placeholder
    for root, _, names in os.walk(args.output_dir):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                assert b"hf_secret_ppo" not in f.read(), name
    assert trainer.args.hub_token == "hf_secret_ppo"  # restored for push_to_hub


# --------------------------------------------------------------------------------------------------------------------
# Other setups
# --------------------------------------------------------------------------------------------------------------------


def test_full_fine_tuning_uses_a_frozen_reference_copy_and_a_separate_value_model(tiny_model_dir, prompts_dataset, tmp_path):
    args = make_config(tmp_path, use_peft=False, max_steps=2, learning_rate=1e-4)
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=args, train_dataset=prompts_dataset)
    reference_before = {n: p.clone() for n, p in trainer.ref_model.named_parameters()}
    trainer.train()
    assert trainer.model.value_model is not None and trainer.model.value_head is None
    assert all(torch.equal(p, reference_before[n]) for n, p in trainer.ref_model.named_parameters())
    assert not torch.equal(
        trainer.model.policy.get_input_embeddings().weight, trainer.ref_model.get_input_embeddings().weight
    )
    trainer.save_model()
    assert (tmp_path / "ppo" / "model.safetensors").is_file()
    assert (tmp_path / "ppo" / "value_model" / "model.safetensors").is_file()


def test_conversational_prompts_and_extra_columns_reach_the_reward(tiny_model_dir, tmp_path):
    seen = {}

    def echo_reward(prompts, completions, topic):
        seen["prompts"], seen["topic"] = prompts, topic
        return [0.0] * len(completions)

    rows = [{"prompt": [{"role": "user", "content": p}], "topic": f"t{i}"} for i, p in enumerate(PROMPTS * 2)]
    args = make_config(tmp_path, max_steps=1, advantage_estimator="grpo", num_generations=4)
    PPOTrainer(tiny_model_dir, reward_funcs=echo_reward, args=args, train_dataset=Dataset.from_list(rows)).train()
    assert isinstance(seen["prompts"][0], list) and seen["prompts"][0][0]["role"] == "user"
    # The 4 samples of a prompt are side by side and carry that prompt's columns.
    assert seen["topic"][0:4] == [seen["topic"][0]] * 4 and len(set(seen["topic"])) == 4


def test_a_prefkit_reward_model_scores_the_rollouts(tiny_model_dir, prompts_dataset, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from prefkit.models import load_tokenizer
    from prefkit.reward_model import RewardModel

    torch.manual_seed(0)
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    reward_model = RewardModel(classifier, load_tokenizer(tiny_model_dir, padding_side="right"))
    args = make_config(tmp_path, max_steps=1, log_completions_steps=1, num_completions_to_log=16)
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=reward_model, args=args, train_dataset=prompts_dataset)
    trainer.train()
    samples = [json.loads(line) for line in (tmp_path / "ppo" / "completions.jsonl").read_text().splitlines()]
    expected = reward_model.score([s["prompt"] for s in samples], [s["completion"] for s in samples])
    assert [s["score"] for s in samples] == pytest.approx(expected, abs=1e-5)
    assert logged(trainer, "rewards/reward_model") == pytest.approx([sum(expected) / len(expected)], abs=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# Bad configuration and bad input fail clearly, early
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["rloo", "grpo"])
def test_group_estimators_with_one_sample_per_prompt_are_refused(tmp_path, estimator):
    with pytest.raises(ValueError, match="num_generations >= 2"):
        make_config(tmp_path, advantage_estimator=estimator, num_generations=1)


def test_rollout_batch_must_split_into_groups(tmp_path):
    with pytest.raises(ValueError, match="multiple of num_generations=3"):
        make_config(tmp_path, advantage_estimator="rloo", num_generations=3)


def test_k1_as_the_loss_penalty_is_refused(tmp_path):
    with pytest.raises(ValueError, match="k1's gradient is zero"):
        make_config(tmp_path, loss_type="kl_penalty", kl_penalty_estimator="k1")


def test_gae_without_any_value_model_is_refused_before_training(tiny_model, prompts_dataset, tmp_path):
    with pytest.raises(ValueError, match="needs a value model"):
        PPOTrainer(tiny_model, reward_funcs=letter_share, args=make_config(tmp_path, use_peft=False), train_dataset=prompts_dataset)


def test_dataset_without_prompts_is_refused_before_the_model_loads(tmp_path):
    missing_model = str(tmp_path / "no-such-model")  # loading it would fail: validation must come first
    with pytest.raises(PreferenceDataError, match=r"column 'prompt': is missing.*\['question'\]"):
        PPOTrainer(missing_model, reward_funcs=letter_share, args=make_config(tmp_path), train_dataset=Dataset.from_list([{"question": "hi"}]))
    bad_text = Dataset.from_list([{"prompt": "fine"}, {"prompt": "  "}, {"prompt": None}])
    with pytest.raises(PreferenceDataError) as error:
        PPOTrainer(missing_model, reward_funcs=letter_share, args=make_config(tmp_path), train_dataset=bad_text)
    assert error.value.bad_rows == [1, 2]
    user, assistant = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}
    bad_conversations = Dataset.from_list([{"prompt": [user]}, {"prompt": [user, assistant]}])
    with pytest.raises(PreferenceDataError, match="row 1, column 'prompt': ends with an assistant turn"):
        PPOTrainer(missing_model, reward_funcs=letter_share, args=make_config(tmp_path), train_dataset=bad_conversations)


def test_reward_needing_a_missing_column_is_refused_before_the_model_loads(prompts_dataset, tmp_path):
    def needs_reference(prompts, completions, reference):
        return [0.0] * len(completions)

    with pytest.raises(ValueError, match="needs_reference.*reference"):
        PPOTrainer(str(tmp_path / "no-such-model"), reward_funcs=needs_reference, args=make_config(tmp_path), train_dataset=prompts_dataset)


def test_too_few_prompts_for_one_iteration_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs 16"):
        PPOTrainer(str(tmp_path / "no-such-model"), reward_funcs=letter_share, args=make_config(tmp_path), train_dataset=Dataset.from_list([{"prompt": "hi"}] * 4))


@pytest.mark.parametrize(
    "reward,message",
    [
        (lambda prompts, completions: [1.0] * (len(completions) - 1), r"shape \[15\] for 16 completions"),
        (lambda prompts, completions: [math.nan] + [0.0] * (len(completions) - 1), "1 non-finite"),
    ],
    ids=["wrong-shape", "nan"],
)
def test_bad_reward_output_stops_before_any_update(tiny_model_dir, prompts_dataset, tmp_path, reward, message):
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=reward, args=make_config(tmp_path), train_dataset=prompts_dataset)
    before = trainable_state(trainer)
    with pytest.raises(RewardFunctionError, match=message) as error:
        trainer.train()
    assert "<lambda>" in str(error.value) and "step 1" in str(error.value)
    assert trainer.state.global_step == 0
    assert all(torch.equal(before[n], p) for n, p in trainable_state(trainer).items())


def test_reward_breaking_mid_run_keeps_what_was_trained(tiny_model_dir, prompts_dataset, tmp_path):
    calls = []

    def breaks_on_third_call(prompts, completions):
        calls.append(1)
        return [math.nan if len(calls) == 3 else 0.5] * len(completions)

    args = make_config(tmp_path, save_strategy="steps", save_steps=100, per_device_train_batch_size=8)
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=breaks_on_third_call, args=args, train_dataset=prompts_dataset)
    with pytest.raises(RewardFunctionError, match="saved to .*checkpoint-2"):
        trainer.train()
    checkpoint = tmp_path / "ppo" / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file() and (checkpoint / "optimizer.pt").is_file()


# --------------------------------------------------------------------------------------------------------------------
# Defaults, vocabulary, held-out evaluation
# --------------------------------------------------------------------------------------------------------------------


def test_learning_rate_defaults_to_a_lora_rate_under_lora_and_a_full_rate_otherwise(tmp_path, tiny_model_dir, prompts_dataset):
    from prefkit.trainers.ppo.config import FULL_LEARNING_RATE, LORA_LEARNING_RATE

    assert PPOConfig(output_dir=str(tmp_path), use_peft=True, report_to="none").learning_rate == LORA_LEARNING_RATE
    assert PPOConfig(output_dir=str(tmp_path), report_to="none").learning_rate == FULL_LEARNING_RATE
    assert PPOConfig(output_dir=str(tmp_path), use_peft=True, learning_rate=3e-5, report_to="none").learning_rate == 3e-5
    # a LoRA adapter given as peft_config, not by flags, also gets the LoRA rate
    from peft import LoraConfig

    args = PPOConfig(output_dir=str(tmp_path), report_to="none", advantage_estimator="rloo", num_generations=4,
                     per_device_train_batch_size=16)
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=args, train_dataset=prompts_dataset,
                         peft_config=LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert trainer.args.learning_rate == LORA_LEARNING_RATE


def test_response_length_is_a_deprecated_alias_of_max_completion_length(tmp_path):
    with pytest.warns(FutureWarning, match="max_completion_length"):
        args = PPOConfig(output_dir=str(tmp_path), response_length=12, report_to="none")
    assert args.max_completion_length == 12 and args.response_length is None


def test_ppo_logs_held_out_metrics_and_the_reward_hacking_flag(tiny_model_dir, prompts_dataset, tmp_path):
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("Say something.\nTell me about the sea.\n")
    args = make_config(tmp_path, max_steps=2, advantage_estimator="rloo", num_generations=4, eval_prompts=str(heldout),
                       eval_reward="vader", eval_every_steps=1, eval_max_new_tokens=4)
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=letter_share, args=args, train_dataset=prompts_dataset)
    trainer.train()
    evals = [entry for entry in trainer.state.log_history if "eval/kl" in entry]
    assert len(evals) == 3  # before training and after each of the two iterations
    assert {"eval/reward", "eval/win_rate", "eval/length", "eval/reward_hacking"} <= set(evals[-1])
    assert evals[0]["eval/kl"] == pytest.approx(0.0, abs=1e-4) and evals[-1]["eval/kl"] > 0
