"""Named settings for the training commands, so a first run works and moves the model: ``--preset demo``.

    prefkit dpo --preset demo                 # DPO on the bundled sentiment pairs
    prefkit ppo --preset demo                 # PPO-Clip + GAE towards positive sentiment, ~23 min on a 2-core CPU
    prefkit ppo --preset demo --advantage_estimator rloo --num_generations 4
    prefkit grpo --preset demo / prefkit rloo --preset demo
    prefkit kto --preset demo                 # KTO on the same pairs, each split into a good and a bad answer
    prefkit dpo-iterative --preset demo       # three rounds of sample -> rank by VADER -> DPO

A preset only fills in defaults: every flag given on the command line (or in ``--config``) wins over it. The
``demo`` presets are the settings of the rows of ``scripts/bench_alignment.py`` (the benchmark imports them from
here, so the two cannot drift apart): SmolLM2-135M-Instruct with LoRA (r=16, alpha=32), answers of at most 32
tokens sampled at temperature 1, and learning rates that move a LoRA adapter in a few minutes (TRL's defaults, 1e-6
for DPO and GRPO, are for full fine-tuning of large models and leave a small LoRA run where it started).

The task is the benchmark's: everyday prompts (``Describe a rainy Monday.``) whose answers are scored by VADER
sentiment. The DPO preset trains on the bundled pairs of the base model's own answers ranked by VADER; the RL presets
optimise VADER directly (the benchmark optimises a reward model trained on those pairs instead: pass
``--reward_model FOLDER`` to do the same; it replaces the preset's ``--reward``). Every preset evaluates the policy
on the 24 held-out prompts before, during and after training (``eval/reward``, ``eval/kl``, ``eval/win_rate``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .data import BUNDLED_DIR

SENTIMENT_PROMPTS = BUNDLED_DIR / "sentiment_prompts.jsonl"
"""72 everyday training prompts about 24 subjects (three templates each)."""
SENTIMENT_HELDOUT = BUNDLED_DIR / "sentiment_heldout.jsonl"
"""24 held-out prompts about 8 subjects that never appear in the training prompts."""
SENTIMENT_PAIRS = BUNDLED_DIR / "sentiment_pairs.jsonl"
"""140 pairs of SmolLM2-135M-Instruct's own answers to the training prompts, ranked by VADER sentiment."""

LORA = {"use_peft": True, "lora_r": 16, "lora_alpha": 32, "gradient_checkpointing": False}
"""The LoRA adapter of every demo preset and benchmark row (activation checkpointing off: it only costs time on a
135M model)."""

DPO_DEMO = {"learning_rate": 2e-4, "max_steps": 48, "per_device_train_batch_size": 8, "beta": 0.1, "max_length": 256}
"""DPO training settings of the demo preset and of the benchmark's DPO rows (which sweep beta)."""

KTO_DEMO = {**DPO_DEMO, "max_steps": 96}
"""KTO on the same labels with DPO's budget: each pair is two rows (its chosen answer desirable, its rejected answer
not), so 96 steps of 8 rows see the answers that 48 DPO steps of 8 pairs see, at DPO's learning rate and beta."""

ITERATIVE_DPO_DEMO = {
    **DPO_DEMO,
    "max_steps": 16,
    "num_rounds": 3,
    "samples_per_prompt": 4,
    "prompts_per_round": 24,
    "pair_strategy": "all_above_margin",
    "max_new_tokens": 32,
    "temperature": 1.0,
    "reference": "previous_round",
}
"""Iterative DPO with offline DPO's budget: 3 rounds x 24 prompts x 4 answers labelled (the 288 answers the offline
pairs were ranked from) and 3 x 16 DPO steps of 8 pairs (offline DPO's 48), every pair of a prompt's answers whose
rewards differ (up to six per prompt, as many pairs per round as the offline set has in all)."""

RL_DEMO = {
    "learning_rate": 3e-4,
    "max_steps": 12,
    "per_device_train_batch_size": 32,
    "max_completion_length": 32,
    "temperature": 1.0,
}
"""Sampling and optimisation settings shared by every RL row of the benchmark, prefkit's and TRL's."""

PPO_DEMO = {**RL_DEMO, "num_ppo_epochs": 2}
"""PPO's own: two epochs over each batch of 32 answers (one optimizer step each)."""

GROUP_DEMO = {**RL_DEMO, "num_generations": 4}
"""GRPO / RLOO: four answers per prompt, eight prompts per step."""

HELDOUT_EVAL = {
    "eval_reward": "vader",
    "eval_every_steps": 4,
    "eval_max_new_tokens": 32,
}


@dataclass(frozen=True)
class Preset:
    """Defaults for one command's flags. ``paths`` are flags whose value is a bundled file (resolved when applied);
    ``unless_given`` drops a default when the user gave any of the named flags (a reward model replaces the reward)."""

    description: str
    defaults: Mapping[str, Any]
    paths: Mapping[str, Any] = field(default_factory=dict)
    unless_given: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def resolved(self, given: Sequence[str] = ()) -> dict[str, Any]:
        """The defaults to apply, with bundled files as path strings, less those that flags in ``given`` replace."""
        values = {**self.defaults, **{key: str(path) for key, path in self.paths.items()}}
        for key, flags in self.unless_given.items():
            if any(flag in given for flag in flags):
                values.pop(key, None)
        return values


_HELDOUT = {"eval_prompts": SENTIMENT_HELDOUT}

PRESETS: dict[str, dict[str, Preset]] = {
    "dpo": {
        "demo": Preset(
            "DPO (beta 0.1) with LoRA on the bundled sentiment pairs: 48 steps of 8 pairs, lr 2e-4.",
            {**LORA, **DPO_DEMO, **HELDOUT_EVAL, "eval_every_steps": 16, "output_dir": "smollm2-dpo-demo",
             "logging_steps": 4},
            paths={"dataset_name": SENTIMENT_PAIRS, **_HELDOUT},
        ),
    },
    "ppo": {
        "demo": Preset(
            "PPO-Clip + GAE with LoRA towards positive sentiment (VADER): 12 iterations of 32 answers, lr 3e-4.",
            {**LORA, **PPO_DEMO, **HELDOUT_EVAL, "reward": ["vader"], "output_dir": "smollm2-ppo-demo",
             "logging_steps": 1},
            paths={"dataset_name": SENTIMENT_PROMPTS, **_HELDOUT},
            unless_given={"reward": ("--reward_model", "--reward")},
        ),
    },
}
PRESETS["kto"] = {
    "demo": Preset(
        "KTO (beta 0.1) with LoRA on the bundled sentiment pairs split into thumbs up / down: 96 steps of 8 answers, "
        "lr 2e-4.",
        {**LORA, **KTO_DEMO, **HELDOUT_EVAL, "eval_every_steps": 32, "output_dir": "smollm2-kto-demo",
         "logging_steps": 8},
        paths={"dataset_name": SENTIMENT_PAIRS, **_HELDOUT},
    ),
}
PRESETS["dpo-iterative"] = {
    "demo": Preset(
        "Iterative DPO with LoRA towards positive sentiment (VADER): 3 rounds of 24 prompts x 4 answers, 16 DPO steps "
        "each, lr 2e-4.",
        {**LORA, **ITERATIVE_DPO_DEMO, "reward": "vader", "eval_max_new_tokens": 32,
         "output_dir": "smollm2-dpo-iterative-demo", "logging_steps": 4},
        paths={"dataset_name": SENTIMENT_PROMPTS, **_HELDOUT},
    ),
}
for _command in ("grpo", "rloo"):
    PRESETS[_command] = {
        "demo": Preset(
            f"{_command.upper()} with LoRA towards positive sentiment (VADER): 12 steps of 32 answers (4 per prompt), "
            "lr 3e-4.",
            {**LORA, **GROUP_DEMO, **HELDOUT_EVAL, "reward": ["vader"], "output_dir": f"smollm2-{_command}-demo",
             "logging_steps": 1},
            paths={"dataset_name": SENTIMENT_PROMPTS, **_HELDOUT},
            unless_given={"reward": ("--reward_model", "--reward")},
        )
    }


class UnknownPresetError(ValueError):
    pass


def get_preset(command: str, name: str) -> Preset:
    """The preset ``name`` of ``command``, or an error that lists the ones there are."""
    available = PRESETS.get(command, {})
    if name not in available:
        there = ", ".join(sorted(available)) or "none"
        raise UnknownPresetError(f"prefkit {command} has no preset {name!r} (presets: {there}).")
    return available[name]


def split_preset(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """``--preset NAME`` (or ``--preset=NAME``) taken out of ``argv``: ``(NAME or None, the other arguments)``."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--preset":
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise UnknownPresetError("--preset needs a name, e.g. --preset demo.")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv
