"""Evaluate a reward model on preference pairs: pairwise accuracy, mean margin, and a PNG of both distributions.

    prefkit reward-eval --model smollm2-rm --dataset_name prefkit/data/bundled/sentiment_pairs.jsonl
    prefkit reward-eval --model demo --dataset_name prefkit/data/bundled/sentiment_pairs.jsonl --output_dir eval/

Writes reward_eval.json and reward_distributions.png to --output_dir (default: the current folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .runner import check_output_path, run_command


@dataclass
class RewardEvalArguments:
    model: str = field(
        metadata={"help": "Reward model: a folder (full model or LoRA adapter), a Hub id, or 'demo' for prefkit's "
                  "demo reward model."}
    )
    dataset_name: str = field(
        metadata={"help": "Preference pairs: a .jsonl/.json/.parquet/.csv file, a dataset folder, or a Hub id."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration (Hub datasets)."})
    dataset_split: str = field(default="train", metadata={"help": "Split to evaluate (a single file is 'train')."})
    output_dir: str = field(
        default=".", metadata={"help": "Where to write reward_eval.json and reward_distributions.png."}
    )
    batch_size: int = field(default=16, metadata={"help": "Pairs per forward pass."})
    max_length: int | None = field(default=None, metadata={"help": "Truncate inputs to this many tokens."})
    max_pairs: int | None = field(default=None, metadata={"help": "Evaluate only the first N pairs."})
    quantization: str | None = field(
        default=None, metadata={"help": "Load the model in '4bit' or '8bit'.", "choices": ["4bit", "8bit", None]}
    )
    base_model: str | None = field(
        default=None, metadata={"help": "For a LoRA adapter: load this base instead of the one it names."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})


def make_parser(prog: str | None = None):
    from trl import TrlParser

    return TrlParser((RewardEvalArguments,), prog=prog)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run_command(lambda: make_parser(prog).parse_args_and_config(args=argv), run)


def run(args: RewardEvalArguments) -> int:
    check_output_path(args.output_dir, "--output_dir", folder=True)

    from ..data.io import load_dataset_any
    from ..data.validation import validate_preference_dataset
    from ..evaluation import evaluate_reward_model, format_summary, write_reward_evaluation
    from ..rewards import resolve_reward

    # Data first: a bad file is reported before minutes of model loading.
    pairs = load_dataset_any(args.dataset_name, split=args.dataset_split, config=args.dataset_config)
    if args.max_pairs is not None:
        pairs = pairs.select(range(min(args.max_pairs, len(pairs))))
    validate_preference_dataset(pairs, args.dataset_name)

    reward_model = resolve_reward(
        args.model,
        train_demo_if_missing=False,  # evaluating a model trained just now for the occasion would say little
        trust_remote_code=args.trust_remote_code,
        quantization=args.quantization,
        base_model=args.base_model,
    )
    result = evaluate_reward_model(reward_model, pairs, batch_size=args.batch_size, max_length=args.max_length)
    json_path, png_path = write_reward_evaluation(
        result, args.output_dir, title=f"{os.path.basename(os.path.normpath(args.model))} on {args.dataset_name}"
    )
    print(f"prefkit reward-eval: {format_summary(result)}")
    print(f"prefkit reward-eval: wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
