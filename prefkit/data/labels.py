"""From labels to TRL rows: pairwise judgements and pointwise scores become ``prompt`` / ``chosen`` / ``rejected``
(+ ``margin``); judgements and ready pairs become unpaired ``prompt`` / ``completion`` / ``label`` rows for KTO.

A *labeled record* is one judgement on two responses to the same prompt::

    {"prompt": "...", "response_a": "...", "response_b": "...", "label": "A slightly better", ...}

Its label is read with a :class:`~prefkit.data.scales.GradedScale` (graded: winner + margin) or is binary "A" / "B"
(winner, no margin). Ties and "both bad" stay in the raw records and make no pair. Other keys of a record (ids,
annotator, judge output) stay out of the TRL columns unless named in ``keep_columns``.

Margins. When every label is graded each pair carries its scale margin; when every label is binary there is no
``margin`` column; when both kinds are mixed, binary pairs get margin 0, which is exactly "no margin" in the
Bradley-Terry loss ``-log σ(r_chosen - r_rejected - margin)`` (TRL's collator needs the column on every row).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from .scales import DEFAULT_SCALE, GradedScale
from .validation import (
    PreferenceDataError,
    RowProblem,
    check_labeled_record,
    check_pointwise_row,
    check_preference_row,
)

logger = logging.getLogger(__name__)

Errors = Literal["raise", "drop"]


def _as_assistant(response: Any, conversational: bool) -> Any:
    """A response in the row's format: plain text for text prompts, assistant messages after a conversation."""
    if conversational and isinstance(response, str):
        return [{"role": "assistant", "content": response}]
    return response


def _collect(
    records: Iterable[Mapping[str, Any]], check, errors: Errors, name: str, **kwargs
) -> list[tuple[int, Mapping]]:
    """``(index, record)`` for the good records; bad ones raise (all listed) or are dropped with a logged count."""
    if errors not in ("raise", "drop"):
        raise ValueError(f"errors must be 'raise' or 'drop', not {errors!r}")
    good, problems, total = [], [], 0
    for index, record in enumerate(records):
        total += 1
        if not isinstance(record, Mapping):
            problems.append(RowProblem(index, None, f"is a {type(record).__name__}; expected a dict of columns"))
            continue
        found = check(record, index, **kwargs)
        if found:
            problems += found
        else:
            good.append((index, record))
    if problems and errors == "raise":
        raise PreferenceDataError(
            name, problems, total_rows=total, hint="Fix these rows, or pass errors='drop' to skip them."
        )
    if problems:
        dropped = len({p.row for p in problems})
        logger.warning("%s: dropped %d bad rows of %d (first: %s)", name, dropped, total, problems[0])
    return good


def label_counts(records: Iterable[Mapping[str, Any]], scale: GradedScale = DEFAULT_SCALE) -> Counter:
    """How many records carry each kind of label: ``preference`` / ``tie`` / ``both_bad`` / ``invalid``."""
    counts: Counter = Counter()
    for record in records:
        try:
            counts[scale.parse(record.get("label")).kind] += 1
        except (ValueError, AttributeError):
            counts["invalid"] += 1
    return counts


def labels_to_pairs(
    records: Iterable[Mapping[str, Any]],
    scale: GradedScale = DEFAULT_SCALE,
    *,
    keep_columns: Sequence[str] = (),
    errors: Errors = "raise",
) -> list[dict[str, Any]]:
    """TRL pairwise rows (``prompt``, ``chosen``, ``rejected`` and, for graded labels, ``margin``) from judgements.

    ``records``: dicts with ``prompt``, ``response_a``, ``response_b``, ``label`` (a label of ``scale``, binary
    "A"/"B", "tie" or "both bad"). Ties and both-bad records make no pair. ``keep_columns`` copies those extra keys
    (e.g. ``"id"``) onto the pair. ``errors="drop"`` skips invalid records (logging how many) instead of raising
    :class:`~prefkit.data.validation.PreferenceDataError`.

    >>> labels_to_pairs([{"prompt": "Hi", "response_a": "Hello!", "response_b": "Go away.", "label": "A better"}])
    [{'prompt': 'Hi', 'chosen': 'Hello!', 'rejected': 'Go away.', 'margin': 0.6666666666666666}]
    """
    good = _collect(records, check_labeled_record, errors, "labeled records", scale=scale)
    points = [scale.parse(record["label"]) for _, record in good]
    graded = any(point.makes_pair and point.margin is not None for point in points)
    rows: list[dict[str, Any]] = []
    for (_, record), point in zip(good, points):
        if not point.makes_pair:
            continue
        conversational = isinstance(record["prompt"], list)
        winner, loser = ("response_a", "response_b") if point.winner == "A" else ("response_b", "response_a")
        row = {
            "prompt": record["prompt"],
            "chosen": _as_assistant(record[winner], conversational),
            "rejected": _as_assistant(record[loser], conversational),
        }
        if graded:
            row["margin"] = point.margin if point.margin is not None else 0.0
        for column in keep_columns:
            if column in record:
                row[column] = record[column]
        rows.append(row)
    return rows


def labels_to_unpaired(
    records: Iterable[Mapping[str, Any]],
    scale: GradedScale = DEFAULT_SCALE,
    *,
    both_bad: bool = True,
    keep_columns: Sequence[str] = (),
    errors: Errors = "raise",
) -> list[dict[str, Any]]:
    """TRL unpaired rows for KTO: ``prompt``, ``completion``, ``label`` (True = desirable).

    A preference gives the winner ``True`` and the loser ``False``; "both bad" gives two ``False`` rows (unless
    ``both_bad=False``); a tie gives nothing (it says neither response is good or bad in absolute terms). An ``id``
    kept through ``keep_columns`` becomes ``<id>/a`` or ``<id>/b`` (which response the row holds), so ids stay unique.
    """
    good = _collect(records, check_labeled_record, errors, "labeled records", scale=scale)
    rows: list[dict[str, Any]] = []
    for _, record in good:
        point = scale.parse(record["label"])
        if point.kind == "tie" or (point.kind == "both_bad" and not both_bad):
            continue
        conversational = isinstance(record["prompt"], list)
        if point.kind == "both_bad":
            outcomes = [("response_a", False), ("response_b", False)]
        elif point.winner == "A":
            outcomes = [("response_a", True), ("response_b", False)]
        else:
            outcomes = [("response_b", True), ("response_a", False)]
        for column, desirable in outcomes:
            row = {
                "prompt": record["prompt"],
                "completion": _as_assistant(record[column], conversational),
                "label": desirable,
            }
            for extra in keep_columns:
                if extra in record:
                    row[extra] = record[extra]
            if "id" in keep_columns and record.get("id") is not None:  # one record, two rows: keep ids unique
                row["id"] = f"{record['id']}/{column[-1]}"
            rows.append(row)
    return rows


def pairs_to_unpaired(
    pairs: Iterable[Mapping[str, Any]], *, keep_columns: Sequence[str] = (), errors: Errors = "raise"
) -> list[dict[str, Any]]:
    """TRL unpaired rows for KTO from TRL pairs (``prompt``, ``chosen``, ``rejected``): each pair gives its chosen
    answer labelled ``True`` and, right after it, its rejected answer labelled ``False``.

    The order matters for KTO, which reads rows in dataset order (its KL term pairs each row with its neighbour):
    TRL's own ``unpair_preference_dataset`` puts every chosen row before every rejected one (per 1,000 pairs), so the
    first half of an epoch would see only desirable answers. A ``margin`` is dropped (KTO has none); an ``id`` kept
    through ``keep_columns`` becomes ``<id>/chosen`` or ``<id>/rejected``.

    >>> pairs_to_unpaired([{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}])
    [{'prompt': 'Hi', 'completion': 'Hello!', 'label': True}, {'prompt': 'Hi', 'completion': 'Go away.', 'label': False}]
    """
    good = _collect(pairs, check_preference_row, errors, "preference pairs", require_prompt=True)
    rows: list[dict[str, Any]] = []
    for _, pair in good:
        for column, desirable in (("chosen", True), ("rejected", False)):
            row = {"prompt": pair["prompt"], "completion": pair[column], "label": desirable}
            for extra in keep_columns:
                if extra in pair:
                    row[extra] = pair[extra]
            if "id" in keep_columns and pair.get("id") is not None:  # one pair, two rows: keep ids unique
                row["id"] = f"{pair['id']}/{column}"
            rows.append(row)
    return rows


def _prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def pointwise_to_pairs(
    rows: Iterable[Mapping[str, Any]],
    mode: Literal["best_vs_worst", "all_pairs"] = "best_vs_worst",
    *,
    keep_columns: Sequence[str] = (),
    errors: Errors = "raise",
) -> list[dict[str, Any]]:
    """Pairs from pointwise rows ``{prompt, completion, score}`` (or boolean ``label``), within each prompt.

    ``best_vs_worst``: one pair per prompt, the highest-scored completion against the lowest (the first one wins
    among equal scores). ``all_pairs``: every two completions of a prompt whose scores differ, higher one chosen.
    Numeric scores give ``margin = score_chosen - score_rejected``; boolean labels give no margin. Equal scores and
    identical completions make no pair. Prompts keep the order in which they first appear; ``keep_columns`` values
    come from the chosen row, except ``id``, which becomes ``<chosen id>|<rejected id>``.
    """
    if mode not in ("best_vs_worst", "all_pairs"):
        raise ValueError(f"mode must be 'best_vs_worst' or 'all_pairs', not {mode!r}")
    good = _collect(rows, check_pointwise_row, errors, "pointwise rows")
    uses_scores = any(record.get("score") is not None for _, record in good)
    uses_labels = any(record.get("score") is None for _, record in good)
    if uses_scores and uses_labels:
        first_label = next(index for index, record in good if record.get("score") is None)
        raise PreferenceDataError(
            "pointwise rows",
            [
                RowProblem(
                    first_label,
                    "score",
                    "is missing while other rows have scores; use 'score' on every row or 'label' on every row",
                )
            ],
        )
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for _, record in good:
        groups.setdefault(_prompt_key(record["prompt"]), []).append(record)

    def value(record: Mapping[str, Any]) -> float:
        return float(record["score"]) if uses_scores else float(record["label"])

    out: list[dict[str, Any]] = []
    for members in groups.values():
        ranked = sorted(members, key=value, reverse=True)  # stable: earlier rows first among equal scores
        if mode == "best_vs_worst":
            candidates = [(ranked[0], ranked[-1])] if len(ranked) > 1 else []
        else:
            candidates = [(ranked[i], ranked[j]) for i in range(len(ranked)) for j in range(i + 1, len(ranked))]
        for better, worse in candidates:
            if value(better) <= value(worse) or better["completion"] == worse["completion"]:
                continue
            conversational = isinstance(better["prompt"], list)
            row = {
                "prompt": better["prompt"],
                "chosen": _as_assistant(better["completion"], conversational),
                "rejected": _as_assistant(worse["completion"], conversational),
            }
            if uses_scores:
                row["margin"] = value(better) - value(worse)
            for column in keep_columns:
                if column in better:
                    row[column] = better[column]
            if "id" in keep_columns and better.get("id") is not None and worse.get("id") is not None:
                row["id"] = f"{better['id']}|{worse['id']}"  # a row may be in several pairs: name the pair
            out.append(row)
    return out
