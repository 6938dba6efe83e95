"""PPO for language models: :class:`PPOConfig` and :class:`PPOTrainer` (see :mod:`prefkit.trainers.ppo.trainer`)."""

from .trainer import (
    ADVANTAGE_ESTIMATORS,
    COMPLETIONS_NAME,
    CURVES_NAME,
    LOSS_TYPES,
    POLICY_ADAPTER,
    PPO_STATE_NAME,
    VALUE_ADAPTER,
    VALUE_FOLDER,
    VALUE_HEAD_NAME,
    VALUE_MODEL_FOLDER,
    PolicyAndValue,
    PPOConfig,
    PPOTrainer,
    Rollout,
    plot_training_curves,
    validate_prompt_dataset,
)

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
    "PPOConfig",
    "PPOTrainer",
    "PolicyAndValue",
    "Rollout",
    "plot_training_curves",
    "validate_prompt_dataset",
]
