"""Every `prefkit <command>` fails the same way: a user's mistake prints `error: ...` and exits 2 before any model
loads, Ctrl-C exits 130 and says how to resume, and only a bug shows a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from prefkit.cli import main as prefkit
from prefkit.commands.runner import CommandError, check_output_path, run_command
from helpers import separable_preference_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[1]

TRAINING_FLAGS = ["--model_name_or_path", "no-such/model", "--bf16", "false", "--report_to", "none"]
PAIRS_TO_LABEL = [
    {"id": f"p{i}", "prompt": "How do I make tea?", "reference": "Boil water and steep the tea.", "response_a": a, "response_b": b}
    for i, (a, b) in enumerate([("Boil water and steep the tea.", "No."), ("Ask someone.", "Steep the tea in boiled water.")])
]
LABELED = [{"id": "r1", "prompt": "Tea?", "response_a": "Boil water.", "response_b": "No.", "label": "A better"}]
THUMBS = [{"prompt": "Tea?", "completion": "Boil water.", "label": True}, {"prompt": "Tea?", "completion": "No.", "label": False}]


@pytest.fixture
def no_model_loading(monkeypatch):
    """Any attempt to load a model fails the test (with a traceback, which the runner lets through)."""
    import prefkit.models
    import prefkit.rewards
    from prefkit.trainers import startup as trainer_startup

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(prefkit.models, "load_model", refuse)
    monkeypatch.setattr(prefkit.models, "load_policy", refuse)
    monkeypatch.setattr(trainer_startup, "load_model_for_training", refuse)
    monkeypatch.setattr(prefkit.rewards, "resolve_reward", refuse)


@pytest.fixture
def inputs(tmp_path):
    """One good input file of each kind the commands read."""
    folder = tmp_path / "inputs"
    return {
        "pairs": str(write_jsonl(separable_preference_rows(4), folder / "pairs.jsonl")),
        "thumbs": str(write_jsonl(THUMBS, folder / "thumbs.jsonl")),
        "prompts": str(write_jsonl([{"prompt": "Tell me about tea."}], folder / "prompts.jsonl")),
        "to_label": str(write_jsonl(PAIRS_TO_LABEL, folder / "to_label.jsonl")),
        "labeled": str(write_jsonl(LABELED, folder / "labeled.jsonl")),
    }


def command_line(command: str, inputs: dict, output: str) -> list[str]:
    """A command line that is good but for ``output`` (the path each command writes: a file or a folder)."""
    return {
        "dpo": ["dpo", "--dataset_name", inputs["pairs"], "--output_dir", output, *TRAINING_FLAGS],
        "kto": ["kto", "--dataset_name", inputs["thumbs"], "--output_dir", output, *TRAINING_FLAGS],
        "reward": ["reward", "--dataset_name", inputs["pairs"], "--output_dir", output, *TRAINING_FLAGS],
        "ppo": ["ppo", "--dataset_name", inputs["prompts"], "--reward", "vader", "--output_dir", output, *TRAINING_FLAGS],
        "grpo": ["grpo", "--dataset_name", inputs["prompts"], "--reward", "vader", "--output_dir", output, *TRAINING_FLAGS],
        "rloo": ["rloo", "--dataset_name", inputs["prompts"], "--reward", "vader", "--output_dir", output, *TRAINING_FLAGS],
        "reward-eval": ["reward-eval", "--model", "no-such/model", "--dataset_name", inputs["pairs"], "--output_dir", output],
        "eval": ["eval", "--policy", "no-such/base", "no-such/trained", "--prompts_file", inputs["prompts"],
                 "--reward", "vader", "--output_dir", output],
        "bon": ["bon", "--prompts_file", inputs["prompts"], "--model_name_or_path", "no-such/model", "--output", output],
        "generate-pairs": ["generate-pairs", "--prompts", inputs["prompts"], "--model_name_or_path", "no-such/model",
                           "--output", output],
        "label": ["label", "--input", inputs["to_label"], "--judge", "rouge", "--output", output],
        "export": ["export", "--input", inputs["labeled"], "--output", output],
    }[command]


WRITES_A_FOLDER = {
    "dpo": True, "kto": True, "reward": True, "ppo": True, "grpo": True, "rloo": True, "reward-eval": True, "eval": True
}
COMMANDS = ["dpo", "kto", "reward", "ppo", "grpo", "rloo", "reward-eval", "eval", "bon", "generate-pairs", "label", "export"]


def flag_and_name(command: str) -> tuple[str, str]:
    return ("--output_dir", "run") if WRITES_A_FOLDER.get(command) else ("--output", "out.jsonl")


# ---- output paths are checked before anything loads ------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_path_under_a_file_is_an_error_before_any_model_loads(command, inputs, tmp_path, capsys, no_model_loading):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    flag, name = flag_and_name(command)
    output = blocker / "sub" / name
    assert prefkit(command_line(command, inputs, str(output))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} {output} cannot be created: {blocker} is a file, not a folder")


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder this process cannot create files in; root writes anywhere, except in a pseudo file system."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        yield folder
    else:
        try:
            with tempfile.TemporaryFile(dir="/sys"):
                pass
        except OSError:
            yield Path("/sys")
        else:
            pytest.skip("no folder here refuses this user's writes")
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unwritable_output_path_is_an_error_before_any_model_loads(
    command, inputs, unwritable_folder, capsys, no_model_loading
):
    flag, name = flag_and_name(command)
    output = unwritable_folder / f"prefkit-test-{name}"
    assert prefkit(command_line(command, inputs, str(output))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} {output} cannot be written: creating a file in {unwritable_folder} failed")


def test_an_output_file_that_is_a_folder_is_named(tmp_path):
    with pytest.raises(CommandError, match=f"--output {tmp_path} is a folder, but it must be a file"):
        check_output_path(tmp_path, "--output")


def test_a_writable_output_path_passes_and_creates_nothing(tmp_path):
    output = tmp_path / "new" / "deeper" / "out.jsonl"
    assert check_output_path(output, "--output") == output
    assert not (tmp_path / "new").exists()


# ---- empty inputs --------------------------------------------------------------------------------------------------

READS = {  # command -> the flag of the data file it reads
    "dpo": "--dataset_name", "kto": "--dataset_name", "reward": "--dataset_name", "ppo": "--dataset_name",
    "grpo": "--dataset_name", "rloo": "--dataset_name", "reward-eval": "--dataset_name", "eval": "--prompts_file",
    "bon": "--prompts_file", "generate-pairs": "--prompts", "label": "--input", "export": "--input",
}


@pytest.mark.parametrize("content", ["", "\n  \n\n"], ids=["empty", "blank lines"])
@pytest.mark.parametrize("command", COMMANDS)
def test_an_empty_input_file_is_reported_as_empty_with_its_path(command, content, inputs, tmp_path, capsys, no_model_loading):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(content)
    flag, name = flag_and_name(command)
    argv = command_line(command, inputs, str(tmp_path / name))
    argv[argv.index(READS[command]) + 1] = str(empty)
    assert prefkit(argv) == 2
    assert capsys.readouterr().err.startswith(f"error: {empty}: the dataset is empty")


def test_an_empty_text_file_of_prompts_is_reported_as_empty(tmp_path, capsys, no_model_loading):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n\n")
    assert prefkit(["bon", "--prompts_file", str(prompts), "--output", str(tmp_path / "bon.jsonl")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {prompts}: the dataset is empty")


# ---- rows mixing plain text and conversations ----------------------------------------------------------------------


@pytest.fixture
def mixed_pairs(tmp_path):
    plain = separable_preference_rows(8)
    conversational = separable_preference_rows(8, conversational=True)
    rows = [conversational[i] if i in (3, 7) else plain[i] for i in range(8)]
    return str(write_jsonl(rows, tmp_path / "mixed.jsonl"))


MIXED = "rows 3, 7 are conversational but rows 0-2, 4-6 are plain text; use one format for the whole file"


@pytest.mark.parametrize("command", ["dpo", "reward"])
def test_a_trainer_command_names_the_rows_in_the_other_format(command, mixed_pairs, tmp_path, capsys, no_model_loading):
    argv = [command, "--dataset_name", mixed_pairs, "--output_dir", str(tmp_path / "run"), *TRAINING_FLAGS]
    assert prefkit(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train_dataset is not usable") and MIXED in err


def test_export_names_the_rows_in_the_other_format(mixed_pairs, tmp_path, capsys):
    output = tmp_path / "out.jsonl"
    assert prefkit(["export", "--input", mixed_pairs, "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {mixed_pairs} is not usable") and MIXED in err
    assert not output.exists()


def test_export_of_labeled_pairs_in_two_formats_names_the_odd_row(tmp_path, capsys):
    conversational = {**LABELED[0], "id": "r2", "prompt": [{"role": "user", "content": "Tea?"}]}
    labeled = write_jsonl([LABELED[0], conversational, {**LABELED[0], "id": "r3"}], tmp_path / "labeled.jsonl")
    assert prefkit(["export", "--input", str(labeled), "--output", str(tmp_path / "out.jsonl")]) == 2
    assert "row 1 is conversational but rows 0, 2 are plain text" in capsys.readouterr().err


# ---- Ctrl-C --------------------------------------------------------------------------------------------------------


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_while_labeling_exits_130_and_a_rerun_finishes_the_rest(tmp_path, capsys, monkeypatch):
    from prefkit.data.judges import RougeJudge

    judge = RougeJudge.judge
    calls = []

    def judge_then_interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return judge(self, *args, **kwargs)

    monkeypatch.setattr(RougeJudge, "judge", judge_then_interrupt)
    pairs = write_jsonl(PAIRS_TO_LABEL, tmp_path / "pairs.jsonl")
    output = tmp_path / "labeled.jsonl"
    argv = ["label", "--input", str(pairs), "--output", str(output), "--judge", "rouge", "--batch_size", "1"]
    assert prefkit(argv) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "interrupted; rerun the same command to resume"
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == ["p0"]

    assert prefkit(argv) == 0
    assert "labeled 1 pairs (B: 1), skipped 1 already done" in capsys.readouterr().out
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == ["p0", "p1"]


@pytest.mark.parametrize(
    "command, step, message",
    [
        ("generate-pairs", "prefkit.models.load_model", "interrupted; rerun the same command to resume"),
        ("export", "prefkit.data.export.export_pairs", "interrupted; rerun the same command to resume"),
        ("bon", "prefkit.models.load_model", "interrupted; the prompts finished so far are in {output}"),
        ("reward-eval", "prefkit.rewards.resolve_reward", "interrupted"),
    ],
)
def test_ctrl_c_exits_130_with_how_to_resume_and_no_traceback(command, step, message, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(step, interrupt)
    _, name = flag_and_name(command)
    output = str(tmp_path / name)
    assert prefkit(command_line(command, inputs, output)) == 130
    assert capsys.readouterr().err.splitlines()[-1].startswith(message.format(output=output))


def test_ctrl_c_while_training_names_the_checkpoint_to_resume_from(tiny_model_dir, inputs, tmp_path, capsys, monkeypatch):
    from prefkit.trainers.dpo import DPOTrainer

    def save_a_checkpoint_then_interrupt(self, *args, **kwargs):
        (Path(self.args.output_dir) / "checkpoint-3").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(DPOTrainer, "train", save_a_checkpoint_then_interrupt)
    output = tmp_path / "run"
    argv = ["dpo", "--dataset_name", inputs["pairs"], "--output_dir", str(output), "--model_name_or_path", tiny_model_dir,
            "--bf16", "false", "--report_to", "none"]
    assert prefkit(argv) == 130
    expected = f"interrupted; rerun the same command with --resume_from_checkpoint {output / 'checkpoint-3'} to resume"
    assert capsys.readouterr().err.splitlines()[-1] == expected


# ---- what is a user's mistake and what is a bug ----------------------------------------------------------------------


def test_a_value_error_prefkit_raises_for_the_user_is_an_error_line(tmp_path, capsys):
    from prefkit.data.io import load_dataset_any

    unknown = tmp_path / "pairs.xlsx"
    unknown.write_text("x")
    assert run_command(lambda: (), lambda: load_dataset_any(unknown)) == 2
    assert capsys.readouterr().err.startswith(f"error: {unknown}: unknown file type '.xlsx'")


def test_an_os_error_names_the_path_and_what_to_do(tmp_path, capsys):
    missing = tmp_path / "no-such-folder" / "file.txt"
    assert run_command(lambda: (), lambda: open(missing)) == 2
    assert capsys.readouterr().err == f"error: {missing}: No such file or directory; check the path.\n"


def test_a_reward_function_that_returns_nonsense_is_the_user_s_to_fix(capsys):
    from prefkit.rl import RewardFunctionError

    def body():
        raise RewardFunctionError("my_reward returned 2 scores for 3 completions; return one float per completion")

    assert run_command(lambda: (), body) == 2
    assert capsys.readouterr().err.startswith("error: my_reward returned 2 scores")


def test_a_bug_keeps_its_traceback():
    def unpack_wrongly():
        first, second = [1]  # a ValueError, but from a bug, not from prefkit's raise for the user
        return first + second

    with pytest.raises(ValueError, match="not enough values to unpack"):
        run_command(lambda: (), unpack_wrongly)


# ---- the scripts are the commands ------------------------------------------------------------------------------------

SCRIPT_FLAGS = {
    "dpo": "--dataset_name", "kto": "--desirable_weight", "reward": "--dataset_name", "ppo": "--reward_model",
    "grpo": "--reward_model", "rloo": "--reward_model", "bon": "--prompts_file", "generate_pairs": "--prompts",
    "label": "--judge", "export": "--pointwise_mode",
}


@pytest.mark.parametrize("script", sorted(SCRIPT_FLAGS))
def test_each_script_is_its_command(script):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's prefkit, whatever the environment installed
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{script}.py"), "--help"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert SCRIPT_FLAGS[script] in result.stdout
