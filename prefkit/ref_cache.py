"""A cache of the DPO reference log-probs that outlives the run: computed once, reused by every later run that has the
same reference, data and truncation (another beta, learning rate or seed; a resumed run), never used when one differs.

DPO's loss needs log πref(y|x) of every chosen and rejected answer. The reference never changes, so TRL's
``precompute_ref_log_probs=True`` computes them once before training, without gradients, instead of once per step.
TRL keys that computation by the dataset's fingerprint and a hash of the whole model (the LoRA adapter's random
initial weights included) and stores it in the dataset's cache folder: a dataset built in memory (``from_list``,
``from_pandas``) gets a new fingerprint every run and a temporary folder, so a beta sweep recomputes it every time.

prefkit keys it by what the numbers depend on, by content:

- the **reference weights** (:func:`reference_fingerprint`): the base model's parameters, plus the ``ref`` adapter
  when TRL made one (iterative DPO's previous-round reference); never the trainable adapter, which the reference
  pass disables;
- the **tokenized rows** (:func:`dataset_fingerprint`): every token id the collator will see, so a changed dataset,
  tokenizer, chat template or prompt format gives another key;
- the **settings the collator and the reduction apply**: ``max_length``, ``truncation_mode``, ``ld_alpha``, and the
  precision the forward runs in.

Entries live in ``cache_dir/<key>/`` (``ref_logps.safetensors`` and ``meta.json``, which repeats every part of the
key). :func:`load` checks the metadata and the row count before returning anything: a folder copied from another key,
a truncated file or a mismatched count is reported and recomputed, never silently used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
LOGPS_FILE = "ref_logps.safetensors"
META_FILE = "meta.json"


def default_cache_dir() -> Path:
    """``$PREFKIT_CACHE/ref_logps``, else ``<HF_HOME>/prefkit/ref_logps`` (``~/.cache/huggingface`` by default)."""
    if os.environ.get("PREFKIT_CACHE"):
        return Path(os.environ["PREFKIT_CACHE"]) / "ref_logps"
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "prefkit" / "ref_logps"


def _update_with_tensor(digest: Any, name: str, tensor: torch.Tensor) -> None:
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    data = tensor.detach()
    if data.device.type != "cpu":
        data = data.cpu()
    data = data.contiguous().reshape(-1)
    digest.update(data.view(torch.uint8).numpy().tobytes())  # the raw bytes: any dtype, bfloat16 and 4-bit included


def reference_fingerprint(model: Any) -> str:
    """A hash of the weights the reference pass computes with.

    For a ``PeftModel`` that is the base model's parameters and buffers (4-bit packed weights and their quantization
    statistics included), plus the parameters of a ``ref`` adapter if there is one; the trainable adapter is left out,
    since the reference pass disables it. For any other model, every parameter and buffer. Names, dtypes and shapes
    are part of the hash.
    """
    digest = hashlib.sha256(f"prefkit-reference|{type(model).__name__}".encode())
    unwrapped = getattr(model, "module", model)  # DDP
    is_peft = hasattr(unwrapped, "peft_config")
    adapters = set(getattr(unwrapped, "peft_config", {}) or {})
    for name, tensor in list(unwrapped.named_parameters()) + list(unwrapped.named_buffers()):
        if is_peft and _belongs_to_adapter(name, adapters - {"ref"}):
            continue
        _update_with_tensor(digest, name, tensor)
        quant_state = getattr(tensor, "quant_state", None)  # bitsandbytes 4-bit: absmax and code live here
        if quant_state is not None and hasattr(quant_state, "as_dict"):
            for key, value in sorted(quant_state.as_dict(packed=False).items()):
                if isinstance(value, torch.Tensor):
                    _update_with_tensor(digest, f"{name}.{key}", value)
                else:
                    digest.update(f"{name}.{key}={value}".encode())
    return digest.hexdigest()


def _belongs_to_adapter(name: str, adapters: set[str]) -> bool:
    parts = name.split(".")
    return any(adapter in parts for adapter in adapters)


def dataset_fingerprint(dataset: Any, columns: list[str] | None = None) -> str:
    """A hash of a tokenized dataset's content: every value of ``columns`` (default: every column), row by row, in
    order. Two datasets with the same rows have the same fingerprint whatever their history (``from_list``, a file,
    a ``map``); one changed token changes it."""
    import pyarrow as pa

    if getattr(dataset, "_indices", None) is not None:  # a select / shuffle: hash the rows it shows, in its order
        dataset = dataset.flatten_indices()
    table = dataset.data if hasattr(dataset, "data") else dataset
    if hasattr(table, "table"):  # datasets' Table wrapper
        table = table.table
    columns = sorted(columns if columns is not None else table.column_names)
    digest = hashlib.sha256(f"prefkit-data|{len(table)}|{','.join(columns)}".encode())
    table = table.select(columns).combine_chunks()
    sink = pa.BufferOutputStream()
    schema = pa.schema([table.schema.field(c).remove_metadata() for c in columns])  # content, not feature metadata
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(table.replace_schema_metadata(None).cast(schema))
    digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()


def cache_key(parts: Mapping[str, Any]) -> str:
    """The folder name of an entry: a hash of ``parts`` (JSON, sorted keys)."""
    text = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class StaleCacheWarning(UserWarning):
    """A cache entry whose metadata does not match its key or the data: it is recomputed."""


def load(cache_dir: str | os.PathLike, parts: Mapping[str, Any], num_rows: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached ``(chosen, rejected)`` reference log-probs for ``parts``, or None when there is no valid entry.

    An entry is valid when its ``meta.json`` holds exactly ``parts`` and ``num_rows``, and its tensors have
    ``num_rows`` values each. Anything else is logged as stale and ignored (the caller recomputes and overwrites it).
    """
    import warnings

    from safetensors.torch import load_file

    folder = Path(cache_dir) / cache_key(parts)
    meta_path, logps_path = folder / META_FILE, folder / LOGPS_FILE
    if not meta_path.is_file():
        return None
    problem = None
    try:
        meta = json.loads(meta_path.read_text())
        expected = json.loads(json.dumps({"version": CACHE_VERSION, "num_rows": num_rows, "key": dict(parts)},
                                         sort_keys=True, default=str))
        found = {k: meta.get(k) for k in ("version", "num_rows", "key")}
        if found != expected:
            differing = sorted(k for k in set(expected["key"]) | set(found.get("key") or {})
                               if (found.get("key") or {}).get(k) != expected["key"].get(k))
            problem = (f"its metadata differs from this run's ({', '.join(differing) or 'version or row count'})")
        else:
            tensors = load_file(str(logps_path))
            chosen, rejected = tensors["chosen"], tensors["rejected"]
            if chosen.shape != (num_rows,) or rejected.shape != (num_rows,):
                problem = f"it holds {chosen.shape[0]} / {rejected.shape[0]} values for {num_rows} rows"
            elif not (torch.isfinite(chosen).all() and torch.isfinite(rejected).all()):
                problem = "it holds values that are not finite"
            else:
                return chosen.float(), rejected.float()
    except Exception as error:  # an unreadable entry is a cache miss, not a failed run
        problem = f"it cannot be read ({type(error).__name__}: {error})"
    warnings.warn(f"reference log-prob cache {folder}: {problem}; recomputing it.", StaleCacheWarning, stacklevel=2)
    return None


def save(cache_dir: str | os.PathLike, parts: Mapping[str, Any], chosen: torch.Tensor, rejected: torch.Tensor) -> Path:
    """Write an entry atomically (a temporary folder renamed into place) and return its folder."""
    from safetensors.torch import save_file

    chosen, rejected = chosen.detach().float().cpu().contiguous(), rejected.detach().float().cpu().contiguous()
    if chosen.shape != rejected.shape or chosen.dim() != 1:
        raise ValueError(f"chosen and rejected log-probs must be two vectors of one length; got {tuple(chosen.shape)} "
                         f"and {tuple(rejected.shape)}.")
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / cache_key(parts)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        save_file({"chosen": chosen, "rejected": rejected}, str(staging / LOGPS_FILE))
        meta = {"version": CACHE_VERSION, "num_rows": int(chosen.shape[0]), "key": dict(parts)}
        (staging / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder
