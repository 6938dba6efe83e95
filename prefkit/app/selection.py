"""Which pair to show next: active selection, so each vote teaches the most.

- ``random`` (the default): pairs as the chosen mode makes them.
- ``margin``: sample N answers and show the two whose reward-model scores are closest
  (:func:`smallest_margin_pair`). Where the reward model cannot tell two answers apart, a person's vote is the most
  informative label for the next reward model (uncertainty sampling on the reward margin).
- ``uncertainty``: show the model pair whose Bradley-Terry ratings are least known: the pair of sources with the
  widest combined bootstrap interval on the leaderboard (:func:`widest_interval_pair`); a source without a rating
  yet counts as infinitely uncertain.

:func:`interval_narrowing` measures what the votes bought: each source's interval width before the last votes and
now, and how much one vote narrowed it on average.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def smallest_margin_pair(rewards: Sequence[float], texts: Sequence[str] | None = None) -> tuple[int, int]:
    """The indices ``(i, j)``, ``i < j``, of the two candidates whose rewards are closest (the first such pair in
    sampling order when several tie). With ``texts``, two identical answers (margin 0, but nothing to choose between)
    are never paired; when every answer is the same, ``(0, 1)``. Needs at least two candidates."""
    if len(rewards) < 2:
        raise ValueError(f"margin selection needs at least two candidates, got {len(rewards)}.")
    best = (0, 1)
    best_margin = math.inf
    for i in range(len(rewards)):
        for j in range(i + 1, len(rewards)):
            if texts is not None and texts[i] == texts[j]:
                continue
            margin = abs(rewards[i] - rewards[j])
            if margin < best_margin:
                best, best_margin = (i, j), margin
    return best


def interval_widths(rows: Sequence) -> dict[str, float]:
    """Each model's 95% interval width (Elo points) from :func:`prefkit.data.leaderboard.leaderboard` rows."""
    return {row.model: row.ci_high - row.ci_low for row in rows}


def widest_interval_pair(rows: Sequence, candidates: Mapping[Any, tuple[str, str]]) -> Any:
    """The key of ``candidates`` (key -> the two sources a pair of that kind compares) whose sources have the widest
    combined interval on the leaderboard ``rows``; a source with no rating counts as infinitely wide, so unseen
    sources are shown first. Ties go to the first candidate."""
    if not candidates:
        raise ValueError("uncertainty selection needs at least one candidate model pair.")
    widths = interval_widths(rows)

    def width(pair: tuple[str, str]) -> float:
        return sum(widths.get(source, math.inf) for source in pair)

    return max(candidates, key=lambda key: width(candidates[key]))


@dataclass
class Narrowing:
    """One source's interval width (Elo points) before the last ``votes`` battles and with them."""

    model: str
    width_before: float
    width_now: float
    votes: int

    @property
    def per_vote(self) -> float:
        """Average narrowing per vote (positive: the interval shrank)."""
        return (self.width_before - self.width_now) / self.votes if self.votes else 0.0


def interval_narrowing(battles: Sequence, last: int = 10, bootstrap_rounds: int = 100, seed: int = 0) -> list[Narrowing]:
    """Interval width per source before the last ``last`` battles and now (same bootstrap seed for both), over the
    battles of :func:`prefkit.data.leaderboard.battles_from_votes` (in time order). A source first rated in those
    battles has an infinite width before. Only sources in the last battles are listed."""
    from ..data.leaderboard import leaderboard

    battles = list(battles)
    if not battles:
        return []
    recent = battles[-last:]
    earlier = battles[: len(battles) - len(recent)]
    before = interval_widths(leaderboard(earlier, bootstrap_rounds=bootstrap_rounds, seed=seed)) if earlier else {}
    now = interval_widths(leaderboard(battles, bootstrap_rounds=bootstrap_rounds, seed=seed))
    counts: dict[str, int] = {}
    for battle in recent:
        for model in (battle.model_a, battle.model_b):
            counts[model] = counts.get(model, 0) + 1
    return [
        Narrowing(model, before.get(model, math.inf), now[model], count)
        for model, count in sorted(counts.items())
        if model in now
    ]
