r"""Best-of-N: sample N answers per prompt, score them, keep the best.

The cheapest way to use a reward model without RL: for each prompt draw :math:`N` samples from the policy in one
batched ``generate`` call (``num_return_sequences=N``), score all of them in one batched reward pass, and answer
with the highest-scoring sample. The price is paid at inference time (N times the generation), and the result moves
away from the base policy by at most

.. math:: \mathrm{KL}(\pi_{BoN} \,\|\, \pi) = \log N - \frac{N - 1}{N}

nats (:func:`prefkit.losses.best_of_n_kl`; an upper bound, tight when the N samples are distinct), which every
:class:`BestOfNResult` reports beside its answer.

Example::

    from prefkit import best_of_n, load_model
    from prefkit.demo import load_demo_reward_model

    policy, tokenizer = load_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    results = best_of_n(policy, tokenizer, load_demo_reward_model(), ["Suggest an activity with my teddy bear."], n=8)
    print(results[0].best.text, results[0].best.reward, results[0].kl_to_base)

The reward can be

- a **callable** ``reward(prompts, responses) -> list[float] | Tensor`` (one score per pair);
- an object with ``.score(prompts, responses)``: :class:`prefkit.RewardModel`, DPO's
  :class:`prefkit.ImplicitReward` (β·log πθ/πref), a reward-model judge;
- a **pairwise judge**, an object with ``.judge(prompts, pairs)`` where ``pairs`` is a list of ``[first, second]``
  responses and the answer has one verdict per pair: a :class:`prefkit.data.judges.Judgement` or label ("A", "B",
  graded "A slightly better" ..., "tie", "both bad") or TRL's index (0: first is better, 1: second is better);
  anything else counts as a tie. The N candidates of a prompt then play a round robin, all :math:`N(N-1)/2` pairs in one judge call,
  and each candidate's reward is its number of wins (a tie counts half). This costs quadratically many judgements,
  so keep N small with an LLM judge.

Prompts are passed to the reward exactly as given (a string or a list of chat messages) and responses as plain
text without the chat template's end-of-turn: a reward model applies its own template.

Prompts longer than the policy's context (minus ``max_new_tokens``) raise a :class:`PromptTooLongError` by default;
with ``truncation="left"`` they keep their last tokens (where the question and the generation prompt are) and a
warning names them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from .chat import Prompt
from .data.judges import verdict_winner
from .losses import best_of_n_kl
from .sampling import HFSampler, PromptTooLongError, seeded

__all__ = [
    "BestOfNResult",
    "Candidate",
    "PromptTooLongError",
    "best_of_n",
    "score_responses",
]


@dataclass
class Candidate:
    """One sampled answer.

    Attributes:
        text: the decoded answer (special tokens and the end-of-turn removed).
        reward: its score under the reward (for a pairwise judge: its round-robin wins).
        rank: 1 for the best of its prompt, N for the worst; ties keep sampling order.
        num_tokens: generated tokens, the end-of-sequence token included when it was reached.
        finished: True when the answer ended with an end-of-sequence token, False when ``max_new_tokens`` cut it.
        index: the order in which it was sampled (0 .. N-1).
    """

    text: str
    reward: float
    rank: int
    num_tokens: int
    finished: bool
    index: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BestOfNResult:
    """The N candidates of one prompt, ranked, with what they cost.

    Attributes:
        prompt: the prompt as given (a string or a list of messages).
        candidates: every sample in sampling order, each with its reward and rank.
        best: the rank-1 candidate.
        tokens_generated: tokens generated for this prompt (all N candidates).
        generate_seconds / score_seconds: wall time of the generate and reward calls that served this prompt. When
            several prompts share a batch, the batch's time is split between them in proportion to their generated
            tokens (generation) or evenly (scoring).
        kl_to_base: the analytic bound log N - (N-1)/N on KL(best-of-N || policy), in nats.
        duplicates: candidates whose text repeats an earlier candidate (the KL bound is loose when this is > 0).
        truncated_prompt_tokens: tokens cut from the left of the prompt (``truncation="left"``), else 0.
        interrupted_by: ``"max_time"`` or ``"should_stop"`` when that argument of :func:`best_of_n` cut the
            generation short (unfinished candidates then end where it stopped), else None.
    """

    prompt: Prompt
    candidates: list[Candidate]
    best: Candidate
    tokens_generated: int
    generate_seconds: float
    score_seconds: float
    kl_to_base: float
    duplicates: int = 0
    truncated_prompt_tokens: int = 0
    generation: dict[str, Any] = field(default_factory=dict)
    interrupted_by: str | None = None

    @property
    def n(self) -> int:
        return len(self.candidates)

    @property
    def ranked(self) -> list[Candidate]:
        """Candidates from best to worst."""
        return sorted(self.candidates, key=lambda candidate: candidate.rank)

    @property
    def mean_reward(self) -> float:
        """The expected reward of a single sample, the baseline best-of-N improves on."""
        return sum(candidate.reward for candidate in self.candidates) / len(self.candidates)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (one JSONL line of ``prefkit bon``)."""
        return {
            "prompt": self.prompt,
            "n": self.n,
            "best": self.best.text,
            "best_reward": self.best.reward,
            "mean_reward": self.mean_reward,
            "kl_to_base": self.kl_to_base,
            "tokens_generated": self.tokens_generated,
            "generate_seconds": self.generate_seconds,
            "score_seconds": self.score_seconds,
            "duplicates": self.duplicates,
            "truncated_prompt_tokens": self.truncated_prompt_tokens,
            "interrupted_by": self.interrupted_by,
            "generation": self.generation,
            "candidates": [candidate.to_dict() for candidate in self.candidates],
        }


RewardLike = Callable[..., Any] | Any


# --------------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------------


def _check_prompts(prompts: Any) -> list[Prompt]:
    if isinstance(prompts, str):
        raise TypeError(f"prompts must be a list of prompts; got one string. Pass [{prompts[:40]!r}...].")
    if isinstance(prompts, dict) or (
        isinstance(prompts, Sequence) and len(prompts) > 0 and all(isinstance(p, dict) for p in prompts)
    ):
        raise TypeError("prompts looks like a single conversation (a list of messages); pass a list of them: [messages].")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: pass at least one prompt.")
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError(f"prompts[{index}] is empty or blank.")
        elif isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
            continue
        else:
            raise TypeError(
                f"prompts[{index}] is a {type(prompt).__name__}; each prompt must be a non-empty string or a list of "
                "{'role', 'content'} messages."
            )
    return prompts


def _module_of(reward: Any) -> torch.nn.Module | None:
    """The torch module behind a reward, when there is one we can see (a module, or an object holding ``.model``)."""
    if isinstance(reward, torch.nn.Module):
        return reward
    inner = getattr(reward, "model", None)
    return inner if isinstance(inner, torch.nn.Module) else None


def _device_of(module: torch.nn.Module) -> torch.device | None:
    for parameter in module.parameters():
        return parameter.device
    return None


def _check_devices(policy, reward) -> torch.device:
    policy_device = _device_of(policy) or torch.device("cpu")
    module = _module_of(reward)
    reward_device = _device_of(module) if module is not None else None
    if reward_device is not None and reward_device != policy_device:
        raise ValueError(
            f"The policy is on {policy_device} but the reward model is on {reward_device}. Move one of them "
            f"(e.g. reward_model.to('{policy_device}')), or wrap the reward in a function that moves its inputs "
            "if you mean to keep them apart."
        )
    return policy_device


# --------------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------------


def _as_floats(values: Any, expected: int, what: str) -> list[float]:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().reshape(-1).tolist()
    else:
        values = [float(v.item() if hasattr(v, "item") else v) for v in values]
    if len(values) != expected:
        raise ValueError(f"{what} returned {len(values)} scores for {expected} (prompt, response) pairs.")
    return values


def _round_robin(judge, prompts: Sequence[Prompt], responses: Sequence[str], n: int) -> list[float]:
    """Wins of each candidate when the N candidates of each prompt meet each other once (a tie is half a win)."""
    pair_prompts, pair_completions, pair_index = [], [], []
    for start in range(0, len(responses), n):
        for i in range(start, start + n):
            for j in range(i + 1, start + n):
                pair_prompts.append(prompts[start])
                pair_completions.append([responses[i], responses[j]])
                pair_index.append((i, j))
    wins = [0.0] * len(responses)
    if not pair_prompts:  # N = 1: nothing to compare
        return wins
    verdicts = judge.judge(pair_prompts, pair_completions)
    verdicts = list(verdicts)
    if len(verdicts) != len(pair_prompts):
        raise ValueError(f"The judge returned {len(verdicts)} verdicts for {len(pair_prompts)} pairs.")
    for (i, j), verdict in zip(pair_index, verdicts):
        winner = verdict_winner(verdict)
        if winner == 0:
            wins[i] += 1.0
        elif winner == 1:
            wins[j] += 1.0
        else:
            wins[i] += 0.5
            wins[j] += 0.5
    return wins


def score_responses(reward: RewardLike, prompts: Sequence[Prompt], responses: Sequence[str], n: int = 1) -> list[float]:
    """Score ``responses[k]`` to ``prompts[k]`` with any reward prefkit accepts (see the module docstring).

    ``n`` matters only for a pairwise judge: the responses come in consecutive groups of ``n`` per prompt and each
    group plays a round robin.
    """
    if hasattr(reward, "score"):
        return _as_floats(reward.score(list(prompts), list(responses)), len(responses), f"{type(reward).__name__}.score")
    if hasattr(reward, "judge"):
        return _round_robin(reward, prompts, responses, n)
    if callable(reward):
        name = getattr(reward, "__name__", type(reward).__name__)
        return _as_floats(reward(list(prompts), list(responses)), len(responses), f"reward function {name}")
    raise TypeError(
        f"reward is a {type(reward).__name__}; pass a function reward(prompts, responses) -> scores, an object with "
        ".score(prompts, responses) (a RewardModel, an ImplicitReward), or a pairwise judge with .judge(prompts, pairs)."
    )


# --------------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------------


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of_n(
    policy,
    tokenizer,
    reward: RewardLike,
    prompts: Sequence[Prompt],
    n: int = 8,
    batch_size: int = 4,
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    truncation: Literal["error", "left"] = "error",
    progress: bool = True,
    max_time: float | None = None,
    should_stop: Callable[[], bool] | None = None,
    **generation: Any,
) -> list[BestOfNResult]:
    """Sample ``n`` answers per prompt from ``policy``, score them with ``reward``, rank them.

    Args:
        policy: a causal LM (``transformers`` or a ``PeftModel``).
        tokenizer: its tokenizer; the chat template, when present, formats each prompt (with the generation prompt).
        reward: a function ``reward(prompts, responses)``, an object with ``.score(prompts, responses)``, or a
            pairwise judge with ``.judge(prompts, pairs)`` (round robin, reward = wins). See the module docstring.
        prompts: strings or lists of chat messages.
        n: samples per prompt (N).
        batch_size: prompts per ``generate`` call; each call samples ``batch_size * n`` sequences, and one reward
            call scores them all.
        max_new_tokens, temperature, top_p: sampling settings (sampling is always on; temperature must be > 0).
        seed: makes the samples reproducible without touching the caller's random state.
        truncation: ``"error"`` (default) raises :class:`PromptTooLongError` for a prompt that leaves no room for
            ``max_new_tokens`` in the context; ``"left"`` keeps its last tokens and warns.
        progress: show a progress bar over batches when there is more than one.
        max_time: seconds all the generation may take (every batch together; scoring is not counted). When it runs
            out, each candidate ends where it is and is scored as it is (``interrupted_by="max_time"``).
        should_stop: called after every generated token; True ends the generation the same way (a server passes
            "has the client gone?"), with ``interrupted_by="should_stop"``.
        **generation: any other ``generate`` argument (``top_k``, ``repetition_penalty``, ``min_p`` ...).

    Returns:
        One :class:`BestOfNResult` per prompt, in order.
    """
    prompts = _check_prompts(prompts)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (the number of samples per prompt); got {n!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1 (prompts per generate call); got {batch_size!r}.")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (Best-of-N samples); got {temperature!r}.")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1]; got {top_p!r}.")
    if truncation not in ("error", "left"):
        raise ValueError(f"truncation must be 'error' or 'left'; got {truncation!r}.")
    if "num_return_sequences" in generation:
        raise ValueError("Pass n= instead of num_return_sequences: best_of_n sets it.")
    if generation.get("do_sample", True) is False or generation.get("num_beams", 1) != 1:
        raise ValueError("Best-of-N needs independent samples: do_sample=False and beam search are not supported.")
    if not (hasattr(reward, "score") or hasattr(reward, "judge") or callable(reward)):
        score_responses(reward, [], [])  # raises the TypeError that explains what a reward may be
    device = _check_devices(policy, reward)
    sampler = HFSampler(policy, tokenizer)
    kl = best_of_n_kl(n)

    # Encode every prompt first so that a too-long prompt fails before any sampling.
    encoded = sampler.encode(prompts, max_new_tokens=max_new_tokens, truncation=truncation)
    cut = encoded.truncated_tokens
    settings = {"n": n, "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
    settings.update({k: v for k, v in generation.items() if isinstance(v, (int, float, str, bool))})
    if max_time is not None:
        settings["max_time"] = max_time
    generation = {"top_k": 0, **generation}  # sample from the policy itself unless told otherwise
    deadline = None if max_time is None else time.monotonic() + max_time

    batches = list(range(0, len(prompts), batch_size))
    bar = None
    if progress and len(batches) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc=f"best-of-{n}", unit="prompt")
    results: list[BestOfNResult] = []
    try:
        with seeded(seed, device):
            for start in batches:
                batch_prompts = prompts[start : start + batch_size]
                _synchronize(device)
                began = time.perf_counter()
                samples = sampler.generate_encoded(
                    batch_prompts, encoded[start : start + batch_size], n,
                    max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, should_stop=should_stop,
                    max_time=None if deadline is None else max(0.0, deadline - time.monotonic()), **generation,
                )
                _synchronize(device)
                generate_seconds = time.perf_counter() - began
                texts = samples.texts
                lengths = samples.completion_lengths.tolist()
                finished = samples.finished.tolist()

                began = time.perf_counter()
                repeated_prompts = [prompt for prompt in batch_prompts for _ in range(n)]
                rewards = score_responses(reward, repeated_prompts, texts, n)
                score_seconds = time.perf_counter() - began
                for position, value in enumerate(rewards):
                    if math.isnan(value):
                        raise ValueError(
                            f"The reward is NaN for candidate {position % n} of prompts[{start + position // n}]."
                        )

                batch_tokens = max(sum(lengths), 1)
                for offset, prompt in enumerate(batch_prompts):
                    rows = range(offset * n, (offset + 1) * n)
                    order = sorted(rows, key=lambda row: -rewards[row])  # stable: ties keep sampling order
                    rank_of = {row: rank for rank, row in enumerate(order, start=1)}
                    candidates = [
                        Candidate(
                            text=texts[row],
                            reward=float(rewards[row]),
                            rank=rank_of[row],
                            num_tokens=lengths[row],
                            finished=finished[row],
                            index=row - offset * n,
                        )
                        for row in rows
                    ]
                    tokens = sum(lengths[row] for row in rows)
                    seen: set[str] = set()
                    duplicates = 0
                    for candidate in candidates:
                        duplicates += candidate.text in seen
                        seen.add(candidate.text)
                    results.append(
                        BestOfNResult(
                            prompt=prompt,
                            candidates=candidates,
                            best=candidates[order[0] - offset * n],
                            tokens_generated=tokens,
                            generate_seconds=generate_seconds * tokens / batch_tokens,
                            score_seconds=score_seconds / len(batch_prompts),
                            kl_to_base=kl,
                            duplicates=duplicates,
                            truncated_prompt_tokens=cut[start + offset],
                            generation=dict(settings),
                            interrupted_by=samples.interrupted_by,
                        )
                    )
                if bar is not None:
                    bar.update(len(batch_prompts))
    finally:
        if bar is not None:
            bar.close()
    return results
