"""`prefkit <training command> --help` is one screen that says what the command does, the flags people change,
--config, the presets and examples; `--help-all` still lists every TRL flag."""

import re

import pytest

from prefkit.cli import main as prefkit

TRAINING_COMMANDS = ["dpo", "kto", "reward", "ppo", "grpo", "rloo"]


def help_text(capsys, *argv: str) -> str:
    assert prefkit(list(argv)) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", TRAINING_COMMANDS)
def test_help_is_one_screen_naming_config_and_the_full_list(command, capsys):
    text = help_text(capsys, command, "--help")
    assert len(text.splitlines()) < 60
    assert "--config FILE.yaml" in text
    assert f"prefkit {command} --help-all" in text
    for flag in ("--model_name_or_path", "--dataset_name", "--output_dir", "--learning_rate", "--use_peft", "--quantization"):
        assert flag in text
    assert "Examples:\n  prefkit " in text or "Examples:\n  accelerate " in text


@pytest.mark.parametrize("command", TRAINING_COMMANDS)
def test_every_flag_the_short_help_names_is_a_real_flag(command, capsys):
    short = help_text(capsys, command, "--help")
    full = help_text(capsys, command, "--help-all")
    shown = set(re.findall(r"^  (--\w+)", short, flags=re.MULTILINE)) - {"--config", "--preset"}
    assert len(shown) >= 12
    assert [flag for flag in sorted(shown) if f"{flag} " not in full] == []


def test_help_says_what_the_command_does_and_lists_its_presets(capsys):
    text = help_text(capsys, "dpo", "-h")
    assert "Train a policy with DPO." in text
    assert "--beta" in text
    assert "--preset demo" in text


def test_a_docstring_example_split_over_lines_is_shown_as_one(capsys):
    text = help_text(capsys, "grpo", "--help")
    assert "--output_dir smollm2-grpo --use_peft --num_generations 4" in text


def test_help_all_keeps_every_trl_flag(capsys):
    text = help_text(capsys, "dpo", "--help-all")
    assert "--gradient_accumulation_steps" in text
    assert "--lr_scheduler_type" in text
    assert len(text.splitlines()) > 300
