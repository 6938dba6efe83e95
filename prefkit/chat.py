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


def uses_chat_template(tokenizer, prompt: Prompt) -> bool:
    return isinstance(prompt, list) or getattr(tokenizer, "chat_template", None) is not None


def as_messages(prompt: Prompt) -> list[dict[str, Any]]:
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def render_prompt(tokenizer, prompt: Prompt, chat_template: bool | None = None) -> str:
    """The text a model is conditioned on: the chat template with the generation prompt when the tokenizer has one
    (or the prompt is a list of messages), the plain prompt otherwise."""
    use_template = uses_chat_template(tokenizer, prompt) if chat_template is None else chat_template
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
    tokenizer, prompt: Prompt, completion: str | list[dict[str, Any]], chat_template: bool | None = None
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, completion_ids)`` exactly as TRL's DPO and reward trainers build them.

    Conversational: the chat template renders prompt and prompt+answer; the completion is what follows their common
    prefix (so it ends with the template's end-of-turn). Standard text: prompt and prompt+completion+EOS.
    """
    use_template = uses_chat_template(tokenizer, prompt) if chat_template is None else chat_template
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
