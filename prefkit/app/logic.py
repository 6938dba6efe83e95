"""What the app does, without the widgets: sample pairs, turn clicks into votes, render results safely, summarise.

Everything here is plain Python over prefkit's library functions (:func:`prefkit.bon.best_of_n`, the vote store,
the exporter, the leaderboard), so it is tested directly and the Gradio layer in :mod:`prefkit.app.blocks` stays
wiring. Nothing here trains a model.
"""

from __future__ import annotations

import html
import json
import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..bon import BestOfNResult, best_of_n
from ..data.votes import Vote, VoteStore, hash_annotator
from .selection import smallest_margin_pair

MODE_TWO_SAMPLES = "Two samples of the policy"
MODE_BEST_VS_SAMPLE = "Best-of-N vs one sample"
MODE_TWO_MODELS = "Policy vs second model"

SIDE_VERDICTS = {"left", "right", "tie", "both_bad"}
STRENGTH_CHOICES = ["not graded", "slightly", "clearly", "much"]


class AppError(ValueError):
    """A user-facing problem (too long, too fast, nothing to vote on); the message says what to do."""


class LimitReached(AppError):
    """A rate limit or a daily quota: not an error of the user's input, so the page shows it where the result would
    have gone (the vote or pair note) and keeps what is on the page."""


# --------------------------------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------------------------------


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (a browser session, or one key for everyone: ``scope``
    names it in the message), thread-safe."""

    def __init__(self, limit: int, window: float = 60.0, what: str = "actions", scope: str = "per session"):
        self.limit, self.window, self.what, self.scope = limit, window, what, scope
        self._events: dict[str, deque] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and now - events[0] > self.window:
                events.popleft()
            if len(events) >= self.limit:
                wait = self.window - (now - events[0])
                raise LimitReached(
                    f"Too many {self.what}: at most {self.limit} per {self.window:.0f} s {self.scope}. "
                    f"Try again in {wait:.0f} s."
                )
            events.append(now)


def utc_day(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


class DailyQuota:
    """At most ``limit`` events per annotator per UTC day (``limit`` 0: no quota), thread-safe.

    ``already`` seeds the counts with earlier events, ``(annotator, ISO-8601 UTC time)`` pairs (the stored votes'
    ``annotator`` and ``created_at``), so a restart does not hand out a fresh quota. ``clock`` returns
    ``time.time()`` (tests move it)."""

    def __init__(self, limit: int, what: str = "votes", already: Sequence[tuple[str, str]] = (),
                 clock: Callable[[], float] = time.time):
        self.limit, self.what, self.clock = limit, what, clock
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        for annotator, created_at in already:
            day = (created_at or "")[:10]
            self._counts[(annotator, day)] = self._counts.get((annotator, day), 0) + 1

    def used(self, annotator: str) -> int:
        with self._lock:
            return self._counts.get((annotator, utc_day(self.clock())), 0)

    def check(self, annotator: str) -> None:
        """Count one event for ``annotator`` today, or raise :class:`LimitReached` when the quota is used up."""
        if self.limit <= 0:
            return
        now = self.clock()
        key = (annotator, utc_day(now))
        with self._lock:
            if self._counts.get(key, 0) >= self.limit:
                next_day = (math.floor(now / 86400) + 1) * 86400
                hours = (next_day - now) / 3600
                raise LimitReached(
                    f"You have reached today's quota of {self.limit} {self.what}. Thank you! It renews at midnight "
                    f"UTC, in {hours:.0f} h {60 * (hours % 1):.0f} min."
                )
            self._counts[key] = self._counts.get(key, 0) + 1


def check_length(text: str, limit: int, what: str) -> str:
    if len(text) > limit:
        raise AppError(f"The {what} is {len(text)} characters; the limit is {limit}. Shorten it.")
    return text


def check_prompt(prompt: str | None, limit: int) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise AppError("Type a prompt first (or load a prompt list and draw one).")
    return check_length(prompt, limit, "prompt")


# --------------------------------------------------------------------------------------------------------------------
# Generation that stops when its client leaves
# --------------------------------------------------------------------------------------------------------------------


class GenerationJob:
    """Runs ``work(should_stop)`` on a thread of its own, so that the request handler waiting for it stays free to
    notice that its client has gone, and stops the work when it has.

    Gradio runs a generator handler one step at a time; when the client disconnects (a closed tab, a cancelled API
    call), it stops asking for the next step and closes the generator. So a handler waits like this::

        with GenerationJob(work) as job:
            for elapsed in job.running():
                yield progress(elapsed)          # a step every poll_seconds: a chance to be closed
            result = job.result()

    Closing the handler leaves the ``with`` block, which cancels the job: ``should_stop()`` turns true and the
    sampler, which checks it after every token, stops within one token. Gradio notices the disconnect at the next
    step, so the model is free again at most ``poll_seconds`` and a token after the client left (each step sends the
    page a progress line: a short poll costs a message, a long one keeps the model busy for nobody).
    """

    def __init__(self, work: Callable[[Callable[[], bool]], Any], poll_seconds: float = 0.2):
        self.poll_seconds = poll_seconds
        self.started = time.monotonic()
        self._cancelled = threading.Event()
        self._done = threading.Event()
        self._result: Any = None
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name="prefkit-generation", daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[Callable[[], bool]], Any]) -> None:
        try:
            self._result = work(self.should_stop)
        except Exception as error:  # raised again in the handler by result()
            self._error = error
        finally:
            self._done.set()

    def should_stop(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def running(self) -> Iterator[float]:
        """Seconds since the start, every ``poll_seconds`` while the work runs."""
        while not self._done.wait(self.poll_seconds):
            yield time.monotonic() - self.started

    def result(self, timeout: float | None = None) -> Any:
        """What ``work`` returned (waiting for it), or the exception it raised."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the generation is still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result

    def __enter__(self) -> GenerationJob:
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._done.is_set():
            self.cancel()


def progress_markdown(what: str, elapsed: float, max_seconds: float | None) -> str:
    """The line shown while a generation runs."""
    limit = f" (answers are cut at {max_seconds:g} s)" if max_seconds else ""
    return f"*{what}... {elapsed:.0f} s{limit}*"


def time_limit_note(max_seconds: float | None) -> str:
    return (
        f"**Cut at the {max_seconds:g} s time limit:** generation stopped there (the server's `--max_generation_seconds`), "
        "so unfinished answers end where it stopped. This is not an error: they are scored, and can be voted on, as "
        "they are. Fewer or shorter answers finish in time."
    )


# --------------------------------------------------------------------------------------------------------------------
# Prompt lists
# --------------------------------------------------------------------------------------------------------------------


def read_prompt_list(path: str | Path, limit_chars: int | None = None) -> list[str]:
    """Prompts from a ``.txt`` file (one per line) or a ``.jsonl`` / ``.json`` file (a ``prompt`` field per record).

    Blank lines are skipped; a prompt over ``limit_chars`` or a record without a prompt is an error naming the line.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    prompts: list[str] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        lines = text.splitlines() if path.suffix.lower() == ".jsonl" else None
        records = [json.loads(line) for line in lines if line.strip()] if lines is not None else json.loads(text)
        for number, record in enumerate(records, start=1):
            prompt = record.get("prompt") if isinstance(record, dict) else record
            if isinstance(prompt, list):  # conversational: the last user turn is the prompt shown
                prompt = next((m.get("content") for m in reversed(prompt) if m.get("role") == "user"), None)
            if not isinstance(prompt, str) or not prompt.strip():
                raise AppError(f"{path.name}, record {number}: no 'prompt' text.")
            prompts.append(prompt.strip())
    else:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise AppError(f"{path.name} holds no prompts.")
    if limit_chars is not None:
        for number, prompt in enumerate(prompts, start=1):
            if len(prompt) > limit_chars:
                raise AppError(f"{path.name}, prompt {number} is {len(prompt)} characters; the limit is {limit_chars}.")
    return prompts


def bundled_prompts() -> list[str]:
    """The default prompt list: the 20 requests of the test split (``split == "test"``) of prefkit's bundled
    preference set (synthetic, CC0-1.0; see ``prefkit/data/bundled/README.md``)."""
    from ..data import bundled_preferences_path

    prompts: list[str] = []
    with open(bundled_preferences_path(), encoding="utf-8") as file:
        for line in file:
            record = json.loads(line)
            if record.get("split") == "test" and record["prompt"] not in prompts:
                prompts.append(record["prompt"])
    return prompts


# --------------------------------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Pair:
    """Two responses to one prompt waiting for a vote; ``shown_left`` hides which source is on which side.

    ``gold_answer`` is set on a gold pair (its known answer; the pair lives in server-side state and the page never
    sees it); ``shown_at`` is when it was put on the page (``time.time()``), to time the vote."""

    prompt: str
    response_a: str
    response_b: str
    source_a: str
    source_b: str
    shown_left: str
    reward_a: float | None = None
    reward_b: float | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    pair_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    gold_answer: str | None = None
    shown_at: float | None = None

    @property
    def left(self) -> str:
        return self.response_a if self.shown_left == "a" else self.response_b

    @property
    def right(self) -> str:
        return self.response_b if self.shown_left == "a" else self.response_a

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Pair:
        return cls(**record)


def _settings_of(result: BestOfNResult) -> dict[str, Any]:
    return {k: v for k, v in result.generation.items() if k in ("n", "temperature", "top_p", "max_new_tokens")}


def make_pair(
    models,
    prompt: str,
    mode: str,
    *,
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    rng: random.Random | None = None,
    max_seconds: float | None = None,
    should_stop: Callable[[], bool] | None = None,
    selection: str = "random",
    shown_left: str | None = None,
    streamers: dict[str, Any] | None = None,
) -> Pair:
    """Sample two responses to ``prompt`` the way ``mode`` says, score them, and hide their order at random.

    - :data:`MODE_TWO_SAMPLES`: two samples of the policy (one batched call); with ``selection="margin"``, ``n``
      samples (at least 2) and the two whose rewards are closest (:func:`prefkit.app.selection.smallest_margin_pair`).
    - :data:`MODE_BEST_VS_SAMPLE`: the best of ``n`` samples against an independent single sample, all ``n + 1``
      drawn in one batched call (the last one is the single sample).
    - :data:`MODE_TWO_MODELS`: one sample of the policy against one of the second model.

    ``max_seconds`` bounds the generation (both models' together); answers it cuts end where it stopped, and the
    pair's ``generation`` records ``interrupted_by="max_time"``. ``should_stop`` ends it early (the client left).

    ``shown_left`` ("a" or "b") fixes the side answer *a* is shown on (default: drawn from ``rng``); ``streamers``
    (``{"policy": ..., "compare": ...}``, :class:`prefkit.app.streaming.CandidateStreamer`) receive the tokens of
    each model's generation as they are produced, for the page to show them (they change nothing sampled).
    """
    rng = rng or random.Random()
    shown_left = shown_left or rng.choice("ab")
    if shown_left not in ("a", "b"):
        raise ValueError(f"shown_left must be 'a' or 'b'; got {shown_left!r}.")
    streamers = streamers or {}
    policy = models.policy
    with models.generate_lock:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds

        def sample(slot: Any, count: int, role: str = "policy") -> BestOfNResult:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            streaming = {"streamer": streamers[role]} if streamers.get(role) is not None else {}
            return best_of_n(
                slot.model, slot.tokenizer, models.reward, [prompt], n=count, max_new_tokens=max_new_tokens,
                temperature=temperature, top_p=top_p, progress=False, max_time=remaining, should_stop=should_stop,
                **streaming,
            )[0]

        if mode == MODE_TWO_SAMPLES:
            by_margin = selection == "margin"
            result = sample(policy, max(n, 2) if by_margin else 2)
            candidates = result.candidates
            i, j = smallest_margin_pair([c.reward for c in candidates], [c.text for c in candidates]) if by_margin else (0, 1)
            first, second = result.candidates[i], result.candidates[j]
            generation = {**_settings_of(result), "mode": "two_samples"}
            if by_margin:
                generation.update(selection="margin", candidates=len(result.candidates))
            fields = dict(
                response_a=first.text, response_b=second.text, source_a=policy.name, source_b=policy.name,
                reward_a=first.reward, reward_b=second.reward, generation=generation,
            )
        elif mode == MODE_BEST_VS_SAMPLE:
            if n < 2:
                raise AppError("Best-of-N vs one sample needs N >= 2.")
            result = sample(policy, n + 1)
            pool, single = result.candidates[:n], result.candidates[n]
            best = max(pool, key=lambda candidate: candidate.reward)  # first of equals: sampling order
            fields = dict(
                response_a=best.text, response_b=single.text, source_a=f"{policy.name} best-of-{n}", source_b=policy.name,
                reward_a=best.reward, reward_b=single.reward,
                generation={**_settings_of(result), "n": n, "mode": "best_vs_sample"},
            )
        elif mode == MODE_TWO_MODELS:
            if models.compare is None:
                raise AppError("No second model is configured: start the app with --compare_policy to compare two models.")
            mine = sample(policy, 1)
            other = models.compare
            theirs = sample(other, 1, "compare")
            fields = dict(
                response_a=mine.best.text, response_b=theirs.best.text, source_a=policy.name, source_b=other.name,
                reward_a=mine.best.reward, reward_b=theirs.best.reward,
                generation={**_settings_of(mine), "n": 1, "mode": "two_models"},
            )
            result = mine if mine.interrupted_by else theirs
        else:
            raise AppError(f"Unknown pair mode {mode!r}; choose one of: {MODE_TWO_SAMPLES}, {MODE_BEST_VS_SAMPLE}, {MODE_TWO_MODELS}.")
    if result.interrupted_by == "max_time":
        fields["generation"].update(interrupted_by="max_time", max_time=max_seconds)
    return Pair(prompt=prompt, shown_left=shown_left, **fields)


def pair_note(pair: Pair) -> str:
    """What the page says under a pair: nothing, or that the time limit cut its answers."""
    if pair.generation.get("interrupted_by") == "max_time":
        return time_limit_note(pair.generation.get("max_time"))
    return ""


def pair_from_candidates(result: BestOfNResult, rank_a: int, rank_b: int, policy_name: str, rng: random.Random | None = None) -> Pair:
    """Two candidates of a Best-of-N result, picked by rank, as a pair to label."""
    rng = rng or random.Random()
    by_rank = {candidate.rank: candidate for candidate in result.candidates}
    if rank_a == rank_b:
        raise AppError("Pick two different candidates to compare.")
    if rank_a not in by_rank or rank_b not in by_rank:
        raise AppError(f"Ranks must be between 1 and {result.n}.")
    a, b = by_rank[rank_a], by_rank[rank_b]
    return Pair(
        prompt=result.prompt if isinstance(result.prompt, str) else json.dumps(result.prompt),
        response_a=a.text, response_b=b.text, source_a=policy_name, source_b=policy_name, shown_left=rng.choice("ab"),
        reward_a=a.reward, reward_b=b.reward,
        generation={
            **_settings_of(result), "mode": "best_of_n_tab", "rank_a": rank_a, "rank_b": rank_b,
            **({"interrupted_by": "max_time", "max_time": result.generation.get("max_time")}
               if result.interrupted_by == "max_time" else {}),
        },
    )


def relabel_pair(votes: Sequence[Vote], annotator: str, rng: random.Random | None = None) -> Pair | None:
    """A pair someone else already voted on, re-shown (in a fresh random order) so agreement can be measured.

    Items this annotator already voted on, items already labeled twice, and gold pairs are not offered again.
    """
    rng = rng or random.Random()
    voters: dict[str, set[str]] = {}
    first_vote: dict[str, Vote] = {}
    for vote in votes:
        voters.setdefault(vote.item_id, set()).add(vote.annotator)
        first_vote.setdefault(vote.item_id, vote)
    candidates = [
        first_vote[item] for item, who in voters.items()
        if annotator not in who and len(who) < 2 and not first_vote[item].is_gold  # gold pairs come only as gold
    ]
    if not candidates:
        return None
    vote = rng.choice(candidates)
    return Pair(
        prompt=vote.prompt, response_a=vote.response_a, response_b=vote.response_b, source_a=vote.source_a,
        source_b=vote.source_b, shown_left=rng.choice("ab"), reward_a=vote.reward_a, reward_b=vote.reward_b,
        generation={**vote.generation, "relabel_of": vote.vote_id},
    )


def gold_pair(gold_pairs: Sequence, rng: random.Random | None = None) -> Pair:
    """One of the gold pairs (:class:`prefkit.data.reliability.GoldPair`), shown like any other pair: random side,
    its sources (if the file names them) revealed only after the vote, its answer kept in server-side state."""
    rng = rng or random.Random()
    gold = rng.choice(list(gold_pairs))
    return Pair(
        prompt=gold.prompt, response_a=gold.a, response_b=gold.b, source_a=gold.source_a, source_b=gold.source_b,
        shown_left=rng.choice("ab"), generation={"mode": "gold"}, gold_answer=gold.answer,
    )


def vote_from_pair(
    pair: Pair,
    side: str,
    *,
    strength: str | None,
    rewrite: str | None,
    annotator: str,
    session: str | None,
    now: float | None = None,
) -> Vote:
    """Turn a click (``side`` = "left" / "right" / "tie" / "both_bad") on the shown pair into a :class:`Vote`.

    ``now`` (``time.time()`` of the click) with the pair's ``shown_at`` gives ``seconds_to_vote``."""
    if side not in SIDE_VERDICTS:
        raise AppError(f"Unknown vote {side!r}.")
    if side == "left":
        verdict = pair.shown_left
    elif side == "right":
        verdict = "b" if pair.shown_left == "a" else "a"
    else:
        verdict = side
    if strength in (None, "", STRENGTH_CHOICES[0]) or verdict not in ("a", "b"):
        strength = None
    return Vote.new(
        prompt=pair.prompt, response_a=pair.response_a, response_b=pair.response_b, verdict=verdict,
        source_a=pair.source_a, source_b=pair.source_b, shown_left=pair.shown_left, strength=strength,
        rewrite=(rewrite or "").strip() or None, annotator=annotator, session=session, generation=pair.generation,
        reward_a=pair.reward_a, reward_b=pair.reward_b, pair_id=pair.pair_id, gold_answer=pair.gold_answer,
        seconds_to_vote=None if now is None or pair.shown_at is None else round(max(0.0, now - pair.shown_at), 3),
    )


def annotator_id(name: str | None, session: str | None, salt: str) -> str:
    """A pseudonym: from the name typed (stable across sessions), else from the browser session."""
    name = (name or "").strip()
    if name:
        return hash_annotator(name, salt)
    return hash_annotator(f"session:{session or 'unknown'}", salt)


# --------------------------------------------------------------------------------------------------------------------
# Rendering (every model output is escaped: a generated answer can never inject HTML or script)
# --------------------------------------------------------------------------------------------------------------------


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


def candidates_html(result: BestOfNResult) -> str:
    """The ranked candidates as an HTML table, every text escaped, the best row highlighted."""
    rows = []
    for candidate in result.ranked:
        best = candidate.rank == 1
        cut = "cut at the time limit" if result.interrupted_by == "max_time" else "cut at max tokens"
        status = "finished" if candidate.finished else cut
        rows.append(
            f'<tr class="{"prefkit-best" if best else ""}">'
            f"<td>{candidate.rank}{' ★' if best else ''}</td>"
            f"<td>{candidate.reward:.4f}</td>"
            f"<td>{candidate.num_tokens} ({status})</td>"
            f'<td class="prefkit-text">{escape(candidate.text)}</td></tr>'
        )
    return (
        '<table class="prefkit-candidates"><thead><tr><th>rank</th><th>reward</th><th>tokens</th><th>answer</th></tr>'
        "</thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def cost_markdown(result: BestOfNResult) -> str:
    total = result.generate_seconds + result.score_seconds
    duplicates = f" {result.duplicates} duplicate candidate(s): the KL bound is loose." if result.duplicates else ""
    return (
        f"**Cost:** {result.tokens_generated} tokens generated for {result.n} candidates; "
        f"{result.generate_seconds:.2f} s generating + {result.score_seconds:.2f} s scoring = {total:.2f} s.  \n"
        f"**KL to the base policy:** at most log N − (N−1)/N = **{result.kl_to_base:.3f} nats** (N = {result.n}).  \n"
        f"**Gain over one sample:** best reward {result.best.reward:.4f} vs mean {result.mean_reward:.4f}.{duplicates}"
        + (f"  \n{time_limit_note(result.generation.get('max_time'))}" if result.interrupted_by == "max_time" else "")
    )


def reward_frame(result: BestOfNResult):
    """A table for the bar chart: one row per candidate, in rank order."""
    import pandas as pd

    return pd.DataFrame(
        {
            "candidate": [f"#{c.rank}" for c in result.ranked],
            "reward": [c.reward for c in result.ranked],
            "best": ["best" if c.rank == 1 else "other" for c in result.ranked],
        }
    )


def reveal_markdown(pair: Pair, vote: Vote, saved_count: int) -> str:
    """What the annotator learns after voting: which source was on which side (escaped), and that the vote is safe."""
    left_source = pair.source_a if pair.shown_left == "a" else pair.source_b
    right_source = pair.source_b if pair.shown_left == "a" else pair.source_a
    verdict = {
        "left": "left was better", "right": "right was better", "tie": "a tie", "both_bad": "both bad"
    }[_side_of(pair, vote)]
    strength = f" ({vote.strength})" if vote.strength else ""
    rewards = ""
    if pair.reward_a is not None and pair.reward_b is not None:
        left_reward = pair.reward_a if pair.shown_left == "a" else pair.reward_b
        right_reward = pair.reward_b if pair.shown_left == "a" else pair.reward_a
        rewards = f" Reward model: left {left_reward:.3f}, right {right_reward:.3f}."
    rewrite = " Your rewrite was saved as a new chosen answer." if vote.rewrite else ""
    if left_source or right_source:
        sources = f"**Left** was *{escape(left_source or 'unnamed')}*, **right** was *{escape(right_source or 'unnamed')}*."
    else:
        sources = "The sources of this pair are not recorded."
    return (
        f"**Vote saved** ({saved_count} this session, id `{vote.vote_id[:8]}`): {verdict}{strength}.  \n"
        f"{sources}{rewards}{rewrite}"
    )


def _side_of(pair: Pair, vote: Vote) -> str:
    if vote.verdict in ("tie", "both_bad"):
        return vote.verdict
    return "left" if vote.verdict == pair.shown_left else "right"


# --------------------------------------------------------------------------------------------------------------------
# Data tab
# --------------------------------------------------------------------------------------------------------------------


FEW_BATTLES = 30
"""Battles a model needs before its rating's interval means much (with fewer, one-sided votes collapse it to a point)."""


def leaderboard_note(votes: Sequence[Vote], battles: Sequence, rows: Sequence) -> str:
    """Why the leaderboard is empty or not to be trusted yet, and what to do about it ("" when it is fine).

    ``battles`` and ``rows`` are :func:`prefkit.data.leaderboard.battles_from_votes` and
    :func:`~prefkit.data.leaderboard.leaderboard` of ``votes``.
    """
    if not votes:
        return (
            "**No votes yet**, so there is nothing to rank. Vote in the *Compare & label* tab: every vote between two "
            "different sources (a second model, or best-of-N against one sample) is a battle on this leaderboard."
        )
    if not battles:
        sources = sorted(({vote.source_a for vote in votes} | {vote.source_b for vote in votes}) - {""}) or ["unnamed"]
        return (
            f"**No votes between two different models yet:** all {len(votes)} votes compare two answers of the same "
            f"source ({', '.join(escape(source) for source in sources)}), which ranks no model. Vote on "
            f"*{MODE_BEST_VS_SAMPLE}* pairs (the policy's best of N against one sample of it), or start the app with "
            f"a second model (`--compare_policy <model>` or `PREFKIT_COMPARE_POLICY`) and vote on *{MODE_TWO_MODELS}* "
            "pairs."
        )
    fewest = min(rows, key=lambda row: row.battles)
    if fewest.battles < FEW_BATTLES:
        return (
            f"**Too few battles for the intervals to mean much yet:** {len(battles)} so far, and "
            f"*{escape(fewest.model)}* has {fewest.battles}. With a handful of votes a rating swings with every vote "
            f"(and when one side won them all, its interval collapses to a point). Keep voting: read the ranking once "
            f"every model has about {FEW_BATTLES} battles."
        )
    return ""


def summary(votes: Sequence[Vote], store: VoteStore | None = None, bootstrap_rounds: int = 200) -> dict[str, Any]:
    """Counts, per-annotator counts, agreement on double-labeled items, reward-model agreement, leaderboard (with a
    note saying why it is empty or not to be trusted yet)."""
    import pandas as pd

    from ..data.leaderboard import battles_from_votes, leaderboard
    from ..data.votes import double_labeled, vote_counts

    counts = vote_counts(votes)
    by_verdict = counts["by_verdict"]
    lines = [
        f"**{counts['votes']} votes** on {counts['items']} distinct pairs: "
        f"{by_verdict['a'] + by_verdict['b']} preferences, {by_verdict['tie']} ties, {by_verdict['both_bad']} both bad; "
        f"{counts['rewrites']} rewrites; {len(counts['by_annotator'])} annotators."
    ]
    pairs = double_labeled([vote for vote in votes if not vote.is_gold])
    if pairs:
        from ..data.judges import agreement
        from ..data.reliability import agreement_statistics

        result = agreement([first for first, _ in pairs], [second for _, second in pairs])
        graded = agreement_statistics(votes)
        kappa = "n/a" if math.isnan(result.kappa) else f"{result.kappa:.2f}"
        kappa_w = "n/a" if math.isnan(graded["kappa_weighted"]) else f"{graded['kappa_weighted']:.2f}"
        alpha = "n/a" if math.isnan(graded["alpha_ordinal"]) else f"{graded['alpha_ordinal']:.2f}"
        lines.append(
            f"**Agreement** on {result.n} pairs labeled by two annotators: raw {result.raw:.0%}, Cohen's κ {kappa} "
            f"(who won), weighted κ {kappa_w} and Krippendorff's α {alpha} (7-point scale, ordinal)."
        )
    else:
        lines.append("**Agreement:** no pair has been labeled by two annotators yet.")
    gold_votes = [vote for vote in votes if vote.is_gold]
    if gold_votes:
        correct = sum(vote.verdict == vote.gold_answer for vote in gold_votes)
        lines.append(
            f"**Gold pairs:** {len(gold_votes)} votes on pairs with a known answer, {correct / len(gold_votes):.0%} "
            "correct (they check annotators and are never exported as training data)."
        )
    with_rewards = [v for v in votes if v.winner and v.reward_a is not None and v.reward_b is not None and v.reward_a != v.reward_b]
    if with_rewards:
        agree = sum((v.reward_a > v.reward_b) == (v.winner == "a") for v in with_rewards)
        lines.append(
            f"**Reward model vs people:** the reward model prefers the voted winner in {agree} of {len(with_rewards)} "
            f"decisive votes ({agree / len(with_rewards):.0%})."
        )
    if store is not None:
        hidden = len(store.hidden())
        if hidden:
            lines.append(
                f"**Moderation:** {hidden} more vote(s) are hidden by the app's admins: kept in the store, left out of "
                "these counts, the leaderboard, the trust tables, exports and training."
            )
        lines.append(f"**Sync:** {store.sync_status()}")
    annotators = pd.DataFrame(
        {"annotator": list(counts["by_annotator"]), "votes": list(counts["by_annotator"].values())}
    )
    battles = battles_from_votes(votes)
    rows = leaderboard(battles, bootstrap_rounds=bootstrap_rounds)
    controlled = {row.model: row for row in leaderboard(battles, bootstrap_rounds=bootstrap_rounds, style_control=True)}
    board = pd.DataFrame(
        [
            {
                "rank": k,
                "model": row.model,
                "rating": round(row.rating, 1),
                "95% interval": f"{row.ci_low:.0f} – {row.ci_high:.0f}",
                "style-controlled rating": round(controlled[row.model].rating, 1),
                "style-controlled 95% interval": f"{controlled[row.model].ci_low:.0f} – {controlled[row.model].ci_high:.0f}",
                "battles": row.battles,
                "wins": row.wins,
                "losses": row.losses,
                "ties": row.ties,
            }
            for k, row in enumerate(rows, start=1)
        ],
        columns=["rank", "model", "rating", "95% interval", "style-controlled rating", "style-controlled 95% interval",
                 "battles", "wins", "losses", "ties"],
    )
    if battles:
        lines.append(style_markdown(votes, battles))
    return {
        "markdown": "\n\n".join(lines),
        "annotators": annotators,
        "leaderboard": board,
        "leaderboard_note": leaderboard_note(votes, battles, rows),
        "counts": counts,
    }


def style_markdown(votes: Sequence[Vote], battles: Sequence) -> str:
    """The style coefficients of the style-controlled fit, and how many votes had an answer naming its model."""
    from ..data.leaderboard import fit_bradley_terry_style, names_its_model

    fit = fit_bradley_terry_style(battles)
    named = sum(
        names_its_model(vote) for vote in votes if vote.source_a and vote.source_b and vote.source_a != vote.source_b
    )
    coefficients = ", ".join(f"{name} {value:+.2f}" for name, value in fit.coefficients.items())
    flag = (
        f" **{named} of {len(battles)} battles are flagged:** an answer names its own model, so the vote may rank the "
        "name, not the answer." if named else " No answer names its own model."
    )
    return (
        f"**Style:** log-odds per standard deviation of the normalised difference: {coefficients} (positive: the longer "
        f"/ more formatted answer tends to win). The style-controlled columns rate models at equal style.{flag}"
    )


def trust_summary(
    votes: Sequence[Vote], thresholds=None, narrowing_last: int = 10, bootstrap_rounds: int = 100
) -> dict[str, Any]:
    """The Data tab's trust tables: one row per annotator (:func:`prefkit.data.reliability.reliability_report`) and
    each source's leaderboard interval before and after the last ``narrowing_last`` battles."""
    import pandas as pd

    from ..data.leaderboard import battles_from_votes
    from ..data.reliability import reliability_report
    from .selection import interval_narrowing

    annotators = reliability_report(votes, thresholds)
    narrowing = interval_narrowing(battles_from_votes(votes), last=narrowing_last, bootstrap_rounds=bootstrap_rounds)

    def width(value: float) -> str:
        return "unrated" if math.isinf(value) else f"{value:.0f}"

    table = pd.DataFrame(
        [
            {
                "model": row.model,
                "votes": row.votes,
                "interval width before": width(row.width_before),
                "interval width now": width(row.width_now),
                "narrowed per vote": "n/a" if math.isinf(row.width_before) else f"{row.per_vote:.1f}",
            }
            for row in narrowing
        ],
        columns=["model", "votes", "interval width before", "interval width now", "narrowed per vote"],
    )
    flagged = int((annotators["flags"] != "").sum()) if len(annotators) else 0
    dropped = int((annotators["dropped by 'drop'"] == "yes").sum()) if len(annotators) else 0
    markdown = (
        f"**Annotators:** {len(annotators)}, {flagged} flagged, {dropped} below the thresholds (the 'drop' export "
        f"policy leaves them out). **Intervals:** widths (Elo points) of the 95% leaderboard intervals before the "
        f"last {narrowing_last} battles and now."
    )
    return {"markdown": markdown, "annotators": annotators, "narrowing": table}


MODERATION_TABLE_VOTES = 200
"""The moderation panel lists this many of the newest votes."""


def moderation_tables(votes: Sequence[Vote], moderation, latest: int = MODERATION_TABLE_VOTES) -> dict[str, Any]:
    """The moderation panel's tables: the ``latest`` newest of ``votes`` (every stored vote, hidden ones included),
    each with why it is hidden ("" when visible), and the moderation log (a
    :class:`~prefkit.data.votes.Moderation`), newest first. Pseudonyms only: the log stores no username."""
    import pandas as pd

    def prompt_text(prompt: Any) -> str:
        if isinstance(prompt, list):  # conversational: the last user turn
            turns = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
            prompt = turns[-1] if turns else ""
        text = " ".join(str(prompt).split())
        return text if len(text) <= 80 else text[:79] + "…"

    def why(vote: Vote) -> str:
        entry = moderation.hidden_by(vote)
        if entry is None:
            return ""
        scope = "this vote" if entry.vote_id else "all votes of its annotator"
        return f"hidden ({scope}): {entry.reason}"

    vote_columns = ["vote id", "time (UTC)", "annotator", "prompt", "verdict", "sources", "hidden"]
    newest = sorted(votes, key=lambda vote: vote.created_at, reverse=True)[:latest]
    vote_rows = pd.DataFrame(
        [
            {
                "vote id": vote.vote_id, "time (UTC)": vote.created_at[:19].replace("T", " "),
                "annotator": vote.annotator, "prompt": prompt_text(vote.prompt), "verdict": vote.verdict,
                "sources": f"{vote.source_a or '?'} / {vote.source_b or '?'}", "hidden": why(vote),
            }
            for vote in newest
        ],
        columns=vote_columns,
    )
    log_columns = ["time (UTC)", "action", "of", "reason", "by"]
    log_rows = pd.DataFrame(
        [
            {"time (UTC)": entry.created_at[:19].replace("T", " "), "action": entry.action, "of": entry.target,
             "reason": entry.reason, "by": entry.by}
            for entry in reversed(moderation.entries)
        ],
        columns=log_columns,
    )
    return {"votes": vote_rows, "log": log_rows}
