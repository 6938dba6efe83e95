r"""Prefix-shared preference pairs: the prompt of a (prompt, chosen, rejected) pair is run through the model once.

TRL's DPO batch stacks every pair twice, ``prompt | chosen`` in the first half and ``prompt | rejected`` in the
second, so the prompt's tokens are computed twice. Here each pair becomes one sequence

.. code-block:: text

    p_0 … p_{n-2} | p_{n-1} c_0 … c_{k-1} | p_{n-1}' r_0 … r_{m-1}
      prompt head    chosen branch           rejected branch

with a 4D attention mask: every token sees the causal past of its own branch and the prompt head, never the other
branch. The last prompt token is repeated at the start of the rejected branch (``p_{n-1}'``, same token, same
position) because its hidden state predicts the first token of *both* answers; its copy sees exactly what the
original sees, so its hidden state is the same. Position ids of both branches continue from the prompt, so every
token has the position it has in TRL's unshared row, and every per-token quantity equals the unshared one up to
floating-point summation order.

With ``pack=True`` all pairs of a micro-batch go into a single row (block-diagonal mask, positions restarting per
pair), so no token is spent on padding.

The model's own forward is not changed: :func:`add_prefix_sharing` wraps the forward that TRL's fused LM head
installs (``model(..., labels=..., fused_lm_head=True)``). While a :class:`PrefixSharingSwitch` is on, a call
with a pair-stacked batch runs one shared forward and returns the per-token outputs (``log_probs``, ``entropy``,
``mean_logits``, ``is_top1`` …) laid out exactly as the unshared forward would, so every loss type, metric and
reduction of TRL's trainer runs unchanged on them. Anything else (generation, a batch whose chosen and rejected
rows do not share the prompt, extra model inputs) goes to the original forward.
"""

from __future__ import annotations

import functools
import logging
import types
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

# Attention implementations that read a custom 4D mask as given: SDPA takes a boolean mask (True = attend), eager
# adds a float mask to the scores. FlashAttention needs 2D padding masks, FlexAttention a BlockMask.
_BOOLEAN_MASK_ATTENTION = {"sdpa"}
_ADDITIVE_MASK_ATTENTION = {"eager"}
# Per-token fields of TRL's fused LM head output; everything else is passed through.
_PER_TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask")
# Keyword arguments a pair-stacked call may carry besides input_ids and attention_mask (PEFT adds None-valued ones).
_HARMLESS_KWARGS = {"use_cache", "return_dict", "output_attentions", "output_hidden_states", "inputs_embeds"}


@dataclass
class SharedPairs:
    """A pair-stacked batch rewritten as prefix-shared rows.

    ``input_ids``, ``position_ids``: ``[rows, length]``. ``attention_mask``: ``[rows, 1, length, length]``, boolean
    (True = may attend) or additive float. ``flat_index``: ``[2·pairs, time]``, where each token of the unshared
    batch is computed in the flattened shared batch (a rejected row's prompt head is its chosen row's).

    For DPO (:func:`share_pair_prefixes`) also ``shift_labels`` ``[rows, length]``, the token each position
    predicts (-100 where nothing is scored), and ``source_index``/``source_valid`` ``[2·pairs, time-1]``: for each
    scored position of the unshared batch, the flat shared position that scores the same token.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    flat_index: torch.Tensor
    shift_labels: torch.Tensor | None = None
    source_index: torch.Tensor | None = None
    source_valid: torch.Tensor | None = None

    def unshare(self, per_token: torch.Tensor) -> torch.Tensor:
        """Shared per-token values ``[rows, length]`` back in the unshared layout ``[2·pairs, time-1]``, zero where
        the unshared forward scores nothing (as TRL's fused head leaves them)."""
        gathered = per_token.reshape(-1)[self.source_index]
        if gathered.dtype == torch.bool:
            return gathered & self.source_valid
        return gathered.masked_fill(~self.source_valid, 0)


def _right_padded_lengths(input_ids, attention_mask) -> torch.Tensor | None:
    """Row lengths of an even-sized, right-padded 2D batch, or ``None`` for any other shape."""
    if input_ids.dim() != 2 or attention_mask is None or attention_mask.shape != input_ids.shape or input_ids.size(0) % 2:
        return None
    columns = torch.arange(input_ids.size(1), device=input_ids.device)
    lengths = attention_mask.sum(dim=1)
    if not torch.equal(attention_mask.bool(), columns < lengths[:, None]):
        return None
    return lengths


def share_pair_prefixes(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    pack: bool = False,
    mask_dtype: torch.dtype | None = None,
) -> SharedPairs | None:
    """Rewrite TRL's DPO batch (rows ``0..B-1`` are ``prompt | chosen``, rows ``B..2B-1`` the same prompts with the
    rejected answers, right-padded, ``labels`` -100 outside the answers) as prefix-shared rows.

    Returns ``None`` when the batch is not in that shape, so the caller runs it unshared: an odd number of rows,
    padding that is not on the right, an answer that does not follow its prompt, a pair whose two prompts differ
    (``truncation_mode="keep_end"`` can cut them differently) or an empty prompt.

    ``mask_dtype=None`` builds a boolean mask (SDPA); a float dtype builds an additive mask (0 or the dtype's min).
    ``pack=True`` puts every pair in one row instead of one pair per padded row.
    """
    lengths = _right_padded_lengths(input_ids, attention_mask)
    if lengths is None or labels is None or labels.shape != input_ids.shape:
        return None
    pairs = input_ids.size(0) // 2
    columns = torch.arange(input_ids.size(1), device=input_ids.device)
    answer = labels != -100
    prompt_lengths = torch.where(answer.any(dim=1), answer.float().argmax(dim=1), lengths)
    if not torch.equal(answer, (columns >= prompt_lengths[:, None]) & (columns < lengths[:, None])):
        return None  # the answer is not one block after the prompt
    chosen_prompt, rejected_prompt = prompt_lengths[:pairs], prompt_lengths[pairs:]
    if not torch.equal(chosen_prompt, rejected_prompt):
        return None
    in_prompt = columns < chosen_prompt[:, None]
    if not torch.equal(input_ids[:pairs].masked_fill(~in_prompt, 0), input_ids[pairs:].masked_fill(~in_prompt, 0)):
        return None
    shared = _lay_out(input_ids, lengths, chosen_prompt, pack=pack, mask_dtype=mask_dtype)
    if shared is None:
        return None
    # Unshared position t scores labels[t + 1]; the shared position of token t scores the same.
    scored = answer[:, 1:]
    shared.source_index = torch.where(scored, shared.flat_index[:, :-1], 0)
    shared.source_valid = scored
    flat_labels = torch.full((shared.input_ids.numel(),), -100, dtype=labels.dtype, device=labels.device)
    flat_labels[shared.source_index[scored]] = labels[:, 1:][scored]
    shared.shift_labels = flat_labels.view_as(shared.input_ids)
    return shared


def share_common_prefixes(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    pack: bool = False,
    mask_dtype: torch.dtype | None = None,
) -> SharedPairs | None:
    """Rewrite a reward-model batch (rows ``0..B-1`` the chosen sequences, ``B..2B-1`` the rejected ones, right-
    padded, as ``trl.RewardTrainer`` collates them) as rows sharing each pair's longest common prefix of tokens.

    Returns ``None`` when the batch is not in that shape or a pair shares no token.
    """
    lengths = _right_padded_lengths(input_ids, attention_mask)
    if lengths is None:
        return None
    pairs = input_ids.size(0) // 2
    columns = torch.arange(input_ids.size(1), device=input_ids.device)
    both = columns < torch.minimum(lengths[:pairs], lengths[pairs:])[:, None]
    differs = (input_ids[:pairs] != input_ids[pairs:]) | ~both
    # Longest common prefix, capped at the shorter row: the first column where the rows differ (or one ends).
    prefix = torch.where(differs.any(dim=1), differs.float().argmax(dim=1), both.sum(dim=1))
    return _lay_out(input_ids, lengths, prefix, pack=pack, mask_dtype=mask_dtype)


def _lay_out(input_ids, lengths, prefix, *, pack: bool, mask_dtype) -> SharedPairs | None:
    """Shared rows for pairs whose first ``prefix`` tokens are equal (``prefix >= 1``); see the module docstring."""
    if bool((prefix < 1).any()):
        return None
    device = input_ids.device
    rows, time = input_ids.shape
    pairs = rows // 2
    columns = torch.arange(time, device=device)
    chosen = lengths[:pairs] - prefix
    rejected = lengths[pairs:] - prefix
    shared_lengths = prefix + chosen + 1 + rejected  # the last prefix token is repeated for the rejected branch
    if pack:
        starts = torch.cumsum(shared_lengths, 0) - shared_lengths
        row_of_pair = torch.zeros(pairs, dtype=torch.long, device=device)
        shared_rows, width = 1, int(shared_lengths.sum())
    else:
        starts = torch.zeros(pairs, dtype=torch.long, device=device)
        row_of_pair = torch.arange(pairs, device=device)
        shared_rows, width = pairs, int(shared_lengths.max())

    # Where each unshared token lands: chosen rows keep their column; rejected rows from the last prefix token on
    # move behind the chosen branch (offset chosen + 1), and their prefix head is the chosen row's.
    pair_of_row = torch.cat([torch.arange(pairs, device=device)] * 2)
    branching = columns[None, :] >= (prefix[pair_of_row, None] - 1)
    offset = torch.cat([torch.zeros_like(chosen), chosen + 1])[:, None] * branching
    flat_index = row_of_pair[pair_of_row, None] * width + starts[pair_of_row, None] + columns[None, :] + offset
    carried = columns[None, :] < lengths[:, None]
    carried[pairs:] &= branching[pairs:]
    flat_index = flat_index.clamp(max=shared_rows * width - 1)  # padding columns of long rows; never read

    flat_ids = torch.zeros(shared_rows * width, dtype=input_ids.dtype, device=device)
    flat_ids[flat_index[carried]] = input_ids[carried]
    flat_positions = torch.zeros(shared_rows * width, dtype=torch.long, device=device)
    flat_positions[flat_index[carried]] = columns.expand(rows, time)[carried]
    # Branch of every shared token: 0 prefix head, 1 chosen branch (from the last prefix token), 2 rejected branch,
    # -1 padding. The pair id separates packed pairs.
    branch = torch.where(~branching, 0, torch.cat([torch.ones_like(chosen), torch.full_like(chosen, 2)])[:, None])
    flat_branch = torch.full((shared_rows * width,), -1, dtype=torch.long, device=device)
    flat_branch[flat_index[carried]] = branch[carried]
    flat_pair = torch.full((shared_rows * width,), -1, dtype=torch.long, device=device)
    flat_pair[flat_index[carried]] = pair_of_row[:, None].expand(rows, time)[carried]

    branch_grid = flat_branch.view(shared_rows, width)
    pair_grid = flat_pair.view(shared_rows, width)
    query_branch, key_branch = branch_grid[:, :, None], branch_grid[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    allowed = (
        causal
        & (pair_grid[:, :, None] == pair_grid[:, None, :])
        & (key_branch >= 0)
        & ((key_branch == 0) | (key_branch == query_branch))
    )
    allowed |= torch.eye(width, dtype=torch.bool, device=device)  # padding attends to itself: no empty softmax row
    mask = allowed[:, None]
    if mask_dtype is not None:
        mask = torch.zeros(mask.shape, dtype=mask_dtype, device=device).masked_fill(~mask, torch.finfo(mask_dtype).min)
    return SharedPairs(
        input_ids=flat_ids.view(shared_rows, width),
        position_ids=flat_positions.view(shared_rows, width),
        attention_mask=mask,
        flat_index=flat_index,
    )


def prefix_sharing_unsupported_reason(model, *, peft_model=None) -> str | None:
    """Why ``model`` cannot run prefix-shared pairs, or ``None`` when it can.

    It can when it is a text-only causal LM whose attention reads a custom 4D mask (SDPA or eager) over full
    (not sliding-window) attention, not a mixture of experts asked for its router loss, and not under a
    prompt-learning adapter (which prepends virtual tokens to every row).
    """
    config = getattr(model, "config", None)
    if config is None:
        return f"{type(model).__name__} has no config"
    name = f"{type(model).__name__}"
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in _BOOLEAN_MASK_ATTENTION | _ADDITIVE_MASK_ATTENTION:
        return f"{name} uses attn_implementation={implementation!r}, which does not take a custom 4D attention mask"
    if hasattr(config, "get_text_config") and config.get_text_config() is not config:
        return f"{name} is a multimodal model"
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        if any(kind != "full_attention" for kind in layer_types):
            return f"{name} has {sorted(set(layer_types))} layers; a custom 4D mask would replace the sliding window"
    elif getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True):
        return f"{name} uses sliding-window attention; a custom 4D mask would replace the window"
    if getattr(config, "output_router_logits", False):
        return f"{name} returns router logits; the load-balancing loss needs a 2D attention mask"
    if peft_model is not None:
        peft_config = getattr(peft_model, "active_peft_config", None)
        if getattr(peft_config, "is_prompt_learning", False):
            return "a prompt-learning adapter prepends virtual tokens to every row"
    return None


class PrefixSharingSwitch:
    """Turns prefix sharing on for the forwards wrapped by :func:`add_prefix_sharing` (off by default).

    ``with switch.on(): ...`` shares pair-stacked fused-head calls made inside the block. ``shared_calls`` and
    ``unshared_calls`` count what happened, for tests and logs.
    """

    def __init__(self, pack: bool = False):
        self.pack = pack
        self.active = False
        self.shared_calls = 0
        self.unshared_calls = 0
        self._told_unshared = False

    def on(self):
        return _SwitchedOn(self)

    def note_unshared(self, why: str) -> None:
        self.unshared_calls += 1
        if not self._told_unshared:
            self._told_unshared = True
            logger.warning("Prefix sharing: a batch ran unshared (%s); results are the same, only slower.", why)


class _SwitchedOn:
    def __init__(self, switch: PrefixSharingSwitch):
        self.switch = switch

    def __enter__(self):
        self.previous, self.switch.active = self.switch.active, True

    def __exit__(self, *exc):
        self.switch.active = self.previous
        return False


def add_prefix_sharing(model, switch: PrefixSharingSwitch) -> None:
    """Wrap ``model.forward`` (a causal LM already given TRL's fused LM head) so that, while ``switch`` is on, a
    ``fused_lm_head=True`` call with a pair-stacked batch runs prefix-shared and returns the unshared layout.

    Wrapping twice is a no-op. The model must pass :func:`prefix_sharing_unsupported_reason`.
    """
    if getattr(model.forward, "_prefkit_prefix_sharing", False):
        return
    inner = model.forward
    implementation = model.config._attn_implementation

    @functools.wraps(type(model).forward)
    def _prefix_shared_forward(self, *args, fused_lm_head=False, labels=None, **kwargs):
        if not (switch.active and fused_lm_head):
            return inner(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        extra = sorted(key for key, value in kwargs.items()
                       if value is not None and key not in _HARMLESS_KWARGS | {"input_ids", "attention_mask"})
        shared = None
        if not args and not extra and kwargs.get("inputs_embeds") is None and kwargs.get("input_ids") is not None:
            mask_dtype = None if implementation in _BOOLEAN_MASK_ATTENTION else self.get_input_embeddings().weight.dtype
            if mask_dtype is not None and not mask_dtype.is_floating_point:
                mask_dtype = torch.float32
            shared = share_pair_prefixes(kwargs["input_ids"], kwargs.get("attention_mask"), labels,
                                         pack=switch.pack, mask_dtype=mask_dtype)
        if shared is None:
            switch.note_unshared(f"extra inputs {extra}" if extra else "its chosen and rejected rows do not share one prompt")
            return inner(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        switch.shared_calls += 1
        outputs = inner(
            input_ids=shared.input_ids,
            attention_mask=shared.attention_mask,
            position_ids=shared.position_ids,
            shift_labels=shared.shift_labels,
            fused_lm_head=True,
            use_cache=False,
        )
        fields = {name: getattr(outputs, name) for name in outputs.keys()}
        for name in _PER_TOKEN_FIELDS:
            if fields.get(name) is not None:
                fields[name] = shared.unshare(fields[name])
        if fields.get("log_probs") is not None and "loss" in fields:
            # The fused head's loss: mean negative log-likelihood over the scored tokens.
            fields["loss"] = -fields["log_probs"].sum() / shared.source_valid.sum().clamp(min=1)
        return type(outputs)(**fields)

    _prefix_shared_forward._prefkit_prefix_sharing = True
    model.forward = types.MethodType(_prefix_shared_forward, model)


def reward_prefix_sharing_unsupported_reason(model, *, peft_model=None) -> str | None:
    """Why the sequence classifier ``model`` cannot score prefix-shared pairs, or ``None`` when it can: on top of
    :func:`prefix_sharing_unsupported_reason`, it must be a causal decoder (an encoder's prefix tokens see the
    answer, so they are not shared) with a per-token ``score`` head, as transformers' decoder classifiers have."""
    reason = prefix_sharing_unsupported_reason(model, peft_model=peft_model)
    if reason is not None:
        return reason
    name = type(model).__name__
    causal_flags = [module.is_causal for module in model.modules() if isinstance(getattr(module, "is_causal", None), bool)]
    if not causal_flags or not all(causal_flags):
        return f"{name} is not a causal decoder"
    if not isinstance(getattr(model, "score", None), torch.nn.Module):
        return f"{name} has no per-token score head"
    if not isinstance(getattr(model, getattr(model, "base_model_prefix", ""), None), torch.nn.Module):
        return f"{name} has no backbone at base_model_prefix"
    if getattr(model.config.get_text_config(), "pad_token_id", None) is None:
        return f"{name} has no pad_token_id, so it cannot score a batch of several pairs"
    return None


def add_reward_prefix_sharing(model, switch: PrefixSharingSwitch) -> None:
    """Wrap a decoder sequence classifier's ``forward`` so that, while ``switch`` is on, a pair-stacked call
    (``trl.RewardTrainer``'s batch: chosen rows, then rejected rows) runs each pair's common prefix once and returns
    the same ``logits`` ``[2·pairs, num_labels]``: the score head read where the unshared forward reads it, at each
    row's rightmost token that is not the pad token. Wrapping twice is a no-op; the model must pass
    :func:`reward_prefix_sharing_unsupported_reason`."""
    from transformers.modeling_outputs import SequenceClassifierOutputWithPast

    if getattr(model.forward, "_prefkit_prefix_sharing", False):
        return
    inner = model.forward
    implementation = model.config._attn_implementation

    @functools.wraps(type(model).forward)
    def _prefix_shared_forward(self, *args, **kwargs):
        if not switch.active:
            return inner(*args, **kwargs)
        extra = sorted(key for key, value in kwargs.items()
                       if value is not None and key not in _HARMLESS_KWARGS | {"input_ids", "attention_mask"})
        input_ids = kwargs.get("input_ids")
        shared = None
        if not args and not extra and input_ids is not None and kwargs.get("inputs_embeds") is None:
            mask_dtype = None if implementation in _BOOLEAN_MASK_ATTENTION else self.get_input_embeddings().weight.dtype
            if mask_dtype is not None and not mask_dtype.is_floating_point:
                mask_dtype = torch.float32
            shared = share_common_prefixes(input_ids, kwargs.get("attention_mask"), pack=switch.pack,
                                           mask_dtype=mask_dtype)
        if shared is None:
            switch.note_unshared(f"extra inputs {extra}" if extra else "its chosen and rejected rows share no first token")
            return inner(*args, **kwargs)
        switch.shared_calls += 1
        backbone = getattr(self, self.base_model_prefix)
        hidden = backbone(input_ids=shared.input_ids, attention_mask=shared.attention_mask,
                          position_ids=shared.position_ids, use_cache=False).last_hidden_state
        # The unshared forward reads each row at its rightmost non-pad token; read the same token's shared place.
        not_pad = (input_ids != self.config.get_text_config().pad_token_id).int()
        read = (torch.arange(input_ids.size(1), device=input_ids.device, dtype=torch.int32) * not_pad).argmax(-1)
        read_flat = shared.flat_index.gather(1, read.long()[:, None]).squeeze(1)
        logits = self.score(hidden.reshape(-1, hidden.size(-1))[read_flat.to(hidden.device)])
        return SequenceClassifierOutputWithPast(logits=logits)

    _prefix_shared_forward._prefkit_prefix_sharing = True
    model.forward = types.MethodType(_prefix_shared_forward, model)
