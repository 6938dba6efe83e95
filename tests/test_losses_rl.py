"""The RL formulas of prefkit.losses, each checked against an independent computation or hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from prefkit.losses import (
    gae,
    grpo_advantages,
    kl_estimate,
    kl_penalty,
    masked_mean,
    ppo_clip_loss,
    ppo_kl_penalty_loss,
    reinforce_advantages,
    rloo_advantages,
    truncated_importance_weights,
    value_loss,
    whiten,
)

# --------------------------------------------------------------------------------------------------------------------
# GAE
# --------------------------------------------------------------------------------------------------------------------


def _gae_reference(rewards: list[float], values: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """GAE for one episode of len(rewards) steps, written from the paper with plain Python floats."""
    length = len(rewards)
    advantages = [0.0] * length
    next_advantage = 0.0
    for t in reversed(range(length)):
        next_value = values[t + 1] if t + 1 < length else 0.0  # the episode ends after the last token
        delta = rewards[t] + gamma * next_value - values[t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[t] = next_advantage
    returns = [a + v for a, v in zip(advantages, values)]
    return advantages, returns


def _random_episodes(seed: int = 0, batch: int = 6, time: int = 9):
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.randn(batch, time, generator=generator)
    values = torch.randn(batch, time, generator=generator)
    lengths = [time, 1, 4, 7, 2, time - 1][:batch]
    mask = torch.zeros(batch, time)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return rewards, values, mask, lengths


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (0.99, 0.0), (0.5, 1.0)])
def test_gae_matches_a_per_episode_reference_on_variable_lengths(gamma, lam):
    rewards, values, mask, lengths = _random_episodes()
    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)
    for row, length in enumerate(lengths):
        expected_adv, expected_ret = _gae_reference(rewards[row, :length].tolist(), values[row, :length].tolist(), gamma, lam)
        torch.testing.assert_close(advantages[row, :length], torch.tensor(expected_adv), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(returns[row, :length], torch.tensor(expected_ret), rtol=1e-5, atol=1e-5)
    # Padding carries nothing, whatever garbage the padded rewards and values held.
    assert advantages[mask == 0].abs().max() == 0
    assert returns[mask == 0].abs().max() == 0


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value():
    rewards, values, mask, lengths = _random_episodes(seed=1)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    for row, length in enumerate(lengths):
        reward_to_go = torch.flip(torch.cumsum(torch.flip(rewards[row, :length], [0]), 0), [0])
        torch.testing.assert_close(advantages[row, :length], reward_to_go - values[row, :length], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(returns[row, :length], reward_to_go, rtol=1e-5, atol=1e-5)


def test_gae_with_lambda_zero_is_the_one_step_td_error():
    rewards, values, mask, lengths = _random_episodes(seed=2)
    advantages, _ = gae(rewards, values, mask, gamma=0.9, lam=0.0)
    row, length = 0, lengths[0]
    next_values = torch.cat([values[row, 1:length], torch.zeros(1)])
    torch.testing.assert_close(advantages[row, :length], rewards[row, :length] + 0.9 * next_values - values[row, :length])


# --------------------------------------------------------------------------------------------------------------------
# PPO-Clip
# --------------------------------------------------------------------------------------------------------------------

# (advantage, ratio, expected loss = -min(rho*A, clip(rho)*A), expected d loss / d logprob, clipped)
CLIP_POINTS = [
    (1.0, 1.5, -1.2, 0.0, True),  # A > 0, ratio above 1 + eps: the objective is flat, no push further up
    (1.0, 0.5, -0.5, -0.5, False),  # A > 0, ratio below 1 - eps: unclipped term is the min, gradient -A * rho
    (-1.0, 1.5, 1.5, 1.5, False),  # A < 0, ratio above 1 + eps: unclipped term is the min (pessimistic)
    (-1.0, 0.5, 0.8, 0.0, True),  # A < 0, ratio below 1 - eps: flat, no push further down
    (2.0, 1.1, -2.2, -2.2, False),  # inside the trust region both terms agree
]


@pytest.mark.parametrize("advantage,ratio,expected_loss,expected_grad,clipped", CLIP_POINTS)
def test_ppo_clip_loss_at_hand_computed_points(advantage, ratio, expected_loss, expected_grad, clipped):
    old_logprobs = torch.tensor([[-1.3]])
    logprobs = (old_logprobs + math.log(ratio)).requires_grad_(True)
    result = ppo_clip_loss(logprobs, old_logprobs, torch.tensor([[advantage]]), torch.ones(1, 1), clip_range=0.2)
    result.loss.backward()
    assert result.loss.item() == pytest.approx(expected_loss, abs=1e-6)
    assert logprobs.grad.item() == pytest.approx(expected_grad, abs=1e-6)
    assert result.clipfrac.item() == (1.0 if clipped else 0.0)
    assert result.approx_kl.item() == pytest.approx(0.5 * math.log(ratio) ** 2, rel=1e-5)


def test_ppo_clip_loss_ignores_padded_tokens():
    old_logprobs = torch.zeros(1, 3)
    logprobs = torch.tensor([[math.log(1.1), math.log(5.0), math.log(5.0)]], requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 0.0]])
    result = ppo_clip_loss(logprobs, old_logprobs, torch.ones(1, 3), mask)
    result.loss.backward()
    assert result.loss.item() == pytest.approx(-1.1, abs=1e-6)
    assert logprobs.grad[0, 1:].abs().max() == 0
    assert result.clipfrac.item() == 0.0


# --------------------------------------------------------------------------------------------------------------------
# KL estimators
# --------------------------------------------------------------------------------------------------------------------

POLICY_LOGITS = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0])
REFERENCE_LOGITS = torch.tensor([1.0, 0.5, 0.0, -0.5, 1.5])


def _exact_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    log_p, log_q = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    return (log_p.exp() * (log_p - log_q)).sum()


def _samples(num_samples: int = 200_000, seed: int = 0):
    log_p = torch.log_softmax(POLICY_LOGITS, -1)
    log_q = torch.log_softmax(REFERENCE_LOGITS, -1)
    actions = torch.multinomial(log_p.exp(), num_samples, replacement=True, generator=torch.Generator().manual_seed(seed))
    return log_p[actions], log_q[actions]


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_estimator_is_unbiased_on_samples_from_the_policy(estimator):
    logprobs, ref_logprobs = _samples()
    estimates = kl_estimate(logprobs, ref_logprobs, estimator)
    standard_error = estimates.std() / math.sqrt(estimates.numel())
    exact = _exact_kl(POLICY_LOGITS, REFERENCE_LOGITS)
    assert exact.item() > 0.3  # the two distributions really differ
    assert abs(estimates.mean() - exact) < 4 * standard_error


def test_k2_is_biased_for_these_distributions():
    # Schulman's k2 = (log r)^2 / 2 is low-variance but biased; the test above would catch k2 passed off as k1/k3.
    logprobs, ref_logprobs = _samples()
    estimates = kl_estimate(logprobs, ref_logprobs, "k2")
    standard_error = estimates.std() / math.sqrt(estimates.numel())
    assert abs(estimates.mean() - _exact_kl(POLICY_LOGITS, REFERENCE_LOGITS)) > 10 * standard_error


def test_k3_is_never_negative_while_k1_can_be():
    generator = torch.Generator().manual_seed(0)
    logprobs = -10 * torch.rand(10_000, generator=generator)
    ref_logprobs = -10 * torch.rand(10_000, generator=generator)
    assert kl_estimate(logprobs, ref_logprobs, "k3").min() >= 0
    assert kl_estimate(logprobs, ref_logprobs, "k1").min() < 0


def test_k3_stays_finite_when_the_reference_finds_a_token_impossible():
    estimate = kl_estimate(torch.tensor([-50.0]), torch.tensor([0.0]), "k3")  # log r = 50 would overflow exp in fp16
    assert torch.isfinite(estimate).all()


def test_unknown_kl_estimator_is_rejected():
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(torch.zeros(1), torch.zeros(1), "k4")


# --------------------------------------------------------------------------------------------------------------------
# PPO-KL-penalty: what the penalty's gradient pulls towards
# --------------------------------------------------------------------------------------------------------------------


def _penalty_gradient(estimator: str, num_samples: int = 400_000) -> torch.Tensor:
    """Autograd gradient w.r.t. the policy logits of the KL penalty alone, on samples drawn from the policy."""
    logits = POLICY_LOGITS.clone().requires_grad_(True)
    log_p = torch.log_softmax(logits, -1)
    log_q = torch.log_softmax(REFERENCE_LOGITS, -1)
    actions = torch.multinomial(
        log_p.detach().exp(), num_samples, replacement=True, generator=torch.Generator().manual_seed(1)
    )
    logprobs = log_p[actions].unsqueeze(0)
    result = ppo_kl_penalty_loss(
        logprobs,
        logprobs.detach(),
        log_q[actions].unsqueeze(0),
        torch.zeros_like(logprobs),  # no advantage: only the penalty moves the policy
        torch.ones_like(logprobs),
        kl_coef=1.0,
        kl_estimator=estimator,
    )
    result.loss.backward()
    return logits.grad


def _exact_gradient(kl) -> torch.Tensor:
    logits = POLICY_LOGITS.clone().requires_grad_(True)
    kl(logits).backward()
    return logits.grad


def test_k3_penalty_gradient_is_the_gradient_of_kl_ref_to_policy():
    # The lecture's KL[pi_ref(.|s), pi_theta(.|s)]: E_pi[grad k3] = -sum_a pi_ref(a) grad log pi_theta(a).
    expected = _exact_gradient(lambda logits: _exact_kl(REFERENCE_LOGITS, logits))
    torch.testing.assert_close(_penalty_gradient("k3"), expected, atol=5e-3, rtol=0)


def test_k2_penalty_gradient_is_the_gradient_of_kl_policy_to_ref():
    expected = _exact_gradient(lambda logits: _exact_kl(logits, REFERENCE_LOGITS))
    torch.testing.assert_close(_penalty_gradient("k2"), expected, atol=5e-3, rtol=0)


OLD_POLICY_LOGITS = torch.tensor([0.9, -0.4, 0.3, 1.1, -1.0])  # pi_theta_old: where a later minibatch was sampled


def _expected_penalty_gradient_off_policy(estimator: str, importance_weighted: bool) -> torch.Tensor:
    """Exact expectation over tokens sampled from pi_old (a sum over the vocabulary, no sampling noise) of the
    gradient of kl_penalty, w.r.t. the current policy's logits."""
    logits = POLICY_LOGITS.clone().requires_grad_(True)
    log_p = torch.log_softmax(logits, -1)
    log_old = torch.log_softmax(OLD_POLICY_LOGITS, -1)
    log_q = torch.log_softmax(REFERENCE_LOGITS, -1)
    total = sum(
        log_old[a].exp()
        * kl_penalty(
            log_p[a].view(1, 1), log_old[a].view(1, 1), log_q[a].view(1, 1), torch.ones(1, 1), 1.0, estimator,
            importance_weighted,
        )
        for a in range(len(logits))
    )
    total.backward()
    return logits.grad


@pytest.mark.parametrize("estimator,direction", [("k3", "ref||policy"), ("k2", "policy||ref")])
def test_importance_weighted_penalty_is_the_kl_gradient_on_off_policy_minibatches(estimator, direction):
    if direction == "ref||policy":
        expected = _exact_gradient(lambda logits: _exact_kl(REFERENCE_LOGITS, logits))
    else:
        expected = _exact_gradient(lambda logits: _exact_kl(logits, REFERENCE_LOGITS))
    weighted = _expected_penalty_gradient_off_policy(estimator, importance_weighted=True)
    torch.testing.assert_close(weighted, expected, atol=1e-6, rtol=1e-5)
    # Without the weight (the GRPO paper's form) the expectation is taken under the wrong policy: a different vector.
    unweighted = _expected_penalty_gradient_off_policy(estimator, importance_weighted=False)
    assert (unweighted - expected).abs().max() > 1e-2


def test_importance_weight_is_exactly_one_on_the_first_minibatch():
    logprobs = torch.tensor([[-0.7, -1.9, -3.0]])
    ref_logprobs = torch.tensor([[-1.0, -1.5, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    weighted = kl_penalty(logprobs, logprobs.clone(), ref_logprobs, mask, 0.2, "k3", importance_weighted=True)
    plain = kl_penalty(logprobs, logprobs.clone(), ref_logprobs, mask, 0.2, "k3", importance_weighted=False)
    expected = 0.2 * sum(math.exp(r - lp) - 1 - (r - lp) for lp, r in [(-0.7, -1.0), (-1.9, -1.5)]) / 2
    assert weighted.item() == pytest.approx(expected, rel=1e-6)
    assert plain.item() == pytest.approx(expected, rel=1e-6)


def test_k1_penalty_is_rejected_because_its_expected_gradient_is_zero():
    with pytest.raises(ValueError, match="zero"):
        _penalty_gradient("k1", num_samples=10)


def test_kl_penalty_loss_is_minus_ratio_advantage_plus_beta_weighted_k3():
    old_logprobs = torch.tensor([[-1.0, -2.0]])
    logprobs = torch.tensor([[-0.8, -2.5]])
    ref_logprobs = torch.tensor([[-1.2, -1.5]])
    advantages = torch.tensor([[1.5, -0.5]])
    weighted = ppo_kl_penalty_loss(logprobs, old_logprobs, ref_logprobs, advantages, torch.ones(1, 2), kl_coef=0.3)
    plain = ppo_kl_penalty_loss(
        logprobs, old_logprobs, ref_logprobs, advantages, torch.ones(1, 2), kl_coef=0.3, importance_weighted=False
    )
    expected_weighted, expected_plain = [], []
    for lp, old, ref, adv in zip([-0.8, -2.5], [-1.0, -2.0], [-1.2, -1.5], [1.5, -0.5]):
        ratio = math.exp(lp - old)
        k3 = math.exp(ref - lp) - 1 - (ref - lp)
        expected_weighted.append(-ratio * adv + 0.3 * ratio * k3)
        expected_plain.append(-ratio * adv + 0.3 * k3)
    assert weighted.loss.item() == pytest.approx(sum(expected_weighted) / 2, rel=1e-6)
    assert plain.loss.item() == pytest.approx(sum(expected_plain) / 2, rel=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# Value loss
# --------------------------------------------------------------------------------------------------------------------


def test_value_loss_takes_the_larger_of_clipped_and_unclipped_error():
    old_values = torch.tensor([[0.0, 0.0]])
    values = torch.tensor([[1.0, 0.1]], requires_grad=True)
    returns = torch.tensor([[2.0, 1.0]])
    result = value_loss(values, old_values, returns, torch.ones(1, 2), clip_range_value=0.2)
    # token 0: unclipped (1-2)^2 = 1, clipped (0.2-2)^2 = 3.24 -> 3.24 (clipped, no gradient)
    # token 1: unclipped (0.1-1)^2 = 0.81, clipped value 0.1 is inside the range -> 0.81
    assert result.loss.item() == pytest.approx(0.5 * (3.24 + 0.81) / 2, rel=1e-6)
    assert result.clipfrac.item() == pytest.approx(0.5)
    result.loss.backward()
    assert values.grad[0, 0].item() == 0.0
    assert values.grad[0, 1].item() == pytest.approx(0.5 * 2 * (0.1 - 1.0) / 2, rel=1e-6)


def test_value_loss_without_clipping_is_half_the_masked_squared_error():
    values = torch.tensor([[1.0, 5.0]])
    returns = torch.tensor([[3.0, 0.0]])
    result = value_loss(values, torch.zeros(1, 2), returns, torch.tensor([[1.0, 0.0]]), clip_range_value=None)
    assert result.loss.item() == pytest.approx(0.5 * 4.0)


# --------------------------------------------------------------------------------------------------------------------
# Whitening and sequence-level advantages
# --------------------------------------------------------------------------------------------------------------------


def test_whiten_gives_zero_mean_unit_variance_over_the_mask_only():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -100.0, -100.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    whitened = whiten(values, mask)
    real = whitened[mask.bool()]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert real.var(unbiased=False).item() == pytest.approx(1.0, rel=1e-5)
    assert whitened[~mask.bool()].abs().max() == 0


def test_whiten_without_shifting_keeps_the_mean():
    values = torch.tensor([2.0, 4.0, 6.0, 8.0])
    whitened = whiten(values, shift_mean=False)
    assert whitened.mean().item() == pytest.approx(5.0, rel=1e-6)
    assert whitened.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-5)


def test_rloo_baseline_is_the_mean_of_the_other_samples():
    scores = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])  # two prompts, k = 3
    expected = torch.tensor([1 - 4.0, 2 - 3.5, 6 - 1.5, 0 - 1.5, 0 - 1.5, 3 - 0.0])
    torch.testing.assert_close(rloo_advantages(scores, 3), expected)


def test_grpo_normalizes_within_each_group():
    scores = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 40.0])
    advantages = grpo_advantages(scores, 3, eps=0.0)
    group = torch.tensor([10.0, 10.0, 40.0])
    torch.testing.assert_close(advantages[3:], (group - group.mean()) / group.std())
    torch.testing.assert_close(advantages[:3], torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(grpo_advantages(scores, 3, scale=False)[3:], group - 20.0)


@pytest.mark.parametrize("function", [rloo_advantages, grpo_advantages])
def test_group_estimators_need_two_samples_per_prompt(function):
    with pytest.raises(ValueError, match="at least 2"):
        function(torch.zeros(4), 1)


def test_reinforce_subtracts_the_baseline():
    torch.testing.assert_close(reinforce_advantages(torch.tensor([1.0, 3.0]), 2.0), torch.tensor([-1.0, 1.0]))


def test_masked_mean_ignores_masked_entries():
    assert masked_mean(torch.tensor([1.0, 3.0, 1000.0]), torch.tensor([1, 1, 0])).item() == 2.0


# --------------------------------------------------------------------------------------------------------------------
# Truncated importance sampling (rollouts from another engine)
# --------------------------------------------------------------------------------------------------------------------


def test_truncated_importance_weights_are_the_capped_probability_ratio():
    trainer = [[-1.0, -2.0, -0.5], [-3.0, -0.1, -4.0]]
    sampler = [[-1.0, -1.5, -2.0], [-2.0, -0.1, -9.0]]
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    weights = truncated_importance_weights(
        torch.tensor(trainer, requires_grad=True), torch.tensor(sampler), cap=2.0, mask=mask
    )
    for row in range(2):
        for t in range(3):
            # p_trainer / p_sampler from the probabilities themselves, capped at 2; 1 where masked out
            ratio = math.exp(trainer[row][t]) / math.exp(sampler[row][t])
            expected = min(ratio, 2.0) if mask[row, t] else 1.0
            assert weights[row, t].item() == pytest.approx(expected, rel=1e-6)
    assert weights[0, 2].item() == 2.0  # exp(1.5) = 4.48 truncated
    assert not weights.requires_grad  # a weight, not a path for gradients


def test_truncated_importance_weights_need_a_positive_cap():
    with pytest.raises(ValueError, match="cap must be > 0"):
        truncated_importance_weights(torch.zeros(2), torch.zeros(2), cap=0.0)
