"""DPO: TRL's trainer, with QLoRA in two flags, data checked before the model loads, and the implicit reward exposed.

``prefkit.DPOTrainer`` is a drop-in ``trl.DPOTrainer``: same dataset columns (standard or conversational, explicit
or implicit prompt), same loss types, same logged metrics (``rewards/chosen``, ``rewards/margins``,
``rewards/accuracies``, ``logps/chosen`` ...). What it adds:

- ``model`` may be a name, loaded with ``args.quantization`` (4-bit QLoRA) and ``args.use_peft`` / ``lora_*``;
- under LoRA the reference is the same base with the adapter disabled (no second copy of the weights);
- the datasets are validated row by row before anything is loaded (:mod:`prefkit.data.validation`);
- :meth:`DPOTrainer.implicit_reward` returns an :class:`ImplicitReward` that scores (prompt, response) pairs with
  β·log πθ(y|x)/πref(y|x), usable anywhere a reward function is (Best-of-N, judges, TRL's ``reward_funcs``);
- prefix-shared pairs (``prefix_sharing``, on by default): the prompt of each pair is computed once, not twice, by
  one sequence ``prompt | chosen | rejected`` under a 4D attention mask (:mod:`prefkit.prefix_sharing`), for the
  policy and the reference alike; the log-probs, losses and gradients are TRL's to float tolerance. Models whose
  attention cannot take a 4D mask (FlashAttention, sliding windows, multimodal) run TRL's unshared path, said once;
- the model card says what was trained, with which β and how it ended.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import trl

from ..prefix_sharing import PrefixSharingSwitch, add_prefix_sharing, prefix_sharing_unsupported_reason
from .batching import PADDING_FREE_HELP, LengthGroupedPairsMixin, dpo_row_lengths, prefix_sharing_switch

from ..data.validation import validate_unless_tokenized
from ..hub import ModelCardMixin
from ..implicit_reward import ImplicitReward
from .policy_eval_callback import PolicyEvalArguments, PolicyEvalMixin
from ..memory_plan import MemoryBudgetArguments
from .startup import (QLoRAArguments, attach_memory_plan, check_before_loading, learning_rate_help, load_for_training,
                      plan_memory_before_loading)

logger = logging.getLogger(__name__)

_TRL_DPO_LEARNING_RATE = trl.DPOConfig.__dataclass_fields__["learning_rate"].default


@dataclass
class DPOConfig(trl.DPOConfig, QLoRAArguments, PolicyEvalArguments, MemoryBudgetArguments):
    r"""``trl.DPOConfig`` plus prefkit's model loading fields (:class:`~prefkit.trainers.startup.QLoRAArguments`).

    Every TRL field keeps its meaning; ``bf16`` defaults to on only where the hardware supports it.

    Parameters:
        quantization (`str`, *optional*): ``"4bit"`` (QLoRA) or ``"8bit"``; applies when ``model`` is a name.
        use_peft (`bool`, *optional*): train a LoRA adapter (default: on when ``quantization`` is set).
        lora_r, lora_alpha, lora_dropout, lora_target_modules, lora_modules_to_save: the LoRA adapter.
        eval_prompts, eval_reward, eval_judge, eval_every_steps, ...: held-out evaluation while training
            (:mod:`prefkit.trainers.policy_eval_callback`): logs eval/reward, eval/win_rate, eval/kl, eval/length.
        prefix_sharing (`bool`, *optional*, defaults to `True`): compute each pair's prompt once (one sequence
            ``prompt | chosen | rejected`` under a 4D attention mask) instead of twice; same results as TRL's batch.
        padding_free (`bool`, *optional*, defaults to `False`): pack the micro-batch's prefix-shared pairs into one
            row, no padding, same results (:mod:`prefkit.trainers.batching`); ``train_sampling_strategy=
            "group_by_length"`` batches pairs of similar lengths instead (TRL's trainers cannot measure their rows).
        memory_budget (`str`, *optional*, defaults to `"auto"`): memory per device (``"24GiB"``) to plan the micro-batch,
            gradient checkpointing and precomputed reference log-probs for before the model loads
            (:mod:`prefkit.memory_plan`); ``"auto"``: the CUDA device's memory, nothing planned on CPU; ``"off"``.
    """

    learning_rate: float | None = field(default=None, metadata={"help": learning_rate_help(_TRL_DPO_LEARNING_RATE)})
    prefix_sharing: bool = field(
        default=True,
        metadata={
            "help": "Run each pair as one sequence prompt | chosen | rejected, the rejected answer masked from the "
            "chosen one, so the prompt is computed once instead of twice (policy and reference). Same log-probs and "
            "loss as TRL's unshared batch to float tolerance. Models whose attention cannot take a 4D mask "
            "(FlashAttention, sliding-window attention, multimodal) run unshared, with one warning."
        },
    )

    padding_free: bool = field(default=False, metadata={"help": PADDING_FREE_HELP})

    ref_logps_cache: bool = field(
        default=True,
        metadata={
            "help": "With --precompute_ref_log_probs: keep the reference log-probs in a cache keyed by content (the "
            "reference weights without the trained adapter, every token id, truncation, precision) that later runs "
            "reuse (another beta, learning rate or seed); a stale or foreign entry is recomputed, never used."
        },
    )
    ref_logps_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the reference log-prob cache (default: $PREFKIT_CACHE/ref_logps, else "
                          "<HF_HOME>/prefkit/ref_logps)."},
    )

    def __post_init__(self):
        prefix_sharing_switch(self)  # padding_free needs prefix_sharing: say so before any model loads
        self._apply_prefkit_defaults()
        self._resolve_learning_rate(_TRL_DPO_LEARNING_RATE)
        self._check_policy_eval_fields()
        self._check_memory_budget()
        super().__post_init__()


class DPOTrainer(ModelCardMixin, PolicyEvalMixin, LengthGroupedPairsMixin, trl.DPOTrainer):
    """``trl.DPOTrainer`` that also takes a model name with QLoRA settings and validates data first.

    Example::

        from prefkit import DPOConfig, DPOTrainer

        args = DPOConfig(output_dir="smollm2-dpo", quantization="4bit", beta=0.1, learning_rate=5e-6)
        trainer = DPOTrainer("HuggingFaceTB/SmolLM2-135M-Instruct", args=args, train_dataset=pairs)
        trainer.train()
        reward = trainer.implicit_reward()   # scores (prompt, response) pairs, e.g. for Best-of-N
    """

    _tag_names = ["trl", "dpo", "prefkit"]
    _card_method = "dpo"
    _pair_lengths = staticmethod(dpo_row_lengths)

    def __init__(
        self,
        model: Any = None,
        ref_model=None,
        args: trl.DPOConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
    ):
        # Bad data fails before minutes of model loading. A plain trl.DPOConfig works too: no quantization, no LoRA.
        args = check_before_loading(model, args, config_class=DPOConfig, method="DPO", train_dataset=train_dataset,
                                    eval_dataset=eval_dataset, validate=validate_unless_tokenized)
        memory_plan = plan_memory_before_loading(model, args, "DPO", ref_model=ref_model, train_dataset=train_dataset,
                                                 peft_config=peft_config, quantization_config=quantization_config)
        model, processing_class, peft_config = load_for_training(
            model, args, processing_class=processing_class, quantization_config=quantization_config,
            peft_config=peft_config, load_tokenizer_if_missing=False,  # TRL loads the model's own processor
        )
        quantization_config = None  # applied at load time above
        # Installed on first use, after TRL has given the models its fused LM head (inside super().__init__).
        self._prefix_sharing = prefix_sharing_switch(args)
        self._prefix_sharing_installed = False
        # prefkit packs the pairs itself (padding_free); TRL 1.16 would only warn that its own is switched off
        packed = self._prefix_sharing is not None and self._prefix_sharing.pack
        if packed:
            args.padding_free = False

        super().__init__(
            model=model,
            ref_model=ref_model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
        if packed:
            args.padding_free = True
        attach_memory_plan(self, memory_plan)
        self.add_policy_eval_from_args()

    # -- the reference log-prob cache ---------------------------------------------------------------------------

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        """TRL's precompute (``precompute_ref_log_probs=True``), through :mod:`prefkit.ref_cache`: an entry with the
        same reference weights, token ids and settings is reused; otherwise TRL computes the log-probs and they are
        stored for the next run."""
        if not getattr(self.args, "ref_logps_cache", False) or not hasattr(dataset, "add_column"):
            return super()._precompute_ref_logps(dataset, name, batch_size)
        import time

        from accelerate.utils import broadcast_object_list

        from .. import ref_cache

        parts = [self._ref_cache_parts(dataset)]
        broadcast_object_list(parts, from_process=0)  # ZeRO-3 shards the weights: every rank uses rank 0's key
        parts = parts[0]
        folder = self.args.ref_logps_cache_dir or ref_cache.default_cache_dir()
        cached = ref_cache.load(folder, parts, len(dataset))
        if cached is not None:
            logger.info("reference log-probs of %s: reused from the cache (%s)", name, ref_cache.cache_key(parts))
            return dataset.add_column("ref_chosen_logps", cached[0].tolist()).add_column(
                "ref_rejected_logps", cached[1].tolist())
        started = time.perf_counter()
        dataset = super()._precompute_ref_logps(dataset, name, batch_size)
        if self.accelerator.is_main_process:
            import torch

            ref_cache.save(folder, parts, torch.tensor(dataset["ref_chosen_logps"]),
                           torch.tensor(dataset["ref_rejected_logps"]))
        self.accelerator.wait_for_everyone()
        logger.info("reference log-probs of %s: computed in %.1f s and cached (%s)", name,
                    time.perf_counter() - started, ref_cache.cache_key(parts))
        return dataset

    def _ref_cache_parts(self, dataset) -> dict[str, Any]:
        """What the reference log-probs depend on (see :mod:`prefkit.ref_cache`)."""
        from .. import ref_cache

        reference = self.ref_model if self.ref_model is not None else self.model
        dtype = next(reference.parameters()).dtype
        return {
            "reference": ref_cache.reference_fingerprint(reference),
            "data": ref_cache.dataset_fingerprint(dataset),
            "max_length": self.args.max_length,
            "truncation_mode": self.args.truncation_mode,
            "ld_alpha": self.args.ld_alpha,
            "precision": f"{dtype}|bf16={bool(self.args.bf16)}|fp16={bool(self.args.fp16)}",
        }

    # -- prefix-shared pairs ------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs, return_outputs):
        with self._prefix_sharing_on():
            return super()._compute_loss(model, inputs, return_outputs)

    def compute_ref_log_probs(self, model, inputs):
        with self._prefix_sharing_on():
            return super().compute_ref_log_probs(model, inputs)

    def _prefix_sharing_on(self):
        """A context in which TRL's fused-head forwards of the policy and the reference run prefix-shared."""
        switch = getattr(self, "_prefix_sharing", None)
        if switch is None:
            return contextlib.nullcontext()
        if not self._prefix_sharing_installed:
            self._install_prefix_sharing(switch)
        return switch.on()

    def _install_prefix_sharing(self, switch: PrefixSharingSwitch) -> None:
        from peft import PeftModel

        self._prefix_sharing_installed = True
        peft_model = self.model if isinstance(self.model, PeftModel) else None
        policy = peft_model.get_base_model() if peft_model is not None else self.model  # where TRL put its head
        roles = [("policy", policy, peft_model)]
        if self.ref_model is not None:
            roles.append(("reference", self.ref_model, None))
        unshared = []
        for role, model, peft in roles:
            reason = prefix_sharing_unsupported_reason(model, peft_model=peft)
            if reason is None:
                add_prefix_sharing(model, switch)
            else:
                unshared.append(f"the {role} model because {reason}")
        if unshared:
            logger.warning("prefix_sharing: TRL's unshared pairs run for %s (same results, no speed-up). "
                           "Set prefix_sharing=False to silence this.", " and ".join(unshared))

    def implicit_reward(self, batch_size: int | None = None, max_length: int | None = None) -> ImplicitReward:
        """An :class:`ImplicitReward` over the model being trained, with this trainer's β and reference."""
        model = self.accelerator.unwrap_model(self.model)
        return ImplicitReward(
            model,
            self._tokenizer,
            ref_model=self.ref_model,
            beta=self.beta,
            batch_size=batch_size or self.args.per_device_eval_batch_size,
            max_length=max_length if max_length is not None else self.args.max_length,
        )

    def card_hyperparameters(self) -> dict[str, Any]:
        return {
            "beta": self.args.beta,
            "loss_type": self.args.loss_type,
            "max_length": self.args.max_length,
            **super().card_hyperparameters(),
        }
