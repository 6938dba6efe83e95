r"""Did my run work? Compare policies on held-out prompts: reward, win rate, KL to the base, length, diversity.

::

    from prefkit import evaluate

    report = evaluate(["HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-dpo"], prompts, reward="vader")
    print(report.table())

Every policy answers the same prompts, at the same temperature and with the same random numbers (two identical
policies give identical answers). The first policy is the **baseline** unless ``baseline=`` names another; each
policy is then measured by

- **reward**: the mean of any reward :func:`prefkit.rewards.resolve_reward` accepts, with a bootstrap interval
  over prompts;
- **win rate** against the baseline's answer to the same prompt and sample: a pairwise judge asked in *both*
  orders (a judge that always prefers the first answer scores 0.5), or, without a judge, the higher reward; a tie
  is half a win; bootstrap interval over prompts;
- **KL to the baseline**, :math:`\mathrm{KL}(\pi \,\|\, \pi_{base})` in nats per answer, estimated on the policy's
  own samples from the per-token log-ratios :math:`\log r_t = \log \pi_{base}(y_t) - \log \pi(y_t)` (both at the
  sampling temperature): ``k1`` :math:`= -\sum_t \log r_t` (unbiased, noisy, can be negative) and ``k3``
  :math:`= \sum_t (r_t - 1 - \log r_t)` (unbiased, never negative; Schulman, 2020), each with its standard error;
- **length** (tokens, with the share of answers cut at ``max_new_tokens``), **empty** answers, **distinct-1/2**
  (unique n-grams over all n-grams of all answers), **repetition** (share of answers that repeat a word 4-gram),
  and **reward per token**, which exposes a reward bought with length.

With ``output_dir`` every answer and score is appended to ``samples.jsonl`` as it is made, so an interrupted run
resumes where it stopped; ``eval.json`` holds the summary and ``eval.png`` plots reward against KL (one point per
policy, with intervals) and the length distributions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .chat import Prompt
from .logprobs import causal_lm_token_logprobs

SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "eval.json"
PLOT_FILE = "eval.png"


class EvaluationError(ValueError):
    """Bad input to :func:`evaluate`, found before any sampling."""


# --------------------------------------------------------------------------------------------------------------------
# Statistics: pure functions
# --------------------------------------------------------------------------------------------------------------------


def bootstrap_interval(values: Sequence[float], *, confidence: float = 0.95, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement, ``resamples`` times)."""
    values = [float(v) for v in values]
    if not values:
        return (math.nan, math.nan)
    if len(values) == 1:
        return (values[0], values[0])
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = means[min(int(math.floor(tail * resamples)), resamples - 1)]
    high = means[min(int(math.ceil((1 - tail) * resamples)) - 1, resamples - 1)]
    return (low, high)


def mean_and_sem(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for fewer than two values)."""
    values = [float(v) for v in values]
    if not values:
        return (math.nan, math.nan)
    mean = sum(values) / len(values)
    if len(values) < 2:
        return (mean, 0.0)
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return (mean, math.sqrt(variance / len(values)))


def kl_estimates(policy_logps: torch.Tensor, base_logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-answer KL estimates ``(k1, k3)`` from token log-probs of samples drawn from the policy.

    With :math:`\log r_t = \log \pi_{base}(y_t) - \log \pi(y_t)` over the answer's tokens,
    :math:`k_1 = \sum_t -\log r_t` and :math:`k_3 = \sum_t (e^{\log r_t} - 1 - \log r_t)`. Both are unbiased
    estimates of the sequence KL :math:`\mathrm{KL}(\pi \| \pi_{base})` (the sum of per-token conditional KLs);
    ``k3`` is never negative and has lower variance when the policies are close.
    """
    log_ratio = (base_logps - policy_logps).float() * mask
    k1 = (-log_ratio).sum(dim=-1)
    k3 = ((torch.exp(log_ratio) - 1 - log_ratio) * mask).sum(dim=-1)
    return k1, k3


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams over all word n-grams of ``texts`` (1.0 = no n-gram repeats anywhere)."""
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeats_an_ngram(text: str, n: int = 4) -> bool:
    """Whether some word n-gram occurs twice in ``text`` (degenerate loops, copy-paste padding)."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) < len(grams)


def pairwise_outcomes(judge: Any, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> list[float]:
    """How often ``first[i]`` beats ``second[i]`` (1 win, 0.5 tie, 0 loss), averaged over asking ``judge`` in both
    orders, so a judge with a position bias cannot favour either side."""
    from .data.judges import verdict_winner

    pairs = [[a, b] for a, b in zip(first, second)]
    swapped = [[b, a] for a, b in zip(first, second)]
    forward = list(judge.judge(list(prompts), pairs))
    backward = list(judge.judge(list(prompts), swapped))
    if len(forward) != len(pairs) or len(backward) != len(pairs):
        raise ValueError(f"The judge returned {len(forward)} and {len(backward)} verdicts for {len(pairs)} pairs.")
    score = {0: 1.0, 1: 0.0, None: 0.5}
    return [(score[verdict_winner(f)] + 1.0 - score[verdict_winner(b)]) / 2 for f, b in zip(forward, backward)]


# --------------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class PolicyReport:
    """One policy's numbers; ``*_interval`` are (low, high) bootstrap intervals, ``*_sem`` standard errors."""

    name: str
    num_answers: int
    reward: float | None = None
    reward_interval: tuple[float, float] | None = None
    reward_gain: float | None = None  # mean reward minus the baseline's, on the same prompts
    reward_gain_interval: tuple[float, float] | None = None  # paired by prompt: prompt-to-prompt variation cancels
    win_rate: float | None = None
    win_rate_interval: tuple[float, float] | None = None
    kl_k1: float | None = None
    kl_k1_sem: float | None = None
    kl_k3: float | None = None
    kl_k3_sem: float | None = None
    length: float = 0.0
    length_sem: float = 0.0
    truncated_rate: float = 0.0
    empty_rate: float = 0.0
    distinct_1: float = 0.0
    distinct_2: float = 0.0
    repetition_rate: float = 0.0
    reward_per_token: float | None = None
    is_baseline: bool = False
    lengths: list[int] = field(default_factory=list, repr=False)


@dataclass
class EvaluationReport:
    """What :func:`evaluate` measured: one :class:`PolicyReport` per policy, the settings, and where files went."""

    policies: list[PolicyReport]
    baseline: str
    settings: dict[str, Any]
    output_dir: str | None = None

    def __getitem__(self, name: str) -> PolicyReport:
        for policy in self.policies:
            if policy.name == name:
                return policy
        raise KeyError(f"no policy {name!r}; evaluated: {[p.name for p in self.policies]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "settings": self.settings,
            "policies": [{k: v for k, v in asdict(p).items() if k != "lengths"} for p in self.policies],
        }

    def table(self) -> str:
        """A plain-text table, one row per policy."""

        def number(value, digits=3):
            return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

        def interval(pair, digits=3):
            return "" if pair is None else f" [{number(pair[0], digits)}, {number(pair[1], digits)}]"

        header = ["policy", "reward [95% CI]", "win rate vs base [95% CI]", "KL k3 ± sem", "KL k1 ± sem", "length",
                  "empty", "distinct-2", "repeats", "reward/token"]
        rows = []
        for p in self.policies:
            rows.append([
                p.name + (" (base)" if p.is_baseline else ""),
                number(p.reward) + interval(p.reward_interval),
                "-" if p.is_baseline else number(p.win_rate) + interval(p.win_rate_interval),
                "-" if p.kl_k3 is None else f"{number(p.kl_k3)} ± {number(p.kl_k3_sem)}",
                "-" if p.kl_k1 is None else f"{number(p.kl_k1)} ± {number(p.kl_k1_sem)}",
                f"{p.length:.1f}", f"{p.empty_rate:.0%}", f"{p.distinct_2:.2f}", f"{p.repetition_rate:.0%}",
                number(p.reward_per_token, 4),
            ])
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class PolicyUnderTest:
    """A policy to sample: ``scope()`` is entered around its use (e.g. a PEFT model's ``disable_adapter`` makes the
    same weights act as their base)."""

    name: str
    source: str | None
    model: Any = None
    tokenizer: Any = None
    scope: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    owned: bool = False  # loaded by evaluate from ``source``, so released when done with it


def _policy_name(source: str) -> str:
    return os.path.basename(os.path.normpath(source)) or source


def _as_policies(policies: Any) -> list[PolicyUnderTest]:
    if isinstance(policies, (str, os.PathLike)) or (isinstance(policies, tuple) and len(policies) == 2 and not isinstance(policies[0], str)):
        policies = [policies]
    items = list(policies.items()) if isinstance(policies, Mapping) else [(None, p) for p in policies]
    out: list[PolicyUnderTest] = []
    for name, item in items:
        if isinstance(item, (str, os.PathLike)):
            source = os.fspath(item)
            out.append(PolicyUnderTest(name or _policy_name(source), source))
        elif isinstance(item, tuple) and len(item) == 2:
            model, tokenizer = item
            out.append(PolicyUnderTest(name or f"policy {len(out)}", None, model, tokenizer))
        else:
            raise EvaluationError(
                f"policy {name or len(out)!r} is a {type(item).__name__}; pass a model id, a folder (a full model or a "
                "LoRA adapter), or a (model, tokenizer) pair."
            )
    names = [p.name for p in out]
    for index, policy in enumerate(out):
        if names.count(policy.name) > 1:
            policy.name = f"{policy.name} ({index})"
    if not out:
        raise EvaluationError("No policy to evaluate: pass at least one model id, folder or (model, tokenizer) pair.")
    return out


def prompt_rows(prompts: Any) -> list[dict[str, Any]]:
    if prompts is None:
        raise EvaluationError("No prompts: pass a list of prompts (strings or message lists) or rows with a 'prompt' column.")
    if hasattr(prompts, "column_names"):
        if "prompt" not in prompts.column_names:
            raise EvaluationError(f"The prompt dataset has no 'prompt' column; it has {sorted(prompts.column_names)}.")
        prompts = list(prompts)
    rows = [p if isinstance(p, Mapping) else {"prompt": p} for p in prompts]
    if not rows:
        raise EvaluationError("The prompt set is empty: pass at least one prompt.")
    from .data.validation import PreferenceDataError, validate_dataset

    try:
        validate_dataset(rows, "prompts", format="prompts", id_column=None)
    except PreferenceDataError as error:
        raise EvaluationError(str(error)) from None
    return [dict(r) for r in rows]


def _same_model(a: str, b: str) -> bool:
    if os.path.isdir(a) and os.path.isdir(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return a.rstrip("/") == b.rstrip("/")


def _check_adapter_bases(policies: list[PolicyUnderTest], baseline: PolicyUnderTest) -> None:
    from .models import adapter_base

    if baseline.source is None:
        return
    for policy in policies:
        if policy is baseline or policy.source is None:
            continue
        base = adapter_base(policy.source)
        if base is not None and not _same_model(base, baseline.source) and adapter_base(baseline.source) is None:
            raise EvaluationError(
                f"{policy.source} is a LoRA adapter trained on {base}, but the baseline is {baseline.source}: its win "
                f"rate and KL would compare different base models. Make the baseline {base} (list it first, or pass "
                "baseline=), or evaluate the adapter trained on this baseline."
            )


def _batch_seed(seed: int, prompt_indices: Sequence[int], sample: int) -> int:
    key = f"{seed}|{sample}|" + ",".join(map(str, prompt_indices))
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)


@torch.no_grad()
def _token_logprobs(model, samples, temperature: float) -> torch.Tensor:
    """Log-probs of each sampled completion token under ``model`` at ``temperature`` (0 where masked out), computed
    from the last hidden states chunk by chunk (:func:`prefkit.logprobs.causal_lm_token_logprobs`)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout: the log-probs of the policy as it samples
    try:
        logps = causal_lm_token_logprobs(
            model,
            samples.input_ids.to(device),
            samples.attention_mask.to(device),
            samples.position_ids.to(device),
            samples.completion_ids.shape[1],
            temperature=temperature,
            mask=samples.completion_mask.to(device),
        ).logprobs
    finally:
        model.train(was_training)
    return logps.cpu()


# --------------------------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------------------------


def evaluate(
    policies: Any,
    prompts: Any,
    *,
    reward: Any = None,
    judge: Any = None,
    baseline: str | int = 0,
    num_samples: int = 1,
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    confidence: float = 0.95,
    bootstrap_resamples: int = 1000,
    device: str | None = None,
    progress: bool = True,
) -> EvaluationReport:
    """Sample every policy on ``prompts`` and measure it against the baseline (see the module docstring).

    Args:
        policies: model ids or folders (a full model or a LoRA adapter on its base), ``(model, tokenizer)`` pairs, or
            a mapping ``{name: either}``. The first is the baseline unless ``baseline`` says otherwise.
        prompts: prompts (text or message lists), or rows / a dataset with a ``prompt`` column (other columns, e.g.
            ``reference``, reach rewards that ask for them).
        reward: any spelling :func:`prefkit.rewards.resolve_reward` takes; optional.
        judge: a pairwise judge (``.judge(prompts, pairs)``, e.g. :class:`prefkit.LLMJudge`) for the win rate;
            without one the higher ``reward`` wins; with neither there is no win rate.
        num_samples: answers per prompt and policy.
        output_dir: where ``samples.jsonl`` (resumable), ``eval.json`` and ``eval.png`` go.
    """
    from .rewards import resolve_reward
    from .rl import RewardFunction

    if num_samples < 1 or max_new_tokens < 1 or batch_size < 1:
        raise EvaluationError("num_samples, max_new_tokens and batch_size must be at least 1.")
    if not temperature > 0:
        raise EvaluationError(f"temperature must be > 0: the evaluation samples (got {temperature}).")
    rows = prompt_rows(prompts)
    specs = _as_policies(policies)
    if isinstance(baseline, str):
        matches = [p for p in specs if p.name == baseline or p.source == baseline]
        if not matches:
            raise EvaluationError(f"baseline {baseline!r} is not among the policies {[p.name for p in specs]}.")
        base = matches[0]
    else:
        base = specs[baseline]
    _check_adapter_bases(specs, base)

    prompt_list = [r["prompt"] for r in rows]
    columns = {key: [r.get(key) for r in rows] for key in rows[0] if key != "prompt"}
    reward_function = None
    if reward is not None:
        reward_function = RewardFunction(resolve_reward(reward, device=device))
        reward_function.check_columns(list(columns) + ["prompt"], "prompts")
        # A reward that fails on a short or empty answer fails here, before minutes of sampling.
        probe = [prompt_list[0]] * 2
        reward_function(probe, ["", "Hello."], {k: v[:1] * 2 for k, v in columns.items()})
    if judge is not None and not callable(getattr(judge, "judge", None)):
        raise EvaluationError(f"judge is a {type(judge).__name__}; pass a pairwise judge with .judge(prompts, pairs).")

    out_dir = Path(output_dir) if output_dir is not None else None
    done: dict[tuple[str, int, int], dict[str, Any]] = {}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        samples_path = out_dir / SAMPLES_FILE
        if samples_path.exists():
            from .data.io import read_jsonl

            for record in read_jsonl(samples_path, drop_invalid=True):
                done[(record["policy"], record["prompt_index"], record["sample"])] = record

    settings = {"num_prompts": len(rows), "num_samples": num_samples, "max_new_tokens": max_new_tokens,
                "temperature": temperature, "top_p": top_p, "seed": seed, "confidence": confidence,
                "reward": reward if isinstance(reward, str) else (None if reward is None else type(reward).__name__),
                "judge": None if judge is None else type(judge).__name__}

    # Load the baseline first: every other policy's KL is measured against it.
    _load(base, device)
    records: dict[str, list[dict[str, Any]]] = {}
    from tqdm.auto import tqdm

    total = len(specs) * len(rows) * num_samples
    with tqdm(total=total, desc="evaluating", unit="answer", disable=not progress) as bar:
        for policy in [base] + [p for p in specs if p is not base]:
            _load(policy, device)
            records[policy.name] = sample_policy(
                policy, base, rows, prompt_list, columns, reward_function, done, out_dir, bar,
                num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                batch_size=batch_size, seed=seed,
            )
            if policy is not base:
                _release(policy)

    report = summarize(specs, base, records, rows, num_samples, reward_function, judge, confidence,
                        bootstrap_resamples, seed, settings)
    if out_dir is not None:
        report.output_dir = str(out_dir)
        with open(out_dir / SUMMARY_FILE, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
        plot_evaluation(report, out_dir / PLOT_FILE)
    return report


def _load(policy: PolicyUnderTest, device: str | None) -> None:
    if policy.model is None:
        from .models import load_policy

        policy.model, policy.tokenizer = load_policy(policy.source, device=device)
        policy.owned = True


def _release(policy: PolicyUnderTest) -> None:
    if policy.owned:
        policy.model = policy.tokenizer = None


def sample_policy(policy, base, rows, prompt_list, columns, reward_function, done, out_dir, bar, *, num_samples,
                   max_new_tokens, temperature, top_p, batch_size, seed) -> list[dict[str, Any]]:
    """Answer every prompt ``num_samples`` times with ``policy`` and score each answer: reward, and KL to ``base``.

    One record per answer (policy, prompt_index, sample, prompt, completion, num_tokens, finished, reward, kl_k1,
    kl_k3); records already in ``done`` are reused, new ones are appended to ``out_dir/samples.jsonl``. Batches are
    seeded by (seed, prompts, sample), so every policy sees the same random numbers.
    """
    from .data.io import append_jsonl
    from .sampling import HFSampler

    sampler = HFSampler(policy.model, policy.tokenizer)
    same_vocab = policy is base or (
        policy.tokenizer.get_vocab() == base.tokenizer.get_vocab()
        and policy.model.get_output_embeddings().weight.shape[0] == base.model.get_output_embeddings().weight.shape[0]
    )
    records: list[dict[str, Any]] = []
    for sample in range(num_samples):
        for start in range(0, len(rows), batch_size):
            indices = list(range(start, min(start + batch_size, len(rows))))
            kept = [done[(policy.name, i, sample)] for i in indices if (policy.name, i, sample) in done]
            if len(kept) == len(indices):
                records += kept
                bar.update(len(indices))
                continue
            with policy.scope():
                samples = sampler.generate(
                    [prompt_list[i] for i in indices], 1, max_new_tokens=max_new_tokens, temperature=temperature,
                    top_p=top_p, top_k=0, seed=_batch_seed(seed, indices, sample), truncation="left", first_index=start,
                )
            batch_columns = {k: [v[i] for i in indices] for k, v in columns.items()}
            rewards = (
                reward_function([prompt_list[i] for i in indices], samples.texts, batch_columns).tolist()
                if reward_function is not None else [None] * len(indices)
            )
            k1 = k3 = [None] * len(indices)
            if same_vocab:
                if policy is base:
                    k1 = k3 = [0.0] * len(indices)
                else:
                    with policy.scope():
                        own = _token_logprobs(policy.model, samples, temperature)
                    with base.scope():
                        reference = _token_logprobs(base.model, samples, temperature)
                    k1_t, k3_t = kl_estimates(own, reference, samples.completion_mask.cpu().float())
                    k1, k3 = k1_t.tolist(), k3_t.tolist()
            lengths = samples.completion_lengths.tolist()
            finished = samples.finished.tolist()
            batch = [
                {"policy": policy.name, "prompt_index": i, "sample": sample, "prompt": prompt_list[i],
                 "completion": samples.texts[j], "num_tokens": int(lengths[j]), "finished": bool(finished[j]),
                 "reward": rewards[j], "kl_k1": k1[j], "kl_k3": k3[j]}
                for j, i in enumerate(indices)
            ]
            if out_dir is not None:
                append_jsonl(batch, out_dir / SAMPLES_FILE)
            records += batch
            bar.update(len(indices))
    return records


def summarize(specs, base, records, rows, num_samples, reward_function, judge, confidence, resamples, seed, settings):
    """The :class:`EvaluationReport` of ``records`` (``{policy name: sample_policy records}``) against ``base``."""
    base_records = {(r["prompt_index"], r["sample"]): r for r in records[base.name]}
    reports = []
    for policy in specs:
        own = records[policy.name]
        texts = [r["completion"] for r in own]
        lengths = [r["num_tokens"] for r in own]
        report = PolicyReport(name=policy.name, num_answers=len(own), is_baseline=policy is base, lengths=lengths)
        report.length, report.length_sem = mean_and_sem(lengths)
        report.truncated_rate = sum(not r["finished"] for r in own) / len(own)
        report.empty_rate = sum(not t.strip() for t in texts) / len(own)
        report.distinct_1, report.distinct_2 = distinct_n(texts, 1), distinct_n(texts, 2)
        report.repetition_rate = sum(repeats_an_ngram(t) for t in texts) / len(own)
        if reward_function is not None:
            per_prompt = _per_prompt([(r["prompt_index"], r["reward"]) for r in own])
            report.reward = sum(r["reward"] for r in own) / len(own)
            report.reward_interval = bootstrap_interval(per_prompt, confidence=confidence, resamples=resamples, seed=seed)
            report.reward_per_token = sum(r["reward"] / max(r["num_tokens"], 1) for r in own) / len(own)
            if policy is not base:
                base_per_prompt = _per_prompt([(r["prompt_index"], r["reward"]) for r in records[base.name]])
                gains = [mine - theirs for mine, theirs in zip(per_prompt, base_per_prompt)]
                report.reward_gain = sum(gains) / len(gains)
                report.reward_gain_interval = bootstrap_interval(gains, confidence=confidence, resamples=resamples,
                                                                 seed=seed)
        if own and own[0]["kl_k1"] is not None:
            report.kl_k1, report.kl_k1_sem = mean_and_sem([r["kl_k1"] for r in own])
            report.kl_k3, report.kl_k3_sem = mean_and_sem([r["kl_k3"] for r in own])
        if policy is not base and (judge is not None or reward_function is not None):
            pairs = [(r, base_records[(r["prompt_index"], r["sample"])]) for r in own]
            if judge is not None:
                outcomes = pairwise_outcomes(judge, [r["prompt"] for r, _ in pairs], [r["completion"] for r, _ in pairs],
                                             [b["completion"] for _, b in pairs])
            else:
                outcomes = [1.0 if r["reward"] > b["reward"] else 0.0 if r["reward"] < b["reward"] else 0.5 for r, b in pairs]
            per_prompt = _per_prompt([(r["prompt_index"], o) for (r, _), o in zip(pairs, outcomes)])
            report.win_rate = sum(outcomes) / len(outcomes)
            report.win_rate_interval = bootstrap_interval(per_prompt, confidence=confidence, resamples=resamples, seed=seed)
        reports.append(report)
    return EvaluationReport(reports, base.name, settings)


def _per_prompt(pairs: list[tuple[int, float]]) -> list[float]:
    """Mean value per prompt: the bootstrap resamples prompts, the unit that was drawn."""
    sums: dict[int, list[float]] = {}
    for index, value in pairs:
        sums.setdefault(index, []).append(float(value))
    return [sum(v) / len(v) for _, v in sorted(sums.items())]


def plot_evaluation(report: EvaluationReport, path: str | os.PathLike) -> Path:
    """Reward against KL to the baseline (one point per policy, with intervals) and the answer lengths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    for policy in report.policies:
        kl = policy.kl_k3 if policy.kl_k3 is not None else 0.0
        y = policy.reward if policy.reward is not None else (policy.win_rate if policy.win_rate is not None else 0.5)
        interval = policy.reward_interval if policy.reward is not None else policy.win_rate_interval
        yerr = [[y - interval[0]], [interval[1] - y]] if interval else None
        left.errorbar([kl], [y], xerr=[[policy.kl_k3_sem or 0.0], [policy.kl_k3_sem or 0.0]], yerr=yerr, fmt="o", capsize=3,
                      label=policy.name)
    left.set_xlabel("KL to the baseline (k3, nats per answer)")
    left.set_ylabel("mean reward" if any(p.reward is not None for p in report.policies) else "win rate vs baseline")
    left.set_title("Reward vs distance from the baseline")
    left.legend(loc="best", fontsize=8)
    longest = max([max(p.lengths, default=0) for p in report.policies] + [1])
    bins = list(range(0, longest + 2, max(1, (longest + 1) // 20)))
    for policy in report.policies:
        right.hist(policy.lengths, bins=bins, alpha=0.5, label=policy.name)
    right.set_xlabel("answer length (tokens)")
    right.set_ylabel("answers")
    right.set_title("Lengths")
    right.legend(loc="best", fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
