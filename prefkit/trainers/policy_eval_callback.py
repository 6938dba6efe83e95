r"""Evaluation during training: is the policy getting better on held-out prompts, and is it gaming the reward?

Give any prefkit policy trainer (DPO, PPO, GRPO, RLOO) held-out prompts and a reward, on the config or the command
line::

    prefkit dpo ... --eval_prompts heldout.jsonl --eval_reward vader --eval_every_steps 50

and every ``eval_every_steps`` optimizer steps (and before the first and after the last) the policy answers those
prompts and :mod:`prefkit.policy_eval` measures it against the model it started from. The trainer logs, to every
``report_to`` backend and its ``log_history``:

- ``eval/reward`` (mean, with ``eval/reward_low`` / ``eval/reward_high``, the bootstrap interval),
- ``eval/win_rate`` against the starting model's answers (the higher reward wins, or ``eval_judge``),
- ``eval/kl`` (k3, nats per answer) and ``eval/kl_k1`` to the starting model, on the policy's own samples,
- ``eval/length``, ``eval/empty_rate``, ``eval/reward_per_token``,
- ``eval/reward_hacking``: 1 when, since the previous evaluation, the reward being optimised
  (``objective/scores`` or ``rewards/margins``) rose while the held-out reward or win rate fell, or the answers grew
  longer by a larger share than the held-out reward grew; a warning says which.

The starting model is the base with the LoRA adapter disabled under LoRA, or the trainer's reference model.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

TRAINING_REWARD_KEYS = ("objective/scores", "objective/rlhf_reward", "reward", "rewards/margins")


@dataclass
class PolicyEvalArguments:
    """Held-out evaluation during training (:mod:`prefkit.trainers.policy_eval_callback`); off unless
    ``eval_prompts`` is set."""

    eval_prompts: str | None = field(
        default=None,
        metadata={"help": "Held-out prompts to evaluate the policy on while it trains (a .txt file, one per line, or a "
                  "dataset file / Hub id with a 'prompt' column). Logs eval/reward, eval/win_rate, eval/kl, eval/length."},
    )
    eval_reward: str | None = field(
        default=None,
        metadata={"help": "Reward for the held-out evaluation (any reward spelling: vader, demo, a reward model, "
                  "module:function). Use a reward the trainer does not optimise to catch reward hacking."},
    )
    eval_judge: str | None = field(
        default=None, metadata={"help": "Optional LLM judge (Hub id or folder) for eval/win_rate, asked in both orders."}
    )
    eval_every_steps: int = field(default=50, metadata={"help": "Evaluate every this many optimizer steps."})
    eval_num_prompts: int = field(default=32, metadata={"help": "Use at most this many held-out prompts."})
    eval_max_new_tokens: int = field(default=64, metadata={"help": "Longest held-out answer, in tokens."})
    eval_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the held-out answers."})

    def _check_policy_eval_fields(self) -> None:
        """Fail at config time, before any model loads, on settings the evaluation cannot use."""
        if not self.eval_prompts:
            return
        import os

        if str(self.eval_prompts).lower().endswith((".txt", ".jsonl", ".json", ".csv", ".parquet")) and not os.path.isfile(self.eval_prompts):
            raise ValueError(f"eval_prompts={self.eval_prompts!r}: no such file.")
        if not self.eval_reward and not self.eval_judge:
            raise ValueError("eval_prompts needs eval_reward (or eval_judge): what should the held-out answers be scored by?")
        if self.eval_every_steps < 1 or self.eval_num_prompts < 1 or self.eval_max_new_tokens < 1:
            raise ValueError("eval_every_steps, eval_num_prompts and eval_max_new_tokens must be at least 1.")
        if not self.eval_temperature > 0:
            raise ValueError(f"eval_temperature must be > 0, got {self.eval_temperature}.")


def _policy_of(model):
    """The causal LM inside a trainer's model (PPO wraps it with its value model)."""
    return getattr(model, "policy", model)


def read_prompt_file(path: str, limit: int | None = None) -> list[Any]:
    """Prompts from a .txt file (one per line) or any dataset file / Hub id with a 'prompt' column."""
    if str(path).lower().endswith(".txt"):
        with open(path, encoding="utf-8") as f:
            prompts: list[Any] = [line.rstrip("\n") for line in f if line.strip()]
    else:
        from ..data.io import load_dataset_any

        dataset = load_dataset_any(path, split="train")
        if "prompt" not in dataset.column_names:
            raise ValueError(f"{path} has no 'prompt' column (it has {dataset.column_names}); it cannot be eval_prompts.")
        prompts = list(dataset["prompt"])
    return prompts[:limit] if limit else prompts


class PolicyEvalCallback(TrainerCallback):
    """Runs :func:`prefkit.evaluate`'s measurements on held-out prompts during training and logs them.

    ``trainer`` is the trainer whose policy is evaluated (its ``log`` reaches every ``report_to`` backend);
    ``prompts``, ``reward`` and ``judge`` are as in :func:`prefkit.evaluate`.
    """

    def __init__(self, trainer, prompts, reward=None, judge=None, *, every_steps: int = 50, max_new_tokens: int = 64,
                 temperature: float = 1.0, batch_size: int = 8, seed: int = 0):
        from ..policy_eval import EvaluationError, prompt_rows
        from ..rewards import resolve_reward
        from ..rl import RewardFunction

        if reward is None and judge is None:
            raise EvaluationError("Evaluation during training needs a reward (eval_reward) or a judge (eval_judge).")
        if every_steps < 1:
            raise EvaluationError(f"eval_every_steps must be at least 1, got {every_steps}.")
        self.trainer = trainer
        self.rows = prompt_rows(prompts)
        self.prompts = [r["prompt"] for r in self.rows]
        self.columns = {k: [r.get(k) for r in self.rows] for k in self.rows[0] if k != "prompt"}
        self.reward_function = None
        if reward is not None:
            self.reward_function = RewardFunction(resolve_reward(reward))
            self.reward_function.check_columns(list(self.columns) + ["prompt"], "eval_prompts")
        self.judge = judge
        self.every_steps = every_steps
        self.sampling = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": 1.0,
                         "batch_size": batch_size, "seed": seed, "num_samples": 1}
        self._base = None
        self._base_records: list[dict[str, Any]] | None = None
        self._previous: dict[str, float] | None = None
        self._last_step = -1
        self.history: list[dict[str, float]] = []

    # ---- the starting model ----------------------------------------------------------------------------------------

    def _reference(self, policy):
        from ..policy_eval import PolicyUnderTest

        tokenizer = self.trainer.processing_class
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        if hasattr(policy, "disable_adapter"):
            return PolicyUnderTest("start", None, policy, tokenizer, scope=policy.disable_adapter)
        ref = getattr(self.trainer, "ref_model", None)
        if ref is not None:
            return PolicyUnderTest("start", None, _policy_of(ref), tokenizer)
        logger.warning("No reference model to compare with: keeping a frozen copy of the policy as it starts training.")
        return PolicyUnderTest("start", None, copy.deepcopy(policy).eval().requires_grad_(False), tokenizer)

    def _current(self):
        from ..policy_eval import PolicyUnderTest

        model = _policy_of(self.trainer.accelerator.unwrap_model(self.trainer.model))
        tokenizer = self.trainer.processing_class
        return model, PolicyUnderTest("policy", None, model, getattr(tokenizer, "tokenizer", tokenizer))

    # ---- one evaluation --------------------------------------------------------------------------------------------

    def evaluate_now(self) -> dict[str, float]:
        """Sample the policy on the held-out prompts and return the ``eval/*`` metrics (also logged)."""
        from tqdm.auto import tqdm

        from ..policy_eval import sample_policy, summarize

        model, current = self._current()
        if self._base is None:
            self._base = self._reference(model)
        settings = dict(self.sampling)
        batch_size, num_samples = settings.pop("batch_size"), settings.pop("num_samples")
        kwargs = dict(num_samples=num_samples, batch_size=batch_size, max_new_tokens=settings["max_new_tokens"],
                      temperature=settings["temperature"], top_p=settings["top_p"], seed=settings["seed"])
        with tqdm(total=len(self.rows) * (2 if self._base_records is None else 1), desc="held-out eval", unit="answer",
                  leave=False, disable=not self.trainer.is_world_process_zero()) as bar:
            if self._base_records is None:
                self._base_records = sample_policy(self._base, self._base, self.rows, self.prompts, self.columns,
                                                    self.reward_function, {}, None, bar, **kwargs)
            records = sample_policy(current, self._base, self.rows, self.prompts, self.columns, self.reward_function,
                                     {}, None, bar, **kwargs)
        report = summarize([self._base, current], self._base, {"start": self._base_records, "policy": records},
                            self.rows, num_samples, self.reward_function, self.judge, 0.95, 1000, settings["seed"], {})
        policy = report["policy"]
        metrics = {"eval/length": policy.length, "eval/empty_rate": policy.empty_rate}
        if policy.reward is not None:
            metrics.update({"eval/reward": policy.reward, "eval/reward_low": policy.reward_interval[0],
                            "eval/reward_high": policy.reward_interval[1], "eval/reward_per_token": policy.reward_per_token})
        if policy.win_rate is not None:
            metrics["eval/win_rate"] = policy.win_rate
        if policy.kl_k3 is not None:
            metrics.update({"eval/kl": policy.kl_k3, "eval/kl_k1": policy.kl_k1})
        metrics["eval/reward_hacking"] = float(self._hacking(metrics))
        self.history.append(metrics)
        return metrics

    def _training_reward(self) -> float | None:
        for entry in reversed(self.trainer.state.log_history):
            for key in TRAINING_REWARD_KEYS:
                if key in entry:
                    return float(entry[key])
        return None

    def _hacking(self, metrics: dict[str, float]) -> bool:
        """The reward being optimised rose while the held-out measure fell, or length outgrew the held-out reward."""
        now = dict(metrics, train_reward=self._training_reward())
        previous, self._previous = self._previous, now
        if previous is None:
            return False
        reasons = []
        train_up = now["train_reward"] is not None and previous["train_reward"] is not None and now["train_reward"] > previous["train_reward"]
        for key in ("eval/reward", "eval/win_rate"):
            if train_up and key in now and key in previous and now[key] < previous[key]:
                reasons.append(f"the training reward rose while {key} fell ({previous[key]:.3f} -> {now[key]:.3f})")
        if "eval/reward" in now and previous["eval/length"] > 0:
            length_growth = now["eval/length"] / previous["eval/length"] - 1
            reward_growth = (now["eval/reward"] - previous["eval/reward"]) / max(abs(previous["eval/reward"]), 1e-8)
            if length_growth > 0.1 and length_growth > reward_growth:
                reasons.append(f"answers grew {length_growth:.0%} longer while the held-out reward changed {reward_growth:+.0%}")
        if reasons:
            logger.warning("Possible reward hacking at step %d: %s.", self.trainer.state.global_step, "; ".join(reasons))
        return bool(reasons)

    # ---- when -----------------------------------------------------------------------------------------------------

    def _log(self, state) -> None:
        if state.global_step == self._last_step:
            return
        self._last_step = state.global_step
        self.trainer.log(self.evaluate_now())

    def on_train_begin(self, args, state, control, **kwargs):
        self._log(state)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every_steps == 0:
            self._log(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._log(state)


class PolicyEvalMixin:
    """Adds a :class:`PolicyEvalCallback` to a trainer whose config sets ``eval_prompts`` (see the module docstring)."""

    def add_policy_eval_from_args(self) -> PolicyEvalCallback | None:
        args = self.args
        prompts_path = getattr(args, "eval_prompts", None)
        if not prompts_path:
            return None
        if any(isinstance(c, PolicyEvalCallback) for c in self.callback_handler.callbacks):
            return None
        judge = None
        if args.eval_judge:
            from ..data.judges import LLMJudge
            from ..models import load_policy

            judge_model, judge_tokenizer = load_policy(args.eval_judge, device=str(self.accelerator.device))
            judge = LLMJudge(judge_model, judge_tokenizer, both_orders=False)
        callback = PolicyEvalCallback(
            self, read_prompt_file(prompts_path, args.eval_num_prompts), reward=args.eval_reward, judge=judge,
            every_steps=args.eval_every_steps, max_new_tokens=args.eval_max_new_tokens,
            temperature=args.eval_temperature, batch_size=args.per_device_eval_batch_size, seed=args.seed,
        )
        self.add_callback(callback)
        return callback
