"""Moderation: an admin hides (and un-hides) votes, one by id or all of one annotator, with a reason. Nothing is deleted:
the vote files stay as they were, an append-only log beside them says what is hidden, and every consumer (counts, the
leaderboard, the trust tables, exports, the dataset card, the Train tab's rows) leaves hidden votes out.
Also: the Train tab's start / cancel / push are for admins under Hugging Face sign-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from prefkit.app import AppModels, AppSettings, build_app  # noqa: E402
from prefkit.app.train_tab import ADMIN_NOTE  # noqa: E402
from prefkit.data.export import build_dataset_card, to_dataset  # noqa: E402
from prefkit.data.votes import ModerationError, Vote, VoteStore, hash_annotator, read_votes  # noqa: E402
from test_app_auth import SALT, TOKEN, handler, mocked_hub_account, profile, vowel_reward  # noqa: E402,F401

ADMIN = "ada-admin-login"
DPO_LABEL = "DPO (a LoRA adapter on the policy)"


def add_votes(store: VoteStore) -> list[Vote]:
    """Four battles of m1 against m2: m1 wins the first three, m2 the last; alice casts votes 0 and 2, bob 1 and 3."""
    return [
        store.append(Vote.new(
            prompt=f"Tell me about tea, take {index}.", response_a=f"A kind answer about tea, number {index}.",
            response_b=f"Tea. {index}", verdict="a" if index < 3 else "b", source_a="m1", source_b="m2",
            annotator=("ann-alice", "ann-bob")[index % 2],
        ))
        for index in range(4)
    ]


def make_app(tiny_policy, data_dir, **settings):
    model, tokenizer = tiny_policy
    defaults = dict(data_dir=str(data_dir), n=2, max_new_tokens=4, relabel_fraction=0.0, annotator_salt=SALT,
                    login="huggingface", admins=ADMIN, hub_token=TOKEN, train_tab="on")
    models = AppModels.from_objects(model, tokenizer, vowel_reward, policy_name="tiny")
    return build_app(store=VoteStore(data_dir), settings=AppSettings(**{**defaults, **settings}), models=models,
                     prompts=["Tell me about tea."], seed=0)


def moderate(demo, action, kind, target, reason, who=None):
    return handler(demo, "moderate")(action, kind, target, reason, None, profile(ADMIN) if who is None else who)


def consumers(demo) -> dict:
    """What each consumer of the votes sees: summary counts, leaderboard, reliability table, export, training rows."""
    markdown, _, board, _ = handler(demo, "data_summary")()
    _, reliability, _ = handler(demo, "data_trust")(None, profile(ADMIN))
    path, message = handler(demo, "export")("dpo", "JSONL", "keep", None, profile(ADMIN))
    rows, description, votes = demo.prefkit_train.training_rows("dpo", "keep")
    return {
        "summary": markdown,
        "battles": dict(zip(board["model"], board["battles"])),
        "m2 wins": int(board.loc[board["model"] == "m2", "wins"].iloc[0]),
        "reliability votes": dict(zip(reliability["annotator"], reliability["votes"])),
        "exported": {json.loads(line)["vote_id"] for line in Path(path).read_text().splitlines()},
        "export message": message,
        "trained": {row["vote_id"] for row in rows},
        "training description": description,
    }


# --------------------------------------------------------------------------------------------------------- the store


def test_hiding_keeps_the_vote_on_disk_and_reading_leaves_it_out_until_it_is_unhidden(tmp_path):
    store = VoteStore(tmp_path)
    votes = add_votes(store)
    files_before = {path: path.read_bytes() for path in store.votes_folder.glob("votes-*.jsonl")}

    entry = store.hide(vote_id=votes[3].vote_id, reason="  spam  ", by="ann-admin")

    assert entry.reason == "spam" and entry.target == f"vote {votes[3].vote_id}"
    assert [vote.vote_id for vote in store.read()] == [vote.vote_id for vote in votes[:3]]
    assert [vote.vote_id for vote in store.read(include_hidden=True)] == [vote.vote_id for vote in votes]
    assert [vote.vote_id for vote in store.hidden()] == [votes[3].vote_id]
    assert {path: path.read_bytes() for path in store.votes_folder.glob("votes-*.jsonl")} == files_before

    store.unhide(vote_id=votes[3].vote_id, reason="not spam after all", by="ann-admin")

    assert len(store.read()) == 4 and store.hidden() == []
    assert [entry.action for entry in store.moderation().entries] == ["hide", "unhide"]  # the log keeps both


def test_hiding_an_annotator_hides_all_their_votes_later_ones_too(tmp_path):
    store = VoteStore(tmp_path)
    votes = add_votes(store)

    store.hide(annotator="ann-bob", reason="clicks without reading", by="ann-admin")
    later = store.append(Vote.new(prompt="Later.", response_a="x", response_b="y", verdict="a", annotator="ann-bob"))

    assert [vote.vote_id for vote in store.read()] == [votes[0].vote_id, votes[2].vote_id]
    assert later.vote_id in {vote.vote_id for vote in store.hidden()}
    with pytest.raises(ModerationError, match="hidden with every vote of its annotator ann-bob: un-hide the annotator"):
        store.unhide(vote_id=votes[1].vote_id, reason="?", by="ann-admin")
    store.unhide(annotator="ann-bob", reason="talked to them", by="ann-admin")
    assert len(store.read()) == 5


def test_the_moderation_log_survives_a_restart_and_the_cli_reader_respects_it(tmp_path):
    first = VoteStore(tmp_path)
    votes = add_votes(first)
    first.hide(vote_id=votes[0].vote_id, reason="duplicate", by="ann-admin")
    first.close()

    again = VoteStore(tmp_path)  # a new process on the same folder

    assert votes[0].vote_id not in {vote.vote_id for vote in again.read()}
    assert len(read_votes(tmp_path)) == 3 and len(read_votes(tmp_path, include_hidden=True)) == 4
    assert [(entry.action, entry.reason) for entry in again.moderation().entries] == [("hide", "duplicate")]
    again.unhide(vote_id=votes[0].vote_id, reason="not a duplicate", by="ann-admin")
    assert len(VoteStore(tmp_path).read()) == 4
    assert len(list(again.votes_folder.glob("moderation-*.jsonl"))) == 2  # one file per process, like the votes


def test_the_hub_sync_uploads_the_moderation_log_with_the_votes(tmp_path):
    from test_votes import FakeHubApi

    api = FakeHubApi()
    store = VoteStore(tmp_path, hub_repo="me/votes", token="hf_secret", every_minutes=60, hf_api=api)
    try:
        votes = add_votes(store)
        store.hide(vote_id=votes[0].vote_id, reason="spam", by="ann-admin")
        store.sync.trigger().result()
    finally:
        store.sync.stop()

    files = {path: content for commit in api.commits for path, content in commit["files"].items()}
    assert set(files) == {f"votes/{store.path.name}", f"votes/{store.moderation_path.name}"}
    assert json.loads(files[f"votes/{store.moderation_path.name}"])["vote_id"] == votes[0].vote_id


def test_bad_moderation_input_raises_a_message_naming_what_is_wrong(tmp_path):
    store = VoteStore(tmp_path)
    votes = add_votes(store)

    with pytest.raises(ModerationError, match="No vote has the id 'no-such-id'"):
        store.hide(vote_id="no-such-id", reason="spam")
    with pytest.raises(ModerationError, match="No vote comes from the annotator 'ann-nobody'"):
        store.hide(annotator="ann-nobody", reason="spam")
    with pytest.raises(ModerationError, match="Give a reason"):
        store.hide(vote_id=votes[0].vote_id, reason="   ")
    with pytest.raises(ModerationError, match="nothing to un-hide"):
        store.unhide(vote_id=votes[0].vote_id, reason="why not")
    store.hide(vote_id=votes[0].vote_id, reason="spam")
    with pytest.raises(ModerationError, match="already hidden"):
        store.hide(vote_id=votes[0].vote_id, reason="spam again")
    assert len(store.moderation().entries) == 1


def test_the_dataset_card_says_how_many_votes_moderation_hid():
    dataset = to_dataset([{"prompt": "p", "chosen": "a", "rejected": "b"}])

    assert "## Moderation\n\n2 votes were hidden by the app's admins" in build_dataset_card(dataset, "me/x", hidden_votes=2)
    assert "No votes were hidden by moderation." in build_dataset_card(dataset, "me/x", hidden_votes=0)
    assert "## Moderation" not in build_dataset_card(dataset, "me/x")


# ------------------------------------------------------------------------------------------------------------ the app


def test_a_hidden_vote_leaves_every_consumer_and_unhiding_brings_it_back(tiny_policy, tmp_path):
    demo = make_app(tiny_policy, tmp_path)
    votes = add_votes(demo.prefkit_store)
    before = consumers(demo)
    assert before["battles"] == {"m1": 4, "m2": 4} and before["m2 wins"] == 1

    message, table, log = moderate(demo, "hide", "vote id", votes[3].vote_id, "m2's only win was a test click")
    hidden = consumers(demo)

    assert "Hid the vote" in message and "1 vote(s) are hidden" in message
    assert hidden["summary"].startswith("**3 votes**") and "1 more vote(s) are hidden" in hidden["summary"]
    assert hidden["battles"] == {"m1": 3, "m2": 3} and hidden["m2 wins"] == 0  # the leaderboard and its style fit
    assert hidden["reliability votes"] == {"ann-alice": 2, "ann-bob": 1}
    assert votes[3].vote_id not in hidden["exported"] and len(hidden["exported"]) == 3
    assert "1 vote was hidden by the app's admins" in hidden["export message"]
    assert votes[3].vote_id not in hidden["trained"] and "1 vote(s) hidden by moderation" in hidden["training description"]
    assert len(demo.prefkit_store.read(include_hidden=True)) == 4  # still stored
    assert table.loc[table["vote id"] == votes[3].vote_id, "hidden"].iloc[0].endswith("m2's only win was a test click")
    assert list(log["action"]) == ["hide"] and log["by"].iloc[0] == hash_annotator(f"hf:id-of-{ADMIN}", SALT)

    moderate(demo, "un-hide", "vote id", votes[3].vote_id, "it was a real vote")

    assert consumers(demo)["exported"] == before["exported"] and consumers(demo)["battles"] == before["battles"]


def test_hiding_an_annotator_in_the_app_leaves_their_votes_out_of_the_tables(tiny_policy, tmp_path):
    demo = make_app(tiny_policy, tmp_path)
    votes = add_votes(demo.prefkit_store)

    moderate(demo, "hide", "annotator", "ann-bob", "position bias")
    seen = consumers(demo)

    assert set(seen["reliability votes"]) == {"ann-alice"}
    assert seen["exported"] == seen["trained"] == {votes[0].vote_id, votes[2].vote_id}
    assert seen["summary"].startswith("**2 votes**")


def test_the_pushed_dataset_card_counts_the_hidden_votes(tiny_policy, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    files = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: repo_id)
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, operations, **kwargs: files.update(
        {op.path_in_repo: op.path_or_fileobj for op in operations}))
    demo = make_app(tiny_policy, tmp_path)
    votes = add_votes(demo.prefkit_store)
    moderate(demo, "hide", "vote id", votes[1].vote_id, "spam")

    message = handler(demo, "push_export")("dpo", "me/pairs", "keep", None, profile(ADMIN))

    assert "Pushed 3 rows" in message
    assert "1 vote was hidden by the app's admins (moderation)" in files["README.md"].decode()


def test_a_non_admin_is_refused_with_a_message_and_nothing_is_logged(tiny_policy, tmp_path):
    demo = make_app(tiny_policy, tmp_path)
    votes = add_votes(demo.prefkit_store)

    for who in (profile("grace"), None):
        with pytest.raises(gr.Error, match="Only the app.{1,6}s admins can hide or un-hide votes"):
            handler(demo, "moderate")("hide", "vote id", votes[0].vote_id, "spam", None, who)
    assert handler(demo, "moderation")(None, profile("grace")) == (None, None)
    assert demo.prefkit_store.moderation().entries == [] and len(demo.prefkit_store.read()) == 4


def test_bad_input_in_the_app_is_a_message_in_the_page(tiny_policy, tmp_path):
    demo = make_app(tiny_policy, tmp_path)
    votes = add_votes(demo.prefkit_store)

    for args, expected in (
        (("hide", "vote id", "no-such-id", "spam"), "No vote has the id"),
        (("hide", "annotator", "ann-nobody", "spam"), "No vote comes from the annotator"),
        (("hide", "vote id", votes[0].vote_id, ""), "Give a reason"),
        (("hide", "vote id", "", "spam"), "Give the vote id to hide"),
        (("delete", "vote id", votes[0].vote_id, "spam"), "Choose an action: hide or un-hide"),
    ):
        with pytest.raises(gr.Error, match=expected):
            moderate(demo, *args)
    assert demo.prefkit_store.moderation().entries == []


def test_the_log_holds_pseudonyms_never_a_username_or_token(tiny_policy, tmp_path):
    demo = make_app(tiny_policy, tmp_path)
    votes = add_votes(demo.prefkit_store)
    moderate(demo, "hide", "vote id", votes[0].vote_id, "spam")
    moderate(demo, "hide", "annotator", "ann-bob", "bias")

    log = "\n".join(path.read_text() for path in Path(tmp_path, "votes").glob("moderation-*.jsonl"))
    stored = "\n".join(path.read_text(errors="replace") for path in Path(tmp_path).rglob("*") if path.is_file())

    assert len(log.splitlines()) == 2 and hash_annotator(f"hf:id-of-{ADMIN}", SALT) in log
    for secret in (ADMIN, TOKEN, f"id-of-{ADMIN}"):
        assert secret not in stored


def test_the_leaderboard_has_the_full_width_so_no_column_is_cut(tiny_policy, tmp_path):
    demo = make_app(tiny_policy, tmp_path)
    board = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "leaderboard")

    ancestors, block = [], board.parent
    while block is not None:
        ancestors.append(block)
        block = block.parent
    assert ancestors and not any(isinstance(block, gr.Row) for block in ancestors)  # in a row it had half the width


# ------------------------------------------------------------------------------------------------- the Train tab


@pytest.fixture
def train_calls(monkeypatch):
    """Replace the runner's start / cancel / push (each of which starts or kills a process, or uploads) by a record."""
    from prefkit.app.train_tab import TrainRunner

    calls = []
    monkeypatch.setattr(TrainRunner, "start", lambda self, *args: calls.append("start"))
    monkeypatch.setattr(TrainRunner, "cancel", lambda self: calls.append("cancel"))
    monkeypatch.setattr(TrainRunner, "push", lambda self, repo, token: calls.append("push") or f"https://hf.co/{repo}")
    return calls


TRAIN_ACTIONS = (("train_start", (DPO_LABEL, "keep", 2)), ("train_cancel", ()), ("train_push", ("me/model",)))


def test_under_sign_in_only_admins_start_cancel_and_push_training_runs(tiny_policy, tmp_path, train_calls):
    demo = make_app(tiny_policy, tmp_path)

    for api_name, args in TRAIN_ACTIONS:
        for who in (profile("grace"), None):
            with pytest.raises(gr.Error, match="Only the app.{1,6}s admins can"):
                handler(demo, api_name)(*args, None, who)
    assert train_calls == []

    for api_name, args in TRAIN_ACTIONS:
        handler(demo, api_name)(*args, None, profile(ADMIN))
    assert train_calls == ["start", "cancel", "push"]


def test_under_sign_in_the_train_controls_show_only_for_admins(tiny_policy, tmp_path):
    demo = make_app(tiny_policy, tmp_path)
    controls = [block for block in demo.blocks.values() if getattr(block, "elem_id", None) in ("train-controls", "train-push")]
    assert len(controls) == 2 and not any(block.visible for block in controls)  # hidden until the page load says

    *_, start_controls, push_controls, note = handler(demo, "access")(None, profile("grace"))
    assert (start_controls.visible, push_controls.visible, note) == (False, False, ADMIN_NOTE)
    *_, start_controls, push_controls, note = handler(demo, "access")(None, profile(ADMIN))
    assert (start_controls.visible, push_controls.visible, note) == (True, True, "")


def test_locally_everyone_may_train_as_before(tiny_policy, tmp_path, train_calls):
    demo = make_app(tiny_policy, tmp_path, login="name", admins=None, annotator_salt=None)

    for api_name, args in TRAIN_ACTIONS:
        handler(demo, api_name)(*args, None, None)
    assert train_calls == ["start", "cancel", "push"]
    assert all(block.visible for block in demo.blocks.values()
               if getattr(block, "elem_id", None) in ("train-controls", "train-push"))
    assert list(handler(demo, "access")(None, None))[-3:] == [gr.skip()] * 3


def test_prefkit_export_of_the_vote_folder_leaves_hidden_votes_out_and_counts_them_in_the_card(tmp_path, capsys, monkeypatch):
    from prefkit.commands import export as export_command
    from prefkit.data import export as export_module

    store = VoteStore(tmp_path / "data")
    votes = add_votes(store)
    store.hide(vote_id=votes[1].vote_id, reason="spam", by="ann-admin")
    store.close()
    pushed = {}
    monkeypatch.setattr(export_module, "push_dataset_to_hub", lambda dataset, repo, **kw: pushed.update(kw, rows=len(dataset)))
    output = tmp_path / "pairs.jsonl"

    code = export_command.main(["--input", str(tmp_path / "data"), "--output", str(output), "--push_to_hub", "me/votes"])

    assert code == 0
    exported = {json.loads(line)["vote_id"] for line in output.read_text().splitlines()}
    assert votes[1].vote_id not in exported and len(exported) == 3
    assert "1 hidden by moderation" in capsys.readouterr().out
    assert pushed["hidden_votes"] == 1 and pushed["rows"] == 3
