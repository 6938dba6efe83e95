r"""Reward modeling: TRL's trainer with the Bradley-Terry loss from :mod:`prefkit.losses`, QLoRA, and an evaluation
written at the end.

``prefkit.RewardTrainer`` is a drop-in ``trl.RewardTrainer``: same dataset columns (``prompt``/``chosen``/
``rejected``, standard or conversational, optional ``margin``), same config fields (``center_rewards_coefficient``,
``max_length`` ...), same logged metrics (``accuracy``, ``margin``, ``min_reward``, ``mean_reward``,
``max_reward``, ``num_tokens``). The loss is :func:`prefkit.losses.bradley_terry_loss`,

.. math:: \mathcal{L} = -\log \sigma\big(r(x, y_w) - r(x, y_l) - m\big) \; [+\, c\,\mathbb{E}[(r_w + r_l)^2]]

What it adds:

- ``model`` may be a name, loaded as ``AutoModelForSequenceClassification(num_labels=1)`` with ``args.quantization``
  (4-bit QLoRA) and ``args.use_peft``; decoders (the score is read at the last token) and BERT-family encoders
  (read from the [CLS] projection) are both supported;
- the pad token is always set and mirrored onto the model config, and under LoRA the scoring head
  (``score``/``classifier``) is trained and saved with the adapter;
- pairs are tokenized by :func:`prefkit.reward_model.encode_reward_input`, the function
  :class:`prefkit.RewardModel` scores with, so a trained model is scored on what it saw. For decoders this is
  token for token what TRL produces, for conversational and standard-format pairs alike (``chat_template_for_text``
  renders standard-format pairs through the chat template instead, as TRL would render the same pairs given as
  messages); the choice is saved with the model (``prefkit_reward.json``) and :class:`prefkit.RewardModel` follows
  it;
- prefix-shared pairs (``prefix_sharing``, on by default): each pair's common first tokens (the prompt) are computed
  once, the rejected sequence attending to them and to itself only (:mod:`prefkit.prefix_sharing`); the rewards are
  the unshared ones to float tolerance. Encoders and models whose attention cannot take a 4D mask run unshared, said
  once;
- the datasets are validated row by row before anything is loaded, and dropped over-long pairs are counted;
- at the end of training the held-out pairs are scored and ``reward_eval.json`` and ``reward_distributions.png``
  (chosen vs rejected rewards) are written to ``output_dir``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import trl

from ..data.validation import validate_unless_tokenized
from ..hub import ModelCardMixin
from ..losses import bradley_terry_loss
from ..models import context_length
from ..prefix_sharing import add_reward_prefix_sharing, reward_prefix_sharing_unsupported_reason
from ..reward_model import RewardModel, encode_reward_input, no_cpu_weight_packing, write_reward_input_record
from ..memory_plan import MemoryBudgetArguments
from .batching import PADDING_FREE_HELP, LengthGroupedPairsMixin, prefix_sharing_switch, reward_row_lengths
from .startup import (QLoRAArguments, attach_memory_plan, check_before_loading, load_for_training, named_datasets,
                      plan_memory_before_loading)

logger = logging.getLogger(__name__)


@dataclass
class RewardConfig(trl.RewardConfig, QLoRAArguments, MemoryBudgetArguments):
    r"""``trl.RewardConfig`` plus prefkit's model loading fields (:class:`~prefkit.trainers.startup.QLoRAArguments`).

    Every TRL field keeps its meaning; ``bf16`` defaults to on only where the hardware supports it.

    Parameters:
        quantization (`str`, *optional*): ``"4bit"`` (QLoRA) or ``"8bit"``; applies when ``model`` is a name.
        use_peft (`bool`, *optional*): train a LoRA adapter (default: on when ``quantization`` is set). The scoring
            head is always trained fully and saved with the adapter.
        lora_r, lora_alpha, lora_dropout, lora_target_modules, lora_modules_to_save: the LoRA adapter.
        final_evaluation (`bool`, *optional*, defaults to `True`): at the end of :meth:`RewardTrainer.train`, score
            the eval pairs and write ``reward_eval.json`` and ``reward_distributions.png`` to ``output_dir``.
        prefix_sharing (`bool`, *optional*, defaults to `True`): compute each pair's common first tokens once.
        padding_free (`bool`, *optional*, defaults to `False`): pack the micro-batch's prefix-shared pairs into one
            row, no padding, same results (:mod:`prefkit.trainers.batching`); ``train_sampling_strategy=
            "group_by_length"`` batches pairs of similar lengths instead (TRL's trainers cannot measure their rows).
        memory_budget (`str`, *optional*, defaults to `"auto"`): memory per device (``"24GiB"``) to plan the micro-batch
            and gradient checkpointing for before the model loads (:mod:`prefkit.memory_plan`); ``"auto"``: the CUDA
            device's memory, nothing planned on CPU; ``"off"``.
    """

    final_evaluation: bool = field(
        default=True,
        metadata={
            "help": "At the end of training, score the eval pairs and write reward_eval.json (accuracy, mean margin) "
            "and reward_distributions.png (chosen vs rejected rewards) to output_dir."
        },
    )

    chat_template_for_text: bool = field(
        default=False,
        metadata={
            "help": "Render standard-format pairs (plain-string prompt and answers) through the tokenizer's chat "
            "template as a user and an assistant turn. Default: as trl.RewardTrainer, prompt + answer + EOS as text. "
            "Saved with the model; RewardModel scores the same way."
        },
    )

    prefix_sharing: bool = field(
        default=True,
        metadata={
            "help": "Run each pair's common first tokens (the prompt) once: chosen and rejected become one sequence, "
            "the rejected part masked from the chosen one. Same rewards as the unshared batch to float tolerance. "
            "Encoders and models whose attention cannot take a 4D mask run unshared, with one warning."
        },
    )

    padding_free: bool = field(default=False, metadata={"help": PADDING_FREE_HELP})

    def __post_init__(self):
        self._apply_prefkit_defaults()
        self._check_memory_budget()
        prefix_sharing_switch(self)  # padding_free needs prefix_sharing: say so before any model loads
        super().__post_init__()


class RewardTrainer(ModelCardMixin, LengthGroupedPairsMixin, trl.RewardTrainer):
    """``trl.RewardTrainer`` that also takes a model name with QLoRA settings, validates data first, computes the loss
    with :func:`prefkit.losses.bradley_terry_loss` and evaluates at the end.

    Example::

        from prefkit import RewardConfig, RewardTrainer

        args = RewardConfig(output_dir="smollm2-rm", quantization="4bit", learning_rate=1e-4)
        trainer = RewardTrainer("HuggingFaceTB/SmolLM2-135M-Instruct", args=args, train_dataset=train, eval_dataset=test)
        trainer.train()                      # writes smollm2-rm/reward_eval.json and reward_distributions.png
        reward_model = trainer.reward_model()   # scores (prompt, response) pairs; .as_reward_func() for GRPO
    """

    _tag_names = ["trl", "reward-trainer", "prefkit"]
    _card_method = "reward-model"
    _pair_lengths = staticmethod(reward_row_lengths)
    _card_pipeline_tag = "text-classification"

    def __init__(
        self,
        model: Any = None,
        args: trl.RewardConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        optimizer_cls_and_kwargs=None,
        preprocess_logits_for_metrics=None,
        quantization_config=None,
        peft_config=None,
    ):
        # Bad data fails before minutes of model loading. A plain trl.RewardConfig works too: no quantization, no LoRA.
        args = check_before_loading(
            model, args, config_class=RewardConfig, method="Reward", train_dataset=train_dataset,
            eval_dataset=eval_dataset, validate=lambda data, name: validate_unless_tokenized(data, name, uses_margin=True),
        )
        memory_plan = plan_memory_before_loading(model, args, "Reward", train_dataset=train_dataset,
                                                 peft_config=peft_config, quantization_config=quantization_config)
        # Kept untokenized for the evaluation at the end (scored through RewardModel, like any user would).
        self._evaluation_pairs = eval_dataset
        # The tokenizer gets a pad token whose id the model shares: a reward model that reads a pad position instead
        # of the last real token scores every batch wrong, and accuracy stalls at 50%.
        model, processing_class, peft_config = load_for_training(
            model, args, task="sequence-classification", processing_class=processing_class,
            quantization_config=quantization_config, peft_config=peft_config,
        )
        quantization_config = None  # applied at load time above
        if peft_config is not None:
            _save_head_with_adapter(peft_config, model)
        # Over-long pairs would overflow an encoder's position embeddings (512 for BERT): cap the filter there.
        self._length_limit = _effective_max_length(args.max_length, model, processing_class)
        self._prefix_sharing = prefix_sharing_switch(args)
        self._prefix_sharing_installed = False

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
        self._match_trainable_dtype_to_compute()
        attach_memory_plan(self, memory_plan)
        self.reward_evaluation: dict[str, dict[str, Any]] = {}

    # -- data ----------------------------------------------------------------------------------------------------

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        columns = _column_names(dataset)
        if not ("chosen_ids" in columns and "rejected_ids" in columns) and "chosen_input_ids" not in columns:
            dataset = _tokenize_pairs(dataset, processing_class, args, dataset_name)
        before = len(dataset) if hasattr(dataset, "__len__") else None
        limit = getattr(self, "_length_limit", args.max_length)
        original_max_length, args.max_length = args.max_length, limit
        try:
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)  # TRL filters by length
        finally:
            args.max_length = original_max_length
        if before is not None and hasattr(dataset, "__len__") and len(dataset) < before:
            logger.warning(
                "%s: dropped %d of %d pairs longer than %d tokens (raise --max_length to keep them).",
                dataset_name, before - len(dataset), before, limit,
            )
            if len(dataset) == 0:
                raise ValueError(f"{dataset_name}: every pair is longer than max_length={limit} tokens; raise max_length.")
        return dataset

    # -- loss ----------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        inputs = dict(inputs)
        margin = inputs.pop("margin", None)
        # The collator stacks the chosen sequences first, then the rejected ones.
        with self._prefix_sharing_on():
            outputs = model(**inputs, use_cache=False)
        rewards = outputs.logits.squeeze(-1)
        chosen_rewards, rejected_rewards = torch.chunk(rewards, chunks=2)
        loss = bradley_terry_loss(
            chosen_rewards,
            rejected_rewards,
            margin=margin,
            center_rewards_coefficient=self.args.center_rewards_coefficient,
        )
        self._record_reward_metrics(mode, inputs["attention_mask"], rewards, chosen_rewards, rejected_rewards)
        return (loss, outputs) if return_outputs else loss

    def _prefix_sharing_on(self):
        """A context in which the model's pair-stacked forward runs prefix-shared (installed on first use)."""
        switch = self._prefix_sharing
        if switch is None:
            return contextlib.nullcontext()
        if not self._prefix_sharing_installed:
            self._prefix_sharing_installed = True
            from peft import PeftModel

            peft_model = self.model if isinstance(self.model, PeftModel) else None
            base = peft_model.get_base_model() if peft_model is not None else self.model
            reason = reward_prefix_sharing_unsupported_reason(base, peft_model=peft_model)
            if reason is None:
                add_reward_prefix_sharing(base, switch)
            else:
                logger.warning("prefix_sharing: the reward model runs unshared pairs because %s (same results, no "
                               "speed-up). Set prefix_sharing=False to silence this.", reason)
        return switch.on()

    @torch.no_grad()
    def _record_reward_metrics(self, mode, attention_mask, rewards, chosen_rewards, rejected_rewards) -> None:
        """TRL's reward metrics under TRL's names, averaged over processes."""
        metrics = self._metrics[mode]
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(attention_mask.sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        every_reward = self.accelerator.gather(rewards.detach())
        metrics["min_reward"].append(every_reward.min().item())
        metrics["mean_reward"].append(every_reward.float().mean().item())
        metrics["max_reward"].append(every_reward.max().item())
        accuracy = (chosen_rewards > rejected_rewards).float().mean()
        metrics["accuracy"].append(self.accelerator.gather_for_metrics(accuracy).mean().item())
        margin = (chosen_rewards - rejected_rewards).float().mean()
        metrics["margin"].append(self.accelerator.gather_for_metrics(margin).mean().item())

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Evaluation must not repack 4-bit weights for bitsandbytes' CPU kernel: the repacking is undone only
        # approximately when the model is saved (see prefkit.reward_model.no_cpu_weight_packing).
        with no_cpu_weight_packing(model):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    # -- after training ------------------------------------------------------------------------------------------

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        if getattr(self.args, "final_evaluation", True) and self._evaluation_pairs is not None:
            self.write_reward_evaluation()
        return output

    def reward_model(self, batch_size: int | None = None, max_length: int | None = None) -> RewardModel:
        """A :class:`~prefkit.RewardModel` over the model being trained (scores pairs; ``as_reward_func()``)."""
        model = self.accelerator.unwrap_model(self.model)
        return RewardModel(
            model,
            self.processing_class,
            batch_size=batch_size or self.args.per_device_eval_batch_size,
            max_length=max_length or self._length_limit,
            chat_template_for_text=_chat_template_for_text(self.args),
        )

    def _save_files(self, output_dir: str | None = None, state_dict=None):
        output = super()._save_files(output_dir, state_dict=state_dict)
        if self.args.should_save:
            write_reward_input_record(output_dir or self.args.output_dir, _chat_template_for_text(self.args))
        return output

    def write_reward_evaluation(self, pairs=None, output_dir: str | os.PathLike | None = None) -> dict[str, Any]:
        """Score held-out pairs (default: the eval dataset), log accuracy and mean margin, and write
        ``reward_eval.json`` + ``reward_distributions.png`` to ``output_dir`` (default ``args.output_dir``).

        Runs on the main process. Skipped under sharded training (DeepSpeed ZeRO-3, FSDP), where one process does
        not hold the whole model: run ``prefkit reward-eval`` on the saved model instead.
        """
        from ..evaluation import evaluate_reward_model, format_summary, write_reward_evaluation

        if self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3 or self.is_fsdp_enabled:
            logger.warning("Final reward evaluation skipped under sharded training; run `prefkit reward-eval` instead.")
            return {}
        if not self.is_world_process_zero():
            return {}
        output_dir = Path(output_dir or self.args.output_dir)
        scorer = self.reward_model()
        results: dict[str, Any] = {}
        for split_name, dataset in named_datasets(pairs if pairs is not None else self._evaluation_pairs, "eval"):
            if "chosen_ids" in _column_names(dataset):
                logger.info("%s is already tokenized; the final evaluation needs text pairs, skipping it.", split_name)
                continue
            result = evaluate_reward_model(scorer, dataset, batch_size=self.args.per_device_eval_batch_size)
            suffix = "" if split_name == "eval" else "_" + split_name.split("[")[-1].strip("'\"]")
            json_path, png_path = write_reward_evaluation(result, output_dir, name=f"reward{suffix}")
            self.accelerator.print(
                f"Reward model {split_name}: {format_summary(result)}\n  wrote {json_path} and {png_path}"
            )
            results[split_name] = result
        self.reward_evaluation = results
        return results

    def card_hyperparameters(self) -> dict[str, Any]:
        return {
            "max_length": self.args.max_length,
            "center_rewards_coefficient": self.args.center_rewards_coefficient,
            **super().card_hyperparameters(),
        }

    # -- internals -----------------------------------------------------------------------------------------------

    def _match_trainable_dtype_to_compute(self) -> None:
        """TRL casts QLoRA's trainable weights (adapters and the scoring head) to bf16, which only works under bf16
        autocast. Without it (CPU, fp16 or fp32 training) the float32 hidden states meet a bf16 head and the forward
        fails, so there they go back to float32."""
        from ..models import is_quantized

        if not is_quantized(self.model) or self.args.bf16:
            return
        for parameter in self.model.parameters():
            if parameter.requires_grad and parameter.dtype == torch.bfloat16:
                parameter.data = parameter.data.to(torch.float32)


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def _column_names(dataset) -> list[str]:
    columns = getattr(dataset, "column_names", None)
    if columns is None:  # IterableDataset without features
        columns = list(next(iter(dataset)).keys())
    return list(columns)


def _chat_template_for_text(args) -> bool:
    """``RewardConfig.chat_template_for_text``; a plain ``trl.RewardConfig`` tokenizes as TRL does (off)."""
    return bool(getattr(args, "chat_template_for_text", False))


def _tokenize_pairs(dataset, tokenizer, args, dataset_name: str):
    """``chosen_ids``/``rejected_ids`` through :func:`encode_reward_input`, the layout :class:`RewardModel` scores."""
    kwargs_for_all = {"chat_template_for_text": _chat_template_for_text(args)}

    def tokenize(example):
        tools = example.get("tools")
        if isinstance(tools, str):
            tools = json.loads(tools)
        kwargs = dict(tools=tools, chat_template_kwargs=example.get("chat_template_kwargs"), **kwargs_for_all)
        prompt = example.get("prompt")
        return {
            "chosen_ids": encode_reward_input(tokenizer, prompt, example["chosen"], **kwargs),
            "rejected_ids": encode_reward_input(tokenizer, prompt, example["rejected"], **kwargs),
        }

    map_kwargs: dict[str, Any] = {}
    if hasattr(dataset, "__len__"):  # IterableDataset.map takes neither
        map_kwargs = {"num_proc": args.dataset_num_proc, "desc": f"Tokenizing {dataset_name} dataset"}
    return dataset.map(tokenize, **map_kwargs)


def _effective_max_length(max_length: int | None, model, tokenizer) -> int | None:
    limit = context_length(model, tokenizer)
    if limit is None:
        return max_length
    return limit if max_length is None else min(max_length, limit)


def _head_module_names(model) -> list[str]:
    """Names of the scoring head of a sequence classifier (``score`` for decoders, ``classifier`` for encoders)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return [name for name in ("score", "classifier") if isinstance(getattr(base, name, None), torch.nn.Module)]


def _save_head_with_adapter(peft_config, model) -> None:
    """Make sure LoRA trains and saves the freshly initialised scoring head: without it the adapter reloads on a new
    random head and the reward model is lost (TRL only recommends ``modules_to_save=["score"]``)."""
    from peft import TaskType

    if getattr(peft_config, "task_type", None) is None:
        peft_config.task_type = TaskType.SEQ_CLS
    if peft_config.task_type in (TaskType.SEQ_CLS, "SEQ_CLS"):
        return  # PeftModelForSequenceClassification adds "score" and "classifier" to modules_to_save itself
    if hasattr(peft_config, "modules_to_save"):
        modules = list(peft_config.modules_to_save or [])
        peft_config.modules_to_save = modules + [head for head in _head_module_names(model) if head not in modules]
