r"""A leaderboard of the models people compared: Bradley-Terry ratings with bootstrap intervals, as Chatbot Arena does.

Each model :math:`i` gets a strength :math:`s_i` and the chance that it beats model :math:`j` is

.. math:: P(i \succ j) = \sigma(s_i - s_j)

(the same Bradley-Terry model a reward model is trained with, here over models instead of answers). The strengths
maximise the log-likelihood of the observed battles, a tie counting as half a win for each side, plus a Gaussian
prior :math:`-\tfrac{\lambda}{2}\lVert s\rVert^2` (:math:`\lambda = 0.5`: a standard deviation of
:math:`\sqrt 2` nats, about 600 Elo points) that keeps an undefeated model's rating finite and stops a handful of votes
from producing extreme ratings; with hundreds of battles per model its pull is negligible. Ratings are
shown on the Elo scale, :math:`1000 + 400\, s_i / \ln 10` (a 400-point gap means 10:1 odds), centred on 1000.
The 95% interval of each rating comes from refitting on battles resampled with replacement.

A battle needs two different models: votes between two samples of the same model say nothing about models and are
left out. "Both bad" counts as a tie (as in Chatbot Arena).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

ELO_SCALE = 400 / math.log(10)
ELO_CENTER = 1000.0


@dataclass(frozen=True)
class Battle:
    """Model ``model_a`` met ``model_b``; ``score`` is 1 when A won, 0 when B won, 0.5 for a tie."""

    model_a: str
    model_b: str
    score: float


@dataclass
class LeaderboardRow:
    model: str
    rating: float
    ci_low: float
    ci_high: float
    battles: int
    wins: int
    losses: int
    ties: int

    def to_dict(self):
        return asdict(self)


def battles_from_votes(votes: Iterable) -> list[Battle]:
    """Battles from :class:`prefkit.data.votes.Vote` records (same-model pairs left out)."""
    battles = []
    for vote in votes:
        if not vote.source_a or not vote.source_b or vote.source_a == vote.source_b:
            continue
        score = {"a": 1.0, "b": 0.0}.get(vote.verdict, 0.5)
        battles.append(Battle(vote.source_a, vote.source_b, score))
    return battles


def fit_bradley_terry(
    battles: Sequence[Battle], regularization: float = 0.5, max_iterations: int = 100, tolerance: float = 1e-10
) -> dict[str, float]:
    r"""Maximum a posteriori Bradley-Terry strengths :math:`s` (natural-log odds scale, mean 0) by Newton's method.

    Maximises :math:`\sum_k w_k [y_k \log\sigma(s_{a_k} - s_{b_k}) + (1 - y_k)\log\sigma(s_{b_k} - s_{a_k})]
    - \tfrac{\lambda}{2}\lVert s\rVert^2` with :math:`\lambda` = ``regularization`` (0 gives the plain maximum
    likelihood, which is infinite for an undefeated model).
    """
    models = sorted({b.model_a for b in battles} | {b.model_b for b in battles})
    if not models:
        return {}
    index = {model: k for k, model in enumerate(models)}
    # Aggregate identical (a, b) pairs: wins of a over b (ties count half) and games.
    wins: dict[tuple[int, int], float] = {}
    games: dict[tuple[int, int], float] = {}
    for battle in battles:
        key = (index[battle.model_a], index[battle.model_b])
        wins[key] = wins.get(key, 0.0) + battle.score
        games[key] = games.get(key, 0.0) + 1.0
    pairs = np.array(list(games.keys()), dtype=np.int64).reshape(-1, 2)
    y = np.array([wins[key] for key in games], dtype=np.float64)
    n = np.array(list(games.values()), dtype=np.float64)
    size = len(models)
    design = np.zeros((len(pairs), size))
    design[np.arange(len(pairs)), pairs[:, 0]] = 1.0
    design[np.arange(len(pairs)), pairs[:, 1]] -= 1.0

    strengths = np.zeros(size)
    for _ in range(max_iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ strengths)))
        gradient = design.T @ (y - n * p) - regularization * strengths
        hessian = design.T @ (design * (n * p * (1 - p))[:, None]) + regularization * np.eye(size)
        # The likelihood is unchanged by adding a constant to every strength: least squares picks the minimal step.
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        strengths = strengths + step
        strengths -= strengths.mean()
        if np.max(np.abs(step)) < tolerance:
            break
    return {model: float(strengths[index[model]]) for model in models}


def to_elo(strength: float) -> float:
    return ELO_CENTER + ELO_SCALE * strength


def leaderboard(
    battles: Sequence[Battle],
    bootstrap_rounds: int = 200,
    confidence: float = 0.95,
    regularization: float = 0.5,
    seed: int = 0,
) -> list[LeaderboardRow]:
    """Models ranked by Bradley-Terry rating (Elo scale) with bootstrap confidence intervals, best first."""
    battles = list(battles)
    point = fit_bradley_terry(battles, regularization)
    if not point:
        return []
    samples: dict[str, list[float]] = {model: [] for model in point}
    rng = np.random.default_rng(seed)
    for _ in range(bootstrap_rounds):
        resampled = [battles[k] for k in rng.integers(0, len(battles), len(battles))]
        fitted = fit_bradley_terry(resampled, regularization)
        for model in point:
            if model in fitted:  # a model absent from a resample has no rating in it
                samples[model].append(fitted[model])
    tail = (1 - confidence) / 2 * 100
    rows = []
    for model, strength in point.items():
        record = [b for b in battles if model in (b.model_a, b.model_b)]
        won = sum(1 for b in record if (b.score == 1.0 and b.model_a == model) or (b.score == 0.0 and b.model_b == model))
        tied = sum(1 for b in record if b.score == 0.5)
        if samples[model]:
            low, high = np.percentile(samples[model], [tail, 100 - tail])
        else:
            low = high = strength
        rows.append(
            LeaderboardRow(
                model=model,
                rating=to_elo(strength),
                ci_low=to_elo(float(low)),
                ci_high=to_elo(float(high)),
                battles=len(record),
                wins=won,
                losses=len(record) - won - tied,
                ties=tied,
            )
        )
    rows.sort(key=lambda row: -row.rating)
    return rows
