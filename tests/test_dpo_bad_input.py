"""Bad DPO datasets fail before any model loads, with the row and the column in the message."""

import pytest
from datasets import Dataset

from prefkit import DPOConfig, DPOTrainer, PreferenceDataError
from prefkit.trainers import startup as trainer_startup

GOOD = {"prompt": "Tell me about tea.", "chosen": "Tea is a calming drink.", "rejected": "No."}


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was validated")

    monkeypatch.setattr(trainer_startup, "load_model_for_training", refuse)


def _train(rows, tmp_path, **kwargs):
    args = DPOConfig(output_dir=str(tmp_path), report_to="none", bf16=False)
    dataset = rows if not isinstance(rows, list) else Dataset.from_list(rows)
    return DPOTrainer("some/model-that-is-never-loaded", args=args, train_dataset=dataset, **kwargs)


@pytest.mark.parametrize(
    "bad_row, column, reason",
    [
        ({**GOOD, "chosen": ""}, "chosen", "is empty"),
        ({**GOOD, "rejected": "   "}, "rejected", "is empty"),
        ({**GOOD, "chosen": None}, "chosen", "is missing"),
        ({**GOOD, "prompt": ""}, "prompt", "is empty"),
        ({**GOOD, "rejected": GOOD["chosen"]}, "rejected", "identical to 'chosen'"),
    ],
)
def test_bad_standard_row_is_reported_with_row_and_column(bad_row, column, reason, tmp_path, no_model_loading):
    rows = [GOOD, GOOD, bad_row]
    with pytest.raises(PreferenceDataError) as info:
        _train(rows, tmp_path)
    message = str(info.value)
    assert f"row 2, column '{column}'" in message and reason in message
    assert info.value.bad_rows == [2]


def test_non_string_response_is_reported(tmp_path, no_model_loading):
    # A plain list of dicts: ``datasets`` would coerce an int column to int and hide the mistake.
    class Rows(list):
        column_names = ["prompt", "chosen", "rejected"]

    with pytest.raises(PreferenceDataError, match=r"row 0, column 'chosen': is a int \(42\); expected text"):
        _train(Rows([{"prompt": "Hi", "chosen": 42, "rejected": "Go away."}]), tmp_path)


def test_missing_column_lists_what_the_dataset_has(tmp_path, no_model_loading):
    data = Dataset.from_list([{"prompt": "Hi", "good": "Hello!", "bad": "Go away."}])
    with pytest.raises(PreferenceDataError) as info:
        _train(data, tmp_path)
    message = str(info.value)
    assert "column 'chosen': is missing; the data has columns ['bad', 'good', 'prompt']" in message
    assert "rename_column('bad', 'rejected')" in message  # and suggests the fix


def test_conversational_turn_with_a_wrong_role_is_reported(tmp_path, no_model_loading):
    row = {
        "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "human", "content": "Go away."}],
    }
    with pytest.raises(PreferenceDataError, match=r"row 0, column 'rejected': message 0 has role 'human'"):
        _train([row], tmp_path)


def test_prompt_ending_with_an_assistant_turn_is_reported(tmp_path, no_model_loading):
    row = {
        "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        "chosen": [{"role": "assistant", "content": "How can I help?"}],
        "rejected": [{"role": "assistant", "content": "Bye."}],
    }
    with pytest.raises(PreferenceDataError, match="row 0, column 'prompt': ends with an assistant turn"):
        _train([row], tmp_path)


def test_empty_dataset_is_reported(tmp_path, no_model_loading):
    empty = Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []})
    with pytest.raises(PreferenceDataError, match="is empty; it needs at least one preference pair"):
        _train(empty, tmp_path)


def test_bad_eval_dataset_is_named_as_such(tmp_path, no_model_loading):
    with pytest.raises(PreferenceDataError, match=r"eval_dataset has 1 bad row"):
        _train([GOOD], tmp_path, eval_dataset=Dataset.from_list([{**GOOD, "chosen": ""}]))


def test_many_bad_rows_are_all_counted_in_one_error(tmp_path, no_model_loading):
    rows = [GOOD] + [{**GOOD, "chosen": ""} for _ in range(30)]
    with pytest.raises(PreferenceDataError) as info:
        _train(rows, tmp_path)
    assert "has 30 bad rows (of 31)" in str(info.value)
    assert "and 10 more problems" in str(info.value)
    assert len(info.value.bad_rows) == 30


VISION_GOOD = {
    "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}],
    "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "A red square."}]}],
    "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}],
}


def _with_images(rows):
    from PIL import Image

    return Dataset.from_list([{**row, "images": [Image.new("RGB", (4, 4), "red")]} for row in rows])


def test_a_vision_dataset_still_has_its_text_checked(tmp_path, no_model_loading):
    bad = {**VISION_GOOD, "chosen": [{"role": "assistant", "content": [{"type": "text", "text": " "}]}]}
    with pytest.raises(PreferenceDataError, match=r"row 1, column 'chosen': message 0, part 0 has empty or non-text text"):
        _train(_with_images([VISION_GOOD, bad]), tmp_path)


def test_a_plain_text_vision_dataset_with_an_empty_answer_is_rejected(tmp_path, no_model_loading):
    with pytest.raises(PreferenceDataError, match=r"row 1, column 'rejected': is empty"):
        _train(_with_images([GOOD, {**GOOD, "rejected": ""}]), tmp_path)


def test_a_good_vision_dataset_passes_the_checks():
    from prefkit.data.validation import validate_unless_tokenized

    assert validate_unless_tokenized(_with_images([VISION_GOOD, VISION_GOOD]), "train_dataset") is None


def test_rows_mixing_plain_text_and_conversations_are_refused_before_the_model_loads(tmp_path, no_model_loading):
    from prefkit.data.io import load_dataset_any
    from helpers import write_jsonl

    conversational = {
        "prompt": [{"role": "user", "content": "Tell me about tea."}],
        "chosen": [{"role": "assistant", "content": "Tea is a calming drink."}],
        "rejected": [{"role": "assistant", "content": "No."}],
    }
    mixed = load_dataset_any(write_jsonl([GOOD, GOOD, conversational], tmp_path / "mixed.jsonl"), split="train")
    with pytest.raises(PreferenceDataError, match="row 2 is conversational but rows 0-1 are plain text"):
        _train(mixed, tmp_path)
