"""Label scales and the mappings from labels to TRL rows, on hand-written records with the expected rows written out."""

from __future__ import annotations

import pytest

from prefkit.data import (
    BOTH_BAD,
    DEFAULT_SCALE,
    GradedScale,
    PreferenceDataError,
    UnknownLabelError,
    labels_to_pairs,
    labels_to_unpaired,
    pointwise_to_pairs,
)
from prefkit.data.labels import label_counts

PROMPT = "Suggest a new activity I could do with my teddy bear."
KIND = "You could have a picnic with your teddy bear in the garden."
RUDE = "I'd suggest you do not spend much time with your teddy bear at all."


def record(label, a=KIND, b=RUDE, prompt=PROMPT, **extra):
    return {"prompt": prompt, "response_a": a, "response_b": b, "label": label, **extra}


# ---- scales ---------------------------------------------------------------------------------------------------------


def test_default_scale_has_the_seven_documented_labels_in_order():
    assert DEFAULT_SCALE.labels == (
        "A much better",
        "A better",
        "A slightly better",
        "tie",
        "B slightly better",
        "B better",
        "B much better",
    )


def test_default_margins_grow_linearly_from_the_tie_to_one():
    assert DEFAULT_SCALE.margins == (1.0, 2 / 3, 1 / 3, 0.0, 1 / 3, 2 / 3, 1.0)


def test_labels_parse_regardless_of_case_spacing_and_underscores():
    point = DEFAULT_SCALE.parse("  a_much-BETTER ")
    assert (point.winner, point.margin, point.kind) == ("A", 1.0, "preference")


def test_binary_labels_have_a_winner_and_no_margin():
    assert [(p.winner, p.margin) for p in map(DEFAULT_SCALE.parse, ["A", "b"])] == [("A", None), ("B", None)]


def test_tie_and_both_bad_make_no_pair():
    assert [DEFAULT_SCALE.parse(x).makes_pair for x in ("tie", BOTH_BAD)] == [False, False]


def test_custom_five_point_scale_with_custom_texts_and_margins():
    scale = GradedScale(["way better", "better", "same", "worse", "way worse"], margins=[2, 1, 0, 1, 2])
    assert [(p.winner, p.margin) for p in scale] == [("A", 2.0), ("A", 1.0), (None, None), ("B", 1.0), ("B", 2.0)]
    assert scale.parse("same").kind == "tie"
    assert scale.parse("tie").kind == "tie"  # "tie" always works, whatever the middle label is called


def test_scale_round_trips_through_a_dict():
    scale = GradedScale.five_point()
    assert GradedScale.from_dict(scale.to_dict()) == scale


@pytest.mark.parametrize(
    "labels, margins, message",
    [
        (["A", "tie", "B"], None, "reserved"),
        (["a wins", "b wins"], None, "odd number"),
        (["x", "y", "x"], None, "distinct"),
        (["x", "y", "z"], [1, 0.5, 1], "must be 0"),
        (["x", "y", "z"], [0, 0, 1], "must be > 0"),
        (["x", "y", "z"], [1, 0], "one margin per label"),
    ],
)
def test_invalid_scales_are_refused_with_the_reason(labels, margins, message):
    with pytest.raises(ValueError, match=message):
        GradedScale(labels, margins)


def test_unknown_label_error_lists_the_accepted_labels():
    with pytest.raises(UnknownLabelError, match="'A much better', 'A better'"):
        DEFAULT_SCALE.parse("A way better")


def test_label_for_inverts_parse():
    assert DEFAULT_SCALE.label_for("B", 3) == "B much better"
    assert DEFAULT_SCALE.label_for("A", 1) == "A slightly better"
    assert DEFAULT_SCALE.label_for(None) == "tie"


# ---- labels -> pairs ------------------------------------------------------------------------------------------------


def test_graded_labels_become_pairs_with_the_scale_margin():
    rows = labels_to_pairs([record("A slightly better"), record("B much better")])
    assert rows == [
        {"prompt": PROMPT, "chosen": KIND, "rejected": RUDE, "margin": 1 / 3},
        {"prompt": PROMPT, "chosen": RUDE, "rejected": KIND, "margin": 1.0},
    ]


def test_binary_labels_become_pairs_without_a_margin_column():
    rows = labels_to_pairs([record("A"), record("B")])
    assert rows == [
        {"prompt": PROMPT, "chosen": KIND, "rejected": RUDE},
        {"prompt": PROMPT, "chosen": RUDE, "rejected": KIND},
    ]


def test_binary_labels_mixed_with_graded_ones_get_margin_zero():
    rows = labels_to_pairs([record("A"), record("B better")])
    assert [r["margin"] for r in rows] == [0.0, 2 / 3]


def test_ties_and_both_bad_are_left_out_of_pairs():
    rows = labels_to_pairs([record("tie"), record(BOTH_BAD), record("A better")])
    assert rows == [{"prompt": PROMPT, "chosen": KIND, "rejected": RUDE, "margin": 2 / 3}]


def test_extra_keys_stay_out_of_the_trl_columns_unless_kept():
    records = [record("A", id="r1", annotator="ann-7")]
    assert labels_to_pairs(records) == [{"prompt": PROMPT, "chosen": KIND, "rejected": RUDE}]
    assert labels_to_pairs(records, keep_columns=["id"]) == [
        {"prompt": PROMPT, "chosen": KIND, "rejected": RUDE, "id": "r1"}
    ]


def test_conversational_prompt_gives_assistant_message_responses():
    messages = [{"role": "user", "content": PROMPT}]
    rows = labels_to_pairs([record("B", prompt=messages)])
    assert rows == [
        {
            "prompt": messages,
            "chosen": [{"role": "assistant", "content": RUDE}],
            "rejected": [{"role": "assistant", "content": KIND}],
        }
    ]


def test_custom_scale_margins_are_used():
    scale = GradedScale(["A clearly", "A a bit", "same", "B a bit", "B clearly"], margins=[3, 1, 0, 1, 3])
    assert [r["margin"] for r in labels_to_pairs([record("B clearly"), record("A a bit")], scale)] == [3.0, 1.0]


def test_bad_records_raise_with_every_row_listed():
    with pytest.raises(PreferenceDataError) as error:
        labels_to_pairs([record("A"), record("A way better"), record("B", b="")])
    assert error.value.bad_rows == [1, 2]


def test_bad_records_can_be_dropped_instead():
    rows = labels_to_pairs([record("A"), record("A way better"), record("B", b="")], errors="drop")
    assert rows == [{"prompt": PROMPT, "chosen": KIND, "rejected": RUDE}]


def test_label_counts_tally_each_kind():
    counts = label_counts([record("A"), record("tie"), record(BOTH_BAD), record("B much better"), record("??")])
    assert dict(counts) == {"preference": 2, "tie": 1, "both_bad": 1, "invalid": 1}


# ---- labels -> unpaired (KTO) ---------------------------------------------------------------------------------------


def test_a_preference_gives_one_desirable_and_one_undesirable_row():
    assert labels_to_unpaired([record("B slightly better")]) == [
        {"prompt": PROMPT, "completion": RUDE, "label": True},
        {"prompt": PROMPT, "completion": KIND, "label": False},
    ]


def test_both_bad_gives_two_undesirable_rows_and_a_tie_gives_none():
    assert labels_to_unpaired([record(BOTH_BAD), record("tie")]) == [
        {"prompt": PROMPT, "completion": KIND, "label": False},
        {"prompt": PROMPT, "completion": RUDE, "label": False},
    ]


def test_both_bad_can_be_left_out_of_unpaired_rows():
    assert labels_to_unpaired([record(BOTH_BAD)], both_bad=False) == []


def test_kept_ids_of_unpaired_rows_name_the_response():
    rows = labels_to_unpaired([record("A", id="r1")], keep_columns=["id"])
    assert [r["id"] for r in rows] == ["r1/a", "r1/b"]


# ---- pointwise -> pairs ---------------------------------------------------------------------------------------------

POINTWISE = [
    {"prompt": "p", "completion": "low", "score": 0.1},
    {"prompt": "p", "completion": "high", "score": 0.9},
    {"prompt": "q", "completion": "only", "score": 0.5},
    {"prompt": "p", "completion": "mid", "score": 0.4},
]


def test_best_vs_worst_pairs_the_top_and_bottom_score_of_each_prompt():
    assert pointwise_to_pairs(POINTWISE) == [{"prompt": "p", "chosen": "high", "rejected": "low", "margin": 0.9 - 0.1}]


def test_all_pairs_pairs_every_two_completions_with_the_score_difference():
    rows = pointwise_to_pairs(POINTWISE, mode="all_pairs")
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("high", "mid"), ("high", "low"), ("mid", "low")]
    assert [r["margin"] for r in rows] == pytest.approx([0.5, 0.8, 0.3])


def test_equal_scores_make_no_pair():
    rows = [{"prompt": "p", "completion": "x", "score": 1}, {"prompt": "p", "completion": "y", "score": 1}]
    assert pointwise_to_pairs(rows, mode="all_pairs") == []


def test_boolean_labels_pair_desirable_with_undesirable_without_margin():
    rows = [
        {"prompt": "p", "completion": "bad", "label": False},
        {"prompt": "p", "completion": "good", "label": True},
        {"prompt": "p", "completion": "also good", "label": True},
    ]
    assert pointwise_to_pairs(rows, mode="all_pairs") == [
        {"prompt": "p", "chosen": "good", "rejected": "bad"},
        {"prompt": "p", "chosen": "also good", "rejected": "bad"},
    ]


def test_pointwise_pair_ids_name_both_rows():
    rows = [
        {"prompt": "p", "completion": "x", "score": 0, "id": 1},
        {"prompt": "p", "completion": "y", "score": 2, "id": 2},
    ]
    assert pointwise_to_pairs(rows, keep_columns=["id"])[0]["id"] == "2|1"


def test_mixing_scores_and_boolean_labels_is_an_error_naming_the_row():
    rows = [{"prompt": "p", "completion": "x", "score": 1.0}, {"prompt": "p", "completion": "y", "label": True}]
    with pytest.raises(PreferenceDataError, match="row 1, column 'score'"):
        pointwise_to_pairs(rows)
