"""The arguments the training commands share (TRL-style dataclasses, parsed by ``trl.TrlParser``), and what they
turn into: the model's loading keywords and the train / eval splits."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models import DEFAULT_POLICY
from .runner import CommandError


@dataclass
class ModelArguments:
    """Which model to start from. QLoRA and LoRA settings live on the trainer config (``--quantization 4bit``)."""

    model_name_or_path: str = field(
        default=DEFAULT_POLICY,
        metadata={"help": "Hub id or local folder of the model to train (default: SmolLM2-135M-Instruct, offline-ready)."},
    )
    model_revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of the model on the Hub."})
    dtype: str | None = field(
        default=None,
        metadata={"help": "Weight dtype: auto, bfloat16, float16 or float32.", "choices": ["auto", "bfloat16", "float16", "float32", None]},
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention kernel, e.g. sdpa, eager or flash_attention_2."}
    )


@dataclass
class DatasetArguments:
    """Where the data comes from: a Hub id, a local folder, or a JSONL / Parquet / CSV file."""

    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset id, local dataset folder, or a .jsonl/.json/.parquet/.csv file."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration (Hub datasets)."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str = field(default="test", metadata={"help": "Split to evaluate on (when eval_strategy != no)."})
    dataset_streaming: bool = field(default=False, metadata={"help": "Stream the dataset instead of downloading it."})
    eval_fraction: float = field(
        default=0.0,
        metadata={"help": "When the dataset has no test split, hold out this fraction of train for evaluation."},
    )


def model_init_kwargs(model_args: ModelArguments, existing: dict | None) -> dict:
    kwargs = {
        "revision": model_args.model_revision,
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
    }
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    kwargs.update(existing or {})
    return kwargs


def load_dataset_splits(dataset_args: DatasetArguments):
    """Every split of ``--dataset_name`` (a ``DatasetDict``), once it is known to hold ``--dataset_train_split``."""
    from ..data.io import load_dataset_any

    if not dataset_args.dataset_name:
        raise CommandError("--dataset_name is required (a Hub id, a dataset folder, or a .jsonl/.parquet file).")
    dataset = load_dataset_any(dataset_args.dataset_name, config=dataset_args.dataset_config, streaming=dataset_args.dataset_streaming)
    if dataset_args.dataset_train_split not in dataset:
        raise CommandError(
            f"{dataset_args.dataset_name} has no split {dataset_args.dataset_train_split!r}; "
            f"it has {sorted(dataset.keys())}. Pass --dataset_train_split."
        )
    return dataset


def no_eval_split_error(dataset_args: DatasetArguments, splits) -> CommandError:
    """Evaluation is on, but there is nothing to evaluate on: say which flags give it something."""
    return CommandError(
        f"evaluation is on but {dataset_args.dataset_name} has no split {dataset_args.dataset_test_split!r} "
        f"(it has {sorted(splits)}). Pass --dataset_test_split, --eval_fraction 0.1, or --eval_strategy no."
    )


def load_splits(dataset_args: DatasetArguments, want_eval: bool, seed: int = 42):
    """``(train, eval or None)`` following the dataset arguments; errors name the missing split and what exists."""
    dataset = load_dataset_splits(dataset_args)
    train = dataset[dataset_args.dataset_train_split]
    if not want_eval:
        return train, None
    if dataset_args.dataset_test_split in dataset:
        return train, dataset[dataset_args.dataset_test_split]
    if dataset_args.eval_fraction > 0 and not dataset_args.dataset_streaming:
        split = train.train_test_split(test_size=dataset_args.eval_fraction, seed=seed)
        return split["train"], split["test"]
    raise no_eval_split_error(dataset_args, dataset.keys())
