"""The Gradio app, driven with gradio_client against a launched server on the tiny offline models."""

from __future__ import annotations

import json
import tempfile
import threading

import pytest

gr = pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from prefkit.app import AppModels, AppSettings, build_app  # noqa: E402
from prefkit.app.logic import MODE_BEST_VS_SAMPLE, MODE_TWO_MODELS, MODE_TWO_SAMPLES  # noqa: E402
from prefkit.data.votes import VoteStore  # noqa: E402
from helpers import start_app  # noqa: E402

DPO_EXPORT = "DPO pairs (prompt / chosen / rejected / margin when graded)"


def vowel_score(text: str) -> float:
    return sum(text.count(v) for v in "aeiou") + len(text) / 1000


def vowel_reward(prompts, responses):
    return [vowel_score(response) for response in responses]


@pytest.fixture(scope="module")
def second_policy():
    from prefkit.models import load_model
    from prefkit.testing import build_tiny_model

    model, tokenizer = load_model(str(build_tiny_model(tempfile.mkdtemp(), seed=7)))
    return model.eval(), tokenizer


def launch(demo):
    demo.queue(default_concurrency_limit=1)
    _, url, _ = start_app(demo)
    return url


def make_app(tiny_policy, data_dir, compare=None, **settings):
    policy, tokenizer = tiny_policy
    defaults = dict(data_dir=str(data_dir), n=3, max_new_tokens=8, relabel_fraction=0.0)
    app_settings = AppSettings(**{**defaults, **settings})
    store = VoteStore(data_dir)
    models = AppModels.from_objects(
        policy, tokenizer, vowel_reward, policy_name="tiny", compare=compare, compare_name="tiny-other"
    )
    demo = build_app(store=store, settings=app_settings, models=models, prompts=["Tell me about tea.", "Write a poem."], seed=0)
    return demo, store


@pytest.fixture(scope="module")
def app(tiny_policy, second_policy, tmp_path_factory):
    demo, store = make_app(tiny_policy, tmp_path_factory.mktemp("votes"), compare=second_policy)
    url = launch(demo)
    yield url, store
    demo.close()


@pytest.fixture
def client(app):
    return Client(app[0], verbose=False)


def test_best_of_n_returns_n_ranked_candidates_and_highlights_the_best(client):
    best_box, cost, chart, table, details, rank_a, rank_b = client.predict(
        "Tell me about tea.", 5, 0.9, 8, api_name="/best_of_n"
    )

    candidates = details["candidates"]
    assert len(candidates) == 5
    assert sorted(c["rank"] for c in candidates) == [1, 2, 3, 4, 5]
    best = min(candidates, key=lambda c: c["rank"])
    assert best["text"] == max((c["text"] for c in candidates), key=vowel_score)
    assert best_box["value"] == best["text"] and details["best"] == best["text"]
    assert "prefkit-best" in table and "0.636" not in cost  # KL for N = 5, not N = 4
    assert f"{details['kl_to_base']:.3f}" in cost
    assert [row[1] for row in chart["data"]] == sorted((c["reward"] for c in candidates), reverse=True)


def test_a_labeling_round_trip_writes_exactly_one_vote_matching_what_was_shown(app, client):
    _, store = app
    before = len(store.read())

    _, left, right, prompt = _new_pair(client, "Tell me about tea.", MODE_TWO_SAMPLES)
    reveal = client.predict("much", "", "alice", api_name="/vote_left")[0]

    votes = store.read()
    assert len(votes) == before + 1
    vote = votes[-1]
    shown_left = vote.response_a if vote.shown_left == "a" else vote.response_b
    assert (shown_left, vote.prompt) == (left, prompt)
    assert vote.verdict == vote.shown_left and vote.strength == "much"
    assert vote.reward_a == pytest.approx(vowel_score(vote.response_a))
    assert "Vote saved" in reveal and vote.vote_id[:8] in reveal


def _new_pair(client, prompt, mode, annotator=""):
    left, right, prompt_shown, note = client.predict(prompt, mode, annotator, api_name="/new_pair")
    assert note == ""  # nothing was cut at the time limit
    return None, left, right, prompt_shown


def test_a_second_vote_on_the_same_pair_is_refused(app, client):
    _, store = app
    _new_pair(client, "Tell me about tea.", MODE_TWO_SAMPLES)
    client.predict("not graded", "", "", api_name="/vote_tie")
    count = len(store.read())

    with pytest.raises(Exception, match="no pair to vote on"):
        client.predict("not graded", "", "", api_name="/vote_right")
    assert len(store.read()) == count


def test_best_vs_sample_pairs_name_their_sources_and_the_best_has_the_higher_reward(app, client):
    _, store = app
    _new_pair(client, "Write a poem.", MODE_BEST_VS_SAMPLE)
    client.predict("not graded", "", "", api_name="/vote_right")

    vote = store.read()[-1]
    assert (vote.source_a, vote.source_b) == ("tiny best-of-3", "tiny")
    assert vote.generation["mode"] == "best_vs_sample" and vote.generation["n"] == 3


def test_an_empty_prompt_draws_from_the_prompt_list(client):
    _, _, _, prompt = _new_pair(client, "", MODE_TWO_SAMPLES)

    assert prompt == "Tell me about tea."
    assert client.predict(api_name="/draw_prompt") == "Write a poem."


def test_an_uploaded_prompt_list_replaces_the_default(client, tmp_path):
    from gradio_client import handle_file

    path = tmp_path / "mine.txt"
    path.write_text("First question?\n\nSecond question?\n")

    info = client.predict(handle_file(str(path)), api_name="/load_prompts")

    assert "Loaded 2 prompts" in info
    assert client.predict(api_name="/draw_prompt") == "First question?"


def test_sending_two_best_of_n_candidates_puts_them_up_for_a_vote_with_their_ranks(app, client):
    _, store = app
    details = client.predict("Tell me about tea.", 4, 0.9, 8, api_name="/best_of_n")[4]
    by_rank = {c["rank"]: c for c in details["candidates"]}

    client.predict("1", "4", api_name="/send_to_label")
    client.predict("slightly", "", "carol", api_name="/vote_left")

    vote = store.read()[-1]
    assert vote.generation["mode"] == "best_of_n_tab"
    assert {vote.response_a, vote.response_b} == {by_rank[1]["text"], by_rank[4]["text"]}
    assert vote.reward_a == pytest.approx(by_rank[1]["reward"])


def test_two_model_votes_make_a_leaderboard(app, client):
    for verdict in ("/vote_left", "/vote_right", "/vote_left"):
        _new_pair(client, "Tell me about tea.", MODE_TWO_MODELS)
        client.predict("not graded", "", "dave", api_name=verdict)

    summary, annotators, board, _ = client.predict(api_name="/data_summary")

    models = [row[1] for row in board["data"]]
    assert set(models) >= {"tiny", "tiny-other"}
    assert "votes" in summary and "Hub sync off" in summary
    assert sum(row[1] for row in annotators["data"]) == summary_votes(summary)


def summary_votes(summary: str) -> int:
    return int(summary.split("**")[1].split()[0])


def test_a_rewrite_becomes_a_chosen_answer_in_the_export(app, client):
    _new_pair(client, "Tell me about tea.", MODE_TWO_SAMPLES)
    client.predict("not graded", "Tea is made by steeping leaves in hot water.", "erin", api_name="/vote_both_bad")

    path, info = client.predict(DPO_EXPORT, "JSONL", api_name="/export")

    rows = [json.loads(line) for line in open(path)]
    assert sum(row["chosen"] == "Tea is made by steeping leaves in hot water." for row in rows) == 2
    assert "Exported" in info


def test_exported_votes_train_one_dpo_step_with_prefkits_trainer(app, client, tiny_model_dir, tmp_path):
    for strength, verdict in (("much", "/vote_left"), ("slightly", "/vote_right"), ("not graded", "/vote_left")):
        _new_pair(client, "Write a poem.", MODE_TWO_SAMPLES)
        client.predict(strength, "", "frank", api_name=verdict)
    path, _ = client.predict(DPO_EXPORT, "Parquet", api_name="/export")

    from prefkit.data.io import load_dataset_any
    from prefkit.trainers.dpo import DPOConfig, DPOTrainer

    dataset = load_dataset_any(path, split="train")
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, learning_rate=1e-3,
        report_to="none", save_strategy="no", logging_steps=1, bf16=False, use_cpu=True,
    )
    trainer = DPOTrainer(tiny_model_dir, args=args, train_dataset=dataset)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    output = trainer.train()

    assert trainer.state.global_step == 1
    assert output.training_loss == pytest.approx(output.training_loss) and output.training_loss > 0
    changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not p.detach().equal(before[n])]
    assert changed


def test_the_status_endpoint_reports_ready_models(client):
    assert client.predict(api_name="/status").startswith("Ready: policy **tiny**")


# ----------------------------------------------------------------------------------------------------- limits & safety


def test_a_prompt_over_the_length_cap_is_refused(app, client):
    with pytest.raises(Exception, match="the limit is 2000"):
        client.predict("x" * 2001, 2, 0.9, 8, api_name="/best_of_n")


def test_a_rewrite_over_the_length_cap_is_refused_and_nothing_is_stored(app, client):
    _, store = app
    _new_pair(client, "Tell me about tea.", MODE_TWO_SAMPLES)
    count = len(store.read())

    with pytest.raises(Exception, match="rewritten answer is 4001 characters"):
        client.predict("not graded", "y" * 4001, "", api_name="/vote_left")
    assert len(store.read()) == count


def test_generations_are_rate_limited_per_session(tiny_policy, tmp_path):
    demo, _ = make_app(tiny_policy, tmp_path, generations_per_minute=2)
    url = launch(demo)
    try:
        first, second = Client(url, verbose=False), Client(url, verbose=False)
        for _ in range(2):
            first.predict("Tell me about tea.", MODE_TWO_SAMPLES, "", api_name="/new_pair")
        # a message in the page where the note goes, not an error; the pair shown stays (its sides are not updated)
        left, _, _, note = first.predict("Tell me about tea.", MODE_TWO_SAMPLES, "", api_name="/new_pair")
        assert "Too many generations: at most 2 per 60 s per session" in note and not isinstance(left, str)
        first.predict("not graded", "", "", api_name="/vote_tie")  # the pair shown can still be voted on
        _, _, _, note = second.predict("Tell me about tea.", MODE_TWO_SAMPLES, "", api_name="/new_pair")
        assert "Too many" not in note  # another session is fine
    finally:
        demo.close()


def test_actions_wait_for_models_that_are_still_loading(tmp_path):
    models = AppModels()
    models._set(0.4, "Reward model: training step 12 of 30")
    demo = build_app(store=VoteStore(tmp_path), settings=AppSettings(data_dir=str(tmp_path)), models=models, prompts=["Hi"])
    url = launch(demo)
    try:
        client = Client(url, verbose=False)
        assert "Loading (40%" in client.predict(api_name="/status")
        with pytest.raises(Exception, match="not ready yet.*training step 12 of 30"):
            client.predict("Tell me about tea.", 2, 0.9, 8, api_name="/best_of_n")
    finally:
        demo.close()


class ScriptedPolicy:
    """A stand-in policy whose every sample is the same given text (to test how the page renders answers)."""

    def __new__(cls, tokenizer, text):
        import torch

        class _Policy(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = torch.nn.Parameter(torch.zeros(1))
                self.config = type("Config", (), {"max_position_embeddings": 512, "_name_or_path": "scripted"})()
                self.answer = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

            def generate(self, input_ids, attention_mask, num_return_sequences, **kwargs):
                prompts = input_ids.repeat_interleave(num_return_sequences, dim=0)
                answer = torch.tensor(self.answer).expand(prompts.shape[0], -1)
                return torch.cat([prompts, answer], dim=1)

        return _Policy()


INJECTION = '<script>window.__prefkit_pwned = 1</script><img src=x onerror="window.__prefkit_pwned = 2"><b>bold</b>'


def test_an_answer_containing_script_and_html_is_rendered_as_escaped_text(tiny_tokenizer, tmp_path):
    policy = ScriptedPolicy(tiny_tokenizer, INJECTION)
    models = AppModels.from_objects(policy, tiny_tokenizer, vowel_reward, policy_name="<i>scripted</i>")
    demo = build_app(store=VoteStore(tmp_path), settings=AppSettings(data_dir=str(tmp_path)), models=models, prompts=["Hi"])
    url = launch(demo)
    try:
        client = Client(url, verbose=False)
        table = client.predict("Say hi.", 2, 0.9, 8, api_name="/best_of_n")[3]
        assert "&lt;script&gt;" in table and "&lt;img src=x" in table
        assert "<script" not in table and "<img" not in table and "<b>" not in table

        _, left, right, _ = _new_pair(client, "Say hi.", MODE_TWO_SAMPLES)
        assert left == right == INJECTION  # a textbox value: shown as typed characters, never parsed as HTML
        reveal = client.predict("not graded", "", "", api_name="/vote_tie")[0]
        assert "&lt;i&gt;scripted&lt;/i&gt;" in reveal and "<i>" not in reveal
    finally:
        demo.close()


# ---------------------------------------------------------------------------------------------------------------- load


@pytest.mark.slow
def test_eight_concurrent_clients_casting_fifty_votes_each_store_exactly_four_hundred(tiny_policy, tmp_path):
    demo, store = make_app(
        tiny_policy, tmp_path, max_new_tokens=2, generations_per_minute=1000, votes_per_minute=1000,
        global_generations_per_minute=1000,
    )
    url = launch(demo)
    confirmed: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def annotate(worker: int) -> None:
        try:
            client = Client(url, verbose=False)
            for k in range(50):
                client.predict("Tell me about tea.", MODE_TWO_SAMPLES, f"worker-{worker}", api_name="/new_pair")
                verdict = ("/vote_left", "/vote_right", "/vote_tie", "/vote_both_bad")[k % 4]
                reveal = client.predict("not graded", "", f"worker-{worker}", api_name=verdict)[0]
                with lock:
                    confirmed.append(reveal.split("id `")[1][:8])
        except BaseException as error:  # surfaced below
            errors.append(error)

    try:
        threads = [threading.Thread(target=annotate, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        demo.close()

    assert errors == []
    votes = store.read()
    assert len(votes) == 400 and len(confirmed) == 400
    assert len({vote.vote_id for vote in votes}) == 400
    assert len({vote.pair_id for vote in votes}) == 400
    assert sorted(vote.vote_id[:8] for vote in votes) == sorted(confirmed)
    assert sum(1 for line in store.path.read_text().splitlines() if line) == 400


def test_pairs_reshown_to_a_second_annotator_give_an_agreement_figure(tiny_policy, tmp_path):
    demo, store = make_app(tiny_policy, tmp_path, relabel_fraction=1.0)
    url = launch(demo)
    try:
        alice, bob = Client(url, verbose=False), Client(url, verbose=False)
        alice.predict("Tell me about tea.", MODE_TWO_SAMPLES, "alice", api_name="/new_pair")  # typed: never a re-show
        alice.predict("not graded", "", "alice", api_name="/vote_left")
        _, left, right, _ = _new_pair(bob, "", MODE_TWO_SAMPLES, annotator="bob")  # empty: from the list, re-shown
        first = store.read()[0]
        assert {left, right} == {first.response_a, first.response_b}
        # Bob picks the same response as Alice whichever side it is shown on now.
        alice_winner = first.response_a if first.verdict == "a" else first.response_b
        bob.predict("not graded", "", "bob", api_name="/vote_left" if left == alice_winner else "/vote_right")

        summary = bob.predict(api_name="/data_summary")[0]
        votes = store.read()
        assert votes[1].item_id == votes[0].item_id and votes[1].generation["relabel_of"] == first.vote_id
        assert "Agreement** on 1 pairs labeled by two annotators: raw 100%" in summary
    finally:
        demo.close()


# ---------------------------------------------------------------------------------------------------- model loading


def test_models_named_in_the_settings_load_in_the_background_and_report_ready(tiny_model_dir, tmp_path, monkeypatch):
    (tmp_path / "app_rewards.py").write_text("def length(prompts, responses):\n    return [len(r) for r in responses]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = AppSettings(policy=tiny_model_dir, reward_function="app_rewards:length", data_dir=str(tmp_path), device="cpu")

    models = AppModels.load_in_background(settings)

    assert models.wait(timeout=120)
    assert models.status().startswith("Ready: policy **") and "app_rewards:length" in models.status()
    models.require()  # does not raise


def test_the_status_line_escapes_model_names():
    models = AppModels.from_objects(
        object(), None, object(), policy_name="<img src=x onerror=alert(1)>", reward_name="rm<b>", compare=(object(), None),
        compare_name="a&b",
    )
    status = models.status()
    assert status == "Ready: policy **&lt;img src=x onerror=alert(1)&gt;**, second model **a&amp;b**, reward **rm&lt;b&gt;**."


def test_a_loading_error_in_the_status_line_is_escaped():
    models = AppModels()
    models.error = "OSError: <no-such-model> is not a folder"
    assert models.status() == "Loading failed: OSError: &lt;no-such-model&gt; is not a folder"


def test_a_model_that_cannot_load_is_reported_in_the_page_not_raised(tmp_path):
    from prefkit.app import ModelsNotReady

    settings = AppSettings(policy=str(tmp_path / "no-such-model"), data_dir=str(tmp_path), device="cpu")

    models = AppModels.load_in_background(settings)
    models._thread.join(timeout=120)

    assert models.status().startswith("Loading failed:")
    with pytest.raises(ModelsNotReady, match="Loading failed"):
        models.require()


def test_pushing_the_export_uses_the_servers_token_and_never_shows_it(tiny_policy, tmp_path, monkeypatch):
    import prefkit.data.export as export_module

    pushed = []

    def fake_push(rows, repo_id, token=None, private=None, **kwargs):
        pushed.append((len(rows), repo_id, token, private))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/datasets/{repo_id}/commit/abc"})()

    monkeypatch.setattr(export_module, "push_dataset_to_hub", fake_push)
    demo, _ = make_app(tiny_policy, tmp_path, hub_token="hf_server_secret")
    url = launch(demo)
    try:
        client = Client(url, verbose=False)
        _new_pair(client, "Tell me about tea.", MODE_TWO_SAMPLES)
        client.predict("clearly", "", "gina", api_name="/vote_left")

        message = client.predict(DPO_EXPORT, "me/pairs", api_name="/push_export")

        assert pushed == [(1, "me/pairs", "hf_server_secret", True)]
        assert "Pushed 1 rows" in message and "hf_server_secret" not in message
    finally:
        demo.close()


def test_pushing_without_a_server_token_says_how_to_set_one(client):
    with pytest.raises(Exception, match="start the app with HF_TOKEN"):
        client.predict(DPO_EXPORT, "me/pairs", api_name="/push_export")
