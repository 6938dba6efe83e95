"""Prompts and completions as a model sees them: chat-template rendering and TRL's (prompt, completion) split.

One place decides how a prompt becomes text (the chat template with the generation prompt when the tokenizer has
one or the prompt is a list of messages, the plain prompt otherwise) and how a completion is cut from the rendered
conversation, so sampling, log-probabilities, the reward model and Best-of-N all tokenize a response the same way
at scoring time as at training time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Prompt = str | list[dict[str, Any]]


AS_TRAINED = "as_trained"
"""``chat_template=AS_TRAINED``: render a row through the chat template only when it is conversational (its prompt is
a list of messages), as TRL's DPO and reward trainers do; standard-format rows (plain-string prompt and answer) are
raw ``prompt + completion + EOS``."""


def uses_chat_template(tokenizer, prompt: Prompt, chat_template: bool | str | None = None) -> bool:
    """Whether ``prompt`` is rendered through the chat template. ``chat_template``: ``None`` (whenever the tokenizer
    has one or the prompt is a list of messages: how prefkit samples), ``AS_TRAINED`` (conversational rows only: how
    TRL trains), or a bool that forces it."""
    if chat_template == AS_TRAINED:
        return isinstance(prompt, list)
    if chat_template is not None:
        return bool(chat_template)
    return isinstance(prompt, list) or getattr(tokenizer, "chat_template", None) is not None


def as_messages(prompt: Prompt) -> list[dict[str, Any]]:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def render_prompt(tokenizer, prompt: Prompt, chat_template: bool | str | None = None) -> str:
    """The text a model is conditioned on: the chat template with the generation prompt when the tokenizer has one
    (or the prompt is a list of messages), the plain prompt otherwise (``chat_template``: see
    :func:`uses_chat_template`)."""
    use_template = uses_chat_template(tokenizer, prompt, chat_template)
    if use_template:
        return tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)
    if isinstance(prompt, list):
        raise ValueError("A conversational prompt needs a tokenizer with a chat template.")
    return prompt


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize_pair(
    tokenizer, prompt: Prompt, completion: str | list[dict[str, Any]], chat_template: bool | str | None = None
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, completion_ids)`` as TRL's DPO and reward trainers build them.

    Through the chat template: the template renders prompt and prompt+answer; the completion is what follows their
    common prefix (so it ends with the template's end-of-turn). Standard text: prompt and prompt+completion+EOS.
    Which one: ``chat_template`` (see :func:`uses_chat_template`); ``AS_TRAINED`` reproduces TRL's training
    tokenization exactly, which uses the template for conversational rows only.
    """
    use_template = uses_chat_template(tokenizer, prompt, chat_template)
    if use_template:
        messages = as_messages(prompt)
        answer = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
        prompt_ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        full_ids = tokenizer.apply_chat_template(messages + answer, tokenize=True)
        if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys"):
            prompt_ids, full_ids = prompt_ids["input_ids"], full_ids["input_ids"]
    else:
        text = completion if completion.endswith(tokenizer.eos_token or "") else completion + (tokenizer.eos_token or "")
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
    split = _common_prefix_length(prompt_ids, full_ids)
    return list(full_ids[:split]), list(full_ids[split:])
