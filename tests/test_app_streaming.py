"""Answers appear while they are generated: the batch-row streamer, the Best-of-N and pair endpoints' intermediate
updates, the first pair sampled when the page opens, and cancellation unchanged."""

from __future__ import annotations

import html
import re
import time

import pytest

gr = pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from prefkit.app import AppModels, AppSettings, build_app  # noqa: E402
from prefkit.app.logic import MODE_BEST_VS_SAMPLE, MODE_TWO_SAMPLES  # noqa: E402
from prefkit.app.streaming import CandidateStreamer, PairPreview  # noqa: E402
from prefkit.data.votes import VoteStore  # noqa: E402
from helpers import EndlessPolicy, start_app  # noqa: E402

PROMPT = "Tell me about tea."


def vowel_reward(prompts, responses):
    return [sum(response.count(v) for v in "aeiou") for response in responses]


def launch_app(policy, tokenizer, data_dir, **settings):
    defaults = dict(data_dir=str(data_dir), n=3, max_new_tokens=12, relabel_fraction=0.0)
    models = AppModels.from_objects(policy, tokenizer, vowel_reward, policy_name="tiny")
    demo = build_app(store=VoteStore(data_dir), settings=AppSettings(**{**defaults, **settings}), models=models,
                     prompts=[PROMPT], seed=0)
    demo.queue(default_concurrency_limit=1)
    _, url, _ = start_app(demo)
    return demo, url


def wait_until(condition, timeout: float, what: str) -> None:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------------- the streamer


def test_the_streamer_ends_with_each_candidates_final_text_and_changes_no_sample(tiny_policy):
    from prefkit.bon import best_of_n
    from prefkit.sampling import stop_token_ids

    model, tokenizer = tiny_policy
    streamer = CandidateStreamer(tokenizer, stop_token_ids(model, tokenizer))
    kwargs = dict(n=4, max_new_tokens=16, temperature=1.0, seed=3, progress=False)

    streamed = best_of_n(model, tokenizer, vowel_reward, [PROMPT], streamer=streamer, **kwargs)[0]
    plain = best_of_n(model, tokenizer, vowel_reward, [PROMPT], **kwargs)[0]

    by_index = [candidate.text for candidate in sorted(streamed.candidates, key=lambda c: c.index)]
    assert streamer.texts() == by_index  # one row per candidate of the batched generate, in sampling order
    assert [c.text for c in streamed.candidates] == [c.text for c in plain.candidates]  # same seed, same samples
    assert streamer.token_counts() == [c.num_tokens - c.finished for c in sorted(streamed.candidates, key=lambda c: c.index)]


def test_a_row_stops_growing_at_its_stop_token_and_later_calls_add_rows(tiny_tokenizer):
    import torch

    streamer = CandidateStreamer(tiny_tokenizer, stop_ids=[0])
    streamer.put(torch.tensor([[5, 6], [5, 6]]))  # the prompt ids of two rows
    for step in ([40, 41], [0, 42], [7, 43]):  # row 0 stops at its second token; what follows is padding
        streamer.put(torch.tensor(step))
    streamer.end()
    streamer.put(torch.tensor([[5, 6]]))  # a second generate call (the next batch): a third row
    streamer.put(torch.tensor([44]))

    assert streamer.token_counts() == [1, 3, 1]
    assert streamer.updates == 4


def test_a_pair_preview_streams_two_samples_on_the_sides_they_will_be_shown_on(tiny_tokenizer):
    import torch

    streamer = CandidateStreamer(tiny_tokenizer, stop_ids=[])
    streamer.put(torch.tensor([[5], [5]]))
    streamer.put(torch.tensor([40, 41]))
    a, b = streamer.texts()

    assert PairPreview(MODE_TWO_SAMPLES, "random", "a", {"policy": streamer}).view()[:2] == (a, b)
    assert PairPreview(MODE_TWO_SAMPLES, "random", "b", {"policy": streamer}).view()[:2] == (b, a)
    # best-of-N vs one sample: which two are shown is known only after scoring, so the sides stay empty
    left, right, note = PairPreview(MODE_BEST_VS_SAMPLE, "random", "a", {"policy": streamer}).view()
    assert (left, right) == ("", "") and note.count('<pre class="prefkit-live">') == 2


# ------------------------------------------------------------------------------------------------- through Gradio


def partial_texts(table_html: str) -> list[str]:
    return [html.unescape(text) for text in re.findall(r'<td class="prefkit-text">(.*?)</td>', table_html, re.S)]


def test_best_of_n_sends_growing_candidates_before_the_ranked_result(tiny_model_dir, tmp_path):
    policy = EndlessPolicy(tiny_model_dir, seconds_per_token=0.03)
    policy.slow.set()
    demo, url = launch_app(policy.model, policy.tokenizer, tmp_path, max_new_tokens=40)
    try:
        job = Client(url, verbose=False).submit(PROMPT, 2, 0.9, 24, api_name="/best_of_n")
        final = job.result(timeout=120)
        outputs = job.outputs()
    finally:
        demo.close()

    streamed = [partial_texts(output[3]) for output in outputs[:-1]
                if isinstance(output[3], str) and "prefkit-streaming" in output[3]]
    lengths = [sum(len(text) for text in texts) for texts in streamed]
    assert len(streamed) >= 3 and all(len(texts) == 2 for texts in streamed)
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]  # the text grows between updates
    final_texts = {candidate["index"]: candidate["text"] for candidate in final[4]["candidates"]}
    for index, text in enumerate(streamed[-1]):  # what streamed is the beginning of what was ranked
        assert final_texts[index].startswith(text)


def test_a_pair_streams_on_its_sides_and_ends_as_the_pair_voted_on(tiny_model_dir, tmp_path):
    policy = EndlessPolicy(tiny_model_dir, seconds_per_token=0.03)
    policy.slow.set()
    demo, url = launch_app(policy.model, policy.tokenizer, tmp_path, max_new_tokens=20)
    try:
        client = Client(url, verbose=False)
        job = client.submit(PROMPT, MODE_TWO_SAMPLES, "", api_name="/new_pair")
        left, right, _, _ = job.result(timeout=120)
        outputs = job.outputs()
        client.predict("not graded", "", "", api_name="/vote_left")
        vote = demo.prefkit_store.read()[-1]
    finally:
        demo.close()

    partial = [(out[0], out[1]) for out in outputs[:-1] if isinstance(out[0], str) and isinstance(out[1], str)]
    assert len(partial) >= 3 and len({p for p in partial}) >= 3  # several different, growing states
    assert left.startswith(partial[-1][0]) and right.startswith(partial[-1][1])  # each answer stayed on its side
    assert (vote.response_a if vote.shown_left == "a" else vote.response_b) == left


def test_cancelling_a_streaming_generation_releases_the_model(tiny_model_dir, tmp_path):
    policy = EndlessPolicy(tiny_model_dir, seconds_per_token=0.03)
    policy.slow.set()
    demo, url = launch_app(policy.model, policy.tokenizer, tmp_path, max_new_tokens=400, max_generation_seconds=120)
    lock = demo.prefkit_models.generate_lock
    try:
        job = Client(url, verbose=False).submit(PROMPT, 2, 0.9, 400, api_name="/best_of_n")
        wait_until(lambda: len(job.outputs()) >= 2, timeout=30, what="the first streamed update")
        assert lock.locked()
        job.cancel()
        wait_until(lambda: not lock.locked(), timeout=5, what="the model being released")
        assert policy.forwards < 400 // 2  # far from the 400 tokens asked for
    finally:
        demo.close()


def test_the_first_pair_is_sampled_when_the_page_opens(tiny_policy, tmp_path):
    model, tokenizer = tiny_policy
    models = AppModels.from_objects(model, tokenizer, vowel_reward, policy_name="tiny")
    demo = build_app(store=VoteStore(tmp_path), models=models, prompts=[PROMPT], seed=0,
                     settings=AppSettings(data_dir=str(tmp_path), n=2, max_new_tokens=6, relabel_fraction=0.0))
    on_load = [fn for fn in demo.fns.values() if fn.api_name == "first_pair"]
    assert on_load and on_load[0].targets[0][1] == "load"  # runs on page load, in the generation queue
    assert on_load[0].concurrency_id == "generation"

    updates = list(on_load[0].fn(MODE_TWO_SAMPLES, "", None, None))
    pair, left, right, prompt, _, _ = updates[-1]

    assert prompt == PROMPT and pair["prompt"] == PROMPT
    assert {left, right} == {pair["response_a"], pair["response_b"]}


def test_the_first_pair_waits_for_loading_models_and_stops_quietly_when_they_fail(tmp_path):
    models = AppModels()  # still loading
    demo = build_app(store=VoteStore(tmp_path), models=models, prompts=[PROMPT],
                     settings=AppSettings(data_dir=str(tmp_path), relabel_fraction=0.0))
    on_load = next(fn.fn for fn in demo.fns.values() if fn.api_name == "first_pair")

    run = on_load(MODE_TWO_SAMPLES, "", None, None)
    assert "sampled once the models are loaded" in next(run)[4]
    models.error = "OSError: no such model"  # the status line says so; the pair note is cleared
    assert list(run)[-1][4] == ""
