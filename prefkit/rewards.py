"""Rule-based rewards that need no trained model, selectable by name (``prefkit ppo --reward vader``).

Every function has the reward signature ``fn(prompts, completions, **columns) -> list[float]`` that
:class:`prefkit.trainers.ppo.PPOTrainer` and TRL's ``GRPOTrainer`` / ``RLOOTrainer`` accept.

- ``vader``: the VADER sentiment compound score of the completion, in [-1, 1] (``vaderSentiment``, offline). Maximizing
  it makes a model's answers more positive: a real alignment target with a known ground truth, handy for demos.
- ``bleu``: sentence BLEU of the completion against the dataset's ``reference`` column, in [0, 1] (``sacrebleu``).
- ``rouge``: ROUGE-L F1 of the completion against the ``reference`` column, in [0, 1] (``rouge-score``).

:func:`load_reward` also resolves a path to a trained reward model (:class:`prefkit.RewardModel`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any


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


def load_reward(name_or_path: str, **reward_model_kwargs):
    """A built-in reward by name (``vader``, ``bleu``, ``rouge``), prefkit's demo reward model (``demo``), or a
    trained reward model from a folder or Hub id.

    A reward model is loaded as :class:`prefkit.RewardModel`, whose ``.score(prompts, completions)`` PPO calls.
    """
    from .reward_model import DEMO_NAME, load_reward_model

    if name_or_path in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[name_or_path]
    if name_or_path != DEMO_NAME and not os.path.isdir(name_or_path) and "/" not in name_or_path:
        raise ValueError(
            f"Unknown reward {name_or_path!r}: use one of {sorted(BUILTIN_REWARDS)}, 'demo', or the folder / Hub id "
            "of a trained reward model."
        )
    return load_reward_model(name_or_path, **reward_model_kwargs)
