r"""How far the labels can be trusted: agreement statistics, gold pairs and per-annotator reliability.

Three pure statistics, each with its formula in the docstring and tested against an independent computation:

- :func:`cohen_kappa`: two raters on the same items, unweighted or weighted (linear / quadratic) for an ordinal scale;
- :func:`krippendorff_alpha`: any number of raters, missing labels allowed, nominal / ordinal / interval distances;
- :func:`binomial_two_sided_p`: the exact binomial test behind the position-bias flag.

On top of them, :func:`annotator_reliability` gives one row per annotator (:class:`AnnotatorReliability`): accuracy
on gold pairs (pairs with a known answer, mixed into the labeling queue by the app), agreement with other
annotators on the same items, and flags for position bias (picking the left side far more often than chance),
implausibly fast votes and duplicate submissions. :func:`apply_reliability_policy` turns that report into what an
export keeps: every vote (``keep``), every vote with its annotator's reliability as a ``weight`` (``weight``), or
only the votes of annotators above the thresholds (``drop``).

Votes live on the 7-point scale of :data:`prefkit.data.scales.DEFAULT_SCALE`. For agreement a vote becomes a point
on that scale *oriented to the item* (:func:`ordinal_position`): 0 is "the item's first response much better",
3 a tie, 6 "the second response much better", whatever order the two responses were stored or shown in.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .scales import DEFAULT_SCALE
from .votes import GOLD_ANSWERS

SCALE_POINTS = len(DEFAULT_SCALE)  # 7
TIE_POSITION = SCALE_POINTS // 2  # 3
#: Steps from the tie of each graded strength; a win without a strength counts as "clearly" (the middle one).
STRENGTH_STEPS = {"slightly": 1, "clearly": 2, "much": 3, None: 2}
RELIABILITY_POLICIES = ("keep", "weight", "drop")


class GoldPairError(ValueError):
    """A gold-pair file that cannot be used as given; the message names the file, the line and the field."""


# --------------------------------------------------------------------------------------------------------------------
# Statistics (pure functions)
# --------------------------------------------------------------------------------------------------------------------


def cohen_kappa(
    labels_a: Sequence[Hashable],
    labels_b: Sequence[Hashable],
    *,
    categories: Sequence[Hashable] | None = None,
    weights: str | None = None,
) -> float:
    r"""Cohen's kappa between two raters who labeled the same items (``labels_a[i]`` and ``labels_b[i]``: item i).

    .. math:: \kappa_w = 1 - \frac{\sum_{i,j} w_{ij}\, p_{ij}}{\sum_{i,j} w_{ij}\, p_{i\cdot}\, p_{\cdot j}}

    with :math:`p_{ij}` the share of items rater A put in category i and rater B in j, :math:`p_{i\cdot}`,
    :math:`p_{\cdot j}` the raters' marginal shares, and disagreement weights :math:`w_{ij}`: unweighted
    (``weights=None``) :math:`w_{ij} = [i \ne j]`, which gives the familiar :math:`(p_o - p_e) / (1 - p_e)`;
    ``"linear"`` :math:`|i - j| / (k - 1)`; ``"quadratic"`` :math:`((i - j) / (k - 1))^2`. Weighted kappa needs
    ordered ``categories`` (default: the sorted labels seen). 1 is perfect agreement, 0 the agreement two raters
    labeling at random with these marginals would reach; NaN when chance alone agrees perfectly (both raters always
    gave the same single label).
    """
    if len(labels_a) != len(labels_b):
        raise ValueError(f"the two raters labeled different numbers of items ({len(labels_a)} vs {len(labels_b)}).")
    if not labels_a:
        raise ValueError("no items: kappa needs at least one item labeled by both raters.")
    if weights not in (None, "linear", "quadratic"):
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}.")
    categories = list(categories) if categories is not None else sorted(set(labels_a) | set(labels_b))
    index = {category: k for k, category in enumerate(categories)}
    unknown = sorted({str(x) for x in (*labels_a, *labels_b) if x not in index})
    if unknown:
        raise ValueError(f"labels {unknown} are not among the categories {categories}.")
    k = len(categories)
    n = len(labels_a)
    joint = [[0.0] * k for _ in range(k)]
    for a, b in zip(labels_a, labels_b):
        joint[index[a]][index[b]] += 1.0 / n
    row = [sum(joint[i]) for i in range(k)]
    column = [sum(joint[i][j] for i in range(k)) for j in range(k)]

    def weight(i: int, j: int) -> float:
        if weights is None:
            return float(i != j)
        distance = abs(i - j) / max(k - 1, 1)
        return distance if weights == "linear" else distance**2

    observed = sum(weight(i, j) * joint[i][j] for i in range(k) for j in range(k))
    expected = sum(weight(i, j) * row[i] * column[j] for i in range(k) for j in range(k))
    if expected == 0:
        return float("nan")
    return 1.0 - observed / expected


def krippendorff_alpha(
    units: Iterable[Sequence[Any]], *, metric: str = "ordinal", values: Sequence[Any] | None = None
) -> float:
    r"""Krippendorff's alpha for labels of any number of raters, with missing labels.

    ``units``: one sequence per item holding the labels it got (``None`` for a rater who did not label it; only the
    labels present matter, so ``[[3, 3], [2, None, 4]]`` and ``[[3, 3], [2, 4]]`` are the same data). Items with
    fewer than two labels cannot show (dis)agreement and are left out ("pairable" values only).

    With :math:`m_u` labels in unit u, the coincidence matrix counts every ordered pair of labels within a unit,
    each unit contributing :math:`m_u` in total:

    .. math:: o_{ck} = \sum_u \frac{\#\{(i, j),\ i \ne j:\ v_{ui} = c,\ v_{uj} = k\}}{m_u - 1},
              \qquad n_c = \sum_k o_{ck}, \qquad n = \sum_c n_c

    .. math:: \alpha = 1 - \frac{D_o}{D_e} = 1 - (n - 1)\,
              \frac{\sum_{c,k} o_{ck}\, \delta^2_{ck}}{\sum_{c,k} n_c\, n_k\, \delta^2_{ck}}

    with the distance :math:`\delta^2` of ``metric``: ``"nominal"`` :math:`[c \ne k]`; ``"interval"``
    :math:`(c - k)^2`; ``"ordinal"`` (ranks matter, not their spacing) :math:`\delta^2_{ck} = \big(\sum_{g=c}^{k}
    n_g - \tfrac{n_c + n_k}{2}\big)^2` over the values ordered as in ``values`` (default: sorted). 1 is perfect
    agreement, 0 agreement at chance level, below 0 systematic disagreement; NaN when every label is the same value
    (nothing to disagree about).
    """
    if metric not in ("nominal", "ordinal", "interval"):
        raise ValueError(f"metric must be 'nominal', 'ordinal' or 'interval', got {metric!r}.")
    pairable = []
    for unit in units:
        present = [value for value in unit if value is not None and not (isinstance(value, float) and math.isnan(value))]
        if len(present) >= 2:
            pairable.append(present)
    if not pairable:
        raise ValueError("no item has labels from two raters: alpha needs at least one item labeled twice.")
    domain = list(values) if values is not None else sorted({value for unit in pairable for value in unit})
    index = {value: k for k, value in enumerate(domain)}
    unknown = sorted({str(v) for unit in pairable for v in unit if v not in index})
    if unknown:
        raise ValueError(f"labels {unknown} are not among the values {domain}.")
    size = len(domain)
    coincidences = [[0.0] * size for _ in range(size)]
    for unit in pairable:
        counts = Counter(index[value] for value in unit)
        for c, count_c in counts.items():
            for k, count_k in counts.items():
                pairs = count_c * (count_k - (c == k))
                coincidences[c][k] += pairs / (len(unit) - 1)
    totals = [sum(row) for row in coincidences]
    n = sum(totals)

    def delta2(c: int, k: int) -> float:
        if metric == "nominal":
            return float(c != k)
        if metric == "interval":
            return float(domain[c] - domain[k]) ** 2
        low, high = min(c, k), max(c, k)
        return (sum(totals[low : high + 1]) - (totals[c] + totals[k]) / 2) ** 2

    observed = sum(coincidences[c][k] * delta2(c, k) for c in range(size) for k in range(size))
    expected = sum(totals[c] * totals[k] * delta2(c, k) for c in range(size) for k in range(size))
    if expected == 0:
        return float("nan")
    return 1.0 - (n - 1) * observed / expected


def binomial_two_sided_p(successes: int, trials: int, p: float = 0.5) -> float:
    r"""Exact two-sided binomial test: the probability, under :math:`X \sim \mathrm{Binomial}(n, p)`, of an outcome
    no more likely than the one seen,

    .. math:: P = \sum_{x:\ P(X = x) \le P(X = k)} \binom{n}{x} p^x (1 - p)^{n - x}

    (the definition R's ``binom.test`` and SciPy's ``binomtest`` use). With ``p = 0.5``: 10 left picks out of 10
    give 0.002, 8 of 10 give 0.11.
    """
    if not 0 <= successes <= trials:
        raise ValueError(f"successes={successes} must be between 0 and trials={trials}.")
    if trials == 0:
        return 1.0

    def pmf(x: int) -> float:
        return math.comb(trials, x) * p**x * (1 - p) ** (trials - x)

    seen = pmf(successes)
    return min(1.0, sum(pmf(x) for x in range(trials + 1) if pmf(x) <= seen * (1 + 1e-9)))


# --------------------------------------------------------------------------------------------------------------------
# Votes as ordinal labels
# --------------------------------------------------------------------------------------------------------------------


def ordinal_position(vote) -> int | None:
    """The vote's point on the 7-point scale, oriented to its item: 0 = the item's first response (in sorted order,
    the order :func:`prefkit.data.votes.item_id` uses) much better, 3 = tie, 6 = its second response much better.
    A win without a strength counts as "clearly" (2 steps); "both bad" is not on the scale (None)."""
    if vote.verdict == "tie":
        return TIE_POSITION
    if vote.verdict not in ("a", "b"):
        return None
    first, _ = sorted([vote.response_a, vote.response_b])
    winner_is_first = (vote.verdict == "a") == (vote.response_a == first)
    steps = STRENGTH_STEPS.get(vote.strength, 2)
    return TIE_POSITION - steps if winner_is_first else TIE_POSITION + steps


def winner_category(vote) -> str:
    """Who won, oriented to the item: ``"first"`` / ``"second"`` / ``"tie"`` / ``"both_bad"``."""
    if vote.verdict in ("tie", "both_bad"):
        return vote.verdict
    first, _ = sorted([vote.response_a, vote.response_b])
    return "first" if (vote.verdict == "a") == (vote.response_a == first) else "second"


def is_gold(vote) -> bool:
    return getattr(vote, "gold_answer", None) is not None


def agreement_statistics(votes: Iterable) -> dict[str, Any]:
    """Agreement over the non-gold items labeled by two or more annotators (each annotator's first vote on an item).

    ``alpha_ordinal``: Krippendorff's alpha on the 7-point positions (every annotator of every item);
    ``kappa`` / ``kappa_weighted``: Cohen's kappa (unweighted on who won, linearly weighted on the 7 points)
    between the first two annotators of each item; ``items``: how many items that is. NaN where there is no such
    item (or nothing varies).
    """
    first: dict[str, dict[str, Any]] = defaultdict(dict)
    for vote in votes:
        if not is_gold(vote) and vote.annotator not in first[vote.item_id]:
            first[vote.item_id][vote.annotator] = vote
    shared = [list(by_annotator.values()) for by_annotator in first.values() if len(by_annotator) >= 2]
    result = {"items": len(shared), "alpha_ordinal": math.nan, "kappa": math.nan, "kappa_weighted": math.nan}
    if not shared:
        return result
    units = [[ordinal_position(vote) for vote in unit] for unit in shared]
    if any(sum(value is not None for value in unit) >= 2 for unit in units):
        result["alpha_ordinal"] = krippendorff_alpha(units, metric="ordinal", values=range(SCALE_POINTS))
    winners = [(winner_category(unit[0]), winner_category(unit[1])) for unit in shared]
    result["kappa"] = cohen_kappa([a for a, _ in winners], [b for _, b in winners])
    positions = [(ordinal_position(unit[0]), ordinal_position(unit[1])) for unit in shared]
    positions = [(a, b) for a, b in positions if a is not None and b is not None]
    if positions:
        result["kappa_weighted"] = cohen_kappa(
            [a for a, _ in positions], [b for _, b in positions], categories=range(SCALE_POINTS), weights="linear"
        )
    return result


# --------------------------------------------------------------------------------------------------------------------
# Gold pairs
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoldPair:
    """A pair with a known answer: ``answer`` is ``"a"`` (response ``a`` is better), ``"b"`` or ``"tie"``."""

    prompt: str
    a: str
    b: str
    answer: str
    source_a: str = ""
    source_b: str = ""


def read_gold_pairs(path: str | os.PathLike) -> list[GoldPair]:
    """Gold pairs from a JSONL file, one object per line: ``prompt``, ``a``, ``b``, ``answer`` (``"a"``, ``"b"`` or
    ``"tie"``; case does not matter), optionally ``source_a`` / ``source_b`` (shown after the vote, like a real
    pair's sources). Blank lines are skipped; anything else wrong raises :class:`GoldPairError` naming the line."""
    path = Path(path)
    if not path.is_file():
        raise GoldPairError(f"gold-pair file {path} does not exist; give a JSONL file of prompt/a/b/answer records.")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise GoldPairError(f"{where}: not JSON ({error.msg}); each line must be one JSON object.") from None
        if not isinstance(record, dict):
            raise GoldPairError(f"{where}: expected a JSON object with prompt, a, b, answer.")
        for name in ("prompt", "a", "b"):
            if not isinstance(record.get(name), str) or not record[name].strip():
                raise GoldPairError(f"{where}: '{name}' must be a non-empty string.")
        answer = str(record.get("answer", "")).strip().lower()
        if answer not in GOLD_ANSWERS:
            raise GoldPairError(
                f"{where}: 'answer' is {record.get('answer')!r}; expected one of {', '.join(GOLD_ANSWERS)} "
                "(which response is better, or a tie)."
            )
        if record["a"] == record["b"]:
            raise GoldPairError(f"{where}: 'a' and 'b' are the same text; a gold pair needs two different answers.")
        pairs.append(
            GoldPair(record["prompt"], record["a"], record["b"], answer,
                     str(record.get("source_a", "")), str(record.get("source_b", "")))
        )
    if not pairs:
        raise GoldPairError(f"{path.name} holds no gold pairs.")
    return pairs


# --------------------------------------------------------------------------------------------------------------------
# Per-annotator reliability
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class AnnotatorReliability:
    """One annotator's record. Shares are NaN when there is nothing to compute them on.

    - ``gold_votes`` / ``gold_accuracy``: votes on gold pairs and the share matching the known answer;
    - ``shared_votes`` / ``agreement``: votes on items someone else also labeled, and the share of (this vote,
      another annotator's vote) pairs on those items that name the same winner (or both a tie / both bad);
    - ``kappa_weighted``: linearly weighted Cohen's kappa of those pairs on the 7-point scale;
    - ``left_share`` / ``position_p``: share of decisive votes for the left side, and the two-sided binomial p-value
      against 50/50;
    - ``fast_votes``: votes cast faster than the threshold after the pair was shown (of ``timed_votes`` with a time);
    - ``duplicates``: further votes on an item this annotator had already voted on;
    - ``reliability``: gold accuracy when there are enough gold votes, else agreement when there are enough shared
      votes, else NaN (unknown); ``flags``: the reasons to look at this annotator, and ``dropped`` whether the
      ``drop`` policy leaves them out.
    """

    annotator: str
    votes: int
    gold_votes: int = 0
    gold_accuracy: float = math.nan
    shared_votes: int = 0
    agreement: float = math.nan
    kappa_weighted: float = math.nan
    decisive_votes: int = 0
    left_share: float = math.nan
    position_p: float = math.nan
    timed_votes: int = 0
    fast_votes: int = 0
    duplicates: int = 0
    reliability: float = math.nan
    flags: list[str] = field(default_factory=list)
    dropped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReliabilityThresholds:
    """When an annotator is flagged or dropped (defaults in brackets).

    ``min_gold_accuracy`` [0.7] and ``min_agreement`` [0.5]: below either, the ``drop`` policy leaves the
    annotator out; each is judged only with at least ``min_gold_votes`` [3] gold votes / ``min_shared_votes`` [5]
    shared votes. ``position_p`` [0.01]: flag position bias below this binomial p-value. ``fast_vote_seconds`` [3]
    and ``fast_share`` [0.25]: flag when at least this share of timed votes came faster than that.
    """

    min_gold_accuracy: float = 0.7
    min_agreement: float = 0.5
    min_gold_votes: int = 3
    min_shared_votes: int = 5
    position_p: float = 0.01
    fast_vote_seconds: float = 3.0
    fast_share: float = 0.25

    def check(self) -> None:
        problems = []
        for name in ("min_gold_accuracy", "min_agreement", "fast_share"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name}={getattr(self, name)} must be in [0, 1]")
        if not 0 < self.position_p < 1:
            problems.append(f"position_p={self.position_p} must be in (0, 1)")
        if self.fast_vote_seconds < 0:
            problems.append(f"fast_vote_seconds={self.fast_vote_seconds} must be >= 0")
        if self.min_gold_votes < 1 or self.min_shared_votes < 1:
            problems.append("min_gold_votes and min_shared_votes must be >= 1")
        if problems:
            raise ValueError("Invalid reliability thresholds: " + "; ".join(problems) + ".")


def _screen_side(vote) -> str | None:
    if vote.verdict not in ("a", "b"):
        return None
    return "left" if vote.verdict == vote.shown_left else "right"


def annotator_reliability(
    votes: Iterable, thresholds: ReliabilityThresholds | None = None
) -> list[AnnotatorReliability]:
    """One :class:`AnnotatorReliability` row per annotator, most votes first (see the class for each number)."""
    thresholds = thresholds or ReliabilityThresholds()
    thresholds.check()
    votes = list(votes)
    by_annotator: dict[str, list] = defaultdict(list)
    for vote in votes:
        by_annotator[vote.annotator].append(vote)
    # Each annotator's first vote per non-gold item: what agreement compares.
    first_on_item: dict[str, dict[str, Any]] = defaultdict(dict)
    for vote in votes:
        if not is_gold(vote):
            first_on_item[vote.item_id].setdefault(vote.annotator, vote)

    rows = []
    for annotator, own in by_annotator.items():
        row = AnnotatorReliability(annotator=annotator, votes=len(own))
        gold = [vote for vote in own if is_gold(vote)]
        row.gold_votes = len(gold)
        if gold:
            row.gold_accuracy = sum(vote.verdict == vote.gold_answer for vote in gold) / len(gold)
        same, pairs_total, positions = 0, 0, []
        for item, voters in first_on_item.items():
            mine = voters.get(annotator)
            if mine is None or len(voters) < 2:
                continue
            row.shared_votes += 1
            for other_annotator, other in voters.items():
                if other_annotator == annotator:
                    continue
                pairs_total += 1
                same += winner_category(mine) == winner_category(other)
                a, b = ordinal_position(mine), ordinal_position(other)
                if a is not None and b is not None:
                    positions.append((a, b))
        if pairs_total:
            row.agreement = same / pairs_total
        if positions:
            row.kappa_weighted = cohen_kappa(
                [a for a, _ in positions], [b for _, b in positions], categories=range(SCALE_POINTS), weights="linear"
            )
        sides = [side for side in map(_screen_side, own) if side is not None]
        row.decisive_votes = len(sides)
        if sides:
            lefts = sides.count("left")
            row.left_share = lefts / len(sides)
            row.position_p = binomial_two_sided_p(lefts, len(sides))
        timed = [vote.seconds_to_vote for vote in own if getattr(vote, "seconds_to_vote", None) is not None]
        row.timed_votes = len(timed)
        row.fast_votes = sum(seconds < thresholds.fast_vote_seconds for seconds in timed)
        seen_items: set[str] = set()
        for vote in own:
            if vote.item_id in seen_items:
                row.duplicates += 1
            seen_items.add(vote.item_id)

        if row.gold_votes >= thresholds.min_gold_votes:
            row.reliability = row.gold_accuracy
        elif row.shared_votes >= thresholds.min_shared_votes and not math.isnan(row.agreement):
            row.reliability = row.agreement
        if row.gold_votes >= thresholds.min_gold_votes and row.gold_accuracy < thresholds.min_gold_accuracy:
            row.flags.append(f"gold accuracy {row.gold_accuracy:.0%} < {thresholds.min_gold_accuracy:.0%}")
            row.dropped = True
        if row.shared_votes >= thresholds.min_shared_votes and row.agreement < thresholds.min_agreement:
            row.flags.append(f"agreement {row.agreement:.0%} < {thresholds.min_agreement:.0%}")
            row.dropped = True
        if row.decisive_votes and row.position_p < thresholds.position_p:
            side = "left" if row.left_share > 0.5 else "right"
            row.flags.append(f"position bias: {side} in {max(row.left_share, 1 - row.left_share):.0%} of "
                             f"{row.decisive_votes} decisive votes (p={row.position_p:.2g})")
        if row.timed_votes and row.fast_votes / row.timed_votes >= thresholds.fast_share and row.fast_votes:
            row.flags.append(f"{row.fast_votes} of {row.timed_votes} votes under {thresholds.fast_vote_seconds:g} s")
        if row.duplicates:
            row.flags.append(f"{row.duplicates} duplicate vote(s) on the same pair")
        rows.append(row)
    rows.sort(key=lambda row: (-row.votes, row.annotator))
    return rows


def reliability_report(votes: Iterable, thresholds: ReliabilityThresholds | None = None):
    """The per-annotator report as a ``pandas.DataFrame``, one row per annotator (shares rounded for display)."""
    import pandas as pd

    columns = [
        "annotator", "votes", "gold votes", "gold accuracy", "shared votes", "agreement", "weighted kappa",
        "left share", "position p", "fast votes", "duplicates", "reliability", "dropped by 'drop'", "flags",
    ]
    records = []
    for row in annotator_reliability(votes, thresholds):
        records.append(
            {
                "annotator": row.annotator, "votes": row.votes, "gold votes": row.gold_votes,
                "gold accuracy": _round(row.gold_accuracy), "shared votes": row.shared_votes,
                "agreement": _round(row.agreement), "weighted kappa": _round(row.kappa_weighted),
                "left share": _round(row.left_share), "position p": _round(row.position_p, 3),
                "fast votes": f"{row.fast_votes}/{row.timed_votes}", "duplicates": row.duplicates,
                "reliability": _round(row.reliability), "dropped by 'drop'": "yes" if row.dropped else "no",
                "flags": "; ".join(row.flags),
            }
        )
    return pd.DataFrame(records, columns=columns)


def _round(value: float, digits: int = 2) -> float | None:
    return None if math.isnan(value) else round(value, digits)


# --------------------------------------------------------------------------------------------------------------------
# Export policy
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class PolicyResult:
    """What :func:`apply_reliability_policy` kept: the votes, a weight per kept vote id (``weight`` policy only),
    the annotators left out, and a sentence for the dataset card."""

    votes: list
    weights: dict[str, float]
    dropped_annotators: list[str]
    description: str


def apply_reliability_policy(
    votes: Iterable, policy: str = "keep", thresholds: ReliabilityThresholds | None = None
) -> PolicyResult:
    """Which votes (and with what weight) go into training data.

    Gold votes are never training data and are always left out. Then ``policy``:

    - ``"keep"``: every other vote;
    - ``"weight"``: every other vote, weighted by its annotator's ``reliability`` (1.0 when unknown);
    - ``"drop"``: only the votes of annotators not ``dropped`` (gold accuracy or agreement below the thresholds,
      judged only once they have enough gold / shared votes; unknown reliability is kept).
    """
    if policy not in RELIABILITY_POLICIES:
        raise ValueError(
            f"reliability policy must be one of {', '.join(RELIABILITY_POLICIES)}, got {policy!r}: 'keep' exports "
            "every vote, 'weight' adds each annotator's reliability as a weight, 'drop' leaves out unreliable "
            "annotators."
        )
    thresholds = thresholds or ReliabilityThresholds()
    votes = list(votes)
    rows = {row.annotator: row for row in annotator_reliability(votes, thresholds)}
    gold_count = sum(is_gold(vote) for vote in votes)
    labeled = [vote for vote in votes if not is_gold(vote)]
    gold_note = f"{gold_count} votes on gold pairs (known answers, used to check annotators) are not included. "
    if policy == "keep":
        return PolicyResult(labeled, {}, [], gold_note + "Reliability policy: keep (every annotator's votes, unweighted).")
    if policy == "weight":
        weights = {}
        for vote in labeled:
            reliability = rows[vote.annotator].reliability
            weights[vote.vote_id] = 1.0 if math.isnan(reliability) else float(reliability)
        return PolicyResult(
            labeled, weights, [],
            gold_note + "Reliability policy: weight (each row's `weight` is its annotator's gold accuracy, else "
            "their agreement with other annotators, else 1.0 when neither is known yet).",
        )
    dropped = sorted(annotator for annotator, row in rows.items() if row.dropped)
    kept = [vote for vote in labeled if vote.annotator not in dropped]
    return PolicyResult(
        kept, {}, dropped,
        gold_note + f"Reliability policy: drop ({len(dropped)} of {len(rows)} annotators left out, "
        f"{len(labeled) - len(kept)} votes: gold accuracy below {thresholds.min_gold_accuracy:.0%} after "
        f"{thresholds.min_gold_votes}+ gold votes, or agreement with others below {thresholds.min_agreement:.0%} after "
        f"{thresholds.min_shared_votes}+ shared votes).",
    )
