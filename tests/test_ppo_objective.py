"""Where PPOTrainer counts the KL to the reference (once by default), and what REINFORCE's baseline does."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

import prefkit.trainers.ppo.trainer as ppo_trainer_module
from prefkit.trainers.ppo import PPOConfig, PPOTrainer
from prefkit.trainers.ppo.rollout import compute_advantages


def config(tmp_path, **overrides) -> PPOConfig:
    settings = dict(
        output_dir=str(tmp_path / "ppo"),
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        learning_rate=1e-3,
        per_device_train_batch_size=8,
        num_ppo_epochs=2,
        max_completion_length=6,
        temperature=1.0,
        max_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        log_completions=False,
        seed=0,
    )
    settings.update(overrides)
    return PPOConfig(**settings)


def vowel_share(prompts, completions):
    return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]


PROMPTS = Dataset.from_list([{"prompt": p} for p in ["Hello there.", "Tell me a story.", "Why is the sky blue?", "Hi!"] * 4])


# --------------------------------------------------------------------------------------------------------------------
# Defaults: the KL is counted once
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,placement,penalty_coef",
    [
        ({}, "reward", 0.1),
        ({"loss_type": "kl_penalty"}, "loss", 0.1),
        ({"advantage_estimator": "grpo", "num_generations": 4}, "loss", 0.04),
        ({"advantage_estimator": "rloo", "num_generations": 4}, "reward", 0.1),
        ({"advantage_estimator": "grpo", "num_generations": 4, "kl_placement": "reward"}, "reward", 0.04),
        ({"loss_type": "kl_penalty", "kl_placement": "both", "kl_penalty_coef": 0.2}, "both", 0.2),
    ],
)
def test_kl_placement_defaults(tmp_path, overrides, placement, penalty_coef):
    args = config(tmp_path, **overrides)
    assert args.kl_placement == placement
    assert args.kl_penalty_coef == pytest.approx(penalty_coef)
    assert args.kl_in_reward == (placement in ("reward", "both"))
    assert args.kl_in_loss == (placement in ("loss", "both"))


def test_kl_penalty_objective_without_the_kl_in_the_loss_is_refused(tmp_path):
    with pytest.raises(ValueError, match="kl_placement 'loss'"):
        config(tmp_path, loss_type="kl_penalty", kl_placement="reward")


def test_unknown_kl_placement_is_refused(tmp_path):
    with pytest.raises(ValueError, match="kl_placement='everywhere'"):
        config(tmp_path, kl_placement="everywhere")


def _run_recording_penalties(tiny_model_dir, tmp_path, monkeypatch, **overrides):
    """One iteration; returns the trainer and the (coefficient, importance_weighted) of every loss-side KL term."""
    calls = []
    real = ppo_trainer_module.kl_penalty

    def recording(logprobs, old_logprobs, ref_logprobs, mask, kl_coef, kl_estimator="k3", importance_weighted=True):
        calls.append((kl_coef, importance_weighted))
        return real(logprobs, old_logprobs, ref_logprobs, mask, kl_coef, kl_estimator, importance_weighted)

    monkeypatch.setattr(ppo_trainer_module, "kl_penalty", recording)
    trainer = PPOTrainer(tiny_model_dir, reward_funcs=vowel_share, args=config(tmp_path, **overrides), train_dataset=PROMPTS)
    trainer.train()
    return trainer, calls


def _metrics(trainer) -> dict:
    return next(entry for entry in trainer.state.log_history if "objective/kl" in entry)


def test_ppo_kl_penalty_puts_the_kl_in_the_loss_only(tiny_model_dir, tmp_path):
    trainer = PPOTrainer(
        tiny_model_dir, reward_funcs=vowel_share, args=config(tmp_path, loss_type="kl_penalty"), train_dataset=PROMPTS
    )
    trainer.train()
    entry = _metrics(trainer)
    # Not in the reward: the per-token rewards carry no KL term ...
    assert entry["objective/non_score_reward"] == 0.0
    assert entry["objective/kl_coef"] == 0.0
    assert entry["objective/rlhf_reward"] == pytest.approx(entry["objective/scores"], abs=1e-6)
    # ... but in the loss, with its own beta; the KL itself is still measured and logged.
    assert entry["objective/kl_penalty_coef"] == pytest.approx(0.1)
    assert math.isfinite(entry["objective/kl"])


def test_both_counts_the_kl_in_the_reward_and_in_the_loss(tiny_model_dir, tmp_path, monkeypatch):
    trainer, calls = _run_recording_penalties(
        tiny_model_dir, tmp_path, monkeypatch, kl_placement="both", kl_coef=0.05, kl_penalty_coef=0.2
    )
    entry = _metrics(trainer)
    assert entry["objective/non_score_reward"] == pytest.approx(-0.05 * entry["objective/kl"], abs=1e-6)
    assert calls and all(coef == pytest.approx(0.2) for coef, _ in calls)


def test_grpo_adds_the_papers_kl_term_to_the_clipped_loss(tiny_model_dir, tmp_path, monkeypatch):
    trainer, calls = _run_recording_penalties(
        tiny_model_dir, tmp_path, monkeypatch, advantage_estimator="grpo", num_generations=4,
        kl_penalty_importance_weight=False,
    )
    # One term per minibatch (2 epochs x 1 minibatch), with the paper's beta and form; none in the reward.
    assert calls == [(pytest.approx(0.04), False)] * 2
    assert _metrics(trainer)["objective/non_score_reward"] == 0.0


def test_ppo_clip_with_gae_keeps_the_kl_in_the_reward_only(tiny_model_dir, tmp_path, monkeypatch):
    trainer, calls = _run_recording_penalties(tiny_model_dir, tmp_path, monkeypatch, kl_coef=0.05)
    assert calls == []
    entry = _metrics(trainer)
    assert entry["objective/non_score_reward"] == pytest.approx(-0.05 * entry["objective/kl"], abs=1e-6)
    assert "objective/kl_penalty_coef" not in entry


# --------------------------------------------------------------------------------------------------------------------
# REINFORCE: the baseline is what centres the returns, also with normalized advantages
# --------------------------------------------------------------------------------------------------------------------


def test_reinforce_baseline_changes_the_advantages_under_the_default_normalization(tmp_path):
    args = config(tmp_path, advantage_estimator="reinforce")
    assert args.whiten_advantages  # the default for REINFORCE
    rewards = torch.zeros(4, 3)
    rewards[:, -1] = torch.tensor([1.0, 0.0, 0.5, 2.0])  # scores on the last token
    mask = torch.ones(4, 3)
    low, _ = compute_advantages(rewards, None, mask, args, reinforce_baseline=0.0)
    high, _ = compute_advantages(rewards, None, mask, args, reinforce_baseline=1.5)
    returns = rewards.sum(dim=1)
    scale = returns.std(unbiased=False)
    torch.testing.assert_close(low[:, 0], returns / scale)
    torch.testing.assert_close(high[:, 0], (returns - 1.5) / scale)
    # Centring would have made both equal to (R - mean R) / std: the baseline would not matter.
    assert not torch.allclose(low, high)


def test_gae_advantages_are_still_centred_and_scaled(tmp_path):
    args = config(tmp_path)
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 3.0]])
    values = torch.zeros(3, 3)
    advantages, _ = compute_advantages(rewards, values, torch.ones(3, 3), args)
    assert advantages.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert advantages.var(unbiased=False).item() == pytest.approx(1.0, rel=1e-4)
