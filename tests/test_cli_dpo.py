"""The DPO entry point: `prefkit dpo`, a YAML config with flag overrides, and a real two-process DDP run."""

import os

import pytest

from prefkit.cli import main as cli_main
from helpers import run_two_ranks, separable_preference_rows, write_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return str(write_jsonl(separable_preference_rows(16), tmp_path_factory.mktemp("data") / "pairs.jsonl"))


def test_cli_help_lists_every_command(capsys):
    assert cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("dpo", "kto", "reward", "ppo", "grpo", "rloo", "bon", "generate-pairs", "label", "export", "app"):
        assert f"  {command} " in out


def test_unknown_command_exits_2_with_the_list(capsys):
    assert cli_main(["dpoo"]) == 2
    assert "unknown command 'dpoo'" in capsys.readouterr().err


def test_yaml_config_with_a_flag_override_trains_and_saves_an_adapter(tiny_model_dir, pairs_file, tmp_path):
    config = tmp_path / "dpo.yaml"
    out = tmp_path / "run"
    config.write_text(
        f"model_name_or_path: {tiny_model_dir}\n"
        f"dataset_name: {pairs_file}\n"
        f"output_dir: {out}\n"
        "use_peft: true\nlora_r: 4\nbeta: 0.3\nmax_steps: 50\nper_device_train_batch_size: 4\n"
        "learning_rate: 0.005\nreport_to: none\nsave_strategy: 'no'\nbf16: false\ngradient_checkpointing: false\n"
    )
    assert cli_main(["dpo", "--config", str(config), "--max_steps", "2", "--logging_steps", "1"]) == 0
    assert (out / "adapter_model.safetensors").exists()
    state = (out / "README.md").read_text()
    assert "| beta | 0.3 |" in state and "| max_steps | 2 |" in state  # file value kept, flag wins


def test_missing_dataset_flag_is_a_clear_error_with_exit_status_2(tiny_model_dir, tmp_path, capsys):
    assert cli_main(["dpo", "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path), "--bf16", "false"]) == 2
    assert capsys.readouterr().err.startswith("error: --dataset_name is required")


def test_two_process_ddp_run_of_the_script_shows_both_ranks(tiny_model_dir, pairs_file, tmp_path):
    log = run_two_ranks(
        os.path.join(REPO, "scripts", "dpo.py"),
        ["--model_name_or_path", tiny_model_dir, "--dataset_name", pairs_file, "--output_dir", str(tmp_path / "ddp"),
         "--max_steps", "2", "--per_device_train_batch_size", "2", "--use_peft", "--report_to", "none",
         "--save_strategy", "no", "--logging_steps", "1", "--bf16", "false"],
        env=dict(os.environ), cwd=REPO,
    )
    assert "rank 0 of world size 2" in log
    assert "rank 1 of world size 2" in log
    assert (tmp_path / "ddp" / "adapter_model.safetensors").exists()
