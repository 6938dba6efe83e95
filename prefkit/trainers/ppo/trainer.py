r"""PPO for language models: PPO-Clip and PPO-KL-penalty, with GAE and a value model, or REINFORCE / RLOO / GRPO
advantages, on (Q)LoRA with one shared copy of the base weights.

The objective (the lecture's): maximize reward without drifting far from the model you started from,

.. math:: \max_\theta\; \mathbb{E}_{x,\, \hat y \sim \pi_\theta}\big[r(x, \hat y)\big]
          - \beta_{ref}\, \mathrm{KL}\big(\pi_\theta(\hat y \mid x) \,\|\, \pi_{ref}(\hat y \mid x)\big),

optimized token by token with advantages :math:`\hat A_t \approx` reward − baseline. One PPO iteration, in order
(:meth:`PPOTrainer._ppo_iteration` reads top to bottom like CleanRL's ``ppo.py``):

1. **rollout**: sample a completion per prompt (``num_generations`` per prompt for RLOO/GRPO) with the KV cache,
   at ``temperature``, stopping at EOS or ``response_length`` tokens;
2. **score**: the reward function(s) score each completion (``missing_eos_penalty`` for truncated ones);
3. **old and reference log-probs, values**: :math:`\log\pi_{\theta_{old}}(a_t \mid s_t)`,
   :math:`\log\pi_{ref}(a_t \mid s_t)` and :math:`V(s_t)` for every response token;
4. **rewards with KL**: :math:`r_t = -\beta_{ref}\,\widehat{\mathrm{KL}}_t`, plus the score at the last token;
5. **advantages and returns**: GAE over :math:`(r_t, V(s_t))`, or a sequence-level baseline
   (REINFORCE: running/batch mean; RLOO: leave-one-out; GRPO: group-normalized);
6. **epochs over shuffled minibatches**: ratio :math:`\rho_t`, PPO-Clip or PPO-KL-penalty policy loss, clipped value
   loss, entropy, approximate KL and clip fractions; one optimizer step per minibatch;
7. **adaptive β**: the KL coefficient moves towards ``target_kl`` (optional).

The four roles of RLHF cost about one model under LoRA: the **policy** is a LoRA adapter on a (4-bit) base; the
**reference** is the same base with the adapter disabled; the **value model** is a second adapter (``"value"``) on the
same base plus a scalar head; the **reward** is any ``reward_fn(prompts, completions) -> scores`` or an object with
``.score`` (:class:`prefkit.RewardModel`). Without LoRA, the reference is a frozen copy of the policy and the value
model a separate ``AutoModelForSequenceClassification`` (three copies of the weights plus optimizer state for two).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from transformers import Trainer, TrainingArguments

from ...data.validation import PreferenceDataError, RowProblem, check_messages, check_text
from ...hub import ModelCardMixin
from ...logprobs import entropy_from_logits, render_prompt, selective_log_softmax
from ...losses import (
    gae,
    grpo_advantages,
    kl_estimate,
    masked_mean,
    masked_var,
    ppo_clip_loss,
    ppo_kl_penalty_loss,
    reinforce_advantages,
    rloo_advantages,
    value_loss,
    whiten,
)
from ...rl import RewardFunctionError, as_reward_functions, combine_rewards, kl_controller
from ..common import QLoRAArguments, default_output_dir, default_peft_config, resolve_model_argument

logger = logging.getLogger(__name__)

LOSS_TYPES = ("clip", "kl_penalty")
ADVANTAGE_ESTIMATORS = ("gae", "reinforce", "rloo", "grpo")
POLICY_ADAPTER = "default"  # PEFT's name for the first adapter: the policy
VALUE_ADAPTER = "value"
VALUE_FOLDER = "value"  # <output_dir>/value/: the value adapter and value_head.safetensors (shared base)
VALUE_MODEL_FOLDER = "value_model"  # <output_dir>/value_model/: a separate value model (full fine-tuning)
VALUE_HEAD_NAME = "value_head.safetensors"
PPO_STATE_NAME = "ppo_state.json"  # KL coefficients and the REINFORCE running baseline, for resuming
COMPLETIONS_NAME = "completions.jsonl"
CURVES_NAME = "ppo_curves.png"


# ====================================================================================================================
# Configuration
# ====================================================================================================================


@dataclass
class PPOConfig(TrainingArguments, QLoRAArguments):
    r"""Configuration of :class:`PPOTrainer`: ``transformers.TrainingArguments`` plus the PPO fields, named as in TRL's
    former ``PPOConfig`` where it had them, plus prefkit's QLoRA fields (``--quantization 4bit``).

    Batch sizes (per process): one PPO iteration samples ``per_device_train_batch_size × gradient_accumulation_steps ×
    num_mini_batches`` completions (``local_batch_size``), from ``local_batch_size / num_generations`` prompts; each of
    ``num_ppo_epochs`` epochs splits them into ``num_mini_batches`` minibatches, one optimizer step each, accumulated
    over ``gradient_accumulation_steps`` micro-batches of ``per_device_train_batch_size``. ``max_steps`` (if > 0)
    counts PPO iterations; otherwise ``total_episodes`` completions, otherwise ``num_train_epochs`` passes over the
    prompts.
    """

    # ---- TrainingArguments defaults that suit on-policy RL
    learning_rate: float = field(
        default=1e-5, metadata={"help": "Initial AdamW learning rate (LoRA usually wants 1e-5 to 1e-4, full fine-tuning ~1e-6)."}
    )
    logging_steps: float = field(
        default=1, metadata={"help": "Log every X PPO iterations (each one samples a whole batch, so log often)."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; default: on where the hardware supports it natively."}
    )
    model_init_kwargs: dict | str | None = field(
        default=None, metadata={"help": "Keyword arguments for from_pretrained when the model is given by name."}
    )

    # ---- Rollout
    response_length: int = field(default=53, metadata={"help": "Maximum number of tokens generated per completion."})
    max_prompt_length: int | None = field(
        default=512, metadata={"help": "Prompts longer than this many tokens keep their last tokens. None: no limit."}
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (log-probs use the same one)."})
    stop_token_ids: list[int] | None = field(
        default=None,
        metadata={"help": "Token ids that end a completion besides the tokenizer's and generation config's EOS."},
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={"help": "Subtract this from the score of completions that hit response_length without EOS."},
    )
    num_generations: int = field(
        default=1, metadata={"help": "Completions sampled per prompt (RLOO and GRPO need at least 2)."}
    )
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Batch size of generation and of the no-gradient forward passes."}
    )
    ds3_gather_for_generation: bool = field(
        default=True, metadata={"help": "Gather DeepSpeed ZeRO-3 weights for generation (faster, more memory)."}
    )

    # ---- Batches and epochs
    num_mini_batches: int = field(default=1, metadata={"help": "Minibatches (optimizer steps) per PPO epoch."})
    num_ppo_epochs: int = field(default=4, metadata={"help": "Epochs over each rollout batch."})
    total_episodes: int | None = field(
        default=None, metadata={"help": "Completions to train on in total (instead of num_train_epochs)."}
    )

    # ---- Objective
    loss_type: str = field(
        default="clip",
        metadata={
            "help": "Policy objective: 'clip' (PPO-Clip) or 'kl_penalty' (PPO-KL-penalty: rho*A - beta*KL to the "
            "reference, no clipping).",
            "choices": list(LOSS_TYPES),
        },
    )
    advantage_estimator: str = field(
        default="gae",
        metadata={
            "help": "'gae' (token-level, with a value model), 'reinforce' (return minus a baseline), 'rloo' "
            "(leave-one-out over num_generations samples) or 'grpo' (group-normalized).",
            "choices": list(ADVANTAGE_ESTIMATORS),
        },
    )
    cliprange: float = field(default=0.2, metadata={"help": "PPO-Clip epsilon: ratios are clipped to [1-eps, 1+eps]."})
    kl_coef: float = field(
        default=0.05, metadata={"help": "beta_ref: weight of the per-token KL to the reference in the reward."}
    )
    kl_estimator: str = field(
        default="k1",
        metadata={"help": "Estimator of the reward's per-token KL: 'k1' (log ratio) or 'k3' (non-negative).", "choices": ["k1", "k3"]},
    )
    kl_penalty_coef: float = field(
        default=0.1, metadata={"help": "beta of loss_type='kl_penalty': weight of the KL penalty in the loss."}
    )
    kl_penalty_estimator: str = field(
        default="k3",
        metadata={
            "help": "Per-token penalty of loss_type='kl_penalty': 'k3' (its gradient is that of KL(ref || policy)) or "
            "'k2' (gradient of KL(policy || ref)).",
            "choices": ["k2", "k3"],
        },
    )
    adaptive_kl: bool = field(
        default=False,
        metadata={
            "help": "Adapt beta towards target_kl (Ziegler et al. 2019): kl_penalty_coef with loss_type='kl_penalty', "
            "kl_coef otherwise."
        },
    )
    target_kl: float = field(default=6.0, metadata={"help": "Target KL per completion (nats) of the adaptive controller."})
    kl_horizon: int = field(default=10000, metadata={"help": "Horizon (episodes) of the adaptive KL controller."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    value_lora_r: int | None = field(
        default=None,
        metadata={
            "help": "LoRA rank of the value adapter on the shared base (default: lora_r). A smaller rank saves "
            "its weights, gradients and AdamW state (the only memory the value model adds)."
        },
    )
    cliprange_value: float | None = field(
        default=0.2, metadata={"help": "Clip range of the value loss around the rollout values (None: unclipped)."}
    )
    whiten_rewards: bool = field(default=False, metadata={"help": "Rescale per-token rewards to unit variance."})
    whiten_advantages: bool | None = field(
        default=None,
        metadata={"help": "Normalize advantages over the batch. Default: on for gae/reinforce, off for rloo/grpo."},
    )
    reinforce_baseline: str = field(
        default="running",
        metadata={"help": "REINFORCE baseline: 'running' (moving average of past returns) or 'batch' (batch mean).", "choices": ["running", "batch"]},
    )
    baseline_momentum: float = field(default=0.9, metadata={"help": "Momentum of the running REINFORCE baseline."})
    grpo_scale_rewards: bool = field(
        default=True, metadata={"help": "GRPO: divide by the group's standard deviation (False: Dr. GRPO)."}
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "Weights of several reward functions (default: all 1)."}
    )

    # ---- Samples
    log_completions: bool = field(default=True, metadata={"help": "Log sample completions as a table."})
    log_completions_steps: int = field(default=10, metadata={"help": "Log sample completions every N iterations."})
    num_completions_to_log: int = field(default=8, metadata={"help": "Completions per sample table."})

    def __post_init__(self):
        self._apply_prefkit_defaults()
        if isinstance(self.model_init_kwargs, str):
            self.model_init_kwargs = json.loads(self.model_init_kwargs)
        super().__post_init__()
        self._check_ppo_fields()

    def _check_ppo_fields(self) -> None:
        problems = []
        if self.loss_type not in LOSS_TYPES:
            problems.append(f"loss_type={self.loss_type!r}: use one of {list(LOSS_TYPES)}")
        if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
            problems.append(f"advantage_estimator={self.advantage_estimator!r}: use one of {list(ADVANTAGE_ESTIMATORS)}")
        if self.kl_estimator not in ("k1", "k3"):
            problems.append(f"kl_estimator={self.kl_estimator!r}: use 'k1' or 'k3'")
        if self.kl_penalty_estimator not in ("k2", "k3"):
            problems.append(
                f"kl_penalty_estimator={self.kl_penalty_estimator!r}: use 'k3' or 'k2' (k1's gradient is zero in expectation)"
            )
        if self.reinforce_baseline not in ("running", "batch"):
            problems.append(f"reinforce_baseline={self.reinforce_baseline!r}: use 'running' or 'batch'")
        if self.num_generations < 1:
            problems.append(f"num_generations={self.num_generations}: must be at least 1")
        elif self.advantage_estimator in ("rloo", "grpo") and self.num_generations < 2:
            problems.append(
                f"advantage_estimator={self.advantage_estimator!r} compares several completions of the same prompt, so "
                f"it needs num_generations >= 2 (got {self.num_generations}); e.g. --num_generations 4"
            )
        if self.num_mini_batches < 1 or self.num_ppo_epochs < 1:
            problems.append("num_mini_batches and num_ppo_epochs must be at least 1")
        elif self.num_generations >= 1 and self.local_batch_size % self.num_generations:
            problems.append(
                f"the rollout batch (per_device_train_batch_size × gradient_accumulation_steps × num_mini_batches = "
                f"{self.local_batch_size}) must be a multiple of num_generations={self.num_generations}"
            )
        if self.response_length < 1:
            problems.append(f"response_length={self.response_length}: must be at least 1")
        if not self.temperature > 0:
            problems.append(f"temperature={self.temperature}: must be > 0")
        if not self.cliprange > 0:
            problems.append(f"cliprange={self.cliprange}: must be > 0")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            problems.append(f"gamma={self.gamma}, lam={self.lam}: both must be in [0, 1]")
        if self.adaptive_kl and not (self.target_kl > 0 and self.kl_horizon > 0):
            problems.append(f"adaptive_kl needs target_kl > 0 and kl_horizon > 0 (got {self.target_kl}, {self.kl_horizon})")
        if not 0 <= self.baseline_momentum < 1:
            problems.append(f"baseline_momentum={self.baseline_momentum}: must be in [0, 1)")
        if self.eval_strategy != "no":
            problems.append(
                "PPOTrainer does not run evaluation (eval_strategy must be 'no'): it logs the rollout's scores every "
                "iteration and sample completions every log_completions_steps"
            )
        if problems:
            raise ValueError("Invalid PPOConfig:\n  " + "\n  ".join(problems))
        if self.whiten_advantages is None:
            self.whiten_advantages = self.advantage_estimator in ("gae", "reinforce")

    # Derived sizes (per process)
    @property
    def local_batch_size(self) -> int:
        """Completions sampled per process per PPO iteration."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_mini_batches

    @property
    def local_mini_batch_size(self) -> int:
        """Completions per optimizer step per process."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    @property
    def prompts_per_rollout(self) -> int:
        """Prompts per process per PPO iteration."""
        return self.local_batch_size // self.num_generations


# ====================================================================================================================
# Policy, reference and value on one base
# ====================================================================================================================


def _causal_lm_logits(model, input_ids, attention_mask, position_ids, response_width: int) -> torch.Tensor:
    """Logits that predict the last ``response_width`` tokens, ``[batch, response_width, vocab]``."""
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=response_width + 1,
        use_cache=False,
    )
    return output.logits[:, -response_width - 1 : -1]


def _backbone_and_head(sequence_classifier):
    """The transformer body and the ``score`` head of a decoder ``*ForSequenceClassification`` (maybe under PEFT)."""
    base = sequence_classifier.get_base_model() if hasattr(sequence_classifier, "get_base_model") else sequence_classifier
    backbone = getattr(base, base.base_model_prefix, None)
    head = getattr(base, "score", None)
    if backbone is None or head is None:
        raise ValueError(
            f"value_model is a {type(base).__name__}; a token-level value model must be a decoder "
            "*ForSequenceClassification (num_labels=1) with a 'score' head, e.g. "
            "AutoModelForSequenceClassification.from_pretrained(policy_name, num_labels=1)."
        )
    return backbone, head


class PolicyAndValue(nn.Module):
    r"""The trained roles in one module, which is what the optimizer, DDP and checkpoints see.

    - ``policy``: a causal LM; under PEFT its adapter ``"default"`` is the policy and the disabled adapter is the
      reference (:meth:`reference`).
    - shared value (``value_head`` set): the policy's base with the second adapter ``"value"`` active, then
      ``value_head`` (``nn.Linear(hidden, 1)``) on the last hidden states.
    - separate value (``value_model`` set): a decoder ``*ForSequenceClassification`` whose ``score`` head is applied
      to every position.

    ``forward`` returns the policy's response logits and the values in one call, so that DDP sees one forward per
    backward and synchronizes the gradients of both.
    """

    def __init__(self, policy: nn.Module, value_model: nn.Module | None = None, value_head: nn.Module | None = None):
        super().__init__()
        if value_model is not None and value_head is not None:
            raise ValueError("Give either a separate value_model or a value_head on the shared base, not both.")
        self.policy = policy
        self.value_model = value_model
        self.value_head = value_head
        self._checkpointing_kwargs: dict | None = None

    # ---- what kind of setup this is
    @property
    def is_peft(self) -> bool:
        return hasattr(self.policy, "disable_adapter") and hasattr(self.policy, "peft_config")

    @property
    def has_values(self) -> bool:
        return self.value_model is not None or self.value_head is not None

    @property
    def shares_base(self) -> bool:
        return self.value_head is not None

    def get_base_model(self):
        """The policy's base model (for model cards and placement)."""
        return self.policy.get_base_model() if self.is_peft else self.policy

    @property
    def peft_config(self):
        """The policy adapter's config only (model cards describe the policy)."""
        if not self.is_peft:
            raise AttributeError("peft_config")
        return {POLICY_ADAPTER: self.policy.peft_config[POLICY_ADAPTER]}

    @property
    def quantization_method(self):
        # Lets Trainer see that bitsandbytes weights must not be moved with .to()
        return getattr(self.get_base_model(), "quantization_method", None)

    # ---- adapters
    def _restore_trainable(self) -> None:
        # PEFT's set_adapter / disable_adapter freeze every adapter but the active one; both of ours train.
        if self.shares_base:
            self.policy.set_requires_grad([POLICY_ADAPTER, VALUE_ADAPTER], True)

    @contextlib.contextmanager
    def _active_adapter(self, name: str):
        previous = self.policy.active_adapter
        if previous == name:
            yield
            return
        self.policy.set_adapter(name)
        try:
            yield
        finally:
            self.policy.set_adapter(previous)
            self._restore_trainable()

    @contextlib.contextmanager
    def reference(self):
        """The reference policy: the same weights with the LoRA adapter disabled."""
        if not self.is_peft:
            raise RuntimeError("Without LoRA the reference is a separate frozen copy (PPOTrainer.ref_model).")
        try:
            with self.policy.disable_adapter():
                yield self.policy
        finally:
            self._restore_trainable()

    # ---- the three computations
    def policy_logits(self, input_ids, attention_mask, position_ids, response_width: int) -> torch.Tensor:
        return _causal_lm_logits(self.policy, input_ids, attention_mask, position_ids, response_width)

    def values(self, input_ids, attention_mask, position_ids, response_width: int) -> torch.Tensor:
        """:math:`V(s_t)` for each response token: read at the position that predicts it, ``[batch, response_width]``."""
        if self.value_head is not None:
            base = self.policy.get_base_model()
            backbone = getattr(base, base.base_model_prefix)
            with self._active_adapter(VALUE_ADAPTER):
                hidden = backbone(
                    input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
                ).last_hidden_state
            head = self.value_head
        elif self.value_model is not None:
            backbone, head = _backbone_and_head(self.value_model)
            hidden = backbone(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state
        else:
            raise RuntimeError("This setup has no value model (advantage_estimator is not 'gae').")
        hidden = hidden[:, -response_width - 1 : -1]
        return head(hidden.to(head.weight.dtype)).squeeze(-1).float()

    def forward(self, input_ids, attention_mask, position_ids, response_width: int, with_values: bool = True):
        logits = self.policy_logits(input_ids, attention_mask, position_ids, response_width)
        values = self.values(input_ids, attention_mask, position_ids, response_width) if with_values and self.has_values else None
        return logits, values

    # ---- activation checkpointing (what Trainer and TRL's generation helper call)
    def _recompute_under_same_adapter(self):
        """``context_fn`` for ``torch.utils.checkpoint``: recompute a layer under the adapter it first ran with.

        The policy and value passes run the same layers under different adapters, and the backward pass
        recomputes checkpointed layers after both have run; without this, the value pass would be recomputed with
        the policy adapter (wrong gradients, no error).
        """
        name = self.policy.active_adapter

        @contextlib.contextmanager
        def recompute():
            with self._active_adapter(name):
                yield

        return contextlib.nullcontext(), recompute()

    def _checkpointed_models(self):
        models = [self.get_base_model()]
        if self.value_model is not None:
            value = self.value_model
            models.append(value.get_base_model() if hasattr(value, "get_base_model") else value)
        return models

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, every_n_layers: int = 1, offload: bool = False):
        kwargs = dict(activation_checkpointing_kwargs or {})
        if self.shares_base:
            if kwargs.get("use_reentrant"):
                warnings.warn("The shared-base value adapter needs non-reentrant activation checkpointing; using it.")
            kwargs.update(use_reentrant=False, context_fn=self._recompute_under_same_adapter)
        kwargs.setdefault("use_reentrant", False)
        self._checkpointing_kwargs = {"kwargs": kwargs, "every_n_layers": every_n_layers, "offload": offload}
        for model in self._checkpointed_models():
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs=kwargs, every_n_layers=every_n_layers, offload=offload
            )

    def activation_checkpointing_disable(self):
        for model in self._checkpointed_models():
            model.activation_checkpointing_disable()

    @property
    def is_activation_checkpointing(self) -> bool:
        return any(model.is_activation_checkpointing for model in self._checkpointed_models())

    # TRL's unwrap_model_for_generation still calls the pre-5.x names
    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.is_activation_checkpointing

    def gradient_checkpointing_disable(self):
        self.activation_checkpointing_disable()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        saved = self._checkpointing_kwargs or {}
        self.activation_checkpointing_enable(
            gradient_checkpointing_kwargs or saved.get("kwargs"),
            every_n_layers=saved.get("every_n_layers", 1),
            offload=saved.get("offload", False),
        )


def _disable_dropout(model: nn.Module | None) -> None:
    """PPO's ratio must be exactly 1 on the first minibatch: no dropout in any role (LoRA dropout included)."""
    if model is None:
        return
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


# ====================================================================================================================
# Data
# ====================================================================================================================


def validate_prompt_dataset(dataset: Any, name: str = "train_dataset") -> None:
    """Raise :class:`PreferenceDataError` listing every bad row of a prompt-only dataset (TRL's ``prompt`` column,
    text or a conversation that does not end with an assistant turn)."""
    columns = getattr(dataset, "column_names", None)
    if columns is not None and "prompt" not in columns:
        raise PreferenceDataError(
            name,
            [RowProblem(None, "prompt", f"is missing; the dataset has columns {sorted(columns)}")],
            hint="PPO trains on prompts only: a 'prompt' column of text or of messages [{'role': 'user', ...}].",
        )
    problems: list[RowProblem] = []
    count = 0
    for index, example in enumerate(dataset):
        count += 1
        prompt = example.get("prompt")
        if isinstance(prompt, list):
            found = check_messages(prompt, "prompt", index)
            if not found and prompt[-1].get("role") == "assistant":
                found = [RowProblem(index, "prompt", "ends with an assistant turn; the model should answer the last message")]
            problems += found
        else:
            problems += check_text(prompt, "prompt", index)
    if count == 0:
        raise PreferenceDataError(name, [RowProblem(None, None, "is empty; it needs at least one prompt")])
    if problems:
        raise PreferenceDataError(name, problems, total_rows=count)


@dataclass
class Rollout:
    """What the optimization epochs of one PPO iteration read (per process): ``B`` completions, ``P`` prompt
    tokens (left-padded), ``T`` response tokens (right-padded)."""

    query_responses: torch.Tensor  # [B, P + T] prompt then completion token ids
    attention_mask: torch.Tensor  # [B, P + T] 1 on real prompt tokens and on completion tokens up to EOS
    position_ids: torch.Tensor  # [B, P + T]
    responses: torch.Tensor  # [B, T] completion token ids (pad after EOS)
    response_mask: torch.Tensor  # [B, T] float, 1 up to and including the stop token
    old_logprobs: torch.Tensor  # [B, T] log pi_old(a_t | s_t), the policy that sampled
    ref_logprobs: torch.Tensor  # [B, T] log pi_ref(a_t | s_t)
    values: torch.Tensor | None  # [B, T] V(s_t) at sampling time (gae only)
    advantages: torch.Tensor  # [B, T]
    returns: torch.Tensor | None  # [B, T] the value model's labels (gae only)


# ====================================================================================================================
# Trainer
# ====================================================================================================================


class PPOTrainer(ModelCardMixin, Trainer):
    r"""PPO / REINFORCE / RLOO / GRPO on a ``transformers.Trainer``: callbacks, ``report_to``, checkpoints,
    ``resume_from_checkpoint`` and ``push_to_hub`` come from the framework; :meth:`_ppo_iteration` is the algorithm.

    Args:
        model: a model id or folder (loaded with ``args.quantization`` / ``args.use_peft``), a causal LM, or a
            ``PeftModel`` whose ``"default"`` adapter is the policy. Default: SmolLM2-135M-Instruct.
        reward_funcs: the reward: a callable ``reward_fn(prompts, completions, **columns) -> list[float] | Tensor``,
            an object with ``.score(prompts, completions)`` (:class:`prefkit.RewardModel`), a built-in name
            (``"vader"``, ``"bleu"``, ``"rouge"``), a path to a reward model, or a list of these (weighted by
            ``args.reward_weights``).
        args: a :class:`PPOConfig`.
        train_dataset: prompts (TRL's ``prompt`` column, text or messages); other columns reach reward functions that
            ask for them by name.
        value_model: for ``advantage_estimator="gae"`` without LoRA: a decoder ``*ForSequenceClassification``
            (``num_labels=1``) or its name. Under LoRA leave it ``None``: the value model is a second adapter on the
            policy's base. Ignored by the other estimators (they need no value model).
        ref_model: the reference policy; default: the base with the adapter disabled (LoRA), or a frozen copy of the
            policy taken before training.
        processing_class: the tokenizer (default: the model's, left-padded).
        peft_config: a ``peft.LoraConfig`` (default: from ``args.use_peft`` / ``lora_*``).
    """

    _tag_names = ["prefkit", "ppo", "trl"]
    _card_method = "ppo"

    def __init__(
        self,
        model: Any = None,
        reward_funcs: Any = None,
        args: PPOConfig | None = None,
        train_dataset=None,
        value_model: Any = None,
        ref_model: nn.Module | None = None,
        processing_class=None,
        peft_config=None,
        callbacks=None,
        optimizers=(None, None),
    ):
        from ...models import DEFAULT_POLICY, ensure_pad_token

        model = DEFAULT_POLICY if model is None else model
        if isinstance(model, os.PathLike):
            model = os.fspath(model)
        if args is None:
            args = PPOConfig(output_dir=default_output_dir(model, "PPO"))
        if not isinstance(args, PPOConfig):
            raise TypeError(f"args is a {type(args).__name__}; pass prefkit.PPOConfig.")

        # ---- everything that can be checked before a model loads
        if train_dataset is None:
            raise ValueError("train_dataset is required: a dataset with a 'prompt' column.")
        validate_prompt_dataset(train_dataset, "train_dataset")
        reward_functions = as_reward_functions(reward_funcs)
        for function in reward_functions:
            function.check_columns(train_dataset.column_names)
        if args.reward_weights is not None and len(args.reward_weights) != len(reward_functions):
            raise ValueError(f"args.reward_weights has {len(args.reward_weights)} weights for {len(reward_functions)} reward functions.")
        world_size = max(args.world_size, 1)
        prompts_per_iteration = args.prompts_per_rollout * world_size
        if len(train_dataset) < prompts_per_iteration:
            raise ValueError(
                f"train_dataset has {len(train_dataset)} prompts but one PPO iteration needs {prompts_per_iteration} "
                f"(local_batch_size {args.local_batch_size} / num_generations {args.num_generations} × {world_size} "
                "processes). Add prompts or lower per_device_train_batch_size / num_mini_batches."
            )
        is_peft_model = hasattr(model, "peft_config") and hasattr(model, "disable_adapter")
        uses_lora = is_peft_model or peft_config is not None or args.use_peft
        needs_values = args.advantage_estimator == "gae"
        if needs_values and value_model is None and not uses_lora and not isinstance(model, str):
            raise ValueError(
                "advantage_estimator='gae' needs a value model. Pass value_model= (a decoder "
                "AutoModelForSequenceClassification with num_labels=1, e.g. loaded from the policy's checkpoint), or "
                "train with LoRA (args.use_peft=True) so the value model is a second adapter on the shared base, or "
                "choose advantage_estimator='reinforce', 'rloo' or 'grpo', which need no value model."
            )
        if not needs_values and value_model is not None:
            logger.warning("value_model is ignored: advantage_estimator=%r needs no value model.", args.advantage_estimator)
            value_model = None

        # ---- models
        if isinstance(model, str) and needs_values and value_model is None and not uses_lora:
            value_model = model  # full fine-tuning: a value model from the same checkpoint
        model, processing_class = resolve_model_argument(model, args, processing_class=processing_class)
        if processing_class is None:
            from ...models import load_tokenizer

            processing_class = load_tokenizer(getattr(model.config, "_name_or_path"))
        processing_class.padding_side = "left"
        ensure_pad_token(processing_class, model)

        if not is_peft_model:
            # LoRA when asked for, and always on a quantized base (quantized weights cannot be trained).
            peft_config = peft_config if peft_config is not None else default_peft_config(model, args, "causal-lm")
            if peft_config is not None:
                from peft import get_peft_model

                model = get_peft_model(model, peft_config)
                is_peft_model = True

        value_head = None
        if needs_values:
            if isinstance(value_model, str):
                from ...models import load_model

                value_model, _ = load_model(
                    value_model, task="sequence-classification", num_labels=1, dtype=model.dtype
                )
                ensure_pad_token(processing_class, value_model)
            if value_model is None:  # shared base: a second adapter and a scalar head
                value_head = self._add_value_adapter(model, args.value_lora_r)
            else:
                _backbone_and_head(value_model)  # fail now if it cannot give token-level values

        if ref_model is None and not is_peft_model:
            # Full fine-tuning: the reference is a frozen copy of the policy as it is now.
            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
        for role in (model, value_model, ref_model):
            _disable_dropout(role)

        wrapper = PolicyAndValue(model, value_model=value_model, value_head=value_head)
        super().__init__(
            model=wrapper,
            args=args,
            data_collator=lambda rows: rows,
            train_dataset=train_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self.ref_model = ref_model
        if ref_model is not None and not getattr(ref_model, "is_loaded_in_4bit", False):
            self.ref_model = ref_model.to(self.accelerator.device)
        self.reward_functions = reward_functions
        self.kl_ctl = kl_controller(args.kl_coef, args.adaptive_kl and args.loss_type == "clip", args.target_kl, args.kl_horizon)
        self.kl_penalty_ctl = kl_controller(
            args.kl_penalty_coef, args.adaptive_kl and args.loss_type == "kl_penalty", args.target_kl, args.kl_horizon
        )
        self.running_baseline: float | None = None
        self._stop_token_ids = self._collect_stop_token_ids(model, processing_class, args.stop_token_ids)
        self._metrics_since_log: list[dict[str, float]] = []

    # ------------------------------------------------------------------------------------------------------------
    # Setup helpers
    # ------------------------------------------------------------------------------------------------------------

    @staticmethod
    def _add_value_adapter(policy, rank: int | None = None) -> nn.Module:
        """Add the ``"value"`` LoRA adapter to the policy's base and return a zero-initialized scalar head."""
        policy_config = policy.peft_config[POLICY_ADAPTER]
        value_config = copy.deepcopy(policy_config)
        value_config.modules_to_save = None  # e.g. a trained lm_head belongs to the policy only
        if rank is not None and rank != policy_config.r:
            value_config.lora_alpha = policy_config.lora_alpha * rank / policy_config.r  # same scale alpha / r
            value_config.r = rank
        policy.add_adapter(VALUE_ADAPTER, value_config)
        policy.set_adapter(POLICY_ADAPTER)
        policy.set_requires_grad([POLICY_ADAPTER, VALUE_ADAPTER], True)
        base = policy.get_base_model()
        hidden_size = base.config.get_text_config().hidden_size
        device = next(p.device for p in policy.parameters())
        head = nn.Linear(hidden_size, 1, device=device, dtype=torch.float32)
        nn.init.zeros_(head.weight)  # V = 0 at the start: no made-up value estimates
        nn.init.zeros_(head.bias)
        return head

    @staticmethod
    def _collect_stop_token_ids(model, tokenizer, extra: list[int] | None) -> list[int]:
        ids: list[int] = []
        for candidate in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
            if candidate is None:
                continue
            ids += list(candidate) if isinstance(candidate, (list, tuple)) else [candidate]
        ids += list(extra or [])
        return sorted(set(int(i) for i in ids))

    @property
    def _policy_and_value(self) -> PolicyAndValue:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------------------------------------------------
    # Schedule: which prompts each iteration uses (a pure function of the step, so resuming continues the same run)
    # ------------------------------------------------------------------------------------------------------------

    def _iterations_per_epoch(self) -> int:
        return max(len(self.train_dataset) // (self.args.prompts_per_rollout * max(self.args.world_size, 1)), 1)

    def _total_iterations(self) -> int:
        args = self.args
        if args.max_steps > 0:
            return args.max_steps
        if args.total_episodes is not None:
            return max(math.ceil(args.total_episodes / (args.local_batch_size * max(args.world_size, 1))), 1)
        return max(math.ceil(args.num_train_epochs * self._iterations_per_epoch()), 1)

    def _prompt_indices(self, iteration: int) -> list[int]:
        args = self.args
        world_size = max(args.world_size, 1)
        per_process = args.prompts_per_rollout
        per_iteration = per_process * world_size
        epoch, position = divmod(iteration, self._iterations_per_epoch())
        order = torch.randperm(len(self.train_dataset), generator=torch.Generator().manual_seed(args.seed + epoch))
        start = position * per_iteration + self.accelerator.process_index * per_process
        return order[start : start + per_process].tolist()

    # ------------------------------------------------------------------------------------------------------------
    # Training loop (Trainer.train calls this after resolving and loading the checkpoint)
    # ------------------------------------------------------------------------------------------------------------

    def _inner_training_loop(
        self, batch_size=None, args=None, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None
    ):
        args = self.args
        self.accelerator.free_memory()
        max_steps = self._total_iterations()
        iterations_per_epoch = self._iterations_per_epoch()
        num_train_epochs = math.ceil(max_steps / iterations_per_epoch)
        self._init_training_state(max_steps, iterations_per_epoch, num_train_epochs, resume_from_checkpoint, trial)
        model, _ = self._prepare_for_training(max_steps, None, resume_from_checkpoint)
        if resume_from_checkpoint is not None:
            self._load_ppo_state(resume_from_checkpoint)
            self._load_rng_state(resume_from_checkpoint)

        world_size = max(args.world_size, 1)
        logger.info("***** Running PPO *****")
        logger.info("  Prompts = %d, iterations = %d (from step %d)", len(self.train_dataset), max_steps, self.state.global_step)
        logger.info(
            "  Completions per iteration = %d (%d prompts × %d generations × %d processes)",
            args.local_batch_size * world_size, args.prompts_per_rollout, args.num_generations, world_size,
        )
        logger.info("  Objective = %s, advantages = %s", args.loss_type, args.advantage_estimator)

        start_time = time.time()
        self._initial_num_input_tokens_seen = self.state.num_input_tokens_seen
        self._initial_global_step = self.state.global_step
        self._tr_loss = torch.tensor(0.0, device=args.device)
        self._total_loss_scalar = 0.0
        self._globalstep_last_logged = self.state.global_step
        self._metrics_since_log = []
        model.zero_grad()
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)

        while self.state.global_step < max_steps and not self.control.should_training_stop:
            self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
            try:
                metrics = self._ppo_iteration(model)
            except RewardFunctionError as error:
                raise self._keep_progress(error, model, trial) from None
            self.state.global_step += 1
            self.state.epoch = self.state.global_step / iterations_per_epoch
            self._metrics_since_log.append(metrics)
            self._tr_loss += metrics["loss/policy_avg"] + args.vf_coef * metrics.get("loss/value_avg", 0.0)
            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            self._maybe_log_and_save(model, trial, start_time)

        output = self._finalize_training(trial, max_steps * args.prompts_per_rollout * world_size, start_time)
        if self.is_world_process_zero():
            plot_training_curves(self.state.log_history, os.path.join(args.output_dir, CURVES_NAME))
        return output

    def _maybe_log_and_save(self, model, trial, start_time) -> None:
        if self.control.should_log and self.state.global_step > self._globalstep_last_logged:
            logs = _average(self._metrics_since_log)
            self._metrics_since_log = []
            logs["learning_rate"] = self._get_learning_rate()
            logs["episode"] = self.state.global_step * self.args.local_batch_size * max(self.args.world_size, 1)
            tr_loss = self.accelerator.reduce(self._tr_loss.clone(), "mean").item()
            self._tr_loss -= self._tr_loss
            logs["loss"] = tr_loss / (self.state.global_step - self._globalstep_last_logged)
            self._total_loss_scalar += tr_loss
            self._globalstep_last_logged = self.state.global_step
            self.store_flos()
            self.log(logs, start_time)
        if self.control.should_save:
            self._save_checkpoint(model, trial)
            self.control = self.callback_handler.on_save(self.args, self.state, self.control)

    def _keep_progress(self, error: RewardFunctionError, model, trial) -> RewardFunctionError:
        """A reward that breaks mid-run must not cost the iterations already trained: checkpoint, then report."""
        message = f"At PPO step {self.state.global_step + 1}: {error}"
        if self.state.global_step > 0 and self.args.save_strategy != "no":
            self._save_checkpoint(model, trial)
            folder = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
            message += f"\nTraining up to step {self.state.global_step} was saved to {folder}; resume with resume_from_checkpoint."
        return RewardFunctionError(message)

    # ------------------------------------------------------------------------------------------------------------
    # One PPO iteration
    # ------------------------------------------------------------------------------------------------------------

    def _ppo_iteration(self, model) -> dict[str, float]:
        args = self.args
        accelerator = self.accelerator
        policy_and_value = self._policy_and_value
        device = accelerator.device
        timings: dict[str, float] = {}

        # 1. Rollout: sample completions with the current policy.
        tick = time.perf_counter()
        rows = [self.train_dataset[i] for i in self._prompt_indices(self.state.global_step)]
        rows = [row for row in rows for _ in range(args.num_generations)]  # k samples of a prompt side by side
        prompts = [row["prompt"] for row in rows]
        rollout_tensors = self._generate(prompts)
        completions = self.processing_class.batch_decode(rollout_tensors["responses"], skip_special_tokens=True)
        timings["time/rollout"] = time.perf_counter() - tick

        # 2. Score the completions.
        tick = time.perf_counter()
        columns = {key: [row[key] for row in rows] for key in rows[0] if key != "prompt"}
        scores, per_function = combine_rewards(self.reward_functions, args.reward_weights, prompts, completions, columns)
        scores = scores.to(device)
        contains_eos = rollout_tensors["contains_eos"]
        if args.missing_eos_penalty is not None:
            scores = scores - args.missing_eos_penalty * (~contains_eos).float()
        timings["time/scoring"] = time.perf_counter() - tick

        # 3. Log-probs of the sampled tokens under the old policy and the reference; values.
        tick = time.perf_counter()
        query_responses = rollout_tensors["query_responses"]
        attention_mask = rollout_tensors["attention_mask"]
        position_ids = rollout_tensors["position_ids"]
        responses = rollout_tensors["responses"]
        response_mask = rollout_tensors["response_mask"]
        old_logprobs, ref_logprobs, values = self._rollout_logprobs_and_values(
            policy_and_value, query_responses, attention_mask, position_ids, responses
        )
        timings["time/logprobs"] = time.perf_counter() - tick

        # 4. Per-token rewards: -beta_ref * KL_t everywhere, plus the sequence score on the last real token.
        kl = kl_estimate(old_logprobs, ref_logprobs, args.kl_estimator) * response_mask  # [B, T]
        non_score_rewards = -self.kl_ctl.value * kl
        last_index = response_mask.sum(dim=1).long() - 1  # [B]
        rewards = non_score_rewards.clone()
        rewards[torch.arange(len(rewards), device=device), last_index] += scores
        if args.whiten_rewards:
            rewards = whiten(rewards, response_mask, shift_mean=False)

        # 5. Advantages (and returns, the value model's labels).
        advantages, returns = self._advantages(rewards, values, response_mask)

        # 6. Epochs over shuffled minibatches.
        tick = time.perf_counter()
        rollout = Rollout(
            query_responses, attention_mask, position_ids, responses, response_mask,
            old_logprobs, ref_logprobs, values, advantages, returns,
        )
        stats = self._optimize(model, rollout)
        timings["time/optimization"] = time.perf_counter() - tick
        self.lr_scheduler.step()

        # 7. Metrics (averaged over processes), then adapt beta to the KL we just measured.
        sequence_kl = kl.sum(dim=1)
        metrics = {
            "objective/kl": sequence_kl.mean(),
            "objective/entropy": (-old_logprobs * response_mask).sum(dim=1).mean(),
            "objective/non_score_reward": non_score_rewards.sum(dim=1).mean(),
            "objective/rlhf_reward": (scores + non_score_rewards.sum(dim=1)).mean(),
            "objective/scores": scores.mean(),
            "val/num_eos_tokens": contains_eos.float().sum(),
            "val/response_length": response_mask.sum(dim=1).mean(),
            **{f"rewards/{name}": function_scores.to(device).mean() for name, function_scores in per_function.items()},
            **stats,
        }
        if values is not None:
            residual_variance = masked_var(returns - values, response_mask, unbiased=False)
            metrics["val/var_explained"] = 1.0 - residual_variance / masked_var(returns, response_mask, unbiased=False).clamp(min=1e-8)
        metrics.update({key: torch.tensor(seconds) for key, seconds in timings.items()})
        metrics = self._reduce(metrics)
        metrics["val/num_eos_tokens"] *= max(args.world_size, 1)  # a count: sum over processes, not mean
        metrics["objective/kl_coef"] = self.kl_ctl.value
        if args.loss_type == "kl_penalty":
            metrics["objective/kl_penalty_coef"] = self.kl_penalty_ctl.value
        n_episodes = args.local_batch_size * max(args.world_size, 1)
        self.kl_ctl.update(metrics["objective/kl"], n_episodes)
        self.kl_penalty_ctl.update(metrics["objective/kl"], n_episodes)

        if args.log_completions and (self.state.global_step % max(args.log_completions_steps, 1) == 0):
            self._log_completions(prompts, completions, scores)
        return metrics

    # ---- 1. rollout
    @torch.no_grad()
    def _generate(self, prompts: list[Any]) -> dict[str, torch.Tensor]:
        from transformers import GenerationConfig
        from trl.models import unwrap_model_for_generation

        args = self.args
        tokenizer = self.processing_class
        device = self.accelerator.device
        texts = [render_prompt(tokenizer, prompt) for prompt in prompts]
        truncation = {"truncation": True, "max_length": args.max_prompt_length} if args.max_prompt_length else {}
        previous_side = tokenizer.truncation_side
        tokenizer.truncation_side = "left"  # keep the end of a long prompt, where the question is
        try:
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False, **truncation)
        finally:
            tokenizer.truncation_side = previous_side
        query_ids = encoded["input_ids"].to(device)
        query_mask = encoded["attention_mask"].to(device)
        generation_config = GenerationConfig(
            max_new_tokens=args.response_length,
            do_sample=True,
            temperature=args.temperature,
            top_k=0,  # sample from the policy itself: no truncation, or the ratios would be off
            top_p=1.0,
            min_p=None,
            repetition_penalty=1.0,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=self._stop_token_ids or None,
            use_cache=True,
        )
        chunks = []
        with unwrap_model_for_generation(
            self.model_wrapped, self.accelerator, gather_deepspeed3_params=args.ds3_gather_for_generation
        ) as unwrapped:
            policy = unwrapped.policy
            was_training = policy.training
            policy.eval()
            try:
                for start in range(0, len(query_ids), args.local_rollout_forward_batch_size):
                    end = start + args.local_rollout_forward_batch_size
                    with self.accelerator.autocast():
                        output = policy.generate(
                            input_ids=query_ids[start:end],
                            attention_mask=query_mask[start:end],
                            generation_config=generation_config,
                        )
                    chunks.append(output[:, query_ids.shape[1] :])
            finally:
                policy.train(was_training)
        width = max(chunk.shape[1] for chunk in chunks)
        responses = torch.cat(
            [nn.functional.pad(chunk, (0, width - chunk.shape[1]), value=tokenizer.pad_token_id) for chunk in chunks]
        )
        # A completion ends at its first stop token (kept: the model must learn to stop); the rest is padding.
        is_stop = torch.isin(responses, torch.tensor(self._stop_token_ids, device=device)) if self._stop_token_ids else torch.zeros_like(responses, dtype=torch.bool)
        contains_eos = is_stop.any(dim=1)
        first_stop = torch.where(contains_eos, is_stop.float().argmax(dim=1), torch.full_like(contains_eos, width - 1, dtype=torch.long))
        positions = torch.arange(width, device=device).unsqueeze(0)
        response_mask = (positions <= first_stop.unsqueeze(1)).float()
        responses = torch.where(response_mask.bool(), responses, torch.full_like(responses, tokenizer.pad_token_id))
        attention_mask = torch.cat([query_mask, response_mask.long()], dim=1)
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        self.state.num_input_tokens_seen += int(self.accelerator.gather(attention_mask.sum()).sum().item())
        return {
            "query_responses": torch.cat([query_ids, responses], dim=1),
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "responses": responses,
            "response_mask": response_mask,
            "contains_eos": contains_eos,
        }

    # ---- 3. old / reference log-probs and values
    @torch.no_grad()
    def _rollout_logprobs_and_values(self, policy_and_value: PolicyAndValue, query_responses, attention_mask, position_ids, responses):
        args = self.args
        width = responses.shape[1]
        old_logprobs, ref_logprobs, values = [], [], []
        was_training = policy_and_value.training
        policy_and_value.eval()
        try:
            for start in range(0, len(responses), args.local_rollout_forward_batch_size):
                batch = slice(start, start + args.local_rollout_forward_batch_size)
                inputs = (query_responses[batch], attention_mask[batch], position_ids[batch])
                with self.accelerator.autocast():
                    logits = policy_and_value.policy_logits(*inputs, width)
                    old_logprobs.append(selective_log_softmax(logits.float() / args.temperature, responses[batch]))
                    del logits
                    if self.ref_model is not None:
                        ref_logits = _causal_lm_logits(self.ref_model, *inputs, width)
                    else:
                        with policy_and_value.reference() as reference:
                            ref_logits = _causal_lm_logits(reference, *inputs, width)
                    ref_logprobs.append(selective_log_softmax(ref_logits.float() / args.temperature, responses[batch]))
                    del ref_logits
                    if policy_and_value.has_values:
                        values.append(policy_and_value.values(*inputs, width))
        finally:
            policy_and_value.train(was_training)
        return torch.cat(old_logprobs), torch.cat(ref_logprobs), (torch.cat(values) if values else None)

    # ---- 5. advantages
    def _advantages(self, rewards, values, response_mask) -> tuple[torch.Tensor, torch.Tensor | None]:
        args = self.args
        if args.advantage_estimator == "gae":
            advantages, returns = gae(rewards, values, response_mask, gamma=args.gamma, lam=args.lam)
        else:
            # Sequence-level estimators: one return per completion (score plus its KL penalty), the same
            # advantage for each of its tokens.
            sequence_returns = rewards.sum(dim=1)  # [B]
            if args.advantage_estimator == "rloo":
                sequence_advantages = rloo_advantages(sequence_returns, args.num_generations)
            elif args.advantage_estimator == "grpo":
                sequence_advantages = grpo_advantages(sequence_returns, args.num_generations, scale=args.grpo_scale_rewards)
            else:
                batch_mean = self._reduce({"mean": sequence_returns.mean()})["mean"]
                if args.reinforce_baseline == "batch" or self.running_baseline is None:
                    baseline = batch_mean
                else:
                    baseline = self.running_baseline
                sequence_advantages = reinforce_advantages(sequence_returns, baseline)
                if self.running_baseline is None:
                    self.running_baseline = batch_mean
                else:  # updated after use, so the baseline never depends on the samples it is subtracted from
                    momentum = args.baseline_momentum
                    self.running_baseline = momentum * self.running_baseline + (1 - momentum) * batch_mean
            advantages = sequence_advantages.unsqueeze(1) * response_mask
            returns = None
        if args.whiten_advantages:
            advantages = whiten(advantages, response_mask)
        return advantages, returns

    # ---- 6. optimization
    def _optimize(self, model, rollout: Rollout) -> dict[str, torch.Tensor]:
        args = self.args
        accelerator = self.accelerator
        device = accelerator.device
        stats: dict[str, list[torch.Tensor]] = {
            key: []
            for key in (
                "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "policy/entropy_avg",
                "val/ratio", "val/ratio_var", "loss/value_avg", "val/clipfrac_avg", "grad_norm",
            )
        }
        with_values = rollout.values is not None
        response_width = rollout.responses.shape[1]
        model.train()
        for _ in range(args.num_ppo_epochs):
            order = torch.randperm(args.local_batch_size, device=device)
            for mini_start in range(0, args.local_batch_size, args.local_mini_batch_size):
                mini_batch = order[mini_start : mini_start + args.local_mini_batch_size]
                # Gradient accumulation over micro-batches: DDP synchronizes on the last one only.
                micro_batches = mini_batch.split(args.per_device_train_batch_size)
                for position, index in enumerate(micro_batches):
                    is_last = position == len(micro_batches) - 1
                    accelerator.gradient_state._set_sync_gradients(is_last)
                    mask = rollout.response_mask[index]
                    old_logprobs = rollout.old_logprobs[index]
                    advantages = rollout.advantages[index]
                    with contextlib.nullcontext() if is_last else accelerator.no_sync(model):
                        logits, new_values = model(
                            rollout.query_responses[index],
                            rollout.attention_mask[index],
                            rollout.position_ids[index],
                            response_width,
                            with_values,
                        )
                        logits = logits.float() / args.temperature
                        new_logprobs = selective_log_softmax(logits, rollout.responses[index])
                        if args.loss_type == "clip":
                            policy = ppo_clip_loss(new_logprobs, old_logprobs, advantages, mask, args.cliprange)
                        else:
                            policy = ppo_kl_penalty_loss(
                                new_logprobs, old_logprobs, rollout.ref_logprobs[index], advantages, mask,
                                kl_coef=self.kl_penalty_ctl.value, kl_estimator=args.kl_penalty_estimator,
                            )
                        loss = policy.loss
                        if with_values:
                            value = value_loss(
                                new_values, rollout.values[index], rollout.returns[index], mask, args.cliprange_value
                            )
                            loss = loss + args.vf_coef * value.loss
                        accelerator.backward(loss / len(micro_batches))
                    if is_last:
                        if args.max_grad_norm and args.max_grad_norm > 0:
                            grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                            stats["grad_norm"].append(torch.as_tensor(grad_norm, dtype=torch.float32, device=device))
                        self.optimizer.step()
                        self.optimizer.zero_grad()
                    with torch.no_grad():
                        ratio = torch.exp(new_logprobs - old_logprobs)
                        stats["policy/approxkl_avg"].append(policy.approx_kl)
                        stats["policy/clipfrac_avg"].append(policy.clipfrac)
                        stats["loss/policy_avg"].append(policy.loss.detach())
                        stats["policy/entropy_avg"].append(masked_mean(entropy_from_logits(logits), mask))
                        stats["val/ratio"].append(masked_mean(ratio, mask))
                        stats["val/ratio_var"].append(masked_var(ratio, mask, unbiased=False))
                        if with_values:
                            stats["loss/value_avg"].append(value.loss.detach())
                            stats["val/clipfrac_avg"].append(value.clipfrac)
                    del logits, new_logprobs, new_values, loss
        return {key: torch.stack(items).mean() for key, items in stats.items() if items}

    def _reduce(self, metrics: dict[str, torch.Tensor]) -> dict[str, float]:
        """Mean of each scalar metric over processes, as Python floats."""
        keys = list(metrics)
        stacked = torch.stack([torch.as_tensor(metrics[k], dtype=torch.float32, device=self.accelerator.device) for k in keys])
        stacked = self.accelerator.reduce(stacked, "mean")
        return {key: float(value) for key, value in zip(keys, stacked.tolist())}

    # ---- samples
    def _log_completions(self, prompts: list[Any], completions: list[str], scores: torch.Tensor) -> None:
        from accelerate.utils import gather_object

        count = self.args.num_completions_to_log
        rows = [
            {"step": self.state.global_step + 1, "prompt": _prompt_text(p), "completion": c, "score": float(s)}
            for p, c, s in zip(prompts[:count], completions[:count], scores[:count].tolist())
        ]
        rows = gather_object(rows)[:count]
        if not self.is_world_process_zero():
            return
        os.makedirs(self.args.output_dir, exist_ok=True)
        with open(os.path.join(self.args.output_dir, COMPLETIONS_NAME), "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        report_to = self.args.report_to or []
        if "wandb" in report_to:
            import wandb

            if wandb.run is not None:
                import pandas as pd

                wandb.log({"completions": wandb.Table(dataframe=pd.DataFrame(rows))})
        if "trackio" in report_to:
            import trackio

            import pandas as pd

            trackio.log({"completions": trackio.Table(dataframe=pd.DataFrame(rows))})

    # ------------------------------------------------------------------------------------------------------------
    # Saving and resuming: policy adapter at the root, value adapter + head in value/, PPO state in ppo_state.json
    # ------------------------------------------------------------------------------------------------------------

    def _save_files(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        policy_and_value = self._policy_and_value
        policy = policy_and_value.policy
        if policy_and_value.is_peft:
            policy.save_pretrained(output_dir, selected_adapters=[POLICY_ADAPTER])
        else:
            policy.save_pretrained(output_dir)
        if policy_and_value.shares_base:
            from safetensors.torch import save_file

            policy.save_pretrained(output_dir, selected_adapters=[VALUE_ADAPTER])  # -> <output_dir>/value/
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in policy_and_value.value_head.state_dict().items()},
                os.path.join(output_dir, VALUE_FOLDER, VALUE_HEAD_NAME),
            )
        elif policy_and_value.value_model is not None:
            policy_and_value.value_model.save_pretrained(os.path.join(output_dir, VALUE_MODEL_FOLDER))
        self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        with open(os.path.join(output_dir, PPO_STATE_NAME), "w", encoding="utf-8") as f:
            json.dump(self._ppo_state(), f, indent=2)

    def _ppo_state(self) -> dict[str, Any]:
        return {
            "kl_coef": self.kl_ctl.state_dict(),
            "kl_penalty_coef": self.kl_penalty_ctl.state_dict(),
            "running_baseline": self.running_baseline,
        }

    def _load_ppo_state(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, PPO_STATE_NAME)
        if not os.path.isfile(path):
            logger.warning("%s has no %s: KL coefficients and baseline restart from the config.", checkpoint, PPO_STATE_NAME)
            return
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        self.kl_ctl.load_state_dict(state["kl_coef"])
        self.kl_penalty_ctl.load_state_dict(state["kl_penalty_coef"])
        self.running_baseline = state.get("running_baseline")

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from safetensors.torch import load_file

        policy_and_value = self.accelerator.unwrap_model(model if model is not None else self.model)
        policy = policy_and_value.policy
        device = next(policy.parameters()).device

        def weights(folder: str, name: str) -> dict[str, torch.Tensor]:
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                raise ValueError(f"Can't resume from {resume_from_checkpoint}: {path} is missing.")
            return load_file(path, device=str(device))

        if policy_and_value.is_peft:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(policy, weights(resume_from_checkpoint, "adapter_model.safetensors"), adapter_name=POLICY_ADAPTER)
            if policy_and_value.shares_base:
                value_folder = os.path.join(resume_from_checkpoint, VALUE_FOLDER)
                set_peft_model_state_dict(policy, weights(value_folder, "adapter_model.safetensors"), adapter_name=VALUE_ADAPTER)
                policy_and_value.value_head.load_state_dict(weights(value_folder, VALUE_HEAD_NAME))
            policy.set_adapter(POLICY_ADAPTER)
            policy_and_value._restore_trainable()
        else:
            _load_pretrained_weights(policy, resume_from_checkpoint)
        if policy_and_value.value_model is not None:
            _load_pretrained_weights(policy_and_value.value_model, os.path.join(resume_from_checkpoint, VALUE_MODEL_FOLDER))

    # ------------------------------------------------------------------------------------------------------------
    # Model card
    # ------------------------------------------------------------------------------------------------------------

    def card_hyperparameters(self) -> dict[str, Any]:
        args = self.args
        values = {
            "loss_type": args.loss_type,
            "advantage_estimator": args.advantage_estimator,
            "num_generations": args.num_generations,
            "response_length": args.response_length,
            "temperature": args.temperature,
            "num_ppo_epochs": args.num_ppo_epochs,
            "num_mini_batches": args.num_mini_batches,
            "cliprange": args.cliprange if args.loss_type == "clip" else None,
            "kl_coef": args.kl_coef,
            "kl_estimator": args.kl_estimator,
            "kl_penalty_coef": args.kl_penalty_coef if args.loss_type == "kl_penalty" else None,
            "adaptive_kl": args.adaptive_kl,
            "target_kl": args.target_kl if args.adaptive_kl else None,
            "gamma": args.gamma if args.advantage_estimator == "gae" else None,
            "lam": args.lam if args.advantage_estimator == "gae" else None,
            "vf_coef": args.vf_coef if args.advantage_estimator == "gae" else None,
            "cliprange_value": args.cliprange_value if args.advantage_estimator == "gae" else None,
            "reward": ", ".join(f.name for f in self.reward_functions),
        }
        return {**values, **super().card_hyperparameters()}


def _load_pretrained_weights(model: nn.Module, folder: str) -> None:
    """Load a ``save_pretrained`` folder's weights into an existing model (single file or sharded)."""
    from safetensors.torch import load_file

    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        model.load_state_dict(load_file(single, device="cpu"), strict=False)
        return
    from transformers.modeling_utils import load_sharded_checkpoint

    if not os.path.isfile(os.path.join(folder, "model.safetensors.index.json")):
        raise ValueError(f"Can't resume: no model weights in {folder}.")
    load_sharded_checkpoint(model, folder, strict=False)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in prompt)
    return str(prompt)


def _average(history: list[dict[str, float]]) -> dict[str, float]:
    keys = {key for entry in history for key in entry}
    return {key: sum(e[key] for e in history if key in e) / sum(1 for e in history if key in e) for key in sorted(keys)}


def plot_training_curves(log_history: list[dict[str, Any]], path: str) -> str | None:
    """Reward, KL, entropy and losses over PPO steps as a PNG (``ppo_curves.png``); ``None`` when nothing was logged."""
    panels = [
        ("reward", ["objective/scores", "objective/rlhf_reward"]),
        ("KL to the reference (nats / completion)", ["objective/kl"]),
        ("entropy (nats / completion)", ["objective/entropy"]),
        ("loss", ["loss/policy_avg", "loss/value_avg"]),
    ]
    entries = [e for e in log_history if "objective/scores" in e]
    if not entries:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for axis, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            points = [(e["step"], e[key]) for e in entries if key in e]
            if points:
                axis.plot(*zip(*points), marker="." if len(points) < 50 else None, label=key)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if len(keys) > 1:
            axis.legend(fontsize=8)
    for axis in axes[-1]:
        axis.set_xlabel("PPO step")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
