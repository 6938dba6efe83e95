"""Sample completions from PPO's rollouts, written where a person can read them: ``completions.jsonl`` in the
output folder, and a table in Weights & Biases or Trackio when ``report_to`` names them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import TrainerCallback

COMPLETIONS_NAME = "completions.jsonl"


class CompletionSamplesCallback(TrainerCallback):
    """Logs the first ``num_completions`` completions of every ``every_n_steps``-th rollout (steps 1, 1 + n, ...).

    Each row is ``{"step", "prompt", "completion", "score"}``, appended to ``<output_dir>/completions.jsonl``.
    :class:`prefkit.trainers.ppo.PPOTrainer` hands each rollout to :meth:`add_rollout`; the rows are written at the
    end of that step, gathered from every process (so each process must have this callback).
    """

    def __init__(self, every_n_steps: int = 10, num_completions: int = 8):
        self.every_n_steps = max(every_n_steps, 1)
        self.num_completions = num_completions
        self._rows: list[dict[str, Any]] | None = None

    def add_rollout(self, step: int, prompts: Sequence[Any], completions: Sequence[str], scores: torch.Tensor) -> None:
        """Keep the samples of rollout number ``step`` (1-based) if that step is one to log."""
        if (step - 1) % self.every_n_steps:
            return
        count = self.num_completions
        self._rows = [
            {"step": step, "prompt": prompt_text(p), "completion": c, "score": float(s)}
            for p, c, s in zip(prompts[:count], completions[:count], scores[:count].tolist())
        ]

    def on_step_end(self, args, state, control, **kwargs):
        if self._rows is None:
            return
        from accelerate.utils import gather_object

        rows = gather_object(self._rows)[: self.num_completions]
        self._rows = None
        if state.is_world_process_zero:
            write_samples(rows, args.output_dir, args.report_to or [])


def write_samples(rows: list[dict[str, Any]], output_dir: str, report_to: Sequence[str] = ()) -> None:
    """Append ``rows`` to ``<output_dir>/completions.jsonl``; log them as a table to wandb / trackio if reported to."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, COMPLETIONS_NAME), "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    if "wandb" in report_to:
        import wandb

        if wandb.run is not None:
            import pandas as pd

            wandb.log({"completions": wandb.Table(dataframe=pd.DataFrame(rows))})
    if "trackio" in report_to:
        import pandas as pd
        import trackio

        trackio.log({"completions": trackio.Table(dataframe=pd.DataFrame(rows))})


def prompt_text(prompt: Any) -> str:
    """A prompt as one line of text: itself, or ``role: content`` lines for a conversation."""
    if isinstance(prompt, list):
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in prompt)
    return str(prompt)
