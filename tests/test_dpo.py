"""prefkit.DPOTrainer: parity with trl.DPOTrainer, learning, QLoRA on CPU, the LoRA reference, implicit reward."""

import math

import pytest
import torch
from datasets import Dataset

from prefkit import DPOConfig, DPOTrainer, ImplicitReward
from prefkit.logprobs import completion_logps
from prefkit.losses import dpo_loss
from prefkit.models import parameter_storage
from helpers import separable_preference_rows


def _values(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
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


def _config(tmp_path, **overrides):
    return DPOConfig(**_values(tmp_path, **overrides))


def _logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def test_same_loss_and_metrics_as_trl_dpo_trainer_after_an_update(tiny_model_dir, tiny_tokenizer, tmp_path):
    import trl
    from transformers import AutoModelForCausalLM

    data = Dataset.from_list(separable_preference_rows(16))
    ours = DPOTrainer(tiny_model_dir, args=_config(tmp_path / "a"), train_dataset=data)
    ours.train()

    trl_args = trl.DPOConfig(**_values(tmp_path / "b"))
    theirs = trl.DPOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
        args=trl_args,
        train_dataset=data,
        processing_class=tiny_tokenizer,
    )
    theirs.train()

    # Step 1 is ln 2 for both (policy == reference); step 2 follows one optimizer update, so it checks data order,
    # tokenization, loss and optimizer all agree.
    for key in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"):
        assert _logged(ours, key) == pytest.approx(_logged(theirs, key), rel=1e-5, abs=1e-6), key
    assert _logged(ours, "loss")[0] == pytest.approx(math.log(2), abs=1e-6)
    assert _logged(ours, "loss")[1] != pytest.approx(math.log(2), abs=1e-4)


def test_tiny_model_learns_separable_preferences_with_lora(tiny_model_dir, tmp_path):
    data = Dataset.from_list(separable_preference_rows(32))
    args = _config(tmp_path, max_steps=30, learning_rate=5e-3, use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    trainer = DPOTrainer(tiny_model_dir, args=args, train_dataset=data)
    trainer.train()
    losses = _logged(trainer, "loss")
    accuracies = _logged(trainer, "rewards/accuracies")
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)
    assert losses[-1] < 0.3
    assert accuracies[-1] > 0.9


def test_trainer_loss_equals_dpo_loss_on_independently_computed_log_probs(tiny_model_dir, tmp_path):
    rows = separable_preference_rows(8, conversational=True)
    data = Dataset.from_list(rows)
    args = _config(tmp_path, max_steps=10, learning_rate=5e-3, use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    trainer = DPOTrainer(tiny_model_dir, args=args, train_dataset=data, eval_dataset=data)
    trainer.train()
    reported = trainer.evaluate()["eval_loss"]

    model = trainer.model.eval()
    tokenizer = trainer.processing_class
    prompts = [row["prompt"] for row in rows]
    chosen = [row["chosen"][0]["content"] for row in rows]
    rejected = [row["rejected"][0]["content"] for row in rows]
    policy_chosen = completion_logps(model, tokenizer, prompts, chosen)
    policy_rejected = completion_logps(model, tokenizer, prompts, rejected)
    with model.disable_adapter():
        ref_chosen = completion_logps(model, tokenizer, prompts, chosen)
        ref_rejected = completion_logps(model, tokenizer, prompts, rejected)
    independent = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=args.beta).loss.item()
    assert reported == pytest.approx(independent, rel=1e-4)
    assert reported < math.log(2) - 0.05  # trained, so the check is not the trivial ln 2


def test_implicit_reward_ranks_chosen_above_rejected_after_training(tiny_model_dir, tmp_path):
    data = Dataset.from_list(separable_preference_rows(32))
    args = _config(tmp_path, max_steps=20, learning_rate=5e-3, use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    trainer = DPOTrainer(tiny_model_dir, args=args, train_dataset=data)
    trainer.train()
    reward = trainer.implicit_reward()
    assert isinstance(reward, ImplicitReward)
    prompts = ["Tell me about a poem."] * 2
    good, bad = reward.score(prompts, ["Happy to help! Here is something kind and helpful about a poem.", "No. Figure it out yourself."])
    assert good > bad
    # TRL reward-function signature, as GRPOTrainer / RLOOTrainer call it.
    assert reward(prompts=prompts[:1], completions=["No. Figure it out yourself."]) == pytest.approx([bad], rel=1e-5)


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_implicit_reward_of_a_training_pair_is_the_reward_trl_logs_for_it(tiny_model_dir, tmp_path, conversational):
    # The tiny tokenizer has a chat template, so a standard-format row is where scoring could differ from training:
    # TRL trains on raw prompt + answer + EOS there, not on the template.
    rows = separable_preference_rows(8, conversational=conversational)
    data = Dataset.from_list(rows)
    args = _config(tmp_path, max_steps=10, learning_rate=5e-3, use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    trainer = DPOTrainer(tiny_model_dir, args=args, train_dataset=data, eval_dataset=data)
    trainer.train()
    logged = trainer.evaluate()
    prompts = [row["prompt"] for row in rows]
    chosen = [row["chosen"] if isinstance(row["chosen"], str) else row["chosen"][0]["content"] for row in rows]
    rejected = [row["rejected"] if isinstance(row["rejected"], str) else row["rejected"][0]["content"] for row in rows]
    reward = trainer.implicit_reward()
    chosen_rewards, rejected_rewards = reward.score(prompts, chosen), reward.score(prompts, rejected)
    assert sum(chosen_rewards) / 8 == pytest.approx(logged["eval_rewards/chosen"], rel=1e-4, abs=1e-6)
    assert sum(rejected_rewards) / 8 == pytest.approx(logged["eval_rewards/rejected"], rel=1e-4, abs=1e-6)
    assert abs(logged["eval_rewards/chosen"]) > 1e-3  # trained: not the trivial zero of an untouched adapter
    if not conversational:
        # Rendering the string prompts through the template scores other text than the model trained on.
        templated = ImplicitReward(trainer.model, trainer.processing_class, beta=args.beta, chat_template=True)
        assert sum(templated.score(prompts, chosen)) / 8 != pytest.approx(logged["eval_rewards/chosen"], rel=1e-3)


def test_lora_reference_is_the_disabled_adapter_not_a_second_copy(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    data = Dataset.from_list(separable_preference_rows(8))
    trainer = DPOTrainer(tiny_model_dir, args=_config(tmp_path, use_peft=True), train_dataset=data)
    assert trainer.ref_model is None
    held = {}
    for module in (trainer.model, trainer.ref_model):
        if module is not None:
            held.update(parameter_storage(module))
    adapter = {p.untyped_storage().data_ptr() for n, p in trainer.model.named_parameters() if "lora_" in n}
    base_bytes_held = sum(size for pointer, size in held.items() if pointer not in adapter)
    one_base = sum(parameter_storage(AutoModelForCausalLM.from_pretrained(tiny_model_dir)).values())
    assert base_bytes_held == one_base  # the base weights exist once: no reference copy

    # ... and the reference log-probs it computes are those of the untouched base model.
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    ref_chosen, _ = trainer.compute_ref_log_probs(trainer.model, batch)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        logits = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    token_logps = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    base_logps = (token_logps * (labels[:, 1:] != -100)).sum(1)
    assert ref_chosen.tolist() == pytest.approx(base_logps[:4].tolist(), rel=1e-5)


def test_qlora_trains_on_cpu_and_the_saved_adapter_reloads_with_plain_peft(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from prefkit.models import quantization_config

    data = Dataset.from_list(separable_preference_rows(16))
    args = _config(tmp_path, max_steps=8, learning_rate=5e-3, quantization="4bit", lora_r=8, lora_alpha=16, lora_dropout=0.0)
    trainer = DPOTrainer(tiny_model_dir, args=args, train_dataset=data)
    assert args.use_peft  # quantization implies an adapter
    trainer.train()
    losses = _logged(trainer, "loss")
    assert losses[-1] < losses[0]
    trainer.save_model(args.output_dir)

    prompts = ["Tell me about tea.", "Tell me about France."]
    answers = ["Happy to help! Here is something kind and helpful about tea.", "No. Figure it out yourself."]
    trained = completion_logps(trainer.model.eval(), trainer.processing_class, prompts, answers)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=quantization_config("4bit", torch.float32))
    reloaded = PeftModel.from_pretrained(base, args.output_dir).eval()
    again = completion_logps(reloaded, trainer.processing_class, prompts, answers)
    assert again.tolist() == pytest.approx(trained.tolist(), rel=1e-3)
    with reloaded.disable_adapter():
        untrained = completion_logps(reloaded, trainer.processing_class, prompts, answers)
    assert (again - untrained).abs().max() > 1e-2  # the adapter carries what was learned


def test_an_already_loaded_model_with_quantization_flag_is_refused(tiny_model, tmp_path):
    data = Dataset.from_list(separable_preference_rows(4))
    with pytest.raises(ValueError, match="only applies when the model is given by name"):
        DPOTrainer(tiny_model, args=_config(tmp_path, quantization="4bit"), train_dataset=data)


def test_a_plain_trl_config_is_accepted_as_full_fine_tuning(tiny_model_dir, tmp_path):
    import trl

    data = Dataset.from_list(separable_preference_rows(8))
    trainer = DPOTrainer(tiny_model_dir, args=trl.DPOConfig(**_values(tmp_path, max_steps=1)), train_dataset=data)
    assert not hasattr(trainer.model, "peft_config")
    assert trainer.ref_model is not None  # full fine-tuning needs a frozen copy, as in TRL
    trainer.train()
    assert _logged(trainer, "loss")[0] == pytest.approx(math.log(2), abs=1e-6)


def test_trl_style_quantization_config_with_a_model_name_gets_qlora(tiny_model_dir, tmp_path):
    from transformers import BitsAndBytesConfig

    from prefkit.models import is_quantized

    data = Dataset.from_list(separable_preference_rows(8))
    qconfig = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    trainer = DPOTrainer(tiny_model_dir, args=_config(tmp_path, max_steps=1), train_dataset=data, quantization_config=qconfig)
    assert is_quantized(trainer.model)
    assert hasattr(trainer.model, "peft_config")  # an adapter was added: quantized weights cannot train
    assert trainer.ref_model is None
