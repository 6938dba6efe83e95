"""Resumable labeling: an interrupted run picks up where it stopped, without relabeling or duplicating a pair."""

from __future__ import annotations

import json

import pytest

from prefkit.data import PreferenceDataError
from prefkit.data.io import done_ids, repair_torn_tail
from prefkit.data.judges import Judgement, RewardModelJudge
from prefkit.data.labeling import label_records, read_labeled, validate_pairs_to_label

RECORDS = [
    {"id": f"pair-{i}", "prompt": f"Question {i}?", "response_a": "x" * (i % 5 + 1), "response_b": "y" * 3}
    for i in range(10)
]


class RecordingJudge(RewardModelJudge):
    """Prefers the longer answer; remembers which prompts it judged and can fail on a given call."""

    def __init__(self, fail_on_call: int | None = None):
        super().__init__(lambda prompts, responses: [float(len(r)) for r in responses])
        self.seen, self.calls, self.fail_on_call = [], 0, fail_on_call

    def judge(self, prompts, response_pairs, references=None):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # the user pressed Ctrl-C in the middle of this batch
        self.seen += list(prompts)
        return super().judge(prompts, response_pairs, references)


def ids_in(path) -> list[str]:
    return [row["id"] for row in read_labeled(path)]


def test_labels_are_written_with_the_record_and_the_judge(tmp_path):
    output = tmp_path / "labeled.jsonl"
    summary = label_records(RECORDS[:3], RecordingJudge(), output, progress=False)
    rows = read_labeled(output)
    assert summary.labeled == 3 and [r["label"] for r in rows] == ["B", "B", "tie"]  # lengths 1, 2, 3 against 3
    assert [r["judge_scores"] for r in rows] == [[1.0, 3.0], [2.0, 3.0], [3.0, 3.0]]
    assert rows[0]["judge"] == {"judge": "reward", "reward": "<lambda>"}
    assert {k: rows[0][k] for k in ("id", "prompt", "response_a", "response_b")} == RECORDS[0]


def test_an_interrupted_run_resumes_without_duplicates_or_relabeling(tmp_path):
    output = tmp_path / "labeled.jsonl"
    with pytest.raises(KeyboardInterrupt):
        label_records(RECORDS, RecordingJudge(fail_on_call=3), output, batch_size=3, progress=False)
    assert ids_in(output) == [f"pair-{i}" for i in range(6)]  # two full batches reached the disk

    second = RecordingJudge()
    summary = label_records(RECORDS, second, output, batch_size=3, progress=False)
    assert second.seen == [f"Question {i}?" for i in range(6, 10)]
    assert (summary.labeled, summary.skipped) == (4, 6)
    assert ids_in(output) == [r["id"] for r in RECORDS]


def test_a_run_over_a_finished_file_labels_nothing(tmp_path):
    output = tmp_path / "labeled.jsonl"
    label_records(RECORDS, RecordingJudge(), output, progress=False)
    again = RecordingJudge()
    summary = label_records(RECORDS, again, output, progress=False)
    assert (again.calls, summary.labeled, summary.skipped) == (0, 0, 10)


def test_a_line_torn_by_a_crash_is_cut_and_that_pair_labeled_again(tmp_path):
    output = tmp_path / "labeled.jsonl"
    label_records(RECORDS[:4], RecordingJudge(), output, progress=False)
    text = output.read_text()
    output.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1] + text.splitlines()[-1][:25])  # torn 4th line
    judge = RecordingJudge()
    label_records(RECORDS[:4], judge, output, progress=False)
    assert judge.seen == ["Question 3?"] and ids_in(output) == [r["id"] for r in RECORDS[:4]]


def test_records_without_ids_are_keyed_by_their_texts(tmp_path):
    records = [{k: v for k, v in r.items() if k != "id"} for r in RECORDS[:3]]
    output = tmp_path / "labeled.jsonl"
    label_records(records[:2], RecordingJudge(), output, progress=False)
    judge = RecordingJudge()
    label_records(records, judge, output, progress=False)
    assert judge.seen == ["Question 2?"] and len(set(ids_in(output))) == 3


def test_a_label_already_on_the_record_is_kept_aside(tmp_path):
    output = tmp_path / "labeled.jsonl"
    label_records([{**RECORDS[0], "label": "B much better"}], RecordingJudge(), output, progress=False)
    (row,) = read_labeled(output)
    assert (row["previous_label"], row["label"]) == ("B much better", "B")


def test_a_damaged_middle_line_stops_the_resume_instead_of_losing_labels(tmp_path):
    output = tmp_path / "labeled.jsonl"
    output.write_text(json.dumps({"id": "a"}) + "\n{oops\n" + json.dumps({"id": "b"}) + "\n")
    with pytest.raises(PreferenceDataError, match="row 1, line 2"):
        done_ids(output)


def test_repair_torn_tail_leaves_a_complete_file_alone(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a"}\n')
    assert repair_torn_tail(path) == 0 and path.read_text() == '{"id": "a"}\n'


def test_pairs_are_checked_before_any_judge_loads():
    bad = [RECORDS[0], {**RECORDS[1], "response_b": None}, RECORDS[0]]
    with pytest.raises(PreferenceDataError) as error:
        validate_pairs_to_label(bad)
    assert [(p.row, p.column) for p in error.value.problems] == [(1, "response_b"), (2, "id")]


def test_reference_judges_need_the_reference_column():
    with pytest.raises(PreferenceDataError, match="column 'reference': is missing; reference-based judges"):
        validate_pairs_to_label(RECORDS, reference_column="reference")


class ForgetfulJudge(RecordingJudge):
    """Gives no verdict (an unparseable answer) for the prompts in ``unreadable``."""

    def __init__(self, unreadable: set[str]):
        super().__init__()
        self.unreadable = unreadable

    def judge(self, prompts, response_pairs, references=None):
        judgements = super().judge(prompts, response_pairs, references)
        return [Judgement(None, 0.5, 0.5) if p in self.unreadable else j for p, j in zip(prompts, judgements)]


def test_a_pair_without_a_parsed_verdict_is_asked_again_on_rerun(tmp_path):
    output = tmp_path / "labeled.jsonl"
    first = label_records(RECORDS[:4], ForgetfulJudge({"Question 1?"}), output, progress=False)
    assert first.labels[None] == 1 and [r["label"] for r in read_labeled(output)][1] is None

    second = RecordingJudge()
    summary = label_records(RECORDS[:4], second, output, progress=False)
    assert second.seen == ["Question 1?"]
    assert (summary.labeled, summary.skipped, summary.retried) == (1, 3, 1)
    assert "1 of them asked again (their earlier verdict could not be parsed)" in str(summary)
    rows = read_labeled(output)
    assert sorted(r["id"] for r in rows) == [f"pair-{i}" for i in range(4)]  # each pair once
    assert all(r["label"] is not None for r in rows)
