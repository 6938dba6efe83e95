"""Train a policy with DPO.

    prefkit dpo --dataset_name prefkit/data/bundled/sentiment_pairs.jsonl --output_dir smollm2-dpo --quantization 4bit --learning_rate 5e-6
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml scripts/dpo.py --config examples/dpo.yaml
"""

from __future__ import annotations

KEY_FLAGS = (
    ("beta", "how far the policy may move from the reference: higher keeps it closer"),
    ("max_length", "longest prompt + answer in tokens; longer pairs are truncated"),
)


def command():
    from ..trainers.dpo import DPOConfig, DPOTrainer
    from .training import TrainingCommand

    return TrainingCommand("dpo", DPOConfig, DPOTrainer, description=__doc__, key_flags=KEY_FLAGS)


def make_parser(prog: str | None = None):
    return command().parser(prog)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return command().main(argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
