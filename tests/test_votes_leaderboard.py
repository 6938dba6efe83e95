"""Bradley-Terry leaderboard over compared models, with bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefkit.data.leaderboard import ELO_SCALE, Battle, battles_from_votes, fit_bradley_terry, leaderboard
from prefkit.data.votes import Vote


def battles(a, b, wins, losses, ties=0):
    return [Battle(a, b, 1.0)] * wins + [Battle(a, b, 0.0)] * losses + [Battle(a, b, 0.5)] * ties


def test_two_models_get_the_log_odds_of_their_win_ratio():
    strengths = fit_bradley_terry(battles("big", "small", 30, 10), regularization=0.0)

    assert strengths["big"] - strengths["small"] == pytest.approx(math.log(3), abs=1e-8)


def test_a_tie_counts_as_half_a_win_for_each_side():
    strengths = fit_bradley_terry(battles("big", "small", 10, 0, ties=10), regularization=0.0)

    assert strengths["big"] - strengths["small"] == pytest.approx(math.log(15 / 5), abs=1e-8)


def test_at_the_maximum_each_models_expected_wins_equal_its_observed_wins():
    rng = np.random.default_rng(0)
    truth = {"a": 1.0, "b": 0.2, "c": -0.4, "d": -0.8}
    names = list(truth)
    data = []
    for _ in range(600):
        i, j = rng.choice(4, size=2, replace=False)
        p = 1 / (1 + math.exp(-(truth[names[i]] - truth[names[j]])))
        data.append(Battle(names[i], names[j], float(rng.random() < p)))

    fitted = fit_bradley_terry(data, regularization=0.0)

    for model in names:
        observed = sum(b.score if b.model_a == model else 1 - b.score for b in data if model in (b.model_a, b.model_b))
        expected = 0.0
        for b in data:
            if model in (b.model_a, b.model_b):
                other = b.model_b if b.model_a == model else b.model_a
                expected += 1 / (1 + math.exp(-(fitted[model] - fitted[other])))
        assert expected == pytest.approx(observed, abs=1e-6)
    assert sorted(names, key=lambda m: -fitted[m]) == names  # recovers the true order


def test_an_undefeated_model_gets_a_finite_rating_with_the_default_prior():
    rows = leaderboard(battles("champion", "rookie", 12, 0), bootstrap_rounds=20)

    assert rows[0].model == "champion"
    assert math.isfinite(rows[0].rating) and rows[0].rating > rows[1].rating


def test_ratings_are_on_the_elo_scale_centered_on_1000():
    rows = leaderboard(battles("big", "small", 30, 10), bootstrap_rounds=10, regularization=0.0)
    by_model = {row.model: row for row in rows}

    assert by_model["big"].rating - by_model["small"].rating == pytest.approx(ELO_SCALE * math.log(3), abs=1e-5)
    assert (by_model["big"].rating + by_model["small"].rating) / 2 == pytest.approx(1000.0)


def test_bootstrap_interval_brackets_the_rating_and_shrinks_with_more_battles():
    few = {row.model: row for row in leaderboard(battles("big", "small", 6, 2), bootstrap_rounds=200, seed=1)}
    many = {row.model: row for row in leaderboard(battles("big", "small", 60, 20), bootstrap_rounds=200, seed=1)}

    for rows in (few, many):
        assert rows["big"].ci_low <= rows["big"].rating <= rows["big"].ci_high
    assert (many["big"].ci_high - many["big"].ci_low) < (few["big"].ci_high - few["big"].ci_low)


def test_win_loss_tie_counts_per_model():
    rows = {row.model: row for row in leaderboard(battles("x", "y", 3, 2, ties=1), bootstrap_rounds=5)}

    assert (rows["x"].wins, rows["x"].losses, rows["x"].ties, rows["x"].battles) == (3, 2, 1, 6)
    assert (rows["y"].wins, rows["y"].losses, rows["y"].ties) == (2, 3, 1)


def test_votes_between_samples_of_one_model_are_not_battles_and_both_bad_is_a_tie():
    def vote(source_a, source_b, verdict):
        return Vote.new(prompt="p", response_a="x", response_b="y", verdict=verdict, source_a=source_a, source_b=source_b)

    result = battles_from_votes([vote("m", "m", "a"), vote("m", "n", "a"), vote("m", "n", "both_bad"), vote("n", "m", "b")])

    assert result == [Battle("m", "n", 1.0), Battle("m", "n", 0.5), Battle("n", "m", 0.0)]


def test_no_battles_give_an_empty_leaderboard():
    assert leaderboard([]) == []
