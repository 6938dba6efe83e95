"""Log-probabilities of completions under a causal LM, computed the way TRL's trainers compute them.

Tokenization of (prompt, completion) pairs is :mod:`prefkit.chat`'s; this module holds the numerics: the
memory-lean selective log-softmax, per-position entropy and the summed completion log-probability that DPO's
implicit reward and the evaluation use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .chat import Prompt, tokenize_pair


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
    chat_template: bool | str | None = None,
) -> torch.Tensor:
    """Sum of the log-probabilities of each completion's tokens given its prompt, ``[len(prompts)]`` float32.

    ``chat_template`` chooses the tokenization (:func:`prefkit.chat.uses_chat_template`): ``None`` renders string
    prompts through the tokenizer's chat template as prefkit samples them; ``prefkit.chat.AS_TRAINED`` tokenizes each
    pair exactly as TRL's DPO trainer trained on it.

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
