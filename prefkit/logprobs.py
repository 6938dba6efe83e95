"""Turning (prompt, completion) pairs into tokens and log-probabilities, the way TRL's trainers see them.

Shared by DPO's implicit reward, the reward model's scoring and Best-of-N, so that a response is tokenized the
same way at scoring time as it was at training time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

Prompt = str | list[dict[str, Any]]


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits).gather(-1, index)`` without materializing the full log-softmax tensor in float32 twice."""
    if logits.dtype in (torch.float32, torch.float64):
        selected = torch.gather(logits, dim=-1, index=index.unsqueeze(-1)).squeeze(-1)
        return selected - torch.logsumexp(logits, dim=-1)
    # Half precision: logsumexp loses too much, go row by row in float32.
    rows = [F.log_softmax(row.float(), dim=-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1) for row, idx in zip(logits, index)]
    return torch.stack(rows)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position, ``[..., vocab] -> [...]``."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


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


def pad_right(sequences: list[list[int]], pad_value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad lists of ids; returns ``(ids, mask)``. Right padding keeps position ids right without extra care."""
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_value, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


@torch.no_grad()
def completion_logps(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    completions: Sequence[str],
    batch_size: int = 8,
    max_length: int | None = None,
    chat_template: bool | None = None,
) -> torch.Tensor:
    """Sum of the log-probabilities of each completion's tokens given its prompt, ``[len(prompts)]`` float32.

    Sequences longer than ``max_length`` keep their start (as TRL's ``keep_start`` truncation does), so a long
    completion is scored on its first tokens only.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"Got {len(prompts)} prompts but {len(completions)} completions; they must pair up.")
    device = next(model.parameters()).device
    results = []
    for start in range(0, len(prompts), batch_size):
        batch_ids, batch_completion_masks = [], []
        for prompt, completion in zip(prompts[start : start + batch_size], completions[start : start + batch_size]):
            prompt_ids, completion_ids = tokenize_pair(tokenizer, prompt, completion, chat_template)
            ids = prompt_ids + completion_ids
            completion_mask = [0] * len(prompt_ids) + [1] * len(completion_ids)
            if max_length is not None:
                ids, completion_mask = ids[:max_length], completion_mask[:max_length]
            batch_ids.append(ids)
            batch_completion_masks.append(completion_mask)
        input_ids, attention_mask = pad_right(batch_ids, tokenizer.pad_token_id)
        completion_mask, _ = pad_right(batch_completion_masks, 0)
        input_ids, attention_mask, completion_mask = (t.to(device) for t in (input_ids, attention_mask, completion_mask))
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
        token_logps = selective_log_softmax(logits.float(), input_ids[:, 1:])
        results.append((token_logps * completion_mask[:, 1:]).sum(dim=1).cpu())
    return torch.cat(results) if results else torch.zeros(0)
