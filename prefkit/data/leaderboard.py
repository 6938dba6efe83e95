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

**Style control** (:func:`fit_bradley_terry_style`, ``leaderboard(..., style_control=True)``), as Chatbot Arena does
it: people tend to prefer longer, more formatted answers whatever their substance, and a model that writes long
answers collects those wins. Each battle carries style covariates, the normalised differences
:math:`z = (f_A - f_B) / (f_A + f_B)` of the two answers' length (characters) and markdown element count (headers,
list items, bold spans), each scaled to unit standard deviation over the battles, and the fit becomes
:math:`P(A \succ B) = \sigma(s_A - s_B + \gamma^\top z)`. The style coefficients :math:`\gamma` absorb what
length and formatting explain, so :math:`s` is a model's strength *at equal style*. Votes on gold pairs (known
answers, used to check annotators) are not battles.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

ELO_SCALE = 400 / math.log(10)
ELO_CENTER = 1000.0
STYLE_FEATURES = ("length", "markdown")
"""The style covariates: answer length in characters, and markdown elements (headers + list items + bold spans)."""


@dataclass(frozen=True)
class Battle:
    """Model ``model_a`` met ``model_b``; ``score`` is 1 when A won, 0 when B won, 0.5 for a tie. ``style`` holds
    the normalised style differences of :data:`STYLE_FEATURES` (:func:`style_difference`), empty when unknown; two
    battles with the same models and outcome compare equal whatever their style."""

    model_a: str
    model_b: str
    score: float
    style: tuple[float, ...] = field(default=(), compare=False)


_CODE_BLOCK = re.compile(r"```.*?```", re.DOTALL)
_HEADER = re.compile(r"^\s{0,3}#{1,6}\s+\S", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\S", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+?\*\*|__[^_\n]+?__")


def markdown_elements(text: str) -> int:
    """Markdown headers + list items + bold spans in ``text`` (code blocks are not counted)."""
    text = _CODE_BLOCK.sub("", text)
    return len(_HEADER.findall(text)) + len(_LIST_ITEM.findall(text)) + len(_BOLD.findall(text))


def style_features(text: str) -> tuple[float, float]:
    """``(length in characters, markdown elements)`` of an answer, in the order of :data:`STYLE_FEATURES`."""
    return float(len(text)), float(markdown_elements(text))


def style_difference(features_a: Sequence[float], features_b: Sequence[float]) -> tuple[float, ...]:
    r"""Chatbot Arena's normalised difference per feature, :math:`(f_A - f_B) / (f_A + f_B)` (0 when both are 0):
    in [-1, 1], and relative, so 500 against 520 characters is a small difference and 20 against 40 a large one."""
    return tuple(0.0 if a + b == 0 else (a - b) / (a + b) for a, b in zip(features_a, features_b))


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
        if getattr(vote, "gold_answer", None) is not None:
            continue
        score = {"a": 1.0, "b": 0.0}.get(vote.verdict, 0.5)
        style = style_difference(style_features(vote.response_a), style_features(vote.response_b))
        battles.append(Battle(vote.source_a, vote.source_b, score, style))
    return battles


def model_names(source: str) -> list[str]:
    """The names a source goes by in text: ``"org/Model-1B best-of-4"`` -> ``["org/Model-1B", "Model-1B"]``."""
    base = re.sub(r"\s+best-of-\d+$", "", source.strip())
    names = [base, base.rsplit("/", 1)[-1]]
    return [name for name in dict.fromkeys(names) if len(name) >= 3]


def names_its_model(vote) -> bool:
    """Whether an answer names the model that wrote it (its source's name appears in its text, as a word, in any
    case): such a vote may rank the name, not the answer, so the leaderboard flags it."""
    for text, source in ((vote.response_a, vote.source_a), (vote.response_b, vote.source_b)):
        for name in model_names(source or ""):
            if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.IGNORECASE):
                return True
    return False


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


@dataclass
class StyleControlledFit:
    """Strengths at equal style, the style coefficients (log-odds per standard deviation of each normalised
    difference) and those standard deviations."""

    strengths: dict[str, float]
    coefficients: dict[str, float] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)


def fit_bradley_terry_style(
    battles: Sequence[Battle],
    regularization: float = 0.5,
    features: Sequence[str] = STYLE_FEATURES,
    max_iterations: int = 100,
    tolerance: float = 1e-10,
) -> StyleControlledFit:
    r"""Bradley-Terry with style covariates, by Newton's method on the penalised log-likelihood.

    For battle k with normalised style differences :math:`z_k` (``battle.style``, each feature divided by its
    standard deviation over the battles; a battle without style counts as equal style):

    .. math:: \max_{s,\gamma} \sum_k \big[y_k \log\sigma(\eta_k) + (1 - y_k) \log\sigma(-\eta_k)\big]
              - \tfrac{\lambda}{2}(\lVert s\rVert^2 + \lVert\gamma\rVert^2),
              \qquad \eta_k = s_{a_k} - s_{b_k} + \gamma^\top z_k

    Unlike Chatbot Arena the differences are scaled but not centred, so two answers of equal style contribute
    nothing whatever the other battles look like.
    """
    models = sorted({b.model_a for b in battles} | {b.model_b for b in battles})
    if not models:
        return StyleControlledFit({}, {name: 0.0 for name in features}, {name: 1.0 for name in features})
    index = {model: k for k, model in enumerate(models)}
    size, width = len(models), len(features)
    style = np.zeros((len(battles), width))
    for row, battle in enumerate(battles):
        if battle.style:
            if len(battle.style) != width:
                raise ValueError(
                    f"battle {row} has {len(battle.style)} style values; expected {width} ({', '.join(features)})."
                )
            style[row] = battle.style
    scales = style.std(axis=0)
    scales[scales == 0] = 1.0  # a feature that never varies explains nothing; its coefficient stays 0
    design = np.zeros((len(battles), size + width))
    rows = np.arange(len(battles))
    design[rows, [index[b.model_a] for b in battles]] = 1.0
    design[rows, [index[b.model_b] for b in battles]] -= 1.0
    design[:, size:] = style / scales
    y = np.array([b.score for b in battles], dtype=np.float64)
    theta = np.zeros(size + width)
    for _ in range(max_iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (y - p) - regularization * theta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + regularization * np.eye(size + width)
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        theta = theta + step
        theta[:size] -= theta[:size].mean()
        if np.max(np.abs(step)) < tolerance:
            break
    return StyleControlledFit(
        strengths={model: float(theta[index[model]]) for model in models},
        coefficients={name: float(theta[size + k]) for k, name in enumerate(features)},
        scales={name: float(scales[k]) for k, name in enumerate(features)},
    )


def to_elo(strength: float) -> float:
    return ELO_CENTER + ELO_SCALE * strength


def leaderboard(
    battles: Sequence[Battle],
    bootstrap_rounds: int = 200,
    confidence: float = 0.95,
    regularization: float = 0.5,
    seed: int = 0,
    style_control: bool = False,
) -> list[LeaderboardRow]:
    """Models ranked by Bradley-Terry rating (Elo scale) with bootstrap confidence intervals, best first.

    ``style_control``: ratings at equal answer length and formatting (:func:`fit_bradley_terry_style`), refitted
    with the style coefficients in every bootstrap round."""
    battles = list(battles)

    def fit(sample: Sequence[Battle]) -> dict[str, float]:
        if style_control:
            return fit_bradley_terry_style(sample, regularization).strengths
        return fit_bradley_terry(sample, regularization)

    point = fit(battles)
    if not point:
        return []
    samples: dict[str, list[float]] = {model: [] for model in point}
    rng = np.random.default_rng(seed)
    for _ in range(bootstrap_rounds):
        resampled = [battles[k] for k in rng.integers(0, len(battles), len(battles))]
        fitted = fit(resampled)
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
