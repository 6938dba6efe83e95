"""Label scales for pairwise preferences: binary ("A" / "B") and graded ("A much better" ... "B much better").

A graded scale has an odd number of points: the middle one is a tie, the points to its left say response A wins
(strongest first), the points to its right say response B wins (weakest first). Each winning point carries a
*margin*, how much better the winner is. The margin is what TRL's reward trainer subtracts inside the
Bradley-Terry loss, ``-log σ(r_chosen - r_rejected - margin)``, so a "much better" pair must be separated by a larger
reward gap than a "slightly better" one (Llama 2, Touvron et al. 2023, section 3.2.2).

Default margins grow linearly with the distance from the tie and reach 1 at the ends: on the 7-point scale
"slightly / better / much better" give 1/3, 2/3, 1 (Llama 2's "margin small" choice). Binary labels carry no margin;
a margin of 0 means the same thing to the loss.

Two labels sit outside every scale: ``"tie"`` (also the middle point) and ``"both bad"``. Neither makes a pair;
both-bad can make two unpaired negatives for KTO (:func:`prefkit.data.labels.labels_to_unpaired`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

TIE = "tie"
BOTH_BAD = "both bad"
BINARY_LABELS = ("A", "B")

Kind = Literal["preference", "tie", "both_bad"]
Winner = Literal["A", "B"]


def normalize_label(label: str) -> str:
    """Case, spacing, ``_`` and ``-`` do not matter: ``"A_much-better "`` reads as ``"a much better"``."""
    return re.sub(r"[\s_\-]+", " ", label).strip().lower()


@dataclass(frozen=True)
class ScalePoint:
    """What one label means: who won (``None`` for a tie / both bad) and by what margin (``None`` when binary)."""

    label: str
    kind: Kind
    winner: Winner | None = None
    margin: float | None = None

    @property
    def makes_pair(self) -> bool:
        return self.kind == "preference"


class UnknownLabelError(ValueError):
    """A label that is on neither the graded scale nor the binary one; the message lists the accepted labels."""


class GradedScale:
    """An ordered, odd-length scale from "A wins most" through a tie to "B wins most".

    ``labels`` are the label texts in order; ``margins`` (optional, one per label) are the margin magnitudes (the
    tie's must be 0, the others > 0); by default ``k / K`` for the k-th point away from the tie on a side with K
    points. ``tie_label`` names the middle point (default: whatever text is in the middle). Binary "A" / "B" and
    "both bad" are always understood in addition to the scale's own labels.
    """

    def __init__(self, labels: Sequence[str], margins: Sequence[float] | None = None, name: str | None = None):
        labels = [str(label) for label in labels]
        if len(labels) < 3 or len(labels) % 2 == 0:
            raise ValueError(
                f"A graded scale needs an odd number of labels (>= 3) with the tie in the middle; got {len(labels)}."
            )
        normalized = [normalize_label(label) for label in labels]
        duplicates = sorted({n for n in normalized if normalized.count(n) > 1})
        if duplicates:
            raise ValueError(f"A graded scale's labels must be distinct; repeated: {duplicates}.")
        reserved = {normalize_label(x) for x in (*BINARY_LABELS, BOTH_BAD)}
        clashes = [label for label, n in zip(labels, normalized) if n in reserved]
        if clashes:
            raise ValueError(f"Labels {clashes} are reserved (binary 'A'/'B' and 'both bad'); choose other texts.")
        side = len(labels) // 2
        if margins is None:
            margins = [(side - i) / side for i in range(side)] + [0.0] + [(i + 1) / side for i in range(side)]
        margins = [float(m) for m in margins]
        if len(margins) != len(labels):
            raise ValueError(f"Give one margin per label: {len(labels)} labels but {len(margins)} margins.")
        if margins[side] != 0:
            raise ValueError(f"The middle label {labels[side]!r} is the tie; its margin must be 0, not {margins[side]}.")
        bad = [(label, m) for i, (label, m) in enumerate(zip(labels, margins)) if i != side and not m > 0]
        if bad:
            raise ValueError(f"Margins away from the tie must be > 0 (they are magnitudes); got {bad}.")
        self.name = name or f"{len(labels)}-point"
        self.labels: tuple[str, ...] = tuple(labels)
        self.margins: tuple[float, ...] = tuple(margins)
        self.tie_label = labels[side]
        points: list[ScalePoint] = []
        for i, (label, margin) in enumerate(zip(labels, margins)):
            if i < side:
                points.append(ScalePoint(label, "preference", "A", margin))
            elif i == side:
                points.append(ScalePoint(label, "tie"))
            else:
                points.append(ScalePoint(label, "preference", "B", margin))
        self.points: tuple[ScalePoint, ...] = tuple(points)
        self._lookup: dict[str, ScalePoint] = {n: p for n, p in zip(normalized, points)}
        self._lookup.setdefault(TIE, ScalePoint(self.tie_label, "tie"))
        self._lookup["a"] = ScalePoint("A", "preference", "A", None)
        self._lookup["b"] = ScalePoint("B", "preference", "B", None)
        self._lookup[BOTH_BAD] = ScalePoint(BOTH_BAD, "both_bad")

    # ---- constructors -------------------------------------------------------------------------------------------
    @classmethod
    def seven_point(cls) -> GradedScale:
        """ "A much better", "A better", "A slightly better", "tie", "B slightly better", "B better", "B much better"."""
        return cls(
            ["A much better", "A better", "A slightly better", TIE, "B slightly better", "B better", "B much better"],
            name="7-point",
        )

    @classmethod
    def five_point(cls) -> GradedScale:
        return cls(["A much better", "A better", TIE, "B better", "B much better"], name="5-point")

    @classmethod
    def three_point(cls) -> GradedScale:
        """A / tie / B with margin 1 for a win: binary judgements that also allow a tie."""
        return cls(["A better", TIE, "B better"], name="3-point")

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> GradedScale:
        """Inverse of :meth:`to_dict` (``{"labels": [...], "margins": [...], "name": ...}``)."""
        return cls(spec["labels"], spec.get("margins"), spec.get("name"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "labels": list(self.labels), "margins": list(self.margins)}

    # ---- reading labels -----------------------------------------------------------------------------------------
    @property
    def accepted_labels(self) -> tuple[str, ...]:
        """Every label text :meth:`parse` understands, scale first."""
        return (*self.labels, *BINARY_LABELS, BOTH_BAD)

    def parse(self, label: Any) -> ScalePoint:
        """The meaning of ``label``; raises :class:`UnknownLabelError` (naming the accepted labels) otherwise."""
        if isinstance(label, bool) or not isinstance(label, str):
            raise UnknownLabelError(
                f"is {label!r} ({type(label).__name__}); expected one of {', '.join(map(repr, self.accepted_labels))}"
            )
        point = self._lookup.get(normalize_label(label))
        if point is None:
            raise UnknownLabelError(
                f"{label!r} is not a label of the {self.name} scale; expected one of "
                f"{', '.join(map(repr, self.accepted_labels))}"
            )
        return point

    def __contains__(self, label: object) -> bool:
        return isinstance(label, str) and normalize_label(label) in self._lookup

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        return iter(self.points)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GradedScale) and (self.labels, self.margins) == (other.labels, other.margins)

    def __hash__(self) -> int:
        return hash((self.labels, self.margins))

    def __repr__(self) -> str:
        inner = ", ".join(f"{label!r}: {margin:g}" for label, margin in zip(self.labels, self.margins))
        return f"GradedScale({self.name}; {inner})"

    def label_for(self, winner: Winner | None, strength: int = 1) -> str:
        """The label text for ``winner`` at ``strength`` steps from the tie (1 = weakest); ``None`` gives the tie."""
        side = len(self.labels) // 2
        if winner is None:
            return self.tie_label
        if not 1 <= strength <= side:
            raise ValueError(f"strength must be between 1 and {side} on the {self.name} scale, got {strength}.")
        return self.labels[side - strength] if winner == "A" else self.labels[side + strength]


DEFAULT_SCALE = GradedScale.seven_point()
