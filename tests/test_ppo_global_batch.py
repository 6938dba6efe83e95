"""Statistics PPO takes over the batch are those of the global batch: two processes that each hold half of a batch
normalize advantages and rewards exactly as one process holding all of it (gloo on CPU, rendezvous through a file,
no network port)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from prefkit.losses import masked_moments, whiten
from prefkit.trainers.ppo import PPOConfig
from prefkit.trainers.ppo.rollout import compute_advantages, kl_shaped_rewards


def batch():
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(8, 5, generator=generator)
    values = torch.randn(8, 5, generator=generator)
    mask = torch.ones(8, 5)
    mask[1, 3:] = 0
    mask[6, 1:] = 0
    # The halves differ on purpose: local statistics would differ from global ones.
    rewards[4:] = rewards[4:] * 3 + 2
    return rewards, values, mask


def statistics(rewards, values, mask, all_reduce, tmp):
    out = {}
    for estimator in ("gae", "reinforce"):
        args = PPOConfig(output_dir=tmp, advantage_estimator=estimator, report_to="none")
        advantages, _ = compute_advantages(rewards * mask, values, mask, args, reinforce_baseline=0.3, all_reduce=all_reduce)
        out[estimator] = advantages
    out["rewards"], _ = kl_shaped_rewards(rewards[:, -1], rewards * mask * 0.1, 0.05, mask, True, all_reduce)
    out["whiten"] = whiten(rewards, mask, all_reduce=all_reduce)
    return out


def worker(rank: int, init_file: str, tmp: str, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        rewards, values, mask = batch()
        half = slice(rank * 4, rank * 4 + 4)

        def all_reduce(tensor):
            tensor = tensor.clone()
            dist.all_reduce(tensor)
            return tensor

        results[rank] = statistics(rewards[half], values[half], mask[half], all_reduce, tmp)
    finally:
        dist.destroy_process_group()


def test_two_processes_normalize_like_one_process_with_the_whole_batch(tmp_path):
    rewards, values, mask = batch()
    whole = statistics(rewards, values, mask, None, str(tmp_path))
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"), str(tmp_path), results), nprocs=2, join=True)
    for key, expected in whole.items():
        torch.testing.assert_close(torch.cat([results[0][key], results[1][key]]), expected, msg=key)
    # Without the all-reduce each half would be normalized on its own statistics: a different result.
    halves = [statistics(rewards[s], values[s], mask[s], None, str(tmp_path)) for s in (slice(0, 4), slice(4, 8))]
    assert not torch.allclose(torch.cat([halves[0]["gae"], halves[1]["gae"]]), whole["gae"])


def test_masked_moments_without_all_reduce_are_the_local_mean_and_variance():
    values = torch.tensor([[1.0, 2.0, 9.0], [3.0, 4.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    mean, variance = masked_moments(values, mask)
    assert mean.item() == 2.5
    assert variance.item() == 1.25
