"""Answers shown as they are generated: a streamer that keeps every row of a batched ``generate`` call, and what the
page shows of it.

``model.generate(streamer=...)`` hands a streamer the prompt ids once (``[rows, prompt_length]``), then, after every
decoding step, the new token of every row (``[rows]``). :class:`CandidateStreamer` keeps each row's tokens up to its
first stop token and decodes them on request, the same way :class:`prefkit.sampling.HFSampler` decodes the finished
completion (special tokens skipped, whitespace stripped), so the last partial text of a row is the candidate's final
text. It only reads what ``generate`` hands it: sampling, its random numbers and its cancellation
(:class:`prefkit.sampling.Interrupt`) are untouched.

The app's handlers run the generation in a :class:`~prefkit.app.logic.GenerationJob` and, at each poll, put the
partial texts on the page.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence

from transformers.generation.streamers import BaseStreamer

from .logic import MODE_BEST_VS_SAMPLE, MODE_TWO_MODELS, MODE_TWO_SAMPLES, escape


class CandidateStreamer(BaseStreamer):
    """The text so far of every row of one or more batched ``generate`` calls, thread-safe.

    Each call's prompt ids (the first, two-dimensional ``put``) open ``rows`` new rows after the earlier ones, so
    rows keep the order of the candidates :func:`prefkit.best_of_n` returns (prompt-major, ``n`` per prompt). A row
    stops growing at its first token in ``stop_ids`` (what ``generate`` writes after it is padding).
    """

    def __init__(self, tokenizer, stop_ids: Sequence[int]):
        self.tokenizer = tokenizer
        self.stop_ids = set(int(token) for token in stop_ids)
        self._tokens: list[list[int]] = []
        self._finished: list[bool] = []
        self._first_row = 0  # rows of the call under way start here
        self._expect_prompt = True
        self._lock = threading.Lock()
        self.updates = 0
        """How many steps have been received (grows while the text grows; the page polls it)."""

    def put(self, value) -> None:
        with self._lock:
            if self._expect_prompt:  # a new generate call: its prompt ids, one row per candidate
                self._first_row = len(self._tokens)
                rows = int(value.shape[0])
                self._tokens.extend([] for _ in range(rows))
                self._finished.extend(False for _ in range(rows))
                self._expect_prompt = False
                return
            rows = len(self._tokens) - self._first_row
            steps = value.reshape(rows, -1).tolist()  # [rows] per step; [rows, k] when a step yields k tokens
            for offset, tokens in enumerate(steps):
                row = self._first_row + offset
                for token in tokens:
                    if self._finished[row]:
                        break
                    if token in self.stop_ids:
                        self._finished[row] = True
                    else:
                        self._tokens[row].append(int(token))
            self.updates += 1

    def end(self) -> None:
        with self._lock:
            self._expect_prompt = True  # a further generate call (the next batch) brings its own prompt ids

    @property
    def rows(self) -> int:
        with self._lock:
            return len(self._tokens)

    def token_counts(self) -> list[int]:
        """Tokens each row holds so far (its stop token not counted)."""
        with self._lock:
            return [len(tokens) for tokens in self._tokens]

    def texts(self) -> list[str]:
        """Each row's text so far, decoded like the finished completion."""
        with self._lock:
            snapshot = [list(tokens) for tokens in self._tokens]
        return [self.tokenizer.decode(tokens, skip_special_tokens=True).strip() for tokens in snapshot]


def streamer_for(slot) -> CandidateStreamer:
    """A streamer for a policy slot of the app (:class:`prefkit.app.models.PolicySlot`), stopping at its stop ids."""
    from ..sampling import stop_token_ids

    return CandidateStreamer(slot.tokenizer, stop_token_ids(slot.model, slot.tokenizer))


def partial_candidates_html(streamer: CandidateStreamer) -> str:
    """The Best-of-N candidates while they are generated, in sampling order, every text escaped (not yet scored)."""
    rows = [
        f"<tr><td>{index}</td><td>…</td><td>{count}</td>"
        f'<td class="prefkit-text">{escape(text)}</td></tr>'
        for index, (text, count) in enumerate(zip(streamer.texts(), streamer.token_counts()), start=1)
    ]
    return (
        '<table class="prefkit-candidates prefkit-streaming"><thead><tr><th>sample</th><th>reward</th><th>tokens so far'
        "</th><th>answer</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


class PairPreview:
    """What the Compare tab shows while a pair is sampled, without giving away which source is on which side.

    The side each answer will be shown on is drawn before sampling (``shown_left``, passed on to
    :func:`prefkit.app.logic.make_pair`), so an answer that streams on the left stays there:

    - two samples (random selection): sample 1 streams on side *a*, sample 2 on side *b*;
    - two models: the policy's sample on side *a*, then the second model's on side *b*;
    - best-of-N vs one sample, and margin selection: which two answers are shown depends on their rewards, known only
      once all are generated, so every answer streams in the note below the sides, in an order shuffled once at the
      start (the single sample is not always last), and the sides fill when the pair is chosen.
    """

    def __init__(self, mode: str, selection: str, shown_left: str, streamers: dict[str, CandidateStreamer],
                 rng: random.Random | None = None):
        self.mode, self.shown_left, self.streamers = mode, shown_left, streamers
        self.by_side = mode == MODE_TWO_MODELS or (mode == MODE_TWO_SAMPLES and selection != "margin")
        self._order: list[int] | None = None
        self._rng = rng or random.Random()

    def _side_texts(self) -> tuple[str, str]:
        policy = self.streamers["policy"].texts()
        if self.mode == MODE_TWO_MODELS:
            other = self.streamers["compare"].texts() if "compare" in self.streamers else []
            a, b = (policy[0] if policy else ""), (other[0] if other else "")
        else:
            a, b = (policy + ["", ""])[:2]
        return (a, b) if self.shown_left == "a" else (b, a)

    def view(self) -> tuple[str | None, str | None, str]:
        """``(left, right, note)``: texts for the two sides (None: leave them as they are) and a Markdown note."""
        if self.by_side:
            left, right = self._side_texts()
            return left, right, "*Generating…*"
        texts = self.streamers["policy"].texts()
        if self._order is None or len(self._order) != len(texts):
            self._order = list(range(len(texts)))
            self._rng.shuffle(self._order)
        what = "the best of them and one more sample" if self.mode == MODE_BEST_VS_SAMPLE else "the two closest in reward"
        lines = [f"*Generating {len(texts)} answers; the pair shown is {what}, picked when all are scored.*"]
        lines += [f'<pre class="prefkit-live">{escape(texts[index]) or "…"}</pre>' for index in self._order]
        return "", "", "\n\n".join(lines)
