"""Active pair selection: the closest reward margin among N samples, the least certain model pair, and how much the
last votes narrowed the leaderboard's intervals."""

from __future__ import annotations

import math
import random
import threading
from types import SimpleNamespace

import pytest

from prefkit.app import logic
from prefkit.app.selection import interval_narrowing, smallest_margin_pair, widest_interval_pair
from prefkit.data.leaderboard import Battle, LeaderboardRow


def test_the_pair_with_the_smallest_reward_margin_is_picked():
    assert smallest_margin_pair([0.1, 0.9, 0.5, 0.55, -2.0]) == (2, 3)
    assert smallest_margin_pair([3.0, 1.0]) == (0, 1)


def test_margin_ties_go_to_the_first_pair_in_sampling_order():
    assert smallest_margin_pair([0.0, 1.0, 2.0, 3.0]) == (0, 1)


def test_two_identical_answers_are_never_the_closest_pair():
    assert smallest_margin_pair([1.0, 1.0, 1.3, 5.0], ["same", "same", "other", "far"]) == (0, 2)
    assert smallest_margin_pair([1.0, 1.0], ["same", "same"]) == (0, 1)  # nothing else to show


def test_margin_selection_needs_two_candidates():
    with pytest.raises(ValueError, match="at least two candidates"):
        smallest_margin_pair([1.0])


class FakeModels:
    """What make_pair needs of AppModels, with a sampler that returns fixed rewards."""

    def __init__(self):
        self.policy = SimpleNamespace(name="tiny", model=None, tokenizer=None)
        self.compare = None
        self.reward = None
        self.generate_lock = threading.Lock()


def fake_best_of_n(rewards):
    def sample(model, tokenizer, reward, prompts, n, **kwargs):
        candidates = [SimpleNamespace(text=f"answer {k}", reward=rewards[k]) for k in range(n)]
        return [SimpleNamespace(candidates=candidates, generation={"n": n}, interrupted_by=None)]

    return sample


def test_make_pair_with_margin_selection_shows_the_two_samples_the_reward_model_cannot_tell_apart(monkeypatch):
    rewards = [2.0, -1.0, 0.40, 3.0, 0.42, 1.1]
    monkeypatch.setattr(logic, "best_of_n", fake_best_of_n(rewards))

    pair = logic.make_pair(
        FakeModels(), "Tell me about tea.", logic.MODE_TWO_SAMPLES, n=6, temperature=1.0, top_p=1.0,
        max_new_tokens=8, rng=random.Random(0), selection="margin",
    )

    assert {pair.response_a, pair.response_b} == {"answer 2", "answer 4"}
    assert (pair.reward_a, pair.reward_b) == (0.40, 0.42)
    assert pair.generation["selection"] == "margin" and pair.generation["candidates"] == 6


def test_make_pair_without_margin_selection_samples_just_two(monkeypatch):
    monkeypatch.setattr(logic, "best_of_n", fake_best_of_n([2.0, -1.0, 0.40, 0.41]))

    pair = logic.make_pair(
        FakeModels(), "Tell me about tea.", logic.MODE_TWO_SAMPLES, n=4, temperature=1.0, top_p=1.0,
        max_new_tokens=8, rng=random.Random(0),
    )

    assert (pair.response_a, pair.response_b) == ("answer 0", "answer 1") and "selection" not in pair.generation


def row(model, low, high):
    return LeaderboardRow(model, (low + high) / 2, low, high, battles=10, wins=5, losses=5, ties=0)


def test_uncertainty_picks_the_model_pair_with_the_widest_intervals():
    rows = [row("policy", 950, 1050), row("policy best-of-4", 900, 1100), row("other", 700, 1300)]
    candidates = {"best vs sample": ("policy best-of-4", "policy"), "two models": ("policy", "other")}

    assert widest_interval_pair(rows, candidates) == "two models"  # 100 + 600 > 200 + 100


def test_uncertainty_shows_a_source_without_a_rating_first():
    rows = [row("policy", 700, 1300), row("policy best-of-4", 600, 1400)]
    candidates = {"best vs sample": ("policy best-of-4", "policy"), "two models": ("policy", "new-model")}

    assert widest_interval_pair(rows, candidates) == "two models"


def test_more_votes_narrow_the_intervals_and_the_table_says_by_how_much():
    battles = [Battle("x", "y", float(k % 3 != 0)) for k in range(60)]

    (x, y) = interval_narrowing(battles, last=40, bootstrap_rounds=100)

    assert (x.model, y.model) == ("x", "y") and x.votes == 40
    assert x.width_now < x.width_before and x.per_vote > 0
    assert x.per_vote == pytest.approx((x.width_before - x.width_now) / 40)


def test_a_source_first_rated_in_the_last_votes_was_unrated_before():
    battles = [Battle("x", "y", 1.0), Battle("y", "x", 1.0)] * 10 + [Battle("x", "z", 1.0), Battle("z", "x", 0.0)]

    narrowing = {n.model: n for n in interval_narrowing(battles, last=2, bootstrap_rounds=20)}

    assert math.isinf(narrowing["z"].width_before) and not math.isinf(narrowing["z"].width_now)
    assert "y" not in narrowing  # not in the last votes


def test_trust_summary_lists_interval_widths_per_source():
    from prefkit.data.votes import Vote

    votes = [
        Vote.new(prompt="p", response_a=f"a{k}", response_b=f"b{k}", verdict="ab"[k % 2], source_a="m", source_b="n")
        for k in range(30)
    ]

    result = logic.trust_summary(votes, narrowing_last=10, bootstrap_rounds=20)

    table = result["narrowing"]
    assert list(table["model"]) == ["m", "n"] and list(table["votes"]) == [10, 10]
    assert list(result["annotators"]["annotator"]) == ["anonymous"]
