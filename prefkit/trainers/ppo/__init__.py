"""PPO for language models, in parts a reader can follow:

- :mod:`.config`: :class:`PPOConfig`, ``TrainingArguments`` plus the PPO fields;
- :mod:`.policy_value`: :class:`PolicyAndValue`, the policy, reference and value model on one shared base;
- :mod:`.rollout`: sample, score, old/reference log-probs and values, KL-shaped rewards, advantages (a :class:`Rollout`);
- :mod:`.trainer`: :class:`PPOTrainer`, the loop and the minibatch optimization;
- :mod:`.callbacks`: :class:`CompletionSamplesCallback`, sample completions in ``completions.jsonl``;
- :mod:`.hf_trainer`: what the loop borrows from ``transformers.Trainer``'s private API, in one place.
"""

from ...evaluation import plot_training_curves
from .callbacks import COMPLETIONS_NAME, CompletionSamplesCallback
from .config import ADVANTAGE_ESTIMATORS, LOSS_TYPES, PPOConfig
from .policy_value import (
    POLICY_ADAPTER,
    VALUE_ADAPTER,
    VALUE_FOLDER,
    VALUE_HEAD_NAME,
    VALUE_MODEL_FOLDER,
    PolicyAndValue,
)
from .rollout import Rollout, RunningBaseline
from .trainer import CURVES_NAME, PPO_STATE_NAME, PPOTrainer, ProcessesOutOfSyncError

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "COMPLETIONS_NAME",
    "CURVES_NAME",
    "LOSS_TYPES",
    "POLICY_ADAPTER",
    "PPO_STATE_NAME",
    "VALUE_ADAPTER",
    "VALUE_FOLDER",
    "VALUE_HEAD_NAME",
    "VALUE_MODEL_FOLDER",
    "CompletionSamplesCallback",
    "PPOConfig",
    "PPOTrainer",
    "PolicyAndValue",
    "ProcessesOutOfSyncError",
    "Rollout",
    "RunningBaseline",
    "plot_training_curves",
]
