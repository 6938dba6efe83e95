"""The Gradio Blocks: wiring only. Each event calls a function of :mod:`prefkit.app.logic` or the library.

Every event has a stable ``api_name`` so ``gradio_client`` and scripts can drive the app like a person would:

=================== ===========================================================================================
``/best_of_n``      prompt, n, temperature, max_new_tokens -> best answer, cost, chart data, table, full result
``/send_to_label``  rank_a, rank_b -> puts two Best-of-N candidates up for a vote (same session)
``/draw_prompt``    -> the next prompt of the session's prompt list
``/load_prompts``   file -> replaces the session's prompt list
``/new_pair``       prompt, mode, annotator -> two responses, order hidden, and a note (cut at the time limit)
``/vote_left``      strength, rewrite, annotator -> stores the vote (left better), reveals the sources
``/vote_right``     idem, right better;  ``/vote_tie``, ``/vote_both_bad`` likewise
``/data_summary``   -> counts, agreement, per-annotator table, leaderboard, why the leaderboard is empty
``/data_trust``     -> annotator reliability (gold accuracy, agreement, flags) and interval narrowing tables
``/export``         kind, file format, reliability policy -> a training dataset file of the votes
``/push_export``    kind, repo id, reliability policy -> pushes that dataset to the Hub (needs the server's token)
``/moderate``       action (hide / un-hide), target (vote id / annotator), the id or pseudonym, reason -> what was done,
                    the latest votes and the moderation log (admins)
``/moderation``     -> the latest votes (hidden ones marked) and the moderation log (admins)
``/status``         -> model loading status
=================== ===========================================================================================

Answers stream: ``/best_of_n`` and ``/new_pair`` are generator endpoints whose intermediate updates carry the texts
generated so far (``Client.submit(...)`` sees them; ``predict`` returns the final one). When the page opens, the
first pair is sampled at once (a load event in the generation queue), so it is there when the labeler gets to it.

Who is voting (:mod:`prefkit.app.auth`): with Hugging Face sign-in (a Space with ``hf_oauth: true``) handlers
receive the ``gr.OAuthProfile``; votes need it, and the Data tab's exports, trust tables and moderation (hiding votes,
which are never deleted: :meth:`~prefkit.data.votes.VoteStore.hide`) need an admin (``settings.admins``), as do
starting, cancelling and pushing Train-tab runs. Rate limits and daily quotas answer with a message in the page, not
an error.

Every output has a label, so ``Client.view_api()`` names what each endpoint returns.

Under load: the app holds one copy of each model, so the events that generate (Best-of-N, every new pair) share
one queue (:data:`GENERATION_QUEUE`, one at a time; the page shows each waiting request its position and an
estimate) while votes, prompt lists and the Data tab run at once beside them. A generation is a Gradio generator
handler that waits for a :class:`~prefkit.app.logic.GenerationJob`: when its client disconnects Gradio closes it,
which stops the sampler within a token, and ``settings.max_generation_seconds`` bounds every generation.
"""

import functools
import html
import inspect
import random
import tempfile
import time
from pathlib import Path

import gradio as gr

from ..bon import PromptTooLongError
from ..data.reliability import RELIABILITY_POLICIES, GoldPairError, apply_reliability_policy, read_gold_pairs
from ..data.validation import PreferenceDataError
from ..data.votes import EXPORT_KINDS, MAX_REASON_CHARS, VoteError, VoteStore, votes_to_rows
from . import auth, logic
from .logic import (
    MODE_BEST_VS_SAMPLE,
    MODE_TWO_MODELS,
    MODE_TWO_SAMPLES,
    STRENGTH_CHOICES,
    AppError,
    DailyQuota,
    GenerationJob,
    LimitReached,
    Pair,
    RateLimiter,
)
from .models import AppModels, ModelsNotReady
from .settings import AppSettings
from .train_tab import build_train_tab
from .streaming import PairPreview, partial_candidates_html, streamer_for

CSS = """
.prefkit-candidates { width: 100%; border-collapse: collapse; font-size: 0.92em; }
.prefkit-candidates th, .prefkit-candidates td { border-bottom: 1px solid var(--border-color-primary); padding: 6px; vertical-align: top; text-align: left; }
.prefkit-candidates td.prefkit-text { white-space: pre-wrap; }
.prefkit-candidates tr.prefkit-best { background: rgba(34, 197, 94, 0.15); font-weight: 600; }
.prefkit-best-box textarea { border: 2px solid rgb(34, 197, 94) !important; }
"""

EXPORT_KIND_LABELS = {
    "DPO pairs (prompt / chosen / rejected / margin when graded)": "dpo",
    "Reward-model pairs (prompt / chosen / rejected / margin)": "reward",
    "KTO unpaired (prompt / completion / label)": "kto",
}

STREAM_POLL_SECONDS = 0.15
"""How often a generating handler puts the texts so far on the page (and notices a client that left)."""

MODERATION_ACTION_LABELS = {"hide": "hide", "un-hide": "unhide"}
"""The moderation radio's choices -> :meth:`VoteStore.hide` / :meth:`VoteStore.unhide` (the API takes "unhide" too)."""
MODERATION_TARGETS = ("vote id", "annotator")

GENERATION_QUEUE = "generation"
"""The concurrency group of every event that samples from a model: one at a time, in order, with queue positions."""

_USER_ERRORS = (AppError, ModelsNotReady, VoteError, PreferenceDataError, PromptTooLongError, GoldPairError, ValueError)


def _page_error(error: Exception) -> gr.Error:
    expected = isinstance(
        error, (AppError, ModelsNotReady, VoteError, PromptTooLongError, PreferenceDataError, GoldPairError)
    )
    return gr.Error(html.escape(str(error)), print_exception=not expected)


def _user_errors(fn):
    """Problems the user can fix become a readable (escaped) message in the page instead of a traceback.

    A generator handler stays a generator (Gradio tells them apart by their code), and closing the wrapper closes
    the handler inside it."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except _USER_ERRORS as error:
                raise _page_error(error) from None

        return generator_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _USER_ERRORS as error:
            raise _page_error(error) from None

    return wrapper


def theme():
    return gr.themes.Soft(primary_hue="green")


def build_app(
    policy=None,
    tokenizer=None,
    reward=None,
    store: VoteStore | None = None,
    settings: AppSettings | None = None,
    *,
    models: AppModels | None = None,
    compare=None,
    prompts: list[str] | None = None,
    seed: int | None = None,
    gold_pairs: list | None = None,
) -> gr.Blocks:
    """Build the app from objects it is given (nothing is loaded here).

    Args:
        policy, tokenizer, reward: models in memory (the reward: a function, a ``RewardModel``, an ``ImplicitReward``
            or a judge; see :func:`prefkit.best_of_n`). Or pass ``models`` (e.g. loading in the background).
        store: where votes go (default: a :class:`~prefkit.data.votes.VoteStore` in ``settings.data_dir``).
        settings: limits and defaults (:class:`~prefkit.app.settings.AppSettings`).
        compare: ``(model, tokenizer)`` of a second policy for "two models" pairs.
        prompts: the default prompt list of the labeling tab (default: ``settings.prompts_file`` or the bundled one).
        seed: seeds the left/right shuffling and relabel draws (tests).
        gold_pairs: pairs with known answers (:class:`prefkit.data.reliability.GoldPair`) mixed into list-drawn
            pairs at ``settings.gold_rate`` (default: ``settings.gold_file``, read here, or none).
    """
    settings = settings or AppSettings()
    if models is None:
        if policy is None or tokenizer is None or reward is None:
            raise ValueError("build_app needs policy, tokenizer and reward, or models=AppModels(...).")
        models = AppModels.from_objects(policy, tokenizer, reward, compare=compare)
    store = store or VoteStore(settings.data_dir)
    if prompts is None:
        prompts = (
            logic.read_prompt_list(settings.prompts_file, settings.max_prompt_chars)
            if settings.prompts_file
            else logic.bundled_prompts()
        )
    if gold_pairs is None:
        gold_pairs = read_gold_pairs(settings.gold_file) if settings.gold_file else []
    rng = random.Random(seed)
    generation_limit = RateLimiter(settings.generations_per_minute, what="generations")
    global_generation_limit = RateLimiter(
        settings.global_generations_per_minute, what="generations", scope="for everyone using this app together"
    )
    vote_limit = RateLimiter(settings.votes_per_minute, what="votes")
    vote_quota = DailyQuota(  # seeded with today's stored votes: a restart hands out no fresh quota
        settings.votes_per_day, "votes",
        # hidden votes count too: moderation does not hand out a fresh quota
        already=[(vote.annotator, vote.created_at) for vote in store.read(include_hidden=True)]
        if settings.votes_per_day else (),
    )
    generation_quota = DailyQuota(settings.generations_per_day, "generations")
    login = settings.login_mode
    admins = settings.admin_usernames
    if login == "huggingface":
        import importlib.util

        if importlib.util.find_spec("itsdangerous") is None:  # Gradio's OAuth session middleware needs it
            raise ImportError(
                "Signing in with Hugging Face needs Gradio's OAuth extra: pip install 'gradio[oauth]' (a Space with "
                "hf_oauth: true installs it), or run with --login name."
            )
    modes = [MODE_BEST_VS_SAMPLE, MODE_TWO_SAMPLES, MODE_TWO_MODELS]
    token_cap = max(settings.max_new_tokens, 512)

    def session_of(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "local"

    def new_label_state() -> dict:
        return {"prompts": list(prompts), "next": 0, "last_drawn": None, "saved": 0}

    def who(profile, name: str | None, request) -> auth.Annotator:
        return auth.identify(profile, name, session_of(request), settings.salt, login)

    def check_generation_limits(annotator: auth.Annotator, request) -> None:
        """The per-session and global rate limits and the annotator's daily quota (raise :class:`LimitReached`)."""
        generation_limit.check(session_of(request))
        global_generation_limit.check("everyone")
        generation_quota.check(annotator.id)

    # ---- Best-of-N -----------------------------------------------------------------------------------------------
    @_user_errors
    def run_best_of_n(
        prompt: str, n: float, temperature: float, max_new_tokens: float, request: gr.Request,
        profile: gr.OAuthProfile | None = None,
    ):
        models.require()
        prompt = logic.check_prompt(prompt, settings.max_prompt_chars)
        n, max_new_tokens = int(n), int(max_new_tokens)
        if not 1 <= n <= settings.max_n:
            raise AppError(f"N must be between 1 and {settings.max_n}.")
        if not 1 <= max_new_tokens <= token_cap:
            raise AppError(f"Max new tokens must be between 1 and {token_cap}.")
        try:
            check_generation_limits(who(profile, None, request), request)
        except LimitReached as limit:  # a message where the cost goes, the page otherwise unchanged
            yield gr.skip(), f"**{html.escape(str(limit), quote=False)}**", *[gr.skip()] * 6
            return
        from ..bon import best_of_n

        streamer = streamer_for(models.policy)

        def work(should_stop):
            with models.generate_lock:
                return best_of_n(
                    models.policy.model, models.policy.tokenizer, models.reward, [prompt], n=n,
                    temperature=float(temperature), top_p=settings.top_p, max_new_tokens=max_new_tokens, progress=False,
                    max_time=settings.max_generation_seconds, should_stop=should_stop, streamer=streamer,
                )[0]

        # a client that leaves closes this generator, which stops the sampler; each step shows the texts so far
        with GenerationJob(work, poll_seconds=STREAM_POLL_SECONDS) as job:
            shown = -1
            for elapsed in job.running():
                progress = logic.progress_markdown(f"Sampling {n} answers", elapsed, settings.max_generation_seconds)
                if streamer.updates == shown:
                    yield gr.skip(), progress, *[gr.skip()] * 6
                    continue
                shown = streamer.updates
                yield gr.skip(), progress, gr.skip(), partial_candidates_html(streamer), *[gr.skip()] * 4
            result = job.result()
        ranks = [str(rank) for rank in range(1, n + 1)]
        cut = "; cut at the time limit" if result.interrupted_by == "max_time" else ""
        yield (
            gr.Textbox(value=result.best.text, label=f"Best of {n} (reward {result.best.reward:.4f}{cut})"),
            logic.cost_markdown(result),
            logic.reward_frame(result),
            logic.candidates_html(result),
            result.to_dict(),
            result,
            gr.Dropdown(choices=ranks, value=ranks[0]),
            gr.Dropdown(choices=ranks, value=ranks[-1]),
        )

    @_user_errors
    def send_to_label(result, rank_a: str, rank_b: str, state: dict):
        if result is None:
            raise AppError("Run Best-of-N first, then pick two candidates.")
        pair = logic.pair_from_candidates(result, int(rank_a), int(rank_b), models.policy.name, rng)
        pair.shown_at = time.time()
        state = dict(state or new_label_state())
        state["last_drawn"] = None
        return (
            pair.to_dict(), pair.left, pair.right, pair.prompt, state,
            "Two Best-of-N candidates are up for a vote (their ranks stay hidden until you vote).",
            gr.Tabs(selected="label"), logic.pair_note(pair),
        )

    # ---- Compare & label ------------------------------------------------------------------------------------------
    def _draw(state: dict) -> tuple[str, dict]:
        state = dict(state or new_label_state())
        if not state["prompts"]:
            raise AppError("The prompt list is empty: load one, or type a prompt.")
        prompt = state["prompts"][state["next"] % len(state["prompts"])]
        state["next"] += 1
        state["last_drawn"] = prompt
        return prompt, state

    @_user_errors
    def draw_prompt(state: dict):
        prompt, state = _draw(state)
        return prompt, state

    @_user_errors
    def load_prompts(file, state: dict):
        if file is None:
            raise AppError("Choose a .txt (one prompt per line) or .jsonl (a 'prompt' field per line) file.")
        path = Path(file if isinstance(file, str) else file.name)
        loaded = logic.read_prompt_list(path, settings.max_prompt_chars)
        state = dict(state or new_label_state())
        state.update(prompts=loaded, next=0, last_drawn=None)
        return state, f"Loaded {len(loaded)} prompts from {html.escape(path.name)}."

    def _new_pair(prompt: str, mode: str, state: dict, annotator: auth.Annotator, request, after_vote: bool):
        """A generator: the answers as they are generated, then the pair (see :class:`GenerationJob`)."""
        models.require()
        state = dict(state or new_label_state())
        prompt = (prompt or "").strip()
        from_list = not prompt or (after_vote and prompt == state.get("last_drawn"))
        try:
            check_generation_limits(annotator, request)
        except LimitReached as limit:  # a message in the pair's note; what is on the page stays
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"**{html.escape(str(limit), quote=False)}**", gr.skip()
            return
        if from_list and settings.relabel_fraction > 0 and rng.random() < settings.relabel_fraction:
            pair = logic.relabel_pair(store.read(), annotator.id, rng)
            if pair is not None and isinstance(pair.prompt, str):
                state["last_drawn"] = pair.prompt
                pair.shown_at = time.time()
                yield pair.to_dict(), pair.left, pair.right, pair.prompt, logic.pair_note(pair), state
                return
        if from_list and gold_pairs and settings.gold_rate > 0 and rng.random() < settings.gold_rate:
            pair = logic.gold_pair(gold_pairs, rng)  # shown like any pair: nothing on the page says it is gold
            state["last_drawn"] = pair.prompt
            pair.shown_at = time.time()
            yield pair.to_dict(), pair.left, pair.right, pair.prompt, "", state
            return
        if from_list:
            prompt, state = _draw(state)
        prompt = logic.check_prompt(prompt, settings.max_prompt_chars)
        chosen_note = ""
        if settings.pair_selection == "uncertainty":
            mode, chosen_note = _least_known_mode(mode)

        shown_left = rng.choice("ab")  # drawn before sampling, so an answer streams on the side it stays on
        streamers = {"policy": streamer_for(models.policy)}
        if models.compare is not None:
            streamers["compare"] = streamer_for(models.compare)
        preview = PairPreview(mode, settings.pair_selection, shown_left, streamers)

        def work(should_stop):
            return logic.make_pair(
                models, prompt, mode, n=settings.n, temperature=settings.temperature, top_p=settings.top_p,
                max_new_tokens=settings.max_new_tokens, rng=rng, max_seconds=settings.max_generation_seconds,
                should_stop=should_stop, selection=settings.pair_selection, shown_left=shown_left, streamers=streamers,
            )

        # a client that leaves closes this generator, which stops the sampler. The first step clears the pair held
        # for voting: the sides now show answers being generated, and a vote must not land on the previous pair.
        with GenerationJob(work, poll_seconds=STREAM_POLL_SECONDS) as job:
            shown = None
            for elapsed in job.running():
                progress = logic.progress_markdown("Sampling a pair", elapsed, settings.max_generation_seconds)
                updates = sum(streamer.updates for streamer in streamers.values())
                if updates == shown:
                    yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
                    continue
                first, shown = shown is None, updates
                left_text, right_text, live = preview.view()
                yield (None if first else gr.skip()), left_text, right_text, prompt, f"{progress}  \n{live}", gr.skip()
            pair = job.result()
        pair.shown_at = time.time()
        note = "  \n".join(part for part in (chosen_note, logic.pair_note(pair)) if part)
        yield pair.to_dict(), pair.left, pair.right, prompt, note, state

    def _least_known_mode(mode: str) -> tuple[str, str]:
        """Uncertainty selection: the pair mode whose two sources have the widest leaderboard intervals."""
        from ..data.leaderboard import battles_from_votes, leaderboard
        from .selection import widest_interval_pair

        policy_name = models.policy.name
        candidates = {}
        if settings.n >= 2:
            candidates[MODE_BEST_VS_SAMPLE] = (f"{policy_name} best-of-{settings.n}", policy_name)
        if models.compare is not None:
            candidates[MODE_TWO_MODELS] = (policy_name, models.compare.name)
        if not candidates:
            return mode, ""
        rows = leaderboard(battles_from_votes(store.read()), bootstrap_rounds=50)
        chosen = widest_interval_pair(rows, candidates)
        return chosen, f"*Active selection: a “{chosen}” pair, the model pair whose ratings are least certain.*"

    @_user_errors
    def new_pair(prompt: str, mode: str, annotator: str, state: dict, request: gr.Request,
                 profile: gr.OAuthProfile | None = None):
        yield from _new_pair(prompt, mode, state, who(profile, annotator, request), request, after_vote=False)

    @_user_errors
    def next_pair(prompt: str, mode: str, annotator: str, state: dict, request: gr.Request,
                  profile: gr.OAuthProfile | None = None):
        if (state or {}).get("refused"):  # the vote was not stored: its pair stays up, nothing new is sampled
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        yield from _new_pair(prompt, mode, state, who(profile, annotator, request), request, after_vote=True)

    @_user_errors
    def first_pair(mode: str, annotator: str, state: dict, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """On page load: sample the first pair at once (after the models load), so it is ready when wanted."""
        while not models.ready.wait(0.5):
            if models.error:  # the status line at the top says what failed
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), "", gr.skip()
                return
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), "*The first pair is sampled once the models are loaded.*", gr.skip()
        yield from _new_pair("", mode, state, who(profile, annotator, request), request, after_vote=False)

    def _vote(side: str, pair_record, strength, rewrite, name, state, request, profile):
        if not pair_record:
            raise AppError("There is no pair to vote on: press 'New pair' (or vote again once the next pair is shown).")
        if rewrite:
            logic.check_length(rewrite, settings.max_answer_chars, "rewritten answer")
        if name and len(name) > 64:
            raise AppError("The annotator name is limited to 64 characters.")
        annotator = who(profile, name, request)
        state = dict(state or new_label_state())

        def refused(message: str):  # the pair stays up to vote on later; next_pair sees "refused" and samples nothing
            state["refused"] = True
            return pair_record, f"**{html.escape(message, quote=False)}**", gr.skip(), gr.skip(), gr.skip(), gr.skip(), state

        if login == "huggingface" and not annotator.signed_in:
            return refused(
                "Sign in with Hugging Face (the button at the top) to vote. Votes are stored under a pseudonym, never "
                "your username."
            )
        try:
            vote_limit.check(session_of(request))
            vote_quota.check(annotator.id)
        except LimitReached as limit:
            return refused(str(limit))
        pair = Pair.from_dict(pair_record)
        vote = logic.vote_from_pair(
            pair, side, strength=strength, rewrite=rewrite, annotator=annotator.id,
            session=logic.annotator_id("", session_of(request), settings.salt), now=time.time(),
        )
        store.append(vote)  # durable (fsynced) before the page says "saved"
        state["saved"] = state.get("saved", 0) + 1
        state["refused"] = False
        return None, logic.reveal_markdown(pair, vote, state["saved"]), "", "", STRENGTH_CHOICES[0], "", state

    @_user_errors
    def vote_left(pair: dict, strength: str, rewrite: str, annotator: str, state: dict, request: gr.Request,
                  profile: gr.OAuthProfile | None = None):
        return _vote("left", pair, strength, rewrite, annotator, state, request, profile)

    @_user_errors
    def vote_right(pair: dict, strength: str, rewrite: str, annotator: str, state: dict, request: gr.Request,
                   profile: gr.OAuthProfile | None = None):
        return _vote("right", pair, strength, rewrite, annotator, state, request, profile)

    @_user_errors
    def vote_tie(pair: dict, strength: str, rewrite: str, annotator: str, state: dict, request: gr.Request,
                 profile: gr.OAuthProfile | None = None):
        return _vote("tie", pair, strength, rewrite, annotator, state, request, profile)

    @_user_errors
    def vote_both_bad(pair: dict, strength: str, rewrite: str, annotator: str, state: dict, request: gr.Request,
                      profile: gr.OAuthProfile | None = None):
        return _vote("both_bad", pair, strength, rewrite, annotator, state, request, profile)

    # ---- Data -----------------------------------------------------------------------------------------------------
    @_user_errors
    def data_summary():
        result = logic.summary(store.read(), store)
        return result["markdown"], result["annotators"], result["leaderboard"], result["leaderboard_note"]

    def require_admin(profile, request, what: str) -> None:
        if not auth.is_admin(who(profile, None, request), admins, login):
            raise AppError(
                f"Only the app's admins can {what}. Sign in with Hugging Face as one of them (the Space variable "
                "PREFKIT_ADMINS lists their usernames)."
            )

    @_user_errors
    def data_trust(request: gr.Request, profile: gr.OAuthProfile | None = None):
        if not auth.is_admin(who(profile, None, request), admins, login):  # per-annotator tables: admins only
            return "*The annotator and interval tables are for the app's admins (PREFKIT_ADMINS).*", None, None
        result = logic.trust_summary(store.read(), settings.reliability_thresholds)
        return result["markdown"], result["annotators"], result["narrowing"]

    @_user_errors
    def moderation(request: gr.Request, profile: gr.OAuthProfile | None = None):
        """The latest votes (hidden ones marked, with why) and the moderation log: admins only."""
        if not auth.is_admin(who(profile, None, request), admins, login):
            return None, None
        tables = logic.moderation_tables(store.read(include_hidden=True), store.moderation())
        return tables["votes"], tables["log"]

    @_user_errors
    def moderate(action: str, target_kind: str, target: str, reason: str, request: gr.Request = None,
                 profile: gr.OAuthProfile | None = None):
        """Hide or un-hide one vote, or every vote of one annotator pseudonym, with a reason (admins only). Nothing is
        deleted: the action is appended to the moderation log, and every count, table and export leaves hidden
        votes out."""
        require_admin(profile, request, "hide or un-hide votes")
        action = {**MODERATION_ACTION_LABELS, "unhide": "unhide"}.get((action or "").strip().lower())
        if action is None:
            raise AppError(f"Choose an action: {' or '.join(MODERATION_ACTION_LABELS)}.")
        kind = (target_kind or "").strip().lower()
        if kind not in MODERATION_TARGETS:
            raise AppError(f"Choose what to {action}: {' or '.join(MODERATION_TARGETS)}.")
        target = (target or "").strip()
        if not target:
            raise AppError(f"Give the {kind} to {action.replace('unhide', 'un-hide')}.")
        by = who(profile, None, request).id  # the admin's pseudonym, never a username
        target_field = {"vote_id": target} if kind == "vote id" else {"annotator": target}
        moderate_fn = store.hide if action == "hide" else store.unhide
        entry = moderate_fn(**target_field, reason=reason or "", by=by)
        hidden = len(store.hidden())
        done = "Hid" if action == "hide" else "Un-hid"
        message = (f"{done} the {html.escape(entry.target)} ({html.escape(entry.reason)}). {hidden} vote(s) are hidden "
                   "now: they stay in the store, and counts, the leaderboard, the trust tables, exports and training "
                   "leave them out.")
        tables = logic.moderation_tables(store.read(include_hidden=True), store.moderation())
        return message, tables["votes"], tables["log"]

    def access(request: gr.Request, profile: gr.OAuthProfile | None = None):
        """On page load: who is signed in, and whether the admin-only parts (the Data tab's admin section, the Train
        tab's controls) show."""
        annotator = who(profile, None, request)
        admin = auth.is_admin(annotator, admins, login)
        train_outputs = train_tab.access(admin, login) if train_tab is not None else []
        if login != "huggingface":
            return gr.skip(), gr.Column(visible=True), "", *train_outputs
        if annotator.signed_in:
            line = (f"Signed in as **{html.escape(annotator.username or '')}**; your votes are stored as "
                    f"`{annotator.id}`, never your username.")
        else:
            line = "**Sign in with Hugging Face to vote** (your votes are stored under a pseudonym, never your username)."
        note = "" if admin else "*Exports, pushes, moderation and the annotator tables are for the app's admins.*"
        return line, gr.Column(visible=admin), note, *train_outputs

    def _policy_rows(kind: str, policy: str | None):
        """Training rows of the visible votes under a reliability policy, the sentence that says which policy, and
        how many votes moderation hid (left out)."""
        policy = (policy or settings.export_reliability).strip().lower()
        if policy not in RELIABILITY_POLICIES:
            raise AppError(f"Unknown reliability policy {policy!r}; choose one of {', '.join(RELIABILITY_POLICIES)}.")
        every_vote = store.read(include_hidden=True)
        visible = store.moderation().visible(every_vote)
        applied = apply_reliability_policy(visible, policy, settings.reliability_thresholds)
        rows = votes_to_rows(applied.votes, kind=kind, weights=applied.weights if policy == "weight" else None)
        return rows, applied.description, len(every_vote) - len(visible)

    @_user_errors
    def export(kind_label: str, file_format: str, policy: str | None = None, request: gr.Request = None,
               profile: gr.OAuthProfile | None = None):
        require_admin(profile, request, "export the votes")
        kind = EXPORT_KIND_LABELS.get(kind_label, kind_label)
        if kind not in EXPORT_KINDS:
            raise AppError(f"Unknown export kind {kind_label!r}.")
        suffix = ".parquet" if "parquet" in (file_format or "").lower() else ".jsonl"
        from ..data.export import export_pairs, moderation_sentence

        rows, description, hidden = _policy_rows(kind, policy)
        if not rows:
            raise AppError("No votes make training rows yet (ties alone make no pair). Vote first.")
        folder = Path(tempfile.mkdtemp(prefix="prefkit-export-"))
        path = export_pairs(rows, folder / f"prefkit-votes-{kind}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}")
        return str(path), f"Exported {len(rows)} rows ({kind}). {description} {moderation_sentence(hidden)}"

    @_user_errors
    def push_export(kind_label: str, repo_id: str, policy: str | None = None, request: gr.Request = None,
                    profile: gr.OAuthProfile | None = None):
        require_admin(profile, request, "push the votes to the Hub")
        kind = EXPORT_KIND_LABELS.get(kind_label, kind_label)
        repo_id = (repo_id or "").strip()
        if not repo_id or "/" not in repo_id:
            raise AppError("Give the dataset repo as 'user/name'.")
        if not settings.hub_token:
            raise AppError("The server has no Hugging Face token: start the app with HF_TOKEN set to push.")
        from ..data.export import push_dataset_to_hub

        rows, description, hidden = _policy_rows(kind, policy)
        if not rows:
            raise AppError("No votes make training rows yet.")
        info = push_dataset_to_hub(rows, repo_id, token=settings.hub_token, private=True, reliability=description,
                                   hidden_votes=hidden)
        return f"Pushed {len(rows)} rows to https://huggingface.co/datasets/{html.escape(repo_id)} ({html.escape(str(getattr(info, 'commit_url', '')))})."

    def model_status() -> str:
        """How far model loading got ("Ready: ..." once done)."""
        return models.status()

    def poll_status():
        return models.status(), gr.Timer(active=not (models.ready.is_set() or models.error))

    # ---- Layout ---------------------------------------------------------------------------------------------------
    with gr.Blocks(title=settings.title) as demo:
        gr.Markdown(
            f"# {html.escape(settings.title)}\n"
            "Sample N answers and let a reward model pick the best; compare two answers and say which is better. "
            "Every vote is saved at once and can be exported as a DPO or reward-model dataset."
        )
        status = gr.Markdown(models.status(), label="Model status", show_label=False, elem_id="prefkit-status")
        with gr.Row(visible=login == "huggingface"):
            # Only with sign-in: a LoginButton makes Gradio add its OAuth routes (mocked from the local HF login off a
            # Space), which a local run without a Hub login could not start.
            if login == "huggingface":
                gr.LoginButton(scale=0)
            who_md = gr.Markdown(label="Signed in as", show_label=False, elem_id="prefkit-who")
        timer = gr.Timer(1.0, active=not models.ready.is_set())
        bon_state = gr.State(None)
        pair_state = gr.State(None)
        label_state = gr.State(new_label_state())

        with gr.Tabs(selected="bon") as tabs:
            with gr.Tab("Best-of-N", id="bon"):
                bon_prompt = gr.Textbox(label="Prompt", lines=3, max_length=settings.max_prompt_chars, elem_id="bon-prompt")
                with gr.Row():
                    n_slider = gr.Slider(1, settings.max_n, value=settings.n, step=1, label="N (samples)")
                    temperature = gr.Slider(0.05, 1.5, value=settings.temperature, step=0.05, label="Temperature")
                    max_tokens = gr.Slider(8, token_cap, value=settings.max_new_tokens, step=8, label="Max new tokens")
                run = gr.Button("Sample N and rank", variant="primary", elem_id="bon-run")
                gr.Examples([[p] for p in prompts[:5]], inputs=[bon_prompt], label="Examples")
                best_box = gr.Textbox(label="Best answer", interactive=False, lines=4, elem_classes="prefkit-best-box", buttons=["copy"])
                cost = gr.Markdown(label="Cost", show_label=False)
                with gr.Row():
                    chart = gr.BarPlot(
                        x="candidate", y="reward", color="best", sort="-y", label="Reward of each candidate", height=260,
                        color_map={"best": "#22c55e", "other": "#94a3b8"},
                    )
                table = gr.HTML(label="Ranked candidates (HTML table)", elem_id="bon-table")
                with gr.Accordion("Full result (JSON)", open=False):
                    details = gr.JSON(label="Full result", show_label=False)
                with gr.Row():
                    rank_a = gr.Dropdown(choices=[], label="Candidate (rank)", allow_custom_value=True)
                    rank_b = gr.Dropdown(choices=[], label="against candidate (rank)", allow_custom_value=True)
                    send = gr.Button("Compare these two in the labeling tab")

            with gr.Tab("Compare & label", id="label"):
                with gr.Row():
                    label_prompt = gr.Textbox(label="Prompt (type one, or leave empty to draw from the prompt list)", lines=2, scale=3, elem_id="label-prompt")
                    with gr.Column(scale=1):
                        annotator = gr.Textbox(
                            label="Your name or handle (optional; stored as a pseudonym)", max_length=64,
                            elem_id="annotator", visible=login != "huggingface",  # signed in, the profile says who
                        )
                        draw = gr.Button("Next prompt from the list")
                with gr.Accordion("Prompt list", open=False):
                    prompt_info = gr.Markdown(f"Prompt list: {len(prompts)} prompts.", label="Prompt list", show_label=False)
                    prompt_file = gr.File(label="Load a prompt list (.txt: one per line; .jsonl: a 'prompt' field)", file_types=[".txt", ".jsonl", ".json"])
                with gr.Row():
                    mode = gr.Radio(
                        [m for m in modes if m != MODE_TWO_MODELS or models.compare is not None or settings.compare_policy],
                        # margin selection chooses among N samples of the policy: start on the mode it applies to
                        value=MODE_BEST_VS_SAMPLE if settings.n >= 2 and settings.pair_selection != "margin"
                        else MODE_TWO_SAMPLES, label="Pair", scale=3,
                    )
                    make = gr.Button("New pair", variant="primary", scale=1, elem_id="new-pair")
                with gr.Row(equal_height=True):
                    left = gr.Textbox(label="Response A", interactive=False, lines=8, elem_id="response-left")
                    right = gr.Textbox(label="Response B", interactive=False, lines=8, elem_id="response-right")
                pair_note = gr.Markdown(label="Note on the pair", show_label=False, elem_id="pair-note")
                with gr.Row():
                    strength = gr.Radio(STRENGTH_CHOICES, value=STRENGTH_CHOICES[0], label="How much better? (optional)", scale=2)
                    rewrite = gr.Textbox(label="Write a better answer (optional; it becomes a chosen answer)", lines=2, max_length=settings.max_answer_chars, scale=3)
                with gr.Row():
                    left_better = gr.Button("A is better", elem_id="vote-left", variant="secondary")
                    right_better = gr.Button("B is better", elem_id="vote-right", variant="secondary")
                    tie = gr.Button("Tie", elem_id="vote-tie")
                    both_bad = gr.Button("Both bad", elem_id="vote-both-bad")
                reveal = gr.Markdown(label="Vote result", show_label=False, elem_id="vote-reveal")

            with gr.Tab("Data", id="data") as data_tab:
                refresh = gr.Button("Refresh")
                summary_md = gr.Markdown(label="Summary", show_label=False)
                # the leaderboard takes the full width: beside another table its style-controlled columns were cut
                leaderboard_note = gr.Markdown(label="Leaderboard note", show_label=False, elem_id="leaderboard-note")
                leaderboard_df = gr.Dataframe(
                    label="Leaderboard (Bradley-Terry, 95% bootstrap intervals)", interactive=False,
                    elem_id="leaderboard", wrap=True,
                )
                annotators_df = gr.Dataframe(label="Votes per annotator (pseudonyms)", interactive=False)
                admin_note = gr.Markdown(label="Admin note", show_label=False, elem_id="admin-note")
                # the trust tables, exports and pushes: admins only (the handlers check too)
                with gr.Column(visible=login != "huggingface", elem_id="admin-panel") as admin_panel:
                    with gr.Accordion("Trust: annotators and intervals", open=False):
                        trust_md = gr.Markdown(label="Trust summary", show_label=False, elem_id="trust-summary")
                        # wrapped headers: the table has 13 columns and its flags (duplicates, position bias) are
                        # the right-most ones, which a scrolled-off table hides
                        reliability_df = gr.Dataframe(
                            label="Annotator reliability (gold accuracy, agreement, flags)", interactive=False, wrap=True,
                            elem_id="annotator-reliability",
                        )
                        narrowing_df = gr.Dataframe(label="Leaderboard interval width before / after the last votes", interactive=False)
                    with gr.Row():
                        export_kind = gr.Radio(list(EXPORT_KIND_LABELS), value=list(EXPORT_KIND_LABELS)[0], label="Export as")
                        export_format = gr.Radio(["JSONL", "Parquet"], value="JSONL", label="File")
                        export_policy = gr.Radio(
                            list(RELIABILITY_POLICIES), value=settings.export_reliability,
                            label="Reliability policy (keep all / weight by reliability / drop unreliable annotators)",
                        )
                    with gr.Row():
                        export_button = gr.Button("Export for download")
                        export_file = gr.File(label="Dataset", interactive=False, height=120)
                    export_info = gr.Markdown(label="Export status", show_label=False)
                    with gr.Row():
                        repo = gr.Textbox(label="Push to Hub dataset repo (user/name)", value=(settings.hub_dataset or "") + ("-pairs" if settings.hub_dataset else ""))
                        push = gr.Button("Push to Hub")
                    with gr.Accordion("Moderation: hide or un-hide votes", open=False):
                        gr.Markdown(
                            "Hide one vote (its id) or every vote of one annotator (a pseudonym from the tables), "
                            "with a reason. A hidden vote is never deleted: it stays in the vote store and the "
                            "moderation log says who hid it and why; counts, the leaderboard, the trust tables, exports "
                            "and training leave it out until it is shown again."
                        )
                        with gr.Row():
                            moderation_action = gr.Radio(list(MODERATION_ACTION_LABELS), value="hide", label="Action")
                            moderation_kind = gr.Radio(list(MODERATION_TARGETS), value="vote id", label="Of")
                            moderation_target = gr.Textbox(
                                label="Vote id, or annotator pseudonym (ann-...)", elem_id="moderation-target"
                            )
                            moderation_reason = gr.Textbox(
                                label="Reason (kept in the moderation log)", max_length=MAX_REASON_CHARS,
                                elem_id="moderation-reason",
                            )
                        moderate_button = gr.Button("Apply", elem_id="moderate")
                        moderation_info = gr.Markdown(label="Moderation status", show_label=False, elem_id="moderation-info")
                        moderation_votes_df = gr.Dataframe(
                            label="Latest votes (newest first; hidden ones say why)", interactive=False, wrap=True
                        )
                        moderation_log_df = gr.Dataframe(label="Moderation log (newest first)", interactive=False, wrap=True)
            train_tab = None
            if settings.train_tab_enabled:  # train on these votes in a background process (prefkit.app.train_tab)
                train_tab = build_train_tab(
                    settings, store, models, prompts, mode=mode, demo=demo, require_admin=require_admin
                )

        # ---- Events -----------------------------------------------------------------------------------------------
        # Events that sample share GENERATION_QUEUE (one at a time, queue position shown); the others touch no model
        # (the vote store appends under its own lock) and run at once, never behind a generation.
        generating = dict(concurrency_id=GENERATION_QUEUE, concurrency_limit=1)
        at_once = dict(concurrency_limit=None)
        timer.tick(poll_status, outputs=[status, timer], api_name="poll_status", api_visibility="private", **at_once)
        demo.load(poll_status, outputs=[status, timer], api_name="poll_status_on_load", api_visibility="private", **at_once)
        status_api = gr.api(model_status, api_name="status", **at_once)
        for output_id in status_api["outputs"]:  # gr.api calls its outputs "1st", "2nd", ...
            demo.blocks[output_id].label = "model status"

        access_outputs = [who_md, admin_panel, admin_note, *(train_tab.access_outputs if train_tab is not None else [])]
        demo.load(access, None, access_outputs, api_name="access", api_visibility="private", **at_once)
        run.click(
            run_best_of_n, [bon_prompt, n_slider, temperature, max_tokens],
            [best_box, cost, chart, table, details, bon_state, rank_a, rank_b], api_name="best_of_n", **generating,
        )
        send.click(
            send_to_label, [bon_state, rank_a, rank_b, label_state],
            [pair_state, left, right, label_prompt, label_state, reveal, tabs, pair_note], api_name="send_to_label",
            **at_once,
        )
        pair_outputs = [pair_state, left, right, label_prompt, pair_note, label_state]
        draw.click(draw_prompt, [label_state], [label_prompt, label_state], api_name="draw_prompt", **at_once).then(
            new_pair, [label_prompt, mode, annotator, label_state], pair_outputs,
            api_name="pair_after_draw", api_visibility="private", **generating,
        )
        prompt_file.upload(
            load_prompts, [prompt_file, label_state], [label_state, prompt_info], api_name="load_prompts", **at_once
        )
        make.click(new_pair, [label_prompt, mode, annotator, label_state], pair_outputs, api_name="new_pair", **generating)
        demo.load(  # the first pair is sampled when the page opens, not after a click
            first_pair, [mode, annotator, label_state], pair_outputs, api_name="first_pair", api_visibility="private",
            **generating,
        )
        vote_outputs = [pair_state, reveal, left, right, strength, rewrite, label_state]
        for button, handler in ((left_better, vote_left), (right_better, vote_right), (tie, vote_tie), (both_bad, vote_both_bad)):
            button.click(
                handler, [pair_state, strength, rewrite, annotator, label_state], vote_outputs,
                api_name=handler.__name__, **at_once,
            ).success(
                next_pair, [label_prompt, mode, annotator, label_state], pair_outputs,
                api_name=f"pair_after_{handler.__name__}", api_visibility="private", **generating,
            )
        summary_outputs = [summary_md, annotators_df, leaderboard_df, leaderboard_note]
        trust_outputs = [trust_md, reliability_df, narrowing_df]
        moderation_outputs = [moderation_votes_df, moderation_log_df]
        refresh.click(data_summary, None, summary_outputs, api_name="data_summary", **at_once).then(
            data_trust, None, trust_outputs, api_name="data_trust", **at_once
        ).then(moderation, None, moderation_outputs, api_name="moderation", **at_once)
        data_tab.select(
            data_summary, None, summary_outputs, api_name="data_summary_on_select", api_visibility="private", **at_once
        ).then(data_trust, None, trust_outputs, api_name="data_trust_on_select", api_visibility="private", **at_once
               ).then(moderation, None, moderation_outputs, api_name="moderation_on_select", api_visibility="private",
                      **at_once)
        moderate_button.click(
            moderate, [moderation_action, moderation_kind, moderation_target, moderation_reason],
            [moderation_info, *moderation_outputs], api_name="moderate", **at_once,
        ).success(data_summary, None, summary_outputs, api_name="data_summary_after_moderation",
                  api_visibility="private", **at_once)
        export_button.click(
            export, [export_kind, export_format, export_policy], [export_file, export_info], api_name="export", **at_once
        )
        push.click(push_export, [export_kind, repo, export_policy], [export_info], api_name="push_export")

    demo.prefkit_models = models  # for launchers and tests
    demo.prefkit_store = store
    return demo
