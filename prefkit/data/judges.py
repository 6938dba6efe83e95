"""Judges: label a pair of responses to the same prompt as "A", "B" or "tie", with a confidence.

Every judge has one method, ``judge(prompts, response_pairs) -> list[Judgement]``:

- :class:`LLMJudge` asks a language model (any Hugging Face causal LM, or an OpenAI-compatible HTTP endpoint) which
  response is better, in both orders; when the two answers disagree the label is a tie, which cancels position bias.
- :class:`BleuJudge` / :class:`RougeJudge` prefer the response closer to a reference answer (``sacrebleu``,
  ``rouge-score``).
- :class:`RewardModelJudge` prefers the response with the higher reward.

Each :class:`Judgement` carries ``prob_a``, the judge's probability that A is the better response, and a
``confidence`` derived from it the same way for every judge: ``prob_a`` for an "A", ``1 - prob_a`` for a "B", and
``1 - |2·prob_a - 1|`` for a tie (1 when the judge is evenly split). :func:`agreement` measures how often two judges
(or annotators) agree, raw and chance-corrected (Cohen's kappa).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

Prompt = str | list[dict[str, Any]]
Response = str | list[dict[str, Any]]
VERDICTS = ("A", "B", "tie")


@dataclass(frozen=True)
class Judgement:
    """One judge's verdict on one pair.

    ``label``: "A", "B", "tie", or ``None`` when the judge gave no usable answer (an unparseable LLM reply).
    ``prob_a``: the judge's probability that response A is better. ``confidence``: see the module docstring.
    ``scores``: the per-response numbers behind the verdict (reward, BLEU, ROUGE), when there are any.
    ``raw``: what an LLM judge answered, in the order asked (A first, then B first).
    """

    label: str | None
    prob_a: float
    confidence: float
    scores: tuple[float, float] | None = None
    raw: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "confidence": self.confidence, "prob_a": self.prob_a}
        if self.scores is not None:
            out["scores"] = list(self.scores)
        if self.raw:
            out["raw"] = list(self.raw)
        return out


def confidence_for(label: str | None, prob_a: float) -> float:
    if label == "A":
        return prob_a
    if label == "B":
        return 1.0 - prob_a
    if label == "tie":
        return 1.0 - abs(2.0 * prob_a - 1.0)
    return 0.0


def as_text(value: Prompt | Response) -> str:
    """Plain text of a prompt or response; conversations become ``Role: content`` lines."""
    if isinstance(value, str):
        return value
    if len(value) == 1 and value[0].get("role") == "assistant":
        return str(value[0].get("content", ""))
    return "\n".join(f"{m.get('role', 'user').capitalize()}: {m.get('content', '')}" for m in value)


def _check_inputs(prompts: Sequence[Prompt], response_pairs: Sequence[Sequence[Response]]) -> None:
    if len(prompts) != len(response_pairs):
        raise ValueError(f"{len(prompts)} prompts but {len(response_pairs)} response pairs; give one pair per prompt.")
    for index, pair in enumerate(response_pairs):
        if len(pair) != 2:
            raise ValueError(f"response_pairs[{index}] has {len(pair)} responses; a pair has exactly 2 (A, B).")


def verdict_winner(verdict: Any) -> int | None:
    """0 (first better), 1 (second better) or None (tie, both bad, no verdict) from any judge's answer: a
    :class:`Judgement`, a label ("A", "B", graded "A slightly better" ..., "tie", "both bad") or TRL's index."""
    label = getattr(verdict, "label", verdict)
    if isinstance(label, bool) or label is None:
        return None
    if isinstance(label, (int, float)):
        return int(label) if label in (0, 1) else None
    if isinstance(label, str):
        from .scales import DEFAULT_SCALE

        try:
            point = DEFAULT_SCALE.parse(label)
        except ValueError:
            return None
        return {"A": 0, "B": 1}.get(point.winner) if point.kind == "preference" else None
    return None


class Judge(ABC):
    """The common interface: ``judge(prompts, response_pairs) -> list[Judgement]`` (one per pair, in order)."""

    name: str = "judge"

    @abstractmethod
    def judge(
        self,
        prompts: Sequence[Prompt],
        response_pairs: Sequence[Sequence[Response]],
        references: Sequence[str | Sequence[str]] | None = None,
    ) -> list[Judgement]: ...

    def __call__(self, prompts, response_pairs, references=None) -> list[Judgement]:
        return self.judge(prompts, response_pairs, references)

    def describe(self) -> dict[str, Any]:
        """Settings recorded next to each label (what judged it and how)."""
        return {"judge": self.name}


# ---- score-based judges ---------------------------------------------------------------------------------------------


class _ScoreJudge(Judge):
    """A judge that scores each response on its own and prefers the higher score (ties within ``tie_threshold``)."""

    def __init__(self, tie_threshold: float = 0.0):
        if tie_threshold < 0:
            raise ValueError(f"tie_threshold must be >= 0, got {tie_threshold}")
        self.tie_threshold = tie_threshold

    def _verdict(self, score_a: float, score_b: float, prob_a: float) -> Judgement:
        if abs(score_a - score_b) <= self.tie_threshold:
            label = "tie"
        else:
            label = "A" if score_a > score_b else "B"
        return Judgement(label, prob_a, confidence_for(label, prob_a), scores=(score_a, score_b))


class _ReferenceJudge(_ScoreJudge):
    """Similarity to a reference answer. ``prob_a = s_a / (s_a + s_b)``, the share of the pair's similarity that A
    holds (0.5 when both are 0)."""

    def __init__(self, references: Mapping[str, Any] | Sequence[Any] | None = None, tie_threshold: float = 0.0):
        super().__init__(tie_threshold)
        self.references = references

    @abstractmethod
    def similarity(self, response: str, references: list[str]) -> float: ...

    def _references(self, prompts, references) -> list[list[str]]:
        source = self.references if references is None else references
        if source is None:
            raise ValueError(
                f"{type(self).__name__} needs a reference answer per prompt: pass references=[...] to judge(), or "
                "references (a list, or a dict from prompt text to reference) to the constructor."
            )
        if isinstance(source, Mapping):
            missing = [i for i, p in enumerate(prompts) if as_text(p) not in source]
            if missing:
                raise ValueError(
                    f"no reference for prompts at positions {missing[:10]}; add them to the references dict."
                )
            source = [source[as_text(p)] for p in prompts]
        if len(source) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(source)} references; give one reference per prompt.")
        out = []
        for index, ref in enumerate(source):
            refs = [ref] if isinstance(ref, str) else list(ref)
            if not refs or not all(isinstance(r, str) and r.strip() for r in refs):
                raise ValueError(f"reference {index} is {ref!r}; expected non-empty text or a list of texts.")
            out.append(refs)
        return out

    def judge(self, prompts, response_pairs, references=None) -> list[Judgement]:
        _check_inputs(prompts, response_pairs)
        refs = self._references(prompts, references)
        out = []
        for (a, b), ref in zip(response_pairs, refs):
            score_a, score_b = self.similarity(as_text(a), ref), self.similarity(as_text(b), ref)
            total = score_a + score_b
            prob_a = 0.5 if total <= 0 else score_a / total
            out.append(self._verdict(score_a, score_b, prob_a))
        return out


class BleuJudge(_ReferenceJudge):
    """Prefers the response with the higher sentence BLEU (``sacrebleu.sentence_bleu``, 0-100) to the reference."""

    name = "bleu"

    def __init__(
        self,
        references=None,
        *,
        tokenize: str = "13a",
        lowercase: bool = False,
        smooth_method: str = "exp",
        tie_threshold: float = 0.0,
    ):
        super().__init__(references, tie_threshold)
        self.tokenize, self.lowercase, self.smooth_method = tokenize, lowercase, smooth_method

    def similarity(self, response: str, references: list[str]) -> float:
        import sacrebleu

        return float(
            sacrebleu.sentence_bleu(
                response, references, smooth_method=self.smooth_method, lowercase=self.lowercase, tokenize=self.tokenize
            ).score
        )

    def describe(self) -> dict[str, Any]:
        return {
            "judge": self.name,
            "tokenize": self.tokenize,
            "lowercase": self.lowercase,
            "smooth_method": self.smooth_method,
        }


class RougeJudge(_ReferenceJudge):
    """Prefers the response with the higher ROUGE F-measure (``rouge_score``; best over several references)."""

    name = "rouge"

    def __init__(
        self, references=None, *, rouge_type: str = "rougeL", use_stemmer: bool = True, tie_threshold: float = 0.0
    ):
        from rouge_score import rouge_scorer

        super().__init__(references, tie_threshold)
        self.rouge_type, self.use_stemmer = rouge_type, use_stemmer
        self._scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=use_stemmer)

    def similarity(self, response: str, references: list[str]) -> float:
        return max(float(self._scorer.score(ref, response)[self.rouge_type].fmeasure) for ref in references)

    def describe(self) -> dict[str, Any]:
        return {"judge": self.name, "rouge_type": self.rouge_type, "use_stemmer": self.use_stemmer}


class RewardModelJudge(_ScoreJudge):
    """Prefers the response with the higher reward.

    ``reward``: a callable ``reward(prompts, responses) -> list[float]`` or an object with ``.score(prompts,
    responses)`` (e.g. ``prefkit.RewardModel``, ``prefkit.ImplicitReward``). ``prob_a = σ(r_a - r_b)``, the
    Bradley-Terry probability that A is better.
    """

    name = "reward"

    def __init__(self, reward: Any, *, batch_size: int | None = None, tie_threshold: float = 0.0):
        super().__init__(tie_threshold)
        scorer = getattr(reward, "score", None)
        if callable(scorer):
            self._score = scorer
        elif callable(reward):
            self._score = reward
        else:
            raise TypeError(
                f"RewardModelJudge needs a callable reward(prompts, responses) or an object with .score(...); "
                f"got {type(reward).__name__}."
            )
        self.reward = reward
        self.batch_size = batch_size

    def _rewards(self, prompts: list, responses: list) -> list[float]:
        size = self.batch_size or len(prompts) or 1
        values: list[float] = []
        for start in range(0, len(prompts), size):
            chunk = self._score(prompts[start : start + size], responses[start : start + size])
            chunk = chunk.tolist() if hasattr(chunk, "tolist") else list(chunk)
            values += [float(v) for v in chunk]
        if len(values) != len(prompts):
            raise ValueError(f"the reward returned {len(values)} scores for {len(prompts)} responses.")
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise ValueError(f"the reward returned non-finite scores at positions {bad[:10]}.")
        return values

    def judge(self, prompts, response_pairs, references=None) -> list[Judgement]:
        _check_inputs(prompts, response_pairs)
        n = len(prompts)
        rewards = self._rewards(list(prompts) * 2, [p[0] for p in response_pairs] + [p[1] for p in response_pairs])
        out = []
        for i in range(n):
            r_a, r_b = rewards[i], rewards[n + i]
            out.append(self._verdict(r_a, r_b, 1.0 / (1.0 + math.exp(-(r_a - r_b)))))
        return out

    def describe(self) -> dict[str, Any]:
        source = getattr(self.reward, "name_or_path", None) or getattr(
            self.reward, "__name__", type(self.reward).__name__
        )
        return {"judge": self.name, "reward": str(source)}


# ---- LLM-as-a-judge -------------------------------------------------------------------------------------------------

JUDGE_SYSTEM_PROMPT = "You are a careful, impartial judge of answers written by AI assistants."
JUDGE_TEMPLATE = """Which response answers the user's request better? Judge helpfulness, correctness, kindness and \
safety. Do not let the order of the responses or their length influence you.

[Request]
{prompt}

[Response A]
{response_a}

[Response B]
{response_b}

Reply with a single letter: A if Response A is better, B if Response B is better."""

_OPTION = r"(?:response|answer|assistant|option|output|candidate)"
_LETTER = r"\(?\**(?-i:([AB]))\**\)?"  # capital A or B, maybe in (parentheses) or **bold**
_BRACKETS = re.compile(r"\[\[\s*([AB]|tie)\s*\]\]", re.I)  # MT-Bench style [[A]]: decides on its own
_BARE = re.compile(r"^\W*([AaBb])\W*$")  # the whole reply is the letter
_PATTERNS = (
    re.compile(
        r"\b(?:verdict|final answer|answer|winner|choice|decision|preferred|preference)[\s*]*(?:is|:|=|-)[\s*]*"
        r"(?:" + _OPTION + r"\s*)?" + _LETTER + r"(?![\w'])",
        re.I,
    ),
    re.compile(r"^\W*(?:" + _OPTION + r"\s*)?" + _LETTER + r"(?:[.:,!\])]|\s*\n|\s+(?:is|was|wins|because|-))", re.I),
    re.compile(
        r"(?:\b" + _OPTION + r"\s*|(?:^|[.!?\n])\W*)" + _LETTER + r"\s+(?:is|was|seems|wins)\s+"
        r"(?:indeed\s+|clearly\s+|much\s+|slightly\s+|definitely\s+)?(?:the\s+)?"
        r"(?:better|best|preferred|superior|stronger|more\s+helpful)",
        re.I,
    ),
    re.compile(
        r"\b(?:better|best|preferred|stronger)\s+(?:response|answer|option|one)\s+is\s+(?:"
        + _OPTION
        + r"\s*)?"
        + _LETTER
        + r"(?![\w'])",
        re.I,
    ),
    re.compile(
        r"\b(?:prefer|choose|pick|select|think|would say|i'd say|go with)\s+(?:"
        + _OPTION
        + r"\s*)?"
        + _LETTER
        + r"(?![\w'])",
        re.I,
    ),
)
_TIE = re.compile(
    r"^\W*(?:tie|draw)\W*$|\b(?:it'?s a tie|both (?:are )?(?:equally )?(?:good|bad|fine)|equally (?:good|bad))\b", re.I
)


def parse_verdict(text: str) -> str | None:
    """ "A", "B", "tie" or ``None`` from a judge model's reply.

    Understands a bare letter ("A", "b.", "(B)", "**A**"), "[[A]]", "Verdict: B", "Response A is better", "The
    better response is B", "I prefer B", a reply that starts with the letter ("A. It is kinder"), and ties ("tie",
    "both are equally good"). A reply that names both letters as its verdict, or neither, is ``None`` (counted as
    unparseable). Only capital letters count outside a bare reply, so the article "a" is never a verdict.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    stripped = text.strip()
    brackets = {m.group(1).upper() if m.group(1).lower() != "tie" else "tie" for m in _BRACKETS.finditer(stripped)}
    if len(brackets) == 1:
        return brackets.pop()
    if len(brackets) > 1:
        return None
    bare = _BARE.match(stripped)
    if bare:
        return bare.group(1).upper()
    found = {m.group(1) for pattern in _PATTERNS for m in pattern.finditer(stripped)}
    if len(found) == 1:
        return found.pop()
    if len(found) > 1:
        return None
    if _TIE.search(stripped):
        return "tie"
    return None


_LETTER_PUNCTUATION = " \t\n*()[].:,!"


def _swap(verdict: str | None) -> str | None:
    return {"A": "B", "B": "A"}.get(verdict, verdict)


class JudgeBackendError(RuntimeError):
    """The judge model could not be asked (HTTP error, bad response); says what the endpoint answered."""


def _messages(system_prompt: str | None, user: str) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": user}
    ]


class HFJudgeBackend:
    """Greedy answers from a Hugging Face causal LM; also reads P(A) vs P(B) at the verdict token from the logits."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 16, batch_size: int = 8):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def _render(self, messages: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            try:
                return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # templates without a system role: fold it into the user turn
                merged = [{"role": "user", "content": "\n\n".join(m["content"] for m in messages)}]
                return self.tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\nVerdict:"

    def _letter_prob(self, token_ids: list[int], step_logits: list) -> float | None:
        """P(A) / (P(A) + P(B)) at the first generated token that is the letter A or B on its own."""
        for step, token_id in enumerate(token_ids):
            piece = self.tokenizer.decode([token_id])
            core = piece.strip(_LETTER_PUNCTUATION)
            if core not in ("A", "B", "a", "b"):
                continue
            letter = core.upper()
            other_piece = piece.replace(core, {"A": "B", "B": "A", "a": "b", "b": "a"}[core])
            other = self.tokenizer.encode(other_piece, add_special_tokens=False)
            if len(other) != 1:
                return None
            logits = step_logits[step]
            own, rival = float(logits[token_id]), float(logits[other[0]])
            p_letter = 1.0 / (1.0 + math.exp(rival - own))
            return p_letter if letter == "A" else 1.0 - p_letter
        return None

    def __call__(self, conversations: list[list[dict[str, str]]]) -> list[tuple[str, float | None]]:
        from ..sampling import HFSampler

        templated = bool(getattr(self.tokenizer, "chat_template", None))
        samples = HFSampler(self.model, self.tokenizer).generate(
            [self._render(c) for c in conversations],
            chat_template=False,  # rendered above, with the fallback for templates that refuse a system turn
            add_special_tokens=not templated,
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            return_logits=True,
        )
        special = set(self.tokenizer.all_special_ids)
        out: list[tuple[str, float | None]] = []
        for row, ids in enumerate(samples.completion_ids.tolist()):
            kept = [(i, t) for i, t in enumerate(ids[: int(samples.completion_lengths[row])]) if t not in special]
            text = self.tokenizer.decode([t for _, t in kept], skip_special_tokens=True)
            prob = self._letter_prob([t for _, t in kept], [samples.step_logits[row, i] for i, _ in kept])
            out.append((text.strip(), prob))
        return out


class OpenAIJudgeBackend:
    """Answers from an OpenAI-compatible ``{base_url}/chat/completions`` endpoint (vLLM, TGI, llama.cpp, OpenAI...).

    Temperature 0. With ``logprobs=True`` it also asks for the top log-probabilities and reads P(A) vs P(B) at the
    verdict token. Retries 429 / 5xx / connection errors with exponential backoff; never logs the API key.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        max_new_tokens: int = 16,
        logprobs: bool = False,
        timeout: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 4,
        backoff: float = 1.0,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self._api_key = model, api_key
        self.max_new_tokens, self.logprobs = max_new_tokens, logprobs
        self.timeout, self.max_retries, self.concurrency, self.backoff = timeout, max_retries, concurrency, backoff

    def __repr__(self) -> str:  # keeps the key out of reprs and logs
        return f"OpenAIJudgeBackend(url={self.url!r}, model={self.model!r})"

    def _post(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self.max_new_tokens,
        }
        if self.logprobs:
            body.update(logprobs=True, top_logprobs=5)
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        data = json.dumps(body).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as error:
                detail = error.read().decode("utf-8", "replace")[:300]
                retryable = error.code == 429 or error.code >= 500
                if not retryable or attempt == self.max_retries:
                    raise JudgeBackendError(f"{self.url} answered HTTP {error.code}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                if attempt == self.max_retries:
                    raise JudgeBackendError(f"could not reach {self.url}: {error}") from None
            except json.JSONDecodeError as error:
                raise JudgeBackendError(f"{self.url} did not answer JSON ({error.msg}).") from None
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _letter_prob(choice: Mapping[str, Any]) -> float | None:
        content = (choice.get("logprobs") or {}).get("content") or []
        for token in content:
            letter = str(token.get("token", "")).strip(_LETTER_PUNCTUATION).upper()
            if letter not in ("A", "B"):
                continue
            top: dict[str, float] = {}
            for candidate in token.get("top_logprobs", []):
                key = str(candidate.get("token", "")).strip(_LETTER_PUNCTUATION).upper()
                if key in ("A", "B") and key not in top:  # the likeliest spelling of each letter
                    top[key] = candidate.get("logprob")
            top.setdefault(letter, token.get("logprob"))
            p_a = math.exp(top["A"]) if top.get("A") is not None else 0.0
            p_b = math.exp(top["B"]) if top.get("B") is not None else 0.0
            return p_a / (p_a + p_b) if p_a + p_b > 0 else None
        return None

    def _ask(self, messages: list[dict[str, str]]) -> tuple[str, float | None]:
        payload = self._post(messages)
        try:
            choice = payload["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise JudgeBackendError(
                f"{self.url} answered without choices[0].message.content: {str(payload)[:300]}"
            ) from None
        return text.strip(), self._letter_prob(choice) if self.logprobs else None

    def __call__(self, conversations: list[list[dict[str, str]]]) -> list[tuple[str, float | None]]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(self._ask, conversations))


class LLMJudge(Judge):
    """LLM-as-a-judge on pairs, asked in both orders so that position bias cancels.

    Give one of: ``model`` (+ ``tokenizer``), a Hugging Face causal LM or a name/path (loaded with
    :func:`prefkit.models.load_model`); ``base_url`` + ``api_model`` for an OpenAI-compatible endpoint (``api_key``,
    else none is sent); or ``backend``, any callable ``backend(list_of_chat_messages) -> list[str]`` (or
    ``list[(str, prob_a | None)]``).

    For every pair the judge sees ``template`` filled with (prompt, A, B) and again with (prompt, B, A). Both
    answers agreeing gives that label; disagreeing (the judge picks whichever comes first, or second) gives a tie;
    an answer that :func:`parse_verdict` cannot read gives ``label=None``. ``stats`` counts asks, unparseable
    answers and order disagreements over the judge's lifetime. ``both_orders=False`` asks once (cheaper, biased).
    """

    name = "llm"

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        base_url: str | None = None,
        api_model: str | None = None,
        api_key: str | None = None,
        backend: Callable[[list[list[dict[str, str]]]], list] | None = None,
        template: str = JUDGE_TEMPLATE,
        system_prompt: str | None = JUDGE_SYSTEM_PROMPT,
        both_orders: bool = True,
        batch_size: int = 8,
        max_new_tokens: int = 16,
        logprobs: bool = False,
        timeout: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 4,
    ):
        given = [x is not None for x in (model, base_url, backend)]
        if sum(given) != 1:
            raise ValueError(
                "Give exactly one of: model (a causal LM or its name), base_url (+ api_model), or backend."
            )
        for key in ("{prompt}", "{response_a}", "{response_b}"):
            if key not in template:
                raise ValueError(f"the judging template must contain {key}.")
        self.template, self.system_prompt, self.both_orders = template, system_prompt, both_orders
        self.stats: Counter = Counter()
        if backend is not None:
            self.backend, self.model_name = backend, getattr(backend, "__name__", type(backend).__name__)
        elif base_url is not None:
            if not api_model:
                raise ValueError("base_url needs api_model, the model name the endpoint serves.")
            self.backend = OpenAIJudgeBackend(
                base_url,
                api_model,
                api_key,
                max_new_tokens=max_new_tokens,
                logprobs=logprobs,
                timeout=timeout,
                max_retries=max_retries,
                concurrency=concurrency,
            )
            self.model_name = api_model
        else:
            if isinstance(model, str):
                from ..models import load_model

                self.model_name = model
                model, tokenizer = load_model(model)
            else:
                from ..models import model_id

                self.model_name = model_id(model)
            if tokenizer is None:
                raise ValueError("A model object needs its tokenizer: LLMJudge(model, tokenizer).")
            model.eval()
            self.backend = HFJudgeBackend(model, tokenizer, max_new_tokens=max_new_tokens, batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        return {"judge": self.name, "model": self.model_name, "both_orders": self.both_orders}

    def conversation(self, prompt: Prompt, first: Response, second: Response) -> list[dict[str, str]]:
        """The chat messages for one ask (the documented judging prompt, filled in)."""
        user = self.template.format(prompt=as_text(prompt), response_a=as_text(first), response_b=as_text(second))
        return _messages(self.system_prompt, user)

    def _answers(self, conversations) -> list[tuple[str, float | None]]:
        answers = self.backend(conversations)
        if len(answers) != len(conversations):
            raise JudgeBackendError(
                f"the judge backend returned {len(answers)} answers for {len(conversations)} questions."
            )
        return [(a, None) if isinstance(a, str) else (str(a[0]), a[1]) for a in answers]

    def judge(self, prompts, response_pairs, references=None) -> list[Judgement]:
        _check_inputs(prompts, response_pairs)
        conversations = [self.conversation(p, a, b) for p, (a, b) in zip(prompts, response_pairs)]
        if self.both_orders:
            conversations += [self.conversation(p, b, a) for p, (a, b) in zip(prompts, response_pairs)]
        answers = self._answers(conversations)
        n = len(prompts)
        out = []
        for i in range(n):
            asks = [(answers[i], False)] + ([(answers[n + i], True)] if self.both_orders else [])
            verdicts, probs, raw = [], [], []
            for (text, prob), swapped in asks:
                verdict = parse_verdict(text)
                self.stats["asks"] += 1
                if verdict is None:
                    self.stats["unparseable"] += 1
                raw.append(text)
                verdicts.append(_swap(verdict) if swapped else verdict)
                if prob is None:  # no token probabilities: the verdict itself, as 1 / 0 / 0.5
                    prob = {"A": 1.0, "B": 0.0, "tie": 0.5}.get(verdict, 0.5)
                probs.append(1.0 - prob if swapped else prob)
            if any(v is None for v in verdicts):
                label = None
            elif len(set(verdicts)) == 1:
                label = verdicts[0]
            else:
                label = "tie"
                self.stats["disagreements"] += 1
            prob_a = sum(probs) / len(probs)
            out.append(Judgement(label, prob_a, confidence_for(label, prob_a), raw=tuple(raw)))
        return out


# ---- agreement ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """How two label sequences agree: ``n`` items both labeled, ``raw`` = share equal, ``kappa`` = Cohen's kappa
    ``(p_o - p_e) / (1 - p_e)`` (NaN when both always give the same single label), ``confusion[(a, b)]`` counts."""

    n: int
    raw: float
    kappa: float
    skipped: int = 0
    confusion: dict[tuple[str, str], int] = field(default_factory=dict)


def _category(label: Any, scale) -> str | None:
    if isinstance(label, Judgement):
        label = label.label
    if label is None:
        return None
    if scale is not None:
        point = scale.parse(label)
        return point.winner if point.kind == "preference" else point.kind
    return str(label)


def agreement(labels_a: Sequence[Any], labels_b: Sequence[Any], *, scale=None) -> Agreement:
    """Raw agreement and Cohen's kappa between two judges or annotators on the same items.

    Labels are strings or :class:`Judgement`; ``None`` (no label) on either side skips the item. With ``scale`` (a
    :class:`~prefkit.data.scales.GradedScale`) graded labels collapse to who won ("A" / "B" / "tie" / "both_bad"),
    so a 7-point annotator can be compared with a binary judge.
    """
    if len(labels_a) != len(labels_b):
        raise ValueError(
            f"the two label lists differ in length ({len(labels_a)} vs {len(labels_b)}); they must label the same items."
        )
    pairs, skipped = [], 0
    for a, b in zip(labels_a, labels_b):
        ca, cb = _category(a, scale), _category(b, scale)
        if ca is None or cb is None:
            skipped += 1
        else:
            pairs.append((ca, cb))
    n = len(pairs)
    if n == 0:
        raise ValueError("no item carries a label from both sides; agreement is undefined.")
    confusion = Counter(pairs)
    observed = sum(count for (a, b), count in confusion.items() if a == b) / n
    marginal_a = Counter(a for a, _ in pairs)
    marginal_b = Counter(b for _, b in pairs)
    expected = sum(marginal_a[c] * marginal_b[c] for c in marginal_a) / (n * n)
    kappa = float("nan") if expected == 1.0 else (observed - expected) / (1.0 - expected)
    return Agreement(n=n, raw=observed, kappa=kappa, skipped=skipped, confusion=dict(confusion))
