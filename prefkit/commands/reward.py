"""Train a Bradley-Terry reward model (a decoder with a scalar head, or a BERT-family encoder).

    prefkit reward --model_name_or_path HuggingFaceTB/SmolLM2-135M-Instruct --dataset_name prefkit/data/bundled/sentiment_pairs.jsonl \\
        --output_dir smollm2-rm --quantization 4bit --eval_fraction 0.1 --eval_strategy epoch
    prefkit reward --preset demo        # prefkit's offline demo reward model (MiniLM, a few minutes on a CPU)
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml scripts/reward.py --config examples/reward.yaml

With held-out pairs (a test split, or --eval_fraction) the end of training writes reward_eval.json and
reward_distributions.png to --output_dir.
"""

from __future__ import annotations

import argparse
import json
import sys

PRESETS = ("demo",)

_EPILOG = (
    "Preset: `prefkit reward --preset demo [--output_dir DIR] [--dataset_name FILE] [--force]` trains the "
    "offline demo reward model (MiniLM on prefkit's bundled preference pairs) into prefkit's cache, where the app "
    "finds it."
)


KEY_FLAGS = (
    ("eval_fraction", "hold out this fraction of the prompts to measure accuracy on (when there is no test split)"),
    ("max_length", "longest prompt + answer in tokens; longer pairs are dropped"),
)


def command():
    from ..trainers.reward import RewardConfig, RewardTrainer
    from .training import TrainingCommand

    return TrainingCommand(
        "reward", RewardConfig, RewardTrainer, splits=reward_splits, epilog=_EPILOG, description=__doc__,
        key_flags=KEY_FLAGS,
    )


def make_parser(prog: str | None = None):
    return command().parser(prog)


def make_preset_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train a reward model from a prefkit preset.")
    parser.add_argument("--preset", choices=PRESETS, required=True, help="demo: MiniLM on the bundled pairs.")
    parser.add_argument(
        "--output_dir", default=None, help="Where to save it (default: prefkit's cache, where the app looks)."
    )
    parser.add_argument(
        "--dataset_name", default=None, help="A pairs file (.jsonl/.parquet/...) instead of the bundled data."
    )
    parser.add_argument("--force", action="store_true", help="Train again even if the model is already there.")
    return parser


def _wants_preset(argv: list[str]) -> bool:
    return any(arg == "--preset" or arg.startswith("--preset=") for arg in argv)


def run_preset(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..demo import build_demo_reward_model, demo_reward_model_dir, is_complete_model_dir
    from .runner import check_output_path

    target = check_output_path(Path(args.output_dir) if args.output_dir else demo_reward_model_dir(), "--output_dir", folder=True)
    if is_complete_model_dir(target) and not args.force:
        print(f"prefkit reward: the demo reward model is already in {target} (pass --force to train it again).")
        metrics = build_demo_reward_model(target)
    else:
        print(f"prefkit reward: training the demo reward model into {target}")
        metrics = build_demo_reward_model(target, force=args.force, dataset=args.dataset_name)
    summary = {k: v for k, v in metrics.items() if not k.endswith("_rewards")}
    print(f"prefkit reward: demo reward model in {target} (with reward_eval.json and reward_distributions.png)")
    print(json.dumps(summary, indent=2))
    return 0


def reward_splits(dataset_args, training_args):
    """``(train, held-out or None)``: the dataset's test split when it has one, else ``--eval_fraction`` of its
    *prompts* (a prompt never sits on both sides, so held-out accuracy is measured on unseen prompts)."""
    from ..evaluation import split_pairs_by_prompt
    from .arguments import load_dataset_splits, no_eval_split_error

    dataset = load_dataset_splits(dataset_args)
    train = dataset[dataset_args.dataset_train_split]
    if dataset_args.dataset_test_split in dataset:
        return train, dataset[dataset_args.dataset_test_split]
    if dataset_args.eval_fraction > 0 and not dataset_args.dataset_streaming:
        return split_pairs_by_prompt(train, dataset_args.eval_fraction, seed=training_args.seed)
    if training_args.eval_strategy != "no":
        raise no_eval_split_error(dataset_args, dataset.keys())
    return train, None


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _wants_preset(argv):
        from .runner import run_command

        return run_command(lambda: (make_preset_parser(prog).parse_args(argv),), run_preset)
    return command().main(argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
