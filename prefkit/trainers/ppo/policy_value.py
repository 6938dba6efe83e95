r"""The trained roles of RLHF in one module: the policy, its reference and the value model, on one shared base.

Under LoRA the four roles cost about one model: the **policy** is the adapter ``"default"`` on a (4-bit) base; the
**reference** is the same base with the adapter disabled; the **value model** is a second adapter (``"value"``) on the
same base plus a scalar head (:func:`add_value_adapter`). Without LoRA the value model is a separate decoder
``*ForSequenceClassification`` and the reference a frozen copy kept by the trainer.

On disk (:meth:`PolicyAndValue.save`): the policy at the root of the folder, so that it loads with plain PEFT or
transformers; the value adapter and ``value_head.safetensors`` in ``value/``, or a separate value model in
``value_model/``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings

import torch
import torch.nn as nn

from ...logprobs import DEFAULT_LOGPROB_CHUNK_SIZE, TokenLogprobs, causal_lm_token_logprobs, check_logprob_chunk_size

POLICY_ADAPTER = "default"  # PEFT's name for the first adapter: the policy
VALUE_ADAPTER = "value"
VALUE_FOLDER = "value"  # <output_dir>/value/: the value adapter and value_head.safetensors (shared base)
VALUE_MODEL_FOLDER = "value_model"  # <output_dir>/value_model/: a separate value model (full fine-tuning)
VALUE_HEAD_NAME = "value_head.safetensors"


def causal_lm_logits(model, input_ids, attention_mask, position_ids, response_width: int) -> torch.Tensor:
    """Logits that predict the last ``response_width`` tokens, ``[batch, response_width, vocab]``."""
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=response_width + 1,
        use_cache=False,
    )
    return output.logits[:, -response_width - 1 : -1]


def backbone_and_head(sequence_classifier):
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

    ``forward`` returns the policy's response logits (or, with ``return_logprobs=True``, their log-probs and entropy
    computed chunk by chunk, ``logprob_chunk_size`` tokens at a time, without the full logits) and the values in one
    call, so that DDP sees one forward per backward and synchronizes the gradients of both.
    """

    def __init__(
        self,
        policy: nn.Module,
        value_model: nn.Module | None = None,
        value_head: nn.Module | None = None,
        logprob_chunk_size: int | None = DEFAULT_LOGPROB_CHUNK_SIZE,
    ):
        super().__init__()
        if value_model is not None and value_head is not None:
            raise ValueError("Give either a separate value_model or a value_head on the shared base, not both.")
        check_logprob_chunk_size(logprob_chunk_size)
        self.logprob_chunk_size = logprob_chunk_size
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
        return causal_lm_logits(self.policy, input_ids, attention_mask, position_ids, response_width)

    def policy_logprobs(
        self, input_ids, attention_mask, position_ids, response_width: int, *, temperature: float = 1.0,
        return_entropy: bool = False,
    ) -> TokenLogprobs:
        r""":math:`\log\pi_\theta(a_t \mid s_t)` of the last ``response_width`` tokens at ``temperature``, ``[batch,
        response_width]``: ``selective_log_softmax(policy_logits(...).float() / temperature, responses)`` without the
        ``[batch, response_width, vocab]`` logits, ``logprob_chunk_size`` tokens of the output head at a time
        (:func:`prefkit.logprobs.causal_lm_token_logprobs`). With ``return_entropy``, also each position's entropy
        (no gradient), what ``entropy_from_logits`` gives."""
        return causal_lm_token_logprobs(
            self.policy, input_ids, attention_mask, position_ids, response_width,
            temperature=temperature, chunk_size=self.logprob_chunk_size, return_entropy=return_entropy,
        )

    def reference_logprobs(
        self, ref_model: nn.Module | None, input_ids, attention_mask, position_ids, response_width: int, *,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        r""":math:`\log\pi_{ref}(a_t \mid s_t)`, ``[batch, response_width]``: under ``ref_model``, or the policy with
        its adapter disabled when ``ref_model`` is ``None`` (LoRA); chunked like :meth:`policy_logprobs`."""
        if ref_model is not None:
            return causal_lm_token_logprobs(
                ref_model, input_ids, attention_mask, position_ids, response_width,
                temperature=temperature, chunk_size=self.logprob_chunk_size,
            ).logprobs
        with self.reference() as reference:
            return causal_lm_token_logprobs(
                reference, input_ids, attention_mask, position_ids, response_width,
                temperature=temperature, chunk_size=self.logprob_chunk_size,
            ).logprobs

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
            backbone, head = backbone_and_head(self.value_model)
            hidden = backbone(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state
        else:
            raise RuntimeError("This setup has no value model (advantage_estimator is not 'gae').")
        hidden = hidden[:, -response_width - 1 : -1]
        return head(hidden.to(head.weight.dtype)).squeeze(-1).float()

    def forward(
        self, input_ids, attention_mask, position_ids, response_width: int, with_values: bool = True, *,
        return_logprobs: bool = False, temperature: float = 1.0,
    ):
        """``(logits, values)``; with ``return_logprobs``, ``(TokenLogprobs(logprobs, entropy), values)`` at
        ``temperature`` instead of the logits (:meth:`policy_logprobs`, entropy included)."""
        if return_logprobs:
            policy = self.policy_logprobs(
                input_ids, attention_mask, position_ids, response_width, temperature=temperature, return_entropy=True
            )
        else:
            policy = self.policy_logits(input_ids, attention_mask, position_ids, response_width)
        values = self.values(input_ids, attention_mask, position_ids, response_width) if with_values and self.has_values else None
        return policy, values

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

    # ---- saving and resuming: the policy at the root, the value adapter and head in value/ (or value_model/)
    def save(self, folder: str) -> None:
        """Write the policy to ``folder`` (adapter only under LoRA) and the value model next to it."""
        if self.is_peft:
            self.policy.save_pretrained(folder, selected_adapters=[POLICY_ADAPTER])
        else:
            self.policy.save_pretrained(folder)
        if self.shares_base:
            from safetensors.torch import save_file

            self.policy.save_pretrained(folder, selected_adapters=[VALUE_ADAPTER])  # -> <folder>/value/
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                os.path.join(folder, VALUE_FOLDER, VALUE_HEAD_NAME),
            )
        elif self.value_model is not None:
            self.value_model.save_pretrained(os.path.join(folder, VALUE_MODEL_FOLDER))

    def load(self, folder: str) -> None:
        """Load what :meth:`save` wrote into this module's weights (to resume training from a checkpoint)."""
        from safetensors.torch import load_file

        device = next(self.policy.parameters()).device

        def weights(subfolder: str, name: str) -> dict[str, torch.Tensor]:
            path = os.path.join(subfolder, name)
            if not os.path.isfile(path):
                raise ValueError(f"Can't resume from {folder}: {path} is missing.")
            return load_file(path, device=str(device))

        if self.is_peft:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.policy, weights(folder, "adapter_model.safetensors"), adapter_name=POLICY_ADAPTER)
            if self.shares_base:
                value_folder = os.path.join(folder, VALUE_FOLDER)
                set_peft_model_state_dict(self.policy, weights(value_folder, "adapter_model.safetensors"), adapter_name=VALUE_ADAPTER)
                self.value_head.load_state_dict(weights(value_folder, VALUE_HEAD_NAME))
            self.policy.set_adapter(POLICY_ADAPTER)
            self._restore_trainable()
        else:
            _load_pretrained_weights(self.policy, folder)
        if self.value_model is not None:
            _load_pretrained_weights(self.value_model, os.path.join(folder, VALUE_MODEL_FOLDER))


def add_value_adapter(policy, rank: int | None = None) -> nn.Module:
    """Add the ``"value"`` LoRA adapter to the policy's base and return a zero-initialized scalar head.

    The adapter copies the policy adapter's config (same target modules; ``rank`` may be smaller, at the same scale
    ``alpha / r``), without the policy's ``modules_to_save``.
    """
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


def disable_dropout(model: nn.Module | None) -> None:
    """PPO's ratio must be exactly 1 on the first minibatch: no dropout in any role (LoRA dropout included)."""
    if model is None:
        return
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


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
