"""prefkit: preference tuning for language models, the Hugging Face way.

    from prefkit import DPOTrainer, DPOConfig, RewardTrainer, RewardConfig, PPOTrainer, PPOConfig, best_of_n

Names are imported lazily so that ``prefkit --help`` and the app start without importing every trainer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    # models
    "load_model": "prefkit.models",
    "load_tokenizer": "prefkit.models",
    "resolve_model_path": "prefkit.models",
    "DEFAULT_POLICY": "prefkit.models",
    "DEFAULT_ENCODER": "prefkit.models",
    # trainers
    "DPOConfig": "prefkit.trainers.dpo",
    "DPOTrainer": "prefkit.trainers.dpo",
    "ImplicitReward": "prefkit.trainers.dpo",
    "RewardConfig": "prefkit.trainers.reward",
    "RewardTrainer": "prefkit.trainers.reward",
    "RewardModel": "prefkit.reward_model",
    "PPOConfig": "prefkit.trainers.ppo",
    "PPOTrainer": "prefkit.trainers.ppo",
    # best-of-n
    "best_of_n": "prefkit.bon",
    "BestOfNResult": "prefkit.bon",
    # data
    "PreferenceDataError": "prefkit.data.validation",
    "validate_preference_dataset": "prefkit.data.validation",
    "load_dataset_any": "prefkit.data.io",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prefkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from .bon import BestOfNResult, best_of_n
    from .data.io import load_dataset_any
    from .data.validation import PreferenceDataError, validate_preference_dataset
    from .models import DEFAULT_ENCODER, DEFAULT_POLICY, load_model, load_tokenizer, resolve_model_path
    from .reward_model import RewardModel
    from .trainers.dpo import DPOConfig, DPOTrainer, ImplicitReward
    from .trainers.ppo import PPOConfig, PPOTrainer
    from .trainers.reward import RewardConfig, RewardTrainer
