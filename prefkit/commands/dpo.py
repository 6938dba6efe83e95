"""Train a policy with DPO.

    prefkit dpo --dataset_name pairs.jsonl --output_dir smollm2-dpo --quantization 4bit --learning_rate 5e-6
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml scripts/dpo.py --config dpo.yaml
"""

from __future__ import annotations


def command():
    from ..trainers.dpo import DPOConfig, DPOTrainer
    from .training import TrainingCommand

    return TrainingCommand("dpo", DPOConfig, DPOTrainer)


def make_parser(prog: str | None = None):
    return command().parser(prog)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return command().main(argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
