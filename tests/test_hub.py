"""push_to_hub with the Hub client replaced at its boundary (HfApi): what is uploaded and what the card says."""

import json
import os

import pytest
from datasets import Dataset

import prefkit
from prefkit import DPOConfig, DPOTrainer
from prefkit.hub import final_metrics
from helpers import separable_preference_rows


class FakeHub:
    """Records create_repo / upload_folder calls and what the folder held at upload time."""

    def __init__(self):
        self.repos, self.uploads = [], []

    def install(self, monkeypatch):
        from huggingface_hub import HfApi, RepoUrl

        def create_repo(api, repo_id, token=None, private=None, exist_ok=False, **kwargs):
            self.repos.append({"repo_id": repo_id, "private": private, "token": token})
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(api, repo_id, folder_path, **kwargs):
            files = sorted(
                os.path.relpath(os.path.join(root, name), folder_path)
                for root, _, names in os.walk(folder_path)
                for name in names
            )
            card = open(os.path.join(folder_path, "README.md"), encoding="utf-8").read()
            self.uploads.append({"repo_id": repo_id, "files": files, "card": card, **kwargs})
            return f"https://huggingface.co/{repo_id}/commit/0"

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        return self


@pytest.fixture
def trained(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from prefkit.models import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config._name_or_path = "prefkit-test/tiny-llama"  # what from_pretrained of a Hub id records
    args = DPOConfig(
        output_dir=str(tmp_path / "tiny-dpo"),
        hub_model_id="alice/tiny-dpo",
        hub_token="hf_secret_do_not_log",
        beta=0.25,
        max_steps=3,
        logging_steps=1,
        learning_rate=5e-3,
        per_device_train_batch_size=4,
        use_peft=True,
        lora_r=4,
        report_to="none",
        save_strategy="no",
        bf16=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model,
        args=args,
        train_dataset=Dataset.from_list(separable_preference_rows(12)),
        processing_class=load_tokenizer(tiny_model_dir),
    )
    trainer.train()
    return trainer


def test_push_uploads_adapter_tokenizer_and_card_in_one_commit(trained, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    trained.push_to_hub(dataset_name="alice/teddy-pairs")
    assert [r["repo_id"] for r in hub.repos] == ["alice/tiny-dpo"]
    assert len(hub.uploads) == 1
    upload = hub.uploads[0]
    assert upload["repo_id"] == "alice/tiny-dpo"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"):
        assert name in upload["files"]
    assert not any(name.startswith("checkpoint-") for name in upload["files"])


def test_card_states_base_model_data_method_hyperparameters_metrics_and_version(trained, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    trained.push_to_hub(dataset_name="alice/teddy-pairs")
    card = hub.uploads[0]["card"]
    front_matter = card.split("---")[1]
    assert "base_model: prefkit-test/tiny-llama" in front_matter
    assert "library_name: peft" in front_matter
    for tag in ("- prefkit", "- dpo", "- trl", "- lora"):
        assert tag in front_matter
    assert "- alice/teddy-pairs" in front_matter
    assert "| beta | 0.25 |" in card
    assert "| loss_type | sigmoid |" in card
    assert "| lora_r | 4 |" in card
    last_accuracy = final_metrics(trained.state.log_history)["rewards/accuracies"]
    assert f"| rewards/accuracies | {last_accuracy:.4g} |" in card
    assert f"prefkit: {prefkit.__version__}" in card
    assert "2305.18290" in card  # the DPO paper


def test_token_never_reaches_the_card_or_the_saved_files(trained, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    trained.push_to_hub()
    assert "hf_secret_do_not_log" not in hub.uploads[0]["card"]
    for root, _, names in os.walk(trained.args.output_dir):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                assert b"hf_secret_do_not_log" not in f.read(), name


@pytest.mark.slow
def test_an_adapter_of_the_offline_default_model_names_its_hub_id_and_no_local_path(tmp_path):
    """Trained from the local copy of SmolLM2 (no Hub here), the adapter and its card name the Hub id, which is what
    loads it on another machine; no saved file, checkpoints included, holds the folder the weights were read from."""
    from prefkit.cli import main as cli_main
    from prefkit.models import DEFAULT_POLICY, load_policy, resolve_model_path
    from helpers import write_jsonl

    local_copy = resolve_model_path(DEFAULT_POLICY)
    assert os.path.isdir(local_copy)
    pairs = write_jsonl(separable_preference_rows(4), tmp_path / "pairs.jsonl")
    out = tmp_path / "run"
    argv = ["dpo", "--dataset_name", str(pairs), "--output_dir", str(out), "--use_peft", "--lora_r", "4",
            "--max_steps", "1", "--save_steps", "1", "--per_device_train_batch_size", "2", "--max_length", "64",
            "--report_to", "none", "--bf16", "false", "--gradient_checkpointing", "false"]
    assert cli_main(argv) == 0

    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == DEFAULT_POLICY
    front_matter = (out / "README.md").read_text().split("---")[1]
    assert f"base_model: {DEFAULT_POLICY}" in front_matter
    files = [path for path in out.rglob("*") if path.is_file()]
    assert any(path.parent.name == "checkpoint-1" for path in files)
    assert [str(path.relative_to(out)) for path in files if local_copy.encode() in path.read_bytes()] == []
    model, _ = load_policy(str(out))  # the recorded Hub id resolves to the local copy again, offline
    assert model.peft_config["default"].base_model_name_or_path == DEFAULT_POLICY


def test_final_metrics_keeps_the_last_value_of_each_metric():
    history = [{"loss": 0.7, "step": 1}, {"loss": 0.5, "rewards/margins": 0.2, "step": 2}, {"train_runtime": 3.0}]
    assert final_metrics(history) == {"loss": 0.5, "rewards/margins": 0.2}
