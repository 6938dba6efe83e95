"""`prefkit ppo`, `prefkit grpo`, `prefkit rloo` and the scripts, on the tiny offline model with rule rewards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefkit.cli import main as prefkit
from helpers import run_two_ranks, write_jsonl

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Say something kind.", "How was your day?", "Describe the sea.", "What do you think of tea?"] * 2


@pytest.fixture
def prompts_file(tmp_path):
    return str(write_jsonl([{"prompt": p, "reference": "a happy day by the sea"} for p in PROMPTS], tmp_path / "prompts.jsonl"))


def ppo_flags(model_dir, prompts_file, output_dir, *extra):
    return [
        "--model_name_or_path", model_dir, "--dataset_name", prompts_file, "--output_dir", str(output_dir),
        "--use_peft", "--max_steps", "2", "--per_device_train_batch_size", "4", "--response_length", "6",
        "--num_ppo_epochs", "1", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", *extra,
    ]


def test_prefkit_ppo_trains_with_a_named_rule_reward_and_saves_policy_value_and_curves(tiny_model_dir, prompts_file, tmp_path):
    out = tmp_path / "ppo"
    assert prefkit(["ppo", *ppo_flags(tiny_model_dir, prompts_file, out, "--reward", "vader")]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "value" / "value_head.safetensors").is_file()
    assert (out / "ppo_curves.png").is_file()
    state = json.loads((out / "ppo_state.json").read_text())
    assert state["kl_coef"]["value"] == 0.05


def test_prefkit_ppo_reads_a_yaml_config_with_group_estimators(tiny_model_dir, prompts_file, tmp_path):
    config = tmp_path / "ppo.yaml"
    config.write_text("advantage_estimator: rloo\nnum_generations: 2\nreward:\n  - bleu\n  - vader\n")
    out = tmp_path / "ppo-rloo"
    assert prefkit(["ppo", "--config", str(config), *ppo_flags(tiny_model_dir, prompts_file, out)]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "value").exists()  # RLOO needs no value model
    assert json.loads((out / "ppo_state.json").read_text())["running_baseline"] is None


def test_prefkit_ppo_loads_a_reward_model_folder(tiny_model_dir, prompts_file, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reward_dir = tmp_path / "reward-model"
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).save_pretrained(reward_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(reward_dir)
    out = tmp_path / "ppo-rm"
    argv = ["ppo", *ppo_flags(tiny_model_dir, prompts_file, out, "--reward_model", str(reward_dir), "--logging_steps", "1")]
    assert prefkit(argv) == 0
    assert (out / "adapter_model.safetensors").is_file()
    from prefkit.reward_model import RewardModel

    samples = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    expected = RewardModel.from_pretrained(str(reward_dir)).score([s["prompt"] for s in samples], [s["completion"] for s in samples])
    assert [s["score"] for s in samples] == pytest.approx(expected, abs=1e-5)


def test_prefkit_ppo_without_a_reward_says_how_to_give_one(tiny_model_dir, prompts_file, tmp_path, capsys):
    assert prefkit(["ppo", *ppo_flags(tiny_model_dir, prompts_file, tmp_path / "x")]) == 2
    assert "--reward_model PATH" in capsys.readouterr().err
    assert prefkit(["ppo", *ppo_flags(tiny_model_dir, prompts_file, tmp_path / "x", "--reward", "sentiment")]) == 2
    assert "error: unknown --reward" in capsys.readouterr().err


def test_prefkit_ppo_rejects_a_group_estimator_with_one_sample(tiny_model_dir, prompts_file, tmp_path, capsys):
    argv = ["ppo", *ppo_flags(tiny_model_dir, prompts_file, tmp_path / "x", "--reward", "vader", "--advantage_estimator", "grpo")]
    assert prefkit(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "num_generations >= 2" in err


TRL_FLAGS = [
    "--use_peft", "--max_steps", "1", "--per_device_train_batch_size", "4", "--num_generations", "2",
    "--max_completion_length", "6", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
]


@pytest.mark.parametrize("command", ["grpo", "rloo"])
def test_prefkit_grpo_and_rloo_run_trl_loops_with_a_prefkit_reward(tiny_model_dir, prompts_file, tmp_path, command):
    out = tmp_path / command
    argv = [command, "--model_name_or_path", tiny_model_dir, "--dataset_name", prompts_file, "--output_dir", str(out),
            "--reward", "vader", *TRL_FLAGS]
    assert prefkit(argv) == 0
    assert (out / "adapter_model.safetensors").is_file()


def test_grpo_trainer_wraps_a_scorer_object_as_a_trl_reward_function():
    from prefkit.trainers.grpo import as_trl_reward_func

    class LengthScorer:
        def score(self, prompts, completions):
            return [len(c) for c in completions]

    reward_func = as_trl_reward_func(LengthScorer())
    assert reward_func.__name__ == "LengthScorer"
    assert reward_func(prompts=["p", "q"], completions=["ab", "abc"], completion_ids=None) == [2.0, 3.0]


@pytest.mark.slow
def test_scripts_ppo_runs_under_accelerate_launch(tiny_model_dir, prompts_file, tmp_path):
    out = tmp_path / "launched"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "scripts" / "ppo.py"),
        *ppo_flags(tiny_model_dir, prompts_file, out, "--reward", "vader"),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "prefkit ppo: rank 0 of world size 1" in result.stdout
    assert (out / "adapter_model.safetensors").is_file()


# Two ranks with a value model (the roles that must stay in sync) and whitened advantages (global statistics).
@pytest.mark.slow
def test_two_process_ppo_with_a_value_model_trains_on_both_ranks_and_saves_once(tiny_model_dir, prompts_file, tmp_path):
    out = tmp_path / "ddp"
    # A reward that varies on the tiny model's answers (VADER scores its token soup 0), so the ranks have gradients.
    (tmp_path / "letter_rewards.py").write_text(
        "def letters(prompts, completions, **kwargs):\n"
        "    return [sum(c.isalpha() for c in text) / max(len(text), 1) for text in completions]\n"
    )
    log = run_two_ranks(
        REPO / "scripts" / "ppo.py",
        [*ppo_flags(tiny_model_dir, prompts_file, out, "--reward", "letter_rewards:letters"), "--logging_steps", "1",
         "--learning_rate", "1e-3"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)])}, cwd=REPO,
    )
    assert "rank 0 of world size 2" in log and "rank 1 of world size 2" in log
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "value" / "value_head.safetensors").is_file()
    # Metrics are global: 2 iterations x 4 completions on each of 2 ranks is 16 episodes, and the ranks trained.
    import re

    logged = [json.loads(line.replace("'", '"')) for line in re.findall(r"^\{'grad_norm'.*\}$", log, flags=re.MULTILINE)]
    assert [entry["episode"] for entry in logged] == [8, 16]
    assert float(logged[-1]["grad_norm"]) > 0

