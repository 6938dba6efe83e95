"""Evaluation during training: held-out eval/* metrics reach every report_to backend; reward hacking is flagged."""

import json

import pytest
from datasets import Dataset
from transformers import TrainerCallback

from prefkit import DPOConfig, DPOTrainer
from prefkit.cli import main as prefkit
from helpers import separable_preference_rows, write_jsonl
from prefkit.trainers.policy_eval_callback import PolicyEvalCallback

EVAL_KEYS = {"eval/reward", "eval/win_rate", "eval/kl", "eval/length"}


class JsonlLogger(TrainerCallback):
    """A file logger, wired like every report_to integration: it sees what Trainer.log dispatches."""

    def __init__(self, path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": state.global_step, **(logs or {})}) + "\n")


def exclamation_reward(prompts, completions):
    return [float(c.count("!")) for c in completions]


@pytest.fixture
def eval_prompts(tmp_path):
    path = tmp_path / "heldout.txt"
    path.write_text("\n".join(f"Say something about topic {i}." for i in range(4)) + "\n")
    return path


def dpo_config(tmp_path, eval_prompts, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, per_device_eval_batch_size=4, max_steps=2,
        logging_steps=1, learning_rate=1e-3, report_to="none", save_strategy="no", gradient_checkpointing=False,
        disable_tqdm=True, seed=0, bf16=False, max_length=128, use_peft=True, eval_prompts=str(eval_prompts),
        eval_reward="vader", eval_every_steps=1, eval_max_new_tokens=6,
    )
    values.update(overrides)
    return DPOConfig(**values)


def test_dpo_logs_held_out_metrics_through_the_report_to_route(tiny_model_dir, tmp_path, eval_prompts):
    log_file = tmp_path / "logs.jsonl"
    trainer = DPOTrainer(
        tiny_model_dir, args=dpo_config(tmp_path, eval_prompts),
        train_dataset=Dataset.from_list(separable_preference_rows(16)), callbacks=[JsonlLogger(log_file)],
    )
    trainer.train()
    logged = [json.loads(line) for line in log_file.read_text().splitlines()]
    evals = [entry for entry in logged if "eval/reward" in entry]
    assert [e["step"] for e in evals] == [0, 1, 2]  # before training, every step, (end = last step, once)
    assert EVAL_KEYS <= set(evals[-1])
    assert evals[0]["eval/kl"] == pytest.approx(0.0, abs=1e-4)  # untrained: the policy is its base
    assert evals[0]["eval/win_rate"] == 0.5
    assert evals[-1]["eval/kl"] > 0  # lr 1e-3 moved the adapter
    assert all(e["eval/reward_low"] <= e["eval/reward"] <= e["eval/reward_high"] for e in evals)
    assert any("eval/kl" in entry for entry in trainer.state.log_history)


def test_eval_prompts_without_a_reward_or_a_missing_file_fail_at_config_time(tmp_path, eval_prompts):
    with pytest.raises(ValueError, match="eval_reward"):
        dpo_config(tmp_path, eval_prompts, eval_reward=None)
    with pytest.raises(ValueError, match="no such file"):
        dpo_config(tmp_path, tmp_path / "missing.txt")


def test_reward_hacking_signal_fires_when_the_training_reward_rises_and_the_held_out_one_falls():
    class State:
        global_step = 3
        log_history = []

    class FakeTrainer:
        state = State()

    callback = PolicyEvalCallback.__new__(PolicyEvalCallback)
    callback.trainer, callback._previous = FakeTrainer(), None
    State.log_history = [{"objective/scores": 1.0}]
    assert callback._hacking({"eval/reward": 0.5, "eval/win_rate": 0.5, "eval/length": 10.0}) is False
    State.log_history = [{"objective/scores": 2.0}]
    assert callback._hacking({"eval/reward": 0.3, "eval/win_rate": 0.4, "eval/length": 10.0}) is True
    # answers 50% longer while the held-out reward rose 2%: length is outgrowing reward
    assert callback._hacking({"eval/reward": 0.306, "eval/win_rate": 0.5, "eval/length": 15.0}) is True
    # both grow together: no signal
    assert callback._hacking({"eval/reward": 0.6, "eval/win_rate": 0.6, "eval/length": 16.0}) is False


def test_prefkit_dpo_takes_the_eval_flags(tiny_model_dir, tmp_path, eval_prompts, capsys):
    data = write_jsonl(separable_preference_rows(8), tmp_path / "pairs.jsonl")
    out = tmp_path / "dpo"
    argv = ["dpo", "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(data), "--output_dir", str(out),
            "--use_peft", "--max_steps", "1", "--per_device_train_batch_size", "8", "--report_to", "none",
            "--save_strategy", "no", "--disable_tqdm", "true", "--max_length", "128",
            "--eval_prompts", str(eval_prompts), "--eval_reward", "vader", "--eval_every_steps", "1",
            "--eval_max_new_tokens", "4"]
    assert prefkit(argv) == 0
    assert "'eval/win_rate'" in capsys.readouterr().out  # the printed logs (disable_tqdm: one dict per log)


def test_grpo_logs_held_out_metrics_too(tiny_model_dir, tmp_path, eval_prompts):
    from prefkit import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=4, max_completion_length=4,
        max_steps=1, logging_steps=1, learning_rate=1e-3, report_to="none", save_strategy="no", bf16=False,
        use_peft=True, disable_tqdm=True, eval_prompts=str(eval_prompts), eval_reward="vader", eval_every_steps=1,
        eval_max_new_tokens=4,
    )
    prompts = Dataset.from_list([{"prompt": f"Say hi {i}"} for i in range(8)])
    trainer = GRPOTrainer(tiny_model_dir, reward_funcs=exclamation_reward, args=args, train_dataset=prompts)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "eval/kl" in entry]
    assert len(logged) == 2 and EVAL_KEYS <= set(logged[-1])
