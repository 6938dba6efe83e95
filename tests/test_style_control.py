"""Style control in the leaderboard: length and markdown covariates in the Bradley-Terry fit, and answers that name
their model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefkit.data.leaderboard import (
    Battle,
    battles_from_votes,
    fit_bradley_terry,
    fit_bradley_terry_style,
    leaderboard,
    markdown_elements,
    model_names,
    names_its_model,
    style_difference,
    style_features,
)
from prefkit.data.votes import Vote

TRUE_STRENGTH = {"concise": 0.6, "middle": 0.0, "verbose": -0.6}
LENGTHS = {"concise": (100, 400), "middle": (150, 700), "verbose": (400, 1200)}
LENGTH_BIAS = 4.0  # log-odds per unit of (len_A - len_B) / (len_A + len_B)


def simulated_votes(count=3000, seed=0):
    """People who prefer the better model, but also, strongly, the longer answer."""
    rng = np.random.default_rng(seed)
    names = list(TRUE_STRENGTH)
    votes = []
    for _ in range(count):
        i, j = rng.choice(3, size=2, replace=False)
        a, b = names[i], names[j]
        length_a, length_b = (int(rng.integers(*LENGTHS[name])) for name in (a, b))
        z = (length_a - length_b) / (length_a + length_b)
        p_a = 1 / (1 + math.exp(-(TRUE_STRENGTH[a] - TRUE_STRENGTH[b] + LENGTH_BIAS * z)))
        verdict = "a" if rng.random() < p_a else "b"
        votes.append(
            Vote.new(prompt="p", response_a="x" * length_a, response_b="y" * length_b, verdict=verdict,
                     source_a=a, source_b=b)
        )
    return votes


@pytest.fixture(scope="module")
def planted():
    return battles_from_votes(simulated_votes())


def test_the_uncontrolled_ranking_is_fooled_by_a_planted_length_bias(planted):
    raw = fit_bradley_terry(planted)

    assert max(raw, key=raw.get) == "verbose"
    assert raw["verbose"] > raw["concise"]


def test_style_control_recovers_the_true_ranking_and_strengths(planted):
    fit = fit_bradley_terry_style(planted)

    assert sorted(fit.strengths, key=lambda m: -fit.strengths[m]) == ["concise", "middle", "verbose"]
    for model, truth in TRUE_STRENGTH.items():
        assert fit.strengths[model] == pytest.approx(truth, abs=0.15)
    # the coefficient is per standard deviation of the normalised difference: per unit it is the planted bias
    assert fit.coefficients["length"] / fit.scales["length"] == pytest.approx(LENGTH_BIAS, rel=0.15)
    assert fit.coefficients["markdown"] == 0.0  # no answer has markdown: nothing to explain


def test_the_style_controlled_leaderboard_ranks_by_substance_with_intervals(planted):
    raw = [row.model for row in leaderboard(planted, bootstrap_rounds=10)]
    controlled = leaderboard(planted, bootstrap_rounds=10, style_control=True)

    assert raw[0] == "verbose"
    assert [row.model for row in controlled] == ["concise", "middle", "verbose"]
    assert all(row.ci_low <= row.rating <= row.ci_high for row in controlled)


def test_without_a_style_effect_both_fits_agree():
    rng = np.random.default_rng(1)
    battles = []
    for _ in range(1500):
        score = float(rng.random() < 1 / (1 + math.exp(-0.8)))
        z = rng.uniform(-0.5, 0.5)
        battles.append(Battle("strong", "weak", score, (z, 0.0)))

    raw = fit_bradley_terry(battles)
    fit = fit_bradley_terry_style(battles)

    assert fit.strengths["strong"] - fit.strengths["weak"] == pytest.approx(raw["strong"] - raw["weak"], abs=0.05)
    assert abs(fit.coefficients["length"]) < 0.15


def test_style_difference_is_relative_and_zero_when_both_are_zero():
    assert style_difference((500, 0), (520, 0)) == pytest.approx((-20 / 1020, 0.0))
    assert style_difference((20, 3), (40, 1)) == pytest.approx((-1 / 3, 0.5))


def test_markdown_elements_count_headers_list_items_and_bold_but_not_code():
    text = "# Title\n\nSome **bold** and __more__.\n\n- one\n- two\n1. three\n```\n# not a header\n- not a list\n```\n"

    assert markdown_elements(text) == 1 + 2 + 3
    assert style_features(text) == (float(len(text)), 6.0)
    assert markdown_elements("plain text, 2 * 3 = 6") == 0


def test_a_battle_with_the_wrong_number_of_style_values_is_refused():
    with pytest.raises(ValueError, match="battle 0 has 1 style values; expected 2"):
        fit_bradley_terry_style([Battle("a", "b", 1.0, (0.5,))])


def test_gold_votes_are_not_battles():
    gold = Vote.new(prompt="p", response_a="x", response_b="y", verdict="a", source_a="m", source_b="n", gold_answer="a")

    assert battles_from_votes([gold]) == []


# ------------------------------------------------------------------------------------------------- naming the model


def test_an_answer_that_names_its_own_model_is_flagged():
    named = Vote.new(prompt="Who are you?", response_a="I am tiny-other, a language model.", response_b="Hello.",
                     verdict="a", source_a="org/tiny-other", source_b="tiny")
    best_of = Vote.new(prompt="p", response_a="As TINY I think so.", response_b="no", verdict="a",
                       source_a="tiny best-of-4", source_b="tiny-other")

    assert names_its_model(named) and names_its_model(best_of)


def test_an_answer_that_does_not_name_its_model_is_not_flagged():
    # "tiny" inside "tiny-other" or as part of another word is not the model "tiny"
    plain = Vote.new(prompt="p", response_a="A tinyish cat and tiny-other things.", response_b="Hi.", verdict="a",
                     source_a="tiny", source_b="big-model")

    assert not names_its_model(plain)
    assert model_names("HuggingFaceTB/SmolLM2-135M-Instruct best-of-8") == [
        "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"
    ]


def test_the_data_tab_shows_raw_and_style_controlled_ratings_and_counts_flagged_votes():
    from prefkit.app.logic import summary

    votes = simulated_votes(200, seed=3)
    votes.append(Vote.new(prompt="p", response_a="I am verbose.", response_b="ok", verdict="a",
                          source_a="verbose", source_b="concise"))

    result = summary(votes, bootstrap_rounds=5)

    board = result["leaderboard"]
    assert {"rating", "style-controlled rating", "style-controlled 95% interval"} <= set(board.columns)
    assert "**1 of 201 battles are flagged:**" in result["markdown"]
    assert "length +" in result["markdown"]  # longer answers win: a positive length coefficient
