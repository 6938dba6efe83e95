"""What every prefkit trainer does at start-up: the QLoRA/LoRA fields of its config, loading a model named by a
string, and the prologue (data checked before anything loads, the memory plan, model, tokenizer, LoRA config) that
all four run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from collections.abc import Callable, Mapping
from typing import Any

from ..memory_plan import MemoryPlan, memory_plan_callback, plan_for_trainer
from ..models import DEFAULT_POLICY, Task, is_quantized, keep_4bit_weights_trainable_on_cpu, load_model, lora_config, model_id


def has_accelerator() -> bool:
    """Whether PyTorch sees a device that pinned host memory helps (CUDA / ROCm, XPU, MPS...)."""
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


LORA_LEARNING_RATE_FACTOR = 10
"""A LoRA adapter's default learning rate is this many times the full fine-tuning one: TRL's own LoRA recipes (its DPO
script: 5e-7 full, 5e-6 LoRA) and Schulman et al. 2025, "LoRA Without Regret" (the best LoRA rate is about 10x the
best full fine-tuning rate). A full fine-tuning rate leaves an adapter nearly where it started."""


def lora_learning_rate(full_default: float) -> float:
    return float(f"{full_default * LORA_LEARNING_RATE_FACTOR:.6g}")  # 1e-05, not 9.999999999999999e-06


def learning_rate_help(full_default: float) -> str:
    return (f"Initial AdamW learning rate. Default: {full_default:g} for full fine-tuning (TRL's), "
            f"{lora_learning_rate(full_default):g} when training a LoRA adapter (use_peft, quantization, a "
            "PeftModel or peft_config): LoRA wants about 10x the full fine-tuning rate.")


@dataclass
class QLoRAArguments:
    """Model-loading fields added to every prefkit config (QLoRA in two flags: ``--quantization 4bit --use_peft``)."""

    quantization: str | None = field(
        default=None,
        metadata={
            "help": "Load the base model quantized with bitsandbytes: '4bit' (nf4, double quantization; QLoRA) or "
            "'8bit'. Only applies when the model is given by name. Implies --use_peft. 'none' unsets it (e.g. over a "
            "config file that sets it).",
            "choices": ["4bit", "8bit", "none"],
        },
    )
    use_peft: bool = field(
        default=False,
        metadata={"help": "Train a LoRA adapter instead of all weights (always on with --quantization)."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "Modules that get LoRA adapters: 'all-linear' or names such as q_proj v_proj."},
    )
    lora_modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Extra modules trained fully and saved with the adapter."}
    )
    load_in_4bit: bool = field(default=False, metadata={"help": "Alias of --quantization 4bit (TRL's flag)."})
    load_in_8bit: bool = field(default=False, metadata={"help": "Alias of --quantization 8bit (TRL's flag)."})

    def _resolve_qlora_fields(self) -> None:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("Set only one of load_in_4bit and load_in_8bit.")
        if self.load_in_4bit or self.load_in_8bit:
            alias = "4bit" if self.load_in_4bit else "8bit"
            if self.quantization not in (None, alias):
                raise ValueError(f"quantization={self.quantization!r} contradicts load_in_{alias}=True.")
            self.quantization = alias
        if isinstance(self.quantization, str) and self.quantization.lower() in ("none", "null", ""):
            self.quantization = None
        if self.quantization not in (None, "4bit", "8bit"):
            raise ValueError(f"quantization={self.quantization!r} is not supported: use '4bit', '8bit' or leave it unset.")
        if self.quantization is not None:
            self.use_peft = True  # quantized weights cannot be trained: QLoRA trains an adapter on top

    def _apply_prefkit_defaults(self) -> None:
        """Call first in a config's ``__post_init__``: resolve the QLoRA fields; bf16 only where the hardware has it."""
        self._resolve_qlora_fields()
        if getattr(self, "bf16", False) is None and not getattr(self, "fp16", False):
            self.bf16 = default_bf16()
        if getattr(self, "dataloader_pin_memory", False) and not has_accelerator():
            # pinned memory only speeds up copies to an accelerator; without one PyTorch warns on every dataloader
            self.dataloader_pin_memory = False

    def _resolve_learning_rate(self, full_default: float) -> None:
        """``learning_rate`` left unset: ``full_default`` (TRL's, for full fine-tuning), times
        :data:`LORA_LEARNING_RATE_FACTOR` when training a LoRA adapter. :func:`load_for_training` applies the same
        rule when the adapter comes from a ``peft_config`` or a ``PeftModel`` rather than from these flags."""
        self.learning_rate_is_default = self.learning_rate is None
        self.full_learning_rate = full_default
        if self.learning_rate is None:
            self.learning_rate = lora_learning_rate(full_default) if self.use_peft else full_default

    def make_peft_config(self, task: Task = "causal-lm", force: bool = False):
        """The ``peft.LoraConfig`` these fields describe, or ``None`` when ``use_peft`` is off (and not ``force``)."""
        if not (self.use_peft or force):
            return None
        return lora_config(
            task,
            r=self.lora_r,
            alpha=self.lora_alpha,
            dropout=self.lora_dropout,
            target_modules=self.lora_target_modules,
            modules_to_save=self.lora_modules_to_save,
        )


def qlora_settings(args: Any) -> QLoRAArguments:
    """The QLoRA fields of a prefkit config, or the defaults (no quantization, no LoRA) for a plain TRL config, so
    prefkit trainers also accept ``trl.DPOConfig`` & co. unchanged."""
    return args if isinstance(args, QLoRAArguments) else QLoRAArguments()


def load_model_for_training(
    model: str | None, args: Any, task: Task = "causal-lm", quantization_config: Any = None, **load_kwargs
):
    """Load a model named by a string as the trainer's config says: quantization, dtype, gradient checkpointing.

    ``quantization_config`` (a ``BitsAndBytesConfig``, as TRL's trainers accept) overrides ``args.quantization``.

    Returns ``(model, tokenizer)`` with no adapter yet: the TRL parent applies ``peft_config`` itself, which is what
    makes it use the adapter-disabled base as the reference instead of a second copy of the weights.
    """
    qlora = qlora_settings(args)
    init_kwargs = dict(getattr(args, "model_init_kwargs", None) or {})
    dtype = init_kwargs.pop("dtype", None)
    if dtype is None:
        # LoRA trains in the weights' dtype (bf16 on a capable GPU); full fine-tuning keeps float32 master weights
        # with bf16 autocast, as TRL does.
        dtype = "auto" if (qlora.use_peft or quantization_config is not None) else "float32"
    quantization = quantization_config if quantization_config is not None else qlora.quantization
    return load_model(
        model or DEFAULT_POLICY,
        task=task,
        quantization=quantization,
        lora=False,
        dtype=dtype,
        trust_remote_code=init_kwargs.pop("trust_remote_code", getattr(args, "trust_remote_code", False)),
        revision=init_kwargs.pop("revision", None),
        device_map=init_kwargs.pop("device_map", None),
        attn_implementation=init_kwargs.pop("attn_implementation", None),
        gradient_checkpointing=bool(args.gradient_checkpointing) and quantization is not None,
        **load_kwargs,
        **init_kwargs,
    )


def default_bf16() -> bool:
    """bf16 mixed precision only where the hardware does it natively; on CPU it is slower than float32."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def default_output_dir(model: Any, method: str) -> str:
    """``<model name>-<method>``, TRL's default output folder for a trainer built without ``args``."""
    name = model if isinstance(model, str) else model_id(model)
    return f"{str(name).rstrip('/').split('/')[-1]}-{method}"


def resolve_model_argument(
    model: Any,
    args: Any,
    *,
    task: Task = "causal-lm",
    quantization_config: Any = None,
    processing_class: Any = None,
):
    """The start of every prefkit trainer, after its data has been validated.

    A name (or path) is loaded as ``args`` says (quantization, dtype; the seed is set first because new heads and
    adapters are initialised randomly) and its tokenizer becomes the processing class unless one was given. A model
    object is used as is; asking to quantize it is an error, since quantization happens at load time.

    Returns ``(model, processing_class)``.
    """
    model = DEFAULT_POLICY if model is None else model
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if isinstance(model, str):
        from transformers import set_seed

        set_seed(args.seed)
        model, tokenizer = load_model_for_training(model, args, task=task, quantization_config=quantization_config)
        # Consumed by the load above; TRL would otherwise warn that they are ignored.
        args.model_init_kwargs = None
        return model, processing_class if processing_class is not None else tokenizer
    if quantization_config is not None or qlora_settings(args).quantization is not None:
        raise ValueError(
            "Quantization only applies when the model is given by name; this model is already loaded. Pass its name, "
            f"or load it with prefkit.load_model(name, task={task!r}, quantization='4bit') first."
        )
    return model, processing_class


def default_peft_config(model: Any, args: Any, task: Task = "causal-lm"):
    """The LoRA config ``args`` asks for, for a model that has no adapter yet. A quantized base always gets one:
    quantized weights cannot be trained (QLoRA trains an adapter on top)."""
    if hasattr(model, "peft_config"):
        return None
    return qlora_settings(args).make_peft_config(task, force=is_quantized(model))


# --------------------------------------------------------------------------------------------------------------------
# The prologue every prefkit trainer runs
# --------------------------------------------------------------------------------------------------------------------


def named_datasets(datasets: Any, name: str) -> list[tuple[str, Any]]:
    """``(name, dataset)`` for a dataset, or for each split of a dict of them (TRL's ``eval_dataset`` may be either)."""
    if datasets is None:
        return []
    if isinstance(datasets, dict):
        return [(f"{name}[{split!r}]", dataset) for split, dataset in datasets.items()]
    return [(name, datasets)]


def parameter_sharding(args: Any = None, environ: Mapping[str, str] | None = None) -> str | None:
    """How the run shards the model's parameters across processes: ``"deepspeed-zero3"``, ``"fsdp"`` or None (one
    process, DDP, DeepSpeed ZeRO-1/2: every process holds whole weights). Read from what ``accelerate launch`` puts in
    the environment (``ACCELERATE_USE_DEEPSPEED`` / ``ACCELERATE_DEEPSPEED_ZERO_STAGE``, ``ACCELERATE_USE_FSDP``) and
    from the config's own ``deepspeed`` / ``fsdp`` fields (``TrainingArguments``), before anything loads."""
    environ = os.environ if environ is None else environ

    def truthy(name: str) -> bool:
        return str(environ.get(name, "")).lower() in ("1", "true", "yes")

    fsdp = getattr(args, "fsdp", None)
    if truthy("ACCELERATE_USE_FSDP") or (fsdp not in (None, "", False) and fsdp != [] and "no_shard" not in str(fsdp)):
        return "fsdp"
    stage = environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") if truthy("ACCELERATE_USE_DEEPSPEED") else None
    deepspeed = getattr(args, "deepspeed", None)
    if stage is None and deepspeed:
        config = deepspeed
        if isinstance(config, (str, os.PathLike)) and os.path.isfile(config):
            import json

            with open(config) as handle:
                config = json.load(handle)
        if isinstance(config, Mapping):
            stage = (config.get("zero_optimization") or {}).get("stage")
    return "deepspeed-zero3" if str(stage) == "3" else None


def check_quantization_with_sharding(args: Any, method: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse, before a model loads, a bitsandbytes-quantized base under parameter sharding (DeepSpeed ZeRO-3, FSDP).

    What prefkit supports (docs/ppo.md, "Scaling out"): a 4-bit or 8-bit base with one process, DDP or DeepSpeed
    ZeRO-2 (each process holds its own quantized copy; ZeRO-2 shards gradients and optimizer states, here the LoRA
    adapter's); LoRA or full fine-tuning on bf16 / fp32 weights under ZeRO-3 and FSDP2. Sharding a quantized base
    needs every process to agree on a packed storage dtype and is not something prefkit tests, so it is an error with
    what to do instead, not a crash minutes into loading."""
    quantization = getattr(qlora_settings(args), "quantization", None)
    sharding = parameter_sharding(args, environ)
    if quantization is None or sharding is None:
        return
    name = {"deepspeed-zero3": "DeepSpeed ZeRO-3", "fsdp": "FSDP"}[sharding]
    raise ValueError(
        f"{method}: a {quantization} bitsandbytes base cannot be sharded with {name}, which this run is launched with. "
        f"Either keep the {quantization} base and launch with DDP or DeepSpeed ZeRO-2 "
        "(scripts/accelerate_configs/multi_gpu.yaml or deepspeed_zero2.yaml: every GPU holds the quantized model), or "
        f"keep {name} and train LoRA on bf16 weights (--quantization none --use_peft true)."
    )


def check_before_loading(
    model: Any,
    args: Any,
    *,
    config_class: type,
    method: str,
    train_dataset: Any,
    eval_dataset: Any = None,
    validate: Callable[[Any, str], None],
    dataset_hint: str = "",
):
    """Step 1 of every trainer: the default config (``<model>-<method>``) and every dataset checked, before a model
    loads. ``validate(dataset, name)`` raises on bad rows. Returns ``args``."""
    if args is None:
        args = config_class(output_dir=default_output_dir(DEFAULT_POLICY if model is None else model, method))
    check_quantization_with_sharding(args, method)
    if train_dataset is None:
        raise ValueError(f"train_dataset is required{': ' + dataset_hint if dataset_hint else '.'}")
    validate(train_dataset, "train_dataset")
    for split_name, dataset in named_datasets(eval_dataset, "eval_dataset"):
        validate(dataset, split_name)
    return args


def plan_memory_before_loading(model: Any, args: Any, method: str, **inputs: Any) -> MemoryPlan | None:
    """Step 1b of DPO, reward and PPO training: the memory plan for ``args.memory_budget`` (:mod:`prefkit.memory_plan`),
    set on ``args`` and printed, before a model loads; None when nothing is planned. ``inputs``: what else the trainer
    was given that costs memory (``ref_model``, ``train_dataset``, ``value_model``, ``reward_funcs``)."""
    return plan_for_trainer(model, args, method, sharding=parameter_sharding(args), **inputs)


def attach_memory_plan(trainer: Any, plan: MemoryPlan | None) -> None:
    """After the trainer is built: ``trainer.memory_plan``, and a callback that measures the peak during training,
    prints it next to the estimate and writes ``memory_plan.json`` to ``output_dir``."""
    trainer.memory_plan = plan
    if plan is not None:
        trainer.add_callback(memory_plan_callback(plan))


def load_for_training(
    model: Any,
    args: Any,
    *,
    task: Task = "causal-lm",
    processing_class: Any = None,
    quantization_config: Any = None,
    peft_config: Any = None,
    load_tokenizer_if_missing: bool = True,
    padding_side: str | None = None,
):
    """Step 2 of every trainer: the model loaded by name as ``args`` says (or checked when given loaded), its
    tokenizer (loaded when missing, with a pad token whose id the model shares), and the LoRA config ``args`` asks for
    (always one on a quantized base). Returns ``(model, processing_class, peft_config)``."""
    from ..models import ensure_pad_token, load_tokenizer

    model, processing_class = resolve_model_argument(
        model, args, task=task, quantization_config=quantization_config, processing_class=processing_class
    )
    if is_quantized(model):
        keep_4bit_weights_trainable_on_cpu(model)  # bitsandbytes' CPU inference packing drops gradients
    if processing_class is None and load_tokenizer_if_missing:
        processing_class = load_tokenizer(model_id(model), trust_remote_code=getattr(args, "trust_remote_code", False))
    if processing_class is not None:
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if padding_side is not None:
            tokenizer.padding_side = padding_side
        # A missing or mismatched pad id makes a reward model read a pad position instead of the last real token
        # and batched generation pad with garbage: set it, and mirror it onto the model's configs.
        ensure_pad_token(tokenizer, model.get_base_model() if hasattr(model, "get_base_model") else model)
    if peft_config is None:
        peft_config = default_peft_config(model, args, task)
    if getattr(args, "learning_rate_is_default", False) and (peft_config is not None or hasattr(model, "peft_config")):
        # the adapter came from a peft_config or a PeftModel, not from the config's flags
        args.learning_rate = lora_learning_rate(args.full_learning_rate)
    return model, processing_class, peft_config
