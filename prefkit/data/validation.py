"""Checking preference datasets before any model is loaded.

Every problem is reported with the row index, the column and what was expected, all at once (up to a limit), so a
user fixes the file in one pass instead of one traceback at a time::

    prefkit.data.PreferenceDataError: train_dataset has 2 bad rows (of 1000):
      row 17, column 'chosen': is empty; expected non-empty text or a list of messages
      row 40, column 'rejected': is identical to 'chosen'; a pair needs two different responses
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant", "tool", "developer")
MAX_REPORTED = 20


@dataclass(frozen=True)
class RowProblem:
    row: int | None  # None for dataset-level problems
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return (", ".join(where) + ": " if where else "") + self.reason


class PreferenceDataError(ValueError):
    """A dataset failed validation. ``problems`` lists every :class:`RowProblem` found."""

    def __init__(self, name: str, problems: list[RowProblem], total_rows: int | None = None, hint: str = ""):
        self.name = name
        self.problems = problems
        self.total_rows = total_rows
        rows = {p.row for p in problems if p.row is not None}
        head = f"{name} has {len(rows)} bad row{'s' if len(rows) != 1 else ''}" if rows else f"{name} is not usable"
        if total_rows is not None and rows:
            head += f" (of {total_rows})"
        lines = [head + ":"] + [f"  {p}" for p in problems[:MAX_REPORTED]]
        if len(problems) > MAX_REPORTED:
            lines.append(f"  ... and {len(problems) - MAX_REPORTED} more problems")
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))

    @property
    def bad_rows(self) -> list[int]:
        return sorted({p.row for p in self.problems if p.row is not None})


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_text(value: Any, column: str, row: int) -> list[RowProblem]:
    if value is None:
        return [RowProblem(row, column, "is missing (None); expected text")]
    if not isinstance(value, str):
        return [RowProblem(row, column, f"is a {type(value).__name__} ({_describe(value)}); expected text")]
    if not value.strip():
        return [RowProblem(row, column, "is empty; expected non-empty text")]
    return []


def check_messages(value: Any, column: str, row: int, allowed_roles: Iterable[str] = ROLES) -> list[RowProblem]:
    """A conversation: a non-empty list of ``{"role": ..., "content": str}`` with known roles."""
    allowed = tuple(allowed_roles)
    if not isinstance(value, list) or not value:
        return [RowProblem(row, column, "is an empty conversation; expected at least one message")]
    problems = []
    for turn, message in enumerate(value):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            problems.append(
                RowProblem(row, column, f"message {turn} is {_describe(message)}; expected {{'role': ..., 'content': ...}}")
            )
            continue
        role, content = message["role"], message["content"]
        if role not in allowed:
            problems.append(
                RowProblem(row, column, f"message {turn} has role {role!r}; expected one of {', '.join(allowed)}")
            )
        if not isinstance(content, str) or not content.strip():
            problems.append(RowProblem(row, column, f"message {turn} has empty or non-text content {_describe(content)}"))
    return problems


def _is_conversation(value: Any) -> bool:
    return isinstance(value, list)


def check_preference_row(example: Mapping[str, Any], row: int, require_prompt: bool = False) -> list[RowProblem]:
    """Problems of one row of a TRL preference dataset (standard or conversational, explicit or implicit prompt)."""
    problems: list[RowProblem] = []
    for column in ("chosen", "rejected"):
        if column not in example:
            problems.append(RowProblem(row, column, "is missing"))
    if problems:
        return problems
    has_prompt = "prompt" in example and example["prompt"] is not None
    if require_prompt and not has_prompt:
        problems.append(RowProblem(row, "prompt", "is missing; expected the prompt text or messages"))

    if has_prompt and _is_conversation(example["prompt"]):
        problems += check_messages(example["prompt"], "prompt", row)
        if not problems and example["prompt"][-1].get("role") == "assistant":
            problems.append(
                RowProblem(row, "prompt", "ends with an assistant turn; the last prompt message must be user/system/tool")
            )
        for column in ("chosen", "rejected"):
            if not _is_conversation(example[column]):
                problems.append(
                    RowProblem(row, column, f"is {type(example[column]).__name__}; a conversational prompt needs "
                               "assistant messages here, e.g. [{'role': 'assistant', 'content': '...'}]")
                )
                continue
            problems += check_messages(example[column], column, row, allowed_roles=("assistant", "tool"))
    elif has_prompt:
        problems += check_text(example["prompt"], "prompt", row)
        for column in ("chosen", "rejected"):
            if _is_conversation(example[column]):
                problems.append(
                    RowProblem(row, column, "is a conversation but the prompt is plain text; use one format per row")
                )
            else:
                problems += [p for p in check_text(example[column], column, row)]
    else:  # implicit prompt: both columns are whole conversations or whole texts
        for column in ("chosen", "rejected"):
            if _is_conversation(example[column]):
                problems += check_messages(example[column], column, row)
                if example[column] and isinstance(example[column][-1], Mapping) and example[column][-1].get("role") != "assistant":
                    problems.append(RowProblem(row, column, "must end with an assistant message (implicit prompt)"))
            else:
                problems += check_text(example[column], column, row)

    if not problems and example["chosen"] == example["rejected"]:
        problems.append(RowProblem(row, "rejected", "is identical to 'chosen'; a pair needs two different responses"))
    if "margin" in example and example["margin"] is not None:
        margin = example["margin"]
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
            problems.append(RowProblem(row, "margin", f"is {_describe(margin)}; expected a finite number"))
    return problems


def validate_preference_dataset(
    dataset: Any,
    name: str = "train_dataset",
    *,
    require_prompt: bool = False,
    max_rows: int | None = None,
) -> None:
    """Raise :class:`PreferenceDataError` listing every bad row of a preference dataset; return ``None`` if it is good.

    Accepts a ``datasets.Dataset``, an ``IterableDataset`` (validated as it streams; ``max_rows`` bounds how far) or
    any iterable of dicts. Runs in one pass over the rows and touches no model.
    """
    columns = getattr(dataset, "column_names", None)
    if columns is not None:
        missing = [c for c in ("chosen", "rejected") if c not in columns]
        if missing:
            hint = ""
            if "completion" in columns:
                hint = "This looks like a pointwise or prompt-completion dataset; pair it first (prefkit.data.pointwise_to_pairs)."
            raise PreferenceDataError(
                name,
                [RowProblem(None, c, f"is missing; the dataset has columns {sorted(columns)}") for c in missing],
                hint=hint or "A preference dataset needs 'chosen' and 'rejected' (and usually 'prompt') columns.",
            )
    problems: list[RowProblem] = []
    count = 0
    for index, example in enumerate(dataset):
        if max_rows is not None and index >= max_rows:
            break
        count += 1
        problems += check_preference_row(example, index, require_prompt=require_prompt)
    if count == 0:
        raise PreferenceDataError(name, [RowProblem(None, None, "is empty; it needs at least one preference pair")])
    if problems:
        raise PreferenceDataError(name, problems, total_rows=count)
