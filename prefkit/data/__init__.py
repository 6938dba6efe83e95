"""Preference data: schema and validation, loading, pair generation, judges, export to TRL formats.

Heavy pieces (judges, generation, export) are imported lazily, so ``import prefkit.data`` stays cheap.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .labels import label_counts, labels_to_pairs, labels_to_unpaired, pairs_to_unpaired, pointwise_to_pairs
from .scales import BOTH_BAD, DEFAULT_SCALE, TIE, GradedScale, ScalePoint, UnknownLabelError
from .validation import (
    EmptyDatasetError,
    PreferenceDataError,
    RowProblem,
    ValidationReport,
    detect_format,
    validate_dataset,
    validate_preference_dataset,
)

BUNDLED_DIR = Path(__file__).parent / "bundled"


def bundled_preferences_path() -> Path:
    """The bundled preference set (prompt / chosen / rejected, synthetic, CC0-1.0); see ``bundled/README.md``."""
    return BUNDLED_DIR / "preferences.jsonl"


_LAZY = {
    "to_dataset": "prefkit.data.export",
    "export_pairs": "prefkit.data.export",
    "push_dataset_to_hub": "prefkit.data.export",
    "build_dataset_card": "prefkit.data.export",
    "load_dataset_any": "prefkit.data.io",
    "read_jsonl": "prefkit.data.io",
    "load_records": "prefkit.data.io",
    "Judge": "prefkit.data.judges",
    "Judgement": "prefkit.data.judges",
    "LLMJudge": "prefkit.data.judges",
    "BleuJudge": "prefkit.data.judges",
    "RougeJudge": "prefkit.data.judges",
    "RewardModelJudge": "prefkit.data.judges",
    "agreement": "prefkit.data.judges",
    "parse_verdict": "prefkit.data.judges",
    "generate_pairs": "prefkit.data.generation",
    "rewrite_pairs": "prefkit.data.generation",
    "label_records": "prefkit.data.labeling",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prefkit.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BOTH_BAD",
    "DEFAULT_SCALE",
    "EmptyDatasetError",
    "TIE",
    "GradedScale",
    "PreferenceDataError",
    "RowProblem",
    "ScalePoint",
    "UnknownLabelError",
    "ValidationReport",
    "bundled_preferences_path",
    "detect_format",
    "label_counts",
    "labels_to_pairs",
    "labels_to_unpaired",
    "pairs_to_unpaired",
    "pointwise_to_pairs",
    "validate_dataset",
    "validate_preference_dataset",
    *_LAZY,
]
