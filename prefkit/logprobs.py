r"""Log-probabilities of completions under a causal LM, computed the way TRL's trainers compute them.

Tokenization of (prompt, completion) pairs is :mod:`prefkit.chat`'s; this module holds the numerics: the
memory-lean selective log-softmax, per-position entropy, the summed completion log-probability that DPO's
implicit reward and the evaluation use, and **chunked token log-probs** (:func:`chunked_token_logprobs`,
:func:`causal_lm_token_logprobs`) that go from the last hidden state to
:math:`\log\pi(x_t \mid x_{<t})` a few hundred tokens at a time, so that the ``[batch, time, vocab]`` logits are
never held, in the forward pass nor in the backward.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .chat import Prompt, tokenize_pair

DEFAULT_LOGPROB_CHUNK_SIZE = 1024  # tokens per chunk: [1024, vocab] float32 logits at a time (0.5 GiB at 128k vocab)
IGNORE_INDEX = -100  # a label that is not scored (read as 0, no gradient), as in transformers


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
    chunk_size: int | None = DEFAULT_LOGPROB_CHUNK_SIZE,
) -> torch.Tensor:
    """Sum of the log-probabilities of each completion's tokens given its prompt, ``[len(prompts)]`` float32.

    ``chat_template`` chooses the tokenization (:func:`prefkit.chat.uses_chat_template`): ``None`` renders string
    prompts through the tokenizer's chat template as prefkit samples them; ``prefkit.chat.AS_TRAINED`` tokenizes each
    pair exactly as TRL's DPO trainer trained on it.

    Sequences longer than ``max_length`` keep their start (as TRL's ``keep_start`` truncation does), so a long
    completion is scored on its first tokens only.

    Only the completion tokens go through the output head, ``chunk_size`` tokens at a time
    (:func:`causal_lm_token_logprobs`); ``chunk_size=None`` computes the full logits instead (same numbers).
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
        if input_ids.shape[1] < 2:  # nothing is predicted from a one-token row
            results.append(torch.zeros(len(input_ids)))
            continue
        token_logps = causal_lm_token_logprobs(
            model, input_ids, attention_mask, chunk_size=chunk_size, mask=completion_mask[:, 1:]
        ).logprobs
        results.append(token_logps.sum(dim=1).cpu())
    return torch.cat(results) if results else torch.zeros(0)


# --------------------------------------------------------------------------------------------------------------------
# Chunked token log-probs: from the last hidden state, never holding [batch, time, vocab] logits
# --------------------------------------------------------------------------------------------------------------------


class TokenLogprobs(NamedTuple):
    """Per-token results of :func:`chunked_token_logprobs` / :func:`causal_lm_token_logprobs` (float32)."""

    logprobs: torch.Tensor  # log pi(label_t | context), 0 where not scored; differentiable
    entropy: torch.Tensor | None  # entropy of pi(. | context) at each position, 0 where not scored; no gradient


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype ``lm_head(hidden)`` runs in: autocast's when it is on (as ``nn.Linear`` would), else the inputs'."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _scaled_logits(hidden, weight, bias, temperature: float) -> torch.Tensor:
    """``(hidden @ weight.T + bias)`` in the inputs' dtype, then float32 divided by the temperature: ``[n, vocab]``."""
    with torch.autocast(hidden.device.type, enabled=False):
        logits = F.linear(hidden, weight, bias).float()  # a fresh tensor either way: safe to change in place
    if temperature != 1.0:
        logits.div_(temperature)
    return logits


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """Forward and backward of :func:`chunked_token_logprobs` on ``[N, hidden]`` rows, ``chunk_size`` rows at a time.

    The forward keeps only the per-row log-sum-exp; the backward recomputes each chunk's logits from it and turns them
    into the gradient in place: :math:`\\partial \\log p_t / \\partial z_t = (\\mathrm{onehot}(y_t) - p_t) / T`.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, temperature: float, chunk_size: int, return_entropy: bool):
        dtype = _compute_dtype(hidden, weight)
        weight_c = weight.to(dtype)
        bias_c = bias.to(dtype) if bias is not None else None
        rows = hidden.shape[0]
        logprobs = torch.empty(rows, dtype=torch.float32, device=hidden.device)
        logsumexp = torch.empty(rows, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty(rows if return_entropy else 0, dtype=torch.float32, device=hidden.device)
        for start in range(0, rows, chunk_size):
            end = min(start + chunk_size, rows)
            logits = _scaled_logits(hidden[start:end].to(dtype), weight_c, bias_c, temperature)  # [n, V] float32
            chunk_lse = torch.logsumexp(logits, dim=-1)
            logprobs[start:end] = logits.gather(-1, labels[start:end, None]).squeeze(-1) - chunk_lse
            if return_entropy:  # H = -sum_v p_v log p_v, from log p = z - lse (no cancellation when H is small)
                log_probs = logits.sub_(chunk_lse[:, None])
                entropy[start:end] = -log_probs.exp().mul_(log_probs).sum(dim=-1)
            logsumexp[start:end] = chunk_lse
            del logits
        ctx.save_for_backward(hidden, weight, bias, labels, logsumexp)
        ctx.compute_dtype, ctx.temperature, ctx.chunk_size = dtype, temperature, chunk_size
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, _grad_entropy):
        hidden, weight, bias, labels, logsumexp = ctx.saved_tensors
        dtype, temperature, chunk_size = ctx.compute_dtype, ctx.temperature, ctx.chunk_size
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        weight_c = weight.to(dtype)
        bias_c = bias.to(dtype) if bias is not None else None
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        # The weight's gradient accumulates in place (addmm_) in the weight's dtype, so the backward adds no
        # [vocab, hidden] temporary; only under autocast (bf16 products of a float32 weight) is each chunk's product
        # made apart, then added in float32, as autograd would cast it.
        grad_weight = torch.zeros(weight.shape, dtype=weight.dtype, device=weight.device) if needs_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if needs_bias else None
        for start in range(0, hidden.shape[0], chunk_size):
            end = min(start + chunk_size, hidden.shape[0])
            hidden_c = hidden[start:end].to(dtype)
            grad_logits = _scaled_logits(hidden_c, weight_c, bias_c, temperature)
            grad_logits.sub_(logsumexp[start:end, None]).exp_().neg_()  # -p
            grad_logits.scatter_add_(-1, labels[start:end, None], torch.ones_like(grad_logits[:, :1]))  # onehot - p
            grad_logits.mul_((grad_logprobs[start:end] / temperature)[:, None])  # dL/dz, float32 [n, V]
            if needs_bias:
                grad_bias += grad_logits.sum(dim=0)
            grad_logits_c = grad_logits.to(dtype)
            del grad_logits
            with torch.autocast(hidden.device.type, enabled=False):
                if needs_hidden:
                    grad_hidden[start:end] = (grad_logits_c @ weight_c).to(hidden.dtype)
                if needs_weight and dtype == weight.dtype:
                    grad_weight.addmm_(grad_logits_c.T, hidden_c)
                elif needs_weight:
                    grad_weight += grad_logits_c.T @ hidden_c
            del grad_logits_c
        return (
            grad_hidden,
            grad_weight,
            grad_bias.to(bias.dtype) if needs_bias else None,
            None, None, None, None,
        )


def check_logprob_chunk_size(chunk_size, name: str = "logprob_chunk_size", allow_off: bool = True) -> None:
    """Raise a ValueError naming ``name`` unless ``chunk_size`` is a positive int (or, with ``allow_off``, None / 0:
    full logits)."""
    if allow_off and chunk_size in (None, 0) and not isinstance(chunk_size, bool):
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        off = " or None (full logits, no chunking)" if allow_off else ""
        raise ValueError(
            f"{name} must be a positive number of tokens{off}, got {chunk_size!r} (e.g. {DEFAULT_LOGPROB_CHUNK_SIZE})."
        )


def chunked_token_logprobs(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_LOGPROB_CHUNK_SIZE,
    bias: torch.Tensor | None = None,
    return_entropy: bool = False,
    ignore_index: int = IGNORE_INDEX,
) -> TokenLogprobs:
    r"""Token log-probs through a linear LM head, ``chunk_size`` tokens at a time, never holding all the logits.

    With :math:`z_t = W h_t + b` the logits of position :math:`t` (``hidden[..., t, :]``, ``lm_head_weight`` = :math:`W`
    of shape ``[vocab, hidden]``) and :math:`T` the temperature,

    .. math:: \log \pi(y_t) = z_{t, y_t} / T - \log \textstyle\sum_v \exp(z_{t,v} / T), \qquad
              H_t = -\textstyle\sum_v \pi_v \log \pi_v,

    exactly ``log_softmax(lm_head(hidden).float() / T).gather(-1, labels)`` (and the entropy of that distribution),
    but at most ``[chunk_size, vocab]`` float32 logits exist at any time: the backward pass recomputes each chunk's
    logits from the saved log-sum-exp (:math:`\partial \log\pi(y_t)/\partial z_t = (\mathrm{onehot}(y_t) - \pi_t)/T`)
    and accumulates the gradients of ``hidden``, ``lm_head_weight`` and ``bias`` chunk by chunk. The matrix products
    run in the dtype ``lm_head(hidden)`` would (autocast's when on), the softmax in float32, as the full path does.

    Args:
        hidden: ``[..., hidden]`` final hidden states (after the model's final norm).
        lm_head_weight: ``[vocab, hidden]``; tied embeddings work (the gradient goes to the shared weight).
        labels: ``[...]`` token ids; ``ignore_index`` marks positions that are not scored: they read 0 and cost
            nothing (their logits are never computed).
        temperature: the sampling temperature the log-probs are of (> 0).
        chunk_size: tokens per chunk (>= 1). Memory is ~``chunk_size * vocab * 8`` bytes; larger is faster.
        bias: the head's bias ``[vocab]``, if it has one.
        return_entropy: also return each position's entropy (float32, carries no gradient).

    Returns:
        :class:`TokenLogprobs`: ``logprobs`` (float32, shaped like ``labels``) and ``entropy`` (or ``None``).
    """
    if hidden.dim() < 1 or lm_head_weight.dim() != 2 or hidden.shape[-1] != lm_head_weight.shape[1]:
        raise ValueError(
            f"hidden is {list(hidden.shape)} and lm_head_weight is {list(lm_head_weight.shape)}: the weight must be "
            f"[vocab, hidden] with hidden = hidden.shape[-1] ({hidden.shape[-1] if hidden.dim() else '?'}); pass the "
            "weight of the head that is applied to these hidden states (model.get_output_embeddings().weight)."
        )
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"labels is {list(labels.shape)} but hidden is {list(hidden.shape)}: give one label per hidden state "
            f"(labels of shape {list(hidden.shape[:-1])})."
        )
    if labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must hold integer token ids (int64), not {labels.dtype}.")
    vocab = lm_head_weight.shape[0]
    if bias is not None and bias.shape != (vocab,):
        raise ValueError(f"bias is {list(bias.shape)}; the head's bias must be [vocab] = [{vocab}].")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (0 < temperature < math.inf):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}.")
    check_logprob_chunk_size(chunk_size, "chunk_size", allow_off=False)
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_labels = labels.reshape(-1).long()
    scored = flat_labels != ignore_index
    out_of_range = scored & ((flat_labels < 0) | (flat_labels >= vocab))
    if bool(out_of_range.any()):
        position = int(out_of_range.nonzero()[0, 0])
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(position), tuple(labels.shape)))
        raise ValueError(
            f"labels{list(where)} is {int(flat_labels[position])}, outside the head's vocabulary [0, {vocab}): the "
            f"labels must be ids of this model's tokenizer, or {ignore_index} (ignore_index) for positions to skip."
        )
    all_scored = bool(scored.all())
    rows = None if all_scored else scored.nonzero().squeeze(1)
    logprobs, entropy = _ChunkedTokenLogprobs.apply(
        flat_hidden if all_scored else flat_hidden[rows],
        lm_head_weight,
        bias,
        flat_labels if all_scored else flat_labels[rows],
        float(temperature),
        chunk_size,
        return_entropy,
    )
    if not all_scored:  # scatter the scored rows back; skipped positions read 0
        logprobs = logprobs.new_zeros(flat_labels.shape).index_copy(0, rows, logprobs)
        if return_entropy:
            entropy = entropy.new_zeros(flat_labels.shape).index_copy(0, rows, entropy)
    return TokenLogprobs(logprobs.view(labels.shape), entropy.view(labels.shape) if return_entropy else None)


# ---- which models can take the chunked path

# Config fields of architectures whose logits are transformed after the head (soft-capping, scaling): the chunked path
# would give other numbers, so they take the full-logits path.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier", "output_multiplier")
_checked_heads: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # base model -> (head checked, agrees)
_reported_fallbacks: set[tuple[str, str]] = set()


def _base_causal_lm(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") and hasattr(model, "peft_config") else model


def chunked_head_fallback_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot take the chunked log-prob path (then the full logits are used), or ``None`` if it can.

    The chunked path runs the decoder body (``model.<base_model_prefix>``, final norm included) and applies the
    output head itself, so it needs the head to be a plain ``nn.Linear`` with its whole weight on this process and no
    transformation of the logits after it.
    """
    base = _base_causal_lm(model)
    config = getattr(base, "config", None)
    if config is None or not hasattr(base, "get_output_embeddings"):
        return f"{type(base).__name__} is not a transformers causal LM"
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in _LOGIT_TRANSFORMS:
        value = getattr(text_config, name, None)
        if value is not None:
            return f"its config sets {name}={value}: the logits are transformed after the output head"
    prefix = getattr(base, "base_model_prefix", "")
    backbone = getattr(base, prefix, None) if prefix else None
    if not isinstance(backbone, nn.Module) or backbone is base:
        return f"{type(base).__name__} has no separate decoder body (base_model_prefix {prefix!r})"
    head = base.get_output_embeddings()
    if type(head) is not nn.Linear:
        return (
            f"its output head is a {type(head).__module__}.{type(head).__qualname__}, not a torch.nn.Linear (LoRA or "
            "modules_to_save on lm_head, or a quantized head)"
        )
    weight = head.weight
    if tuple(weight.shape) != (head.out_features, head.in_features) or weight.device.type == "meta" or (
        type(weight.data) is not torch.Tensor
    ):
        return "its output head's weight is sharded or offloaded (ZeRO-3, FSDP or meta device)"
    return None


def _report_fallback(model: nn.Module, reason: str) -> None:
    key = (type(_base_causal_lm(model)).__name__, reason)
    if key not in _reported_fallbacks:
        _reported_fallbacks.add(key)
        warnings.warn(
            f"Chunked log-probs are off for {key[0]}: {reason}. Its log-probs are computed from the full logits "
            "(same numbers, more memory).",
            stacklevel=3,
        )


def _full_logits_token_logprobs(model, input_ids, attention_mask, position_ids, width, temperature, return_entropy):
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=width + 1,
        use_cache=False,
    ).logits[:, -width - 1 : -1]
    logits = logits.float() / temperature
    logprobs = selective_log_softmax(logits, input_ids[:, -width:])
    entropy = None
    if return_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(logits)
    return logprobs, entropy


def _last_hidden_states(model, input_ids, attention_mask, position_ids, width: int) -> torch.Tensor:
    """The decoder body's final hidden states (after its final norm) at the positions that predict the last
    ``width`` tokens, ``[batch, width, hidden]``."""
    base = _base_causal_lm(model)
    backbone = getattr(base, base.base_model_prefix)
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    return hidden[:, -width - 1 : -1]


def _chunked_head_agrees(model, input_ids, attention_mask, position_ids) -> bool:
    """One check per model: do the body + head give the log-probs the model's own forward does (first row, up to
    64 positions)? Catches an architecture that changes its logits in a way no config field announces."""
    base = _base_causal_lm(model)
    head = base.get_output_embeddings()
    checked = _checked_heads.get(base)
    if checked is not None and checked[0] is head:
        return checked[1]
    row = slice(0, 1)
    length = min(input_ids.shape[1], 65)
    ids = input_ids[row, -length:]
    mask = attention_mask[row, -length:] if attention_mask is not None else None
    positions = position_ids[row, -length:] if position_ids is not None else None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            full, _ = _full_logits_token_logprobs(model, ids, mask, positions, length - 1, 1.0, False)
            hidden = _last_hidden_states(model, ids, mask, positions, length - 1)
            chunked = chunked_token_logprobs(hidden, head.weight, ids[:, 1:], bias=head.bias).logprobs
    finally:
        model.train(was_training)
    low_precision = head.weight.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(ids.device.type)
    agrees = bool(torch.allclose(chunked, full, atol=0.05 if low_precision else 1e-3, rtol=0.0, equal_nan=True))
    _checked_heads[base] = (head, agrees)
    return agrees


def causal_lm_token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None = None,
    width: int | None = None,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = DEFAULT_LOGPROB_CHUNK_SIZE,
    mask: torch.Tensor | None = None,
    return_entropy: bool = False,
) -> TokenLogprobs:
    r""":math:`\log\pi(x_t \mid x_{<t})` at temperature :math:`T` of the last ``width`` tokens of each row of
    ``input_ids`` (all but the first by default), ``[batch, width]`` float32, and optionally each position's entropy.

    ``model`` is a causal LM (a ``PeftModel`` too; the active adapter is used, so ``disable_adapter()`` gives the
    reference). With ``chunk_size`` tokens (the default) the decoder body runs to its last hidden state and
    :func:`chunked_token_logprobs` applies the output head chunk by chunk: no ``[batch, width, vocab]`` logits in the
    forward or the backward pass. ``chunk_size=None`` (or 0), and any model whose head cannot be separated
    (:func:`chunked_head_fallback_reason`, e.g. Gemma's logit soft-capping, LoRA on ``lm_head``; said once), take the
    full-logits path: ``log_softmax(logits.float() / T)``. Both give the same numbers (checked once per model).

    ``mask`` (``[batch, width]``, 1 = scored) skips positions: they read 0 and, on the chunked path, their logits are
    never computed (a prompt, padding after the stop token). The entropy carries no gradient.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, length], got {list(input_ids.shape)}.")
    length = input_ids.shape[1]
    width = length - 1 if width is None else width
    if not 1 <= width <= length - 1:
        raise ValueError(
            f"width={width} tokens to score, but the rows are {length} tokens long: width must be in [1, {length - 1}] "
            "(the first token has no context to be predicted from)."
        )
    if mask is not None and tuple(mask.shape) != (input_ids.shape[0], width):
        raise ValueError(f"mask is {list(mask.shape)}; it must be [batch, width] = [{input_ids.shape[0]}, {width}].")
    check_logprob_chunk_size(chunk_size, "chunk_size")
    if chunk_size:
        reason = chunked_head_fallback_reason(model)
        if reason is None and not _chunked_head_agrees(model, input_ids, attention_mask, position_ids):
            reason = "its own forward's logits differ from its decoder body + output head"
        if reason is not None:
            _report_fallback(model, reason)
            chunk_size = None
    if not chunk_size:
        logprobs, entropy = _full_logits_token_logprobs(
            model, input_ids, attention_mask, position_ids, width, temperature, return_entropy
        )
        if mask is not None:
            skipped = mask == 0
            logprobs = logprobs.masked_fill(skipped, 0.0)
            entropy = entropy.masked_fill(skipped, 0.0) if entropy is not None else None
        return TokenLogprobs(logprobs, entropy)
    head = _base_causal_lm(model).get_output_embeddings()
    hidden = _last_hidden_states(model, input_ids, attention_mask, position_ids, width)
    labels = input_ids[:, -width:]
    if mask is not None:
        labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
    return chunked_token_logprobs(
        hidden, head.weight, labels, temperature, chunk_size, bias=head.bias, return_entropy=return_entropy
    )
