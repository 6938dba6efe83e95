"""The vote store: one fsynced JSON line per vote, per-process files, torn lines skipped, scheduled Hub sync."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from prefkit.data import votes as votes_module
from prefkit.data.votes import (
    SCHEMA_VERSION,
    TornLineWarning,
    Vote,
    VoteError,
    VoteStore,
    double_labeled,
    hash_annotator,
    item_id,
    read_votes,
    vote_counts,
)


def make_vote(**overrides):
    fields = dict(
        prompt="Tell me about tea.",
        response_a="Tea is a drink made from leaves.",
        response_b="No.",
        verdict="a",
        strength="clearly",
        source_a="policy best-of-4",
        source_b="policy",
        shown_left="b",
        annotator=hash_annotator("alice"),
        generation={"temperature": 0.7, "max_new_tokens": 64},
        reward_a=1.5,
        reward_b=-0.5,
    )
    fields.update(overrides)
    return Vote.new(**fields)


def test_an_appended_vote_reads_back_with_every_schema_field(tmp_path):
    store = VoteStore(tmp_path)
    vote = store.append(make_vote())

    (stored,) = store.read()
    record = json.loads(store.path.read_text())

    assert stored == vote
    assert record["schema_version"] == SCHEMA_VERSION
    for name in ("vote_id", "pair_id", "item_id", "prompt", "response_a", "response_b", "source_a", "source_b",
                 "shown_left", "verdict", "strength", "annotator", "generation", "reward_a", "reward_b", "created_at"):
        assert name in record, name
    assert record["shown_left"] == "b" and record["generation"]["temperature"] == 0.7


def test_each_append_is_fsynced_before_it_returns(tmp_path, monkeypatch):
    store = VoteStore(tmp_path)
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append((fd, os.fstat(fd).st_size))
        real_fsync(fd)

    monkeypatch.setattr(votes_module.os, "fsync", recording_fsync)
    store.append(make_vote())
    size_after_first = store.path.stat().st_size
    store.append(make_vote())

    file_syncs = [size for fd, size in synced if fd == store._fd]
    assert file_syncs == [size_after_first, store.path.stat().st_size]


def test_one_line_per_vote_in_a_file_of_this_process(tmp_path):
    store = VoteStore(tmp_path)
    for _ in range(3):
        store.append(make_vote())

    assert store.path.parent == tmp_path / "votes"
    assert f"-{os.getpid()}-" in store.path.name
    assert len(store.path.read_text().splitlines()) == 3


def test_concurrent_appends_from_many_threads_lose_and_duplicate_nothing(tmp_path):
    store = VoteStore(tmp_path)

    def vote_50_times(_):
        return [store.append(make_vote()).vote_id for _ in range(50)]

    with ThreadPoolExecutor(8) as pool:
        ids = [vote_id for batch in pool.map(vote_50_times, range(8)) for vote_id in batch]

    stored = [vote.vote_id for vote in store.read()]
    assert len(stored) == 400 and sorted(stored) == sorted(ids)
    assert all(json.loads(line) for line in store.path.read_text().splitlines())


def test_two_writers_on_one_folder_keep_separate_files_and_read_merges_them(tmp_path):
    first, second = VoteStore(tmp_path), VoteStore(tmp_path)
    a = first.append(make_vote())
    b = second.append(make_vote())

    assert first.path != second.path
    assert {vote.vote_id for vote in read_votes(tmp_path)} == {a.vote_id, b.vote_id}


def test_a_torn_last_line_is_skipped_with_a_warning_and_earlier_votes_survive(tmp_path):
    store = VoteStore(tmp_path)
    kept = [store.append(make_vote()).vote_id for _ in range(2)]
    line = json.dumps(make_vote().to_dict())
    with open(store.path, "a") as file:
        file.write(line[: len(line) // 2])  # the writer died mid-line

    with pytest.warns(TornLineWarning, match=r"line 3: torn last line"):
        stored = read_votes(tmp_path)

    assert [vote.vote_id for vote in stored] == kept


def test_a_malformed_line_in_the_middle_is_skipped_with_its_line_number(tmp_path):
    store = VoteStore(tmp_path)
    store.append(make_vote())
    with open(store.path, "a") as file:
        file.write('{"verdict": "sideways"}\n')
    store.append(make_vote())

    with pytest.warns(TornLineWarning, match=r"line 2: malformed line"):
        stored = read_votes(tmp_path)

    assert len(stored) == 2


def test_a_failed_write_moves_the_store_to_a_fresh_file_so_the_next_vote_is_not_swallowed(tmp_path, monkeypatch):
    store = VoteStore(tmp_path)
    first = store.append(make_vote())
    broken_path = store.path
    real_write = os.write

    def write_half_then_fail(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(votes_module.os, "write", write_half_then_fail)
    with pytest.raises(OSError):
        store.append(make_vote())
    monkeypatch.setattr(votes_module.os, "write", real_write)
    third = store.append(make_vote())

    assert store.path != broken_path
    with pytest.warns(TornLineWarning):
        stored = read_votes(tmp_path)
    assert {vote.vote_id for vote in stored} == {first.vote_id, third.vote_id}


def test_a_vote_from_a_newer_schema_is_skipped_with_a_warning(tmp_path):
    store = VoteStore(tmp_path)
    record = make_vote().to_dict() | {"schema_version": SCHEMA_VERSION + 1}
    store.path.write_text(json.dumps(record) + "\n")

    with pytest.warns(TornLineWarning, match="upgrade prefkit"):
        assert read_votes(tmp_path) == []


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"verdict": "left"}, "verdict must be one of"),
        ({"verdict": "tie", "strength": "much"}, "takes no strength"),
        ({"strength": "enormously"}, "strength must be one of"),
        ({"shown_left": "c"}, "shown_left must be"),
        ({"prompt": "  "}, "prompt must be"),
    ],
)
def test_an_invalid_vote_is_refused_with_the_field_named(overrides, message):
    with pytest.raises(VoteError, match=message):
        make_vote(**overrides)


def test_annotator_pseudonyms_are_stable_and_do_not_contain_the_name():
    assert hash_annotator("Alice ") == hash_annotator("alice")
    assert hash_annotator("alice") != hash_annotator("bob")
    assert "alice" not in hash_annotator("alice")


def test_the_same_pair_in_either_order_is_one_item_and_agreement_compares_oriented_verdicts():
    a, b = "Tea is a drink.", "No."
    assert item_id("p", a, b) == item_id("p", b, a)
    first = make_vote(prompt="p", response_a=a, response_b=b, verdict="a", annotator="ann-1")
    swapped = make_vote(prompt="p", response_a=b, response_b=a, verdict="b", annotator="ann-2")  # same preference
    third = make_vote(prompt="p", response_a=a, response_b=b, verdict="b", annotator="ann-3")  # ignored: 2 already

    # Sorted order puts "No." first, so both votes say: the second response of the item ("Tea is a drink.") won.
    assert double_labeled([first, swapped, third]) == [("b", "b")]


def test_counts_per_verdict_and_per_annotator():
    votes = [make_vote(annotator="ann-1"), make_vote(annotator="ann-1", verdict="tie", strength=None),
             make_vote(annotator="ann-2", verdict="both_bad", strength=None, rewrite="A better answer.")]

    counts = vote_counts(votes)

    assert counts["votes"] == 3
    assert counts["by_verdict"] == {"a": 1, "b": 0, "tie": 1, "both_bad": 1}
    assert counts["by_annotator"] == {"ann-1": 2, "ann-2": 1}
    assert counts["rewrites"] == 1


# ------------------------------------------------------------------------------------------------------------ Hub sync


class FakeHubApi:
    """The Hub client at its boundary: records repos and commits, runs futures on one worker like HfApi does."""

    def __init__(self):
        self.repos = []
        self.commits = []
        self._pool = ThreadPoolExecutor(1)
        self.lock = threading.Lock()

    def create_repo(self, repo_id, private=None, repo_type=None, exist_ok=False, **kwargs):
        self.repos.append((repo_id, repo_type, private))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def create_commit(self, repo_id, repo_type, operations, commit_message, revision=None, **kwargs):
        files = {}
        for operation in operations:
            operation.path_or_fileobj.seek(0)
            files[operation.path_in_repo] = operation.path_or_fileobj.read().decode()
        self.commits.append({"repo_id": repo_id, "repo_type": repo_type, "files": files})
        return type("CommitInfo", (), {"commit_url": f"https://hub/{repo_id}/commit/{len(self.commits)}"})()

    def run_as_future(self, fn, *args, **kwargs) -> Future:
        return self._pool.submit(fn, *args, **kwargs)


def test_hub_sync_commits_the_vote_files_and_an_unchanged_folder_makes_no_new_commit(tmp_path):
    api = FakeHubApi()
    store = VoteStore(tmp_path, hub_repo="me/votes", token="hf_secret", every_minutes=60, hf_api=api)
    try:
        store.sync.trigger().result()  # the scheduler's start-up upload of an empty folder has run by then too
        assert api.commits == []
        first = store.append(make_vote())
        second = store.append(make_vote())
        store.sync.trigger().result()
        store.sync.trigger().result()  # nothing changed since

        assert api.repos == [("me/votes", "dataset", True)]
        assert len(api.commits) == 1
        (path, content), = api.commits[0]["files"].items()
        assert path == f"votes/{store.path.name}"
        assert [json.loads(line)["vote_id"] for line in content.splitlines()] == [first.vote_id, second.vote_id]

        third = store.append(make_vote())
        store.sync.trigger().result()
        assert len(api.commits) == 2
        assert json.loads(api.commits[1]["files"][path].splitlines()[-1])["vote_id"] == third.vote_id
        assert "last upload at" in store.sync_status() and "2 commit(s)" in store.sync_status()
    finally:
        store.sync.stop()


def test_hub_sync_that_cannot_start_keeps_votes_local_and_never_shows_the_token(tmp_path):
    class Unreachable(FakeHubApi):
        def create_repo(self, *args, **kwargs):
            raise ConnectionError("cannot reach https://huggingface.co with token hf_secret")

    store = VoteStore(tmp_path, hub_repo="me/votes", token="hf_secret", hf_api=Unreachable())
    store.append(make_vote())

    assert "off" in store.sync_status() and "hf_secret" not in store.sync_status()
    assert len(store.read()) == 1


def test_without_a_repo_the_status_says_how_to_turn_sync_on(tmp_path):
    assert "Hub sync off" in VoteStore(tmp_path).sync_status()


# ------------------------------------------------------------------------------------------------ votes -> TRL rows


def test_a_graded_vote_becomes_a_pair_with_the_scale_margin_and_the_winner_chosen():
    from prefkit.data.votes import votes_to_rows

    much_b = make_vote(verdict="b", strength="much")
    clearly_a = make_vote(verdict="a", strength="clearly")

    rows = votes_to_rows([much_b, clearly_a], kind="dpo")

    assert rows[0]["chosen"] == much_b.response_b and rows[0]["rejected"] == much_b.response_a
    assert rows[0]["margin"] == pytest.approx(1.0)
    assert rows[1]["chosen"] == clearly_a.response_a and rows[1]["margin"] == pytest.approx(2 / 3)
    assert [row["vote_id"] for row in rows] == [much_b.vote_id, clearly_a.vote_id]


def test_ungraded_wins_have_no_margin_for_dpo_and_zero_margin_for_a_reward_model():
    from prefkit.data.votes import votes_to_rows

    votes = [make_vote(verdict="a", strength=None)]

    assert "margin" not in votes_to_rows(votes, kind="dpo")[0]
    assert votes_to_rows(votes, kind="reward")[0]["margin"] == 0.0


def test_ties_and_both_bad_make_no_pair_but_both_bad_makes_two_undesirable_kto_rows():
    from prefkit.data.votes import votes_to_rows

    votes = [make_vote(verdict="tie", strength=None), make_vote(verdict="both_bad", strength=None)]

    assert votes_to_rows(votes, kind="dpo") == []
    kto = votes_to_rows(votes, kind="kto")
    assert [(row["completion"], row["label"]) for row in kto] == [(votes[1].response_a, False), (votes[1].response_b, False)]


def test_a_rewrite_is_chosen_over_both_original_responses():
    from prefkit.data.votes import votes_to_rows

    vote = make_vote(verdict="both_bad", strength=None, rewrite="Tea is an infusion of Camellia sinensis leaves.")

    rows = votes_to_rows([vote], kind="dpo")

    assert [(row["chosen"], row["rejected"]) for row in rows] == [
        (vote.rewrite, vote.response_a), (vote.rewrite, vote.response_b)
    ]
    assert all(row["margin"] == pytest.approx(2 / 3) for row in rows)


def test_exported_votes_pass_the_exporters_validation_and_load_as_a_dataset(tmp_path):
    from prefkit.data.export import export_pairs
    from prefkit.data.io import load_dataset_any
    from prefkit.data.votes import votes_to_rows

    votes = [make_vote(verdict="a", strength="slightly"), make_vote(verdict="b", strength=None)]

    path = export_pairs(votes_to_rows(votes, kind="reward"), tmp_path / "pairs.parquet")

    dataset = load_dataset_any(path, split="train")
    assert dataset.column_names[:4] == ["prompt", "chosen", "rejected", "margin"]
    assert dataset["margin"] == pytest.approx([1 / 3, 0.0])


def test_a_version_1_vote_file_without_gold_or_timing_fields_still_loads_and_exports(tmp_path):
    from prefkit.data.votes import votes_to_rows

    old = {k: v for k, v in make_vote().to_dict().items() if k not in ("gold_answer", "seconds_to_vote")}
    old["schema_version"] = 1
    folder = tmp_path / "votes"
    folder.mkdir()
    (folder / "votes-old-host-1-20250101T000000-abcdef.jsonl").write_text(json.dumps(old) + "\n")

    (vote,) = read_votes(tmp_path)

    assert vote.schema_version == 1 and vote.gold_answer is None and vote.seconds_to_vote is None
    assert not vote.is_gold and len(votes_to_rows([vote])) == 1


def test_a_gold_vote_round_trips_with_its_answer_and_time_but_makes_no_training_row(tmp_path):
    from prefkit.data.votes import votes_to_rows

    store = VoteStore(tmp_path)
    store.append(make_vote(gold_answer="a", seconds_to_vote=4.25))

    (stored,) = store.read()

    assert stored.gold_answer == "a" and stored.seconds_to_vote == 4.25 and stored.is_gold
    assert votes_to_rows([stored]) == []
