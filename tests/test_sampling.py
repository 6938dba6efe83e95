"""The one sampler: masks, stop handling, prompt budget, ordering and behaviour log-probs."""

import time

import pytest
import torch

from helpers import EndlessPolicy

from prefkit.chat import render_prompt
from prefkit.models import context_length
from prefkit.sampling import HFSampler, PromptTooLongError, completion_mask, encode_prompts, generate, stop_token_ids


def test_completion_mask_keeps_the_first_stop_token_and_nothing_after():
    ids = torch.tensor([[5, 6, 2, 7], [5, 6, 7, 8], [2, 9, 9, 9]])
    mask, finished = completion_mask(ids, [2])
    assert mask.tolist() == [[True, True, True, False], [True, True, True, True], [True, False, False, False]]
    assert finished.tolist() == [True, False, True]


def test_stop_ids_are_the_union_of_tokenizer_model_and_extra(tiny_model, tiny_tokenizer):
    tiny_model.generation_config.eos_token_id = [tiny_tokenizer.eos_token_id, 7]
    assert stop_token_ids(tiny_model, tiny_tokenizer, extra=[9, 7]) == sorted({tiny_tokenizer.eos_token_id, 7, 9})


def test_context_length_is_the_smaller_of_model_and_tokenizer_limits(tiny_model, tiny_tokenizer):
    assert context_length(tiny_model) == tiny_model.config.max_position_embeddings
    tiny_tokenizer_limit = tiny_tokenizer.model_max_length
    try:
        tiny_tokenizer.model_max_length = 100
        assert context_length(tiny_model, tiny_tokenizer) == 100
    finally:
        tiny_tokenizer.model_max_length = tiny_tokenizer_limit


def test_samples_are_prompt_major_and_line_up_for_a_forward_pass(tiny_model, tiny_tokenizer):
    prompts = ["Say tea.", [{"role": "user", "content": "A much longer question about the sea and the tea?"}]]
    samples = generate(tiny_model, tiny_tokenizer, prompts, n=3, max_new_tokens=6, seed=0)

    assert len(samples) == 6 and samples.prompt_ids.shape[0] == 6
    assert samples.completion_ids.shape[1] <= 6
    # rows 0-2 carry prompt 0's ids, rows 3-5 prompt 1's, left-padded to one width
    for row in range(6):
        ids = samples.prompt_ids[row][samples.prompt_mask[row].bool()].tolist()
        expected = tiny_tokenizer(render_prompt(tiny_tokenizer, prompts[row // 3]), add_special_tokens=False)["input_ids"]
        assert ids == expected
    assert samples.attention_mask.shape == samples.input_ids.shape
    # pads after the stop token, and the stop token (when there is one) is the last masked-in id
    for row in range(6):
        length = int(samples.completion_lengths[row])
        assert (samples.completion_ids[row, length:] == tiny_tokenizer.pad_token_id).all()
        if samples.finished[row]:
            assert samples.completion_ids[row, length - 1].item() in stop_token_ids(tiny_model, tiny_tokenizer)
    assert [len(group) for group in samples.by_prompt()] == [3, 3]


def test_the_same_seed_gives_the_same_samples_and_leaves_the_callers_rng_alone(tiny_model, tiny_tokenizer):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = generate(tiny_model, tiny_tokenizer, ["Hello"], n=4, max_new_tokens=8, seed=7)
    after = torch.rand(1)
    second = generate(tiny_model, tiny_tokenizer, ["Hello"], n=4, max_new_tokens=8, seed=7)
    assert first.texts == second.texts
    assert torch.equal(before, after)


def test_behaviour_logprobs_match_an_independent_forward_pass_at_the_sampling_temperature(tiny_model, tiny_tokenizer):
    temperature = 0.7
    samples = generate(
        tiny_model, tiny_tokenizer, ["Tell me about tea.", "Hi"], n=2, max_new_tokens=5,
        temperature=temperature, top_k=0, top_p=1.0, seed=1, return_logprobs=True,
    )
    with torch.no_grad():
        logits = tiny_model(
            input_ids=samples.input_ids, attention_mask=samples.attention_mask, position_ids=samples.position_ids
        ).logits
    width = samples.completion_ids.shape[1]
    step_logits = logits[:, -width - 1 : -1].float() / temperature
    expected = torch.log_softmax(step_logits, dim=-1).gather(-1, samples.completion_ids.unsqueeze(-1)).squeeze(-1)
    expected = expected * samples.completion_mask
    torch.testing.assert_close(samples.logprobs, expected, atol=1e-4, rtol=1e-4)


def test_greedy_decoding_with_logits_returns_the_argmax_tokens(tiny_model, tiny_tokenizer):
    samples = HFSampler(tiny_model, tiny_tokenizer).generate(["Hello"], do_sample=False, max_new_tokens=4, return_logits=True)
    length = int(samples.completion_lengths[0])
    assert samples.step_logits.shape[:2] == samples.completion_ids.shape
    assert samples.step_logits[0, :length].argmax(dim=-1).tolist() == samples.completion_ids[0, :length].tolist()


def test_greedy_decoding_refuses_several_identical_samples(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="identical"):
        generate(tiny_model, tiny_tokenizer, ["Hello"], n=2, do_sample=False, max_new_tokens=2)


def test_a_prompt_over_budget_is_an_error_or_keeps_its_end(tiny_tokenizer):
    prompt = "tea " * 50
    with pytest.raises(PromptTooLongError, match=r"prompts\[3\] is \d+ tokens"):
        encode_prompts(tiny_tokenizer, [prompt], max_length=10, first_index=3)
    full = encode_prompts(tiny_tokenizer, [prompt]).ids[0]
    with pytest.warns(UserWarning, match=r"keeping its last 10"):
        encoded = encode_prompts(tiny_tokenizer, [prompt], max_length=10, truncation="left")
    assert encoded.ids[0] == full[-10:]
    assert encoded.truncated_tokens == [len(full) - 10]


def test_max_prompt_length_and_the_context_both_bound_the_prompt(tiny_model, tiny_tokenizer):
    sampler = HFSampler(tiny_model, tiny_tokenizer)
    context = context_length(tiny_model, tiny_tokenizer)
    with pytest.raises(ValueError, match="leaves no room for a prompt"):
        sampler.generate(["Hi"], max_new_tokens=context)
    with pytest.warns(UserWarning):
        samples = sampler.generate(["tea " * 50], max_new_tokens=2, max_prompt_length=8, truncation="left", seed=0)
    assert int(samples.prompt_mask.sum()) == 8


# ---------------------------------------------------------------------------------------------- interrupting

LONG = 400  # tokens that would take many seconds unless something stops the generation


def test_should_stop_ends_the_generation_after_the_current_token(tiny_model_dir):
    policy = EndlessPolicy(tiny_model_dir)
    checks = []

    samples = generate(policy.model, policy.tokenizer, ["Hi"], n=2, max_new_tokens=LONG, seed=0,
                       should_stop=lambda: checks.append(1) or len(checks) > 3)

    assert samples.completion_ids.shape[1] == 4  # checked after each token: the 4th check said stop
    assert samples.interrupted_by == "should_stop"
    assert samples.finished.tolist() == [False, False]


def test_max_time_bounds_the_whole_call_across_batches(tiny_model_dir):
    policy = EndlessPolicy(tiny_model_dir, seconds_per_token=0.02)
    policy.slow.set()

    began = time.monotonic()
    samples = generate(policy.model, policy.tokenizer, ["Hi", "Hello", "Hey"], n=1, max_new_tokens=LONG, seed=0,
                       batch_size=1, max_time=0.3)
    elapsed = time.monotonic() - began

    assert samples.interrupted_by == "max_time" and samples.settings["max_time"] == 0.3
    assert elapsed < 0.3 + 2.0  # 400 tokens x 3 batches at >= 20 ms each would take 24 s
    assert policy.forwards < 60  # the two batches that start after the deadline generate one token each
    assert samples.completion_lengths.tolist()[1:] == [1, 1]


def test_a_callers_own_stopping_criteria_still_apply_beside_the_time_limit(tiny_model_dir):
    from transformers import StoppingCriteria

    class FiveTokens(StoppingCriteria):
        def __init__(self, prompt_width):
            self.prompt_width = prompt_width

        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] - self.prompt_width >= 5, dtype=torch.bool)

    policy = EndlessPolicy(tiny_model_dir)
    sampler = HFSampler(policy.model, policy.tokenizer)
    encoded = sampler.encode(["Hi"], max_new_tokens=20)
    width = len(encoded.ids[0])

    plain = sampler.generate_encoded(["Hi"], encoded, 1, max_new_tokens=20, seed=0, stopping_criteria=[FiveTokens(width)])
    timed = sampler.generate_encoded(["Hi"], encoded, 1, max_new_tokens=20, seed=0, max_time=60,
                                     stopping_criteria=[FiveTokens(width)])

    assert plain.interrupted_by is None and timed.interrupted_by is None
    assert plain.completion_ids.shape[1] == timed.completion_ids.shape[1] == 5
    assert plain.completion_ids.tolist() == timed.completion_ids.tolist()
