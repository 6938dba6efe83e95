"""A training command's flag mistakes are one `error:` line and where the flags are listed, not argparse's full usage;
`--quantization none` unsets a config file's quantization."""

import pytest

from prefkit.cli import main as prefkit
from prefkit.commands.dpo import command as dpo_command


@pytest.mark.parametrize(
    "argv,problem",
    [
        (["dpo", "--quantization", "fourbit"], "invalid choice: 'fourbit'"),
        (["ppo", "--learning_rate", "fast"], "invalid float value: 'fast'"),
    ],
)
def test_a_bad_flag_value_is_one_error_line_not_the_whole_usage(argv, problem, capsys):
    assert prefkit(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and problem in err[0]
    assert len(err) == 2
    assert f"prefkit {argv[0]} --help" in err[1]


def test_an_unknown_flag_is_one_error_line(capsys):
    assert prefkit(["reward", "--no_such_flag", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--no_such_flag" in err[0]


def test_quantization_none_unsets_what_a_config_file_set(tmp_path):
    config = tmp_path / "dpo.yaml"
    config.write_text("quantization: 4bit\noutput_dir: out\n")
    parsed = dpo_command().parse(["--config", str(config)], prog="prefkit dpo")
    assert [a for a in parsed if hasattr(a, "quantization")][0].quantization == "4bit"
    parsed = dpo_command().parse(["--config", str(config), "--quantization", "none"], prog="prefkit dpo")
    training = [a for a in parsed if hasattr(a, "quantization")][0]
    assert training.quantization is None
    assert training.use_peft is False  # nothing else implied it
