"""prefkit: preference tuning for language models, the Hugging Face way.

    from prefkit import DPOTrainer, DPOConfig, RewardTrainer, RewardConfig, PPOTrainer, PPOConfig, best_of_n

Names are imported lazily so that ``prefkit --help`` and the app start without importing every trainer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .version import __version__

from .quiet import install_filters as _install_filters

_install_filters()

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
    "IterativeDPOConfig": "prefkit.trainers.iterative_dpo",
    "IterativeDPOTrainer": "prefkit.trainers.iterative_dpo",
    "KTOConfig": "prefkit.trainers.kto",
    "KTOTrainer": "prefkit.trainers.kto",
    "ImplicitReward": "prefkit.implicit_reward",
    "RewardConfig": "prefkit.trainers.reward",
    "RewardTrainer": "prefkit.trainers.reward",
    "RewardModel": "prefkit.reward_model",
    "load_demo_reward_model": "prefkit.demo",
    "evaluate_reward_model": "prefkit.evaluation",
    "PPOConfig": "prefkit.trainers.ppo",
    "PPOTrainer": "prefkit.trainers.ppo",
    "GRPOConfig": "prefkit.trainers.grpo",
    "GRPOTrainer": "prefkit.trainers.grpo",
    "RLOOConfig": "prefkit.trainers.grpo",
    "RLOOTrainer": "prefkit.trainers.grpo",
    # memory plan
    "MemoryPlan": "prefkit.memory_plan",
    "plan_memory": "prefkit.memory_plan",
    # sampling: rollout engines
    "HFSampler": "prefkit.sampling",
    "RolloutEngine": "prefkit.sampling",
    "ServerSampler": "prefkit.sampling_server",
    # evaluation
    "evaluate": "prefkit.policy_eval",
    "EvaluationReport": "prefkit.policy_eval",
    # best-of-n
    "best_of_n": "prefkit.bon",
    "BestOfNResult": "prefkit.bon",
    "Candidate": "prefkit.bon",
    # data
    "PreferenceDataError": "prefkit.data.validation",
    "validate_preference_dataset": "prefkit.data.validation",
    "load_dataset_any": "prefkit.data.io",
    "GradedScale": "prefkit.data.scales",
    "labels_to_pairs": "prefkit.data.labels",
    "pointwise_to_pairs": "prefkit.data.labels",
    "generate_pairs": "prefkit.data.generation",
    "rewrite_pairs": "prefkit.data.generation",
    "LLMJudge": "prefkit.data.judges",
    "BleuJudge": "prefkit.data.judges",
    "RougeJudge": "prefkit.data.judges",
    "RewardModelJudge": "prefkit.data.judges",
    "export_pairs": "prefkit.data.export",
    "push_dataset_to_hub": "prefkit.data.export",
    "VoteStore": "prefkit.data.votes",
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
    from .bon import BestOfNResult, Candidate, best_of_n
    from .data.export import export_pairs, push_dataset_to_hub
    from .data.generation import generate_pairs, rewrite_pairs
    from .data.judges import BleuJudge, LLMJudge, RewardModelJudge, RougeJudge
    from .data.labels import labels_to_pairs, pointwise_to_pairs
    from .data.scales import GradedScale
    from .data.votes import VoteStore
    from .evaluation import evaluate_reward_model
    from .policy_eval import EvaluationReport, evaluate
    from .data.io import load_dataset_any
    from .data.validation import PreferenceDataError, validate_preference_dataset
    from .models import DEFAULT_ENCODER, DEFAULT_POLICY, load_model, load_tokenizer, resolve_model_path
    from .demo import load_demo_reward_model
    from .reward_model import RewardModel
    from .sampling import HFSampler, RolloutEngine
    from .sampling_server import ServerSampler
    from .implicit_reward import ImplicitReward
    from .memory_plan import MemoryPlan, plan_memory  # noqa: F401
    from .trainers.dpo import DPOConfig, DPOTrainer
    from .trainers.iterative_dpo import IterativeDPOConfig, IterativeDPOTrainer
    from .trainers.grpo import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer
    from .trainers.kto import KTOConfig, KTOTrainer
    from .trainers.ppo import PPOConfig, PPOTrainer
    from .trainers.reward import RewardConfig, RewardTrainer
