"""Rule-based rewards that need no trained model, selectable by name (``prefkit ppo --reward vader``).

Every function has the reward signature ``fn(prompts, completions, **columns) -> list[float]`` that
:class:`prefkit.trainers.ppo.PPOTrainer` and TRL's ``GRPOTrainer`` / ``RLOOTrainer`` accept.

- ``vader``: the VADER sentiment compound score of the completion, in [-1, 1] (``vaderSentiment``, offline). Maximizing
  it makes a model's answers more positive: a real alignment target with a known ground truth, handy for demos.
- ``bleu``: sentence BLEU of the completion against the dataset's ``reference`` column, in [0, 1] (``sacrebleu``).
- ``rouge``: ROUGE-L F1 of the completion against the ``reference`` column, in [0, 1] (``rouge-score``).

:func:`resolve_reward` turns every spelling of a reward (these names, ``demo``, a reward model's folder or Hub id,
``module:function``, ``implicit:PATH``, a callable or an object with ``.score``) into something that scores; every
command, trainer and the app go through it.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from .rl import RewardFunction


def _text(completion: Any) -> str:
    """A completion as text: TRL passes conversational completions as lists of messages."""
    if isinstance(completion, list):
        return " ".join(str(message.get("content", "")) for message in completion if isinstance(message, dict))
    return str(completion)


@lru_cache(maxsize=1)
def _vader():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise ImportError("The 'vader' reward needs vaderSentiment: pip install vaderSentiment") from None
    return SentimentIntensityAnalyzer()


def vader_sentiment(prompts: list[Any], completions: list[Any], **columns) -> list[float]:
    """VADER compound sentiment of each completion, in [-1, 1] (1 = very positive); 0 for an empty completion."""
    analyzer = _vader()
    return [float(analyzer.polarity_scores(_text(c))["compound"]) for c in completions]


def bleu(prompts: list[Any], completions: list[Any], reference: list[str], **columns) -> list[float]:
    """Sentence BLEU (sacrebleu, default tokenization) against the ``reference`` column, scaled to [0, 1]."""
    import sacrebleu

    return [float(sacrebleu.sentence_bleu(_text(c), [str(r)]).score) / 100.0 for c, r in zip(completions, reference)]


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge(prompts: list[Any], completions: list[Any], reference: list[str], **columns) -> list[float]:
    """ROUGE-L F1 (with stemming) against the ``reference`` column, in [0, 1]."""
    scorer = _rouge_scorer()
    return [float(scorer.score(str(r), _text(c))["rougeL"].fmeasure) for c, r in zip(completions, reference)]


vader_sentiment.__name__ = "vader"
bleu.__name__ = "bleu"
rouge.__name__ = "rouge"

BUILTIN_REWARDS = {"vader": vader_sentiment, "bleu": bleu, "rouge": rouge}


# --------------------------------------------------------------------------------------------------------------------
# The one resolver: every way a user can name a reward
# --------------------------------------------------------------------------------------------------------------------

IMPLICIT_PREFIX = "implicit:"

DEMO_NAME = "demo"
NAMED_REWARD_MODELS = {DEMO_NAME: "prefkit.demo:load_demo_reward_model"}
"""Names that stand for a reward model built by a function, resolved like a ``module:function`` reward. The demo
model's loader trains it on first use with :class:`prefkit.RewardTrainer`; naming it here, rather than importing it,
keeps this module (which the trainers use) below the trainers."""


class UnknownRewardError(ValueError):
    """A reward name that is no built-in reward, ``module:function``, folder or Hub id."""
_FUNCTION_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def _import_function(spec: str):
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"reward {spec!r}: could not import module {module_name!r} ({error}). A 'module:function' reward must be "
            "importable from where you run prefkit (pip install it, or run from its folder)."
        ) from None
    function = getattr(module, attribute, None)
    if function is None or not callable(function):
        raise ValueError(f"reward {spec!r}: module {module_name!r} has no callable {attribute!r}.")
    return function


def resolve_reward(
    reward: Any,
    *,
    ref_model: str | None = None,
    beta: float = 0.1,
    device: str | None = None,
    progress: Callable[[float, str], None] | None = None,
    train_demo_if_missing: bool = True,
    **reward_model_kwargs: Any,
):
    """The reward ``reward`` names, in every spelling prefkit accepts, used by every command, trainer and the app.

    - an object that already scores (a callable ``fn(prompts, completions, ...)``, an object with
      ``.score(prompts, completions)`` such as :class:`prefkit.RewardModel` or :class:`prefkit.ImplicitReward`, or
      a pairwise judge with ``.judge``) is returned as it is;
    - ``"vader"``, ``"bleu"``, ``"rouge"``: a built-in rule reward (:data:`BUILTIN_REWARDS`);
    - ``"demo"``: prefkit's demo reward model (:mod:`prefkit.demo`; trained on first use, with
      ``progress(fraction, message)`` reports, unless ``train_demo_if_missing`` is off);
    - ``"package.module:function"``: that function, imported;
    - ``"implicit:PATH"``: a DPO-trained model's implicit reward β·log πθ/πref (:class:`prefkit.ImplicitReward`):
      a LoRA adapter folder (its base is the reference) or a full model with ``ref_model``;
    - any other string: the folder or Hub id of a trained reward model, loaded with
      :meth:`prefkit.RewardModel.from_pretrained` (``reward_model_kwargs`` go there).

    ``device`` places a loaded model. A string that is none of these raises a ``ValueError`` that lists them.
    """
    if not isinstance(reward, (str, os.PathLike)):
        if reward is None:
            raise ValueError(f"A reward is required. {SPELLINGS}")
        if callable(reward) or callable(getattr(reward, "score", None)) or callable(getattr(reward, "judge", None)):
            return reward
        raise TypeError(f"reward is a {type(reward).__name__}, which cannot score completions: {SPELLINGS}")
    name = os.fspath(reward)
    if name in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[name]
    from . import reward_model

    if name in NAMED_REWARD_MODELS:
        load = _import_function(NAMED_REWARD_MODELS[name])
        return load(train_if_missing=train_demo_if_missing, progress=progress, device=device)
    if name.startswith(IMPLICIT_PREFIX):
        from .implicit_reward import ImplicitReward

        scorer = ImplicitReward.from_pretrained(name[len(IMPLICIT_PREFIX) :], ref_model=ref_model, beta=beta)
        if device is not None:
            scorer.model.to(device)
            if scorer.ref_model is not None:
                scorer.ref_model.to(device)
        return scorer
    if _FUNCTION_SPEC.fullmatch(name) and not os.path.exists(name):
        return _import_function(name)
    if os.path.isdir(name) or (name.count("/") == 1 and not name.startswith((".", "/")) and not os.path.exists(name)):
        return reward_model.RewardModel.from_pretrained(name, device=device, **reward_model_kwargs)
    raise UnknownRewardError(f"Unknown reward {name!r}: no such built-in reward, folder or Hub id. {SPELLINGS}")


SPELLINGS = (
    f"A reward is one of: a built-in name ({', '.join(sorted(BUILTIN_REWARDS))}); 'demo' (prefkit's demo reward "
    "model); the folder or Hub id of a trained reward model; 'package.module:function' (a Python function "
    "fn(prompts, completions) -> list[float]); 'implicit:PATH' (a DPO model's implicit reward); or, from Python, a "
    "callable or an object with .score(prompts, completions)."
)


def resolve_rewards(rewards: Any, **kwargs: Any) -> list:
    """:func:`resolve_reward` for one reward or a list of them (PPO and GRPO sum several)."""
    if rewards is None:
        raise ValueError(f"A reward is required. {SPELLINGS}")
    items = list(rewards) if isinstance(rewards, (list, tuple)) else [rewards]
    if not items:
        raise ValueError(f"A reward is required. {SPELLINGS}")
    return [resolve_reward(item, **kwargs) for item in items]


def as_reward_functions(reward_funcs: Any) -> list[RewardFunction]:
    """One reward or a list of them, in any spelling :func:`resolve_reward` takes, each wrapped in a checked
    :class:`prefkit.rl.RewardFunction` (PPO's calling convention and output checks)."""
    resolved = [RewardFunction(item) for item in resolve_rewards(reward_funcs)]
    names = [f.name for f in resolved]
    if len(set(names)) != len(names):
        # Metrics are logged per function name; make duplicates distinguishable.
        for index, function in enumerate(resolved):
            function.name = f"{function.name}_{index}"
    return resolved
