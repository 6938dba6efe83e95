"""KTO: TRL's trainer for thumbs up / thumbs down on single answers, with QLoRA in two flags and data checked first.

KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization") learns from labels that are
not pairs: each row is one answer marked desirable or not. ``prefkit.KTOTrainer`` is a drop-in ``trl.KTOTrainer``:
same dataset columns (TRL's unpaired ``prompt`` / ``completion`` / boolean ``label``, standard or conversational;
preference pairs are accepted too and split into one desirable and one undesirable row), same loss types, same
logged metrics (``kl``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``, ``logps/chosen`` ...). What it
adds:

- ``model`` may be a name, loaded with ``args.quantization`` (4-bit QLoRA) and ``args.use_peft`` / ``lora_*``;
- under LoRA the reference is the same base with the adapter disabled (no second copy of the weights);
- the datasets are validated row by row before anything is loaded: a label that is not ``true`` / ``false``, an
  empty or missing completion, an empty dataset are errors naming the row and the column;
- the settings KTO cannot train with (a per-device batch of one, which makes its KL estimate the reward itself)
  are refused when the config is built, not after the model has loaded;
- the model card says what was trained, with which β and weights, and how it ended.

Votes from the app become KTO rows with ``prefkit.data.votes.votes_to_rows(votes, kind="kto")`` (or the app's Data
tab, or ``prefkit export --format unpaired``); those files train as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trl

from ..data.validation import IMAGE_COLUMNS, dataset_columns, validate_unless_tokenized, validate_unpaired_dataset
from ..hub import ModelCardMixin
from .policy_eval_callback import PolicyEvalArguments, PolicyEvalMixin
from .startup import QLoRAArguments, check_before_loading, learning_rate_help, load_for_training

_TRL_KTO_LEARNING_RATE = trl.KTOConfig.__dataclass_fields__["learning_rate"].default
# The loss types whose KL term is estimated from mismatched (prompt, completion) pairs within a batch (TRL's rule).
_KL_LOSS_TYPES = ("kto",)


def validate_kto_dataset(dataset: Any, name: str) -> None:
    """What :class:`KTOTrainer` checks before any model loads: unpaired rows (``prompt``, ``completion``, boolean
    ``label``), or preference pairs (``chosen`` / ``rejected``), which TRL splits into one desirable and one
    undesirable row. A vision dataset (an ``image`` / ``images`` column) has its text checked."""
    columns = dataset_columns(dataset)
    if "chosen" in columns or "rejected" in columns:
        validate_unless_tokenized(dataset, name)
        return
    images = [column for column in IMAGE_COLUMNS if column in columns]
    if images and hasattr(dataset, "remove_columns"):
        dataset = dataset.remove_columns(images)  # checking text does not need every image decoded
    validate_unpaired_dataset(dataset, name, multimodal=bool(images))


@dataclass
class KTOConfig(trl.KTOConfig, QLoRAArguments, PolicyEvalArguments):
    r"""``trl.KTOConfig`` plus prefkit's model loading fields (:class:`~prefkit.trainers.startup.QLoRAArguments`).

    Every TRL field keeps its meaning; ``bf16`` defaults to on only where the hardware supports it.

    Parameters:
        beta (`float`): how far the policy may move from the reference; higher keeps it closer.
        desirable_weight, undesirable_weight (`float`): weights of the two halves of the loss. With unequal numbers
            of desirable and undesirable rows, keep ``desirable_weight * n_desirable / (undesirable_weight *
            n_undesirable)`` between 1 and 4/3 (KTO paper, eq. 8; TRL warns when it is not).
        quantization (`str`, *optional*): ``"4bit"`` (QLoRA) or ``"8bit"``; applies when ``model`` is a name.
        use_peft (`bool`, *optional*): train a LoRA adapter (default: on when ``quantization`` is set).
        lora_r, lora_alpha, lora_dropout, lora_target_modules, lora_modules_to_save: the LoRA adapter.
        eval_prompts, eval_reward, eval_judge, eval_every_steps, ...: held-out evaluation while training
            (:mod:`prefkit.trainers.policy_eval_callback`): logs eval/reward, eval/win_rate, eval/kl, eval/length.
    """

    learning_rate: float | None = field(default=None, metadata={"help": learning_rate_help(_TRL_KTO_LEARNING_RATE)})

    def __post_init__(self):
        self._apply_prefkit_defaults()
        self._resolve_learning_rate(_TRL_KTO_LEARNING_RATE)
        self._check_policy_eval_fields()
        self._check_kto_fields()
        super().__post_init__()

    def _check_kto_fields(self) -> None:
        """TRL refuses these only once the model has loaded; here they fail with the config, all in one error."""
        problems = []
        if self.loss_type in _KL_LOSS_TYPES:
            if self.per_device_train_batch_size < 2:
                problems.append(
                    f"per_device_train_batch_size={self.per_device_train_batch_size}: loss_type={self.loss_type!r} "
                    "estimates its KL term from the other completions of the same batch, so it needs at least 2 (with "
                    "1 the estimate is the row's own reward). Raise it, or use loss_type='apo_zero_unpaired'."
                )
            if self.train_sampling_strategy != "sequential":
                problems.append(
                    f"train_sampling_strategy={self.train_sampling_strategy!r}: loss_type={self.loss_type!r} pairs "
                    "each row with its neighbour in the dataset for the KL term, so batches must follow the dataset "
                    "order ('sequential'). Shuffle the dataset itself instead."
                )
        for name in ("desirable_weight", "undesirable_weight"):
            if not getattr(self, name) > 0:
                problems.append(f"{name}={getattr(self, name)}: must be > 0.")
        if problems:
            raise ValueError("KTOConfig: " + " ".join(problems))


class KTOTrainer(ModelCardMixin, PolicyEvalMixin, trl.KTOTrainer):
    """``trl.KTOTrainer`` that also takes a model name with QLoRA settings and validates data first.

    Example::

        from datasets import Dataset
        from prefkit import KTOConfig, KTOTrainer

        thumbs = Dataset.from_list([
            {"prompt": "How do I make tea?", "completion": "Boil water, steep the bag 3 minutes.", "label": True},
            {"prompt": "How do I make tea?", "completion": "Figure it out.", "label": False},
        ])
        args = KTOConfig(output_dir="smollm2-kto", quantization="4bit", per_device_train_batch_size=2)
        trainer = KTOTrainer("HuggingFaceTB/SmolLM2-135M-Instruct", args=args, train_dataset=thumbs)
        trainer.train()
    """

    _tag_names = ["trl", "kto", "prefkit"]
    _card_method = "kto"

    def __init__(
        self,
        model: Any = None,
        ref_model=None,
        args: trl.KTOConfig | None = None,
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
        # Bad data fails before minutes of model loading. A plain trl.KTOConfig works too: no quantization, no LoRA.
        args = check_before_loading(model, args, config_class=KTOConfig, method="KTO", train_dataset=train_dataset,
                                    eval_dataset=eval_dataset, validate=validate_kto_dataset,
                                    dataset_hint="rows of prompt, completion and a true/false label.")
        model, processing_class, peft_config = load_for_training(
            model, args, processing_class=processing_class, quantization_config=quantization_config,
            peft_config=peft_config, load_tokenizer_if_missing=False,  # TRL loads the model's own processor
        )
        quantization_config = None  # applied at load time above

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
        self.add_policy_eval_from_args()

    def card_hyperparameters(self) -> dict[str, Any]:
        return {
            "beta": self.args.beta,
            "desirable_weight": self.args.desirable_weight,
            "undesirable_weight": self.args.undesirable_weight,
            "loss_type": self.args.loss_type,
            "max_length": self.args.max_length,
            **super().card_hyperparameters(),
        }
