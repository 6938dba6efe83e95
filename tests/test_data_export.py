"""Export to datasets / JSONL / Parquet in TRL's columns, and push to the Hub (the Hub client replaced at its boundary)."""

from __future__ import annotations

import io
import json

import pytest

from prefkit.data import PreferenceDataError, labels_to_pairs, labels_to_unpaired
from prefkit.data.export import build_dataset_card, export_pairs, push_dataset_to_hub, to_dataset

LABELED = [
    {
        "id": "r1",
        "prompt": "How do I make tea?",
        "response_a": "Boil water and steep.",
        "response_b": "No.",
        "label": "A better",
    },
    {
        "id": "r2",
        "prompt": "Capital of France?",
        "response_a": "Look it up.",
        "response_b": "Paris.",
        "label": "B much better",
    },
    {"id": "r3", "prompt": "Hi!", "response_a": "Hello!", "response_b": "Hey!", "label": "tie"},
]
PAIRS = labels_to_pairs(LABELED, keep_columns=["id"])


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_export_round_trips_through_datasets(tmp_path, suffix):
    from datasets import load_dataset

    path = export_pairs(PAIRS, tmp_path / f"pairs{suffix}")
    loaded = load_dataset("json" if suffix == ".jsonl" else "parquet", data_files=str(path), split="train")
    assert loaded.column_names == ["prompt", "chosen", "rejected", "margin", "id"]
    assert loaded.to_list() == PAIRS
    assert not (tmp_path / f"pairs{suffix}.partial").exists()


def test_unpaired_rows_export_for_kto(tmp_path):
    path = export_pairs(labels_to_unpaired(LABELED), tmp_path / "kto.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["completion"], r["label"]) for r in rows] == [
        ("Boil water and steep.", True),
        ("No.", False),
        ("Paris.", True),
        ("Look it up.", False),
    ]


def test_bad_rows_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(PreferenceDataError, match="row 1, column 'rejected'"):
        export_pairs([PAIRS[0], {**PAIRS[1], "rejected": ""}], tmp_path / "pairs.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_unknown_extension_is_refused(tmp_path):
    with pytest.raises(ValueError, match="use one of .jsonl, .parquet"):
        export_pairs(PAIRS, tmp_path / "pairs.csv")


def test_an_interrupted_jsonl_export_resumes_from_its_partial_file(tmp_path):
    target = tmp_path / "pairs.jsonl"
    (tmp_path / "pairs.jsonl.partial").write_text(json.dumps(PAIRS[0]) + "\n")  # what a killed export left behind
    export_pairs(PAIRS, target)
    assert [json.loads(line)["id"] for line in target.read_text().splitlines()] == ["r1", "r2"]


def test_the_exported_file_is_what_trl_validation_accepts(tmp_path):
    from datasets import load_dataset

    from prefkit.data import validate_preference_dataset

    path = export_pairs(PAIRS, tmp_path / "pairs.parquet")
    assert validate_preference_dataset(load_dataset("parquet", data_files=str(path), split="train")) is None


def test_to_dataset_keeps_conversational_rows():
    messages = [{"role": "user", "content": "Hi"}]
    rows = labels_to_pairs([{"prompt": messages, "response_a": "Hello!", "response_b": "Go away.", "label": "A"}])
    assert to_dataset(rows)[0]["chosen"] == [{"role": "assistant", "content": "Hello!"}]


# ---- Hub ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def hub(monkeypatch):
    """Replace the two HfApi calls push_dataset_to_hub makes; record what they were given."""
    from huggingface_hub import HfApi

    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, "token": self.token, **kwargs}
        return f"https://huggingface.co/datasets/{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        calls["create_commit"] = {"repo_id": repo_id, **kwargs}
        calls["files"] = {op.path_in_repo: op.path_or_fileobj for op in operations}
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return calls


def test_push_uploads_parquet_and_card_in_one_dataset_commit(hub):
    import pyarrow.parquet as pq

    result = push_dataset_to_hub(PAIRS, "me/teddy-prefs", token="hf_secret", private=True, license="cc-by-4.0")
    assert result == "commit-info"
    assert hub["create_repo"] == {
        "repo_id": "me/teddy-prefs",
        "token": "hf_secret",
        "repo_type": "dataset",
        "private": True,
        "exist_ok": True,
    }
    assert hub["create_commit"]["repo_type"] == "dataset"
    assert set(hub["files"]) == {"data/train-00000-of-00001.parquet", "README.md"}
    table = pq.read_table(io.BytesIO(hub["files"]["data/train-00000-of-00001.parquet"]))
    assert table.to_pylist() == PAIRS


def test_the_pushed_card_describes_the_data(hub):
    push_dataset_to_hub(
        PAIRS, "me/teddy-prefs", token="hf_secret", license="cc-by-4.0", description="Tea and capitals."
    )
    card = hub["files"]["README.md"].decode()
    assert card.startswith("---\nlicense: cc-by-4.0\n")
    assert "path: data/train-*.parquet" in card and "- n<1K" in card
    assert "# teddy-prefs\n\nTea and capitals." in card
    assert "2 rows with columns `prompt`, `chosen`, `rejected`, `margin`, `id`" in card
    assert "ranges from 0.667 to 1, mean 0.833" in card
    assert 'load_dataset("me/teddy-prefs", split="train")' in card and "RewardTrainer" in card
    assert "hf_secret" not in card


def test_a_given_card_is_uploaded_as_is(hub):
    push_dataset_to_hub(PAIRS, "me/x", card="# My card\n")
    assert hub["files"]["README.md"] == b"# My card\n"


def test_an_unpaired_card_counts_desirable_and_undesirable_rows():
    card = build_dataset_card(to_dataset(labels_to_unpaired(LABELED)), "me/kto")
    assert "desirable completion (2 rows)" in card and "undesirable one (2 rows)" in card and "KTOTrainer" in card
    assert "license: unknown" in card


def test_rows_in_two_formats_are_named_instead_of_failing_inside_arrow(tmp_path):
    conversational = {
        "prompt": [{"role": "user", "content": "Hi!"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }
    with pytest.raises(PreferenceDataError, match="row 2 is conversational but rows 0-1 are plain text"):
        export_pairs([PAIRS[0], PAIRS[1], conversational], tmp_path / "pairs.jsonl")
    assert not (tmp_path / "pairs.jsonl").exists()
