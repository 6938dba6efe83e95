r"""Iterative (online) DPO: sample from the current policy, score, pair, run DPO, repeat.

Offline DPO trains on someone else's answers, and the further the policy moves the less those answers look like its
own. Iterative DPO (Xu et al. 2023, "Some things are more CRINGE than others"; Xiong et al. 2024, "Iterative
Preference Learning from Human Feedback") trains on the policy's own samples instead, one round at a time::

    for round r = 1 .. num_rounds:
        sample samples_per_prompt answers per prompt from the policy of round r-1 (round 0: the starting model), T > 0
        score every answer with the reward
        pair them: the best against the worst answer of each prompt ("best_vs_worst"), or every two answers whose
                   rewards differ by more than pair_margin ("all_above_margin")
        DPO on those pairs (max_steps / num_train_epochs per round), against the reference:
            "previous_round": the policy of round r-1, the one that produced the answers (on-policy DPO)
            "initial":        the starting model, so the KL anchor never moves
        save round-<r>/ (samples, pairs, the policy, its metrics), evaluate it on held-out prompts, mark it finished

Each round is :class:`prefkit.DPOTrainer` (QLoRA, LoRA, data validation, model card all come from there); sampling
goes through :func:`prefkit.data.generation.sample_completions` (the one sampler), rewards through
:func:`prefkit.rewards.resolve_reward`, the held-out evaluation through :func:`prefkit.evaluate`.

**The reference under LoRA, without merging.** The policy of round r-1 is the base plus adapter r-1. Round r loads
that adapter as the trainable ``default`` adapter of a ``PeftModel``; TRL then copies it into a frozen ``ref``
adapter on the same base and computes the reference log-probs with ``ref`` active. So ``"previous_round"`` is the
exact previous policy, at the cost of one more adapter (a few MB), not a second model. For ``"initial"`` the
``ref`` copy is removed again, and the reference is the same base with every adapter disabled: the starting model.
Adapters are never merged into the base, so a 4-bit base stays 4-bit and adapter r is saved on the original base.
With full fine-tuning, round r loads round r-1's weights; ``"previous_round"`` lets TRL load a second copy of them
as the reference, ``"initial"`` loads the starting model as the reference.

**Files** (``output_dir``)::

    round-<r>/samples.jsonl   every answer of the round with its reward, and the policy that produced it
    round-<r>/pairs.jsonl     the DPO pairs (prompt, chosen, rejected, rewards, round, generated_by)
    round-<r>/model/          the policy after round r (a LoRA adapter, or full weights) and its model card
    round-<r>/eval/           prefkit.evaluate's samples.jsonl, eval.json and eval.png (with held-out prompts)
    round-<r>/round.json      the round's metrics; written last: it marks the round finished
    rounds.json, rounds.png   every finished round; held-out reward and KL to the starting model over rounds (the
                              plot needs held-out prompts)
    adapter / model files     a copy of the last round's policy, so output_dir loads like any prefkit model

**Resume.** A rerun with the same ``output_dir`` starts at the first round without ``round.json``; finished rounds
are not sampled, trained or evaluated again (a larger ``num_rounds`` continues a finished run). A round that was cut
short is started over.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..chat import as_messages, uses_chat_template
from ..data.generation import SamplingSettings, prompt_id, sample_completions
from ..data.io import write_jsonl
from .dpo import DPOConfig, DPOTrainer
from .startup import default_output_dir, load_model_for_training

logger = logging.getLogger(__name__)

PAIR_STRATEGIES = ("best_vs_worst", "all_above_margin")
REFERENCES = ("previous_round", "initial")
ROUND_MARKER = "round.json"
ROUNDS_FILE = "rounds.json"
ROUNDS_PLOT = "rounds.png"


@dataclass
class IterativeDPOConfig(DPOConfig):
    r"""``prefkit.DPOConfig`` plus the loop: how many rounds, how many samples per prompt, how to pair them, and the
    reference. Every DPO field applies to each round (``max_steps`` / ``num_train_epochs`` are per round); the
    ``eval_*`` fields choose the held-out evaluation after each round instead of during training."""

    num_rounds: int = field(default=3, metadata={"help": "Rounds of sample -> score -> pair -> DPO."})
    samples_per_prompt: int = field(
        default=4, metadata={"help": "Answers sampled per prompt each round (at least 2: pairs are made from them)."}
    )
    pair_strategy: str = field(
        default="best_vs_worst",
        metadata={
            "help": "best_vs_worst: one pair per prompt, its highest- against its lowest-reward answer. "
            "all_above_margin: every two answers whose rewards differ by more than --pair_margin.",
            "choices": list(PAIR_STRATEGIES),
        },
    )
    pair_margin: float = field(
        default=0.0, metadata={"help": "A pair needs reward(chosen) - reward(rejected) > this (both strategies)."}
    )
    reference: str = field(
        default="previous_round",
        metadata={
            "help": "The DPO reference of each round: previous_round (the policy that sampled the round's answers) or "
            "initial (the starting model, every round).",
            "choices": list(REFERENCES),
        },
    )
    reward: str | None = field(
        default=None,
        metadata={
            "help": "What scores the sampled answers: vader, demo, a reward model folder or Hub id, "
            "'package.module:function' or 'implicit:DPO_MODEL' (from Python, also a callable)."
        },
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0: the answers must differ)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling: keep the smallest token set with this mass."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest sampled answer, in tokens."})
    prompts_per_round: int | None = field(
        default=None,
        metadata={"help": "Sample this many prompts (a different random subset each round) instead of all of them."},
    )
    sampling_batch_size: int = field(default=8, metadata={"help": "Prompts per generate call while sampling."})

    def __post_init__(self):
        problems = []
        if self.num_rounds < 1:
            problems.append(f"num_rounds must be at least 1, got {self.num_rounds}")
        if self.samples_per_prompt < 2:
            problems.append(f"samples_per_prompt must be at least 2 (a pair needs two answers), got {self.samples_per_prompt}")
        if self.pair_strategy not in PAIR_STRATEGIES:
            problems.append(f"pair_strategy must be one of {', '.join(PAIR_STRATEGIES)}, not {self.pair_strategy!r}")
        if not self.pair_margin >= 0:
            problems.append(f"pair_margin must be >= 0, got {self.pair_margin}")
        if self.reference not in REFERENCES:
            problems.append(f"reference must be one of {', '.join(REFERENCES)}, not {self.reference!r}")
        if not self.temperature > 0:
            problems.append(f"temperature must be > 0 (greedy decoding gives identical answers), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.sampling_batch_size < 1:
            problems.append("max_new_tokens and sampling_batch_size must be at least 1")
        if self.prompts_per_round is not None and self.prompts_per_round < 1:
            problems.append(f"prompts_per_round must be at least 1, got {self.prompts_per_round}")
        if problems:
            raise ValueError("IterativeDPOConfig: " + "; ".join(problems) + ".")
        if self.eval_prompts and not self.eval_reward and not self.eval_judge and self.reward:
            self.eval_reward = self.reward  # held-out answers are scored by the training reward unless told otherwise
        super().__post_init__()


# --------------------------------------------------------------------------------------------------------------------
# One round's data: sample, score, pair (pure where it can be)
# --------------------------------------------------------------------------------------------------------------------


def round_seed(seed: int, round_index: int, ids: Sequence[str]) -> int:
    """The seed of one sampling batch: a function of the run's seed, the round and the batch's prompts only, so a
    resumed run samples a round exactly as an uninterrupted one would."""
    digest = hashlib.sha1(f"{seed}|round {round_index}|{'|'.join(ids)}".encode()).hexdigest()
    return int(digest[:8], 16)


def sample_and_score(
    model,
    tokenizer,
    rows: Sequence[dict[str, Any]],
    reward_function: Callable,
    *,
    round_index: int,
    num_samples: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """``num_samples`` answers to each row's ``prompt`` from ``model``, each scored by ``reward_function`` (a
    :class:`prefkit.rl.RewardFunction`; the rows' other columns reach it). One record per prompt: ``prompt_id``,
    ``prompt``, ``completions``, ``truncated`` (hit ``max_new_tokens`` before a stop token) and ``rewards``."""
    import torch

    from ..models import model_id

    settings = SamplingSettings(model_id(model), float(temperature), float(top_p), 0, int(max_new_tokens),
                                int(num_samples), int(seed))
    records = []
    for start in range(0, len(rows), batch_size):
        batch = list(rows[start : start + batch_size])
        ids = [prompt_id(row["prompt"]) for row in batch]
        torch.manual_seed(round_seed(seed, round_index, ids))
        answers = sample_completions(model, tokenizer, [row["prompt"] for row in batch], settings)
        prompts = [row["prompt"] for row in batch for _ in range(num_samples)]
        completions = [text for per_prompt in answers for text, _ in per_prompt]
        columns = {key: [row.get(key) for row in batch for _ in range(num_samples)] for key in batch[0] if key != "prompt"}
        rewards = reward_function(prompts, completions, columns).tolist()
        for index, (row, pid, per_prompt) in enumerate(zip(batch, ids, answers)):
            records.append({
                "prompt_id": pid,
                "prompt": row["prompt"],
                "completions": [text for text, _ in per_prompt],
                "truncated": [truncated for _, truncated in per_prompt],
                "rewards": [float(r) for r in rewards[index * num_samples : (index + 1) * num_samples]],
            })
    return records


def pair_indices(completions: Sequence[str], rewards: Sequence[float], strategy: str, margin: float = 0.0) -> list[tuple[int, int]]:
    """``(chosen, rejected)`` indices into one prompt's answers. Empty answers and repeats of an earlier answer are
    left out; a pair needs ``rewards[chosen] - rewards[rejected] > margin``.

    ``"best_vs_worst"``: at most one pair, the highest-reward answer against the lowest (the first of equals).
    ``"all_above_margin"``: every two answers whose rewards differ by more than ``margin``, the higher one chosen.
    """
    if strategy not in PAIR_STRATEGIES:
        raise ValueError(f"pair strategy must be one of {', '.join(PAIR_STRATEGIES)}, not {strategy!r}.")
    seen: set[str] = set()
    kept = []
    for index, text in enumerate(completions):
        if text and text not in seen:
            seen.add(text)
            kept.append(index)
    if strategy == "best_vs_worst":
        if len(kept) < 2:
            return []
        best = max(kept, key=lambda i: rewards[i])
        worst = min(kept, key=lambda i: rewards[i])
        return [(best, worst)] if rewards[best] - rewards[worst] > margin else []
    pairs = []
    for position, i in enumerate(kept):
        for j in kept[position + 1 :]:
            if rewards[i] - rewards[j] > margin:
                pairs.append((i, j))
            elif rewards[j] - rewards[i] > margin:
                pairs.append((j, i))
    return pairs


def build_pairs(records: Sequence[dict[str, Any]], strategy: str, margin: float, *, round_index: int,
                generated_by: dict[str, Any]) -> list[dict[str, Any]]:
    """DPO rows (``prompt``, ``chosen``, ``rejected``) from :func:`sample_and_score`'s records, each also saying its
    rewards, its round and which policy produced it (``generated_by``)."""
    rows = []
    for record in records:
        completions, rewards = record["completions"], record["rewards"]
        for chosen, rejected in pair_indices(completions, rewards, strategy, margin):
            rows.append({
                "id": f"r{round_index}-{record['prompt_id']}-{chosen}-{rejected}",
                "round": round_index,
                "prompt": record["prompt"],
                "chosen": completions[chosen],
                "rejected": completions[rejected],
                "chosen_reward": rewards[chosen],
                "rejected_reward": rewards[rejected],
                "generated_by": generated_by,
            })
    return rows


def dpo_row(pair: dict[str, Any], chat: bool) -> dict[str, Any]:
    """TRL's ``prompt`` / ``chosen`` / ``rejected`` of a pair, in the form that trains on what the policy saw when it
    sampled. ``chat``: the sampler rendered the prompt through the chat template (a list of messages, or any prompt
    when the tokenizer has a template); TRL applies the template only to conversational rows, so such a pair becomes
    messages (a text prompt one user message, each answer an assistant message). Otherwise it stays text."""
    prompt, chosen, rejected = pair["prompt"], pair["chosen"], pair["rejected"]
    if chat:
        prompt = as_messages(prompt)
        chosen, rejected = [{"role": "assistant", "content": chosen}], [{"role": "assistant", "content": rejected}]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def policy_fingerprint(folder: str | os.PathLike) -> str:
    """The first 16 hex digits of the SHA-256 of a saved policy's weight files (adapter or full model): what a pair
    records to say exactly which weights sampled it."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin") and p.name != "training_args.bin")
    if not files:
        raise FileNotFoundError(f"{folder} holds no weight files (*.safetensors or *.bin).")
    for path in files:
        digest.update(path.name.encode("utf-8"))
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------------------
# Rounds on disk
# --------------------------------------------------------------------------------------------------------------------


def round_dir(output_dir: str | os.PathLike, round_index: int) -> Path:
    return Path(output_dir) / f"round-{round_index}"


def finished_rounds(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of rounds 1, 2, ... that have their completion marker, up to the first that does not."""
    records = []
    while (round_dir(output_dir, len(records) + 1) / ROUND_MARKER).is_file():
        with open(round_dir(output_dir, len(records) + 1) / ROUND_MARKER, encoding="utf-8") as f:
            records.append(json.load(f))
    return records


def _write_json_atomically(data: Any, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(temporary, path)  # a reader (or a resumed run) never sees half a file


def plot_rounds(rounds: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Held-out reward (left) and KL to the starting model (right) over rounds, round 0 being the starting model;
    ``None`` when no round was evaluated. The left panel also shows the mean reward of the answers each round was
    trained on (sampled from the previous round's policy, on the training prompts). Drawn on matplotlib's Agg canvas,
    leaving pyplot alone, like :func:`prefkit.evaluation.plot_reward_distributions`."""
    evaluated = [r for r in rounds if r.get("eval")]
    if not evaluated:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=110)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    start = evaluated[0]["eval"]["initial_reward"]
    points = [(0, start, evaluated[0]["eval"]["initial_reward_interval"])]
    points += [(r["round"], r["eval"]["reward"], r["eval"]["reward_interval"]) for r in evaluated]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    below = [y - (p[2][0] if p[2] else y) for y, p in zip(ys, points)]
    above = [(p[2][1] if p[2] else y) - y for y, p in zip(ys, points)]
    left.errorbar(xs, ys, yerr=[below, above], marker="o", capsize=4, label="held-out prompts (95% CI)")
    sampled = [(r["round"] - 1, r["sample_reward_mean"]) for r in rounds]
    left.plot(*zip(*sampled), marker="s", linestyle="--", alpha=0.7, label="answers trained on next round (training prompts)")
    left.set_xlabel("round (0: the starting model)")
    left.set_ylabel(f"mean reward ({evaluated[0]['eval']['reward_name']})")
    left.set_title("Reward over rounds")
    left.legend(fontsize=8)
    kl = [(0, 0.0, 0.0)] + [(r["round"], r["eval"]["kl"], r["eval"]["kl_sem"] or 0.0) for r in evaluated if r["eval"]["kl"] is not None]
    right.errorbar([k[0] for k in kl], [k[1] for k in kl], yerr=[k[2] for k in kl], marker="o", capsize=4, color="#d62728")
    right.set_xlabel("round (0: the starting model)")
    right.set_ylabel("KL(policy || starting model), nats per answer")
    right.set_title("Drift from the starting model (k3 ± sem)")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.set_xticks(xs)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


# --------------------------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------------------------


class IterativeDPOTrainer:
    """Runs :class:`IterativeDPOConfig`'s rounds (see the module docstring) and keeps every round on disk.

    Example::

        from prefkit import IterativeDPOConfig, IterativeDPOTrainer

        args = IterativeDPOConfig(output_dir="smollm2-dpo-iterative", use_peft=True, num_rounds=3,
                                  samples_per_prompt=4, reward="vader", max_steps=16,
                                  eval_prompts="examples/heldout.txt")
        trainer = IterativeDPOTrainer("HuggingFaceTB/SmolLM2-135M-Instruct", args=args, train_dataset=prompts)
        rounds = trainer.train()        # one record per round, as in rounds.json

    Args:
        model: Hub id or folder of the starting model (each round reloads the policy from disk, so a name, not an
            object).
        train_dataset: the prompts to sample, a dataset or rows with a ``prompt`` column (text or messages), or a
            list of prompts; other columns reach the reward function.
        reward: what scores the answers, overriding ``args.reward``: any spelling of
            :func:`prefkit.rewards.resolve_reward`, including a callable ``fn(prompts, completions) -> list[float]``.
        eval_prompts: held-out prompts (overriding ``args.eval_prompts``); after each round the policy is compared with
            the starting model on them by :func:`prefkit.evaluate`, scored by ``args.eval_reward`` or the reward.
    """

    def __init__(self, model: str | os.PathLike | None = None, args: IterativeDPOConfig | None = None,
                 train_dataset: Any = None, reward: Any = None, eval_prompts: Any = None, processing_class: Any = None,
                 callbacks: list | None = None):
        from ..models import DEFAULT_POLICY
        from ..policy_eval import EvaluationError, prompt_rows
        from ..rewards import resolve_reward
        from ..rl import RewardFunction
        from .policy_eval_callback import read_prompt_file

        model = DEFAULT_POLICY if model is None else model
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError("IterativeDPOTrainer reloads the policy from disk every round: pass the starting model's "
                            f"Hub id or folder, not a loaded {type(model).__name__}.")
        self.model_name = os.fspath(model)
        self.args = args if args is not None else IterativeDPOConfig(output_dir=default_output_dir(self.model_name, "dpo-iterative"))
        if not isinstance(self.args, IterativeDPOConfig):
            raise TypeError(f"args must be an IterativeDPOConfig, not a {type(self.args).__name__}.")
        if self.args.world_size > 1:
            raise ValueError("Iterative DPO runs in one process (it samples and evaluates between rounds); start it "
                             "without a multi-process launch.")
        # Everything a user can get wrong is checked here, before any model loads.
        if train_dataset is None:
            raise ValueError("train_dataset is required: the prompts to sample each round (a 'prompt' column).")
        try:
            self.prompt_rows = prompt_rows(train_dataset)
        except EvaluationError as error:
            raise ValueError(f"train_dataset: {error}") from None
        reward = reward if reward is not None else self.args.reward
        if reward is None:
            raise ValueError("Iterative DPO needs a reward to rank the sampled answers: set reward (e.g. 'vader', a "
                             "reward model folder, 'package.module:function') or pass reward= a callable.")
        resolved = resolve_reward(reward)
        if not callable(getattr(resolved, "score", None)) and not callable(resolved):
            raise TypeError("Iterative DPO ranks each prompt's answers by a pointwise reward; a pairwise judge cannot "
                             "rank them. Pass a reward function or reward model.")
        self.reward_function = RewardFunction(resolved)
        self.reward_function.check_columns(list(self.prompt_rows[0]), "train_dataset")
        self.reward_name = reward if isinstance(reward, str) else self.reward_function.name  # for rounds.json
        if eval_prompts is None and self.args.eval_prompts:
            eval_prompts = read_prompt_file(self.args.eval_prompts, self.args.eval_num_prompts)
        self.eval_rows = prompt_rows(eval_prompts) if eval_prompts is not None else None
        if self.eval_rows is not None:
            self.eval_reward = self.args.eval_reward or (reward if isinstance(reward, str) else resolved)
            self.eval_reward_name = self.args.eval_reward or self.reward_name
        self.processing_class = processing_class
        self.callbacks = callbacks
        self.rounds: list[dict[str, Any]] = []

    # ---- the loop ---------------------------------------------------------------------------------------------------

    def train(self) -> list[dict[str, Any]]:
        """Run the rounds not finished yet; returns every finished round's record (also in ``rounds.json``)."""
        output_dir = Path(self.args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        self.rounds = finished_rounds(output_dir)[: self.args.num_rounds]
        if self.rounds:
            logger.warning("iterative DPO: rounds 1-%d of %s are finished; %s", len(self.rounds), output_dir,
                           f"starting at round {len(self.rounds) + 1}" if len(self.rounds) < self.args.num_rounds else "nothing left to run")
        for round_index in range(len(self.rounds) + 1, self.args.num_rounds + 1):
            self.rounds.append(self.run_round(round_index))
            self.write_summary()
        self.write_summary()
        self.save_model()
        if self.args.push_to_hub:
            self.push_to_hub()
        return self.rounds

    def run_round(self, round_index: int) -> dict[str, Any]:
        """Sample -> score -> pair -> DPO -> save -> evaluate round ``round_index``; its marker is written last."""
        from datasets import Dataset

        folder = round_dir(self.args.output_dir, round_index)
        if folder.exists():
            shutil.rmtree(folder)  # a round without its marker was cut short: start it over
        folder.mkdir(parents=True)
        model, tokenizer, ref_model, generated_by = self.load_round_policy(round_index)

        # 1. sample and score: the current policy answers each prompt samples_per_prompt times
        records = sample_and_score(
            model, tokenizer, self.round_prompts(round_index), self.reward_function, round_index=round_index,
            num_samples=self.args.samples_per_prompt, temperature=self.args.temperature, top_p=self.args.top_p,
            max_new_tokens=self.args.max_new_tokens, batch_size=self.args.sampling_batch_size, seed=self.args.seed,
        )
        write_jsonl([{"round": round_index, **r, "generated_by": generated_by} for r in records], folder / "samples.jsonl")
        # 2. pair
        pairs = build_pairs(records, self.args.pair_strategy, self.args.pair_margin, round_index=round_index,
                            generated_by=generated_by)
        write_jsonl(pairs, folder / "pairs.jsonl")
        if not pairs:
            raise ValueError(
                f"round {round_index}: no pair — on every prompt the {self.args.samples_per_prompt} answers were empty, "
                f"repeated or within pair_margin={self.args.pair_margin} of each other in reward (see {folder / 'samples.jsonl'}). "
                "Raise temperature or samples_per_prompt, or lower pair_margin."
            )
        # 3. DPO against the round's reference
        trainer = DPOTrainer(
            model, ref_model=ref_model, args=self.round_config(folder / "model"),
            train_dataset=Dataset.from_list([dpo_row(p, uses_chat_template(tokenizer, p["prompt"])) for p in pairs]),
            processing_class=tokenizer, callbacks=self.callbacks,
        )
        policy = trainer.accelerator.unwrap_model(trainer.model)
        if self.args.reference == "initial" and "ref" in getattr(policy, "peft_config", {}):
            policy.delete_adapter("ref")  # reference = the base with adapters disabled (see the module docstring)
        trainer.train()
        if "ref" in getattr(policy, "peft_config", {}):
            policy.delete_adapter("ref")  # the frozen copy of the previous adapter is not part of this round's policy
        trainer.save_model(str(folder / "model"))
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        last = next((e for e in reversed(trainer.state.log_history) if "rewards/margins" in e), {})
        train_metrics = {"steps": trainer.state.global_step, "first_loss": losses[0] if losses else None,
                         "loss": losses[-1] if losses else None,
                         **{k: last[k] for k in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies") if k in last}}
        del trainer, policy, model, ref_model
        self._free_memory()

        sample_rewards = [r for record in records for r in record["rewards"]]
        record = {
            "round": round_index,
            "policy": f"round-{round_index}/model",
            "fingerprint": policy_fingerprint(folder / "model"),
            "generated_by": generated_by,
            "reference": self.args.reference,
            "num_prompts": len(records),
            "samples_per_prompt": self.args.samples_per_prompt,
            "num_pairs": len(pairs),
            "sample_reward_mean": sum(sample_rewards) / len(sample_rewards),
            "sample_reward_name": self.reward_name,
            "train": train_metrics,
            "eval": self.evaluate_round(round_index),
        }
        record = json.loads(json.dumps(record))  # as rounds.json and a resumed run will read it (lists, not tuples)
        _write_json_atomically(record, folder / ROUND_MARKER)  # last: the round is finished
        return record

    # ---- the pieces -------------------------------------------------------------------------------------------------

    def load_round_policy(self, round_index: int):
        """``(model, tokenizer, ref_model, generated_by)`` for round ``round_index``: the policy of the previous round,
        loaded to be trained further, and the reference when it must be a separate model (full fine-tuning with
        ``reference="initial"``); ``None`` lets TRL derive it (see the module docstring)."""
        from transformers import set_seed

        from ..models import is_quantized, keep_4bit_weights_trainable_on_cpu

        set_seed(self.args.seed + round_index)  # a new adapter (round 1) starts from a seeded random init
        if round_index == 1:
            model, tokenizer = load_model_for_training(self.model_name, self.args)
            if is_quantized(model):
                keep_4bit_weights_trainable_on_cpu(model)  # before sampling: on a CPU it would repack them for inference
            generated_by = {"round": 0, "policy": "initial", "model": self.model_name}
            return model, self.processing_class or tokenizer, None, generated_by
        previous = round_dir(self.args.output_dir, round_index - 1) / "model"
        generated_by = {"round": round_index - 1, "policy": f"round-{round_index - 1}/model",
                        "fingerprint": policy_fingerprint(previous)}
        ref_model = None
        if (previous / "adapter_config.json").is_file():
            from peft import PeftModel

            base, tokenizer = load_model_for_training(self.model_name, self.args)
            if is_quantized(base):
                keep_4bit_weights_trainable_on_cpu(base)  # before sampling: on a CPU it would repack them for inference
            model = PeftModel.from_pretrained(base, str(previous), is_trainable=True)
        else:
            model, tokenizer = load_model_for_training(str(previous), self.args)
            if self.args.reference == "initial":
                ref_model, _ = load_model_for_training(self.model_name, self.args)
                ref_model.eval().requires_grad_(False)
        return model, self.processing_class or tokenizer, ref_model, generated_by

    def round_prompts(self, round_index: int) -> list[dict[str, Any]]:
        """All prompts, or a random subset of ``prompts_per_round`` drawn anew each round (seeded)."""
        size = self.args.prompts_per_round
        if size is None or size >= len(self.prompt_rows):
            return self.prompt_rows
        chosen = sorted(random.Random(f"{self.args.seed}|prompts|{round_index}").sample(range(len(self.prompt_rows)), size))
        return [self.prompt_rows[i] for i in chosen]

    def round_config(self, output_dir: Path) -> DPOConfig:
        """The DPO settings of one round: this config's DPO fields, saving into ``output_dir``. The model arrives
        loaded (so no quantization or loading keywords), and the held-out evaluation runs between rounds, not inside."""
        values = {f.name: getattr(self.args, f.name) for f in dataclasses.fields(DPOConfig) if f.init}
        values.update(output_dir=str(output_dir), quantization=None, load_in_4bit=False, load_in_8bit=False,
                      model_init_kwargs=None, eval_prompts=None, push_to_hub=False, save_strategy="no")
        return DPOConfig(**values)

    def evaluate_round(self, round_index: int) -> dict[str, Any] | None:
        """:func:`prefkit.evaluate` of round ``round_index``'s policy against the starting model on the held-out
        prompts, into ``round-<r>/eval/``; ``None`` without held-out prompts."""
        if self.eval_rows is None:
            return None
        from ..models import adapter_base
        from ..policy_eval import evaluate

        policy = round_dir(self.args.output_dir, round_index) / "model"
        name = f"round-{round_index}"
        report = evaluate(
            {"initial": adapter_base(policy) or self.model_name, name: str(policy)}, self.eval_rows,
            reward=self.eval_reward, judge=self._eval_judge(), baseline="initial",
            max_new_tokens=self.args.eval_max_new_tokens, temperature=self.args.eval_temperature,
            batch_size=self.args.per_device_eval_batch_size, seed=self.args.seed,
            output_dir=round_dir(self.args.output_dir, round_index) / "eval", progress=not self.args.disable_tqdm,
        )
        initial, trained = report["initial"], report[name]
        self._free_memory()
        return {
            "reward_name": self.eval_reward_name,
            "num_prompts": len(self.eval_rows),
            "reward": trained.reward, "reward_interval": trained.reward_interval,
            "reward_gain": trained.reward_gain, "reward_gain_interval": trained.reward_gain_interval,
            "initial_reward": initial.reward, "initial_reward_interval": initial.reward_interval,
            "win_rate": trained.win_rate, "win_rate_interval": trained.win_rate_interval,
            "kl": trained.kl_k3, "kl_sem": trained.kl_k3_sem, "length": trained.length,
        }

    def _eval_judge(self):
        if not self.args.eval_judge:
            return None
        from ..data.judges import LLMJudge
        from ..models import load_policy

        judge_model, judge_tokenizer = load_policy(self.args.eval_judge)
        return LLMJudge(judge_model, judge_tokenizer, both_orders=False)

    def write_summary(self) -> None:
        """``rounds.json`` (every finished round) and ``rounds.png`` (reward and KL over rounds)."""
        output_dir = Path(self.args.output_dir)
        settings = {key: getattr(self.args, key) for key in (
            "num_rounds", "samples_per_prompt", "pair_strategy", "pair_margin", "reference", "temperature", "top_p",
            "max_new_tokens", "prompts_per_round", "beta", "learning_rate", "max_steps", "num_train_epochs", "seed")}
        _write_json_atomically({"model": self.model_name, "reward": self.reward_name,
                                "settings": settings, "rounds": self.rounds}, output_dir / ROUNDS_FILE)
        plot_rounds(self.rounds, output_dir / ROUNDS_PLOT)

    def save_model(self, output_dir: str | os.PathLike | None = None) -> Path | None:
        """Copy the last finished round's policy (adapter or weights, tokenizer, model card) into ``output_dir``
        (default: ``args.output_dir``), so it loads like the output of any other prefkit trainer."""
        if not self.rounds:
            return None
        source = round_dir(self.args.output_dir, self.rounds[-1]["round"]) / "model"
        target = Path(output_dir or self.args.output_dir)
        shutil.copytree(source, target, dirs_exist_ok=True)
        return target

    def push_to_hub(self, repo_id: str | None = None, commit_message: str | None = None) -> str:
        """Upload the final policy, ``rounds.json``, ``rounds.png`` and every round's samples, pairs and metrics (not
        the per-round policies) to the Hub model repo ``repo_id`` (default: ``hub_model_id``, else the output folder's
        name); returns its URL. The token comes from ``hub_token`` or the login, and is never written anywhere."""
        from huggingface_hub import HfApi

        repo_id = repo_id or self.args.hub_model_id or Path(self.args.output_dir).resolve().name
        api = HfApi(token=self.args.hub_token)
        url = api.create_repo(repo_id, private=self.args.hub_private_repo, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id, folder_path=str(self.args.output_dir), ignore_patterns=["round-*/model/*", "*.tmp"],
            commit_message=commit_message or f"Iterative DPO: {len(self.rounds)} round(s)",
        )
        return str(url)

    @staticmethod
    def _free_memory() -> None:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


__all__ = ["IterativeDPOConfig", "IterativeDPOTrainer", "build_pairs", "pair_indices", "plot_rounds",
           "policy_fingerprint", "sample_and_score"]
