"""``prefkit <command>``: one entry point for every script.

Each command lives in ``prefkit.commands.<name>`` with a ``main(argv)``; the top-level ``scripts/*.py`` call the same
``main``, so ``prefkit dpo ...``, ``python scripts/dpo.py ...`` and ``accelerate launch scripts/dpo.py ...`` are
one program. Modules are imported only when their command runs, so ``prefkit --help`` is instant. Every command
runs through :mod:`prefkit.commands.runner`: a user's mistake prints ``error: ...`` and exits with status 2, Ctrl-C
exits with 130, and only a bug shows a traceback.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "dpo": ("prefkit.commands.dpo", "Train a policy with DPO (TRL-compatible, QLoRA-ready)."),
    "dpo-iterative": ("prefkit.commands.dpo_iterative", "Iterative (online) DPO: sample, score, pair, DPO, for N rounds."),
    "kto": ("prefkit.commands.kto", "Train a policy with KTO on thumbs up / down of single answers (no pairs needed)."),
    "reward": ("prefkit.commands.reward", "Train a Bradley-Terry reward model (decoder or encoder)."),
    "reward-eval": ("prefkit.commands.reward_eval", "Evaluate a reward model on held-out pairs; writes a PNG."),
    "ppo": ("prefkit.commands.ppo", "Train a policy with PPO (clip / KL-penalty; GAE, REINFORCE, RLOO, GRPO)."),
    "grpo": ("prefkit.commands.grpo", "Run TRL's GRPOTrainer with a prefkit reward model."),
    "rloo": ("prefkit.commands.rloo", "Run TRL's RLOOTrainer with a prefkit reward model."),
    "eval": ("prefkit.commands.evaluate", "Did my run work? Reward, win rate, KL, length of policies vs their base."),
    "bon": ("prefkit.commands.bon", "Best-of-N: sample N answers per prompt, keep the best by reward."),
    "generate-pairs": ("prefkit.commands.generate_pairs", "Sample response pairs from a model for labeling."),
    "label": ("prefkit.commands.label", "Label pairs with a judge (llm, bleu, rouge, reward); resumable."),
    "export": ("prefkit.commands.export", "Export labels/votes to a TRL dataset (JSONL, Parquet, Hub)."),
    "app": ("prefkit.commands.app", "Launch the Gradio app: Best-of-N reranking and preference labeling."),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: prefkit <command> [options]   (prefkit <command> --help for its options)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"prefkit {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"prefkit: unknown command {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result = module.main(rest, prog=f"prefkit {name}")
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
