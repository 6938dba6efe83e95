"""Reading and writing preference data files.

Loading from wherever users keep data: a Hub id, a ``save_to_disk`` folder, a folder of files, or a JSONL / JSON /
Parquet / CSV file. Writing JSONL the way resumable commands need it: every append fsynced, a line torn by a crash
cut off before resuming, and the ids already written read back (:func:`done_ids`).
"""

from __future__ import annotations

import codecs
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .validation import EmptyDatasetError, PreferenceDataError, RowProblem

logger = logging.getLogger(__name__)

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
        if is_blank_file(path) or (builder == "csv" and _count_lines(path, stop=2) < 2):  # a CSV header is no row
            raise EmptyDatasetError(name)
        if builder == "json":
            _check_json_lines(path)
        dataset = load_dataset(builder, data_files={"train": str(path)}, streaming=streaming)
        if not streaming and dataset["train"].num_rows == 0:  # a CSV header alone, a Parquet file of no rows
            raise EmptyDatasetError(name)
    elif path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        dataset = load_from_disk(str(path))
        if not isinstance(dataset, DatasetDict):
            dataset = DatasetDict({"train": dataset})
        if streaming:
            dataset = dataset.to_iterable_dataset() if hasattr(dataset, "to_iterable_dataset") else dataset
    elif path.exists() or name.startswith((".", "/", "~")) or ("/" not in name and path.suffix.lower() in _BUILDERS):
        # A Hub id without a slash is a canonical dataset ("imdb"), never "pairs.jsonl": that is a missing file.
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


def is_blank_file(path: str | os.PathLike) -> bool:
    """True for an empty file or one of only whitespace (blank lines); reads no further than the first other byte."""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return False
    return True


def _count_lines(path: Path, stop: int) -> int:
    """How many non-blank lines ``path`` has, counting no further than ``stop``."""
    count = 0
    with open(path, "rb") as f:
        for line in f:
            count += bool(line.strip())
            if count >= stop:
                break
    return count


def _check_json_lines(path: Path) -> None:
    """Name every line of a JSONL file that is not a JSON object (``datasets`` reports only a byte offset)."""
    if path.suffix.lower() != ".jsonl":
        return
    problems = [problem for _, _, _, problem in _scan_jsonl(path) if problem is not None]
    if problems:
        raise PreferenceDataError(
            str(path), problems, hint="Fix or remove those lines; a file cut off mid-write usually has a torn last line."
        )


def _scan_jsonl(path: Path) -> Iterator[tuple[int, int, Any, RowProblem | None]]:
    """``(row index, line number, value, problem)`` for each non-blank line, streamed; ``problem`` is None if good."""
    row = 0
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            encoding = "UTF-32" if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)) else "UTF-16"
            yield 0, 1, None, RowProblem(0, None, f"the file is {encoding}, not UTF-8; re-save it as UTF-8", line=1)
            return
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            problem, value = None, None
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                problem = RowProblem(
                    row, None, f"is not valid UTF-8 ({error.reason} at byte {error.start}); re-save the file as UTF-8",
                    line=number,
                )
            else:
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as error:
                    torn = " (the line looks cut off)" if not raw.endswith(b"\n") or error.pos >= len(line.rstrip()) else ""
                    problem = RowProblem(
                        row, None, f"is not valid JSON: {error.msg} at column {error.colno}{torn}", line=number
                    )
                else:
                    if not isinstance(value, dict):
                        problem = RowProblem(
                            row, None, f"is a JSON {type(value).__name__}, not an object with named columns", line=number
                        )
            yield row, number, value, problem
            row += 1


def iter_jsonl(path: str | os.PathLike, *, drop_invalid: bool = False, problems: list | None = None) -> Iterator[dict]:
    """Stream the objects of a JSONL file, one line at a time (memory stays flat for any file size).

    Bad lines (not UTF-8, not JSON, torn, not an object) raise :class:`PreferenceDataError` naming every one of
    them once the file is read, or are skipped with ``drop_invalid`` (appended to ``problems`` when given). A
    UTF-8 byte-order mark and blank lines are fine.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    found: list[RowProblem] = []
    for _, _, value, problem in _scan_jsonl(path):
        if problem is None:
            yield value
        else:
            found.append(problem)
    if problems is not None:
        problems += found
    if found and not drop_invalid:
        raise PreferenceDataError(
            str(path), found, hint="Fix or remove those lines, or pass drop_invalid=True (--drop_invalid) to skip them."
        )
    if found:
        logger.warning("%s: skipped %d bad lines (first: %s)", path, len(found), found[0])


def read_jsonl(path: str | os.PathLike, *, drop_invalid: bool = False) -> list[dict]:
    """All objects of a JSONL file; see :func:`iter_jsonl` for how bad lines are reported."""
    return list(iter_jsonl(path, drop_invalid=drop_invalid))


def load_records(
    name_or_path: str | os.PathLike,
    *,
    split: str = "train",
    config: str | None = None,
    streaming: bool = True,
    drop_invalid: bool = False,
) -> Iterator[dict]:
    """Rows as dicts from a JSONL file (read line by line), a ``.txt`` file (one prompt per line, as
    ``{"prompt": line}``), or anything :func:`load_dataset_any` reads (streamed by default). A file with no rows
    (empty, or only blank lines) raises :class:`EmptyDatasetError`."""
    path = Path(os.fspath(name_or_path))
    if path.is_file() and path.suffix.lower() in (".jsonl", ".txt") and is_blank_file(path):
        raise EmptyDatasetError(str(name_or_path))
    if path.is_file() and path.suffix.lower() == ".jsonl":
        yield from iter_jsonl(path, drop_invalid=drop_invalid)
        return
    if path.is_file() and path.suffix.lower() == ".txt":
        with open(path, encoding="utf-8-sig") as f:
            for line in f:
                if line.strip():
                    yield {"prompt": line.rstrip("\n")}
        return
    dataset = load_dataset_any(name_or_path, split=split, config=config, streaming=streaming)
    for row in dataset:
        yield dict(row)


# ---- writing JSONL that a rerun resumes ----------------------------------------------------------------------------


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike, append: bool = False) -> int:
    """Write rows as UTF-8 JSON lines, flushed and fsynced so a crash loses at most the line being written."""
    count = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(dict(row), ensure_ascii=False) + "\n")
            count += 1
        f.flush()
        os.fsync(f.fileno())
    return count


def append_jsonl(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> int:
    """Append rows to a JSONL file and fsync, so that what returns is on disk."""
    return write_jsonl(rows, path, append=True)


def repair_torn_tail(path: str | os.PathLike) -> int:
    """Cut a last line that a crash left without its newline; returns how many bytes were removed."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
    removed = len(data) - keep
    logger.warning("%s: removed a torn last line (%d bytes) left by an interrupted run", path, removed)
    return removed


def done_ids(path: str | os.PathLike, id_column: str = "id") -> set[str]:
    """Ids of the rows already in a JSONL output (after repairing a torn last line); empty if there is no file."""
    path = Path(path)
    if not path.exists():
        return set()
    repair_torn_tail(path)
    ids, problems = set(), []
    for _, _, value, problem in _scan_jsonl(path):
        if problem is not None:
            problems.append(problem)
        elif value.get(id_column) is not None:
            ids.add(str(value[id_column]))
    if problems:
        raise PreferenceDataError(
            str(path),
            problems,
            hint="The output file is damaged in the middle, so it cannot be resumed safely; fix those lines or move it away.",
        )
    return ids
