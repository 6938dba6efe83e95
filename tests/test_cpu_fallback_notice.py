"""A run that `accelerate launch` set up for a GPU but that finds none says, in one line on the first process, that it
trains on the CPU; a run that asked for the CPU, or was not launched by accelerate, says nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from prefkit.cli import main as prefkit
from prefkit.commands.training import cpu_fallback_notice
from helpers import separable_preference_rows, write_jsonl

# What `accelerate launch --config_file scripts/accelerate_configs/single_gpu.yaml` exports (no --cpu).
LAUNCHED_FOR_GPU = {"ACCELERATE_MIXED_PRECISION": "bf16", "ACCELERATE_USE_CPU": "False", "ACCELERATE_DYNAMO_BACKEND": "NO"}


def run_args(device: str = "cpu", process_index: int = 0, use_cpu: bool = False):
    return SimpleNamespace(device=torch.device(device), process_index=process_index, use_cpu=use_cpu)


def test_a_gpu_launch_that_gets_the_cpu_says_so():
    notice = cpu_fallback_notice("dpo", run_args(), LAUNCHED_FOR_GPU)
    assert notice is not None and notice.startswith("prefkit dpo: ")
    assert "trains on the CPU" in notice and "--cpu" in notice and "\n" not in notice


@pytest.mark.parametrize(
    ("args", "environ"),
    [
        (run_args(), {**LAUNCHED_FOR_GPU, "ACCELERATE_USE_CPU": "True"}),  # accelerate launch --cpu
        (run_args(), {}),  # not launched by accelerate: the run chose its device itself
        (run_args(use_cpu=True), LAUNCHED_FOR_GPU),  # --use_cpu
        (run_args(process_index=1), LAUNCHED_FOR_GPU),  # only the first process speaks
        (run_args(device="cuda"), LAUNCHED_FOR_GPU),  # it got its GPU
    ],
    ids=["launch --cpu", "no launcher", "use_cpu", "rank 1", "on a GPU"],
)
def test_no_notice_when_the_cpu_was_asked_for_or_a_gpu_was_found(args, environ):
    assert cpu_fallback_notice("dpo", args, environ) is None


def test_the_training_command_prints_it_once_before_loading_anything(monkeypatch, tmp_path, capsys):
    import transformers

    for name, value in LAUNCHED_FOR_GPU.items():
        monkeypatch.setenv(name, value)
    # No GPU, whatever this machine has (the run stops before anything would use the device).
    monkeypatch.setattr(transformers.TrainingArguments, "device", property(lambda self: torch.device("cpu")))
    monkeypatch.setattr(transformers.TrainingArguments, "process_index", property(lambda self: 0))
    pairs = write_jsonl(separable_preference_rows(2), tmp_path / "pairs.jsonl")
    argv = ["dpo", "--dataset_name", str(pairs), "--dataset_train_split", "no-such-split", "--output_dir",
            str(tmp_path / "run"), "--bf16", "false", "--report_to", "none"]

    assert prefkit(argv) == 2  # stops at the missing split, after the notice and before any model loads

    err = capsys.readouterr().err
    assert err.count("trains on the CPU") == 1
    assert "error:" in err and "no-such-split" in err
