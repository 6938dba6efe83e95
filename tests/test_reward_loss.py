"""bradley_terry_loss against a from-scratch computation of −log σ(r_w − r_l − m) with plain Python floats."""

import math

import pytest
import torch

from prefkit.losses import bradley_terry_loss

CHOSEN = [2.0, -0.5, 0.3, 4.0]
REJECTED = [1.0, 0.5, 0.3, -3.0]
MARGIN = [0.5, 0.0, 1.0, 2.0]


def reference_loss(chosen, rejected, margin=None, center=None):
    margin = margin or [0.0] * len(chosen)
    # −log σ(d) = log(1 + e^(−d))
    loss = sum(math.log1p(math.exp(-(c - r - m))) for c, r, m in zip(chosen, rejected, margin)) / len(chosen)
    if center:
        loss += center * sum((c + r) ** 2 for c, r in zip(chosen, rejected)) / len(chosen)
    return loss


def test_bradley_terry_loss_is_mean_negative_log_sigmoid_of_reward_difference():
    loss = bradley_terry_loss(torch.tensor(CHOSEN), torch.tensor(REJECTED))
    assert loss.item() == pytest.approx(reference_loss(CHOSEN, REJECTED), rel=1e-6)


def test_bradley_terry_loss_subtracts_per_pair_margin_inside_the_sigmoid():
    loss = bradley_terry_loss(torch.tensor(CHOSEN), torch.tensor(REJECTED), margin=torch.tensor(MARGIN))
    assert loss.item() == pytest.approx(reference_loss(CHOSEN, REJECTED, MARGIN), rel=1e-6)
    assert loss.item() > bradley_terry_loss(torch.tensor(CHOSEN), torch.tensor(REJECTED)).item()


def test_bradley_terry_loss_adds_reward_centering_term():
    loss = bradley_terry_loss(torch.tensor(CHOSEN), torch.tensor(REJECTED), center_rewards_coefficient=0.01)
    assert loss.item() == pytest.approx(reference_loss(CHOSEN, REJECTED, center=0.01), rel=1e-6)


def test_bradley_terry_loss_gradient_pushes_chosen_up_and_rejected_down():
    chosen = torch.tensor(CHOSEN, requires_grad=True)
    rejected = torch.tensor(REJECTED, requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    # d/dc of −log σ(c − r) = −σ(r − c) / n
    expected = [-1 / (1 + math.exp(c - r)) / len(CHOSEN) for c, r in zip(CHOSEN, REJECTED)]
    assert chosen.grad.tolist() == pytest.approx(expected, rel=1e-5)
    assert rejected.grad.tolist() == pytest.approx([-g for g in expected], rel=1e-5)
