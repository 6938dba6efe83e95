"""The app's trust features on the tiny offline models: gold pairs mixed in unannounced, vote timing, the Data tab's
reliability and interval tables, export policies, and uncertainty-driven pair selection."""

from __future__ import annotations

import tempfile

import pytest

gr = pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from prefkit.app import AppModels, AppSettings, build_app  # noqa: E402
from prefkit.app.logic import MODE_BEST_VS_SAMPLE  # noqa: E402
from prefkit.data.reliability import GoldPair  # noqa: E402
from prefkit.data.votes import Vote, VoteStore  # noqa: E402
from helpers import start_app  # noqa: E402

DPO_EXPORT = "DPO pairs (prompt / chosen / rejected / margin when graded)"
GOLD = GoldPair(prompt="What is 2 + 2?", a="2 + 2 = 4.", b="2 + 2 = 5.", answer="a")


def length_reward(prompts, responses):
    return [float(len(response)) for response in responses]


def launch(tiny_policy, data_dir, compare=None, gold_pairs=None, **settings):
    policy, tokenizer = tiny_policy
    defaults = dict(data_dir=str(data_dir), n=3, max_new_tokens=6, relabel_fraction=0.0)
    store = VoteStore(data_dir)
    models = AppModels.from_objects(
        policy, tokenizer, length_reward, policy_name="tiny", compare=compare, compare_name="tiny-other"
    )
    demo = build_app(
        store=store, settings=AppSettings(**{**defaults, **settings}), models=models,
        prompts=["Tell me about tea."], seed=0, gold_pairs=gold_pairs,
    )
    demo.queue(default_concurrency_limit=1)
    _, url, _ = start_app(demo)
    return demo, store, Client(url, verbose=False)


def test_a_gold_pair_is_shown_like_any_pair_and_its_vote_is_stored_as_gold_but_never_exported(tiny_policy, tmp_path):
    demo, store, client = launch(tiny_policy, tmp_path, gold_pairs=[GOLD], gold_rate=1.0)
    try:
        left, right, prompt, note = client.predict("", MODE_BEST_VS_SAMPLE, "carol", api_name="/new_pair")
        assert prompt == GOLD.prompt and {left, right} == {GOLD.a, GOLD.b}
        assert "gold" not in note.lower()

        reveal = client.predict("not graded", "", "carol", api_name="/vote_left")[0]
        assert "gold" not in reveal.lower()

        (vote,) = store.read()
        assert vote.gold_answer == "a" and vote.verdict == ("a" if left == GOLD.a else "b")
        assert vote.seconds_to_vote is not None and vote.seconds_to_vote >= 0
        with pytest.raises(Exception, match="No votes make training rows"):
            client.predict(DPO_EXPORT, "JSONL", "keep", api_name="/export")

        summary, annotators, narrowing = client.predict(api_name="/data_trust")
        assert "Annotators:** 1" in summary
        assert annotators["data"][0][2] == 1  # one gold vote
    finally:
        demo.close()


def test_the_export_policy_drops_an_annotator_who_fails_gold(tiny_policy, tmp_path):
    store = VoteStore(tmp_path)
    for k in range(4):
        for annotator, verdict in (("good", "a"), ("bad", "b")):
            store.append(Vote.new(prompt=f"gold {k}", response_a=f"right {k}", response_b=f"wrong {k}", verdict=verdict,
                                  annotator=annotator, gold_answer="a"))
            store.append(Vote.new(prompt=f"real {k}", response_a=f"one {k}", response_b=f"two {k}", verdict="a",
                                  annotator=annotator))
    store.close()
    demo, _, client = launch(tiny_policy, tmp_path)
    try:
        _, kept = client.predict(DPO_EXPORT, "JSONL", "keep", api_name="/export")
        _, dropped = client.predict(DPO_EXPORT, "JSONL", "drop", api_name="/export")
        _, default = client.predict(DPO_EXPORT, "JSONL", api_name="/export")  # the settings' policy: keep
    finally:
        demo.close()

    assert kept.startswith("Exported 8 rows") and default.startswith("Exported 8 rows")
    assert dropped.startswith("Exported 4 rows") and "1 of 2 annotators left out" in dropped


def test_uncertainty_selection_shows_the_model_pair_nobody_has_rated_yet(tiny_policy, tmp_path):
    from prefkit.models import load_model
    from prefkit.testing import build_tiny_model

    second = load_model(str(build_tiny_model(tempfile.mkdtemp(), seed=7)))
    store = VoteStore(tmp_path)
    for k in range(40):  # best-of-3 against one sample is well measured; the second model never met anyone
        store.append(Vote.new(prompt="p", response_a=f"a{k}", response_b=f"b{k}", verdict="ab"[k % 3 == 0],
                              source_a="tiny best-of-3", source_b="tiny"))
    store.close()
    demo, store, client = launch(tiny_policy, tmp_path, compare=second, pair_selection="uncertainty")
    try:
        _, _, _, note = client.predict("Tell me about tea.", MODE_BEST_VS_SAMPLE, "dan", api_name="/new_pair")
        client.predict("not graded", "", "dan", api_name="/vote_tie")
    finally:
        demo.close()

    assert "Active selection" in note and "Policy vs second model" in note
    latest = store.read()[-1]
    assert {latest.source_a, latest.source_b} == {"tiny", "tiny-other"}
