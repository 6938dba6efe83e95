"""Checking preference datasets before any model is loaded.

Every problem is reported with the row index, the column and what was expected, all at once (up to a limit), so a
user fixes the file in one pass instead of one traceback at a time::

    prefkit.data.PreferenceDataError: train_dataset has 2 bad rows (of 1000):
      row 17, column 'chosen': is empty; expected non-empty text or a list of messages
      row 40, column 'rejected': is identical to 'chosen'; a pair needs two different responses
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
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


class EmptyDatasetError(PreferenceDataError):
    """A dataset with no rows at all: an empty file, a file of blank lines, or a split with nothing in it."""

    def __init__(self, name: str, needs: str = "at least one row"):
        super().__init__(name, [RowProblem(None, None, f"the dataset is empty; it needs {needs}")], total_rows=0)
        self.args = (f"{name}: the dataset is empty; it needs {needs}.",)


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


def check_messages(
    value: Any, column: str, row: int, allowed_roles: Iterable[str] = ROLES, *, multimodal: bool = False
) -> list[RowProblem]:
    """A conversation: a non-empty list of ``{"role": ..., "content": str}`` with known roles.

    ``multimodal``: a message's content may also be a list of typed parts, as in TRL's vision datasets
    (``[{"type": "image"}, {"type": "text", "text": "..."}]``); every text part must then be non-empty text.
    """
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
        if multimodal and isinstance(content, list):
            problems += _check_content_parts(content, column, row, turn)
        elif not isinstance(content, str) or not content.strip():
            problems.append(RowProblem(row, column, f"message {turn} has empty or non-text content {_describe(content)}"))
    return problems


def _check_content_parts(parts: list, column: str, row: int, turn: int) -> list[RowProblem]:
    """The content of one message of a vision dataset: typed parts, each text part non-empty text."""
    if not parts:
        return [RowProblem(row, column, f"message {turn} has no content parts")]
    problems = []
    for index, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str) or not text.strip():
                problems.append(
                    RowProblem(row, column, f"message {turn}, part {index} has empty or non-text text {_describe(text)}")
                )
        elif kind is None:
            problems.append(
                RowProblem(row, column, f"message {turn}, part {index} is {_describe(part)}; expected {{'type': ...}}")
            )
    return problems


def _is_conversation(value: Any) -> bool:
    return isinstance(value, list)


def check_preference_row(
    example: Mapping[str, Any], row: int, require_prompt: bool = False, *, multimodal: bool = False
) -> list[RowProblem]:
    """Problems of one row of a TRL preference dataset (standard or conversational, explicit or implicit prompt).

    ``multimodal``: messages may hold typed content parts (a vision dataset; see :func:`check_messages`).
    """
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
        problems += check_messages(example["prompt"], "prompt", row, multimodal=multimodal)
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
            problems += check_messages(
                example[column], column, row, allowed_roles=("assistant", "tool"), multimodal=multimodal
            )
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
                problems += check_messages(example[column], column, row, multimodal=multimodal)
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
    multimodal: bool = False,
) -> None:
    """Raise :class:`PreferenceDataError` listing every bad row of a preference dataset; return ``None`` if it is good.

    Accepts a ``datasets.Dataset``, an ``IterableDataset`` (validated as it streams; ``max_rows`` bounds how far) or
    any iterable of dicts. Runs in one pass over the rows and touches no model. Every row must be in the same format
    (all conversational or all plain text), as TRL batches them together. ``multimodal``: messages may hold typed
    content parts, as in a vision dataset.
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
    _check_every_row(
        dataset, name, "preference", "at least one preference pair", max_rows,
        lambda example, index: check_preference_row(example, index, require_prompt=require_prompt, multimodal=multimodal),
    )


def _check_every_row(
    dataset: Any,
    name: str,
    kind: str,
    expected: str,
    max_rows: int | None,
    check_row: Callable[[Any, int], list[RowProblem]],
) -> None:
    """The one pass of every validator: ``check_row`` on each row (up to ``max_rows``), rows that mix formats
    (:class:`RowStyles` of ``kind``), an empty dataset; raises :class:`PreferenceDataError` listing every problem."""
    problems: list[RowProblem] = []
    styles = RowStyles(kind)
    count = 0
    for index, example in enumerate(dataset):
        if max_rows is not None and index >= max_rows:
            break
        count += 1
        problems += check_row(example, index)
        styles.add(example, index)
    if count == 0:
        raise EmptyDatasetError(name, expected)
    mixed = styles.problem()
    if mixed is not None:
        problems.insert(0, mixed)
    if problems:
        raise PreferenceDataError(name, problems, total_rows=count)


# Column names that mark a dataset the user already tokenized: TRL takes those as they are.
TOKENIZED_COLUMNS = ("prompt_ids", "chosen_ids", "chosen_input_ids", "input_ids_chosen")
IMAGE_COLUMNS = ("image", "images")


def validate_unless_tokenized(dataset: Any, name: str, *, uses_margin: bool = False) -> None:
    """What the DPO and reward trainers check before any model loads: :func:`validate_preference_dataset`, unless
    the user already tokenized the data (:data:`TOKENIZED_COLUMNS`).

    A vision dataset (an ``image`` / ``images`` column, which TRL handles) still has its text checked; its messages
    may hold typed content parts. ``uses_margin``: the trainer reads ``margin`` (the reward trainer), so a row
    without one while others have one is an error rather than a silent zero.
    """
    columns = dataset_columns(dataset)
    if any(column in columns for column in TOKENIZED_COLUMNS):
        return
    images = [column for column in IMAGE_COLUMNS if column in columns]
    text_only = dataset
    if images and hasattr(dataset, "remove_columns"):
        text_only = dataset.remove_columns(images)  # checking text does not need every image decoded
    validate_preference_dataset(text_only, name, multimodal=bool(images))
    if uses_margin and "margin" in columns and hasattr(dataset, "__len__"):  # a streamed dataset is checked by TRL
        margins = dataset["margin"] if hasattr(dataset, "column_names") else [row.get("margin") for row in dataset]
        missing = [index for index, margin in enumerate(margins) if margin is None]
        if missing:
            raise PreferenceDataError(
                name,
                [RowProblem(index, "margin", "is missing while other rows have one") for index in missing],
                total_rows=len(dataset),
                hint="Give every row a margin (0 for 'slightly better'), or drop the 'margin' column.",
            )


def dataset_columns(dataset: Any) -> list[str]:
    """The column names of a dataset, a streamed one (from its first row) or a list of rows (the first row's)."""
    columns = getattr(dataset, "column_names", None)
    if columns is None:  # a streamed dataset whose features are not known yet: look at its first row
        first = next(iter(dataset), None)
        columns = list(first) if isinstance(first, Mapping) else []
    return list(columns)


# ---------------------------------------------------------------------------------------------------------------------
# One format per dataset: TRL (and Arrow) take a column of texts or a column of conversations, not both.
# ---------------------------------------------------------------------------------------------------------------------

CONVERSATIONAL = "conversational"
PLAIN_TEXT = "plain text"


def row_style(example: Any, format: str = "preference") -> str | None:
    """:data:`CONVERSATIONAL` or :data:`PLAIN_TEXT` for one row, by its prompt (by ``chosen`` when a preference row
    has no prompt); ``None`` when that value is neither (a problem the row checks report on their own)."""
    if not isinstance(example, Mapping):
        return None
    value = example.get("prompt")
    if value is None and format == "preference":
        value = example.get("chosen")
    if isinstance(value, list):
        return CONVERSATIONAL
    if isinstance(value, str):
        return PLAIN_TEXT
    return None


def describe_rows(rows: list[int], limit: int = 8) -> str:
    """``row 3`` / ``rows 3, 7`` / ``rows 0-2, 5`` (runs of neighbours joined), the first ``limit`` runs only."""
    runs: list[list[int]] = []
    for row in sorted(rows):
        if runs and row == runs[-1][1] + 1:
            runs[-1][1] = row
        else:
            runs.append([row, row])
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    if len(runs) > limit:
        parts.append(f"... ({len(rows)} rows in all)")
    return ("row " if len(rows) == 1 else "rows ") + ", ".join(parts)


class RowStyles:
    """Collects each row's :func:`row_style` while rows are checked; :meth:`problem` says which rows differ."""

    def __init__(self, format: str = "preference"):
        self.format = format
        self.rows: dict[str, list[int]] = {}

    def add(self, example: Any, row: int) -> None:
        style = row_style(example, self.format)
        if style is not None:
            self.rows.setdefault(style, []).append(row)

    def problem(self) -> RowProblem | None:
        """A dataset-level problem naming the rows in the minority format (ties: the rows unlike the first row)."""
        if len(self.rows) < 2:
            return None
        first_style = min(self.rows, key=lambda style: self.rows[style][0])
        usual = max(self.rows, key=lambda style: (len(self.rows[style]), style == first_style))
        odd = next(style for style in self.rows if style != usual)
        odd_rows, usual_rows = self.rows[odd], self.rows[usual]
        return RowProblem(
            None,
            None,
            f"{describe_rows(odd_rows)} {'is' if len(odd_rows) == 1 else 'are'} {odd} but "
            f"{describe_rows(usual_rows)} {'is' if len(usual_rows) == 1 else 'are'} {usual}; use one format for the "
            "whole file: every row conversational (lists of messages) or every row plain text",
        )


def check_one_format(rows: Iterable[Any], name: str, format: str = "preference") -> None:
    """Raise :class:`PreferenceDataError` naming the rows whose format (conversational or plain text) differs from
    the others'."""
    styles = RowStyles(format)
    for index, example in enumerate(rows):
        styles.add(example, index)
    mixed = styles.problem()
    if mixed is not None:
        raise PreferenceDataError(name, [mixed])


# ---------------------------------------------------------------------------------------------------------------------
# Every other shape of preference data: raw pairwise judgements, pointwise scores / labels, prompt lists.
# ---------------------------------------------------------------------------------------------------------------------

FORMATS = ("preference", "labeled", "pointwise", "unpaired", "prompts")
# Formats whose rows become one dataset for a trainer, so all rows need one format. A list of prompts to sample
# from may mix plain and chat prompts: each is rendered on its own.
ONE_FORMAT_PER_DATASET = ("preference", "labeled", "pointwise", "unpaired")
FORMAT_COLUMNS = {
    "preference": ("chosen", "rejected"),  # TRL paired (prompt optional: implicit prompt)
    "labeled": ("prompt", "response_a", "response_b", "label"),  # a judgement on two responses, before pairing
    "pointwise": ("prompt", "completion"),  # + "score" (number) or "label" (bool, TRL's unpaired/KTO format)
    "unpaired": ("prompt", "completion", "label"),  # TRL's unpaired format, what KTO trains on: label is a bool
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
    """Which of :data:`FORMATS` a set of columns is meant to be, or ``None``.

    Decided by the columns that only one format has (``chosen``/``rejected``; ``response_a``/``response_b``;
    ``completion``/``score``), so a row missing one of its columns is still recognised and reported as missing it.
    """
    columns = set(columns)
    if {"chosen", "rejected"} & columns:
        return "preference"
    if {"response_a", "response_b"} & columns:
        return "labeled"
    if {"completion", "score"} & columns:
        return "pointwise"
    if "prompt" in columns and "label" not in columns:
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
        if format == "unpaired" and column == "label" and "score" in columns:
            reason += (". Unpaired rows need a true/false label, not a score: set label = score above your threshold, "
                       "or pair the scored completions with prefkit.data.pointwise_to_pairs and train DPO")
        problems.append(RowProblem(None, column, reason))
    return problems


def check_prompt(value: Any, row: int, column: str = "prompt", *, multimodal: bool = False) -> list[RowProblem]:
    """A prompt: non-empty text, or a conversation whose last message is not the assistant's."""
    if _is_conversation(value):
        problems = check_messages(value, column, row, multimodal=multimodal)
        if not problems and value[-1].get("role") == "assistant":
            problems.append(
                RowProblem(row, column, "ends with an assistant turn; the last prompt message must be user/system/tool")
            )
        return problems
    return check_text(value, column, row)


def check_response(
    value: Any, column: str, row: int, conversational: bool, *, multimodal: bool = False
) -> list[RowProblem]:
    """A response to a prompt: text, or (after a conversational prompt) text or a list of assistant messages."""
    if _is_conversation(value):
        if not conversational:
            return [RowProblem(row, column, "is a conversation but the prompt is plain text; use one format per row")]
        return check_messages(value, column, row, allowed_roles=("assistant", "tool"), multimodal=multimodal)
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


def check_label(value: Any, row: int, column: str = "label") -> list[RowProblem]:
    """An unpaired label: ``True`` (the completion is desirable) or ``False`` (undesirable), a real boolean."""
    if value is None:
        return [RowProblem(row, column, "is missing (None); expected true (desirable) or false (undesirable)")]
    if not isinstance(value, bool):
        return [
            RowProblem(row, column, f"is a {type(value).__name__} ({_describe(value)}); expected true (desirable) or "
                       "false (undesirable), a JSON boolean rather than a number or a string")
        ]
    return []


def check_unpaired_row(example: Mapping[str, Any], row: int, *, multimodal: bool = False) -> list[RowProblem]:
    """Problems of one row of TRL's unpaired format ``{prompt, completion, label}`` (KTO's), standard or
    conversational. ``multimodal``: messages may hold typed content parts (a vision dataset)."""
    problems = [RowProblem(row, c, "is missing") for c in FORMAT_COLUMNS["unpaired"] if c not in example]
    if problems:
        return problems
    problems += check_prompt(example["prompt"], row, multimodal=multimodal)
    conversational = _is_conversation(example["prompt"])
    problems += check_response(example["completion"], "completion", row, conversational, multimodal=multimodal)
    problems += check_label(example["label"], row)
    return problems


def validate_unpaired_dataset(
    dataset: Any, name: str = "train_dataset", *, max_rows: int | None = None, multimodal: bool = False
) -> None:
    """Raise :class:`PreferenceDataError` listing every bad row of an unpaired dataset (``prompt``, ``completion``,
    boolean ``label``: what KTO trains on); return ``None`` if it is good.

    Like :func:`validate_preference_dataset`: one pass, no model, every row in one format (all conversational or all
    plain text). Accepts a ``datasets.Dataset``, an ``IterableDataset`` (``max_rows`` bounds how far it is read) or
    any iterable of dicts.
    """
    columns = getattr(dataset, "column_names", None)
    if columns is not None:
        missing = missing_columns_problems(columns, "unpaired")
        if missing:
            raise PreferenceDataError(name, missing, hint=(
                "An unpaired dataset has one labeled completion per row: prompt, completion and label (true when the "
                "completion is desirable, false when not). prefkit.data.labels_to_unpaired makes these rows from "
                "labeled pairs, prefkit.data.pairs_to_unpaired from TRL pairs; `prefkit export --format unpaired` and "
                "the app's KTO export write them."
            ))
    def check_row(example: Any, index: int) -> list[RowProblem]:
        if not isinstance(example, Mapping):
            return [RowProblem(index, None, f"is {_describe(example)}; expected an object with named columns")]
        return check_unpaired_row(example, index, multimodal=multimodal)

    _check_every_row(
        dataset, name, "unpaired", "at least one labeled completion (prompt, completion, label)", max_rows, check_row
    )


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
    if format == "unpaired":
        return check_unpaired_row(example, row)
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
    "pointwise" (``completion`` + ``score`` or boolean ``label``), "unpaired" (``completion`` + boolean ``label``:
    TRL's unpaired format, what KTO trains on), "prompts", or "auto" (from the columns; never "unpaired", which
    "pointwise" covers).
    Rows whose ``id_column`` value repeats an earlier one are bad too.

    Raises :class:`PreferenceDataError` (every bad row: index, column, reason) unless ``drop_invalid``; then returns
    a report whose ``dataset`` holds only the good rows and whose ``num_dropped`` counts the others. Dataset-level
    problems (missing columns, no rows, conversational rows mixed with plain-text ones) raise either way.
    """
    columns = getattr(dataset, "column_names", None)
    is_datasets_object = hasattr(dataset, "column_names")
    if not is_datasets_object and not isinstance(dataset, (list, tuple)):
        dataset = list(dataset)  # a generator: read it once, keep the rows for drop_invalid
    if isinstance(dataset, (list, tuple)):
        if not dataset:
            raise EmptyDatasetError(name)
        columns = list(dict.fromkeys(k for row in dataset[:1000] if isinstance(row, Mapping) for k in row))
    elif columns is None:  # a streamed dataset whose features are not known yet: look at its first row
        first = next(iter(dataset), None)
        if first is None:
            raise EmptyDatasetError(name)
        columns = list(first) if isinstance(first, Mapping) else None
    if format == "auto":
        detected = detect_format(columns) if columns is not None else None
        if detected is None:
            raise PreferenceDataError(
                name,
                [RowProblem(None, None, f"has columns {sorted(columns or [])}, which match no known format")],
                hint=format_hint(columns or []),
            )
        format = detected
    elif format not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, not {format!r}")
    if columns is not None:
        missing = missing_columns_problems(columns, format)
        if missing:
            raise PreferenceDataError(name, missing, hint=format_hint(columns))

    problems: list[RowProblem] = []
    seen_ids: dict[Any, int] = {}
    styles = RowStyles(format)
    count = 0
    for index, example in enumerate(dataset):
        if max_rows is not None and index >= max_rows:
            break
        count += 1
        styles.add(example, index)
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
        raise EmptyDatasetError(name)
    mixed = styles.problem() if format in ONE_FORMAT_PER_DATASET else None
    if mixed is not None:
        raise PreferenceDataError(name, [mixed, *problems], total_rows=count)
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


def format_hint(columns: Iterable[str]) -> str:
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
