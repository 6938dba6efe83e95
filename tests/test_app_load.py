"""The app under load: a client that leaves stops its generation, every generation is time-bound, votes and the Data
tab never wait behind a generation, the queue shows positions, every API output has a name, and an empty leaderboard
says why."""

from __future__ import annotations

import re
import time

import httpx
import pytest

gr = pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

from prefkit.app import AppModels, AppSettings, build_app  # noqa: E402
from prefkit.app.logic import FEW_BATTLES, MODE_TWO_SAMPLES, GenerationJob, leaderboard_note, summary  # noqa: E402
from prefkit.data.leaderboard import battles_from_votes, leaderboard  # noqa: E402
from prefkit.data.votes import Vote, VoteStore  # noqa: E402
from helpers import EndlessPolicy, start_app  # noqa: E402

LONG = 400  # max_new_tokens of a generation that would run for many seconds unless something stops it


def vowel_reward(prompts, responses):
    return [sum(response.count(v) for v in "aeiou") for response in responses]


def launch_app(policy: EndlessPolicy, data_dir, **settings):
    defaults = dict(data_dir=str(data_dir), n=2, max_new_tokens=8, relabel_fraction=0.0)
    models = AppModels.from_objects(policy.model, policy.tokenizer, vowel_reward, policy_name="endless")
    demo = build_app(
        store=VoteStore(data_dir), settings=AppSettings(**{**defaults, **settings}), models=models,
        prompts=["Tell me about tea."], seed=0,
    )
    demo.queue(default_concurrency_limit=1)
    _, url, _ = start_app(demo)
    return demo, url


def wait_until(condition, timeout: float, what: str) -> float:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - began


# ------------------------------------------------------------------------------------- the handler's background job


def test_closing_the_waiting_handler_cancels_its_job_at_once():
    stopped_after = []

    def work(should_stop):
        began = time.monotonic()
        while not should_stop() and time.monotonic() - began < 30:
            time.sleep(0.01)
        stopped_after.append(time.monotonic() - began)

    def handler():  # what a Gradio generator handler does
        with GenerationJob(work, poll_seconds=0.05) as job:
            yield from job.running()
            job.result()

    running = handler()
    next(running), next(running)
    running.close()  # what Gradio does when the client disconnects

    wait_until(lambda: stopped_after, timeout=5, what="the job stopping")
    assert stopped_after[0] < 5


def test_an_error_in_the_job_is_raised_in_the_handler():
    def work(should_stop):
        raise ValueError("the prompt is too long")

    with GenerationJob(work, poll_seconds=0.01) as job:
        list(job.running())
        with pytest.raises(ValueError, match="the prompt is too long"):
            job.result()


# ------------------------------------------------------------------------------------------------- through Gradio


def fn_index(demo, api_name: str) -> int:
    return next(index for index, fn in demo.fns.items() if fn.api_name == api_name)


def test_a_client_that_disconnects_stops_its_generation_within_a_token_or_so(tiny_model_dir, tmp_path):
    policy = EndlessPolicy(tiny_model_dir, seconds_per_token=0.02)
    policy.slow.set()
    demo, url = launch_app(policy, tmp_path, max_generation_seconds=120)
    lock = demo.prefkit_models.generate_lock
    api = url.rstrip("/") + "/gradio_api"
    try:
        with httpx.Client(timeout=30) as http:
            joined = http.post(f"{api}/queue/join", json={
                "data": ["Tell me about tea.", 2, 0.9, LONG], "fn_index": fn_index(demo, "best_of_n"),
                "session_hash": "leaves-early", "event_data": None, "trigger_id": None,
            })
            assert joined.status_code == 200
            with http.stream("GET", f"{api}/queue/data", params={"session_hash": "leaves-early"}) as events:
                for line in events.iter_lines():  # the first progress message: generation is under way
                    if "process_generating" in line:
                        break
            # leaving the block closes the connection: the tab was closed
        at_disconnect = policy.forwards
        assert lock.locked()

        released_after = wait_until(lambda: not lock.locked(), timeout=5, what="the model being released")

        # Gradio notices at the handler's next progress step (0.2 s), the sampler at the next token: ~0.25 s here,
        # against the 12 s or more that the 400 tokens asked for would take.
        assert released_after < 3
        assert policy.forwards - at_disconnect < 60
        assert policy.forwards < LONG // 4
    finally:
        demo.close()


def test_every_generation_stops_at_the_time_limit_and_the_page_says_so(tiny_model_dir, tmp_path):
    policy = EndlessPolicy(tiny_model_dir, seconds_per_token=0.02)
    policy.slow.set()
    demo, url = launch_app(policy, tmp_path, max_generation_seconds=0.5, max_new_tokens=LONG)
    try:
        client = Client(url, verbose=False)
        began = time.monotonic()
        best, cost, _, table, details, _, _ = client.predict("Tell me about tea.", 2, 0.9, LONG, api_name="/best_of_n")
        elapsed = time.monotonic() - began

        assert elapsed < 5  # 2 x 400 tokens at >= 20 ms each would take 8 s
        assert details["interrupted_by"] == "max_time" and details["tokens_generated"] < 2 * LONG
        assert "cut at the time limit" in best["label"]
        assert "Cut at the 0.5 s time limit" in cost and "cut at the time limit" in table

        left, right, _, note = client.predict("Tell me about tea.", MODE_TWO_SAMPLES, "", api_name="/new_pair")
        assert "Cut at the 0.5 s time limit" in note
        client.predict("not graded", "", "", api_name="/vote_tie")
        vote = demo.prefkit_store.read()[-1]
        assert vote.generation["interrupted_by"] == "max_time" and vote.generation["max_time"] == 0.5
        assert {vote.response_a, vote.response_b} == {left, right}
    finally:
        demo.close()


def test_votes_and_the_data_tab_answer_while_a_generation_holds_the_model_and_generations_queue(tiny_model_dir, tmp_path):
    policy = EndlessPolicy(tiny_model_dir, seconds_per_token=0.05)
    demo, url = launch_app(policy, tmp_path, max_generation_seconds=60)
    lock = demo.prefkit_models.generate_lock
    long_job = queued_job = None
    try:
        voter, generator, waiter = (Client(url, verbose=False) for _ in range(3))
        voter.predict("Tell me about tea.", MODE_TWO_SAMPLES, "vera", api_name="/new_pair")  # fast: not slowed yet
        policy.slow.set()
        long_job = generator.submit("Tell me about tea.", 2, 0.9, LONG, api_name="/best_of_n")  # >= 20 s
        wait_until(lock.locked, timeout=10, what="the long generation starting")
        queued_job = waiter.submit("Tell me about tea.", MODE_TWO_SAMPLES, "walt", api_name="/new_pair")

        began = time.monotonic()
        reveal = voter.predict("clearly", "", "vera", api_name="/vote_left")[0]
        summary_md, _, _, _ = voter.predict(api_name="/data_summary")
        answered_after = time.monotonic() - began

        assert "Vote saved" in reveal and "**1 votes**" in summary_md
        assert answered_after < 10 and lock.locked() and not long_job.done()
        # another kind of generation waits in the same queue, with its position, instead of blocking on the model
        wait_until(lambda: queued_job.status().code == Status.IN_QUEUE, timeout=5, what="the pair queuing")
        assert queued_job.status().rank == 0
    finally:
        for job in (queued_job, long_job):
            if job is not None:
                job.cancel()
        wait_until(lambda: not lock.locked(), timeout=10, what="the cancelled generation releasing the model")
        demo.close()


# ------------------------------------------------------------------------------------------------------- API names


def test_every_output_and_parameter_of_the_public_api_has_a_name(tiny_model_dir, tmp_path):
    policy = EndlessPolicy(tiny_model_dir)
    demo, url = launch_app(policy, tmp_path)
    try:
        info = Client(url, verbose=False).view_api(print_info=False, return_format="dict")
    finally:
        demo.close()

    endpoints = info["named_endpoints"]
    assert {"/best_of_n", "/new_pair", "/vote_left", "/data_summary", "/export", "/status"} <= set(endpoints)
    unnamed = [
        (name, item["label"])
        for name, endpoint in endpoints.items()
        for item in endpoint["parameters"] + endpoint["returns"]
        if re.fullmatch(r"(value|parameter)_\d+|\d+(st|nd|rd|th)", item["label"] or "")
    ]
    assert unnamed == []


# ----------------------------------------------------------------------------------------------------- leaderboard


def vote(source_a: str, source_b: str, verdict: str = "a") -> Vote:
    return Vote.new(prompt="Tell me about tea.", response_a=f"{source_a} says", response_b=f"{source_b} says",
                    verdict=verdict, source_a=source_a, source_b=source_b)


def note_for(votes) -> str:
    battles = battles_from_votes(votes)
    return leaderboard_note(votes, battles, leaderboard(battles, bootstrap_rounds=20))


def test_an_empty_leaderboard_without_votes_says_to_vote():
    assert note_for([]).startswith("**No votes yet**") and "Compare & label" in note_for([])


def test_votes_between_answers_of_one_model_say_how_to_get_two_models_on_the_board():
    note = note_for([vote("tiny", "tiny"), vote("tiny", "tiny", "b")])

    assert note.startswith("**No votes between two different models yet:** all 2 votes")
    assert "--compare_policy" in note and "Best-of-N vs one sample" in note and "(tiny)" in note


def test_a_few_battles_say_the_intervals_are_not_to_be_trusted_yet():
    note = note_for([vote("tiny best-of-4", "tiny")] * 3 + [vote("tiny", "tiny")])

    assert note.startswith("**Too few battles for the intervals to mean much yet:** 3 so far")
    assert f"about {FEW_BATTLES} battles" in note


def test_enough_battles_need_no_note():
    votes = [vote("big", "small", verdict) for verdict in "ab" * FEW_BATTLES]

    assert note_for(votes) == ""


def test_the_data_summary_carries_the_note_beside_an_empty_table():
    result = summary([], bootstrap_rounds=10)

    assert result["leaderboard"].empty and result["leaderboard_note"].startswith("**No votes yet**")
