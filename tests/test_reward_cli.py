"""`prefkit reward`, `prefkit reward --preset demo` and `prefkit reward-eval`: the same library, from the shell."""

import dataclasses
import json

import pytest

from prefkit.cli import main as prefkit
from helpers import separable_preference_rows, write_jsonl


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return str(write_jsonl(separable_preference_rows(48), tmp_path_factory.mktemp("pairs") / "pairs.jsonl"))


@pytest.fixture(scope="module")
def trained_dir(tiny_model_dir, pairs_file, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("reward-cli") / "rm"
    code = prefkit([
        "reward", "--model_name_or_path", tiny_model_dir, "--dataset_name", pairs_file, "--output_dir", str(output_dir),
        "--eval_fraction", "0.25", "--num_train_epochs", "3", "--learning_rate", "1e-3", "--per_device_train_batch_size", "8",
        "--use_peft", "--use_cpu", "--report_to", "none", "--save_strategy", "no", "--gradient_checkpointing", "false",
    ])
    assert code == 0
    return output_dir


def test_reward_command_trains_saves_an_adapter_and_writes_the_held_out_evaluation(trained_dir):
    assert (trained_dir / "adapter_model.safetensors").exists()
    evaluation = json.loads((trained_dir / "reward_eval.json").read_text())
    assert evaluation["accuracy"] > 0.9
    assert evaluation["num_pairs"] == 12  # 2 of the 8 prompts, 6 pairs each: held out whole
    assert (trained_dir / "reward_distributions.png").exists()


def test_reward_eval_command_scores_pairs_and_writes_json_and_png(trained_dir, pairs_file, tmp_path, capsys):
    code = prefkit(["reward-eval", "--model", str(trained_dir), "--dataset_name", pairs_file, "--output_dir", str(tmp_path)])
    assert code == 0
    evaluation = json.loads((tmp_path / "reward_eval.json").read_text())
    assert evaluation["num_pairs"] == 48 and evaluation["accuracy"] > 0.9
    assert f"accuracy {evaluation['accuracy']:.3f} on 48 pairs" in capsys.readouterr().out
    assert (tmp_path / "reward_distributions.png").read_bytes()[:4] == b"\x89PNG"


def test_reward_eval_reports_bad_rows_before_loading_the_model(tmp_path, capsys):
    rows = separable_preference_rows(3)
    rows[1]["rejected"] = None
    bad = write_jsonl(rows, tmp_path / "bad.jsonl")

    assert prefkit(["reward-eval", "--model", str(tmp_path / "no-such-model"), "--dataset_name", str(bad)]) == 2
    assert "row 1, column 'rejected'" in capsys.readouterr().err


def test_reward_command_without_held_out_data_for_evaluation_says_what_to_pass(tiny_model_dir, pairs_file, tmp_path, capsys):
    code = prefkit(["reward", "--model_name_or_path", tiny_model_dir, "--dataset_name", pairs_file,
                    "--output_dir", str(tmp_path), "--eval_strategy", "epoch"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: evaluation is on") and "--eval_fraction 0.1" in err


def test_demo_preset_trains_into_the_given_folder_and_prints_its_accuracy(tmp_path, capsys, monkeypatch):
    import prefkit.demo as demo

    monkeypatch.setattr(demo, "DEMO_PRESET", dataclasses.replace(demo.DEMO_PRESET, max_steps=1))
    data = write_jsonl(separable_preference_rows(16), tmp_path / "pairs.jsonl")
    assert prefkit(["reward", "--preset", "demo", "--output_dir", str(tmp_path / "demo"), "--dataset_name", str(data)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.rindex("\n{\n") + 1 :])
    assert summary["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert summary["train_pairs"] + summary["num_pairs"] == 16
    assert (tmp_path / "demo" / "model.safetensors").exists()

    assert prefkit(["reward", "--preset", "demo", "--output_dir", str(tmp_path / "demo")]) == 0
    assert "already in" in capsys.readouterr().out


def test_reward_help_mentions_the_demo_preset(capsys):
    assert prefkit(["reward", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--preset demo" in help_text and "--quantization" in help_text
    assert prefkit(["reward", "--help-all"]) == 0
    assert "--center_rewards_coefficient" in capsys.readouterr().out
