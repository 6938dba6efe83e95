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
    line: int | None = None  # 1-based line in the file, when the row was read from a JSONL file

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.line is not None:
            where.append(f"line {self.line}")
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
            elif {"response_a", "response_b", "label"} <= set(columns):
                hint = "This looks like labeled response pairs; pair them first (prefkit.data.labels_to_pairs)."
            raise PreferenceDataError(
                name,
                missing_columns_problems(columns, "preference"),
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


# ---------------------------------------------------------------------------------------------------------------------
# Every other shape of preference data: raw pairwise judgements, pointwise scores / labels, prompt lists.
# ---------------------------------------------------------------------------------------------------------------------

FORMATS = ("preference", "labeled", "pointwise", "prompts")
FORMAT_COLUMNS = {
    "preference": ("chosen", "rejected"),  # TRL paired (prompt optional: implicit prompt)
    "labeled": ("prompt", "response_a", "response_b", "label"),  # a judgement on two responses, before pairing
    "pointwise": ("prompt", "completion"),  # + "score" (number) or "label" (bool, TRL's unpaired/KTO format)
    "prompts": ("prompt",),  # what generate-pairs samples from
}
# Column names people use for the ones prefkit expects, for "did you mean" hints.
_ALIASES = {
    "prompt": ("question", "instruction", "input", "query", "prompts", "x"),
    "chosen": ("chosen_response", "preferred", "winner", "good", "accepted", "positive", "response_chosen", "chosen_text"),
    "rejected": ("rejected_response", "dispreferred", "loser", "bad", "negative", "response_rejected", "rejected_text"),
    "completion": ("response", "answer", "output", "completions", "generation"),
    "response_a": ("answer_a", "output_a", "completion_a", "responseA", "response_1", "a"),
    "response_b": ("answer_b", "output_b", "completion_b", "responseB", "response_2", "b"),
    "label": ("labels", "preference", "verdict", "judgement", "judgment", "winner"),
    "score": ("scores", "rating", "reward", "points"),
}


def suggest_column(expected: str, columns: Iterable[str]) -> str | None:
    """The column in ``columns`` that most likely means ``expected`` (known aliases first, then close spelling)."""
    import difflib

    columns = list(columns)
    lowered = {c.lower(): c for c in columns}
    for alias in _ALIASES.get(expected, ()):
        if alias.lower() in lowered:
            return lowered[alias.lower()]
    close = difflib.get_close_matches(expected, columns, n=1, cutoff=0.75)
    return close[0] if close else None


def detect_format(columns: Iterable[str]) -> str | None:
    """Which of :data:`FORMATS` a set of columns is, or ``None``. Paired wins over the others when both fit."""
    columns = set(columns)
    if {"chosen", "rejected"} <= columns:
        return "preference"
    if {"response_a", "response_b", "label"} <= columns:
        return "labeled"
    if {"prompt", "completion"} <= columns and ({"score", "label"} & columns):
        return "pointwise"
    if "prompt" in columns and "completion" not in columns and "label" not in columns:
        return "prompts"
    return None


def missing_columns_problems(columns: Iterable[str], format: str) -> list[RowProblem]:
    """One dataset-level problem per required column that is absent, with a rename hint when one looks close."""
    columns = list(columns)
    required = list(FORMAT_COLUMNS[format])
    if format == "pointwise" and not ({"score", "label"} & set(columns)):
        required.append("score")
    problems = []
    for column in required:
        if column in columns:
            continue
        guess = suggest_column(column, [c for c in columns if c not in FORMAT_COLUMNS[format]])
        reason = f"is missing; the data has columns {sorted(columns)}"
        if guess is not None:
            reason += f". Did you mean {guess!r}? Rename it: dataset.rename_column({guess!r}, {column!r})"
        if format == "pointwise" and column == "score":
            reason = f"is missing: pointwise rows need 'score' (a number) or 'label' (true/false); columns are {sorted(columns)}"
            if guess is not None:
                reason += f". Did you mean {guess!r}?"
        problems.append(RowProblem(None, column, reason))
    return problems


def check_prompt(value: Any, row: int, column: str = "prompt") -> list[RowProblem]:
    """A prompt: non-empty text, or a conversation whose last message is not the assistant's."""
    if _is_conversation(value):
        problems = check_messages(value, column, row)
        if not problems and value[-1].get("role") == "assistant":
            problems.append(
                RowProblem(row, column, "ends with an assistant turn; the last prompt message must be user/system/tool")
            )
        return problems
    return check_text(value, column, row)


def check_response(value: Any, column: str, row: int, conversational: bool) -> list[RowProblem]:
    """A response to a prompt: text, or (after a conversational prompt) text or a list of assistant messages."""
    if _is_conversation(value):
        if not conversational:
            return [RowProblem(row, column, "is a conversation but the prompt is plain text; use one format per row")]
        return check_messages(value, column, row, allowed_roles=("assistant", "tool"))
    return check_text(value, column, row)


def check_score(value: Any, row: int, column: str = "score") -> list[RowProblem]:
    if value is None:
        return [RowProblem(row, column, "is missing (None); expected a number")]
    if isinstance(value, bool):
        return [RowProblem(row, column, f"is a boolean ({value}); expected a number. Put true/false in 'label' instead")]
    if not isinstance(value, (int, float)):
        return [RowProblem(row, column, f"is a {type(value).__name__} ({_describe(value)}); expected a number")]
    if not math.isfinite(value):
        return [RowProblem(row, column, f"is {value}; expected a finite number")]
    return []


def check_labeled_record(record: Mapping[str, Any], row: int, scale=None) -> list[RowProblem]:
    """Problems of one raw judgement ``{prompt, response_a, response_b, label}`` (label on ``scale`` or binary)."""
    from .scales import DEFAULT_SCALE, UnknownLabelError

    scale = DEFAULT_SCALE if scale is None else scale
    problems = [RowProblem(row, c, "is missing") for c in FORMAT_COLUMNS["labeled"] if c not in record]
    if problems:
        return problems
    problems += check_prompt(record["prompt"], row)
    conversational = _is_conversation(record["prompt"])
    for column in ("response_a", "response_b"):
        problems += check_response(record[column], column, row, conversational)
    try:
        point = scale.parse(record["label"])
    except UnknownLabelError as error:
        problems.append(RowProblem(row, "label", str(error)))
    else:
        if not problems and point.makes_pair and record["response_a"] == record["response_b"]:
            problems.append(
                RowProblem(row, "response_b", f"is identical to 'response_a' but the label {record['label']!r} prefers one")
            )
    return problems


def check_pointwise_row(example: Mapping[str, Any], row: int) -> list[RowProblem]:
    """Problems of one pointwise row ``{prompt, completion, score}`` or TRL unpaired ``{prompt, completion, label}``."""
    problems = [RowProblem(row, c, "is missing") for c in FORMAT_COLUMNS["pointwise"] if c not in example]
    if problems:
        return problems
    problems += check_prompt(example["prompt"], row)
    problems += check_response(example["completion"], "completion", row, _is_conversation(example["prompt"]))
    has_score = example.get("score") is not None
    has_label = example.get("label") is not None
    if has_score:
        problems += check_score(example["score"], row)
    if has_label and not isinstance(example["label"], bool):
        problems.append(
            RowProblem(row, "label", f"is {_describe(example['label'])}; expected true or false (use 'score' for numbers)")
        )
    if not has_score and not has_label:
        column = "score" if "score" in example else "label"
        problems.append(RowProblem(row, column, "is missing (None); expected a number in 'score' or true/false in 'label'"))
    return problems


def check_prompt_row(example: Mapping[str, Any], row: int) -> list[RowProblem]:
    if "prompt" not in example:
        return [RowProblem(row, "prompt", "is missing")]
    return check_prompt(example["prompt"], row)


def check_row(example: Any, row: int, format: str, scale=None) -> list[RowProblem]:
    """Problems of one row in ``format`` (one of :data:`FORMATS`)."""
    if not isinstance(example, Mapping):
        return [RowProblem(row, None, f"is {_describe(example)}; expected an object with named columns")]
    if format == "preference":
        return check_preference_row(example, row)
    if format == "labeled":
        return check_labeled_record(example, row, scale)
    if format == "pointwise":
        return check_pointwise_row(example, row)
    if format == "prompts":
        return check_prompt_row(example, row)
    raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")


def _hashable(value: Any) -> Any:
    import json

    return value if isinstance(value, (str, int, float, bool)) else json.dumps(value, sort_keys=True, default=str)


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` found: the format, the row count, and the rows it dropped (``drop_invalid``)."""

    format: str
    total_rows: int
    problems: list[RowProblem]
    dataset: Any = None  # the input with bad rows removed (drop_invalid=True), else the input

    @property
    def dropped_rows(self) -> list[int]:
        return sorted({p.row for p in self.problems if p.row is not None})

    @property
    def num_dropped(self) -> int:
        return len(self.dropped_rows)

    def summary(self) -> str:
        if not self.problems:
            return f"{self.total_rows} rows, all valid ({self.format})"
        return f"dropped {self.num_dropped} bad rows of {self.total_rows} ({self.format}); kept {self.total_rows - self.num_dropped}"


def validate_dataset(
    dataset: Any,
    name: str = "dataset",
    *,
    format: str = "auto",
    scale=None,
    drop_invalid: bool = False,
    id_column: str | None = "id",
    max_rows: int | None = None,
) -> ValidationReport:
    """Check any preference-data shape in one pass, before a model loads, and report every bad row.

    ``dataset``: a ``datasets.Dataset``, an ``IterableDataset`` (checked as it streams), or an iterable of dicts.
    ``format``: "preference" (TRL ``chosen``/``rejected``), "labeled" (``response_a``/``response_b``/``label``),
    "pointwise" (``completion`` + ``score`` or boolean ``label``), "prompts", or "auto" (from the columns).
    Rows whose ``id_column`` value repeats an earlier one are bad too.

    Raises :class:`PreferenceDataError` (every bad row: index, column, reason) unless ``drop_invalid``; then returns
    a report whose ``dataset`` holds only the good rows and whose ``num_dropped`` counts the others. Dataset-level
    problems (missing columns, no rows) raise either way.
    """
    columns = getattr(dataset, "column_names", None)
    if isinstance(dataset, (list, tuple)) and columns is None:
        columns = list(dict.fromkeys(k for row in dataset[:1000] if isinstance(row, Mapping) for k in row))
    if format == "auto":
        detected = detect_format(columns) if columns is not None else None
        if detected is None:
            raise PreferenceDataError(
                name,
                [RowProblem(None, None, f"has columns {sorted(columns or [])}, which match no known format")],
                hint=_format_hint(columns or []),
            )
        format = detected
    elif format not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, not {format!r}")
    if columns is not None:
        missing = missing_columns_problems(columns, format)
        if missing:
            raise PreferenceDataError(name, missing, hint=_format_hint(columns))

    problems: list[RowProblem] = []
    seen_ids: dict[Any, int] = {}
    count = 0
    for index, example in enumerate(dataset):
        if max_rows is not None and index >= max_rows:
            break
        count += 1
        row_problems = check_row(example, index, format, scale)
        if id_column and isinstance(example, Mapping) and example.get(id_column) is not None:
            key = _hashable(example[id_column])
            if key in seen_ids:
                row_problems.append(
                    RowProblem(index, id_column, f"duplicates id {example[id_column]!r} of row {seen_ids[key]}; ids must be unique")
                )
            else:
                seen_ids[key] = index
        problems += row_problems
    if count == 0:
        raise PreferenceDataError(name, [RowProblem(None, None, "is empty; it needs at least one row")])
    report = ValidationReport(format, count, problems, dataset)
    if problems and not drop_invalid:
        raise PreferenceDataError(
            name, problems, total_rows=count, hint="Fix these rows, or pass drop_invalid=True (--drop_invalid) to skip them."
        )
    if problems:
        report.dataset = _without_rows(dataset, set(report.dropped_rows))
    return report


def _without_rows(dataset: Any, bad: set[int]) -> Any:
    if hasattr(dataset, "select") and hasattr(dataset, "__len__"):  # datasets.Dataset
        return dataset.select([i for i in range(len(dataset)) if i not in bad])
    if hasattr(dataset, "filter"):  # datasets.IterableDataset
        return dataset.filter(lambda _, index: index not in bad, with_indices=True)
    return [row for i, row in enumerate(dataset) if i not in bad]


def _format_hint(columns: Iterable[str]) -> str:
    columns = set(columns)
    lines = ["prefkit reads these shapes of data:"]
    for format, required in FORMAT_COLUMNS.items():
        extra = " + 'score' or 'label'" if format == "pointwise" else ""
        lines.append(f"  {format}: {', '.join(map(repr, required))}{extra}")
    guesses = [(c, suggest_column(c, columns)) for c in ("prompt", "chosen", "rejected", "completion", "label", "score")]
    renames = [f"{g!r} -> {c!r}" for c, g in guesses if g is not None and c not in columns]
    if renames:
        lines.append("Columns that look misnamed: " + ", ".join(renames))
    return "\n".join(lines)
