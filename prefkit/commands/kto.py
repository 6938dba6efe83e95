"""Train a policy with KTO from single answers marked good or bad (thumbs up / down), with no pairs needed.

The data is TRL's unpaired format, one answer per row: prompt, completion and label (true when the answer is
desirable, false when not). The app's KTO export and `prefkit export --format unpaired` write it; preference pairs
work too (each becomes one desirable and one undesirable row).

    prefkit kto --dataset_name examples/sentiment_thumbs.jsonl --output_dir smollm2-kto --quantization 4bit
    prefkit kto --config examples/kto.yaml --undesirable_weight 1.3
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml scripts/kto.py --config examples/kto.yaml
"""

from __future__ import annotations

KEY_FLAGS = (
    ("beta", "how far the policy may move from the reference: higher keeps it closer"),
    ("desirable_weight", "weight of the loss on desirable (true) answers"),
    ("undesirable_weight", "weight on undesirable (false) ones: balance the two when one kind is rarer"),
    ("max_length", "longest prompt + answer in tokens: longer rows lose their end; a prompt this long drops its row"),
)


def command():
    from ..trainers.kto import KTOConfig, KTOTrainer
    from .training import TrainingCommand

    return TrainingCommand("kto", KTOConfig, KTOTrainer, description=__doc__, key_flags=KEY_FLAGS)


def make_parser(prog: str | None = None):
    return command().parser(prog)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return command().main(argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
