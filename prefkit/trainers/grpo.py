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

import os
from dataclasses import dataclass
from typing import Any

import trl

from ..hub import ModelCardMixin
from ..rl import reward_function_name
from .common import QLoRAArguments, default_bf16, load_model_for_training


def as_trl_reward_func(reward: Any):
    """A reward in TRL's calling convention ``fn(prompts=..., completions=..., **columns) -> list[float]``.

    Strings are built-in reward names or reward-model paths (:func:`prefkit.rewards.load_reward`); a
    :class:`prefkit.RewardModel` gives its ``as_reward_func()``; other objects with ``.score`` are wrapped; plain
    callables and TRL-loadable models pass through.
    """
    if isinstance(reward, str):
        from ..rewards import load_reward

        reward = load_reward(reward)
    as_reward_func = getattr(reward, "as_reward_func", None)
    if callable(as_reward_func):
        return as_reward_func()
    score = getattr(reward, "score", None)
    if callable(score) and not callable(getattr(reward, "forward", None)):

        def reward_func(prompts, completions, **kwargs):
            return [float(s) for s in score(prompts, completions)]

        reward_func.__name__ = reward_function_name(reward)
        return reward_func
    return reward


def _prepare(model, reward_funcs, args, train_dataset, processing_class, peft_config, config_class):
    """What both trainers do before handing over to TRL: validate, load by name, resolve rewards."""
    from ..models import DEFAULT_POLICY
    from .ppo import validate_prompt_dataset

    model = DEFAULT_POLICY if model is None else model
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if args is None:
        name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
        args = config_class(output_dir=f"{str(name).rstrip('/').split('/')[-1]}-{config_class.__name__[:-6]}")
    if not isinstance(args, config_class):
        raise TypeError(f"args is a {type(args).__name__}; pass prefkit's {config_class.__name__}.")
    if train_dataset is None:
        raise ValueError("train_dataset is required: a dataset with a 'prompt' column.")
    validate_prompt_dataset(train_dataset, "train_dataset")
    if reward_funcs is None:
        raise ValueError("reward_funcs is required: a RewardModel, its path, a built-in name (vader, bleu, rouge) or a callable.")
    rewards = reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    rewards = [as_trl_reward_func(r) for r in rewards]
    if isinstance(model, str):
        from transformers import set_seed

        set_seed(args.seed)
        model, tokenizer = load_model_for_training(model, args)
        processing_class = processing_class if processing_class is not None else tokenizer
        args.model_init_kwargs = None  # consumed by the load above
    elif args.quantization is not None:
        raise ValueError("args.quantization only applies when the model is given by name; this model is already loaded.")
    if peft_config is None and not hasattr(model, "peft_config"):
        peft_config = args.make_peft_config("causal-lm")
    return model, rewards, args, processing_class, peft_config


@dataclass
class GRPOConfig(trl.GRPOConfig, QLoRAArguments):
    """``trl.GRPOConfig`` plus prefkit's QLoRA fields (``--quantization 4bit``, ``--use_peft``, ``lora_*``)."""

    def __post_init__(self):
        self._resolve_qlora_fields()
        if self.bf16 is None and not self.fp16:
            self.bf16 = default_bf16()
        super().__post_init__()


@dataclass
class RLOOConfig(trl.RLOOConfig, QLoRAArguments):
    """``trl.RLOOConfig`` plus prefkit's QLoRA fields (``--quantization 4bit``, ``--use_peft``, ``lora_*``)."""

    def __post_init__(self):
        self._resolve_qlora_fields()
        if self.bf16 is None and not self.fp16:
            self.bf16 = default_bf16()
        super().__post_init__()


class GRPOTrainer(ModelCardMixin, trl.GRPOTrainer):
    """``trl.GRPOTrainer`` taking prefkit rewards (reward models, rule rewards by name) and a model name with QLoRA."""

    _card_method = "grpo"

    def __init__(self, model=None, reward_funcs=None, args: GRPOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None, callbacks=None, optimizers=(None, None), peft_config=None, **kwargs):
        model, rewards, args, processing_class, peft_config = _prepare(
            model, reward_funcs, args, train_dataset, processing_class, peft_config, GRPOConfig
        )
        super().__init__(
            model=model, reward_funcs=rewards, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
            processing_class=processing_class, callbacks=callbacks, optimizers=optimizers, peft_config=peft_config,
            **kwargs,
        )

    def card_hyperparameters(self) -> dict[str, Any]:
        args = self.args
        return {
            "num_generations": args.num_generations,
            "max_completion_length": args.max_completion_length,
            "beta": args.beta,
            "loss_type": args.loss_type,
            "reward": ", ".join(self.reward_func_names),
            **super().card_hyperparameters(),
        }


class RLOOTrainer(ModelCardMixin, trl.RLOOTrainer):
    """``trl.RLOOTrainer`` taking prefkit rewards (reward models, rule rewards by name) and a model name with QLoRA."""

    _card_method = "rloo"

    def __init__(self, model=None, reward_funcs=None, args: RLOOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None, callbacks=None, optimizers=(None, None), peft_config=None, **kwargs):
        model, rewards, args, processing_class, peft_config = _prepare(
            model, reward_funcs, args, train_dataset, processing_class, peft_config, RLOOConfig
        )
        super().__init__(
            model=model, reward_funcs=rewards, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
            processing_class=processing_class, callbacks=callbacks, optimizers=optimizers, peft_config=peft_config,
            **kwargs,
        )

    def card_hyperparameters(self) -> dict[str, Any]:
        args = self.args
        return {
            "num_generations": args.num_generations,
            "max_completion_length": args.max_completion_length,
            "beta": args.beta,
            "reward": ", ".join(self.reward_func_names),
            **super().card_hyperparameters(),
        }
