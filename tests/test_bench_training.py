"""The training benchmarks run end to end on the tiny shape and report what they claim: every contender trains the
same pairs to the same per-step losses as TRL (so a speed ratio compares the same work), and PPO's chunked log-probs
hold less memory than the full logits on a large vocabulary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def bench(script: str, tmp_path, *args: str) -> dict:
    output = tmp_path / f"{script}.json"
    command = [sys.executable, os.path.join(REPO, "scripts", script), "--size", "tiny", "--steps", "2", "--bs", "2",
               "--repeats", "1", "--prompt-words", "12", "--answer-words", "6", "--output", str(output), *args]
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600)
    return json.loads(output.read_text())


@pytest.mark.slow
def test_bench_dpo_contenders_train_the_same_pairs_to_trls_losses(tmp_path):
    report = bench("bench_dpo.py", tmp_path, "--contenders", "trl,trl-best,prefkit,prefkit-best")
    summary, runs = report["summary"], report["runs"]
    assert summary["prefkit_best_baseline"] == "trl-best" and summary["prefkit_baseline"] == "trl"
    for name in ("trl_best", "prefkit", "prefkit_best"):
        assert summary[f"{name}_max_loss_gap"] < 1e-4, name  # the same optimisation, step for step
        assert summary[f"{name}_speed_ratio"] > 0 and summary[f"{name}_cpu_ratio"] > 0
    assert [r["precompute_ref"] for r in (runs["trl"][0], runs["trl-best"][0], runs["prefkit-best"][0])] == [False, True, True]
    assert runs["trl-best"][0]["gc"] is False and runs["trl"][0]["gc"] is True
    assert len(runs["trl"][0]["losses"]) == 2


@pytest.mark.slow
def test_bench_reward_matches_trl_reward_trainer_losses(tmp_path):
    report = bench("bench_reward.py", tmp_path, "--contenders", "trl,prefkit,prefkit-unshared")
    summary = report["summary"]
    assert summary["task"] == "Reward modeling"
    assert summary["prefkit_max_loss_gap"] < 1e-4 and summary["prefkit_unshared_max_loss_gap"] < 1e-4
    assert summary["prefkit_peak_gib"] > 0 and summary["trl_cpu_s_per_pair"] > 0


@pytest.mark.slow
def test_bench_ppo_chunked_log_probs_hold_less_memory_on_a_large_vocabulary(tmp_path):
    command = [sys.executable, os.path.join(REPO, "scripts", "bench_ppo.py"), "--model", "tiny-150k",
               "--compare_chunking", "--iterations", "1", "--epochs", "1", "--batch", "4", "--response_length", "16"]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=900).stdout
    line = next(line for line in out.splitlines() if line.strip().startswith("peak RSS above runtime") and "MiB" in line
                and out.index(line) > out.index("log-probs chunked"))
    chunked, full = (float(value.replace(",", "")) for value in line.split()[4:8:2])
    assert chunked < full  # 4 x ~32 tokens x 151,936 float32 logits are ~75 MiB per copy
