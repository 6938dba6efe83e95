r"""Pieces of the RL loop that are not formulas: KL-coefficient controllers and reward functions.

The formulas (GAE, PPO objectives, KL estimators, baselines) are in :mod:`prefkit.losses`; the loop that uses all of
this is :class:`prefkit.trainers.ppo.PPOTrainer`.

KL controllers decide the coefficient :math:`\beta` of a KL term between PPO iterations:

- :class:`FixedKLController` keeps it constant;
- :class:`AdaptiveKLController` (Ziegler et al., 2019, "Fine-Tuning Language Models from Human Preferences") moves it
  towards a target KL with a clipped proportional error:

  .. math::
      e_t = \mathrm{clip}\Big(\frac{\mathrm{KL}_t - \mathrm{KL}_{target}}{\mathrm{KL}_{target}}, -0.2, 0.2\Big), \qquad
      \beta_{t+1} = \beta_t \,\big(1 + e_t \cdot n_t / H\big)

  where :math:`n_t` is the number of episodes in the iteration and :math:`H` the horizon.

Reward functions: anything that scores completions can drive PPO. :class:`RewardFunction` accepts

- a callable ``reward_fn(prompts, completions, **columns) -> list[float] | Tensor`` (rule-based rewards, judges,
  BLEU/ROUGE against a ``reference`` column: extra keyword parameters are filled from dataset columns of that name,
  a ``**kwargs`` parameter receives every column), or
- an object with ``.score(prompts, completions)``, such as :class:`prefkit.RewardModel`,

and checks every output: one finite number per completion, or a :class:`RewardFunctionError` that names the function,
what it returned and the offending rows.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

# --------------------------------------------------------------------------------------------------------------------
# KL controllers
# --------------------------------------------------------------------------------------------------------------------


class FixedKLController:
    """A KL coefficient that never changes."""

    def __init__(self, value: float):
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    r"""Ziegler et al. (2019)'s proportional controller: :math:`\beta \leftarrow \beta (1 + e \cdot n / H)` with
    :math:`e = \mathrm{clip}(\mathrm{KL}/\mathrm{KL}_{target} - 1, -0.2, 0.2)`.

    Args:
        init_value: the starting coefficient :math:`\beta_0`.
        target: the KL (in nats, per episode) the controller steers towards.
        horizon: :math:`H`, in episodes; with the error at its ±0.2 clip, β changes by a factor
            :math:`e^{\pm 0.2}` every :math:`H` episodes.
    """

    def __init__(self, init_value: float, target: float, horizon: int):
        if target <= 0:
            raise ValueError(f"The adaptive KL controller needs a positive target KL, got {target}.")
        if horizon <= 0:
            raise ValueError(f"The adaptive KL controller needs a positive horizon, got {horizon}.")
        self.value = float(init_value)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


def kl_controller(init_value: float, adaptive: bool, target: float, horizon: int):
    """The controller a config describes."""
    return AdaptiveKLController(init_value, target, horizon) if adaptive else FixedKLController(init_value)


# --------------------------------------------------------------------------------------------------------------------
# Reward functions
# --------------------------------------------------------------------------------------------------------------------


class RewardFunctionError(ValueError):
    """A reward function returned something other than one finite number per completion."""


def reward_function_name(reward: Any) -> str:
    name = getattr(reward, "__name__", None)
    if isinstance(name, str) and name:
        return name
    return type(reward).__name__


def _short(text: Any, limit: int = 60) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RewardFunction:
    """Uniform calling convention and output checks for one reward (a callable or an object with ``.score``).

    ``RewardFunction(fn)(prompts, completions, columns)`` returns a float32 tensor ``[len(completions)]`` or raises
    :class:`RewardFunctionError`. ``required_columns`` are the dataset columns the function asks for by name.
    """

    def __init__(self, reward: Any):
        self.reward = reward
        self.name = reward_function_name(reward)
        score = getattr(reward, "score", None)
        if callable(score):
            self._call = lambda prompts, completions, columns: score(prompts, completions)
            self.required_columns: list[str] = []
            return
        if not callable(reward):
            raise TypeError(
                f"reward {self.name!r} is a {type(reward).__name__}: pass a callable reward_fn(prompts, completions) "
                "-> list[float], an object with .score(prompts, completions) (e.g. prefkit.RewardModel), or a path "
                "to a reward model."
            )
        parameters = list(inspect.signature(reward).parameters.values())
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_varargs = any(p.kind == p.VAR_POSITIONAL for p in parameters)
        if len(positional) < 2 and not takes_varargs:
            raise TypeError(
                f"reward function {self.name!r} must accept (prompts, completions) as its first two arguments; its "
                f"signature is {inspect.signature(reward)}."
            )
        self._takes_all_columns = any(p.kind == p.VAR_KEYWORD for p in parameters)
        extra = [p for p in parameters[2:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        self._named_columns = [p.name for p in extra]
        self.required_columns = [p.name for p in extra if p.default is inspect.Parameter.empty]

        def call(prompts, completions, columns):
            if self._takes_all_columns:
                kwargs = dict(columns)
            else:
                kwargs = {name: columns[name] for name in self._named_columns if name in columns}
            return reward(prompts, completions, **kwargs)

        self._call = call

    def check_columns(self, column_names: Sequence[str], dataset_name: str = "train_dataset") -> None:
        """Fail before training when the function needs a dataset column that does not exist."""
        missing = [c for c in self.required_columns if c not in column_names]
        if missing:
            raise ValueError(
                f"reward function {self.name!r} needs the column(s) {missing} from {dataset_name}, which has "
                f"{sorted(column_names)}. Add the column, or give the parameter a default."
            )

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], columns: dict[str, list] | None = None) -> torch.Tensor:
        output = self._call(list(prompts), list(completions), columns or {})
        return validate_scores(output, prompts, completions, self.name)


def validate_scores(output: Any, prompts: Sequence[Any], completions: Sequence[str], name: str) -> torch.Tensor:
    """``output`` as a float32 tensor ``[len(completions)]``, or a :class:`RewardFunctionError` saying what is wrong."""
    expected = len(completions)
    what = f"Reward function {name!r}"
    if output is None:
        raise RewardFunctionError(f"{what} returned None; it must return one float per completion ({expected} values).")
    try:
        if isinstance(output, torch.Tensor):
            scores = output.detach().to(device="cpu", dtype=torch.float32)
        else:
            scores = torch.as_tensor(output if not isinstance(output, (list, tuple)) else list(output), dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as error:
        raise RewardFunctionError(
            f"{what} returned {_short(output)}, which is not a list of numbers ({error}); it must return one float "
            f"per completion ({expected} values)."
        ) from None
    if scores.dim() == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.dim() != 1 or scores.shape[0] != expected:
        raise RewardFunctionError(
            f"{what} returned shape {list(scores.shape)} for {expected} completions; it must return one float per "
            f"completion (shape [{expected}]). A reward model with several labels, or scores for only some "
            "completions, does not fit."
        )
    bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
    if bad:
        lines = [
            f"  completion {i}: score {scores[i].item()} for prompt {_short(prompts[i], 40)} -> {_short(completions[i], 40)}"
            for i in bad[:5]
        ]
        more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise RewardFunctionError(
            f"{what} returned {len(bad)} non-finite score(s) (NaN or inf) of {expected}:\n"
            + "\n".join(lines)
            + more
            + "\nFix the function for these inputs (an empty completion is a common cause) or map them to a finite "
            "score."
        )
    return scores


def combine_rewards(
    reward_functions: Sequence[RewardFunction],
    weights: Sequence[float] | None,
    prompts: Sequence[Any],
    completions: Sequence[str],
    columns: dict[str, list],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum of every reward function's scores, and each function's scores by name."""
    if weights is not None and len(weights) != len(reward_functions):
        raise ValueError(f"Got {len(weights)} reward weights for {len(reward_functions)} reward functions.")
    total = torch.zeros(len(completions))
    per_function: dict[str, torch.Tensor] = {}
    for index, function in enumerate(reward_functions):
        scores = function(prompts, completions, columns)
        weight = 1.0 if weights is None else float(weights[index])
        total += weight * scores
        per_function[function.name] = scores
    return total, per_function
