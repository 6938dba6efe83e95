"""Response pairs from a model, for people or judges to label.

:func:`generate_pairs` samples ``n`` answers per prompt with one batched ``generate`` call per batch of prompts
(``num_return_sequences=n``, temperature > 0, left padding, the chat template when the tokenizer has one, stopping
at EOS), drops empty and identical answers, and pairs what is left. :func:`rewrite_pairs` makes synthetic pairs:
an instruction-following model rewrites a response into a worse (or better) one.

Rows are *labeled-record* shaped (``prompt``, ``response_a``, ``response_b``), so they go straight to a judge
(:mod:`prefkit.data.judges`), the labeling app, and :func:`prefkit.data.labels.labels_to_pairs`. Every row records
the generation settings that produced it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

logger = logging.getLogger(__name__)

Prompt = str | list[dict[str, Any]]
Pairing = Literal["all", "disjoint"]


def prompt_id(prompt: Prompt) -> str:
    """A stable id for a prompt: the first 12 hex digits of the SHA-1 of its JSON text."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def _batch_seed(seed: int, ids: Sequence[str]) -> int:
    """A seed that depends only on ``seed`` and the prompts of a batch, so a resumed run samples them as before."""
    digest = hashlib.sha1((str(seed) + "|" + "|".join(ids)).encode("utf-8")).hexdigest()
    return int(digest[:8], 16)


@dataclass(frozen=True)
class SamplingSettings:
    """What produced a response; stored in each generated row under ``generation``."""

    model: str
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    num_return_sequences: int
    seed: int
    do_sample: bool = True
    repetition_penalty: float = 1.0

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "do_sample": self.do_sample,
            "max_new_tokens": self.max_new_tokens,
            "num_return_sequences": self.num_return_sequences,
        }
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        if self.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs


def sample_completions(
    model, tokenizer, prompts: Sequence[Prompt], settings: SamplingSettings, chat_template: bool | None = None
) -> list[list[tuple[str, bool]]]:
    """One batched sampling call for ``prompts`` (:func:`prefkit.sampling.generate`): for each prompt,
    ``num_return_sequences`` ``(text, truncated)``.

    ``truncated`` is True when an answer hit ``max_new_tokens`` before a stop token. A prompt too long for the
    model's context is an error, not a silent cut: a labeled pair must show the prompt the model saw.
    """
    from ..sampling import generate, stop_token_ids

    if not stop_token_ids(model, tokenizer):
        raise ValueError("The tokenizer has no EOS token, so generation could not stop; set tokenizer.eos_token.")
    kwargs = settings.generate_kwargs()
    n = kwargs.pop("num_return_sequences")
    samples = generate(model, tokenizer, prompts, n, chat_template=chat_template, **kwargs)
    finished = samples.finished.tolist()
    return [
        [(samples.texts[row], not finished[row]) for row in range(i * n, (i + 1) * n)] for i in range(len(prompts))
    ]


def _distinct(answers: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    seen, kept = set(), []
    for text, truncated in answers:
        if text and text not in seen:
            seen.add(text)
            kept.append((text, truncated))
    return kept


def _pairs(count: int, pairing: Pairing) -> list[tuple[int, int]]:
    if pairing == "all":
        return [(i, j) for i in range(count) for j in range(i + 1, count)]
    return [(i, i + 1) for i in range(0, count - 1, 2)]


def iter_generate_pairs(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    n: int = 2,
    *,
    ids: Sequence[str] | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    max_new_tokens: int = 256,
    repetition_penalty: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    pairing: Pairing = "all",
    chat_template: bool | None = None,
) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
    """:func:`generate_pairs` batch by batch: yields ``(prompt ids of the batch, rows)`` after each ``generate`` call."""
    if n < 2:
        raise ValueError(f"n must be at least 2 to make a pair, got {n}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (got {temperature}): greedy decoding gives {n} identical answers.")
    if pairing not in ("all", "disjoint"):
        raise ValueError(f"pairing must be 'all' or 'disjoint', not {pairing!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    ids = [prompt_id(p) for p in prompts] if ids is None else [str(i) for i in ids]
    if len(ids) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(ids)} ids.")
    from ..models import model_id

    settings = SamplingSettings(
        model_id(model),
        float(temperature),
        float(top_p),
        int(top_k),
        int(max_new_tokens),
        n,
        int(seed),
        repetition_penalty=float(repetition_penalty),
    )
    recorded = asdict(settings)
    import torch

    for start in range(0, len(prompts), batch_size):
        batch_prompts, batch_ids = list(prompts[start : start + batch_size]), ids[start : start + batch_size]
        torch.manual_seed(_batch_seed(seed, batch_ids))
        completions = sample_completions(model, tokenizer, batch_prompts, settings, chat_template)
        rows = []
        for prompt, pid, answers in zip(batch_prompts, batch_ids, completions):
            kept = _distinct(answers)
            if len(kept) < 2:
                logger.info("prompt %s: %d distinct non-empty answers of %d, no pair", pid, len(kept), n)
            for i, j in _pairs(len(kept), pairing):
                rows.append(
                    {
                        "id": f"{pid}-{i}-{j}",
                        "prompt_id": pid,
                        "prompt": prompt,
                        "response_a": kept[i][0],
                        "response_b": kept[j][0],
                        "truncated": [kept[i][1], kept[j][1]],
                        "generation": recorded,
                    }
                )
        yield batch_ids, rows


def generate_pairs(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    n: int = 2,
    *,
    ids: Sequence[str] | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    max_new_tokens: int = 256,
    repetition_penalty: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    pairing: Pairing = "all",
    chat_template: bool | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Sample ``n`` answers per prompt and return response pairs to label.

    One ``model.generate`` call per ``batch_size`` prompts (``num_return_sequences=n``). Empty and identical
    answers are dropped; of the ``k`` distinct answers left, ``pairing="all"`` makes every pair (k·(k-1)/2) and
    ``"disjoint"`` pairs them off (1-2, 3-4, ...). A prompt with fewer than 2 distinct answers gives no row.

    Each row: ``id`` ("<prompt id>-<i>-<j>", stable), ``prompt_id`` (``ids[k]`` or a hash of the prompt), ``prompt``,
    ``response_a``, ``response_b``, ``truncated`` ([a, b]: hit ``max_new_tokens`` before EOS) and ``generation``
    (model, temperature, top_p, top_k, max_new_tokens, num_return_sequences, seed, ...). Sampling is seeded per batch
    from ``seed`` and the batch's prompt ids, so the same call gives the same rows.
    """
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    batches = iter_generate_pairs(
        model,
        tokenizer,
        prompts,
        n,
        ids=ids,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        max_new_tokens=max_new_tokens,
        repetition_penalty=repetition_penalty,
        batch_size=batch_size,
        seed=seed,
        pairing=pairing,
        chat_template=chat_template,
    )
    with tqdm(total=len(prompts), desc="generating pairs", unit="prompt", disable=not progress) as bar:
        for batch_ids, batch_rows in batches:
            rows += batch_rows
            bar.update(len(batch_ids))
    return rows


# ---- rewrites -------------------------------------------------------------------------------------------------------

REWRITE_INSTRUCTIONS = {
    "worse": (
        "Rewrite the answer below so that it becomes clearly worse: unhelpful, dismissive and unkind, while staying "
        "on the same topic. Reply with the rewritten answer only.\n\nRequest: {prompt}\n\nAnswer: {response}"
    ),
    "better": (
        "Rewrite the answer below so that it becomes clearly better: more helpful, accurate, kind and safe. Reply "
        "with the rewritten answer only.\n\nRequest: {prompt}\n\nAnswer: {response}"
    ),
}
_PREAMBLE = re.compile(
    r"^\s*(?:sure[,!.]?\s*)?(?:here(?:'s| is) )?(?:the |a |my )?(?:rewritten|revised|new) "
    r"(?:answer|version|response)[^\n:]*:\s*",
    re.I,
)


def _clean_rewrite(text: str) -> str:
    text = _PREAMBLE.sub("", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def rewrite_pairs(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    responses: Sequence[str],
    direction: Literal["worse", "better"] = "worse",
    *,
    instruction: str | None = None,
    ids: Sequence[str] | None = None,
    temperature: float = 0.7,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Synthetic pairs: an instruction-following model rewrites each response into a worse (or better) one.

    ``instruction`` (default :data:`REWRITE_INSTRUCTIONS` [direction]) is a template with ``{prompt}`` and
    ``{response}``, sent as one user message through the chat template. Each row has ``response_a`` = the original,
    ``response_b`` = the rewrite, and ``label`` = "A" for ``direction="worse"`` ("B" for "better"): the intended
    preference, which a judge can double-check. Rewrites that come back empty or unchanged are dropped (logged).
    """
    if direction not in REWRITE_INSTRUCTIONS:
        raise ValueError(f"direction must be 'worse' or 'better', not {direction!r}.")
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
    template = instruction or REWRITE_INSTRUCTIONS[direction]
    for key in ("{prompt}", "{response}"):
        if key not in template:
            raise ValueError(f"the rewrite instruction must contain {key}.")
    ids = (
        [f"{prompt_id(p)}-{prompt_id(r)}" for p, r in zip(prompts, responses)] if ids is None else [str(i) for i in ids]
    )
    from tqdm.auto import tqdm

    from ..models import model_id
    from .judges import as_text

    do_sample = temperature > 0
    settings = SamplingSettings(
        model_id(model), float(temperature), float(top_p), 0, int(max_new_tokens), 1, int(seed), do_sample=do_sample
    )
    recorded = {**asdict(settings), "direction": direction, "instruction": template}
    import torch

    rows, dropped = [], 0
    for start in tqdm(range(0, len(prompts), batch_size), desc=f"rewriting ({direction})", disable=not progress):
        batch = list(
            zip(
                prompts[start : start + batch_size],
                responses[start : start + batch_size],
                ids[start : start + batch_size],
            )
        )
        torch.manual_seed(_batch_seed(seed, [i for _, _, i in batch]))
        texts = [template.format(prompt=as_text(p), response=r) for p, r, _ in batch]
        templated = getattr(tokenizer, "chat_template", None) is not None
        requests = [[{"role": "user", "content": t}] for t in texts] if templated else texts
        outputs = sample_completions(model, tokenizer, requests, settings, chat_template=None)
        for (prompt, response, row_id), answers in zip(batch, outputs):
            rewrite = _clean_rewrite(answers[0][0])
            if not rewrite or rewrite == response.strip():
                dropped += 1
                continue
            rows.append(
                {
                    "id": row_id,
                    "prompt": prompt,
                    "response_a": response,
                    "response_b": rewrite,
                    "label": "A" if direction == "worse" else "B",
                    "truncated": [False, answers[0][1]],
                    "generation": recorded,
                }
            )
    if dropped:
        logger.warning(
            "rewrite_pairs: dropped %d of %d rewrites that came back empty or unchanged", dropped, len(prompts)
        )
    return rows
