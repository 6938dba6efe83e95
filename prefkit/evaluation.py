"""How good is a reward model? Pairwise accuracy and margins on held-out pairs, and a picture of both reward
distributions. Also the training curves of a PPO run (:func:`plot_training_curves`).

::

    from prefkit import RewardModel
    from prefkit.evaluation import evaluate_reward_model, plot_reward_distributions

    result = evaluate_reward_model(RewardModel.from_pretrained("my-rm"), test_pairs)
    print(result["accuracy"], result["mean_margin"])
    plot_reward_distributions(result["chosen_rewards"], result["rejected_rewards"], "rewards.png")
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .data.validation import validate_preference_dataset


def evaluate_reward_model(
    reward_model,
    pairs: Iterable[Mapping[str, Any]],
    batch_size: int | None = None,
    max_length: int | None = None,
) -> dict[str, Any]:
    """Score both sides of every preference pair and summarise how often the chosen one wins.

    Args:
        reward_model: a :class:`prefkit.RewardModel` (anything with its ``score(prompts, responses, batch_size,
            max_length)``).
        pairs: a ``datasets.Dataset`` or a list of rows with TRL's columns ``prompt`` (optional: implicit prompt),
            ``chosen``, ``rejected``, standard or conversational. Validated first; bad rows are all reported.

    Returns:
        ``accuracy`` (fraction of pairs with r(chosen) > r(rejected); a tie counts as wrong, as in TRL),
        ``mean_margin`` (mean of r(chosen) − r(rejected)), ``num_pairs``, ``chosen_mean``, ``rejected_mean``,
        ``reward_std`` (over both sides), and the per-pair ``chosen_rewards`` / ``rejected_rewards`` lists.
    """
    rows = list(pairs)
    validate_preference_dataset(rows, "pairs")
    has_prompt = all(row.get("prompt") is not None for row in rows)
    prompts = [row["prompt"] for row in rows] if has_prompt else None
    chosen = reward_model.score(prompts, [row["chosen"] for row in rows], batch_size=batch_size, max_length=max_length)
    rejected = reward_model.score(
        prompts, [row["rejected"] for row in rows], batch_size=batch_size, max_length=max_length
    )
    return summarize_rewards(chosen, rejected)


def summarize_rewards(chosen_rewards: Sequence[float], rejected_rewards: Sequence[float]) -> dict[str, Any]:
    """Accuracy, margins and spread of paired chosen/rejected rewards (see :func:`evaluate_reward_model`)."""
    if len(chosen_rewards) != len(rejected_rewards) or not chosen_rewards:
        raise ValueError(
            f"Need the same non-zero number of chosen and rejected rewards, got {len(chosen_rewards)} and "
            f"{len(rejected_rewards)}."
        )
    n = len(chosen_rewards)
    margins = [c - r for c, r in zip(chosen_rewards, rejected_rewards)]
    both = list(chosen_rewards) + list(rejected_rewards)
    mean = sum(both) / len(both)
    return {
        "accuracy": sum(m > 0 for m in margins) / n,
        "mean_margin": sum(margins) / n,
        "num_pairs": n,
        "chosen_mean": sum(chosen_rewards) / n,
        "rejected_mean": sum(rejected_rewards) / n,
        "reward_std": (sum((x - mean) ** 2 for x in both) / len(both)) ** 0.5,
        "chosen_rewards": [float(x) for x in chosen_rewards],
        "rejected_rewards": [float(x) for x in rejected_rewards],
    }


def plot_reward_distributions(
    chosen_rewards: Sequence[float],
    rejected_rewards: Sequence[float],
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Write a PNG: overlaid histograms of chosen and rejected rewards (left) and of their per-pair margins (right).

    A good reward model shows two separated humps and margins mostly right of zero. Uses matplotlib's Agg canvas
    directly, so it works headless and leaves pyplot's global state alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = summarize_rewards(chosen_rewards, rejected_rewards)
    margins = [c - r for c, r in zip(chosen_rewards, rejected_rewards)]
    figure = Figure(figsize=(10, 4), dpi=110)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    low, high = min(min(chosen_rewards), min(rejected_rewards)), max(max(chosen_rewards), max(rejected_rewards))
    bins = _bins(low, high, len(chosen_rewards))
    left.hist(rejected_rewards, bins=bins, alpha=0.6, color="#d62728", label=f"rejected (mean {summary['rejected_mean']:.2f})")
    left.hist(chosen_rewards, bins=bins, alpha=0.6, color="#2ca02c", label=f"chosen (mean {summary['chosen_mean']:.2f})")
    left.set_xlabel("reward r(x, y)")
    left.set_ylabel("pairs")
    left.set_title("Reward of chosen and rejected responses")
    left.legend(loc="best", fontsize=8)
    # The range always includes 0, so the dashed line (where a pair flips from right to wrong) is on the axis.
    right.hist(margins, bins=_bins(min(min(margins), 0.0), max(max(margins), 0.0), len(margins)), color="#1f77b4", alpha=0.8)
    right.axvline(0.0, color="black", linestyle="--", linewidth=1)
    right.set_xlabel("margin r(x, y_chosen) − r(x, y_rejected)")
    right.set_ylabel("pairs")
    right.set_title(f"accuracy {summary['accuracy']:.1%}, mean margin {summary['mean_margin']:.2f}")
    figure.suptitle(title or f"Reward model on {summary['num_pairs']} held-out pairs")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _bins(low: float, high: float, count: int) -> list[float]:
    number = max(5, min(40, int(count**0.5) * 2))
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    step = (high - low) / number
    return [low + i * step for i in range(number + 1)]


def write_reward_evaluation(
    result: Mapping[str, Any], output_dir: str | os.PathLike, name: str = "reward", title: str | None = None
) -> tuple[Path, Path]:
    """Save an :func:`evaluate_reward_model` result as ``{name}_eval.json`` and ``{name}_distributions.png``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / f"{name}_eval.json"
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(dict(result), f, indent=2)
    png_path = plot_reward_distributions(
        result["chosen_rewards"], result["rejected_rewards"], output_dir / f"{name}_distributions.png", title=title
    )
    return json_path, png_path


def format_summary(result: Mapping[str, Any]) -> str:
    """One line for logs: accuracy, mean margin, means of both sides."""
    return (
        f"accuracy {result['accuracy']:.3f} on {result['num_pairs']} pairs, mean margin {result['mean_margin']:.3f} "
        f"(chosen {result['chosen_mean']:.3f}, rejected {result['rejected_mean']:.3f})"
    )


def split_pairs_by_prompt(dataset, test_fraction: float, seed: int = 42):
    """``(train, test)`` with every prompt on one side only, so test accuracy is measured on unseen prompts.

    Rows sharing a prompt (several pairs per question) would otherwise leak between the splits and flatter the
    held-out accuracy. Works on a ``datasets.Dataset``; ``test_fraction`` is of prompts, not rows.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}.")
    column = dataset["prompt"] if "prompt" in dataset.column_names else dataset["chosen"]
    keys = [json.dumps(value, sort_keys=True) if not isinstance(value, str) else value for value in column]
    unique = sorted(set(keys))
    if len(unique) < 2:
        raise ValueError("Splitting by prompt needs at least two distinct prompts.")
    random.Random(seed).shuffle(unique)
    n_test = min(len(unique) - 1, max(1, round(len(unique) * test_fraction)))
    test_keys = set(unique[:n_test])
    test_rows = [i for i, key in enumerate(keys) if key in test_keys]
    train_rows = [i for i, key in enumerate(keys) if key not in test_keys]
    return dataset.select(train_rows), dataset.select(test_rows)


def plot_training_curves(log_history: list[dict[str, Any]], path: str) -> str | None:
    """Reward, KL, entropy and losses over PPO steps as a PNG (``ppo_curves.png``); ``None`` when nothing was logged.

    ``log_history`` is a ``Trainer.state.log_history`` of :class:`prefkit.trainers.ppo.PPOTrainer`. Like
    :func:`plot_reward_distributions`, it draws on matplotlib's Agg canvas directly and leaves pyplot alone.
    """
    panels = [
        ("reward", ["objective/scores", "objective/rlhf_reward"]),
        ("KL to the reference (nats / completion)", ["objective/kl"]),
        ("entropy (nats / completion)", ["objective/entropy"]),
        ("loss", ["loss/policy_avg", "loss/value_avg"]),
    ]
    entries = [e for e in log_history if "objective/scores" in e]
    if not entries:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 7))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 2, sharex=True)
    for axis, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            points = [(e["step"], e[key]) for e in entries if key in e]
            if points:
                axis.plot(*zip(*points), marker="." if len(points) < 50 else None, label=key)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if len(keys) > 1:
            axis.legend(fontsize=8)
    for axis in axes[-1]:
        axis.set_xlabel("PPO step")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
