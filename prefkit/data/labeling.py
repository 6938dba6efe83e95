"""Resumable labeling: run a judge over response pairs and append its labels to a JSONL file, batch by batch.

The output file is the checkpoint. Every batch is appended and fsynced as soon as the judge returns, and each row
carries the stable id of its pair; a rerun reads the ids already in the file and labels only the others, so an
interrupted run (Ctrl-C, a lost machine, a crashed endpoint) loses at most the batch in flight and never labels a
pair twice. A line torn by a crash mid-write is cut off before resuming. A pair whose verdict could not be parsed
(``label`` null) is not done: a rerun removes that row and asks the judge again.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .generation import prompt_id
from .io import append_jsonl, done_ids, repair_torn_tail
from .judges import Judge
from .validation import PreferenceDataError, RowProblem, check_prompt, check_response

logger = logging.getLogger(__name__)


def record_id(record: Mapping[str, Any], id_column: str = "id") -> str:
    """The record's ``id_column`` value, or a hash of its prompt and both responses when it has none."""
    value = record.get(id_column)
    if value is not None:
        return str(value)
    return prompt_id([record.get("prompt"), record.get("response_a"), record.get("response_b")])


@dataclass
class LabelingSummary:
    output: Path
    labeled: int = 0  # pairs labeled by this run
    skipped: int = 0  # pairs already in the output
    retried: int = 0  # pairs of this run whose earlier verdict could not be parsed
    labels: Counter = field(default_factory=Counter)  # this run's labels; None = unparseable

    def __str__(self) -> str:
        counts = ", ".join(
            f"{k if k is not None else 'no label'}: {v}" for k, v in sorted(self.labels.items(), key=str)
        )
        retried = f", {self.retried} of them asked again (their earlier verdict could not be parsed)" if self.retried else ""
        return (
            f"labeled {self.labeled} pairs ({counts or 'none'}){retried}, skipped {self.skipped} already done "
            f"-> {self.output}"
        )


def remove_unparsed_labels(path: str | os.PathLike) -> set[str]:
    """Remove the rows of a labeling output whose ``label`` is null (the judge's answer could not be parsed), so a
    rerun asks again instead of counting them as done; returns their ids. The file is replaced in one rename, so
    a crash leaves either the old file or the new one. Lines that are not JSON are kept for :func:`done_ids` to
    report."""
    path = Path(path)
    if not path.exists():
        return set()
    repair_torn_tail(path)
    kept, removed = [], set()
    with open(path, "rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict) and "label" in row and row["label"] is None:
                removed.add(str(row.get("id")))
            else:
                kept.append(line)
    if removed:
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        logger.info("%s: %d pairs whose verdict could not be parsed will be asked again", path, len(removed))
    return removed


def _check_pair(record: Mapping[str, Any], row: int, reference_column: str | None) -> list[RowProblem]:
    problems = [RowProblem(row, c, "is missing") for c in ("prompt", "response_a", "response_b") if c not in record]
    if problems:
        return problems
    problems = check_prompt(record["prompt"], row)
    conversational = isinstance(record["prompt"], list)
    for column in ("response_a", "response_b"):
        problems += check_response(record[column], column, row, conversational)
    if reference_column is not None:
        reference = record.get(reference_column)
        if not (isinstance(reference, str) and reference.strip()) and not (
            isinstance(reference, list) and reference and all(isinstance(r, str) and r.strip() for r in reference)
        ):
            problems.append(
                RowProblem(row, reference_column, f"is {reference!r:.60}; expected the reference answer text")
            )
    return problems


def validate_pairs_to_label(
    records: Iterable[Mapping[str, Any]],
    *,
    id_column: str = "id",
    reference_column: str | None = None,
    name: str = "pairs to label",
) -> int:
    """Check every pair (prompt, response_a, response_b, unique ids, the reference when a judge needs one) before a
    judge loads; raises :class:`PreferenceDataError` listing the bad rows. Returns the number of rows."""
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}
    count = 0
    for index, record in enumerate(records):
        count += 1
        if (
            index == 0
            and reference_column is not None
            and isinstance(record, Mapping)
            and reference_column not in record
        ):
            raise PreferenceDataError(
                name,
                [
                    RowProblem(
                        None,
                        reference_column,
                        f"is missing; reference-based judges (BLEU, ROUGE) compare each response with a reference answer, "
                        f"and the rows have columns {sorted(record)}. Name the column with --reference_column.",
                    )
                ],
            )
        if not isinstance(record, Mapping):
            problems.append(RowProblem(index, None, f"is a {type(record).__name__}; expected a dict of columns"))
            continue
        problems += _check_pair(record, index, reference_column)
        key = record_id(record, id_column)
        if key in seen:
            problems.append(
                RowProblem(index, id_column, f"duplicates id {key!r} of row {seen[key]}; ids must be unique")
            )
        else:
            seen[key] = index
    if count == 0:
        raise PreferenceDataError(name, [RowProblem(None, None, "is empty; there are no pairs to label")])
    if problems:
        raise PreferenceDataError(
            name, problems, total_rows=count, hint="Fix these rows, or pass --drop_invalid to skip them."
        )
    return count


def _batches(records: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    batch: list[Mapping[str, Any]] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def label_records(
    records: Iterable[Mapping[str, Any]],
    judge: Judge,
    output: str | os.PathLike,
    *,
    batch_size: int = 16,
    id_column: str = "id",
    reference_column: str | None = None,
    total: int | None = None,
    progress: bool = True,
) -> LabelingSummary:
    """Label response pairs with ``judge`` and append them to ``output`` (JSONL), skipping ids already labeled there
(a row whose verdict could not be parsed is removed and its pair asked again).

    ``records``: dicts with ``prompt``, ``response_a``, ``response_b`` (e.g. from
    :func:`~prefkit.data.generation.generate_pairs`), and ``id_column`` (a hash of the texts when absent).
    ``reference_column`` names the reference answers for BLEU / ROUGE judges. Each output row is the input record
    plus ``id``, ``label`` ("A" / "B" / "tie" / null when the judge's answer was unreadable), ``confidence``,
    ``prob_a``, ``judge`` (its settings) and, when the judge has them, ``judge_scores`` and ``judge_raw``. A label
    already on the record is kept as ``previous_label``.
    """
    from tqdm.auto import tqdm

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    unparsed = remove_unparsed_labels(output)
    done = done_ids(output, "id")
    summary = LabelingSummary(output=output)
    description = judge.describe()
    bar = tqdm(total=total, desc=f"labeling ({judge.name})", unit="pair", disable=not progress)

    def pending() -> Iterator[Mapping[str, Any]]:
        for record in records:
            if record_id(record, id_column) in done:
                summary.skipped += 1
                bar.update(1)
                continue
            yield record

    try:
        for batch in _batches(pending(), batch_size):
            references = [r[reference_column] for r in batch] if reference_column else None
            judgements = judge.judge(
                [r["prompt"] for r in batch], [(r["response_a"], r["response_b"]) for r in batch], references
            )
            rows = []
            for record, judgement in zip(batch, judgements):
                row = dict(record)
                row["id"] = record_id(record, id_column)
                if "label" in row:
                    row["previous_label"] = row.pop("label")
                row.update(
                    label=judgement.label, confidence=judgement.confidence, prob_a=judgement.prob_a, judge=description
                )
                if judgement.scores is not None:
                    row["judge_scores"] = list(judgement.scores)
                if judgement.raw:
                    row["judge_raw"] = list(judgement.raw)
                rows.append(row)
                summary.labels[judgement.label] += 1
                summary.retried += row["id"] in unparsed
            append_jsonl(rows, output)
            summary.labeled += len(rows)
            bar.update(len(rows))
    finally:
        bar.close()
    if summary.skipped:
        logger.info("%s: resumed; %d pairs were already labeled", output, summary.skipped)
    return summary


def read_labeled(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a labeling output (``json.loads`` per line, after repairing a torn tail)."""
    repair_torn_tail(path)
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
