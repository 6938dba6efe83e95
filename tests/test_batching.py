"""Padding-free (packed) prefix-shared pairs compute what the padded batch computes, and group_by_length batches
tokenized preference pairs by the length of the row the model runs (TRL's trainers cannot measure it)."""

import logging

import pytest
import torch
from datasets import Dataset

from prefkit import DPOConfig, DPOTrainer, RewardConfig
from prefkit.trainers.batching import dpo_row_lengths, reward_row_lengths
from test_prefix_sharing import (
    _assert_same,
    _config,
    _loss_and_gradients,
    _perturb_lora,
    _ragged_rows,
    _reward_loss_and_gradients,
    _reward_trainer,
    _values,
)


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_packed_dpo_pairs_give_the_padded_batchs_loss_metrics_and_gradients(tiny_model_dir, tmp_path, conversational, caplog):
    data = Dataset.from_list(_ragged_rows(conversational))
    lora = dict(use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    with caplog.at_level(logging.WARNING):
        packed = DPOTrainer(tiny_model_dir, args=_config(tmp_path / "a", padding_free=True, **lora), train_dataset=data)
    padded = DPOTrainer(tiny_model_dir, args=_config(tmp_path / "b", prefix_sharing=False, **lora), train_dataset=data)
    _perturb_lora(packed)
    _perturb_lora(padded)

    result = _loss_and_gradients(packed)
    _assert_same(result, _loss_and_gradients(padded))
    assert result[1]["rewards/margins"] != 0.0
    assert packed._prefix_sharing.pack and packed._prefix_sharing.shared_calls == 2  # policy and reference, packed
    assert packed.args.padding_free is True  # what the user asked for is what the saved config says
    assert "temporarily unavailable" not in caplog.text  # TRL's own padding_free warning is not shown


def test_packed_reward_pairs_give_the_padded_batchs_scores_loss_and_gradients(tiny_model_dir, tmp_path):
    rows = _ragged_rows(conversational=False)
    packed = _reward_trainer(tiny_model_dir, tmp_path / "a", rows, padding_free=True)
    padded = _reward_trainer(tiny_model_dir, tmp_path / "b", rows, prefix_sharing=False)

    loss, rewards, gradients = _reward_loss_and_gradients(packed)
    expected_loss, expected_rewards, expected_gradients = _reward_loss_and_gradients(padded)
    assert packed._prefix_sharing.pack and packed._prefix_sharing.shared_calls == 1
    torch.testing.assert_close(rewards, expected_rewards, rtol=1e-5, atol=1e-5)
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
    for name, gradient in expected_gradients.items():
        torch.testing.assert_close(gradients[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("config_class", [DPOConfig, RewardConfig])
def test_padding_free_without_prefix_sharing_is_refused_when_the_config_is_built(config_class, tmp_path):
    with pytest.raises(ValueError, match="padding_free=True packs prefix-shared pairs, but prefix_sharing is False"):
        config_class(output_dir=str(tmp_path), report_to="none", padding_free=True, prefix_sharing=False)


def test_the_cli_says_padding_free_needs_prefix_sharing_in_one_error_line(capsys):
    from prefkit.cli import main as prefkit

    assert prefkit(["dpo", "--padding_free", "true", "--prefix_sharing", "false", "--output_dir", "out"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and "prefix_sharing" in err[0] and "Traceback" not in "".join(err)


def _varied_rows(count: int = 160) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    words = "tea sea poem river morning evening kind gentle quiet garden".split()

    def text(low, high):
        n = int(torch.randint(low, high, (1,), generator=generator))
        return " ".join(words[int(i)] for i in torch.randint(0, len(words), (n,), generator=generator))

    return [{"prompt": text(2, 40), "chosen": " " + text(1, 20), "rejected": " " + text(1, 20)} for _ in range(count)]


def _padding(batches, lengths) -> int:
    return sum(len(batch) * max(lengths[i] for i in batch) - sum(lengths[i] for i in batch) for batch in batches)


@pytest.mark.parametrize("trainer_kind", ["dpo", "reward"])
def test_group_by_length_batches_pairs_of_similar_row_lengths(tiny_model_dir, tmp_path, trainer_kind):
    rows = _varied_rows()
    if trainer_kind == "dpo":
        make = lambda folder, **kw: DPOTrainer(tiny_model_dir, args=_config(folder, per_device_train_batch_size=4, **kw),  # noqa: E731
                                               train_dataset=Dataset.from_list(rows))
        measure = dpo_row_lengths
    else:
        make = lambda folder, **kw: _reward_trainer(tiny_model_dir, folder, rows, per_device_train_batch_size=4, **kw)  # noqa: E731
        measure = reward_row_lengths
    grouped = make(tmp_path / "grouped", train_sampling_strategy="group_by_length")
    plain = make(tmp_path / "plain")
    lengths = measure(grouped.train_dataset, shared=True)
    assert len(set(lengths)) > 10  # the pairs really differ in length

    def batches(trainer):
        order = list(iter(trainer._get_train_sampler()))
        assert sorted(order) == list(range(len(trainer.train_dataset)))  # every pair once per epoch
        return [order[i:i + 4] for i in range(0, len(order), 4)]

    assert _padding(batches(grouped), lengths) < 0.5 * _padding(batches(plain), lengths)
    grouped.train()  # and it trains (TRL's own trainer stops: no 'input_ids' column to measure)
    assert [entry["loss"] for entry in grouped.state.log_history if "loss" in entry]


def test_trl_dpo_cannot_group_tokenized_pairs_by_length(tiny_model_dir, tmp_path):
    """Why the mixin exists: transformers' sampler looks for 'input_ids', which TRL's tokenized pairs do not have."""
    import trl
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    args = trl.DPOConfig(**_values(tmp_path / "trl", train_sampling_strategy="group_by_length",
                                   per_device_train_batch_size=4))
    trainer = trl.DPOTrainer(model, args=args, train_dataset=Dataset.from_list(_varied_rows(8)),
                             processing_class=DPOTrainer(tiny_model_dir, args=_config(tmp_path / "p"),
                                                         train_dataset=Dataset.from_list(_varied_rows(8))).processing_class)
    with pytest.raises(ValueError, match="input_ids"):
        trainer._get_train_sampler()
