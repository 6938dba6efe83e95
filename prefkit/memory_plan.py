"""A memory plan: from the model's shape and the run's settings, the batch split and gradient checkpointing that fit a
memory budget, decided before any weight loads.

``DPOConfig(memory_budget="24GiB")`` (likewise ``RewardConfig`` and ``PPOConfig``) makes the trainer, at start-up,

1. read the model's config (``transformers.AutoConfig``: a few kilobytes, never the weights),
2. estimate the peak memory of one training step (:func:`estimate_memory`) for each candidate setting,
3. keep the effective batch (``per_device_train_batch_size × gradient_accumulation_steps``) and choose the largest
   micro-batch that divides it and fits, gradient checkpointing off when it fits without it, and (DPO, full fine-tuning)
   precomputed reference log-probs when only dropping the reference copy makes it fit (:func:`plan_memory`),
4. print the plan, and after training the measured peak next to the estimate (``memory_plan.json`` in ``output_dir``).

The default, ``memory_budget="auto"``, plans against the CUDA device's total memory, and plans nothing on a CPU or MPS
machine, where every setting stays as given. ``"off"`` (or ``None``) turns the plan off everywhere.

What the estimate counts, in bytes, per process (every process holds whole weights: DeepSpeed ZeRO-3 and FSDP
sharding are not modelled, and ``"auto"`` plans nothing under them):

- ``weights``: the base weights at their storage size: 4-bit NF4 linear layers at 0.5 byte per weight plus their
  block statistics, 8-bit at 1 byte plus a float per row, the rest (embeddings, norms, output head) in float32 under
  quantization (``peft.prepare_model_for_kbit_training`` upcasts them), otherwise in the weights' dtype;
- ``trainable``: the trained parameters (the LoRA adapter, in float32 as PEFT keeps it, or every weight), their
  gradients and AdamW's two moments;
- ``reference``: a second copy of the weights when the reference is one (full fine-tuning without precomputed
  reference log-probs); nothing under LoRA (the adapter-disabled base) or with precomputed log-probs;
- ``extra_models``: PPO's value model (a second adapter under LoRA, a second model otherwise) and a reward model;
- ``activations``: the tensors saved for backward, per token and layer, for a Llama-shaped decoder (norms upcast to
  float32, the attention inputs and output, the gated MLP's four intermediates, LoRA's dropout copies); with gradient
  checkpointing only each layer's input plus one layer recomputed during backward; under mixed precision with float32
  weights, autocast's half-precision copies of the linear weights;
- ``attention_mask``: the ``[rows, 1, T, T]`` boolean mask (padding, prefix sharing);
- ``head``: the output head's buffers: TRL's fused log-prob head computes ``[4096, 32768]`` tiles, never the
  ``[batch, time, vocab]`` logits, and its backward a float32 gradient of the hidden states (and of the head's weights
  when they are trained); PPO's chunked log-probs likewise (``logprob_chunk_size``);
- ``backward``: the gradients in flight while backward runs through a layer (the residual stream's and the MLP's);
- ``reference_pass``: DPO's no-gradient reference forward each step, after the policy's forward and while its
  activations are held (one layer's MLP intermediates and a head tile); it and the backward buffers (``head``,
  ``backward``) are not alive at once, so the peak counts the larger;
- ``rollout``: PPO's generation: the KV cache of ``local_rollout_forward_batch_size`` sequences.

What it does not count: the CUDA context (several hundred MiB), allocator caching and fragmentation, NCCL buffers,
the optimizer's temporary buffers (``foreach`` AdamW), dataloader workers. The plan therefore aims at 90% of the budget
(:data:`RESERVE_FRACTION`). It has been checked against counts of the bytes saved for backward on CPU
(``tests/test_memory_plan.py``), not against a GPU's measured peak.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

RESERVE_FRACTION = 0.1
AUTO_RESERVE_FRACTION = 0.25  # memory_budget="auto": a plan nobody asked for aims at 75% of the device
"""Share of the budget the plan leaves for what the estimate does not count (CUDA context, allocator caching,
fragmentation)."""

PLAN_FILE = "memory_plan.json"

_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_OFF = ("off", "none", "null", "no", "false", "")

BUDGET_FORMS = ("a size such as '24GiB', '24GB', '500MiB' or a number of bytes, 'auto' (the CUDA device's memory; "
                "nothing is planned on CPU or MPS) or 'off'")


# --------------------------------------------------------------------------------------------------------------------
# The budget
# --------------------------------------------------------------------------------------------------------------------


def parse_memory_budget(value: Any, field_name: str = "memory_budget") -> int | str | None:
    """``"24GiB"``, ``"24GB"``, ``"500MiB"``, ``"1.5GiB"``, ``25769803776`` -> bytes; ``"auto"`` -> ``"auto"``;
    ``"off"`` / ``None`` -> ``None``. GB is 10^9 bytes, GiB (and a bare G) 2^30. Anything else is a ``ValueError``
    naming the field and the accepted forms."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{field_name}={value!r} is not a memory budget: give {BUDGET_FORMS}.")
    if isinstance(value, (int, float)):
        if value <= 0 or not math.isfinite(value):
            raise ValueError(f"{field_name}={value!r} must be a positive number of bytes: give {BUDGET_FORMS}.")
        return int(value)
    text = str(value).strip()
    if text.lower() == "auto":
        return "auto"
    if text.lower() in _OFF:
        return None
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"{field_name}={value!r} is not a memory budget: give {BUDGET_FORMS}.")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"{field_name}={value!r} must be more than 0 bytes: give {BUDGET_FORMS}.")
    return size


def format_bytes(size: float) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(size) >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{int(size)} B"


def device_memory() -> int | None:
    """The total memory of this process's CUDA device, or None without CUDA (CPU, MPS: nothing is planned)."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(os.environ.get("LOCAL_RANK", "0") or 0) % max(torch.cuda.device_count(), 1)
    return int(torch.cuda.get_device_properties(index).total_memory)


@dataclass
class MemoryBudgetArguments:
    """The ``memory_budget`` field of :class:`~prefkit.DPOConfig`, :class:`~prefkit.RewardConfig` and
    :class:`~prefkit.PPOConfig`."""

    memory_budget: str | None = field(
        default="auto",
        metadata={
            "help": "Memory per device to plan for: '24GiB', '24GB', '500MiB' or bytes. Before the model loads, the "
            "trainer chooses the micro-batch (keeping per_device_train_batch_size × gradient_accumulation_steps), "
            "gradient checkpointing and (DPO) precomputed reference log-probs that fit, prints the plan and its "
            "estimate, and after training the measured peak (memory_plan.json). 'auto' (default): the CUDA device's "
            "memory; nothing is planned on CPU or MPS. 'off': keep the settings as given."
        },
    )

    def _check_memory_budget(self) -> None:
        parse_memory_budget(self.memory_budget)


# --------------------------------------------------------------------------------------------------------------------
# The model's shape
# --------------------------------------------------------------------------------------------------------------------

_NON_GATED_MLP = {"bert", "roberta", "distilbert", "electra", "deberta", "deberta-v2", "xlm-roberta", "gpt2", "gpt_neox",
                  "gptj", "opt", "bloom", "falcon", "mpnet", "modernbert", "phi"}
_ENCODERS = {"bert", "roberta", "distilbert", "electra", "deberta", "deberta-v2", "xlm-roberta", "mpnet", "modernbert"}
_LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a model's config."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool = True
    gated_mlp: bool = True
    dtype_bytes: int = 4  # of the checkpoint's weights (config.dtype / torch_dtype), 4 when it says nothing
    model_type: str = ""

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden = int(config.hidden_size)
        heads = int(getattr(config, "num_attention_heads", None) or max(hidden // 64, 1))
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        dtype_name = str(dtype).replace("torch.", "")
        return cls(
            num_layers=int(config.num_hidden_layers),
            hidden_size=hidden,
            intermediate_size=int(getattr(config, "intermediate_size", None) or 4 * hidden),
            num_heads=heads,
            num_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            vocab_size=int(getattr(config, "vocab_size", 0) or 0),
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            gated_mlp=getattr(config, "model_type", "") not in _NON_GATED_MLP,
            dtype_bytes=2 if dtype_name in ("bfloat16", "float16") else 4,
            model_type=str(getattr(config, "model_type", "") or ""),
        )

    @property
    def is_encoder(self) -> bool:
        return self.model_type in _ENCODERS

    def linears(self) -> list[tuple[str, int, int]]:
        """``(name, in_features, out_features)`` of one layer's linear layers, Llama's names."""
        h, q, kv, i = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim, self.intermediate_size
        layers = [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h)]
        if self.gated_mlp:
            layers.append(("gate_proj", h, i))
        return [*layers, ("up_proj", h, i), ("down_proj", i, h)]

    @property
    def linear_params(self) -> int:
        return self.num_layers * sum(fan_in * fan_out for _, fan_in, fan_out in self.linears())

    @property
    def other_params(self) -> int:
        """Embeddings, the output head unless tied, norms."""
        embeddings = self.vocab_size * self.hidden_size
        return embeddings * (1 if self.tie_word_embeddings else 2) + (2 * self.num_layers + 1) * self.hidden_size

    @property
    def num_params(self) -> int:
        return self.linear_params + self.other_params

    def targeted(self, target_modules: Any = ("all-linear",)) -> list[tuple[str, int, int]]:
        """The linear layers of one layer that LoRA targets."""
        targets = [target_modules] if isinstance(target_modules, str) else list(target_modules or ["all-linear"])
        known = set(targets) & set(_LLAMA_LINEARS)
        names = set(_LLAMA_LINEARS) if "all-linear" in targets or not known else known
        return [linear for linear in self.linears() if linear[0] in names]

    def lora_params(self, rank: int, target_modules: Any = ("all-linear",)) -> int:
        """Parameters of a LoRA adapter of this rank on the targeted linear layers (``all-linear``: every one but the
        output head). Names the shape does not know (``query``, ``c_attn``...) count as all-linear, an upper bound."""
        return self.num_layers * sum(rank * (fan_in + fan_out) for _, fan_in, fan_out in self.targeted(target_modules))

    def lora_inputs(self, target_modules: Any = ("all-linear",)) -> int:
        """Sum of the input widths of the targeted linear layers of one layer (what LoRA's dropout copies)."""
        return sum(fan_in for _, fan_in, _ in self.targeted(target_modules))

    def lora_modules(self, target_modules: Any = ("all-linear",)) -> int:
        return len(self.targeted(target_modules))


def model_shape(model: Any, *, revision: str | None = None, trust_remote_code: bool = False) -> ModelShape:
    """The shape of a model given by name or folder (its config only, never its weights) or already loaded."""
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoConfig

        name = os.fspath(model)
        try:
            config = AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
        except (OSError, ValueError):
            from .models import EMBEDDED_MODELS, resolve_model_path

            if name not in EMBEDDED_MODELS:
                raise
            config = AutoConfig.from_pretrained(resolve_model_path(name, revision=revision))  # the offline copy
        return ModelShape.from_config(config)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return ModelShape.from_config(base.config)


# --------------------------------------------------------------------------------------------------------------------
# The estimate
# --------------------------------------------------------------------------------------------------------------------

HEAD_TOKEN_CHUNK = 4096  # TRL's fused log-prob head: tiles of [4096 tokens, 32768 vocabulary entries]
HEAD_VOCAB_CHUNK = 32768


@dataclass(frozen=True)
class Workload:
    """Everything about a run the estimate depends on except the three things a plan chooses (micro-batch, gradient
    checkpointing, precomputed reference log-probs).

    ``rows_per_example`` rows of ``seq_len`` tokens go through the model per example: DPO's batch holds chosen and
    rejected (2), prefix-shared pairs one row ``prompt | chosen | rejected`` (1, with ``seq_len`` that long)."""

    method: str = "dpo"  # "dpo", "reward", "ppo"
    seq_len: int = 1024
    rows_per_example: int = 1
    quantization: str | None = None
    use_peft: bool = False
    lora_r: int = 16
    lora_target_modules: tuple[str, ...] = ("all-linear",)
    lora_dropout: float = 0.0
    weight_bytes: int = 4  # dtype of the unquantized weights as loaded
    activation_bytes: int = 4  # 2 under bf16/fp16 mixed precision
    # "none", "adapter" (LoRA: the base with the adapter disabled), "copy" (a second model, which DPO drops when the
    # reference log-probs are precomputed), "given" (a second model passed in, kept either way)
    reference: str = "none"
    value: str = "none"  # PPO: "none", "adapter", "copy"
    reward_model_bytes: int = 0
    head: str = "fused"  # "fused" (TRL's / PPO's chunked log-probs), "score" (a reward model's scalar head)
    head_token_chunk: int = HEAD_TOKEN_CHUNK
    head_vocab_chunk: int = HEAD_VOCAB_CHUNK
    rollout_batch_size: int = 0
    rollout_tokens: int = 0


@dataclass
class MemoryEstimate:
    """Estimated peak bytes of one training step on one process, by part (see the module docstring)."""

    weights: int = 0
    trainable: int = 0
    reference: int = 0
    extra_models: int = 0
    activations: int = 0
    attention_mask: int = 0
    head: int = 0
    backward: int = 0
    reference_pass: int = 0
    rollout: int = 0

    @property
    def total(self) -> int:
        # DPO's reference forward runs after the policy's forward and before its backward
        training = self.activations + self.attention_mask + max(self.head + self.backward, self.reference_pass)
        return self.weights + self.trainable + self.reference + self.extra_models + max(training, self.rollout)

    @property
    def static(self) -> int:
        """What is held before the first step (weights, adapter, copies): what CPU RSS growth does not see."""
        return self.weights + self.reference + self.extra_models

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def layer_activation_bytes(shape: ModelShape, workload: Workload) -> float:
    """Bytes saved for backward per token by one decoder layer (no gradient checkpointing).

    Two RMSNorms (their input upcast to float32, their output), the attention's input, its query/key/value and output
    (saved by scaled-dot-product attention) and the output projection's input, the gated MLP's input, gate, activation,
    up projection and product; LoRA adds per targeted layer its dropout's mask and copy (when dropout is on) and its
    rank-wide intermediate."""
    a = workload.activation_bytes
    h, i = shape.hidden_size, shape.intermediate_size
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    norms = 2 * (4 * h + a * h)
    attention = a * h + a * (3 * q + 2 * kv) + 4 * shape.num_heads
    mlp = a * h + (4 if shape.gated_mlp else 2) * a * i
    lora = 0
    if workload.use_peft:
        lora = a * workload.lora_r * shape.lora_modules(workload.lora_target_modules)
        if workload.lora_dropout > 0:
            lora += (1 + a) * shape.lora_inputs(workload.lora_target_modules)
    return norms + attention + mlp + lora


def _weights_bytes(shape: ModelShape, workload: Workload) -> int:
    if workload.quantization == "4bit":
        # NF4: half a byte per weight; double quantization: an 8-bit absmax per 64 weights, a float per 256 of those
        linear = shape.linear_params * (0.5 + 1 / 64 + 4 / (64 * 256))
        return int(linear + 4 * shape.other_params)
    if workload.quantization == "8bit":
        rows = shape.num_layers * sum(fan_out for _, _, fan_out in shape.linears())
        return int(shape.linear_params + 4 * rows + 4 * shape.other_params)
    return shape.num_params * workload.weight_bytes


def estimate_memory(
    shape: ModelShape,
    workload: Workload,
    *,
    micro_batch_size: int,
    gradient_checkpointing: bool,
    precompute_ref_log_probs: bool = False,
) -> MemoryEstimate:
    """Estimated peak memory of one training step (forward and backward of one micro-batch) on one process."""
    w = workload
    a = w.activation_bytes
    estimate = MemoryEstimate(weights=_weights_bytes(shape, w))

    # trained parameters + their gradients + AdamW's two moments, in the parameter's dtype (PEFT keeps an adapter in
    # float32); full fine-tuning's weights themselves are already in `weights`
    if w.use_peft:
        estimate.trainable = shape.lora_params(w.lora_r, w.lora_target_modules) * 4 * 4
    else:
        estimate.trainable = shape.num_params * w.weight_bytes * 3

    if w.reference == "given" or (w.reference == "copy" and not precompute_ref_log_probs):
        estimate.reference = _weights_bytes(shape, w)
    if w.value == "copy":  # a second model, trained: weights, gradients, AdamW
        estimate.extra_models += shape.num_params * w.weight_bytes * 4
    elif w.value == "adapter":
        estimate.extra_models += shape.lora_params(w.lora_r, w.lora_target_modules) * 4 * 4
    estimate.extra_models += w.reward_model_bytes

    rows = micro_batch_size * w.rows_per_example
    tokens = rows * w.seq_len
    per_layer = layer_activation_bytes(shape, w)
    passes = 2 if w.value in ("adapter", "copy") else 1  # PPO's value forward keeps its own activations
    if gradient_checkpointing:
        # every layer's input (the residual stream, in the weights' dtype), and one layer recomputed during backward
        residual = a if w.quantization else w.weight_bytes
        activations = tokens * (shape.num_layers * residual * shape.hidden_size * passes + per_layer)
    else:
        activations = tokens * per_layer * shape.num_layers * passes
    activations += tokens * (4 * shape.hidden_size + a * shape.hidden_size)  # the final norm
    if a < w.weight_bytes and not w.quantization:
        activations += shape.linear_params * a  # autocast's half-precision copies of the linear weights
    estimate.activations = int(activations)
    estimate.backward = int(tokens * a * (2 * shape.hidden_size + 3 * shape.intermediate_size))
    estimate.attention_mask = rows * w.seq_len * w.seq_len

    if w.head == "fused":
        tile_tokens = min(tokens, w.head_token_chunk or tokens)
        tile = tile_tokens * min(shape.vocab_size, w.head_vocab_chunk or shape.vocab_size) * (4 if w.method == "ppo" else a)
        head_grad = tokens * shape.hidden_size * (4 + a)  # the hidden states it keeps, and their float32 gradient
        head_weight_grad = 0 if w.use_peft else shape.vocab_size * shape.hidden_size * 4
        estimate.head = int(tile + head_grad + head_weight_grad)
    else:
        estimate.head = tokens * a  # one score per position

    if w.method == "dpo" and not precompute_ref_log_probs:
        tile_tokens = min(tokens, w.head_token_chunk or tokens)
        # no gradients: only the tensors alive inside one layer at once (the MLP's input and three intermediates)
        one_layer = tokens * a * (shape.hidden_size + 3 * shape.intermediate_size)
        estimate.reference_pass = int(one_layer + tile_tokens * min(shape.vocab_size, w.head_vocab_chunk or shape.vocab_size) * a)

    if w.rollout_batch_size and w.rollout_tokens:
        kv_cache = (w.rollout_batch_size * w.rollout_tokens * shape.num_layers * 2 * shape.num_kv_heads * shape.head_dim
                    * max(a, 2 if w.quantization else w.weight_bytes))
        logits = w.rollout_batch_size * shape.vocab_size * 4 * 2
        estimate.rollout = int(kv_cache + logits)
    return estimate


# --------------------------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------------------------


class MemoryPlanError(ValueError):
    """Even a micro-batch of 1 with gradient checkpointing is estimated not to fit the budget."""


@dataclass
class MemoryPlan:
    """The settings chosen for a memory budget, the estimate they were chosen on, and (after training) the peak."""

    method: str
    budget_bytes: int
    usable_bytes: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    precompute_ref_log_probs: bool | None  # None: not a DPO run
    estimate: MemoryEstimate
    fits: bool
    requested: dict[str, Any] = field(default_factory=dict)
    shape: ModelShape | None = None
    workload: Workload | None = None
    measured: dict[str, Any] | None = None

    @property
    def settings(self) -> dict[str, Any]:
        chosen = {
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "gradient_checkpointing": self.gradient_checkpointing,
        }
        if self.precompute_ref_log_probs is not None:
            chosen["precompute_ref_log_probs"] = self.precompute_ref_log_probs
        return chosen

    def apply(self, args: Any) -> None:
        """Set the chosen settings on a config (both spellings of checkpointing: transformers 5 reads
        ``activation_checkpointing``, TRL ``gradient_checkpointing``)."""
        for name, value in self.settings.items():
            setattr(args, name, value)
        if hasattr(args, "activation_checkpointing"):
            args.activation_checkpointing = self.gradient_checkpointing

    def summary(self) -> str:
        """A table: each setting as requested and as planned, then the estimate by part."""
        lines = [
            f"memory plan ({self.method}): budget {format_bytes(self.budget_bytes)}, planned within "
            f"{format_bytes(self.usable_bytes)} ({1 - self.usable_bytes / self.budget_bytes:.0%} left for the CUDA context, allocator caching "
            "and fragmentation, which are not estimated)"
        ]
        for name, value in self.settings.items():
            before = self.requested.get(name, value)
            change = f"{before} -> {value}" if before != value else f"{value}"
            lines.append(f"  {name:<30} {change}")
        lines.append("  estimated peak per device:")
        for part, size in self.estimate.as_dict().items():
            if part != "total" and size:
                lines.append(f"    {part:<28} {format_bytes(size):>12}")
        verdict = "fits" if self.fits else "does NOT fit"
        lines.append(f"    {'total':<28} {format_bytes(self.estimate.total):>12}  ({verdict})")
        if self.estimate.reference_pass or self.estimate.rollout:
            lines.append("    (not a plain sum: the reference pass and the backward buffers, and PPO's rollout and its "
                         "training step, are not alive at once; the larger of each counts)")
        if self.measured:
            lines.append(f"  measured: {describe_measurement(self.measured)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, estimate, model shape and workload (sizes only: no names, no paths)."""
        return {
            "method": self.method,
            "budget_bytes": self.budget_bytes,
            "usable_bytes": self.usable_bytes,
            "fits": self.fits,
            "requested": dict(self.requested),
            "planned": self.settings,
            "estimate_bytes": self.estimate.as_dict(),
            "model_shape": asdict(self.shape) if self.shape else None,
            "workload": asdict(self.workload) if self.workload else None,
            "measured": self.measured,
        }


def _divisors_descending(number: int) -> list[int]:
    return [d for d in range(number, 0, -1) if number % d == 0]


def plan_memory(
    budget_bytes: int,
    shape: ModelShape,
    workload: Workload,
    *,
    per_device_train_batch_size: int,
    gradient_accumulation_steps: int = 1,
    gradient_checkpointing: bool = True,
    precompute_ref_log_probs: bool | None = None,
    can_precompute: bool = False,
    reserve_fraction: float = RESERVE_FRACTION,
    max_micro_batch: int | None = None,
) -> MemoryPlan:
    """The settings that fit ``budget_bytes``: the effective batch (``per_device_train_batch_size ×
    gradient_accumulation_steps``) is kept; the largest micro-batch that divides it and fits is chosen, gradient
    checkpointing off when that micro-batch fits without it; DPO's precomputed reference log-probs (which drop the
    reference copy of full fine-tuning) only when nothing fits without them (``can_precompute``), and never turned off.
    ``max_micro_batch`` caps the micro-batch (``memory_budget="auto"`` passes the one asked for: a plan the user did
    not ask for only ever lowers it, so an estimate that is short cannot turn a run that fitted into one that does not).

    Raises :class:`MemoryPlanError` (a ``ValueError``) when even a micro-batch of 1 with checkpointing does not fit,
    with the estimate, the budget and what to change."""
    effective = per_device_train_batch_size * gradient_accumulation_steps
    usable = int(budget_bytes * (1 - reserve_fraction))
    requested = {
        "per_device_train_batch_size": per_device_train_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "gradient_checkpointing": bool(gradient_checkpointing),
    }
    if precompute_ref_log_probs is not None:
        requested["precompute_ref_log_probs"] = bool(precompute_ref_log_probs)
    precompute_options = [bool(precompute_ref_log_probs)]
    if can_precompute and not precompute_ref_log_probs and precompute_ref_log_probs is not None:
        precompute_options.append(True)

    def plan(micro: int, checkpointing: bool, precompute: bool, estimate: MemoryEstimate) -> MemoryPlan:
        return MemoryPlan(
            method=workload.method, budget_bytes=int(budget_bytes), usable_bytes=usable,
            per_device_train_batch_size=micro, gradient_accumulation_steps=effective // micro,
            gradient_checkpointing=checkpointing,
            precompute_ref_log_probs=precompute if precompute_ref_log_probs is not None else None,
            estimate=estimate, fits=estimate.total <= usable, requested=requested, shape=shape, workload=workload,
        )

    for precompute in precompute_options:
        for micro in _divisors_descending(effective):
            if max_micro_batch is not None and micro > max_micro_batch:
                continue
            for checkpointing in (False, True):
                estimate = estimate_memory(shape, workload, micro_batch_size=micro,
                                           gradient_checkpointing=checkpointing, precompute_ref_log_probs=precompute)
                if estimate.total <= usable:
                    return plan(micro, checkpointing, precompute, estimate)
    smallest = estimate_memory(shape, workload, micro_batch_size=1, gradient_checkpointing=True,
                               precompute_ref_log_probs=precompute_options[-1])
    raise MemoryPlanError(_does_not_fit_message(plan(1, True, precompute_options[-1], smallest), workload))


def _does_not_fit_message(plan: MemoryPlan, workload: Workload) -> str:
    estimate = plan.estimate
    parts = ", ".join(f"{name} {format_bytes(size)}" for name, size in estimate.as_dict().items()
                      if name != "total" and size)
    length = "max_prompt_length / max_completion_length" if workload.method == "ppo" else "max_length"
    advice = []
    if workload.quantization != "4bit":
        advice.append("--quantization 4bit (QLoRA)")
    if not workload.use_peft:
        advice.append("--use_peft (train a LoRA adapter, not every weight)")
    advice.append(f"a shorter {length} (now {workload.seq_len} tokens per row)")
    if workload.use_peft and workload.lora_r > 4:
        advice.append(f"a smaller --lora_r (now {workload.lora_r})")
    advice.append("a larger --memory_budget if the device has more, or --memory_budget off to skip the plan")
    return (
        f"memory_budget={format_bytes(plan.budget_bytes)}: even a micro-batch of 1 with gradient checkpointing is "
        f"estimated at {format_bytes(estimate.total)} per device ({parts}), over the {format_bytes(plan.usable_bytes)} "
        f"planned within ({1 - plan.usable_bytes / plan.budget_bytes:.0%} of the budget is kept for what is not estimated). Try: "
        + "; ".join(advice) + "."
    )


# --------------------------------------------------------------------------------------------------------------------
# From a trainer's config
# --------------------------------------------------------------------------------------------------------------------


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # conversational: a list of messages
        return "".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in value)
    return ""


def prompt_fraction(dataset: Any, rows: int = 256) -> float:
    """The prompt's share of a pair's longer side, by characters, over the first ``rows`` untokenized rows (the 10th
    percentile: a conservative guess at how much prefix sharing saves); 0.0 when the data does not say."""
    try:
        columns = set(dataset.column_names)
        if not {"prompt", "chosen", "rejected"} <= columns:
            return 0.0
        shares = []
        for index in range(min(rows, len(dataset))):
            row = dataset[index]
            prompt = len(_text_of(row["prompt"]))
            answer = max(len(_text_of(row["chosen"])), len(_text_of(row["rejected"])))
            if prompt + answer:
                shares.append(prompt / (prompt + answer))
    except Exception:  # an iterable or tokenized dataset, odd rows: no guess
        return 0.0
    if not shares:
        return 0.0
    shares.sort()
    return shares[int(0.1 * (len(shares) - 1))]


def _loaded_weight_bytes(model: Any) -> int:
    sizes = [p.element_size() for p in model.parameters() if p.is_floating_point()]
    return max(sizes) if sizes else 4


def _module_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def reward_model_bytes(reward_funcs: Any, weight_bytes: int) -> int:
    """Bytes of the reward models among PPO's reward functions: loaded modules (or objects holding one as ``model``)
    counted exactly, model folders from their config."""
    import torch

    items = reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    total = 0
    for item in items:
        module = item if isinstance(item, torch.nn.Module) else getattr(item, "model", None)
        if isinstance(module, torch.nn.Module):
            total += _module_bytes(module)
        elif isinstance(item, (str, os.PathLike)) and os.path.isfile(os.path.join(os.fspath(item), "config.json")):
            total += model_shape(item).num_params * weight_bytes
    return total


def workload_from_args(
    args: Any,
    method: str,
    shape: ModelShape,
    *,
    model: Any = None,
    ref_model: Any = None,
    train_dataset: Any = None,
    value_model: Any = None,
    reward_funcs: Any = None,
    peft_config: Any = None,
    quantization_config: Any = None,
) -> Workload:
    """What a trainer's config (and what it was given: a loaded model, a ``peft_config``, a ``BitsAndBytesConfig``)
    says about the run, for :func:`estimate_memory`."""
    method = method.lower()
    loaded = model is not None and not isinstance(model, (str, os.PathLike))
    quantization = getattr(args, "quantization", None)
    if quantization_config is not None:
        quantization = "4bit" if getattr(quantization_config, "load_in_4bit", False) else (
            "8bit" if getattr(quantization_config, "load_in_8bit", False) else quantization)
    use_peft = bool(getattr(args, "use_peft", False))
    lora_r, targets = getattr(args, "lora_r", 16), getattr(args, "lora_target_modules", None) or ["all-linear"]
    if peft_config is not None and hasattr(peft_config, "r"):  # a LoRA config handed to the trainer, TRL-style
        use_peft, lora_r = True, peft_config.r
        targets = peft_config.target_modules or targets
        targets = [targets] if isinstance(targets, str) else sorted(targets)
    if loaded:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        bnb = getattr(base.config, "quantization_config", None)
        if bnb is not None:
            as_dict = bnb if isinstance(bnb, dict) else bnb.to_dict()
            quantization = "4bit" if as_dict.get("load_in_4bit") else "8bit" if as_dict.get("load_in_8bit") else None
        peft_config = getattr(model, "peft_config", None)
        if isinstance(peft_config, dict) and peft_config:
            adapter = next(iter(peft_config.values()))
            use_peft, lora_r = True, getattr(adapter, "r", lora_r)
            targets = getattr(adapter, "target_modules", targets) or targets
            targets = [targets] if isinstance(targets, str) else sorted(targets)
        weight_bytes = _loaded_weight_bytes(base)
    else:
        dtype = (getattr(args, "model_init_kwargs", None) or {}).get("dtype") if isinstance(
            getattr(args, "model_init_kwargs", None), dict) else None
        if dtype in ("bfloat16", "float16"):
            weight_bytes = 2
        elif dtype == "float32" or not (use_peft or quantization):
            weight_bytes = 4  # full fine-tuning keeps float32 master weights
        else:
            import torch

            weight_bytes = 2 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 4
    use_peft = use_peft or quantization is not None
    mixed = bool(getattr(args, "bf16", False)) or bool(getattr(args, "fp16", False))
    activation_bytes = 2 if mixed or weight_bytes == 2 else 4
    dropout = 0.0 if getattr(args, "disable_dropout", method == "ppo") else float(getattr(args, "lora_dropout", 0.0))

    common = dict(
        method=method, quantization=quantization, use_peft=use_peft, lora_r=int(lora_r),
        lora_target_modules=tuple(targets), lora_dropout=dropout, weight_bytes=weight_bytes,
        activation_bytes=activation_bytes,
    )
    if method == "ppo":
        prompt = getattr(args, "max_prompt_length", None) or 512
        seq_len = prompt + int(getattr(args, "max_completion_length", 53))
        gae = getattr(args, "advantage_estimator", "gae") == "gae"
        value = "none" if not gae else ("copy" if (value_model is not None or not use_peft) else "adapter")
        rollout = min(int(getattr(args, "local_rollout_forward_batch_size", 64)),
                      int(getattr(args, "local_batch_size", 64)))
        if getattr(args, "rollout_engine", "hf") == "server":
            rollout = 0  # a separate server samples: no KV cache here
        return Workload(
            **common, seq_len=seq_len, rows_per_example=1,
            reference="given" if ref_model is not None else ("adapter" if use_peft else "copy"),
            value=value, reward_model_bytes=reward_model_bytes(reward_funcs, weight_bytes) if reward_funcs else 0,
            head="fused", head_token_chunk=int(getattr(args, "logprob_chunk_size", None) or 0), head_vocab_chunk=0,
            rollout_batch_size=rollout, rollout_tokens=seq_len,
        )
    max_length = getattr(args, "max_length", None) or 1024
    shared = bool(getattr(args, "prefix_sharing", False)) and not shape.is_encoder
    if shared:
        # one row prompt | chosen | rejected: at most 2·max_length − prompt tokens
        seq_len, rows = max(int(round(max_length * (2 - prompt_fraction(train_dataset)))), 1), 1
    else:
        seq_len, rows = int(max_length), 2
    if method == "reward":
        return Workload(**common, seq_len=seq_len, rows_per_example=rows, reference="none", head="score")
    reference = "given" if ref_model is not None else ("adapter" if use_peft else "copy")
    return Workload(**common, seq_len=seq_len, rows_per_example=rows, reference=reference, head="fused")


def plan_for_trainer(
    model: Any,
    args: Any,
    method: str,
    *,
    ref_model: Any = None,
    train_dataset: Any = None,
    value_model: Any = None,
    reward_funcs: Any = None,
    peft_config: Any = None,
    quantization_config: Any = None,
    sharding: str | None = None,
    announce: bool = True,
) -> MemoryPlan | None:
    """Start-up step of DPO, reward and PPO training: plan for ``args.memory_budget`` and set the chosen settings on
    ``args``, before the model loads. Returns the plan, or None when there is nothing to plan (no budget, ``"auto"``
    without CUDA, ``"auto"`` under parameter ``sharding`` (ZeRO-3 / FSDP, which the estimate does not model: an explicit
    budget is planned as if every process held whole weights), a config without the field).

    An explicit budget that cannot be met is a :class:`MemoryPlanError`; with ``"auto"`` the settings are kept as given
    and a warning says so, since the run may still fit what the estimate does not know about."""
    if not hasattr(args, "memory_budget"):
        return None
    budget = parse_memory_budget(args.memory_budget)
    automatic = budget == "auto"
    if automatic:
        if sharding is not None:
            return None  # the estimate assumes whole weights on every process
        budget = device_memory()
    if budget is None:
        return None
    if model is None:
        from .models import DEFAULT_POLICY

        model = DEFAULT_POLICY
    try:
        shape = model_shape(model, revision=(getattr(args, "model_init_kwargs", None) or {}).get("revision")
                            if isinstance(getattr(args, "model_init_kwargs", None), dict) else None,
                            trust_remote_code=bool(getattr(args, "trust_remote_code", False)))
    except Exception as error:
        if automatic:
            logger.warning("memory plan skipped: the model's config could not be read (%s).", error)
            return None
        raise ValueError(f"memory_budget: the model's config could not be read to plan memory ({error}); pass a "
                         "model name or folder with a config.json, or --memory_budget off.") from error
    workload = workload_from_args(args, method, shape, model=model, ref_model=ref_model, train_dataset=train_dataset,
                                  value_model=value_model, reward_funcs=reward_funcs, peft_config=peft_config,
                                  quantization_config=quantization_config)
    dpo = workload.method == "dpo"
    can_precompute = (dpo and workload.reference == "copy" and not getattr(args, "sync_ref_model", False)
                      and hasattr(train_dataset, "add_column"))
    try:
        plan = plan_memory(
            budget, shape, workload,
            per_device_train_batch_size=int(args.per_device_train_batch_size),
            gradient_accumulation_steps=int(args.gradient_accumulation_steps),
            gradient_checkpointing=bool(args.gradient_checkpointing),
            precompute_ref_log_probs=bool(getattr(args, "precompute_ref_log_probs", False)) if dpo else None,
            can_precompute=can_precompute,
            max_micro_batch=int(args.per_device_train_batch_size) if automatic else None,
            # "auto" keeps a wider margin: the estimate has only been checked against CPU saved-tensor counts, never
            # against a whole step's measured peak on a GPU
            reserve_fraction=AUTO_RESERVE_FRACTION if automatic else RESERVE_FRACTION,
        )
    except MemoryPlanError as error:
        if not automatic:
            raise
        logger.warning("%s The settings are kept as given (memory_budget='auto').", error)
        return None
    plan.apply(args)
    if announce and _is_main_process():
        print(plan.summary(), flush=True)
    return plan


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0") or 0) == 0


# --------------------------------------------------------------------------------------------------------------------
# After training: the measured peak
# --------------------------------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _max_rss_bytes() -> int:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def describe_measurement(measured: dict[str, Any]) -> str:
    if measured.get("kind") == "cuda":
        return (f"peak {format_bytes(measured['peak_bytes'])} (torch.cuda.max_memory_allocated over training) against "
                f"an estimated {format_bytes(measured['estimated_bytes'])}")
    bound = "" if measured.get("exact") else "at most "
    return (f"peak RSS growth during training {bound}{format_bytes(measured['peak_bytes'])} (CPU: resident memory "
            f"above what was held when training began, so the weights loaded before are not in it) against an "
            f"estimated {format_bytes(measured['estimated_bytes'])} (the estimate less weights and model copies)")


def memory_plan_callback(plan: MemoryPlan):
    """A ``TrainerCallback`` that measures the peak during training, prints it next to the estimate and writes
    ``memory_plan.json`` (the plan, the estimate and the measurement) to ``output_dir``."""
    from transformers import TrainerCallback

    class MemoryPlanCallback(TrainerCallback):
        def __init__(self):
            self.plan = plan
            self._rss_at_begin = 0
            self._max_rss_at_begin = 0

        def on_train_begin(self, args, state, control, **kwargs):
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            else:
                self._rss_at_begin, self._max_rss_at_begin = _rss_bytes(), _max_rss_bytes()

        def on_train_end(self, args, state, control, **kwargs):
            import torch

            estimate = self.plan.estimate
            if torch.cuda.is_available():
                measured = {"kind": "cuda", "peak_bytes": int(torch.cuda.max_memory_allocated()), "exact": True,
                            "estimated_bytes": estimate.total}
            else:
                max_rss = _max_rss_bytes()
                measured = {"kind": "cpu_rss_growth", "peak_bytes": max(max_rss - self._rss_at_begin, 0),
                            "exact": max_rss > self._max_rss_at_begin,
                            "estimated_bytes": estimate.total - estimate.static}
            self.plan.measured = measured
            if not state.is_world_process_zero:
                return
            print(f"memory plan: {describe_measurement(measured)}", flush=True)
            if args.output_dir:
                os.makedirs(args.output_dir, exist_ok=True)
                with open(os.path.join(args.output_dir, PLAN_FILE), "w") as handle:
                    json.dump(self.plan.to_dict(), handle, indent=2)

    return MemoryPlanCallback()
