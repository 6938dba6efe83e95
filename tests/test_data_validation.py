"""A corpus of malformed preference data: each kind gives a PreferenceDataError that names the row, the column and
the reason (through the API and through `prefkit export`, which prints it and exits with status 2)."""

from __future__ import annotations

import json
import math

import pytest

from prefkit.data import PreferenceDataError, validate_dataset, validate_preference_dataset
from prefkit.data.io import iter_jsonl, load_dataset_any, read_jsonl

GOOD = {
    "prompt": "How do I make tea?",
    "chosen": "Boil water, then steep the tea for three minutes.",
    "rejected": "No.",
}
GOOD_CONV = {
    "prompt": [{"role": "user", "content": "How do I make tea?"}],
    "chosen": [{"role": "assistant", "content": "Boil water, then steep it."}],
    "rejected": [{"role": "assistant", "content": "No."}],
}
GOOD_POINT = {"prompt": "How do I make tea?", "completion": "Boil water.", "score": 0.8}
GOOD_LABELED = {
    "id": "a",
    "prompt": "How do I make tea?",
    "response_a": "Boil water.",
    "response_b": "No.",
    "label": "A better",
}


def with_(base: dict, **changes) -> dict:
    row = dict(base)
    for key, value in changes.items():
        if value is ...:
            row.pop(key)
        else:
            row[key] = value
    return row


# (kind, rows, expected row or None for a dataset-level problem, column, words of the reason)
CORPUS = [
    ("missing column", [with_(GOOD, chosen=...)] * 2, None, "chosen", "is missing"),
    (
        "misnamed column",
        [{"prompt": "p", "chosen_response": "x", "rejected": "y"}],
        None,
        "chosen",
        "Did you mean 'chosen_response'? Rename it",
    ),
    ("None value", [GOOD, with_(GOOD, chosen=None)], 1, "chosen", "is missing (None)"),
    ("non-string prompt", [GOOD, with_(GOOD, prompt=42)], 1, "prompt", "is a int"),
    ("empty string", [GOOD, GOOD, with_(GOOD, rejected="")], 2, "rejected", "is empty"),
    ("whitespace only", [with_(GOOD, chosen="   \n")], 0, "chosen", "is empty"),
    ("identical responses", [GOOD, with_(GOOD, rejected=GOOD["chosen"])], 1, "rejected", "identical"),
    (
        "prompt ends with assistant",
        [with_(GOOD_CONV, prompt=GOOD_CONV["prompt"] + [{"role": "assistant", "content": "hm"}])],
        0,
        "prompt",
        "ends with an assistant turn",
    ),
    (
        "mismatched role in answer",
        [GOOD_CONV, with_(GOOD_CONV, chosen=[{"role": "user", "content": "Boil water."}])],
        1,
        "chosen",
        "has role 'user'",
    ),
    (
        "message without content",
        [with_(GOOD_CONV, rejected=[{"role": "assistant"}])],
        0,
        "rejected",
        "expected {'role'",
    ),
    ("unknown role", [with_(GOOD_CONV, prompt=[{"role": "bot", "content": "hi"}])], 0, "prompt", "has role 'bot'"),
    (
        "conversation prompt, text answer",
        [with_(GOOD_CONV, chosen="Boil water.")],
        0,
        "chosen",
        "needs assistant messages",
    ),
    ("text prompt, conversation answer", [with_(GOOD, rejected=GOOD_CONV["rejected"])], 0, "rejected", "plain text"),
    ("margin not a number", [with_(GOOD, margin=1.0), with_(GOOD, margin="big")], 1, "margin", "finite number"),
    ("margin not finite", [with_(GOOD, margin=math.inf)], 0, "margin", "finite number"),
    (
        "score not a number",
        [GOOD_POINT, with_(GOOD_POINT, score="high")],
        1,
        "score",
        "is a str ('high'); expected a number",
    ),
    ("score NaN", [with_(GOOD_POINT, score=math.nan)], 0, "score", "finite number"),
    ("score is a boolean", [with_(GOOD_POINT, score=True)], 0, "score", "is a boolean"),
    ("label not a boolean", [with_(GOOD_POINT, score=..., label="yes")], 0, "label", "expected true or false"),
    (
        "neither score nor label",
        [GOOD_POINT, with_(GOOD_POINT, score=None)],
        1,
        "score",
        "expected a number in 'score'",
    ),
    (
        "unknown scale label",
        [GOOD_LABELED, with_(GOOD_LABELED, id="b", label="A way better")],
        1,
        "label",
        "not a label of the 7-point scale",
    ),
    ("label missing", [with_(GOOD_LABELED, label=None)], 0, "label", "is None"),
    ("label is a number", [with_(GOOD_LABELED, label=3)], 0, "label", "is 3 (int)"),
    (
        "preference between identical responses",
        [with_(GOOD_LABELED, response_b="Boil water.")],
        0,
        "response_b",
        "identical",
    ),
    ("duplicate ids", [GOOD_LABELED, GOOD_LABELED], 1, "id", "duplicates id 'a' of row 0"),
    ("row is not an object", [GOOD_LABELED, ["x", "y"]], 1, None, "expected an object"),
    ("no known columns", [{"question": "q", "answer": "a"}], None, None, "match no known format"),
]


@pytest.mark.parametrize("kind, rows, row, column, reason", CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_rows_are_reported_with_row_column_and_reason(kind, rows, row, column, reason):
    with pytest.raises(PreferenceDataError) as error:
        validate_dataset(rows, "data.jsonl")
    matching = [p for p in error.value.problems if p.row == row and p.column == column]
    assert matching, f"no problem at row {row}, column {column}: {error.value}"
    assert reason in str(error.value)
    if row is not None:
        assert f"row {row}" in str(error.value)


def test_the_corpus_covers_at_least_twenty_kinds():
    assert len(CORPUS) + len(FILE_CORPUS) >= 20


def write_bytes(path, lines: list[bytes]):
    path.write_bytes(b"".join(lines))
    return path


def good_line(row=GOOD) -> bytes:
    return (json.dumps(row) + "\n").encode()


FILE_CORPUS = [
    (
        "truncated last line",
        [
            good_line(),
            good_line(),
            b'{"prompt": "How do I',
        ],
        2,
        3,
        "cut off",
    ),
    (
        "wrong encoding (Latin-1)",
        [good_line(), '{"prompt": "caf\u00e9", "chosen": "x", "rejected": "y"}\n'.encode("latin-1")],
        1,
        2,
        "not valid UTF-8",
    ),
    (
        "UTF-16 file",
        [(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n").encode("utf-16")],
        0,
        1,
        "is UTF-16, not UTF-8",
    ),
    ("JSON array instead of an object", [good_line(), b"[1, 2, 3]\n"], 1, 2, "not an object"),
    ("not JSON at all", [b"prompt,chosen,rejected\n", good_line()], 0, 1, "not valid JSON"),
]


@pytest.mark.parametrize("kind, lines, row, line, reason", FILE_CORPUS, ids=[c[0] for c in FILE_CORPUS])
def test_malformed_jsonl_lines_are_reported_with_row_line_and_reason(tmp_path, kind, lines, row, line, reason):
    path = write_bytes(tmp_path / "data.jsonl", lines)
    with pytest.raises(PreferenceDataError) as error:
        read_jsonl(path)
    assert [(p.row, p.line) for p in error.value.problems] == [(row, line)]
    assert reason in str(error.value) and f"row {row}, line {line}" in str(error.value)


@pytest.mark.parametrize("kind, lines, row, line, reason", FILE_CORPUS, ids=[c[0] for c in FILE_CORPUS])
def test_load_dataset_any_reports_bad_jsonl_lines_before_arrow_sees_them(tmp_path, kind, lines, row, line, reason):
    path = write_bytes(tmp_path / "data.jsonl", lines)
    with pytest.raises(PreferenceDataError, match=f"line {line}"):
        load_dataset_any(path)


def test_bad_lines_can_be_skipped_with_a_record_of_what_was_dropped(tmp_path):
    path = write_bytes(tmp_path / "data.jsonl", [good_line(), b"[1]\n", good_line(GOOD_CONV), b'{"torn'])
    problems = []
    rows = list(iter_jsonl(path, drop_invalid=True, problems=problems))
    assert rows == [GOOD, GOOD_CONV]
    assert [p.line for p in problems] == [2, 4]


def test_a_utf8_byte_order_mark_and_blank_lines_are_fine(tmp_path):
    path = write_bytes(tmp_path / "data.jsonl", [b"\xef\xbb\xbf" + good_line(), b"\n", good_line()])
    assert read_jsonl(path) == [GOOD, GOOD]


# Export leaves out rows whose label is null (a judge answer it could not read) instead of failing on them.
ROW_CORPUS = [c for c in CORPUS if c[2] is not None and c[0] != "label missing"]


@pytest.mark.parametrize("kind, rows, row, column, reason", ROW_CORPUS, ids=[c[0] for c in ROW_CORPUS])
def test_export_command_prints_the_problem_and_exits_2_without_a_traceback(
    tmp_path, capsys, kind, rows, row, column, reason
):
    from prefkit.commands.export import main

    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--input", str(path), "--output", str(tmp_path / "out.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and f"row {row}" in err and "Traceback" not in err
    assert not (tmp_path / "out.jsonl").exists()


def test_drop_invalid_keeps_the_good_rows_and_counts_the_others():
    other = with_(GOOD, chosen="Steep a tea bag in boiled water.")
    rows = [GOOD, with_(GOOD, chosen=None), other, with_(GOOD, rejected="")]
    report = validate_dataset(rows, drop_invalid=True)
    assert (report.num_dropped, report.dropped_rows, list(report.dataset)) == (2, [1, 3], [GOOD, other])
    assert report.summary() == "dropped 2 bad rows of 4 (preference); kept 2"


def test_drop_invalid_on_a_datasets_dataset_returns_a_dataset_of_the_good_rows():
    from datasets import Dataset

    dataset = Dataset.from_list([GOOD, with_(GOOD, rejected=""), GOOD])
    report = validate_dataset(dataset, drop_invalid=True)
    assert report.dataset.num_rows == 2 and report.dropped_rows == [1]


def test_a_streamed_dataset_is_validated_row_by_row(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(
        "".join(json.dumps(with_(GOOD, chosen=f"answer {i}")) + "\n" for i in range(50))
        + json.dumps(with_(GOOD, chosen=""))
        + "\n"
    )
    streamed = load_dataset_any(path, split="train", streaming=True)
    assert not hasattr(streamed, "__len__")
    with pytest.raises(PreferenceDataError, match="row 50, column 'chosen': is empty"):
        validate_dataset(streamed, format="preference")


def test_a_streamed_dataset_of_unknown_features_is_recognised_from_its_first_row(tmp_path):
    path = tmp_path / "points.jsonl"
    path.write_text(json.dumps(GOOD_POINT) + "\n" + json.dumps(with_(GOOD_POINT, score="high")) + "\n")
    streamed = load_dataset_any(path, split="train", streaming=True)
    with pytest.raises(PreferenceDataError, match="row 1, column 'score'"):
        validate_dataset(streamed)


def test_a_generator_of_rows_can_be_validated_and_filtered():
    report = validate_dataset((row for row in [GOOD, with_(GOOD, chosen=None)]), drop_invalid=True)
    assert report.dataset == [GOOD]


def test_the_trainer_entry_point_names_a_misnamed_column():
    with pytest.raises(PreferenceDataError, match="Did you mean 'preferred'"):
        validate_preference_dataset(_dataset([{"prompt": "p", "preferred": "x", "rejected": "y"}]))


def test_an_empty_dataset_is_an_error():
    with pytest.raises(PreferenceDataError, match="is empty"):
        validate_dataset(_dataset([GOOD]).select([]), format="preference")


def _dataset(rows):
    from datasets import Dataset

    return Dataset.from_list(rows)


# ---- one format per dataset ----------------------------------------------------------------------------------------


def test_conversational_rows_among_plain_ones_are_named():
    rows = [GOOD, GOOD, GOOD, GOOD_CONV, GOOD, GOOD, GOOD, GOOD_CONV]
    expected = "rows 3, 7 are conversational but rows 0-2, 4-6 are plain text; use one format for the whole file"
    with pytest.raises(PreferenceDataError, match=expected):
        validate_preference_dataset(rows)
    with pytest.raises(PreferenceDataError, match=expected):
        validate_dataset(rows, format="preference")


def test_the_format_of_fewer_rows_is_the_odd_one_even_when_it_comes_first():
    with pytest.raises(PreferenceDataError, match="row 0 is plain text but rows 1-2 are conversational"):
        validate_dataset([GOOD, GOOD_CONV, GOOD_CONV])


def test_mixed_formats_are_refused_even_when_bad_rows_are_dropped():
    with pytest.raises(PreferenceDataError, match="row 1 is conversational but row 0 is plain text"):
        validate_dataset([GOOD, GOOD_CONV], drop_invalid=True)


@pytest.mark.parametrize(
    "good, kind",
    [(GOOD_POINT, "pointwise"), (GOOD_LABELED, "labeled")],
)
def test_every_shape_of_data_needs_one_format(good, kind):
    conversational = with_(good, prompt=[{"role": "user", "content": "How do I make tea?"}], id="b")
    with pytest.raises(PreferenceDataError, match="row 1 is conversational but row 0 is plain text"):
        validate_dataset([good, conversational], format=kind)


def test_a_prompt_list_may_mix_plain_and_chat_prompts():
    prompts = [{"prompt": "Tea?"}, {"prompt": [{"role": "user", "content": "Coffee?"}]}]
    assert validate_dataset(prompts, format="prompts").total_rows == 2


def test_an_empty_list_of_rows_is_the_empty_dataset_error():
    from prefkit.data import EmptyDatasetError

    with pytest.raises(EmptyDatasetError, match="^pairs: the dataset is empty; it needs at least one row"):
        validate_dataset([], "pairs")
