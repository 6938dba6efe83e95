"""`--preset demo` for dpo, ppo, grpo and rloo: the benchmark's settings as defaults that flags override."""

import json

import pytest

from prefkit.cli import main as cli_main
from prefkit.data import validate_dataset
from prefkit.data.io import read_jsonl
from prefkit.presets import (
    PRESETS,
    SENTIMENT_HELDOUT,
    SENTIMENT_PAIRS,
    SENTIMENT_PROMPTS,
    UnknownPresetError,
    get_preset,
    split_preset,
)


def _parse(command: str, argv: list[str]):
    import importlib

    return importlib.import_module(f"prefkit.commands.{command}").command().parse(argv)


@pytest.mark.parametrize("command", ["dpo", "ppo", "grpo", "rloo", "kto", "dpo-iterative"])
def test_demo_preset_sets_every_default(command):
    """Every key of the preset lands in one of the command's argument dataclasses with the preset's value."""
    parsed = _parse(command.replace("-", "_"), ["--preset", "demo"])
    values = {key: value for arguments in parsed for key, value in vars(arguments).items()}
    expected = get_preset(command, "demo").resolved()
    for key, value in expected.items():
        assert values[key] == value, key
    assert values["use_peft"] is True and values["eval_prompts"] == str(SENTIMENT_HELDOUT)


def test_a_flag_given_with_a_preset_wins_and_the_rest_stays():
    dataset, config, *_ = _parse("dpo", ["--preset", "demo", "--learning_rate", "1e-5", "--beta=0.3"])
    assert config.learning_rate == 1e-5 and config.beta == 0.3
    assert config.max_steps == PRESETS["dpo"]["demo"].defaults["max_steps"]
    assert dataset.dataset_name == str(SENTIMENT_PAIRS)


def test_a_reward_model_replaces_the_preset_reward_instead_of_adding_to_it():
    parsed = _parse("ppo", ["--preset=demo", "--reward_model", "my-rm"])
    reward_args = parsed[3]
    assert reward_args.reward is None and reward_args.reward_model == "my-rm"
    parsed = _parse("ppo", ["--preset", "demo"])
    assert parsed[3].reward == ["vader"]


def test_a_config_file_overrides_the_preset(tmp_path):
    config = tmp_path / "ppo.yaml"
    config.write_text("max_steps: 3\nlearning_rate: 0.001\n")
    _, ppo_config, *_ = _parse("ppo", ["--preset", "demo", "--config", str(config)])
    assert ppo_config.max_steps == 3 and ppo_config.learning_rate == 0.001
    assert ppo_config.per_device_train_batch_size == 32  # from the preset


def test_split_preset_takes_out_only_the_preset():
    assert split_preset(["--a", "1", "--preset", "demo", "--b"]) == ("demo", ["--a", "1", "--b"])
    assert split_preset(["--preset=demo"]) == ("demo", [])
    assert split_preset(["--a"]) == (None, ["--a"])
    with pytest.raises(UnknownPresetError, match="needs a name"):
        split_preset(["--preset"])


def test_bundled_sentiment_data_is_valid_and_held_out_subjects_are_unseen():
    prompts = [r["prompt"] for r in read_jsonl(SENTIMENT_PROMPTS)]
    heldout = [r["prompt"] for r in read_jsonl(SENTIMENT_HELDOUT)]
    assert len(prompts) == 72 and len(heldout) == 24 and not set(prompts) & set(heldout)

    def subject(prompt):
        for prefix in ("Describe ", "Write two sentences about ", "What do you think of "):
            if prompt.startswith(prefix):
                return prompt[len(prefix):].rstrip(".?")
        raise AssertionError(prompt)

    assert not {subject(p) for p in prompts} & {subject(p) for p in heldout}
    pairs = read_jsonl(SENTIMENT_PAIRS)
    validate_dataset(pairs)
    assert {p["prompt"] for p in pairs} <= set(prompts)  # pairs come from training prompts only
    from prefkit.rewards import vader_sentiment

    chosen = vader_sentiment([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    rejected = vader_sentiment([p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    assert all(c > r for c, r in zip(chosen, rejected))  # ranked by the gold reward


def test_unknown_preset_is_a_clear_error(capsys):
    assert cli_main(["dpo", "--preset", "fast"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: prefkit dpo has no preset 'fast' (presets: demo)")


def test_missing_preset_name_is_a_clear_error(capsys):
    assert cli_main(["ppo", "--preset"]) == 2
    assert "--preset needs a name" in capsys.readouterr().err


def test_help_lists_the_presets(capsys):
    assert cli_main(["ppo", "--help"]) == 0
    assert "--preset demo PPO-Clip + GAE" in " ".join(capsys.readouterr().out.split())
    assert cli_main(["ppo", "--help-all"]) == 0
    assert "--preset demo: PPO-Clip + GAE" in " ".join(capsys.readouterr().out.split())


def test_dpo_demo_preset_trains_and_logs_held_out_evaluation(tiny_model_dir, tmp_path, capsys):
    """The preset end to end, shrunk to the tiny model: it trains on the bundled pairs with the preset's settings and
    evaluates on held-out prompts before and after training (the eval keys reach the trainer's log)."""
    out = tmp_path / "run"
    argv = ["dpo", "--preset", "demo", "--model_name_or_path", tiny_model_dir, "--output_dir", str(out),
            "--max_steps", "2", "--eval_num_prompts", "2", "--eval_max_new_tokens", "4", "--report_to", "none",
            "--bf16", "false", "--save_strategy", "no", "--per_device_train_batch_size", "2", "--disable_tqdm", "true"]
    assert cli_main(argv) == 0
    assert (out / "adapter_model.safetensors").exists()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 16
    card = (out / "README.md").read_text()
    assert "| learning_rate | 0.0002 |" in card and "| max_steps | 2 |" in card
    assert str(SENTIMENT_PAIRS) not in card  # a bundled file's path is this machine's, not a dataset id
    logged = capsys.readouterr().out
    assert logged.count("'eval/reward'") >= 2  # before the first step and after the last


def test_kto_demo_preset_trains_on_the_bundled_pairs_split_into_good_and_bad_answers(tiny_model_dir, tmp_path):
    """`prefkit kto --preset demo`, shrunk to the tiny model: KTO reads the bundled pairs as thumbs up / down rows
    and trains the preset's LoRA adapter with the preset's learning rate."""
    out = tmp_path / "run"
    argv = ["kto", "--preset", "demo", "--model_name_or_path", tiny_model_dir, "--output_dir", str(out),
            "--max_steps", "2", "--eval_num_prompts", "2", "--eval_max_new_tokens", "4", "--report_to", "none",
            "--bf16", "false", "--save_strategy", "no", "--per_device_train_batch_size", "2", "--disable_tqdm", "true"]
    assert cli_main(argv) == 0
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 16
    card = (out / "README.md").read_text()
    assert "| learning_rate | 0.0002 |" in card and "| max_steps | 2 |" in card
