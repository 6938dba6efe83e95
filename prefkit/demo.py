"""prefkit's demo reward model: MiniLM fine-tuned on the bundled preference pairs, a few minutes on a CPU.

It is what the app, ``prefkit bon`` and ``--reward_model demo`` score with when nobody names a reward model, so it
works offline on any machine: the first use trains it (:func:`build_demo_reward_model`, atomically, once, under a
file lock) into ``cache_dir()/"reward-demo-v2"``, later uses load it (:func:`load_demo_reward_model`).

The recipe (:class:`DemoRewardPreset`) is ``prefkit reward --preset demo``. This module sits above the trainers
because it trains with :class:`prefkit.RewardTrainer`; the inference side, :class:`prefkit.RewardModel`, knows
nothing of it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .models import cache_dir
from .reward_model import RewardModel

logger = logging.getLogger(__name__)

DEMO_REWARD_DIR = "reward-demo-v2"  # v2: trained on the style-decorrelated data; a v1 cache is not reused
"""Folder under :func:`prefkit.models.cache_dir` that holds the demo reward model (``prefkit reward --preset demo``)."""


@dataclass(frozen=True)
class DemoRewardPreset:
    """Settings of ``prefkit reward --preset demo``: MiniLM (22M parameters) fine-tuned, word embeddings frozen."""

    test_fraction: float = 0.15  # of prompts held out when the data has no train/test `split` column
    learning_rate: float = 1e-4
    num_train_epochs: float = 2.0
    per_device_train_batch_size: int = 16
    max_length: int = 256
    warmup_ratio: float = 0.1
    seed: int = 42
    max_steps: int = -1
    # The 30k x 384 word embeddings are half of MiniLM's weights; a few hundred pairs cannot improve them, and not
    # training them saves their gradients and optimizer state.
    freeze_embeddings: bool = True


DEMO_PRESET = DemoRewardPreset()


class _ProgressCallback(TrainerCallback):
    """Forwards training progress to a ``progress(fraction, message)`` callback (the app's progress bar)."""

    def __init__(self, progress: Callable[[float, str], None], start: float, end: float):
        self.progress, self.start, self.end = progress, start, end

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps:
            fraction = self.start + (self.end - self.start) * state.global_step / state.max_steps
            self.progress(fraction, f"Training the demo reward model: step {state.global_step}/{state.max_steps}")


def demo_preference_data_path() -> Path:
    """The preference pairs the demo model trains on: prefkit's bundled data set (synthetic, CC0)."""
    from .data import bundled_preferences_path

    return bundled_preferences_path()


def demo_splits(dataset, preset: DemoRewardPreset):
    """The data's own ``split`` column when it has train and test rows (the bundled set holds out whole topics),
    else a share of the prompts."""
    from .evaluation import split_pairs_by_prompt

    if "split" in dataset.column_names and {"train", "test"} <= set(dataset["split"]):
        return (
            dataset.filter(lambda row: row["split"] == "train"),
            dataset.filter(lambda row: row["split"] == "test"),
        )
    return split_pairs_by_prompt(dataset, preset.test_fraction, seed=preset.seed)


def held_out_accuracy_by_style(reward_model, test_pairs) -> dict[str, Any]:
    """Accuracy on the held-out pairs of each ``style`` group, and on all style-decorrelated ones together.

    The bundled set's main pairs put a kind, usually longer answer against an unhelpful one, so a model can pass them
    on style alone; its ``terse-right-vs-*`` pairs prefer a plain helpful answer to a polite unhelpful one and its
    ``polite-right-vs-*`` pairs a polite helpful answer to a terse unhelpful one. A model that learned style instead
    of help scores high on the first group and low on one of the others.
    """
    from .evaluation import evaluate_reward_model

    if "style" not in getattr(test_pairs, "column_names", []):
        return {}
    rows = list(test_pairs)
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row["style"], []).append(row)
    decorrelated = [row for row in rows if row["style"] != "kind-vs-unhelpful"]
    result: dict[str, Any] = {"accuracy_by_style": {}}
    for style, members in sorted(groups.items()):
        summary = evaluate_reward_model(reward_model, members)
        result["accuracy_by_style"][style] = {"accuracy": summary["accuracy"], "num_pairs": summary["num_pairs"]}
    if decorrelated:
        summary = evaluate_reward_model(reward_model, decorrelated)
        result["style_decorrelated_accuracy"] = summary["accuracy"]
        result["style_decorrelated_pairs"] = summary["num_pairs"]
    probe = style_probe_pairs()
    summary = evaluate_reward_model(reward_model, probe)
    result["style_probe_accuracy"] = summary["accuracy"]
    result["style_probe_pairs"] = summary["num_pairs"]
    return result


def style_probe_pairs() -> list[dict[str, Any]]:
    """Eighteen hand-written pairs outside the generator's templates: twelve put a terse correct answer against a
    polite one that is wrong, evasive, off-topic or unsafe, six a polite correct answer against a terse wrong or unsafe
    one. A model that prefers help over style passes both kinds; one that learned "polite wins" or "terse wins" fails
    one kind."""
    from .data import BUNDLED_DIR

    with open(BUNDLED_DIR / "style_probe.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def train_demo_reward_model(
    output_dir: str | os.PathLike,
    *,
    dataset: Any = None,
    progress: Callable[[float, str], None] | None = None,
    preset: DemoRewardPreset | None = None,
) -> dict[str, Any]:
    """Train the demo reward model (MiniLM, :data:`prefkit.models.DEFAULT_ENCODER`) into ``output_dir``.

    ``dataset`` (default: the bundled pairs) is a pairs file or ``datasets.Dataset``. Its ``test`` rows (the
    bundled set holds out whole topics), or a share of its prompts when it has no ``split`` column, are held out; the
    model's accuracy on them is returned and saved as ``reward_eval.json`` next to ``reward_distributions.png``.
    Use :func:`load_demo_reward_model` to get the cached model instead.
    """
    from .data.io import load_dataset_any
    from .models import DEFAULT_ENCODER
    from .trainers.reward import RewardConfig, RewardTrainer

    preset = preset or DEMO_PRESET
    report = progress or (lambda fraction, message: None)
    report(0.0, "Loading the preference pairs")
    if dataset is None:
        dataset = demo_preference_data_path()
    if isinstance(dataset, (str, os.PathLike)):
        dataset = load_dataset_any(dataset, split="train")
    train_pairs, test_pairs = demo_splits(dataset, preset)
    args = RewardConfig(
        output_dir=os.fspath(output_dir),
        learning_rate=preset.learning_rate,
        num_train_epochs=preset.num_train_epochs,
        max_steps=preset.max_steps,
        per_device_train_batch_size=preset.per_device_train_batch_size,
        per_device_eval_batch_size=32,
        max_length=preset.max_length,
        warmup_steps=preset.warmup_ratio,
        lr_scheduler_type="linear",
        seed=preset.seed,
        gradient_checkpointing=False,  # 22M parameters: memory is no issue, recomputation would only cost time
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10,
        report_to="none",
        bf16=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )
    report(0.02, "Loading MiniLM")
    trainer = RewardTrainer(DEFAULT_ENCODER, args=args, train_dataset=train_pairs, eval_dataset=test_pairs)
    if preset.freeze_embeddings:
        trainer.model.get_input_embeddings().weight.requires_grad_(False)
    if progress is not None:
        trainer.add_callback(_ProgressCallback(progress, 0.05, 0.95))
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    report(0.96, "Saving the demo reward model")
    trainer.save_model(os.fspath(output_dir))
    trainer.create_model_card(model_name="prefkit-demo-reward-model")
    result = dict(trainer.reward_evaluation.get("eval", {}))
    result.update(held_out_accuracy_by_style(RewardModel.from_pretrained(os.fspath(output_dir)), test_pairs))
    result.update(
        train_seconds=round(train_seconds, 1),
        train_pairs=len(train_pairs),
        base_model=DEFAULT_ENCODER,
        preset={k: getattr(preset, k) for k in preset.__dataclass_fields__},
    )
    with open(Path(output_dir) / "reward_eval.json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


def demo_reward_model_dir() -> Path:
    """Where the demo reward model lives: ``cache_dir() / "reward-demo-v2"``."""
    return cache_dir() / DEMO_REWARD_DIR


def is_complete_model_dir(folder: Path) -> bool:
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


def load_demo_reward_model(
    train_if_missing: bool = True,
    progress: Callable[[float, str], None] | None = None,
    device: str | None = None,
) -> RewardModel:
    """The offline demo reward model (MiniLM trained by prefkit on its bundled preference pairs).

    Loaded from ``cache_dir()/"reward-demo-v2"``; when it is not there and ``train_if_missing``, it is trained first (a
    few minutes on a CPU, with a progress bar; ``progress(fraction, message)`` is called as training goes, e.g. by
    the app). Training writes into a temporary folder renamed into place when complete, under a file lock, so two
    processes never train it twice and a crash never leaves half a model behind.
    """
    target = demo_reward_model_dir()
    if not is_complete_model_dir(target):
        if not train_if_missing:
            raise FileNotFoundError(
                f"The demo reward model is not in {target}. Train it (a few minutes on a CPU) with:\n"
                "    prefkit reward --preset demo"
            )
        build_demo_reward_model(progress=progress)
    if progress is not None:
        progress(1.0, "Loading the demo reward model")
    return RewardModel.from_pretrained(target, device=device)


def build_demo_reward_model(
    output_dir: str | os.PathLike | None = None,
    *,
    force: bool = False,
    dataset: Any = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Train the demo reward model into ``output_dir`` (default :func:`demo_reward_model_dir`), atomically and once.

    Returns the held-out evaluation (``accuracy``, ``mean_margin``, ``train_seconds`` ...); when the model already
    exists and ``force`` is off, returns the evaluation saved next to it without training.
    """
    from filelock import FileLock

    
    target = Path(output_dir) if output_dir is not None else demo_reward_model_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if is_complete_model_dir(target) and not force:
            return _saved_evaluation(target)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            metrics = train_demo_reward_model(staging, dataset=dataset, progress=progress)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("Demo reward model saved to %s", target)
    return metrics


def _saved_evaluation(folder: Path) -> dict[str, Any]:
    file = folder / "reward_eval.json"
    if not file.exists():
        return {}
    with open(file, encoding="utf-8") as f:
        return json.load(f)
