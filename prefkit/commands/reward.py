"""Train a Bradley-Terry reward model (a decoder with a scalar head, or a BERT-family encoder).

    prefkit reward --model_name_or_path HuggingFaceTB/SmolLM2-135M-Instruct --dataset_name pairs.jsonl \\
        --output_dir smollm2-rm --quantization 4bit --eval_fraction 0.1 --eval_strategy epoch
    prefkit reward --preset demo        # prefkit's offline demo reward model (MiniLM, a few minutes on a CPU)
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml scripts/reward.py --config reward.yaml

With held-out pairs (a test split, or --eval_fraction) the end of training writes reward_eval.json and
reward_distributions.png to --output_dir.
"""

from __future__ import annotations

import argparse
import json
import sys

PRESETS = ("demo",)

_EPILOG = (
    "Preset: `prefkit reward --preset demo [--output_dir DIR] [--dataset_name pairs.jsonl] [--force]` trains the "
    "offline demo reward model (MiniLM on prefkit's bundled preference pairs) into prefkit's cache, where the app "
    "finds it."
)


def make_parser(prog: str | None = None):
    from trl import TrlParser

    from ..trainers.reward import RewardConfig
    from ._common import DatasetArguments, ModelArguments

    return TrlParser((DatasetArguments, RewardConfig, ModelArguments), prog=prog, epilog=_EPILOG)


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


def run_preset(argv: list[str], prog: str | None = None) -> int:
    args = make_preset_parser(prog).parse_args(argv)

    from ..demo import build_demo_reward_model, demo_reward_model_dir, is_complete_model_dir
    from pathlib import Path

    target = Path(args.output_dir) if args.output_dir else demo_reward_model_dir()
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
    import dataclasses

    from ..evaluation import split_pairs_by_prompt
    from ._common import load_splits

    needs_eval = training_args.eval_strategy != "no"
    test_split_only = dataclasses.replace(dataset_args, eval_fraction=0.0)
    try:
        return load_splits(test_split_only, True, training_args.seed)
    except SystemExit:
        train, _ = load_splits(dataset_args, False, training_args.seed)  # re-raises for a missing train split
    if dataset_args.eval_fraction > 0 and not dataset_args.dataset_streaming:
        return split_pairs_by_prompt(train, dataset_args.eval_fraction, seed=training_args.seed)
    if needs_eval:
        raise SystemExit(
            f"error: evaluation is on but {dataset_args.dataset_name} has no split {dataset_args.dataset_test_split!r}. "
            "Pass --dataset_test_split, --eval_fraction 0.1, or --eval_strategy no."
        )
    return train, None


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _wants_preset(argv):
        return run_preset(argv, prog)
    parser = make_parser(prog)
    dataset_args, training_args, model_args = parser.parse_args_and_config(args=argv)

    from ..trainers.reward import RewardTrainer
    from ._common import model_init_kwargs

    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args.model_init_kwargs)
    train_dataset, eval_dataset = reward_splits(dataset_args, training_args)

    trainer = RewardTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
    )
    # Every rank says it is there, so a multi-process launch can be checked from the log.
    print(
        f"prefkit reward: rank {trainer.accelerator.process_index} of world size {trainer.accelerator.num_processes}, "
        f"device {trainer.accelerator.device}",
        flush=True,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"prefkit reward: model saved to {training_args.output_dir}")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_args.dataset_name)
        trainer.accelerator.print(f"prefkit reward: pushed to https://huggingface.co/{trainer.hub_model_id}")
    if hasattr(trainer, "end"):  # transformers >= 5.18: finish trackers, destroy the process group
        trainer.end()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
