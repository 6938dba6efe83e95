r"""Every formula of preference tuning, one small pure function each.

Notation: :math:`x` a prompt, :math:`y_w` / :math:`y_l` the chosen / rejected response, :math:`\pi_\theta` the policy,
:math:`\pi_{ref}` the frozen reference (the model before tuning), :math:`\sigma` the logistic function. Tensors that
run over response tokens are ``[batch, time]`` with a ``mask`` of the same shape (1 for a real response token,
0 for padding). Nothing here touches a model: the trainers compute log-probabilities, values and rewards and
hand them to these functions, so each can be checked against an independent computation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------------------------------
# Masked statistics
# --------------------------------------------------------------------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (all of ``values`` when ``mask`` is None)."""
    if mask is None:
        return values.mean() if dim is None else values.mean(dim=dim)
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim=dim) / mask.sum(dim=dim).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor | None = None, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` where ``mask`` is 1, Bessel-corrected when ``unbiased``."""
    if mask is None:
        mask = torch.ones_like(values)
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    count = mask.sum()
    variance = (((values - mean) ** 2) * mask).sum() / count.clamp(min=1.0)
    if unbiased and count > 1:
        variance = variance * count / (count - 1)
    return variance


def masked_moments(
    values: torch.Tensor, mask: torch.Tensor | None = None, all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) variance of ``values`` where ``mask`` is 1, over every process when ``all_reduce`` sums a
    tensor across processes (e.g. ``lambda t: accelerator.reduce(t, "sum")``): the statistics of the global batch,
    not of this process's share. Without it, those of the local batch (``masked_mean`` and ``masked_var``)."""
    mask = torch.ones_like(values) if mask is None else mask.to(values.dtype)
    reduce = all_reduce or (lambda tensor: tensor)
    totals = reduce(torch.stack([(values * mask).sum(), mask.sum()]))
    count = totals[1].clamp(min=1.0)
    mean = totals[0] / count
    variance = reduce((((values - mean) ** 2) * mask).sum()) / count
    return mean, variance


def whiten(
    values: torch.Tensor,
    mask: torch.Tensor | None = None,
    shift_mean: bool = True,
    eps: float = 1e-8,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    r"""Normalize to unit variance over the masked entries:

    .. math:: \mathrm{whiten}(v) = \frac{v - \mu}{\sqrt{\sigma^2 + \epsilon}}

    With ``shift_mean=False`` the mean is added back (:math:`v` is only rescaled), which PPO uses for rewards so
    that their sign is kept. Masked-out entries are returned as 0. With ``all_reduce`` (see :func:`masked_moments`)
    :math:`\mu` and :math:`\sigma` are those of the batch over all processes, so the result does not depend on how
    the batch is split between them.
    """
    mean, variance = masked_moments(values, mask, all_reduce)
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened if mask is None else whitened * mask.to(values.dtype)


# --------------------------------------------------------------------------------------------------------------------
# Reward modeling
# --------------------------------------------------------------------------------------------------------------------


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_rewards_coefficient: float | None = None,
) -> torch.Tensor:
    r"""Bradley-Terry negative log-likelihood of the observed preferences, averaged over pairs.

    The model says :math:`p(y_w \succ y_l \mid x) = \sigma(r(x, y_w) - r(x, y_l))`, so

    .. math:: \mathcal{L} = -\log \sigma\big(r(x, y_w) - r(x, y_l) - m\big)

    where :math:`m` is an optional per-pair ``margin`` (graded labels: "much better" asks for a larger gap than
    "slightly better"). With ``center_rewards_coefficient`` :math:`c`, the auxiliary term
    :math:`c \cdot \mathbb{E}[(r_w + r_l)^2]` keeps rewards centred on zero (Eisenstein et al., 2023), as TRL does.
    """
    difference = chosen_rewards - rejected_rewards
    if margin is not None:
        difference = difference - margin
    loss = -F.logsigmoid(difference).mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * ((chosen_rewards + rejected_rewards) ** 2).mean()
    return loss


# --------------------------------------------------------------------------------------------------------------------
# DPO
# --------------------------------------------------------------------------------------------------------------------


class DPOLoss(NamedTuple):
    loss: torch.Tensor  # scalar, mean over pairs
    losses: torch.Tensor  # [batch], one per pair
    chosen_rewards: torch.Tensor  # [batch], implicit reward of y_w (detached)
    rejected_rewards: torch.Tensor  # [batch], implicit reward of y_l (detached)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> DPOLoss:
    r"""Direct Preference Optimization (Rafailov et al., 2023), sigmoid form.

    .. math::
        \mathcal{L}_{DPO} = -\log \sigma\Big(
            \beta \log \frac{\pi_\theta(y_w \mid x)}{\pi_{ref}(y_w \mid x)}
          - \beta \log \frac{\pi_\theta(y_l \mid x)}{\pi_{ref}(y_l \mid x)} \Big)

    Inputs are sequence log-probabilities :math:`\log \pi(y \mid x) = \sum_t \log \pi(y_t \mid x, y_{<t})` summed
    over response tokens, shape ``[batch]``. The implicit rewards :math:`\hat r(x, y) = \beta \log
    \pi_\theta(y \mid x) / \pi_{ref}(y \mid x)` are returned detached: they are what TRL logs as
    ``rewards/chosen`` and ``rewards/rejected``, and what :func:`implicit_reward` scores responses with.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return DPOLoss(
        loss=losses.mean(),
        losses=losses,
        chosen_rewards=beta * chosen_logratios.detach(),
        rejected_rewards=beta * rejected_logratios.detach(),
    )


def implicit_reward(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    r"""DPO's implicit reward :math:`\hat r(x, y) = \beta \log \pi_\theta(y \mid x) / \pi_{ref}(y \mid x)`.

    It equals the true reward up to a prompt-only term :math:`\beta \log Z(x)`, so it ranks responses to the same
    prompt (Best-of-N) but is not comparable across prompts.
    """
    return beta * (policy_logps - ref_logps)


# --------------------------------------------------------------------------------------------------------------------
# KL estimators
# --------------------------------------------------------------------------------------------------------------------


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    r"""Per-token estimate of :math:`\mathrm{KL}(\pi_\theta \,\|\, \pi_{ref})` from tokens sampled from :math:`\pi_\theta`.

    With the log-ratio :math:`\log r = \log \pi_{ref}(a \mid s) - \log \pi_\theta(a \mid s)` (Schulman, "Approximating
    KL divergence", 2020):

    - ``"k1"``: :math:`-\log r`; unbiased, high variance, can be negative on a single sample.
    - ``"k2"``: :math:`\tfrac12 (\log r)^2`; biased, low variance, non-negative.
    - ``"k3"``: :math:`(r - 1) - \log r`; unbiased, low variance, always :math:`\ge 0`.
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        # Clamp the exponent so that a token the reference finds impossible cannot overflow to inf.
        return torch.expm1(log_ratio.clamp(max=20.0)) - log_ratio
    raise ValueError(f"Unknown KL estimator {estimator!r}: use 'k1', 'k2' or 'k3'.")


# --------------------------------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------------------------------


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Generalized Advantage Estimation (Schulman et al., 2016) over response tokens.

    Walking backwards over the tokens of each response,

    .. math::
        \delta_t = r_t + \gamma V(s_{t+1}) - V(s_t), \qquad
        \hat A_t = \delta_t + \gamma \lambda \hat A_{t+1}, \qquad
        \hat R_t = \hat A_t + V(s_t)

    with :math:`V(s_{T}) = 0` and :math:`\hat A_{T} = 0` past the last real token (``mask`` says where a response
    ends; responses may have different lengths). :math:`\gamma = \lambda = 1` gives the reward-to-go minus the value.

    Args:
        rewards, values, mask: ``[batch, time]``.

    Returns:
        ``(advantages, returns)``, both ``[batch, time]`` and 0 where ``mask`` is 0.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    advantages_reversed = []
    last_advantage = torch.zeros_like(values[:, 0])
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_mask = mask[:, t + 1] if t + 1 < length else torch.zeros_like(mask[:, 0])
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        last_advantage = (delta + gamma * lam * last_advantage * next_mask) * mask[:, t]
        advantages_reversed.append(last_advantage)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    returns = (advantages + values) * mask
    return advantages, returns


def rloo_advantages(scores: torch.Tensor, num_generations: int) -> torch.Tensor:
    r"""REINFORCE Leave-One-Out (Ahmadian et al., 2024): each sample's baseline is the mean of the others.

    For :math:`k` samples of one prompt with scores :math:`r_1 \dots r_k`:

    .. math:: \hat A_i = r_i - \frac{1}{k - 1} \sum_{j \ne i} r_j

    ``scores`` is ``[num_prompts * k]`` with the :math:`k` samples of a prompt next to each other.
    """
    if num_generations < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt (num_generations >= 2).")
    grouped = scores.view(-1, num_generations)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (num_generations - 1)
    return (grouped - baseline).reshape(-1)


def grpo_advantages(
    scores: torch.Tensor, num_generations: int, scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    r"""Group Relative Policy Optimization (Shao et al., 2024): scores normalized within each prompt's group.

    .. math:: \hat A_i = \frac{r_i - \mathrm{mean}(r_{1..k})}{\mathrm{std}(r_{1..k}) + \epsilon}

    ``scale=False`` drops the division (Dr. GRPO). ``scores`` is laid out as in :func:`rloo_advantages`.
    """
    if num_generations < 2:
        raise ValueError("GRPO needs at least 2 samples per prompt (num_generations >= 2).")
    grouped = scores.view(-1, num_generations)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centered = centered / (grouped.std(dim=1, keepdim=True) + eps)
    return centered.reshape(-1)


def reinforce_advantages(scores: torch.Tensor, baseline: torch.Tensor | float) -> torch.Tensor:
    r"""REINFORCE with a baseline (Williams, 1992): :math:`\hat A = R - b`.

    ``baseline`` is the batch mean or a running mean of past returns; any baseline that does not depend on the
    action keeps the gradient unbiased and lowers its variance.
    """
    return scores - baseline


# --------------------------------------------------------------------------------------------------------------------
# PPO objectives
# --------------------------------------------------------------------------------------------------------------------


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # scalar to minimize
    clipfrac: torch.Tensor  # share of tokens whose ratio left [1 - eps, 1 + eps]
    approx_kl: torch.Tensor  # 1/2 E[(log rho)^2], a cheap KL(pi_old || pi_theta) estimate


def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> PolicyLoss:
    r"""PPO-Clip (Schulman et al., 2017), the clipped surrogate, to be minimized:

    .. math::
        \rho_t = \frac{\pi_\theta(a_t \mid s_t)}{\pi_{\theta_{old}}(a_t \mid s_t)}, \qquad
        \mathcal{L} = -\,\mathbb{E}_t\Big[\min\big(\rho_t \hat A_t,\;
                      \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\, \hat A_t\big)\Big]

    Where the clipped term is the smaller one the gradient is zero: the update cannot move a token's probability
    further than :math:`\epsilon` from where it was sampled.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return PolicyLoss(loss, clipfrac, approx_kl)


def kl_penalty(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    kl_estimator: str = "k3",
    importance_weighted: bool = True,
) -> torch.Tensor:
    r"""The KL-to-the-reference term of a policy loss, to be added to the surrogate and minimized:

    .. math::
        \beta\, \mathbb{E}_t\big[\mathrm{sg}(\rho_t)\, k(\pi_\theta, \pi_{ref})_t\big], \qquad
        \rho_t = \frac{\pi_\theta(a_t \mid s_t)}{\pi_{\theta_{old}}(a_t \mid s_t)}

    with the per-token estimator :math:`k` of :func:`kl_estimate` differentiated through :math:`\log \pi_\theta`.
    Which divergence its gradient descends depends on the estimator, for tokens sampled from :math:`\pi_\theta`:

    - ``"k3"`` (default): :math:`\mathbb{E}[\nabla k_3] = \nabla \mathrm{KL}(\pi_{ref} \,\|\, \pi_\theta)`, the
      lecture's :math:`\mathrm{KL}[\pi_{ref}, \pi_\theta]` (mass-covering: keeps every token the reference likes);
    - ``"k2"``: :math:`\mathbb{E}[\nabla k_2] = \nabla \mathrm{KL}(\pi_\theta \,\|\, \pi_{ref})`;
    - ``"k1"`` is refused: :math:`\mathbb{E}[\nabla k_1] = \mathbb{E}[\nabla \log \pi_\theta] = 0`, so it would
      penalize nothing (k1 is the right estimator of the KL *value*, e.g. in the reward, not of its gradient).

    Those identities need tokens sampled from the *current* policy. Only the first minibatch of a PPO iteration is
    on-policy; later ones were sampled from :math:`\pi_{\theta_{old}}`. The stop-gradient importance weight
    :math:`\mathrm{sg}(\rho_t)` makes the expectation over :math:`\pi_{\theta_{old}}` equal the one over
    :math:`\pi_\theta`, so the identities hold on every minibatch; it is exactly 1 on the first.
    ``importance_weighted=False`` drops it, as the GRPO paper (Shao et al., 2024, eq. 3) writes its loss.
    """
    if kl_estimator == "k1":
        raise ValueError(
            "kl_estimator='k1' cannot be used as a loss penalty: its expected gradient is zero (E[grad log pi] = 0), "
            "so it would not keep the policy near the reference. Use 'k3' (gradient of KL(ref || policy)) or 'k2' "
            "(gradient of KL(policy || ref))."
        )
    penalty = kl_estimate(logprobs, ref_logprobs, kl_estimator)
    if importance_weighted:
        penalty = torch.exp(logprobs - old_logprobs).detach() * penalty
    return kl_coef * masked_mean(penalty, mask)


def ppo_kl_penalty_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    kl_estimator: str = "k3",
    importance_weighted: bool = True,
) -> PolicyLoss:
    r"""PPO with a KL penalty to the reference (Schulman et al., 2017, sec. 4), to be minimized:

    .. math::
        \mathcal{L} = -\,\mathbb{E}_t\Big[\rho_t \hat A_t
                      - \beta\, \mathrm{KL}\big[\pi_{ref}(\cdot \mid s_t),\, \pi_\theta(\cdot \mid s_t)\big]\Big]

    The surrogate is unclipped; what keeps the policy close is the penalty, :func:`kl_penalty` (per-token estimator
    ``kl_estimator``, importance-weighted off-policy). ``kl_coef`` :math:`\beta` may be adapted between iterations to
    hit a target KL (see the PPO trainer). ``clipfrac`` reports the share of ratios outside :math:`[0.8, 1.2]`, for
    comparison with the clipped objective.
    """
    penalty = kl_penalty(logprobs, old_logprobs, ref_logprobs, mask, kl_coef, kl_estimator, importance_weighted)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    loss = masked_mean(-advantages * ratio, mask) + penalty
    with torch.no_grad():
        clipfrac = masked_mean(((ratio - 1.0).abs() > 0.2).float(), mask)
        approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return PolicyLoss(loss, clipfrac, approx_kl)


def truncated_importance_weights(
    logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    cap: float = 2.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Truncated importance sampling (TIS; Yao et al., 2025, "Your efficient RL framework secretly brings you
    off-policy RL training") for rollouts sampled by another engine than the one that trains:

    .. math:: w_t = \mathrm{sg}\Big(\min\Big(\frac{\pi_{\theta_{old}}(a_t \mid s_t)}{\mu(a_t \mid s_t)},\; C\Big)\Big)
              = \min\big(\exp(\log\pi_{\theta_{old}} - \log\mu),\; C\big)

    ``logprobs`` are the trainer's log-probs of the sampled tokens (:math:`\pi_{\theta_{old}}`, the same weights
    as the sampler but another implementation: a vLLM server, other kernels, another precision), ``behaviour_logprobs``
    the sampler's own (:math:`\mu`), ``cap`` :math:`C`. Multiplying a token's policy-gradient term by :math:`w_t`
    corrects the expectation from :math:`\mu` back to :math:`\pi_{\theta_{old}}`; truncating at :math:`C` bounds the
    variance a rare token with :math:`\mu \ll \pi_{\theta_{old}}` would add (at the price of a small bias there). The
    weights carry no gradient. Where ``mask`` is 0 the weight is 1.
    """
    if not cap > 0:
        raise ValueError(f"cap must be > 0; got {cap!r}.")
    with torch.no_grad():
        weights = torch.exp(logprobs - behaviour_logprobs).clamp(max=cap)
        if mask is not None:
            weights = torch.where(mask.bool(), weights, torch.ones_like(weights))
    return weights.detach()


class ValueLoss(NamedTuple):
    loss: torch.Tensor
    clipfrac: torch.Tensor  # share of tokens where the clipped error was the larger one


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float | None = 0.2,
) -> ValueLoss:
    r"""Clipped value-function regression to the returns (the label of the value model):

    .. math::
        V^{clip}_t = V_{old}(s_t) + \mathrm{clip}\big(V(s_t) - V_{old}(s_t), -\epsilon_v, \epsilon_v\big), \qquad
        \mathcal{L}_V = \tfrac12\, \mathbb{E}_t\Big[\max\big((V(s_t) - \hat R_t)^2,\; (V^{clip}_t - \hat R_t)^2\big)\Big]

    ``clip_range_value=None`` gives the plain squared error.
    """
    unclipped_error = (values - returns) ** 2
    if clip_range_value is None:
        return ValueLoss(0.5 * masked_mean(unclipped_error, mask), torch.zeros((), device=values.device))
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_error > unclipped_error).float(), mask)
    return ValueLoss(loss, clipfrac)


def best_of_n_kl(n: int) -> float:
    r"""Analytic KL of the Best-of-N policy to the base policy (Stiennon et al., 2020; Beirami et al., 2024):

    .. math:: \mathrm{KL}(\pi_{BoN} \,\|\, \pi) = \log N - \frac{N - 1}{N}

    An upper bound that is tight when the N samples are distinct; 0 at N = 1.
    """
    import math

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    return math.log(n) - (n - 1) / n
