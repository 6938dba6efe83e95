"""DPO and Bradley-Terry formulas against independent scalar computations (plain math, no torch ops)."""

import math

import pytest
import torch

from prefkit.losses import best_of_n_kl, bradley_terry_loss, dpo_loss, implicit_reward


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def test_dpo_loss_matches_scalar_formula_on_random_inputs():
    generator = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(64, generator=generator, dtype=torch.float64) * 20 for _ in range(4))
    beta = 0.1
    out = dpo_loss(pc, pr, rc, rr, beta=beta)
    expected = [
        -_log_sigmoid(beta * ((a - c) - (b - d)))
        for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist())
    ]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-12)
    assert out.loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([beta * (a - c) for a, c in zip(pc.tolist(), rc.tolist())])
    assert out.rejected_rewards.tolist() == pytest.approx([beta * (b - d) for b, d in zip(pr.tolist(), rr.tolist())])


def test_dpo_loss_is_log_two_when_policy_equals_reference():
    logps = torch.tensor([-12.0, -30.5, -7.25])
    out = dpo_loss(logps, logps - 3.0, logps, logps - 3.0)
    assert out.losses.tolist() == pytest.approx([math.log(2)] * 3)


def test_dpo_loss_gradient_raises_chosen_and_lowers_rejected():
    chosen = torch.tensor([-10.0], requires_grad=True)
    rejected = torch.tensor([-10.0], requires_grad=True)
    dpo_loss(chosen, rejected, torch.tensor([-10.0]), torch.tensor([-10.0]), beta=0.5).loss.backward()
    # d/dc -log σ(β(c - r)) = -β σ(-β(c - r)) = -0.25 at c = r: descent raises log π(y_w) and lowers log π(y_l).
    assert chosen.grad.item() == pytest.approx(-0.25)
    assert rejected.grad.item() == pytest.approx(0.25)


def test_implicit_reward_is_beta_times_log_ratio():
    assert implicit_reward(torch.tensor([-4.0]), torch.tensor([-6.0]), beta=0.2).item() == pytest.approx(0.4)


def test_bradley_terry_loss_matches_scalar_formula_with_and_without_margin():
    generator = torch.Generator().manual_seed(1)
    chosen, rejected, margin = (torch.randn(32, generator=generator, dtype=torch.float64) * 3 for _ in range(3))
    plain = [-_log_sigmoid(c - r) for c, r in zip(chosen.tolist(), rejected.tolist())]
    with_margin = [-_log_sigmoid(c - r - m) for c, r, m in zip(chosen.tolist(), rejected.tolist(), margin.tolist())]
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(sum(plain) / 32, rel=1e-12)
    assert bradley_terry_loss(chosen, rejected, margin).item() == pytest.approx(sum(with_margin) / 32, rel=1e-12)


def test_bradley_terry_centering_adds_squared_sum_penalty():
    chosen, rejected = torch.tensor([2.0, 1.0]), torch.tensor([0.0, 3.0])
    base = bradley_terry_loss(chosen, rejected).item()
    centered = bradley_terry_loss(chosen, rejected, center_rewards_coefficient=0.01).item()
    assert centered - base == pytest.approx(0.01 * ((2.0 + 0.0) ** 2 + (1.0 + 3.0) ** 2) / 2)


@pytest.mark.parametrize("n, expected", [(1, 0.0), (2, math.log(2) - 0.5), (8, math.log(8) - 7 / 8)])
def test_best_of_n_kl_is_log_n_minus_n_minus_one_over_n(n, expected):
    assert best_of_n_kl(n) == pytest.approx(expected)


def test_best_of_n_kl_rejects_n_below_one():
    with pytest.raises(ValueError, match="n must be >= 1"):
        best_of_n_kl(0)
