"""A model the Hub cannot give (offline, unreachable, not cached) is one `error:` line that names the model and says how
to run offline, with exit status 2 and no traceback; a local folder's own problems still surface as they are."""

from __future__ import annotations

import pytest
from huggingface_hub import constants

from prefkit.cli import main as prefkit
from prefkit.models import ModelNotAvailableError, load_model
from helpers import separable_preference_rows, write_jsonl

pytestmark = pytest.mark.skipif(not constants.HF_HUB_OFFLINE, reason="needs HF_HUB_OFFLINE=1 (tests/conftest.py sets it)")

MISSING = "some-org/missing-model"


def test_loading_a_model_id_that_is_not_cached_names_it_and_how_to_run_offline():
    with pytest.raises(ModelNotAvailableError) as error:
        load_model(MISSING)
    message = str(error.value)
    assert repr(MISSING) in message and "HF_HUB_OFFLINE is set" in message
    assert "local model folder" in message and "offline default" in message
    assert "\n" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_a_local_folder_without_a_model_keeps_its_own_error(tmp_path):
    with pytest.raises((OSError, ValueError)) as error:  # transformers' own words for what the folder lacks
        load_model(str(tmp_path))
    assert not isinstance(error.value, ModelNotAvailableError)


def one_error_line(err: str, name: str) -> None:
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert repr(name) in line and "HF_HUB_OFFLINE" in line
    assert err.strip().endswith(line)


def test_training_from_a_model_that_is_not_cached_is_one_error_line(tmp_path, capsys):
    pairs = write_jsonl(separable_preference_rows(4), tmp_path / "pairs.jsonl")
    argv = ["dpo", "--model_name_or_path", MISSING, "--dataset_name", str(pairs), "--output_dir", str(tmp_path / "run"),
            "--bf16", "false", "--report_to", "none"]
    assert prefkit(argv) == 2
    one_error_line(capsys.readouterr().err, MISSING)


def test_an_llm_judge_that_is_not_cached_is_one_error_line(tmp_path, capsys):
    pairs = write_jsonl(
        [{"id": "p0", "prompt": "Tea?", "response_a": "Yes, please.", "response_b": "No."}], tmp_path / "to_label.jsonl"
    )
    argv = ["label", "--input", str(pairs), "--judge", "llm", "--judge_model", "some-org/some-model",
            "--output", str(tmp_path / "labeled.jsonl")]
    assert prefkit(argv) == 2
    one_error_line(capsys.readouterr().err, "some-org/some-model")
