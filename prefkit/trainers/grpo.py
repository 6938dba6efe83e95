"""TRL's own GRPO and RLOO loops, with prefkit's rewards and QLoRA in two flags.

``prefkit.trainers.grpo.GRPOTrainer`` / ``RLOOTrainer`` are drop-in ``trl.GRPOTrainer`` / ``trl.RLOOTrainer`` (same
configs, columns, metrics) that also take

- ``model`` as a name loaded with ``args.quantization`` / ``args.use_peft`` (the reference, when ``beta > 0``, is the
  base with the adapter disabled);
- rewards as prefkit understands them: a trained :class:`prefkit.RewardModel` (or the path to one), a built-in rule
  reward by name (``"vader"``, ``"bleu"``, ``"rouge"``), any object with ``.score(prompts, completions)``, or TRL's
  own reward callables;
- prompts validated row by row before a model loads.

For the algorithms inside one loop with a value model, GAE and PPO-Clip / KL-penalty, see :mod:`prefkit.trainers.ppo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trl

from ..hub import ModelCardMixin
from ..rl import RewardFunction
from .policy_eval_callback import PolicyEvalArguments, PolicyEvalMixin
from .startup import QLoRAArguments, check_before_loading, learning_rate_help, load_for_training

_TRL_GRPO_LEARNING_RATE = trl.GRPOConfig.__dataclass_fields__["learning_rate"].default
_TRL_RLOO_LEARNING_RATE = trl.RLOOConfig.__dataclass_fields__["learning_rate"].default


def as_trl_reward_func(reward: Any):
    """A reward in TRL's calling convention ``fn(prompts=..., completions=..., **columns) -> list[float]``.

    Strings are any spelling :func:`prefkit.rewards.resolve_reward` takes (built-in names, ``"demo"``, reward-model
    folders or Hub ids, ``module:function``, ``implicit:PATH``); a
    :class:`prefkit.RewardModel` gives its ``as_reward_func()``; TRL-loadable models (``nn.Module``) pass through.
    Anything else, a plain ``fn(prompts, completions)`` or an object with ``.score``, goes through
    :class:`prefkit.rl.RewardFunction`, as in prefkit's PPO: it receives only the dataset columns it names (TRL also
    passes ``completion_ids``, ``trainer_state``, ...), and a wrong number of scores or a NaN is a clear error.
    """
    if isinstance(reward, str):
        from ..rewards import resolve_reward

        reward = resolve_reward(reward)
    as_reward_func = getattr(reward, "as_reward_func", None)
    if callable(as_reward_func):
        return as_reward_func()
    if callable(getattr(reward, "forward", None)):
        return reward
    function = RewardFunction(reward)

    def reward_func(prompts, completions, **columns):
        return function(prompts, completions, columns).tolist()

    reward_func.__name__ = function.name
    return reward_func


def _prepare(model, reward_funcs, args, train_dataset, processing_class, peft_config, config_class, quantization_config=None):
    """What both trainers do before handing over to TRL: validate, load by name, resolve rewards."""
    from ..data.validation import validate_dataset

    # A plain trl.GRPOConfig / trl.RLOOConfig works too: no quantization and no LoRA, TRL's defaults.
    args = check_before_loading(
        model, args, config_class=config_class, method=config_class.__name__[: -len("Config")],
        train_dataset=train_dataset, dataset_hint="a dataset with a 'prompt' column",
        validate=lambda data, name: validate_dataset(data, name, format="prompts", id_column=None),
    )
    if reward_funcs is None:
        raise ValueError("reward_funcs is required: a RewardModel, its path, a built-in name (vader, bleu, rouge) or a callable.")
    rewards = reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    rewards = [as_trl_reward_func(r) for r in rewards]
    model, processing_class, peft_config = load_for_training(
        model, args, processing_class=processing_class, quantization_config=quantization_config,
        peft_config=peft_config, load_tokenizer_if_missing=False,  # TRL loads the model's own processor
    )
    return model, rewards, args, processing_class, peft_config


@dataclass
class GRPOConfig(trl.GRPOConfig, QLoRAArguments, PolicyEvalArguments):
    """``trl.GRPOConfig`` plus prefkit's QLoRA fields (``--quantization 4bit``, ``--use_peft``, ``lora_*``) and held-out
    evaluation while training (``--eval_prompts``, ``--eval_reward``: :mod:`prefkit.trainers.policy_eval_callback`)."""

    learning_rate: float | None = field(default=None, metadata={"help": learning_rate_help(_TRL_GRPO_LEARNING_RATE)})

    def __post_init__(self):
        self._apply_prefkit_defaults()
        self._resolve_learning_rate(_TRL_GRPO_LEARNING_RATE)
        self._check_policy_eval_fields()
        super().__post_init__()


@dataclass
class RLOOConfig(trl.RLOOConfig, QLoRAArguments, PolicyEvalArguments):
    """``trl.RLOOConfig`` plus prefkit's QLoRA fields (``--quantization 4bit``, ``--use_peft``, ``lora_*``) and held-out
    evaluation while training (``--eval_prompts``, ``--eval_reward``: :mod:`prefkit.trainers.policy_eval_callback`)."""

    learning_rate: float | None = field(default=None, metadata={"help": learning_rate_help(_TRL_RLOO_LEARNING_RATE)})

    def __post_init__(self):
        self._apply_prefkit_defaults()
        self._resolve_learning_rate(_TRL_RLOO_LEARNING_RATE)
        self._check_policy_eval_fields()
        super().__post_init__()


class _PrefkitTRLLoop(ModelCardMixin, PolicyEvalMixin):
    """What prefkit adds to TRL's GRPO and RLOO trainers; ``_config_class`` is the matching prefkit config."""

    _config_class: type

    def __init__(self, model=None, reward_funcs=None, args=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, callbacks=None, optimizers=(None, None), peft_config=None,
                 quantization_config=None, **kwargs):
        model, rewards, args, processing_class, peft_config = _prepare(
            model, reward_funcs, args, train_dataset, processing_class, peft_config, self._config_class,
            quantization_config=quantization_config,
        )
        super().__init__(
            model=model, reward_funcs=rewards, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
            processing_class=processing_class, callbacks=callbacks, optimizers=optimizers, peft_config=peft_config,
            **kwargs,
        )
        self.add_policy_eval_from_args()

    def card_hyperparameters(self) -> dict[str, Any]:
        args = self.args
        return {
            "num_generations": args.num_generations,
            "max_completion_length": args.max_completion_length,
            "beta": args.beta,
            "loss_type": getattr(args, "loss_type", None),
            "reward": ", ".join(self.reward_func_names),
            **super().card_hyperparameters(),
        }


class GRPOTrainer(_PrefkitTRLLoop, trl.GRPOTrainer):
    """``trl.GRPOTrainer`` taking prefkit rewards (reward models, rule rewards by name) and a model name with QLoRA."""

    _card_method = "grpo"
    _config_class = GRPOConfig


class RLOOTrainer(_PrefkitTRLLoop, trl.RLOOTrainer):
    """``trl.RLOOTrainer`` taking prefkit rewards (reward models, rule rewards by name) and a model name with QLoRA."""

    _card_method = "rloo"
    _config_class = RLOOConfig
