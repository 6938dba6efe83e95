"""Pair generation on the tiny fixture model: batched sampling, left padding, EOS, de-duplication, rewrites."""

from __future__ import annotations

import pytest
import torch

from prefkit.data.generation import generate_pairs, prompt_id, rewrite_pairs

PROMPTS = [
    "Tell me about tea.",
    "Suggest a new activity I could do with my teddy bear, please, something fun for the weekend.",
    [{"role": "user", "content": "What is the capital of France?"}],
]


class GenerateSpy:
    """Wraps ``model.generate`` and records the inputs of every call."""

    def __init__(self, model):
        self.model, self.calls, self.original = model, [], model.generate
        model.generate = self

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.original(**kwargs)


def test_one_generate_call_per_batch_with_n_return_sequences(tiny_model, tiny_tokenizer):
    spy = GenerateSpy(tiny_model)
    generate_pairs(tiny_model, tiny_tokenizer, PROMPTS, n=3, batch_size=2, max_new_tokens=8, progress=False)
    assert len(spy.calls) == 2
    assert [call["num_return_sequences"] for call in spy.calls] == [3, 3]
    assert [call["input_ids"].shape[0] for call in spy.calls] == [2, 1]
    assert all(call["do_sample"] and call["temperature"] == 1.0 for call in spy.calls)


def test_all_pairs_of_three_distinct_answers_give_three_rows_per_prompt(tiny_model, tiny_tokenizer):
    rows = generate_pairs(tiny_model, tiny_tokenizer, PROMPTS, n=3, batch_size=2, max_new_tokens=8, progress=False)
    assert len(rows) == 9
    for prompt in PROMPTS:
        mine = [r for r in rows if r["prompt"] == prompt]
        assert [r["id"].rsplit("-", 2)[1:] for r in mine] == [["0", "1"], ["0", "2"], ["1", "2"]]
        assert len({r["response_a"] for r in mine} | {r["response_b"] for r in mine}) == 3
        assert all(r["response_a"] != r["response_b"] for r in mine)


def test_prompts_are_left_padded_even_when_the_tokenizer_pads_right(tiny_model, tiny_tokenizer):
    spy = GenerateSpy(tiny_model)
    tiny_tokenizer.padding_side = "right"
    try:
        generate_pairs(tiny_model, tiny_tokenizer, PROMPTS[:2], n=2, max_new_tokens=4, progress=False)
        assert tiny_tokenizer.padding_side == "right"  # restored
    finally:
        tiny_tokenizer.padding_side = "left"
    mask = spy.calls[0]["attention_mask"]
    assert mask[:, -1].all()  # every prompt ends right before the generated tokens
    assert mask[0, 0] == 0  # the shorter prompt is padded on the left


def test_prompts_go_through_the_chat_template(tiny_model, tiny_tokenizer):
    spy = GenerateSpy(tiny_model)
    generate_pairs(tiny_model, tiny_tokenizer, PROMPTS[:1], n=2, max_new_tokens=4, progress=False)
    text = tiny_tokenizer.decode(spy.calls[0]["input_ids"][0])
    assert text == "<|im_start|>user\nTell me about tea.<|im_end|>\n<|im_start|>assistant\n"


def scripted_generate(tokenizer, continuations):
    """A ``generate`` that returns the given continuations (token lists) after the prompt, padded on the right."""

    def generate(input_ids, attention_mask, num_return_sequences, **kwargs):
        width = max(len(c) for c in continuations)
        rows = [  # like transformers: the num_return_sequences answers of a prompt are consecutive
            torch.cat([prompt, torch.tensor(c + [tokenizer.pad_token_id] * (width - len(c)))])
            for prompt in input_ids
            for c in continuations[:num_return_sequences]
        ]
        return torch.stack(rows)

    return generate


def test_identical_and_empty_answers_are_dropped(tiny_model, tiny_tokenizer):
    tea = tiny_tokenizer.encode("tea", add_special_tokens=False)
    sea = tiny_tokenizer.encode("sea", add_special_tokens=False)
    eos = tiny_tokenizer.eos_token_id
    tiny_model.generate = scripted_generate(tiny_tokenizer, [tea + [eos], tea + [eos], [eos], sea + [eos]])
    rows = generate_pairs(tiny_model, tiny_tokenizer, ["q"], n=4, progress=False)
    assert [(r["response_a"], r["response_b"]) for r in rows] == [("tea", "sea")]


def test_answers_stop_at_eos_and_truncation_is_recorded(tiny_model, tiny_tokenizer):
    tea = tiny_tokenizer.encode("tea", add_special_tokens=False)
    sea = tiny_tokenizer.encode("sea", add_special_tokens=False)
    eos = tiny_tokenizer.eos_token_id
    tiny_model.generate = scripted_generate(tiny_tokenizer, [tea + [eos] + sea, sea + sea])
    (row,) = generate_pairs(tiny_model, tiny_tokenizer, ["q"], n=2, progress=False)
    assert (row["response_a"], row["response_b"], row["truncated"]) == ("tea", "seasea", [False, True])


def test_disjoint_pairing_uses_each_answer_once(tiny_model, tiny_tokenizer):
    words = [
        tiny_tokenizer.encode(w, add_special_tokens=False) + [tiny_tokenizer.eos_token_id] for w in ("a", "b", "c", "d")
    ]
    tiny_model.generate = scripted_generate(tiny_tokenizer, words)
    rows = generate_pairs(tiny_model, tiny_tokenizer, ["q"], n=4, pairing="disjoint", progress=False)
    assert [(r["response_a"], r["response_b"]) for r in rows] == [("a", "b"), ("c", "d")]


def test_each_row_records_the_generation_settings_and_stable_ids(tiny_model, tiny_tokenizer):
    rows = generate_pairs(
        tiny_model,
        tiny_tokenizer,
        PROMPTS[:1],
        n=2,
        temperature=0.7,
        top_p=0.9,
        max_new_tokens=5,
        seed=3,
        progress=False,
    )
    settings = rows[0]["generation"]
    assert {k: settings[k] for k in ("temperature", "top_p", "max_new_tokens", "num_return_sequences", "seed")} == {
        "temperature": 0.7,
        "top_p": 0.9,
        "max_new_tokens": 5,
        "num_return_sequences": 2,
        "seed": 3,
    }
    assert rows[0]["prompt_id"] == prompt_id(PROMPTS[0]) and rows[0]["id"] == f"{prompt_id(PROMPTS[0])}-0-1"


def test_the_same_call_gives_the_same_rows(tiny_model, tiny_tokenizer):
    def run():
        return generate_pairs(tiny_model, tiny_tokenizer, PROMPTS, n=2, max_new_tokens=6, seed=1, progress=False)

    assert run() == run()


@pytest.mark.parametrize(
    "kwargs, message", [({"temperature": 0.0}, "temperature must be > 0"), ({"n": 1}, "at least 2")]
)
def test_settings_that_cannot_make_pairs_are_refused(tiny_model, tiny_tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_pairs(tiny_model, tiny_tokenizer, PROMPTS, **kwargs)


def test_rewrite_pairs_asks_for_a_worse_answer_and_labels_the_original_better(tiny_model, tiny_tokenizer):
    spy = GenerateSpy(tiny_model)
    rows = rewrite_pairs(
        tiny_model,
        tiny_tokenizer,
        ["How do I make tea?"],
        ["Boil water, then steep the tea."],
        max_new_tokens=8,
        progress=False,
    )
    prompt_text = tiny_tokenizer.decode(spy.calls[0]["input_ids"][0])
    assert "clearly worse" in prompt_text and "Boil water, then steep the tea." in prompt_text
    assert [(r["response_a"], r["label"]) for r in rows] == [("Boil water, then steep the tea.", "A")]
    assert rows[0]["response_b"] and rows[0]["generation"]["direction"] == "worse"


def test_rewrites_that_come_back_unchanged_are_dropped(tiny_model, tiny_tokenizer):
    same = tiny_tokenizer.encode("Boil water.", add_special_tokens=False) + [tiny_tokenizer.eos_token_id]
    tiny_model.generate = scripted_generate(tiny_tokenizer, [same])
    assert rewrite_pairs(tiny_model, tiny_tokenizer, ["q"], ["Boil water."], direction="better", progress=False) == []
