"""Prefix-shared pairs compute what TRL's unshared batch computes: per-token log-probs, DPO loss, gradients, a step."""

import logging

import pytest
import torch
from datasets import Dataset

from prefkit import DPOConfig, DPOTrainer
from prefkit.prefix_sharing import (
    PrefixSharingSwitch,
    add_prefix_sharing,
    prefix_sharing_unsupported_reason,
    share_pair_prefixes,
)

PER_TOKEN = ("log_probs", "entropy", "mean_logits", "is_top1", "log_sum_sq_probs", "label_mask")


def _ragged_rows(conversational: bool) -> list[dict]:
    """Prompts and answers of different lengths in every pair, a system prompt in some conversational rows."""
    prompts = ["Hi.", "Tell me about the sea and the river in the morning, please.", "What is the capital of France?",
               "Write a short poem about tea.", "Suggest a new activity I could do with my teddy bear today.", "No?"]
    chosen = ["Paris.", "The sea is wide and blue, it sings the whole day through, and the river runs to it.",
              "Boil water, pour it over the tea bag, wait three minutes.", "Yes!", "Read it a bedtime story.",
              "You could have a picnic with your teddy bear in the garden."]
    rejected = ["No. Figure it out yourself, I am not going to help you with that at all.", "No.", "Maybe.",
                "I would suggest you do not spend much time with your teddy bear at all.", "Sorry.", "Bad."]
    rows = []
    for i, (prompt, good, bad) in enumerate(zip(prompts, chosen, rejected)):
        if conversational:
            messages = [{"role": "user", "content": prompt}]
            if i % 2:
                messages.insert(0, {"role": "system", "content": "You are kind and helpful."})
            rows.append({"prompt": messages, "chosen": [{"role": "assistant", "content": good}],
                         "rejected": [{"role": "assistant", "content": bad}]})
        else:
            rows.append({"prompt": prompt, "chosen": " " + good, "rejected": " " + bad})
    return rows


def _values(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=6, per_device_eval_batch_size=6, max_steps=1,
                  learning_rate=1e-2, report_to="none", save_strategy="no", gradient_checkpointing=False,
                  disable_tqdm=True, seed=0, bf16=False, max_length=128, logging_steps=1)
    values.update(overrides)
    return values


def _config(tmp_path, **overrides):
    return DPOConfig(**_values(tmp_path, **overrides))


def _perturb_lora(trainer, seed: int = 0) -> None:
    """LoRA starts as the identity (B = 0), so policy == reference; random B makes the two passes differ."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in sorted(trainer.model.named_parameters()):
        if "lora_B" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.1


def _loss_and_gradients(trainer):
    """One batch through the trainer's loss: the loss, the logged metrics and every trainable parameter's gradient."""
    trainer.model.train()
    trainer.model.zero_grad()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    gradients = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    return loss.detach(), metrics, gradients


def _assert_same(shared, unshared):
    shared_loss, shared_metrics, shared_gradients = shared
    loss, metrics, gradients = unshared
    assert shared_loss.item() == pytest.approx(loss.item(), rel=1e-5, abs=1e-6)
    for key in ("logps/chosen", "logps/rejected", "rewards/chosen", "rewards/rejected", "rewards/margins",
                "entropy", "logits/chosen", "logits/rejected", "mean_token_accuracy", "num_tokens"):
        assert shared_metrics[key] == pytest.approx(metrics[key], rel=1e-5, abs=1e-5), key
    assert shared_gradients.keys() == gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(shared_gradients[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


# -- the shared forward, token by token ------------------------------------------------------------------------------


def _pair_stacked_batch(prompt_lengths, chosen_lengths, rejected_lengths, seed=0):
    """TRL's collator layout: rows 0..B-1 prompt|chosen, rows B..2B-1 prompt|rejected, right-padded."""
    generator = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, 500, (n,), generator=generator).tolist() for n in prompt_lengths]
    rows, answer_masks = [], []
    for answer_lengths in (chosen_lengths, rejected_lengths):
        for prompt, n in zip(prompts, answer_lengths):
            rows.append(prompt + torch.randint(3, 500, (n,), generator=generator).tolist())
            answer_masks.append([0] * len(prompt) + [1] * n)
    width = max(len(row) for row in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    answer_mask = torch.zeros_like(input_ids)
    for i, (row, answer) in enumerate(zip(rows, answer_masks)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        answer_mask[i, : len(row)] = torch.tensor(answer)
    return input_ids, attention_mask, input_ids.masked_fill(answer_mask == 0, -100)


@pytest.mark.parametrize("pack", [False, True], ids=["row-per-pair", "packed"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_forward_returns_every_per_token_output_of_the_unshared_one(tiny_model_dir, attention, pack):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention, dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1", "log_sum_sq_probs"))
    switch = PrefixSharingSwitch(pack=pack)
    add_prefix_sharing(model, switch)
    input_ids, attention_mask, labels = _pair_stacked_batch([5, 9, 1], [4, 2, 7], [6, 3, 1])
    call = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True, use_cache=False)

    unshared = model(**call)
    with switch.on():
        shared = model(**call)

    assert switch.shared_calls == 1
    assert int(unshared.label_mask.sum()) == 4 + 2 + 7 + 6 + 3 + 1
    for name in PER_TOKEN:
        torch.testing.assert_close(getattr(shared, name), getattr(unshared, name), rtol=1e-5, atol=1e-5, msg=name)


def test_shared_rows_hold_prompt_chosen_then_the_last_prompt_token_and_rejected():
    input_ids, attention_mask, labels = _pair_stacked_batch([3], [2], [1])
    shared = share_pair_prefixes(input_ids, attention_mask, labels)
    prompt, chosen, rejected = input_ids[0, :3].tolist(), input_ids[0, 3:5].tolist(), input_ids[1, 3:4].tolist()
    assert shared.input_ids.tolist() == [prompt + chosen + prompt[-1:] + rejected]
    assert shared.position_ids.tolist() == [[0, 1, 2, 3, 4, 2, 3]]
    assert shared.shift_labels.tolist() == [[-100, -100, chosen[0], chosen[1], -100, rejected[0], -100]]
    mask = shared.attention_mask[0, 0].int().tolist()
    assert mask[4] == [1, 1, 1, 1, 1, 0, 0]  # the last chosen token: prompt and chosen branch
    assert mask[6] == [1, 1, 0, 0, 0, 1, 1]  # the rejected token: prompt head and its own branch, not chosen


def test_batches_that_are_not_pairs_of_one_prompt_are_left_unshared():
    input_ids, attention_mask, labels = _pair_stacked_batch([4, 5], [2, 3], [3, 2])
    assert share_pair_prefixes(input_ids[:3], attention_mask[:3], labels[:3]) is None  # odd number of rows
    different_prompt = input_ids.clone()
    different_prompt[2, 0] += 1
    assert share_pair_prefixes(different_prompt, attention_mask, labels) is None
    assert share_pair_prefixes(input_ids, attention_mask.flip(1), labels) is None  # left padding
    no_prompt = labels.clone()
    no_prompt[:, 0] = input_ids[:, 0]
    assert share_pair_prefixes(input_ids, attention_mask, no_prompt) is None


# -- the trainer ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_dpo_loss_metrics_and_gradients_equal_trl_unshared(tiny_model_dir, tmp_path, conversational):
    import trl
    from transformers import AutoModelForCausalLM

    data = Dataset.from_list(_ragged_rows(conversational))
    shared = DPOTrainer(tiny_model_dir, args=_config(tmp_path / "shared"), train_dataset=data)
    trl_args = trl.DPOConfig(**_values(tmp_path / "trl"))
    theirs = trl.DPOTrainer(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), args=trl_args,
                            train_dataset=data, processing_class=shared.processing_class)
    # Policy != reference, so the log-ratios and the loss's gradient are not the trivial ones at the start.
    with torch.no_grad():
        for ours, trls in zip(shared.model.parameters(), theirs.model.parameters()):
            ours.add_(torch.randn(ours.shape, generator=torch.Generator().manual_seed(ours.numel())) * 0.02)
            trls.copy_(ours)

    _assert_same(_loss_and_gradients(shared), _loss_and_gradients(theirs))
    assert shared._prefix_sharing.shared_calls == 2  # the policy pass and the reference pass
    assert shared._prefix_sharing.unshared_calls == 0


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_lora_dpo_shares_the_adapter_disabled_reference_pass_too(tiny_model_dir, tmp_path, conversational):
    data = Dataset.from_list(_ragged_rows(conversational))
    lora = dict(use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    shared = DPOTrainer(tiny_model_dir, args=_config(tmp_path / "a", **lora), train_dataset=data)
    unshared = DPOTrainer(tiny_model_dir, args=_config(tmp_path / "b", prefix_sharing=False, **lora), train_dataset=data)
    _perturb_lora(shared)
    _perturb_lora(unshared)

    result = _loss_and_gradients(shared)
    _assert_same(result, _loss_and_gradients(unshared))
    assert result[1]["rewards/margins"] != 0.0  # the reference pass differs from the policy pass
    assert shared._prefix_sharing.shared_calls == 2
    assert unshared._prefix_sharing is None


def test_training_steps_give_the_parameters_of_the_unshared_trainer(tiny_model_dir, tmp_path):
    # SGD, because Adam divides each gradient by its own magnitude: a gradient of 1e-10 (float noise on a token the
    # batch barely touches) then moves a weight by about the learning rate in either run, whatever the method.
    data = Dataset.from_list(_ragged_rows(conversational=True) + _ragged_rows(conversational=True)[::-1])
    runs = {}
    for sharing in (True, False):
        trainer = DPOTrainer(tiny_model_dir, args=_config(tmp_path / str(sharing), max_steps=2, optim="sgd",
                                                            learning_rate=0.5, prefix_sharing=sharing),
                             train_dataset=data)
        trainer.train()
        runs[sharing] = trainer
    before = DPOTrainer(tiny_model_dir, args=_config(tmp_path / "untrained"), train_dataset=data).model
    moved = False
    for (name, shared), unshared, initial in zip(runs[True].model.named_parameters(), runs[False].model.parameters(),
                                                 before.parameters()):
        torch.testing.assert_close(shared, unshared, rtol=1e-5, atol=1e-6, msg=name)
        moved |= not torch.equal(shared, initial)
    assert moved
    losses = {s: [e["loss"] for e in t.state.log_history if "loss" in e] for s, t in runs.items()}
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_prefix_sharing_is_on_by_default_and_can_be_turned_off():
    assert DPOConfig(output_dir="x", report_to="none").prefix_sharing is True
    assert DPOConfig(output_dir="x", report_to="none", prefix_sharing=False).prefix_sharing is False


def test_pairs_whose_prompts_were_truncated_differently_run_unshared_with_the_same_loss(tiny_model_dir, tmp_path):
    # keep_end keeps each sequence's end, so a long prompt loses a different number of tokens before its chosen and
    # its rejected answer: the two rows no longer share a prompt.
    data = Dataset.from_list(_ragged_rows(conversational=False))
    overrides = dict(max_length=16, truncation_mode="keep_end")
    shared = DPOTrainer(tiny_model_dir, args=_config(tmp_path / "a", **overrides), train_dataset=data)
    unshared = DPOTrainer(tiny_model_dir, args=_config(tmp_path / "b", prefix_sharing=False, **overrides),
                          train_dataset=data)
    _assert_same(_loss_and_gradients(shared), _loss_and_gradients(unshared))
    assert shared._prefix_sharing.unshared_calls == 2
    assert shared._prefix_sharing.shared_calls == 0


# -- models that cannot take a 4D mask -----------------------------------------------------------------------------


def _tiny_sliding_window_model(folder, tokenizer):
    """A real architecture whose attention a custom 4D mask would change: Mistral with a 4-token sliding window."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=4, sliding_window=4,
                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    MistralForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_sliding_window_model_falls_back_to_trl_pairs_and_says_so(tiny_tokenizer, tmp_path, caplog):
    folder = _tiny_sliding_window_model(tmp_path / "mistral", tiny_tokenizer)
    data = Dataset.from_list(_ragged_rows(conversational=False))
    shared = DPOTrainer(folder, args=_config(tmp_path / "a"), train_dataset=data)
    unshared = DPOTrainer(folder, args=_config(tmp_path / "b", prefix_sharing=False), train_dataset=data)
    with caplog.at_level(logging.WARNING, logger="prefkit.trainers.dpo"):
        result = _loss_and_gradients(shared)
        _loss_and_gradients(shared)
    _assert_same(result, _loss_and_gradients(unshared))
    warnings = [r.getMessage() for r in caplog.records if "prefix_sharing" in r.getMessage()]
    assert len(warnings) == 1 and "MistralForCausalLM" in warnings[0] and "sliding" in warnings[0]
    assert shared._prefix_sharing.shared_calls == 0


def test_unsupported_attention_implementations_are_named(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert prefix_sharing_unsupported_reason(model) is None
    model.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in prefix_sharing_unsupported_reason(model)


# -- reward models ---------------------------------------------------------------------------------------------------


def _reward_trainer(folder, tmp_path, rows, **overrides):
    from transformers import AutoModelForSequenceClassification

    from prefkit import RewardConfig, RewardTrainer

    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=6, per_device_eval_batch_size=6, max_steps=1,
                  learning_rate=1e-3, report_to="none", save_strategy="no", gradient_checkpointing=False,
                  disable_tqdm=True, seed=0, bf16=False, use_cpu=True, final_evaluation=False, logging_steps=1)
    values.update(overrides)
    torch.manual_seed(0)  # the same random scoring head for every trainer
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    return RewardTrainer(model, args=RewardConfig(**values), train_dataset=Dataset.from_list(rows))


def _reward_loss_and_gradients(trainer):
    trainer.model.train()
    trainer.model.zero_grad()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    return loss.detach(), outputs.logits.detach(), gradients


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_reward_scores_loss_and_gradients_equal_the_unshared_batch(tiny_model_dir, tmp_path, conversational, lora):
    rows = [{**row, "margin": float(i % 3)} for i, row in enumerate(_ragged_rows(conversational))]
    adapter = dict(use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.0) if lora else {}
    shared = _reward_trainer(tiny_model_dir, tmp_path / "a", rows, **adapter)
    unshared = _reward_trainer(tiny_model_dir, tmp_path / "b", rows, prefix_sharing=False, **adapter)
    if lora:
        _perturb_lora(shared)
        _perturb_lora(unshared)

    loss, rewards, gradients = _reward_loss_and_gradients(shared)
    expected_loss, expected_rewards, expected_gradients = _reward_loss_and_gradients(unshared)
    assert shared._prefix_sharing.shared_calls == 1
    torch.testing.assert_close(rewards, expected_rewards, rtol=1e-5, atol=1e-5)
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
    assert gradients.keys() == expected_gradients.keys()
    for name, gradient in expected_gradients.items():
        torch.testing.assert_close(gradients[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_reward_rows_share_their_longest_common_prefix():
    from prefkit.prefix_sharing import share_common_prefixes

    input_ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 3, 0, 0]])
    shared = share_common_prefixes(input_ids, (input_ids != 0).long())
    assert shared.input_ids.tolist() == [[5, 6, 7, 8, 9, 6, 3]]
    assert shared.position_ids.tolist() == [[0, 1, 2, 3, 4, 1, 2]]
    assert shared.flat_index[1, :3].tolist() == [0, 5, 6]  # the rejected row's head is the chosen row's
    assert share_common_prefixes(torch.tensor([[5, 6], [4, 6]]), torch.ones(2, 2, dtype=torch.long)) is None


def test_encoders_are_not_prefix_shared():
    from transformers import BertConfig, BertForSequenceClassification

    from prefkit.prefix_sharing import reward_prefix_sharing_unsupported_reason

    encoder = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=32, num_labels=1,
                                                       pad_token_id=0))
    assert "not a causal decoder" in reward_prefix_sharing_unsupported_reason(encoder)
