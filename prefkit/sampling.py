r"""The one sampler: prompts in, completions (with their masks, stop flags and, when asked, log-probs) out.

Pair generation (:mod:`prefkit.data.generation`), Best-of-N (:mod:`prefkit.bon`), PPO rollouts and the LLM judge's
Hugging Face backend all sample through :func:`generate`, so a prompt is rendered, truncated and stopped the same way
everywhere:

- **rendering**: the chat template with the generation prompt when the tokenizer has one or the prompt is a list of
  messages (:func:`prefkit.chat.render_prompt`); special tokens (a BOS) are added only to plain, untemplated text;
- **truncation**: a prompt longer than its budget (``max_prompt_length``, and never more than the model's context
  minus ``max_new_tokens``) raises :class:`PromptTooLongError` with ``truncation="error"``, or keeps its last tokens
  (where the question and the generation prompt are) with ``truncation="left"``;
- **stopping**: a completion ends at its first stop token (:func:`stop_token_ids`: the model's and the tokenizer's
  EOS ids plus any extra), which is kept in ``completion_ids`` (a policy must learn to stop) and masked in; what
  follows is padding. ``finished`` says whether a stop token came before ``max_new_tokens`` ran out.
- **interrupting**: ``max_time`` (seconds for the whole call) and ``should_stop`` (a callable, e.g. "the client left")
  end every row after the token being generated when they fire; ``Samples.interrupted_by`` says which one did.

The engine is an object with ``generate(prompts, n, **gen_kwargs) -> Samples`` (:class:`Sampler`); a
:class:`RolloutEngine` also has ``update_weights(policy)``, which makes it sample from a training policy's current
weights. :class:`HFSampler` runs ``transformers``' ``generate`` on a local model (``update_weights`` points it at the
policy: nothing is copied). :class:`prefkit.sampling_server.ServerSampler` samples on an OpenAI-compatible server
(vLLM) and ships the policy's LoRA adapter to it; its ``Samples.logprobs`` are the server's.

Rows of a :class:`Samples` are prompt-major: the ``n`` completions of prompt 0, then those of prompt 1, and so on.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from .chat import Prompt, render_prompt, uses_chat_template
from .models import context_length

__all__ = [
    "HFSampler",
    "PromptTooLongError",
    "RolloutEngine",
    "Sampler",
    "Samples",
    "encode_prompts",
    "generate",
    "stop_token_ids",
]

Truncation = Literal["error", "left"]


class PromptTooLongError(ValueError):
    """A prompt does not fit its budget: ``max_prompt_length``, or the context left after ``max_new_tokens``."""


# --------------------------------------------------------------------------------------------------------------------
# Stop ids, prompt budget and encoding
# --------------------------------------------------------------------------------------------------------------------


def stop_token_ids(model, tokenizer, extra: Sequence[int] | None = None) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS, the model's ``generation_config.eos_token_id`` (an int
    or a list: chat models often stop at an end-of-turn token as well) and ``extra``; sorted, without repeats."""
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None), extra):
        if source is None:
            continue
        ids.update(int(i) for i in (source if isinstance(source, (list, tuple, set)) else [source]))
    return sorted(ids)


def prompt_budget(model, tokenizer, max_new_tokens: int, max_prompt_length: int | None = None) -> int | None:
    """How many prompt tokens fit: ``max_prompt_length`` capped by the context minus ``max_new_tokens``."""
    limits = [max_prompt_length] if max_prompt_length else []
    context = context_length(model, tokenizer)
    if context is not None:
        if context - max_new_tokens < 1:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's {context}-token context; "
                "lower it."
            )
        limits.append(context - max_new_tokens)
    return min(limits) if limits else None


@dataclass
class EncodedPrompts:
    """Token ids of each prompt (after the chat template and truncation) and how many leading tokens were cut."""

    ids: list[list[int]]
    truncated_tokens: list[int]

    def __getitem__(self, rows: slice) -> EncodedPrompts:
        return EncodedPrompts(self.ids[rows], self.truncated_tokens[rows])

    def __len__(self) -> int:
        return len(self.ids)


def encode_prompts(
    tokenizer,
    prompts: Sequence[Prompt],
    *,
    max_length: int | None = None,
    truncation: Truncation = "error",
    chat_template: bool | None = None,
    add_special_tokens: bool | None = None,
    first_index: int = 0,
) -> EncodedPrompts:
    """Render and tokenize ``prompts``; one longer than ``max_length`` raises or keeps its end (``truncation``).

    ``add_special_tokens`` defaults to True only for prompts that are not rendered with a chat template (a template
    writes its own BOS). ``first_index`` is added to the index an error or warning names (the caller's numbering).
    """
    if truncation not in ("error", "left"):
        raise ValueError(f"truncation must be 'error' or 'left', not {truncation!r}.")
    ids, cut = [], []
    for offset, prompt in enumerate(prompts):
        templated = uses_chat_template(tokenizer, prompt, chat_template)
        special = (not templated) if add_special_tokens is None else add_special_tokens
        tokens = tokenizer(render_prompt(tokenizer, prompt, chat_template), add_special_tokens=special)["input_ids"]
        removed = 0
        if max_length is not None and len(tokens) > max_length:
            index = first_index + offset
            if truncation == "error":
                raise PromptTooLongError(
                    f"prompts[{index}] is {len(tokens)} tokens after the chat template, but only {max_length} fit "
                    "(the context minus max_new_tokens, or max_prompt_length). Shorten it, lower max_new_tokens, or pass "
                    "truncation='left' to keep its last tokens."
                )
            removed = len(tokens) - max_length
            warnings.warn(
                f"prompts[{index}] is {len(tokens)} tokens; keeping its last {max_length} (truncation='left').",
                stacklevel=2,
            )
            tokens = tokens[-max_length:]
        ids.append(list(tokens))
        cut.append(removed)
    return EncodedPrompts(ids, cut)


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists to ``width`` (default: the longest); returns ``(ids, attention_mask)`` as long tensors."""
    width = max([len(s) for s in sequences] + [0]) if width is None else width
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            ids[row, width - len(sequence) :] = torch.as_tensor(list(sequence), dtype=torch.long)
            mask[row, width - len(sequence) :] = 1
    return ids, mask


def completion_mask(completion_ids: torch.Tensor, stop_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, finished)`` of completions ``[rows, width]``: the mask is 1 up to and including the first stop token
    (everything when there is none), ``finished`` is True where a stop token came."""
    width = completion_ids.shape[1]
    if stop_ids and width:
        is_stop = torch.isin(completion_ids, torch.as_tensor(list(stop_ids), device=completion_ids.device))
    else:
        is_stop = torch.zeros_like(completion_ids, dtype=torch.bool)
    finished = is_stop.any(dim=1)
    last = torch.where(finished, is_stop.float().argmax(dim=1), torch.full_like(finished, max(width - 1, 0), dtype=torch.long))
    positions = torch.arange(width, device=completion_ids.device).unsqueeze(0)
    return positions <= last.unsqueeze(1), finished


# --------------------------------------------------------------------------------------------------------------------
# What a sampler returns
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Samples:
    """Completions of ``prompts``, ``n`` per prompt, prompt-major (row ``i * n + j`` is prompt ``i``'s j-th).

    Tensors are on the device the model ran on. ``prompt_ids`` is left-padded (``prompt_mask`` marks real tokens) and
    ``completion_ids`` right-padded with ``pad_token_id`` after the first stop token, which is kept and masked in
    (``completion_mask``). ``texts`` are decoded up to, not including, the stop token, without special tokens,
    stripped. ``logprobs`` (``return_logprobs=True``) are the sampling distribution's log-probabilities of each
    completion token (after temperature and top-k/top-p: what an importance ratio needs), 0 where masked out;
    ``step_logits`` (``return_logits=True``) the raw logits ``[rows, width, vocab]`` (float32, CPU).
    ``interrupted_by`` is ``"max_time"`` or ``"should_stop"`` when that argument ended the generation early (rows
    without a stop token were then cut by it, not by ``max_new_tokens``), else None.
    """

    prompts: list[Prompt]
    n: int
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    finished: torch.Tensor
    texts: list[str]
    truncated_prompt_tokens: list[int] = field(default_factory=list)
    logprobs: torch.Tensor | None = None
    step_logits: torch.Tensor | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    interrupted_by: str | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def completion_lengths(self) -> torch.Tensor:
        """Tokens in each completion, its stop token included."""
        return self.completion_mask.sum(dim=1).long()

    @property
    def input_ids(self) -> torch.Tensor:
        """Prompt and completion side by side, ``[rows, prompt_width + completion_width]``."""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask.long(), self.completion_mask.long()], dim=1)

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions that skip the left padding, as ``generate`` used them."""
        return (self.attention_mask.cumsum(dim=1) - 1).clamp(min=0)

    def by_prompt(self) -> list[list[str]]:
        """``texts`` grouped: one list of ``n`` completions per prompt."""
        return [self.texts[i * self.n : (i + 1) * self.n] for i in range(len(self.prompts))]


class Sampler(Protocol):
    """A rollout engine: samples ``n`` completions for each prompt."""

    def generate(self, prompts: Sequence[Prompt], n: int = 1, **gen_kwargs: Any) -> Samples: ...


class RolloutEngine(Sampler, Protocol):
    """A sampler that follows a training policy: ``generate`` returns :class:`Samples` (token ids, the completion
    mask and, where the engine has them, the behaviour log-probs in ``logprobs``); ``update_weights(policy)`` makes
    the next ``generate`` sample from ``policy``'s current weights. :class:`HFSampler` and
    :class:`prefkit.sampling_server.ServerSampler` are the two engines; PPO picks one with
    ``PPOConfig.rollout_engine``."""

    def update_weights(self, policy: Any) -> Any: ...


# --------------------------------------------------------------------------------------------------------------------
# transformers' generate
# --------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device):
    """Seed what runs inside without disturbing the caller's random state (a no-op for ``seed=None``)."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class Interrupt:
    """A ``transformers`` stopping criterion that ends every row of a ``generate`` call once ``deadline``
    (``time.monotonic()``) has passed or ``should_stop()`` is true. ``generate`` calls it after each token, so a
    generation stops within one token; ``fired`` remembers why. (It follows ``StoppingCriteria``'s call protocol
    without subclassing it, so importing this module does not import ``transformers``.)"""

    def __init__(self, deadline: float | None = None, should_stop: Callable[[], bool] | None = None):
        self.deadline, self.should_stop = deadline, should_stop
        self.fired: str | None = None

    def check(self) -> bool:
        if self.fired is None:
            if self.should_stop is not None and self.should_stop():
                self.fired = "should_stop"
            elif self.deadline is not None and time.monotonic() >= self.deadline:
                self.fired = "max_time"
        return self.fired is not None

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.check(), dtype=torch.bool, device=input_ids.device)


class HFSampler:
    """Samples with ``model.generate`` (a ``transformers`` causal LM or a ``PeftModel``).

    Args:
        model, tokenizer: the policy and its tokenizer (a pad token is needed; :func:`prefkit.load_model` sets one).
        extra_stop_ids: ids that end a completion besides the EOS ids (:func:`stop_token_ids`).
        autocast: a context-manager factory entered around each ``generate`` call (e.g. ``accelerator.autocast``).
    """

    def __init__(self, model, tokenizer, *, extra_stop_ids: Sequence[int] | None = None,
                 autocast: Callable[[], contextlib.AbstractContextManager] | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.stop_ids = stop_token_ids(model, tokenizer, extra_stop_ids)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError("The tokenizer has neither a pad nor an EOS token; load it with prefkit.load_model or set one.")
        self.autocast = autocast or contextlib.nullcontext

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def update_weights(self, policy) -> None:
        """Sample from ``policy`` from now on: the model itself, so its current weights, with nothing copied."""
        self.model = policy

    def encode(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, max_prompt_length: int | None = None,
               truncation: Truncation = "error", chat_template: bool | None = None,
               add_special_tokens: bool | None = None, first_index: int = 0) -> EncodedPrompts:
        """Prompt ids within this model's budget (:func:`encode_prompts`), e.g. to check every prompt before sampling."""
        budget = prompt_budget(self.model, self.tokenizer, max_new_tokens, max_prompt_length)
        return encode_prompts(self.tokenizer, prompts, max_length=budget, truncation=truncation,
                              chat_template=chat_template, add_special_tokens=add_special_tokens, first_index=first_index)

    def generate(
        self,
        prompts: Sequence[Prompt],
        n: int = 1,
        *,
        max_new_tokens: int = 256,
        max_prompt_length: int | None = None,
        truncation: Truncation = "error",
        chat_template: bool | None = None,
        add_special_tokens: bool | None = None,
        first_index: int = 0,
        **gen_kwargs: Any,
    ) -> Samples:
        """Sample ``n`` completions per prompt: :meth:`encode`, then :meth:`generate_encoded`."""
        prompts = list(prompts)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}.")
        encoded = self.encode(prompts, max_new_tokens=max_new_tokens, max_prompt_length=max_prompt_length,
                              truncation=truncation, chat_template=chat_template,
                              add_special_tokens=add_special_tokens, first_index=first_index)
        return self.generate_encoded(prompts, encoded, n, max_new_tokens=max_new_tokens, **gen_kwargs)

    @torch.no_grad()
    def generate_encoded(
        self,
        prompts: Sequence[Prompt],
        encoded: EncodedPrompts,
        n: int = 1,
        *,
        max_new_tokens: int = 256,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        batch_size: int | None = None,
        return_logprobs: bool = False,
        return_logits: bool = False,
        seed: int | None = None,
        max_time: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        **gen_kwargs: Any,
    ) -> Samples:
        """Sample ``n`` completions for each of ``prompts``, already encoded; ``batch_size`` prompts (``batch_size * n``
        rows) per ``generate`` call.

        All prompts of one call are left-padded to their common width, so the rows line up for a forward pass over
        ``Samples.input_ids``. ``do_sample=False`` decodes greedily (``n`` must then be 1). Other ``gen_kwargs``
        (``repetition_penalty``, ``min_p``, ``stopping_criteria`` ...) go to ``generate``.

        ``max_time`` bounds the seconds this whole call generates (every batch together); ``should_stop`` is called
        after each token and ends the generation when it returns True (a server passes "has the client gone?").
        Either one cuts every row after the current token; what was generated so far is returned, with
        ``interrupted_by`` naming the cause. Batches that start after it fired generate a single token.
        """
        prompts = list(prompts)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an integer >= 1 (completions per prompt); got {n!r}.")
        if do_sample and not temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling; got {temperature!r} (use do_sample=False for greedy).")
        if not do_sample and n > 1:
            raise ValueError(f"greedy decoding gives {n} identical completions: sample (do_sample=True) or use n=1.")
        if "num_return_sequences" in gen_kwargs:
            raise ValueError("Pass n= instead of num_return_sequences.")
        if max_time is not None and not max_time >= 0:
            raise ValueError(f"max_time must be >= 0 seconds (or None for no limit); got {max_time!r}.")
        interrupt = None
        if max_time is not None or should_stop is not None:
            from transformers import StoppingCriteriaList

            interrupt = Interrupt(None if max_time is None else time.monotonic() + max_time, should_stop)
            given = gen_kwargs.get("stopping_criteria") or []
            gen_kwargs["stopping_criteria"] = StoppingCriteriaList([*given, interrupt])
        tokenizer, model = self.tokenizer, self.model
        device = self.device
        prompt_ids, prompt_mask = pad_left(encoded.ids, self.pad_id)
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)

        sampling = {"do_sample": do_sample}
        if do_sample:
            sampling.update(temperature=temperature, top_p=top_p, top_k=top_k)
        step = batch_size or len(prompts)
        extras = {}
        if return_logprobs or return_logits:
            extras = {"return_dict_in_generate": True, "output_scores": return_logprobs, "output_logits": return_logits}
        chunks, logprob_chunks, logit_chunks = [], [], []
        was_training = model.training
        model.eval()
        try:
            with seeded(seed, device):
                for start in range(0, len(prompts), step):
                    with self.autocast():
                        output = model.generate(
                            input_ids=prompt_ids[start : start + step],
                            attention_mask=prompt_mask[start : start + step],
                            max_new_tokens=max_new_tokens,
                            num_return_sequences=n,
                            pad_token_id=self.pad_id,
                            eos_token_id=self.stop_ids or None,
                            **sampling,
                            **extras,
                            **gen_kwargs,
                        )
                    sequences = output.sequences if extras else output
                    new = sequences[:, prompt_ids.shape[1] :]
                    chunks.append(new)
                    if return_logprobs:
                        # scores: one [rows, vocab] per step, after temperature and top-k/top-p; one step at a time
                        # keeps the peak at one step's log-softmax instead of [rows, steps, vocab]
                        logprob_chunks.append(torch.stack([
                            torch.log_softmax(step_scores.float(), dim=-1).gather(-1, new[:, t : t + 1]).squeeze(-1)
                            for t, step_scores in enumerate(output.scores)
                        ], dim=1))
                    if return_logits:
                        logit_chunks.append(torch.stack(output.logits, dim=1).float().cpu())
        finally:
            model.train(was_training)

        width = max(chunk.shape[1] for chunk in chunks)
        completion_ids = torch.cat([torch.nn.functional.pad(c, (0, width - c.shape[1]), value=self.pad_id) for c in chunks])
        # Masks per chunk: a chunk cut short without a stop token (max_time, should_stop, a caller's criterion) is
        # padded up to the width, and that padding was never generated.
        mask = torch.zeros_like(completion_ids, dtype=torch.bool)
        finished_chunks, row = [], 0
        for chunk in chunks:
            chunk_mask, chunk_finished = completion_mask(chunk, self.stop_ids)
            mask[row : row + chunk.shape[0], : chunk.shape[1]] = chunk_mask
            finished_chunks.append(chunk_finished)
            row += chunk.shape[0]
        finished = torch.cat(finished_chunks)
        completion_ids = torch.where(mask, completion_ids, torch.full_like(completion_ids, self.pad_id))
        logprobs = None
        if return_logprobs:
            logprobs = torch.cat([torch.nn.functional.pad(c, (0, width - c.shape[1])) for c in logprob_chunks])
            logprobs = torch.where(mask, logprobs, torch.zeros_like(logprobs))
        step_logits = None
        if return_logits:
            step_logits = torch.cat([torch.nn.functional.pad(c, (0, 0, 0, width - c.shape[1])) for c in logit_chunks])

        texts = []
        lengths = mask.sum(dim=1).tolist()
        for row, ids in enumerate(completion_ids.tolist()):
            kept = ids[: int(lengths[row]) - (1 if finished[row] else 0)]
            texts.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
        repeat = lambda t: t.repeat_interleave(n, dim=0)  # noqa: E731
        settings = {"n": n, "max_new_tokens": max_new_tokens, **sampling}
        settings.update({k: v for k, v in gen_kwargs.items() if isinstance(v, (int, float, str, bool))})
        if max_time is not None:
            settings["max_time"] = max_time
        return Samples(
            prompts=prompts,
            n=n,
            prompt_ids=repeat(prompt_ids),
            prompt_mask=repeat(prompt_mask),
            completion_ids=completion_ids,
            completion_mask=mask,
            finished=finished,
            texts=texts,
            truncated_prompt_tokens=encoded.truncated_tokens,
            logprobs=logprobs,
            step_logits=step_logits,
            settings=settings,
            interrupted_by=interrupt.fired if interrupt is not None else None,
        )


def generate(model, tokenizer, prompts: Sequence[Prompt], n: int = 1, **gen_kwargs: Any) -> Samples:
    """``HFSampler(model, tokenizer).generate(prompts, n, **gen_kwargs)``: see :meth:`HFSampler.generate`."""
    extra = gen_kwargs.pop("extra_stop_ids", None)
    return HFSampler(model, tokenizer, extra_stop_ids=extra).generate(prompts, n, **gen_kwargs)
