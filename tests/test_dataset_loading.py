"""Datasets load from a JSONL or Parquet file, a save_to_disk folder or a folder of files; bad files are named."""

import pytest
from datasets import Dataset, DatasetDict

from prefkit.data.io import load_dataset_any
from helpers import separable_preference_rows, write_jsonl

ROWS = separable_preference_rows(6)


def test_jsonl_file_becomes_the_train_split(tmp_path):
    path = write_jsonl(ROWS, tmp_path / "pairs.jsonl")
    train = load_dataset_any(path, split="train")
    assert train.num_rows == 6 and train[0] == ROWS[0]


def test_parquet_file_loads(tmp_path):
    path = tmp_path / "pairs.parquet"
    Dataset.from_list(ROWS).to_parquet(str(path))
    assert load_dataset_any(path, split="train")[5] == ROWS[5]


def test_save_to_disk_folder_with_splits_loads(tmp_path):
    DatasetDict({"train": Dataset.from_list(ROWS[:4]), "test": Dataset.from_list(ROWS[4:])}).save_to_disk(str(tmp_path / "d"))
    loaded = load_dataset_any(tmp_path / "d")
    assert loaded["train"].num_rows == 4 and loaded["test"].num_rows == 2


def test_folder_of_jsonl_files_loads(tmp_path):
    write_jsonl(ROWS, tmp_path / "folder" / "train.jsonl")
    assert load_dataset_any(tmp_path / "folder", split="train").num_rows == 6


def test_torn_jsonl_line_is_named_by_number(tmp_path):
    path = write_jsonl(ROWS, tmp_path / "pairs.jsonl")
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"prompt": "cut off mid-wri')
    with pytest.raises(ValueError, match=r"pairs.jsonl has 1 bad row:\n  row 6, line 7: is not valid JSON.*looks cut off"):
        load_dataset_any(path)


def test_non_utf8_jsonl_is_named_by_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "ok", "chosen": "a", "rejected": "b"}\n{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"row 1, line 2: is not valid UTF-8.*re-save the file as UTF-8"):
        load_dataset_any(path)


def test_unknown_extension_lists_the_supported_ones(tmp_path):
    path = tmp_path / "pairs.xlsx"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.jsonl, \.json, \.parquet or \.csv"):
        load_dataset_any(path)


def test_missing_split_lists_the_existing_ones(tmp_path):
    path = write_jsonl(ROWS, tmp_path / "pairs.jsonl")
    with pytest.raises(KeyError, match=r"no split 'validation'; it has \['train'\]"):
        load_dataset_any(path, split="validation")


def test_missing_local_path_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_dataset_any(str(tmp_path / "nope") + "/")


@pytest.mark.parametrize("content", ["", "\n \n\n"], ids=["empty", "blank lines"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_an_empty_file_is_the_empty_dataset_error_with_its_path(tmp_path, content, suffix):
    from prefkit.data import EmptyDatasetError

    path = tmp_path / f"pairs{suffix}"
    path.write_text(content)
    with pytest.raises(EmptyDatasetError, match=f"^{path}: the dataset is empty"):
        load_dataset_any(path, split="train")


def test_a_csv_with_a_header_and_no_rows_is_empty(tmp_path):
    from prefkit.data import EmptyDatasetError

    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen,rejected\n")
    with pytest.raises(EmptyDatasetError, match="the dataset is empty"):
        load_dataset_any(path)


def test_reading_the_records_of_a_blank_file_is_the_empty_dataset_error(tmp_path):
    from prefkit.data import EmptyDatasetError
    from prefkit.data.io import load_records

    path = tmp_path / "prompts.txt"
    path.write_text("\n\n")
    with pytest.raises(EmptyDatasetError, match=f"{path}: the dataset is empty"):
        list(load_records(path))


def test_a_missing_file_named_without_a_folder_is_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="^pairs.jsonl: no such file or folder"):
        load_dataset_any("pairs.jsonl")
