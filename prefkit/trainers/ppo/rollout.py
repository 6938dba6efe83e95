r"""Steps 1-5 of a PPO iteration: what the optimization epochs read, computed without gradients.

1. **sample** completions with the current policy (:func:`generate_responses`, through a rollout engine:
   :class:`HFRolloutEngine`, or :class:`prefkit.sampling_server.ServerSampler` on a vLLM server);
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
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ...losses import gae, grpo_advantages, masked_moments, reinforce_advantages, rloo_advantages, whiten
from ...rl import RewardFunction, combine_rewards
from .config import PPOConfig
from .policy_value import PolicyAndValue

AllReduce = Callable[[torch.Tensor], torch.Tensor]  # sums a tensor over processes


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
    texts: list[str]  # the completions decoded (up to the stop token, without special tokens, stripped)
    behaviour_logprobs: torch.Tensor | None = None  # [B, T] the sampler's own log-probs (a server's), 0 where masked


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
    is_weights: torch.Tensor | None = None  # [B, T] truncated importance weights pi_old / mu (server engine only)


# --------------------------------------------------------------------------------------------------------------------
# 1. Sample
# --------------------------------------------------------------------------------------------------------------------


class HFRolloutEngine:
    """The ``"hf"`` rollout engine: :class:`prefkit.sampling.HFSampler` on the policy of a :class:`PolicyAndValue`
    (maybe wrapped by DDP or DeepSpeed), inside TRL's ``unwrap_model_for_generation`` (which gathers ZeRO-3 shards).

    :meth:`update_weights` points it at the (wrapped) model, so it samples with the very weights being trained;
    ``Samples.logprobs`` are not asked for (they would keep every step's scores, ``[steps, rows, vocab]``): the
    trainer's own forward pass gives the same numbers up to float noise.
    """

    def __init__(self, accelerator, tokenizer, stop_ids: Sequence[int], gather_deepspeed3_params: bool = True):
        self.accelerator, self.tokenizer, self.stop_ids = accelerator, tokenizer, list(stop_ids)
        self.gather_deepspeed3_params = gather_deepspeed3_params
        self.model: nn.Module | None = None

    def update_weights(self, policy: nn.Module) -> None:
        self.model = policy

    @torch.no_grad()
    def generate(self, prompts: Sequence[Any], n: int = 1, **gen_kwargs: Any):
        from trl.models import unwrap_model_for_generation

        from ...sampling import HFSampler

        if self.model is None:
            raise RuntimeError("HFRolloutEngine.generate before update_weights: give it the model to sample from.")
        with unwrap_model_for_generation(
            self.model, self.accelerator, gather_deepspeed3_params=self.gather_deepspeed3_params
        ) as unwrapped:
            sampler = HFSampler(unwrapped.policy, self.tokenizer, extra_stop_ids=self.stop_ids,
                                autocast=self.accelerator.autocast)
            return sampler.generate(list(prompts), n, top_k=0, top_p=1.0, min_p=None, repetition_penalty=1.0,
                                    use_cache=True, **gen_kwargs)


@torch.no_grad()
def generate_responses(
    engine,
    prompts: Sequence[Any],
    *,
    max_new_tokens: int,
    temperature: float,
    max_prompt_length: int | None = None,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> Responses:
    """Sample one completion per prompt with ``engine`` (a :class:`prefkit.sampling.RolloutEngine` whose weights are
    the policy's: :class:`HFRolloutEngine` or :class:`prefkit.sampling_server.ServerSampler`), ``batch_size`` prompts
    at a time, and move them to ``device``.

    Prompts (text or messages) are rendered with the chat template and keep their last tokens when longer than
    ``max_prompt_length`` (or than the context leaves). Sampling is from the policy itself at ``temperature``: no
    top-k, top-p, min-p or repetition penalty, whatever the model's generation config says, since the PPO ratios
    assume the distribution the log-probs are computed from. A completion ends at its first stop id, which is kept
    (the model must learn to stop); what follows is padding.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"prompts\[\d+\] is \d+ tokens; keeping its last")
        samples = engine.generate(
            list(prompts), 1, max_new_tokens=max_new_tokens, max_prompt_length=max_prompt_length,
            truncation="left", temperature=temperature, batch_size=batch_size,
        )
    move = (lambda tensor: tensor.to(device)) if device is not None else (lambda tensor: tensor)  # noqa: E731
    return Responses(
        query_responses=move(samples.input_ids),
        attention_mask=move(samples.attention_mask),
        position_ids=move(samples.position_ids),
        responses=move(samples.completion_ids),
        response_mask=move(samples.completion_mask.float()),
        contains_eos=move(samples.finished),
        texts=samples.texts,
        behaviour_logprobs=None if samples.logprobs is None else move(samples.logprobs.float()),
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
            with autocast():
                # chunked through the output head (PolicyAndValue.logprob_chunk_size): never the [rows, T, vocab] logits
                old_logprobs.append(policy_and_value.policy_logprobs(*inputs, width, temperature=temperature).logprobs)
                ref_logprobs.append(policy_and_value.reference_logprobs(ref_model, *inputs, width, temperature=temperature))
                if policy_and_value.has_values:
                    values.append(policy_and_value.values(*inputs, width))
    finally:
        policy_and_value.train(was_training)
    return torch.cat(old_logprobs), torch.cat(ref_logprobs), (torch.cat(values) if values else None)


# --------------------------------------------------------------------------------------------------------------------
# 4. Per-token rewards
# --------------------------------------------------------------------------------------------------------------------


def kl_shaped_rewards(
    scores: torch.Tensor,
    kl: torch.Tensor,
    kl_coef: float,
    response_mask: torch.Tensor,
    whiten_rewards: bool = False,
    all_reduce: AllReduce | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-token rewards :math:`r_t = -\beta_{ref}\,\widehat{\mathrm{KL}}_t`, plus the sequence's score on its last
    real token, ``[B, T]``; and the KL part alone (``non_score_rewards``, ``[B, T]``).

    ``kl`` is the per-token KL estimate, already masked; ``whiten_rewards`` rescales the rewards to unit variance
    (their mean is kept), with the statistics of the global batch when ``all_reduce`` sums across processes.
    """
    non_score_rewards = -kl_coef * kl
    last_index = response_mask.sum(dim=1).long() - 1  # [B]
    rewards = non_score_rewards.clone()
    rewards[torch.arange(len(rewards), device=rewards.device), last_index] += scores
    if whiten_rewards:
        rewards = whiten(rewards, response_mask, shift_mean=False, all_reduce=all_reduce)
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
    all_reduce: AllReduce | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""Advantages ``[B, T]`` of ``args.advantage_estimator``, and the value model's labels (returns, ``[B, T]``; GAE
    only, else ``None``).

    GAE is token-level, over ``rewards`` and ``values``. The others are sequence-level: one return per completion
    (its score plus its KL penalty) minus a baseline (``reinforce_baseline`` for REINFORCE; leave-one-out for RLOO;
    the group mean, divided by the group's std unless ``grpo_scale_rewards`` is off, for GRPO), the same advantage
    for every token. ``whiten_advantages`` then normalizes them over the batch: centred and scaled for GAE (the
    standard PPO practice), only scaled for REINFORCE (:math:`(R - b) / \sigma_R`), because centring would subtract
    the batch mean and make any other baseline irrelevant. With ``all_reduce`` (a sum across processes, see
    :func:`prefkit.losses.masked_moments`) the normalization uses the global batch's statistics, so a run on N processes
    normalizes as one process with the whole batch would. RLOO and GRPO baselines need no communication: a prompt's
    ``num_generations`` completions are sampled, and stay, on one process.
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
        if args.advantage_estimator == "reinforce":
            _, variance = masked_moments(advantages, response_mask, all_reduce)
            advantages = advantages * torch.rsqrt(variance + 1e-8)
        else:
            advantages = whiten(advantages, response_mask, all_reduce=all_reduce)
    return advantages, returns
