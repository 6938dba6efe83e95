r"""Steps 1-5 of a PPO iteration: what the optimization epochs read, computed without gradients.

1. **sample** completions with the current policy (:func:`generate_responses`);
2. **score** them with the reward function(s) (:func:`score_completions`);
3. **old and reference log-probs, values** of every response token (:func:`rollout_logprobs_and_values`);
4. **per-token rewards**: :math:`r_t = -\beta_{ref}\,\widehat{\mathrm{KL}}_t`, plus the score at the last token
   (:func:`kl_shaped_rewards`);
5. **advantages and returns** (:func:`compute_advantages`): GAE, or a sequence-level baseline (REINFORCE with a
   :class:`RunningBaseline`, RLOO, GRPO).

:class:`prefkit.trainers.ppo.PPOTrainer` calls them in this order and packs the result in a :class:`Rollout`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ...chat import render_prompt
from ...logprobs import selective_log_softmax
from ...losses import gae, grpo_advantages, reinforce_advantages, rloo_advantages, whiten
from ...rl import RewardFunction, combine_rewards
from .config import PPOConfig
from .policy_value import PolicyAndValue, causal_lm_logits


@dataclass
class Responses:
    """Sampled completions, ready for forward passes (per process): ``B`` rows, ``P`` prompt tokens (left-padded),
    ``T`` completion tokens (right-padded)."""

    query_responses: torch.Tensor  # [B, P + T] prompt then completion token ids
    attention_mask: torch.Tensor  # [B, P + T] 1 on real prompt tokens and on completion tokens up to EOS
    position_ids: torch.Tensor  # [B, P + T]
    responses: torch.Tensor  # [B, T] completion token ids (pad after the stop token)
    response_mask: torch.Tensor  # [B, T] float, 1 up to and including the stop token
    contains_eos: torch.Tensor  # [B] bool, whether the completion stopped before max_new_tokens


@dataclass
class Rollout:
    """What the optimization epochs of one PPO iteration read (per process): ``B`` completions, ``P`` prompt
    tokens (left-padded), ``T`` response tokens (right-padded)."""

    query_responses: torch.Tensor  # [B, P + T] prompt then completion token ids
    attention_mask: torch.Tensor  # [B, P + T] 1 on real prompt tokens and on completion tokens up to EOS
    position_ids: torch.Tensor  # [B, P + T]
    responses: torch.Tensor  # [B, T] completion token ids (pad after EOS)
    response_mask: torch.Tensor  # [B, T] float, 1 up to and including the stop token
    old_logprobs: torch.Tensor  # [B, T] log pi_old(a_t | s_t), the policy that sampled
    ref_logprobs: torch.Tensor  # [B, T] log pi_ref(a_t | s_t)
    values: torch.Tensor | None  # [B, T] V(s_t) at sampling time (gae only)
    advantages: torch.Tensor  # [B, T]
    returns: torch.Tensor | None  # [B, T] the value model's labels (gae only)


# --------------------------------------------------------------------------------------------------------------------
# 1. Sample
# --------------------------------------------------------------------------------------------------------------------


def stop_token_ids(model, tokenizer, extra: Sequence[int] | None = None) -> list[int]:
    """The ids that end a completion: the tokenizer's EOS, the model's generation-config EOS (one or several) and
    ``extra``; sorted, without repeats."""
    ids: list[int] = []
    for candidate in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if candidate is None:
            continue
        ids += list(candidate) if isinstance(candidate, (list, tuple)) else [candidate]
    ids += list(extra or [])
    return sorted(set(int(i) for i in ids))


@torch.no_grad()
def generate_responses(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[Any],
    *,
    accelerator,
    max_new_tokens: int,
    temperature: float,
    stop_ids: Sequence[int],
    max_prompt_length: int | None = None,
    batch_size: int = 64,
    gather_deepspeed3_params: bool = True,
) -> Responses:
    """Sample one completion per prompt from the policy of ``model`` (a :class:`PolicyAndValue`, maybe wrapped by
    DDP or DeepSpeed), with the KV cache, ``batch_size`` prompts at a time.

    Prompts (text or messages) are rendered with the chat template and keep their last ``max_prompt_length`` tokens.
    Sampling is from the policy itself at ``temperature`` (no top-k / top-p: the PPO ratios assume the same
    distribution). A completion ends at its first id in ``stop_ids``, which is kept (the model must learn to stop);
    what follows is padding.
    """
    from transformers import GenerationConfig
    from trl.models import unwrap_model_for_generation

    device = accelerator.device
    texts = [render_prompt(tokenizer, prompt) for prompt in prompts]
    truncation = {"truncation": True, "max_length": max_prompt_length} if max_prompt_length else {}
    previous_side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"  # keep the end of a long prompt, where the question is
    try:
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False, **truncation)
    finally:
        tokenizer.truncation_side = previous_side
    query_ids = encoded["input_ids"].to(device)
    query_mask = encoded["attention_mask"].to(device)
    generation_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=temperature,
        top_k=0,  # sample from the policy itself: no truncation, or the ratios would be off
        top_p=1.0,
        min_p=None,
        repetition_penalty=1.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=list(stop_ids) or None,
        use_cache=True,
    )
    chunks = []
    with unwrap_model_for_generation(model, accelerator, gather_deepspeed3_params=gather_deepspeed3_params) as unwrapped:
        policy = unwrapped.policy
        was_training = policy.training
        policy.eval()
        try:
            for start in range(0, len(query_ids), batch_size):
                end = start + batch_size
                with accelerator.autocast():
                    output = policy.generate(
                        input_ids=query_ids[start:end],
                        attention_mask=query_mask[start:end],
                        generation_config=generation_config,
                    )
                chunks.append(output[:, query_ids.shape[1] :])
        finally:
            policy.train(was_training)
    width = max(chunk.shape[1] for chunk in chunks)
    responses = torch.cat(
        [nn.functional.pad(chunk, (0, width - chunk.shape[1]), value=tokenizer.pad_token_id) for chunk in chunks]
    )
    # A completion ends at its first stop token (kept: the model must learn to stop); the rest is padding.
    if stop_ids:
        is_stop = torch.isin(responses, torch.tensor(list(stop_ids), device=device))
    else:
        is_stop = torch.zeros_like(responses, dtype=torch.bool)
    contains_eos = is_stop.any(dim=1)
    first_stop = torch.where(contains_eos, is_stop.float().argmax(dim=1), torch.full_like(contains_eos, width - 1, dtype=torch.long))
    positions = torch.arange(width, device=device).unsqueeze(0)
    response_mask = (positions <= first_stop.unsqueeze(1)).float()
    responses = torch.where(response_mask.bool(), responses, torch.full_like(responses, tokenizer.pad_token_id))
    attention_mask = torch.cat([query_mask, response_mask.long()], dim=1)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return Responses(
        query_responses=torch.cat([query_ids, responses], dim=1),
        attention_mask=attention_mask,
        position_ids=position_ids,
        responses=responses,
        response_mask=response_mask,
        contains_eos=contains_eos,
    )


# --------------------------------------------------------------------------------------------------------------------
# 2. Score
# --------------------------------------------------------------------------------------------------------------------


def score_completions(
    reward_functions: Sequence[RewardFunction],
    weights: Sequence[float] | None,
    rows: Sequence[dict[str, Any]],
    completions: Sequence[str],
    contains_eos: torch.Tensor,
    missing_eos_penalty: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum of the reward functions' scores ``[B]`` (on ``contains_eos``'s device), less
    ``missing_eos_penalty`` for completions that never stopped, and each function's own scores by name.

    ``rows`` are the dataset rows of the completions: their ``prompt`` and every other column a reward function asks
    for by name.
    """
    prompts = [row["prompt"] for row in rows]
    columns = {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"}
    scores, per_function = combine_rewards(reward_functions, weights, prompts, completions, columns)
    scores = scores.to(contains_eos.device)
    if missing_eos_penalty is not None:
        scores = scores - missing_eos_penalty * (~contains_eos).float()
    return scores, per_function


# --------------------------------------------------------------------------------------------------------------------
# 3. Old and reference log-probs, values
# --------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def rollout_logprobs_and_values(
    policy_and_value: PolicyAndValue,
    ref_model: nn.Module | None,
    responses: Responses,
    *,
    temperature: float,
    batch_size: int = 64,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    r""":math:`\log\pi_{\theta_{old}}(a_t \mid s_t)`, :math:`\log\pi_{ref}(a_t \mid s_t)` and :math:`V(s_t)` of every
    response token, each ``[B, T]`` (values ``None`` without a value model), ``batch_size`` rows at a time.

    Log-probs are of the sampling distribution (logits divided by ``temperature``). The reference is ``ref_model``,
    or the policy with its adapter disabled when ``ref_model`` is ``None``.
    """
    width = responses.responses.shape[1]
    old_logprobs, ref_logprobs, values = [], [], []
    was_training = policy_and_value.training
    policy_and_value.eval()
    try:
        for start in range(0, len(responses.responses), batch_size):
            batch = slice(start, start + batch_size)
            inputs = (responses.query_responses[batch], responses.attention_mask[batch], responses.position_ids[batch])
            tokens = responses.responses[batch]
            with autocast():
                logits = policy_and_value.policy_logits(*inputs, width)
                old_logprobs.append(selective_log_softmax(logits.float() / temperature, tokens))
                del logits
                if ref_model is not None:
                    ref_logits = causal_lm_logits(ref_model, *inputs, width)
                else:
                    with policy_and_value.reference() as reference:
                        ref_logits = causal_lm_logits(reference, *inputs, width)
                ref_logprobs.append(selective_log_softmax(ref_logits.float() / temperature, tokens))
                del ref_logits
                if policy_and_value.has_values:
                    values.append(policy_and_value.values(*inputs, width))
    finally:
        policy_and_value.train(was_training)
    return torch.cat(old_logprobs), torch.cat(ref_logprobs), (torch.cat(values) if values else None)


# --------------------------------------------------------------------------------------------------------------------
# 4. Per-token rewards
# --------------------------------------------------------------------------------------------------------------------


def kl_shaped_rewards(
    scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, response_mask: torch.Tensor, whiten_rewards: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-token rewards :math:`r_t = -\beta_{ref}\,\widehat{\mathrm{KL}}_t`, plus the sequence's score on its last
    real token, ``[B, T]``; and the KL part alone (``non_score_rewards``, ``[B, T]``).

    ``kl`` is the per-token KL estimate, already masked; ``whiten_rewards`` rescales the rewards to unit variance
    (their mean is kept).
    """
    non_score_rewards = -kl_coef * kl
    last_index = response_mask.sum(dim=1).long() - 1  # [B]
    rewards = non_score_rewards.clone()
    rewards[torch.arange(len(rewards), device=rewards.device), last_index] += scores
    if whiten_rewards:
        rewards = whiten(rewards, response_mask, shift_mean=False)
    return rewards, non_score_rewards


# --------------------------------------------------------------------------------------------------------------------
# 5. Advantages
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class RunningBaseline:
    """REINFORCE's baseline :math:`b` in :math:`A = R - b`, carried from one PPO iteration to the next (and saved
    in ``ppo_state.json``).

    ``value`` is a moving average of past iterations' mean returns. An iteration subtracts :meth:`baseline` and only
    then folds its own mean in (:meth:`update`), so with ``use_batch_mean=False`` the baseline never depends on the
    samples it is subtracted from. The first iteration, having no past, uses its own mean.
    """

    momentum: float = 0.9
    use_batch_mean: bool = False  # reinforce_baseline="batch": subtract this iteration's mean return instead
    value: float | None = None

    def baseline(self, mean_return: float) -> float:
        """:math:`b` for an iteration whose mean return (over all processes) is ``mean_return``."""
        return mean_return if self.use_batch_mean or self.value is None else self.value

    def update(self, mean_return: float) -> None:
        self.value = mean_return if self.value is None else self.momentum * self.value + (1 - self.momentum) * mean_return


def compute_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor | None,
    response_mask: torch.Tensor,
    args: PPOConfig,
    reinforce_baseline: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Advantages ``[B, T]`` of ``args.advantage_estimator``, and the value model's labels (returns, ``[B, T]``; GAE
    only, else ``None``).

    GAE is token-level, over ``rewards`` and ``values``. The others are sequence-level: one return per completion
    (its score plus its KL penalty) minus a baseline (``reinforce_baseline`` for REINFORCE; leave-one-out for RLOO;
    the group mean, divided by the group's std unless ``grpo_scale_rewards`` is off, for GRPO), the same advantage
    for every token. ``whiten_advantages`` then normalizes them over the batch.
    """
    if args.advantage_estimator == "gae":
        advantages, returns = gae(rewards, values, response_mask, gamma=args.gamma, lam=args.lam)
    else:
        sequence_returns = rewards.sum(dim=1)  # [B]
        if args.advantage_estimator == "rloo":
            sequence_advantages = rloo_advantages(sequence_returns, args.num_generations)
        elif args.advantage_estimator == "grpo":
            sequence_advantages = grpo_advantages(sequence_returns, args.num_generations, scale=args.grpo_scale_rewards)
        else:
            if reinforce_baseline is None:
                raise ValueError("advantage_estimator='reinforce' needs reinforce_baseline (RunningBaseline.baseline).")
            sequence_advantages = reinforce_advantages(sequence_returns, reinforce_baseline)
        advantages = sequence_advantages.unsqueeze(1) * response_mask
        returns = None
    if args.whiten_advantages:
        advantages = whiten(advantages, response_mask)
    return advantages, returns
