"""RewardTrainer: drop-in for trl.RewardTrainer (tokens, loss, metrics), learns on decoders, encoders and 4-bit
QLoRA, saves the scoring head with the adapter, and refuses bad input before loading a model."""

import copy
import json

import pytest
import torch
import trl
from datasets import Dataset

from prefkit import RewardConfig, RewardModel, RewardTrainer
from prefkit.data.validation import PreferenceDataError
from prefkit.reward_model import encode_reward_input
from helpers import separable_preference_rows


def config(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        num_train_epochs=3,
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    values.update(overrides)
    cls = values.pop("cls", RewardConfig)
    return cls(**values)


def sequence_classifier(folder, seed=0):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)


def held_out_split(rows):
    """Train on some prompts, test on others (the topics of separable_preference_rows cycle through 8)."""
    dataset = Dataset.from_list(rows)
    from prefkit.evaluation import split_pairs_by_prompt

    return split_pairs_by_prompt(dataset, test_fraction=0.25, seed=0)


def with_margins(rows):
    return [{**row, "margin": float(i % 3)} for i, row in enumerate(rows)]


# -- drop-in for TRL -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [False, True], ids=["no-margin", "margin"])
def test_loss_on_a_batch_equals_trl_reward_trainer_loss(tiny_model_dir, tiny_tokenizer, tmp_path, margin):
    rows = separable_preference_rows(8, conversational=True)
    dataset = Dataset.from_list(with_margins(rows) if margin else rows)
    model = sequence_classifier(tiny_model_dir)
    ours = RewardTrainer(copy.deepcopy(model), args=config(tmp_path, center_rewards_coefficient=0.01),
                         train_dataset=dataset, processing_class=copy.deepcopy(tiny_tokenizer))
    theirs = trl.RewardTrainer(copy.deepcopy(model), args=config(tmp_path, cls=trl.RewardConfig, center_rewards_coefficient=0.01),
                               train_dataset=dataset, processing_class=copy.deepcopy(tiny_tokenizer))
    our_batch = ours.data_collator([ours.train_dataset[i] for i in range(8)])
    their_batch = theirs.data_collator([theirs.train_dataset[i] for i in range(8)])
    assert torch.equal(our_batch["input_ids"], their_batch["input_ids"])
    assert ("margin" in our_batch) is margin
    our_loss = ours.compute_loss(ours.model, our_batch)
    their_loss = theirs.compute_loss(theirs.model, their_batch)
    assert our_loss.item() == pytest.approx(their_loss.item(), rel=1e-6)
    assert our_loss.item() != pytest.approx(torch.nn.functional.softplus(torch.tensor(0.0)).item())  # not a constant


def test_loss_is_computed_by_prefkit_bradley_terry_loss(tiny_model_dir, tiny_tokenizer, tmp_path, monkeypatch):
    import prefkit.trainers.reward as reward_module

    calls = []
    original = reward_module.bradley_terry_loss

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(reward_module, "bradley_terry_loss", recording)
    dataset = Dataset.from_list(with_margins(separable_preference_rows(4)))
    trainer = RewardTrainer(sequence_classifier(tiny_model_dir), args=config(tmp_path), train_dataset=dataset,
                            processing_class=tiny_tokenizer)
    trainer.compute_loss(trainer.model, trainer.data_collator([trainer.train_dataset[i] for i in range(4)]))
    assert len(calls) == 1 and calls[0]["margin"].tolist() == [0.0, 1.0, 2.0, 0.0]


def test_evaluation_metrics_have_trl_names_and_values(tiny_model_dir, tiny_tokenizer, tmp_path):
    dataset = Dataset.from_list(with_margins(separable_preference_rows(12, conversational=True)))
    model = sequence_classifier(tiny_model_dir)
    ours = RewardTrainer(copy.deepcopy(model), args=config(tmp_path), train_dataset=dataset, eval_dataset=dataset,
                         processing_class=copy.deepcopy(tiny_tokenizer))
    theirs = trl.RewardTrainer(copy.deepcopy(model), args=config(tmp_path, cls=trl.RewardConfig), train_dataset=dataset,
                               eval_dataset=dataset, processing_class=copy.deepcopy(tiny_tokenizer))
    our_metrics, their_metrics = ours.evaluate(), theirs.evaluate()
    timing = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_model_preparation_time")
    strip = lambda metrics: {k: v for k, v in metrics.items() if k not in timing}  # noqa: E731
    assert strip(our_metrics).keys() == strip(their_metrics).keys()
    assert {"eval_loss", "eval_accuracy", "eval_margin", "eval_mean_reward"} <= our_metrics.keys()
    for key, value in strip(their_metrics).items():
        assert our_metrics[key] == pytest.approx(value, rel=1e-5), key


def test_plain_text_pairs_tokenize_exactly_as_trl_without_a_chat_template(tiny_model_dir, tmp_path):
    from prefkit.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    tokenizer.chat_template = None
    dataset = Dataset.from_list(separable_preference_rows(6))
    model = sequence_classifier(tiny_model_dir)
    ours = RewardTrainer(copy.deepcopy(model), args=config(tmp_path), train_dataset=dataset,
                         processing_class=copy.deepcopy(tokenizer))
    theirs = trl.RewardTrainer(copy.deepcopy(model), args=config(tmp_path, cls=trl.RewardConfig), train_dataset=dataset,
                               processing_class=copy.deepcopy(tokenizer))
    assert ours.train_dataset["chosen_ids"] == theirs.train_dataset["chosen_ids"]
    assert ours.train_dataset["rejected_ids"] == theirs.train_dataset["rejected_ids"]


def test_plain_text_pairs_tokenize_exactly_as_trl_with_a_chat_template(tiny_model_dir, tiny_tokenizer, tmp_path):
    # The tiny tokenizer has a chat template; TRL still trains standard-format pairs as prompt + answer + EOS.
    assert tiny_tokenizer.chat_template
    dataset = Dataset.from_list(separable_preference_rows(6))
    model = sequence_classifier(tiny_model_dir)
    ours = RewardTrainer(copy.deepcopy(model), args=config(tmp_path), train_dataset=dataset,
                         processing_class=copy.deepcopy(tiny_tokenizer))
    theirs = trl.RewardTrainer(copy.deepcopy(model), args=config(tmp_path, cls=trl.RewardConfig), train_dataset=dataset,
                               processing_class=copy.deepcopy(tiny_tokenizer))
    assert ours.train_dataset["chosen_ids"] == theirs.train_dataset["chosen_ids"]
    assert ours.train_dataset["rejected_ids"] == theirs.train_dataset["rejected_ids"]
    # The option renders them through the template instead: other tokens than TRL's.
    templated = RewardTrainer(copy.deepcopy(model), args=config(tmp_path, chat_template_for_text=True),
                              train_dataset=dataset, processing_class=copy.deepcopy(tiny_tokenizer))
    assert templated.train_dataset["chosen_ids"] != theirs.train_dataset["chosen_ids"]
    assert templated.train_dataset["chosen_ids"][0] == encode_reward_input(
        tiny_tokenizer, dataset[0]["prompt"], [{"role": "assistant", "content": dataset[0]["chosen"]}]
    )


@pytest.mark.parametrize("chat_template_for_text", [False, True])
def test_saved_reward_model_is_scored_on_the_layout_it_was_trained_on(
    tiny_model_dir, tiny_tokenizer, tmp_path, chat_template_for_text
):
    dataset = Dataset.from_list(separable_preference_rows(4))
    args = config(tmp_path, chat_template_for_text=chat_template_for_text)
    trainer = RewardTrainer(sequence_classifier(tiny_model_dir), args=args, train_dataset=dataset,
                            processing_class=copy.deepcopy(tiny_tokenizer))
    trainer.save_model(str(tmp_path / "saved"))
    record = json.loads((tmp_path / "saved" / "prefkit_reward.json").read_text())
    assert record == {"chat_template_for_text": chat_template_for_text}
    reloaded = RewardModel.from_pretrained(tmp_path / "saved", device="cpu")
    for row, chosen_ids in zip(dataset, trainer.train_dataset["chosen_ids"]):
        assert reloaded.encode(row["prompt"], row["chosen"]) == chosen_ids
    # A model saved without the record (a Hub reward model, prefkit 0.1) is scored through its chat template.
    (tmp_path / "saved" / "prefkit_reward.json").unlink()
    legacy = RewardModel.from_pretrained(tmp_path / "saved", device="cpu")
    row = dataset[0]
    assert legacy.encode(row["prompt"], row["chosen"]) == encode_reward_input(
        tiny_tokenizer, [{"role": "user", "content": row["prompt"]}], [{"role": "assistant", "content": row["chosen"]}]
    )


def test_training_tokens_are_what_reward_model_scores(tiny_model_dir, tiny_tokenizer, tmp_path):
    dataset = Dataset.from_list(separable_preference_rows(4))
    trainer = RewardTrainer(sequence_classifier(tiny_model_dir), args=config(tmp_path), train_dataset=dataset,
                            processing_class=tiny_tokenizer)
    scorer = trainer.reward_model()
    for row, chosen_ids in zip(dataset, trainer.train_dataset["chosen_ids"]):
        assert scorer.encode(row["prompt"], row["chosen"]) == chosen_ids


# -- learning --------------------------------------------------------------------------------------------------------


def test_tiny_decoder_reward_model_separates_held_out_pairs_and_writes_its_evaluation(tiny_model_dir, tmp_path):
    train, test = held_out_split(separable_preference_rows(48))
    trainer = RewardTrainer(tiny_model_dir, args=config(tmp_path), train_dataset=train, eval_dataset=test)
    trainer.train()
    result = trainer.reward_evaluation["eval"]
    assert result["accuracy"] > 0.9 and result["num_pairs"] == len(test)
    with open(tmp_path / "out" / "reward_eval.json") as f:
        assert json.load(f)["accuracy"] == result["accuracy"]
    with open(tmp_path / "out" / "reward_distributions.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_qlora_4bit_reward_model_learns_on_cpu_and_reloads_with_the_same_scores(tiny_model_dir, tmp_path):
    from prefkit.models import is_quantized

    train, test = held_out_split(separable_preference_rows(48, conversational=True))
    trainer = RewardTrainer(tiny_model_dir, args=config(tmp_path, quantization="4bit"), train_dataset=train, eval_dataset=test)
    assert is_quantized(trainer.model)
    trainer.train()
    assert trainer.reward_evaluation["eval"]["accuracy"] > 0.9
    trainer.save_model()
    in_memory = trainer.reward_model().score(test["prompt"], test["chosen"])
    reloaded = RewardModel.from_pretrained(tmp_path / "out", quantization="4bit")
    assert reloaded.score(test["prompt"], test["chosen"]) == pytest.approx(in_memory, abs=1e-5)


def test_lora_adapter_folder_holds_the_trained_head_and_reloads_identically(tiny_model_dir, tmp_path):
    from safetensors import safe_open

    train, test = held_out_split(separable_preference_rows(32))
    trainer = RewardTrainer(tiny_model_dir, args=config(tmp_path, use_peft=True, num_train_epochs=1), train_dataset=train)
    trainer.train()
    trainer.save_model()
    with safe_open(str(tmp_path / "out" / "adapter_model.safetensors"), "pt") as f:
        head = [key for key in f.keys() if key.endswith("score.weight")]
        assert head, "the scoring head was not saved with the adapter"
        saved_head = f.get_tensor(head[0])
    assert not torch.equal(saved_head, sequence_classifier(tiny_model_dir).score.weight)  # trained, not the init
    in_memory = trainer.reward_model().score(test["prompt"], test["chosen"])
    reloaded = RewardModel.from_pretrained(tmp_path / "out")
    assert reloaded.score(test["prompt"], test["chosen"]) == pytest.approx(in_memory, abs=1e-6)


def test_user_lora_config_without_task_type_still_trains_and_saves_the_head(tiny_model_dir, tmp_path):
    from peft import LoraConfig

    trainer = RewardTrainer(tiny_model_dir, args=config(tmp_path, max_steps=1), train_dataset=Dataset.from_list(separable_preference_rows(8)),
                            peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    head = trainer.model.base_model.model.score
    assert "score" in trainer.model.peft_config["default"].modules_to_save
    assert all(p.requires_grad for p in head.modules_to_save["default"].parameters())


def test_encoder_minilm_reward_model_learns_from_its_cls_projection(tmp_path):
    from prefkit.models import DEFAULT_ENCODER

    train, test = held_out_split(separable_preference_rows(48))
    trainer = RewardTrainer(DEFAULT_ENCODER, args=config(tmp_path, learning_rate=1e-4, num_train_epochs=2), train_dataset=train,
                            eval_dataset=test)
    assert type(trainer.model).__name__ == "BertForSequenceClassification"
    trainer.train()
    assert trainer.reward_evaluation["eval"]["accuracy"] > 0.9
    assert trainer.reward_model().input_format == "pair"


def test_trainer_gives_a_tokenizer_without_pad_token_one_and_mirrors_it_onto_the_model(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    model = sequence_classifier(tiny_model_dir)
    model.config.pad_token_id = None
    trainer = RewardTrainer(model, args=config(tmp_path), train_dataset=Dataset.from_list(separable_preference_rows(4)),
                            processing_class=tokenizer)
    assert tokenizer.pad_token_id is not None
    assert trainer.model.config.pad_token_id == tokenizer.pad_token_id


# -- bad input -------------------------------------------------------------------------------------------------------


def test_bad_rows_are_reported_before_the_model_is_loaded(tmp_path):
    rows = separable_preference_rows(3)
    rows[1]["chosen"] = ""
    rows[2]["rejected"] = rows[2]["chosen"]
    with pytest.raises(PreferenceDataError) as error:
        RewardTrainer(str(tmp_path / "no-such-model"), args=config(tmp_path), train_dataset=Dataset.from_list(rows))
    assert error.value.bad_rows == [1, 2]


def test_margin_missing_on_some_rows_is_reported_with_row_numbers(tmp_path):
    rows = with_margins(separable_preference_rows(4))
    rows[2]["margin"] = None
    with pytest.raises(PreferenceDataError, match="row 2, column 'margin'"):
        RewardTrainer(str(tmp_path / "no-such-model"), args=config(tmp_path), train_dataset=Dataset.from_list(rows))


def test_a_plain_trl_config_is_accepted_as_full_fine_tuning(tiny_model_dir, tmp_path):
    trainer = RewardTrainer(tiny_model_dir, args=config(tmp_path, cls=trl.RewardConfig),
                            train_dataset=Dataset.from_list(separable_preference_rows(4)))
    assert not hasattr(trainer.model, "peft_config")  # TRL's default: all weights train
    assert trainer.model.config.pad_token_id == trainer.processing_class.pad_token_id


def test_quantization_of_an_already_loaded_model_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="only applies when the model is given by name"):
        RewardTrainer(sequence_classifier(tiny_model_dir), args=config(tmp_path, quantization="4bit"),
                      train_dataset=Dataset.from_list(separable_preference_rows(4)))
