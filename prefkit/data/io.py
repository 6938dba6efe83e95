"""Loading datasets from wherever users keep them: a Hub id, a ``save_to_disk`` folder, a folder of files, or a
JSONL / JSON / Parquet / CSV file."""

from __future__ import annotations

import os
from pathlib import Path

_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def load_dataset_any(
    name_or_path: str | os.PathLike,
    split: str | None = None,
    config: str | None = None,
    streaming: bool = False,
):
    """``datasets.load_dataset`` that also understands local files and ``save_to_disk`` folders.

    Returns a ``DatasetDict`` (or ``IterableDatasetDict`` when streaming) when ``split`` is None, else one split.
    A single local file becomes the ``train`` split.
    """
    from datasets import DatasetDict, load_dataset, load_from_disk

    name = os.fspath(name_or_path)
    path = Path(name)
    if path.is_file():
        builder = _BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"{name}: unknown file type {path.suffix!r}. Use .jsonl, .json, .parquet or .csv, or a dataset folder."
            )
        if builder == "json":
            _check_json_lines(path)
        dataset = load_dataset(builder, data_files={"train": str(path)}, streaming=streaming)
    elif path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        dataset = load_from_disk(str(path))
        if not isinstance(dataset, DatasetDict):
            dataset = DatasetDict({"train": dataset})
        if streaming:
            dataset = dataset.to_iterable_dataset() if hasattr(dataset, "to_iterable_dataset") else dataset
    elif path.exists() or name.startswith((".", "/", "~")):
        if not path.exists():
            raise FileNotFoundError(f"{name}: no such file or folder.")
        dataset = load_dataset(str(path), name=config, streaming=streaming)
    else:
        dataset = load_dataset(name, name=config, streaming=streaming)
    if split is None:
        return dataset
    if split not in dataset:
        raise KeyError(f"{name} has no split {split!r}; it has {sorted(dataset.keys())}.")
    return dataset[split]


def _check_json_lines(path: Path) -> None:
    """Name the first line of a JSONL file that is not JSON (``datasets`` reports only a byte offset)."""
    import json

    if path.suffix.lower() != ".jsonl":
        return
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}, line {number}: not valid UTF-8 ({error.reason} at byte {error.start}). "
                    "Re-save the file as UTF-8."
                ) from None
            try:
                json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}, line {number}: not a JSON object ({error.msg} at column {error.colno}). "
                    "Fix or remove that line; a file cut off mid-write usually has a torn last line."
                ) from None
