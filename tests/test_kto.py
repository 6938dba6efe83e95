"""prefkit.KTOTrainer: parity with trl.KTOTrainer, QLoRA on CPU, app votes as training data, bad labels refused
before any model loads, and `prefkit kto`."""

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from prefkit import KTOConfig, KTOTrainer, PreferenceDataError
from prefkit.cli import main as prefkit_cli
from prefkit.trainers import startup as trainer_startup
from helpers import write_jsonl

REPO = Path(__file__).resolve().parent.parent
GOOD_ANSWER = "Happy to help! Here is something kind and helpful about {topic}."
BAD_ANSWER = "No. Figure it out yourself."


def thumbs_rows(n: int = 16) -> list[dict]:
    """Unpaired rows, a kind answer (desirable) then a dismissive one (undesirable) for each prompt."""
    topics = ["tea", "the sea", "my teddy bear", "a poem", "France", "a picnic", "the fox", "numbers"]
    rows = []
    for i in range(n // 2):
        topic = topics[i % len(topics)]
        prompt = f"Tell me about {topic}."
        rows.append({"prompt": prompt, "completion": GOOD_ANSWER.format(topic=topic), "label": True})
        rows.append({"prompt": prompt, "completion": BAD_ANSWER, "label": False})
    return rows


def _values(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=0,
        bf16=False,
        max_length=128,
    )
    values.update(overrides)
    return values


def _logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was validated")

    monkeypatch.setattr(trainer_startup, "load_model_for_training", refuse)


# ---- parity with TRL ------------------------------------------------------------------------------------------------


def test_same_loss_and_metrics_as_trl_kto_trainer_after_an_update(tiny_model_dir, tiny_tokenizer, tmp_path):
    import trl
    from transformers import AutoModelForCausalLM

    data = Dataset.from_list(thumbs_rows(16))
    ours = KTOTrainer(tiny_model_dir, args=KTOConfig(**_values(tmp_path / "a")), train_dataset=data)
    ours.train()

    theirs = trl.KTOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
        args=trl.KTOConfig(**_values(tmp_path / "b")),
        train_dataset=data,
        processing_class=tiny_tokenizer,
    )
    theirs.train()

    # Step 1 is 0.5 for both (policy == reference, so every reward and the KL are 0); step 2 follows one optimizer
    # update, so it checks that data order, tokenization, the KL pairing, the loss and the optimizer all agree.
    for key in ("loss", "kl", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
        assert _logged(ours, key) == pytest.approx(_logged(theirs, key), rel=1e-5, abs=1e-6), key
    assert _logged(ours, "loss")[0] == pytest.approx(0.5, abs=1e-6)
    assert _logged(ours, "loss")[1] != pytest.approx(0.5, abs=1e-3)
    assert _logged(ours, "rewards/margins")[1] > 0  # moved: kind answers up, dismissive ones down


# ---- QLoRA on CPU ---------------------------------------------------------------------------------------------------


def test_qlora_trains_on_cpu_with_the_disabled_adapter_as_reference(tiny_model_dir, tmp_path):
    from prefkit.models import is_quantized

    args = KTOConfig(**_values(tmp_path, max_steps=4, learning_rate=5e-3, quantization="4bit", lora_r=8, lora_alpha=16,
                               lora_dropout=0.0))
    assert args.use_peft  # quantization implies an adapter
    trainer = KTOTrainer(tiny_model_dir, args=args, train_dataset=Dataset.from_list(thumbs_rows(16)))
    assert is_quantized(trainer.model) and hasattr(trainer.model, "peft_config")
    assert trainer.ref_model is None  # the reference is the base with the adapter off, not a second copy
    trainer.train()
    losses = _logged(trainer, "loss")
    assert losses[0] == pytest.approx(0.5, abs=1e-4)
    assert losses[-1] < losses[0]
    assert _logged(trainer, "rewards/margins")[-1] > 0


# ---- votes from the app ---------------------------------------------------------------------------------------------


def test_votes_exported_for_kto_train_one_step(tiny_model_dir, tmp_path):
    from prefkit.data.export import export_pairs
    from prefkit.data.io import load_dataset_any
    from prefkit.data.votes import VoteStore, votes_to_rows

    store = VoteStore(tmp_path / "votes")
    for i, verdict in enumerate(["a", "b", "both_bad", "tie", "a"]):
        kind, rude = GOOD_ANSWER.format(topic=f"topic {i}"), BAD_ANSWER
        store.append({"prompt": f"Tell me about topic {i}.", "verdict": verdict,
                      "response_a": kind if verdict != "b" else rude, "response_b": rude if verdict != "b" else kind})
    # What the app's Data tab does for "KTO unpaired": the vote rows, written by the exporter.
    path = export_pairs(votes_to_rows(store.read(), kind="kto"), tmp_path / "kto.jsonl")
    data = load_dataset_any(str(path), split="train")

    assert {"prompt", "completion", "label"} <= set(data.column_names)
    assert data.features["label"].dtype == "bool"
    # Two rows per decided vote (both bad: two undesirable ones), none for the tie.
    assert data["label"] == [True, False, True, False, False, False, True, False]
    assert all(row["completion"] != BAD_ANSWER for row in data if row["label"])  # the winners, whichever side

    args = KTOConfig(**_values(tmp_path, max_steps=1, use_peft=True, lora_r=4, lora_alpha=8))
    trainer = KTOTrainer(tiny_model_dir, args=args, train_dataset=data)
    trainer.train()
    assert trainer.state.global_step == 1
    assert len(_logged(trainer, "loss")) == 1


def test_pairs_split_into_kto_rows_alternate_desirable_and_undesirable():
    from prefkit.data import pairs_to_unpaired

    pairs = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "margin": 1.0} for i in range(3)]
    rows = pairs_to_unpaired(pairs)
    assert [(row["completion"], row["label"]) for row in rows] == [
        ("good 0", True), ("bad 0", False), ("good 1", True), ("bad 1", False), ("good 2", True), ("bad 2", False)
    ]
    assert all(set(row) == {"prompt", "completion", "label"} for row in rows)  # KTO has no margin


# ---- bad data: clear errors before the model loads ------------------------------------------------------------------


def _train(rows, tmp_path, **overrides):
    args = KTOConfig(output_dir=str(tmp_path), report_to="none", bf16=False, **overrides)
    dataset = rows if not isinstance(rows, list) else Dataset.from_list(rows)
    return KTOTrainer("some/model-that-is-never-loaded", args=args, train_dataset=dataset)


@pytest.mark.parametrize(
    "labels, shown",
    [([1, 0, 1], "is a int (1)"), (["true", "false", "true"], "is a str ('true')"), ([True, None, True], "is missing")],
    ids=["numbers", "strings", "missing"],
)
def test_a_label_that_is_not_a_boolean_names_row_and_column(labels, shown, tmp_path, no_model_loading):
    rows = [{"prompt": "Tell me about tea.", "completion": "Tea is a calming drink.", "label": label} for label in labels]
    with pytest.raises(PreferenceDataError) as info:
        _train(rows, tmp_path)
    message = str(info.value)
    first_bad = 1 if labels[0] is True else 0
    assert f"row {first_bad}, column 'label': {shown}" in message
    assert "expected true (desirable) or false (undesirable)" in message


def test_a_missing_completion_column_is_named_with_the_likely_rename(tmp_path, no_model_loading):
    data = Dataset.from_list([{"prompt": "Tell me about tea.", "response": "Tea is a calming drink.", "label": True}])
    with pytest.raises(PreferenceDataError) as info:
        _train(data, tmp_path)
    message = str(info.value)
    assert "column 'completion': is missing; the data has columns ['label', 'prompt', 'response']" in message
    assert "rename_column('response', 'completion')" in message
    assert "prefkit.data.labels_to_unpaired" in message  # and where such rows come from


def test_an_empty_completion_names_its_row(tmp_path, no_model_loading):
    rows = thumbs_rows(4)
    rows[2]["completion"] = "   "
    with pytest.raises(PreferenceDataError) as info:
        _train(rows, tmp_path)
    assert "row 2, column 'completion': is empty" in str(info.value)
    assert info.value.bad_rows == [2]


def test_an_empty_dataset_says_what_it_needs(tmp_path, no_model_loading):
    empty = Dataset.from_dict({"prompt": [], "completion": [], "label": []})
    with pytest.raises(PreferenceDataError, match=r"the dataset is empty; it needs at least one labeled completion"):
        _train(empty, tmp_path)


def test_scores_instead_of_labels_say_how_to_get_labels(tmp_path, no_model_loading):
    data = Dataset.from_list([{"prompt": "Tell me about tea.", "completion": "Tea is a calming drink.", "score": 0.8}])
    with pytest.raises(PreferenceDataError, match=r"column 'label': is missing.*not a score"):
        _train(data, tmp_path)


def test_a_batch_of_one_is_refused_with_the_config_not_after_loading(tmp_path, no_model_loading):
    with pytest.raises(ValueError, match=r"per_device_train_batch_size=1: loss_type='kto' estimates its KL term"):
        KTOConfig(output_dir=str(tmp_path), report_to="none", per_device_train_batch_size=1)
    # The loss without a KL term takes it.
    KTOConfig(output_dir=str(tmp_path), report_to="none", per_device_train_batch_size=1, loss_type="apo_zero_unpaired")


# ---- the command ----------------------------------------------------------------------------------------------------


def test_prefkit_kto_trains_and_saves_an_adapter_with_its_model_card(tiny_model_dir, tmp_path):
    data = write_jsonl(thumbs_rows(8), tmp_path / "thumbs.jsonl")
    out = tmp_path / "run"
    argv = ["kto", "--model_name_or_path", tiny_model_dir, "--dataset_name", str(data), "--output_dir", str(out),
            "--use_peft", "--lora_r", "4", "--beta", "0.3", "--undesirable_weight", "1.3", "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--logging_steps", "1", "--report_to", "none", "--save_strategy",
            "no", "--bf16", "false", "--gradient_checkpointing", "false"]
    assert prefkit_cli(argv) == 0
    assert (out / "adapter_model.safetensors").exists()
    card = (out / "README.md").read_text()
    assert "using **KTO**" in card and "2402.01306" in card
    for row in ("| beta | 0.3 |", "| desirable_weight | 1 |", "| undesirable_weight | 1.3 |", "| max_steps | 2 |"):
        assert row in card
    assert "## Final metrics" in card and "| kl |" in card and "| rewards/margins |" in card


def test_prefkit_kto_on_bad_labels_prints_an_error_and_exits_2(tmp_path, capsys, no_model_loading):
    rows = [{"prompt": "Tell me about tea.", "completion": "Tea is a calming drink.", "label": 1}]
    data = tmp_path / "thumbs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["kto", "--dataset_name", str(data), "--output_dir", str(tmp_path / "run"), "--model_name_or_path",
            "no-such/model", "--bf16", "false", "--report_to", "none"]
    assert prefkit_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train_dataset has 1 bad row")
    assert "row 0, column 'label': is a int (1)" in err and "Traceback" not in err


def test_prefkit_kto_with_a_batch_of_one_prints_an_error_and_exits_2(tmp_path, capsys, no_model_loading):
    data = write_jsonl(thumbs_rows(4), tmp_path / "thumbs.jsonl")
    argv = ["kto", "--dataset_name", str(data), "--output_dir", str(tmp_path / "run"), "--per_device_train_batch_size",
            "1", "--bf16", "false"]
    assert prefkit_cli(argv) == 2
    assert capsys.readouterr().err.startswith("error: KTOConfig: per_device_train_batch_size=1")


def test_the_kto_example_data_is_what_export_writes_from_the_bundled_pairs(tmp_path):
    from prefkit.presets import SENTIMENT_PAIRS

    output = tmp_path / "thumbs.jsonl"
    assert prefkit_cli(["export", "--input", str(SENTIMENT_PAIRS), "--format", "unpaired", "--output", str(output)]) == 0
    assert output.read_bytes() == (REPO / "examples" / "sentiment_thumbs.jsonl").read_bytes()
