"""PPO under several processes: a checkpoint resumes on another number of processes and continues the same run,
processes that drift apart are caught, and a checkpoint is written by one process only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import run_two_ranks, run_two_ranks_expecting_failure
from prefkit.trainers.ppo import PPOConfig
from prefkit.trainers.ppo.trainer import (
    ProcessesOutOfSyncError,
    check_in_sync,
    check_resume_batch,
    parameter_checksums,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "ppo_rank_script.py"
SAVED = {"completions_per_iteration": 8, "num_generations": 1, "num_mini_batches": 1, "world_size": 2}


# ---- the resume rule, without processes -----------------------------------------------------------------------------


def config(tmp_path, **fields):
    return PPOConfig(output_dir=str(tmp_path), report_to="none", **fields)


def test_a_resume_with_the_checkpoints_global_batch_on_another_world_size_is_accepted(tmp_path):
    check_resume_batch(SAVED, config(tmp_path, per_device_train_batch_size=8), 1, "ckpt")
    check_resume_batch(SAVED, config(tmp_path, per_device_train_batch_size=2), 4, "ckpt")
    check_resume_batch(SAVED, config(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=4), 1, "ckpt")


def test_a_resume_with_another_per_process_batch_says_which_batch_size_continues_the_run(tmp_path):
    with pytest.raises(ValueError) as error:
        check_resume_batch(SAVED, config(tmp_path, per_device_train_batch_size=4), 1, "out/checkpoint-1")
    message = str(error.value)
    assert "out/checkpoint-1 was written by a run sampling 8 completions per PPO iteration" in message
    assert "on 2 process(es)" in message and "set --per_device_train_batch_size 8" in message
    with pytest.raises(ValueError, match="--per_device_train_batch_size 4 --gradient_accumulation_steps 1"):
        check_resume_batch(SAVED, config(tmp_path, per_device_train_batch_size=1, gradient_accumulation_steps=3), 2, "c")


def test_a_world_size_that_does_not_divide_the_rollout_batch_is_refused_with_the_ones_that_do(tmp_path):
    with pytest.raises(ValueError, match=r"3 processes cannot split it .* Resume on 1, 2, 4 or 8 process\(es\)"):
        check_resume_batch(SAVED, config(tmp_path, per_device_train_batch_size=2), 3, "ckpt")
    # GRPO groups stay on one process: 8 completions of 2 prompts split over at most 2 processes.
    grpo = {**SAVED, "num_generations": 4}
    with pytest.raises(ValueError, match=r"Resume on 1 or 2 process\(es\)"):
        check_resume_batch(grpo, config(tmp_path, per_device_train_batch_size=4, num_generations=4,
                                        advantage_estimator="grpo"), 4, "ckpt")


def test_a_resume_that_changes_generations_or_minibatches_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"num_mini_batches=2 \(the checkpoint's: 1\)"):
        check_resume_batch(SAVED, config(tmp_path, per_device_train_batch_size=4, num_mini_batches=2), 1, "ckpt")


def test_a_checkpoint_without_a_rollout_batch_is_not_checked(tmp_path):
    check_resume_batch(None, config(tmp_path, per_device_train_batch_size=3), 5, "ckpt")


def test_sync_check_steps_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="sync_check_steps=0"):
        config(tmp_path, sync_check_steps=0)


# ---- the sync check, on two gloo processes ------------------------------------------------------------------------


def test_checksums_are_the_sum_and_a_position_weighted_sum():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    expected = torch.tensor([[10.0, 1 * 1 + 2 * 2 + 3 * 3 + 4 * 4]], dtype=torch.float64)
    torch.testing.assert_close(parameter_checksums([x]), expected)
    # Swapping two values keeps the sum but not the weighted sum.
    swapped = parameter_checksums([torch.tensor([[2.0, 1.0], [3.0, 4.0]])])
    assert swapped[0, 0] == expected[0, 0] and swapped[0, 1] != expected[0, 1]


def sync_worker(rank: int, init_file: str, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))

        def gather(checksums):
            parts = [torch.empty_like(checksums) for _ in range(2)]
            dist.all_gather(parts, checksums)
            return torch.stack(parts)

        def verdict():
            try:
                check_in_sync(list(model.named_parameters()), gather, where="after PPO step 3")
                return "in sync"
            except ProcessesOutOfSyncError as error:
                return str(error)

        identical = verdict()
        if rank == 1:
            with torch.no_grad():  # one element of one tensor, one float32 unit in the last place
                weight = model[1].weight
                weight[0, 0] = torch.nextafter(weight[0, 0], torch.tensor(float("inf")))
        results[rank] = (identical, verdict())
    finally:
        dist.destroy_process_group()


# Two spawned processes import torch and prefkit's trainer: about a minute on a busy machine.
@pytest.mark.slow
def test_the_sync_check_passes_identical_processes_and_names_the_tensor_that_drifted(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(sync_worker, args=(str(tmp_path / "rendezvous"), results), nprocs=2, join=True)
    assert [results[rank][0] for rank in (0, 1)] == ["in sync", "in sync"]
    drifted = [results[rank][1] for rank in (0, 1)]
    for message in drifted:  # both processes stop, with the same message
        assert "Processes hold different weights after PPO step 3" in message
        assert "the first differing trainable tensor is '1.weight'" in message
        assert "on rank 0" in message and "on rank 1" in message
    assert drifted[0] == drifted[1]


# ---- a two-process run, resumed on one process -------------------------------------------------------------------


def child_env():
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def read_reports(prefix: Path, world_size: int) -> list[dict]:
    return [json.loads(Path(f"{prefix}-rank{rank}.json").read_text()) for rank in range(world_size)]


def completions_by_step(output_dir: Path) -> dict[int, list[str]]:
    steps: dict[int, list[str]] = {}
    for line in (output_dir / "completions.jsonl").read_text().splitlines():
        row = json.loads(line)
        steps.setdefault(row["step"], []).append(row["prompt"])
    return steps


def step_log(report: dict, step: int) -> dict:
    return next(entry for entry in report["log_history"] if entry.get("step") == step and "episode" in entry)


@pytest.mark.slow
def test_checkpoints_resume_from_two_processes_on_one_and_back_and_continue_the_same_run(tiny_model_dir, tmp_path):
    # The uninterrupted run: 3 iterations of 8 completions (4 per process) over 16 prompts (iteration 3 starts epoch 2).
    two = tmp_path / "two-processes"
    run_two_ranks(SCRIPT, [tiny_model_dir, str(two), str(tmp_path / "two"), "--per_device_train_batch_size", "4",
                           "--max_steps", "3", "--record_writes"], env=child_env(), cwd=REPO)
    reports = read_reports(tmp_path / "two", 2)
    assert [r["world_size"] for r in reports] == [2, 2]
    # Both ranks checked that they hold the same weights before each checkpoint, and passed.
    assert [r["sync_checked_steps"] for r in reports] == [[1, 2, 3], [1, 2, 3]]

    # Written once: rank 1 writes only its own random state; rank 0 writes each checkpoint file once.
    assert {os.path.basename(path) for path in reports[1]["writes"]} == {"rng_state_1.pth"}
    writes = Counter(reports[0]["writes"])
    for folder in ("checkpoint-1/", "checkpoint-2/", "checkpoint-3/", ""):
        for name in ("ppo_state.json", "trainer_state.json", "optimizer.pt", "scheduler.pt", "adapter_model.safetensors",
                     "value/adapter_model.safetensors", "value/value_head.safetensors"):
            if folder or name not in ("trainer_state.json", "optimizer.pt", "scheduler.pt"):
                assert writes[folder + name] == 1, (folder + name, writes[folder + name])
    assert writes["completions.jsonl"] == 3  # one append per step
    lines = (two / "completions.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == 24  # 8 completions per step (4 per rank), none twice
    two_steps = completions_by_step(two)
    assert len(set(two_steps[1]) | set(two_steps[2])) == 16  # the first epoch sees every prompt once

    # Two processes -> one: the checkpoint's global batch of 8 is refused at 4 per process, accepted at 8.
    from datasets import Dataset

    from prefkit.trainers.ppo import PPOTrainer

    wrong = PPOTrainer(
        model=tiny_model_dir, reward_funcs=lambda prompts, completions, **kw: [0.0] * len(completions),
        args=PPOConfig(output_dir=str(tmp_path / "wrong"), use_peft=True, max_steps=3, per_device_train_batch_size=4,
                       report_to="none", disable_tqdm=True),
        train_dataset=Dataset.from_list([{"prompt": f"p{i}"} for i in range(16)]),
    )
    with pytest.raises(ValueError, match="set --per_device_train_batch_size 8"):
        wrong.train(resume_from_checkpoint=str(two / "checkpoint-1"))
    del wrong

    one = tmp_path / "one-process"
    command = [sys.executable, str(SCRIPT), tiny_model_dir, str(one), str(tmp_path / "one"),
               "--per_device_train_batch_size", "8", "--max_steps", "3",
               "--resume_from_checkpoint", str(two / "checkpoint-1")]
    result = subprocess.run(command, env=child_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (resumed,) = read_reports(tmp_path / "one", 1)
    assert resumed["world_size"] == 1 and resumed["global_step"] == 3
    # Iterations 2 and 3 ran here, on the prompts, in the order, of the uninterrupted run's iterations 2 and 3.
    assert completions_by_step(one) == {2: two_steps[2], 3: two_steps[3]}
    assert step_log(resumed, 1) == step_log(reports[0], 1)  # step 1's log came back with the trainer state
    for step in (2, 3):
        uninterrupted, continued = step_log(reports[0], step), step_log(resumed, step)
        assert continued["episode"] == uninterrupted["episode"] == 8 * step
        # The scheduler (linear to 0 at step 3) came back: a fresh one would be a step behind.
        assert continued["learning_rate"] == pytest.approx(uninterrupted["learning_rate"])
    assert step_log(resumed, 2)["learning_rate"] == pytest.approx(1e-3 / 3)
    # Beta, adapted after step 1, came back (it then adapts to each run's own KL).
    assert step_log(resumed, 2)["objective/kl_coef"] == step_log(reports[0], 2)["objective/kl_coef"] != 0.05
    assert resumed["optimizer_steps"] == reports[0]["optimizer_steps"] == 3
    state = json.loads((one / "checkpoint-2" / "ppo_state.json").read_text())
    assert state["rollout_batch"] == {"completions_per_iteration": 8, "num_generations": 1, "num_mini_batches": 1,
                                      "world_size": 1}

    # One process -> two: the one-process checkpoint-2 continues on two processes of 4 completions each.
    back = tmp_path / "back-on-two"
    run_two_ranks(SCRIPT, [tiny_model_dir, str(back), str(tmp_path / "back"), "--per_device_train_batch_size", "4",
                           "--max_steps", "3", "--resume_from_checkpoint", str(one / "checkpoint-2")],
                  env=child_env(), cwd=REPO)
    again = read_reports(tmp_path / "back", 2)
    assert [r["global_step"] for r in again] == [3, 3] and [r["sync_checked_steps"] for r in again] == [[3], [3]]
    assert completions_by_step(back) == {3: two_steps[3]}
    assert step_log(again[0], 3)["episode"] == 24
    assert step_log(again[0], 3)["objective/kl_coef"] == step_log(resumed, 3)["objective/kl_coef"]
    assert again[0]["optimizer_steps"] == 3


@pytest.mark.slow
def test_a_two_process_run_whose_ranks_drift_apart_stops_before_writing_a_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "drifted"
    log = run_two_ranks_expecting_failure(
        SCRIPT, [tiny_model_dir, str(out), str(tmp_path / "drifted"), "--max_steps", "2"],
        env={**child_env(), "PREFKIT_TEST_PERTURB_RANK": "1"}, cwd=REPO,
    )
    assert "ProcessesOutOfSyncError: Processes hold different weights after PPO step 1" in log
    assert "the first differing trainable tensor is 'value_head.weight'" in log
    assert not (out / "checkpoint-1").exists()
