"""Trust in the labels: Cohen's kappa, Krippendorff's alpha, gold pairs, per-annotator flags and the export policies."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

from prefkit.data.judges import agreement
from prefkit.data.reliability import (
    GoldPairError,
    ReliabilityThresholds,
    annotator_reliability,
    apply_reliability_policy,
    binomial_two_sided_p,
    cohen_kappa,
    krippendorff_alpha,
    ordinal_position,
    read_gold_pairs,
    reliability_report,
)
from prefkit.data.votes import Vote, VoteError, VoteStore, votes_to_rows

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, values 1-5, missing data.
# Published: nominal 0.743, ordinal 0.815, interval 0.849.
KRIPPENDORFF_4X12 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
# Krippendorff's 3-coder, 15-unit example (nominal 0.691; interval 0.811 as the `krippendorff` package computes it).
KRIPPENDORFF_3X15 = [
    [None, None, None, None, None, 3, 4, 1, 2, 1, 1, 3, 3, None, 3],
    [1, None, 2, 1, 3, 3, 4, 3, None, None, None, None, None, None, None],
    [None, None, 2, 1, 3, 4, 4, None, 2, 1, 1, 3, 3, None, 4],
]


def units_of(observers):
    return [list(column) for column in zip(*observers)]


# ---------------------------------------------------------------------------------------------------------- kappa


def test_unweighted_kappa_of_the_textbook_two_by_two_table():
    # 50 items: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15

    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_unweighted_kappa_matches_the_judges_agreement_kappa_on_random_labels():
    rng = random.Random(3)
    a = [rng.choice("abcd") for _ in range(200)]
    b = [x if rng.random() < 0.6 else rng.choice("abcd") for x in a]

    assert cohen_kappa(a, b) == pytest.approx(agreement(a, b).kappa, abs=1e-12)


@pytest.mark.parametrize("weights", ["linear", "quadratic"])
def test_weighted_kappa_matches_a_matrix_computation(weights):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 7, 300)
    b = np.clip(a + rng.integers(-2, 3, 300), 0, 6)
    counts = np.zeros((7, 7))
    np.add.at(counts, (a, b), 1)
    expected_counts = np.outer(counts.sum(1), counts.sum(0)) / counts.sum()
    distance = np.abs(np.subtract.outer(np.arange(7), np.arange(7))) / 6
    w = distance if weights == "linear" else distance**2
    reference = 1 - (w * counts).sum() / (w * expected_counts).sum()

    assert cohen_kappa(list(a), list(b), categories=range(7), weights=weights) == pytest.approx(reference, abs=1e-12)


def test_weighted_kappa_counts_a_near_miss_as_partial_agreement():
    a = [0, 1, 2, 3, 4, 5, 6] * 3
    off_by_one = [min(x + 1, 6) for x in a]

    unweighted = cohen_kappa(a, off_by_one, categories=range(7))
    linear = cohen_kappa(a, off_by_one, categories=range(7), weights="linear")

    assert linear > 0.6 > unweighted


def test_kappa_refuses_lists_of_different_lengths_and_unknown_weights():
    with pytest.raises(ValueError, match="different numbers of items"):
        cohen_kappa([1, 2], [1])
    with pytest.raises(ValueError, match="weights must be"):
        cohen_kappa([1], [1], weights="cubic")


# ---------------------------------------------------------------------------------------------------------- alpha


@pytest.mark.parametrize(("metric", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_alpha_reproduces_krippendorffs_published_example(metric, published):
    assert krippendorff_alpha(units_of(KRIPPENDORFF_4X12), metric=metric) == pytest.approx(published, abs=5e-4)


@pytest.mark.parametrize(("metric", "reference"), [("nominal", 0.691358), ("interval", 0.810845)])
def test_alpha_on_the_three_coder_example_with_many_missing_values(metric, reference):
    assert krippendorff_alpha(units_of(KRIPPENDORFF_3X15), metric=metric) == pytest.approx(reference, abs=1e-6)


def brute_force_alpha(units, metric):
    """Alpha as 1 - D_o / D_e from sums over pairs of labels, without a coincidence matrix."""
    pairable = [[v for v in unit if v is not None] for unit in units]
    pairable = [unit for unit in pairable if len(unit) >= 2]
    pooled = [v for unit in pairable for v in unit]
    n = len(pooled)
    values = sorted(set(pooled))
    frequency = {v: pooled.count(v) for v in values}

    def delta2(c, k):
        if metric == "nominal":
            return float(c != k)
        if metric == "interval":
            return float(c - k) ** 2
        low, high = min(c, k), max(c, k)
        between = sum(frequency[g] for g in values if low <= g <= high)
        return (between - (frequency[c] + frequency[k]) / 2) ** 2

    observed = 0.0
    for unit in pairable:
        for i, j in itertools.permutations(range(len(unit)), 2):
            observed += delta2(unit[i], unit[j]) / (len(unit) - 1)
    observed /= n
    expected = sum(delta2(pooled[i], pooled[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    return 1 - observed / expected


@pytest.mark.parametrize("metric", ["nominal", "ordinal", "interval"])
def test_alpha_matches_brute_force_pairwise_disagreement_sums_with_missing_labels(metric):
    rng = random.Random(11)
    units = []
    for _ in range(25):
        truth = rng.randint(0, 6)
        labels = [min(6, max(0, truth + rng.choice([-1, 0, 0, 1]))) for _ in range(4)]
        units.append([label if rng.random() > 0.3 else None for label in labels])

    assert krippendorff_alpha(units, metric=metric) == pytest.approx(brute_force_alpha(units, metric), abs=1e-10)


def test_alpha_ignores_missing_labels_and_unlabeled_units():
    with_gaps = [[3, None, 3], [None, None, None], [2, 4], [5, None]]
    without = [[3, 3], [2, 4]]

    assert krippendorff_alpha(with_gaps) == pytest.approx(krippendorff_alpha(without))


def test_alpha_is_one_for_perfect_agreement_and_needs_an_item_labeled_twice():
    assert krippendorff_alpha([[1, 1], [2, 2, 2], [5, 5]]) == 1.0
    with pytest.raises(ValueError, match="labeled twice"):
        krippendorff_alpha([[1], [2, None]])


# ---------------------------------------------------------------------------------------------------------- binomial


def test_binomial_p_value_matches_a_direct_sum():
    assert binomial_two_sided_p(10, 10) == pytest.approx(2 / 1024)
    assert binomial_two_sided_p(8, 10) == pytest.approx(2 * (45 + 10 + 1) / 1024)
    assert binomial_two_sided_p(5, 10) == pytest.approx(1.0)
    assert binomial_two_sided_p(0, 0) == 1.0


# ---------------------------------------------------------------------------------------------------------- votes


def vote(annotator, verdict, *, item=0, strength=None, shown_left="a", gold=None, seconds=None, swap=False):
    first, second = f"answer one {item}", f"answer two {item}"
    a, b = (second, first) if swap else (first, second)
    return Vote.new(
        prompt=f"prompt {item}", response_a=a, response_b=b, verdict=verdict, strength=strength,
        shown_left=shown_left, annotator=annotator, gold_answer=gold, seconds_to_vote=seconds,
    )


def test_a_judgement_has_the_same_ordinal_position_whichever_order_the_pair_was_stored_in():
    stored = vote("x", "a", strength="much")
    swapped = vote("x", "b", strength="much", swap=True)

    assert ordinal_position(stored) == ordinal_position(swapped) == 0
    assert ordinal_position(vote("x", "tie")) == 3
    assert ordinal_position(vote("x", "b")) == 5  # an ungraded win counts as "clearly"
    assert ordinal_position(vote("x", "both_bad")) is None


def gold_and_shared_votes():
    votes = []
    for item in range(6):  # gold: "a" is right; careful gets every one right, careless every one wrong
        votes.append(vote("careful", "a", item=100 + item, gold="a", shown_left="ab"[item % 2]))
        votes.append(vote("careless", "b", item=100 + item, gold="a", shown_left="ab"[item % 2]))
    for item in range(8):  # shared non-gold items: careful and a colleague agree, careless says the opposite
        votes.append(vote("careful", "a", item=item, shown_left="ab"[item % 2]))
        votes.append(vote("colleague", "a", item=item, shown_left="ab"[(item + 1) % 2]))
        votes.append(vote("careless", "b", item=item, shown_left="ab"[item % 2]))
    return votes


def test_an_annotator_answering_gold_wrong_gets_low_reliability_and_is_flagged():
    rows = {row.annotator: row for row in annotator_reliability(gold_and_shared_votes())}

    assert rows["careless"].gold_accuracy == 0.0 and rows["careless"].reliability == 0.0
    assert rows["careless"].dropped and any("gold accuracy" in flag for flag in rows["careless"].flags)
    assert rows["careful"].gold_accuracy == 1.0 and not rows["careful"].dropped
    assert rows["careful"].agreement == pytest.approx(0.5)  # agrees with the colleague, not with careless
    assert rows["colleague"].gold_votes == 0 and rows["colleague"].reliability == pytest.approx(0.5)


def test_the_drop_policy_leaves_out_the_annotator_who_fails_gold_and_every_gold_vote():
    votes = gold_and_shared_votes()

    result = apply_reliability_policy(votes, "drop")

    assert result.dropped_annotators == ["careless"]
    assert {v.annotator for v in result.votes} == {"careful", "colleague"}
    assert not any(v.is_gold for v in result.votes)
    assert "drop" in result.description and "1 of 3 annotators" in result.description
    rows = votes_to_rows(result.votes)
    assert len(rows) == 16 and all(row["chosen"].startswith("answer one") for row in rows)


def test_the_keep_policy_keeps_every_annotator_but_never_gold_votes():
    result = apply_reliability_policy(gold_and_shared_votes(), "keep")

    assert len(result.votes) == 24 and not result.dropped_annotators
    assert "12 votes on gold pairs" in result.description


def test_the_weight_policy_weights_rows_by_annotator_reliability():
    votes = gold_and_shared_votes()
    annotator_of = {v.vote_id: v.annotator for v in votes}

    result = apply_reliability_policy(votes, "weight")
    rows = votes_to_rows(result.votes, weights=result.weights)

    weight_by_annotator = {annotator_of[row["vote_id"]]: row["weight"] for row in rows}
    # careless: gold accuracy 0; careful: gold accuracy 1; the colleague (no gold): agreement with others, 0.5
    assert weight_by_annotator == {"careless": 0.0, "careful": 1.0, "colleague": 0.5}


def test_an_unknown_policy_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="keep, weight, drop"):
        apply_reliability_policy([], "trust-me")


def test_always_choosing_the_left_side_is_flagged_as_position_bias():
    votes = [vote("lefty", "ab"[k % 2], item=k, shown_left="ab"[k % 2]) for k in range(12)]  # always the left one
    votes += [vote("fair", "a", item=k, shown_left="ab"[k % 2]) for k in range(12)]  # left half the time

    rows = {row.annotator: row for row in annotator_reliability(votes)}

    assert rows["lefty"].left_share == 1.0 and rows["lefty"].position_p == pytest.approx(2 / 4096)
    assert any("position bias: left" in flag for flag in rows["lefty"].flags)
    assert rows["fair"].left_share == 0.5 and not rows["fair"].flags


def test_fast_votes_and_duplicate_submissions_are_flagged():
    votes = [vote("hasty", "a", item=k, seconds=0.8) for k in range(4)] + [vote("hasty", "a", item=0, seconds=9.0)]
    votes += [vote("steady", "a", item=k, seconds=12.0, shown_left="ab"[k % 2]) for k in range(4)]

    rows = {row.annotator: row for row in annotator_reliability(votes, ReliabilityThresholds(fast_vote_seconds=2))}

    assert (rows["hasty"].fast_votes, rows["hasty"].timed_votes, rows["hasty"].duplicates) == (4, 5, 1)
    assert any("under 2 s" in flag for flag in rows["hasty"].flags)
    assert any("duplicate" in flag for flag in rows["hasty"].flags)
    assert rows["steady"].fast_votes == 0 and not rows["steady"].flags


def test_the_report_has_one_row_per_annotator():
    frame = reliability_report(gold_and_shared_votes())

    assert sorted(frame["annotator"]) == ["careful", "careless", "colleague"]
    assert frame.set_index("annotator").loc["careless", "dropped by 'drop'"] == "yes"


def test_bad_thresholds_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="min_gold_accuracy=1.5"):
        annotator_reliability([], ReliabilityThresholds(min_gold_accuracy=1.5))


# ---------------------------------------------------------------------------------------------------------- gold file


def test_gold_pairs_read_from_jsonl(tmp_path):
    path = tmp_path / "gold.jsonl"
    path.write_text(
        json.dumps({"prompt": "2+2?", "a": "4", "b": "5", "answer": "A"}) + "\n\n"
        + json.dumps({"prompt": "Capital of France?", "a": "Paris", "b": "Lyon", "answer": "a", "source_a": "atlas"})
        + "\n"
    )

    pairs = read_gold_pairs(path)

    assert [(p.prompt, p.answer, p.source_a) for p in pairs] == [("2+2?", "a", ""), ("Capital of France?", "a", "atlas")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "p", "a": "x", "b": "y", "answer": "left"}', "line 1: 'answer' is 'left'"),
        ('{"prompt": "p", "a": "x", "answer": "a"}', "line 1: 'b' must be a non-empty string"),
        ('{"prompt": "p", "a": "x", "b": "x", "answer": "a"}', "line 1: 'a' and 'b' are the same text"),
        ("not json", "line 1: not JSON"),
    ],
)
def test_a_bad_gold_file_names_the_line_and_the_field(tmp_path, line, message):
    path = tmp_path / "gold.jsonl"
    path.write_text(line + "\n")

    with pytest.raises(GoldPairError, match=message):
        read_gold_pairs(path)


def test_a_missing_gold_file_is_a_clear_error(tmp_path):
    with pytest.raises(GoldPairError, match="does not exist"):
        read_gold_pairs(tmp_path / "nope.jsonl")


def test_a_vote_with_an_invalid_gold_answer_or_time_is_refused():
    with pytest.raises(VoteError, match="gold_answer"):
        vote("x", "a", gold="left")
    with pytest.raises(VoteError, match="seconds_to_vote"):
        vote("x", "a", seconds=-1.0)


# ---------------------------------------------------------------------------------------------------------- export


def test_prefkit_export_drops_the_annotator_who_fails_gold_and_says_so(tmp_path, capsys):
    from prefkit.commands.export import main

    store = VoteStore(tmp_path / "data")
    for v in gold_and_shared_votes():
        store.append(v)
    store.close()
    output = tmp_path / "pairs.jsonl"

    assert main(["--input", str(tmp_path / "data"), "--output", str(output), "--reliability", "drop"]) == 0

    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 16 and all(row["chosen"].startswith("answer one") for row in rows)
    printed = capsys.readouterr().out
    assert "Reliability policy: drop" in printed and "36 votes -> 16" in printed


def test_prefkit_export_weight_policy_writes_a_weight_column(tmp_path):
    from prefkit.commands.export import main

    store = VoteStore(tmp_path / "data")
    for v in gold_and_shared_votes():
        store.append(v)
    store.close()
    output = tmp_path / "pairs.jsonl"

    assert main(["--input", str(tmp_path / "data"), "--output", str(output), "--reliability", "weight"]) == 0

    weights = sorted({json.loads(line)["weight"] for line in output.read_text().splitlines()})
    assert weights == [0.0, 0.5, 1.0]


def test_prefkit_export_refuses_a_reliability_policy_for_rows_without_annotators(tmp_path, capsys):
    from prefkit.commands.export import main

    labeled = tmp_path / "labeled.jsonl"
    labeled.write_text(json.dumps({"prompt": "p", "response_a": "x", "response_b": "y", "label": "A"}) + "\n")

    assert main(["--input", str(labeled), "--output", str(tmp_path / "o.jsonl"), "--reliability", "drop"]) == 2
    assert "needs the labeling app's votes" in capsys.readouterr().err


def test_the_dataset_card_says_which_reliability_policy_was_applied():
    from prefkit.data.export import build_dataset_card, to_dataset

    result = apply_reliability_policy(gold_and_shared_votes(), "weight")
    dataset = to_dataset(votes_to_rows(result.votes, weights=result.weights))

    card = build_dataset_card(dataset, "me/votes", reliability=result.description)

    assert "## Label reliability" in card and "Reliability policy: weight" in card
    assert "`weight` is the labeling annotator's reliability" in card
