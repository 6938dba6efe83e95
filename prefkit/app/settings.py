"""Everything the app can be configured with, from flags or environment variables (the way a Space is configured).

Environment variables (flags of ``python app.py`` / ``prefkit app`` override them):

=========================== ============================================================ =============================
variable                    meaning                                                      default
=========================== ============================================================ =============================
``PREFKIT_POLICY``          policy to sample from (Hub id or folder)                     SmolLM2-135M-Instruct
``PREFKIT_REWARD_MODEL``    reward model folder / Hub id, or ``demo``                    ``demo`` (trained on first use)
``PREFKIT_REWARD_FUNCTION`` ``module:function`` reward instead of a model                unset
``PREFKIT_COMPARE_POLICY``  a second model for "two models" pairs                        unset
``PREFKIT_N``               default N of the Best-of-N tab                               4
``PREFKIT_MAX_N``           largest N the slider offers                                  16
``PREFKIT_TEMPERATURE``     default sampling temperature                                 0.8
``PREFKIT_TOP_P``           nucleus sampling threshold                                   0.95
``PREFKIT_MAX_NEW_TOKENS``  longest answer, in tokens                                    128
``PREFKIT_MAX_GENERATION_SECONDS`` seconds one generation may take; answers are cut there 60
``PREFKIT_DATA_DIR``        where votes and exports go                                   ``/data/prefkit`` on a Space
                                                                                         with persistent storage, else
                                                                                         ``./prefkit-data``
``PREFKIT_PROMPTS_FILE``    prompt list for the labeling tab (.txt or .jsonl)            bundled demo prompts
``PREFKIT_HUB_DATASET``     Hub dataset repo the votes sync to                           unset (no sync)
``HF_TOKEN``                token for the sync and pushes (never shown or logged)        unset
``PREFKIT_SYNC_MINUTES``    minutes between sync commits                                 5
``PREFKIT_RELABEL_FRACTION`` share of pairs re-shown to another annotator (agreement)    0.1
``PREFKIT_GENERATIONS_PER_MINUTE`` / ``PREFKIT_VOTES_PER_MINUTE`` per-session rate limits 12 / 30
``PREFKIT_MAX_PROMPT_CHARS`` / ``PREFKIT_MAX_ANSWER_CHARS`` length caps                  2000 / 4000
``PREFKIT_ANNOTATOR_SALT``  salt of the annotator pseudonyms (a secret, required on a     ``prefkit`` (locally)
                            Space with sign-in)
``PREFKIT_LOGIN``           who is voting: ``auto``, ``huggingface`` (sign-in) or        ``auto`` (sign-in on a Space
                            ``name`` (the name field)                                    with ``hf_oauth: true``)
``PREFKIT_ADMINS``          Hub usernames (comma-separated) who may export and push      unset (needs sign-in)
``PREFKIT_VOTES_PER_DAY`` / ``PREFKIT_GENERATIONS_PER_DAY`` per-annotator quotas (UTC day) 0 / 0 (no quota)
``PREFKIT_GLOBAL_GENERATIONS_PER_MINUTE`` generations of all sessions together, a minute 60
``PREFKIT_PAIR_SELECTION``  next pair: ``random``, ``margin`` (closest rewards of N      ``random``
                            samples) or ``uncertainty`` (widest leaderboard interval)
``PREFKIT_GOLD_FILE``       JSONL of gold pairs (prompt, a, b, answer) mixed in          unset (no gold pairs)
``PREFKIT_GOLD_RATE``       share of list-drawn pairs that are gold pairs                0.1
``PREFKIT_FAST_VOTE_SECONDS`` a vote faster than this after the pair shows is "fast"      3
``PREFKIT_MIN_GOLD_ACCURACY`` / ``PREFKIT_MIN_AGREEMENT`` the "drop" policy's thresholds 0.7 / 0.5
``PREFKIT_EXPORT_RELIABILITY`` the Data tab's default export policy: keep, weight, drop  ``keep``
``PREFKIT_TRAIN_TAB``       the Train tab: ``on``, ``off`` or ``auto``                   ``auto``: on locally, off on
                                                                                         a Space
``PREFKIT_TRAIN_METHOD``    the Train tab's default method: ``dpo`` or ``reward``        ``dpo``
``PREFKIT_TRAIN_MAX_STEPS`` optimizer steps of a Train-tab run                           20
``PREFKIT_TRAIN_EVAL_PROMPTS`` held-out prompts the trained policy is evaluated on       8
``PREFKIT_TRAIN_ARGS``      more flags for ``prefkit dpo`` / ``prefkit reward``          unset
``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` host and port                            127.0.0.1 (0.0.0.0 on a
                                                                                         Space) / 7860, else the next
                                                                                         free port
=========================== ============================================================ =============================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..data.reliability import RELIABILITY_POLICIES, GoldPairError, ReliabilityThresholds, read_gold_pairs
from ..models import DEFAULT_POLICY
from .auth import DEFAULT_SALT, LOGIN_MODES, MIN_SECRET_SALT_CHARS, parse_admins, resolve_login

PAIR_SELECTIONS = ("random", "margin", "uncertainty")
TRAIN_METHODS = ("dpo", "reward")
TRAIN_TAB_MODES = ("auto", "on", "off")
# Flags of a Train-tab run that the tab sets itself (PREFKIT_TRAIN_ARGS may not): where data and model go, what is
# trained, and that nothing is pushed with a token on the command line.
TRAIN_FLAGS_SET_BY_THE_TAB = (
    "--model_name_or_path", "--dataset_name", "--output_dir", "--max_steps", "--push_to_hub", "--hub_token",
    "--hub_model_id", "--config", "--preset",
)
DEFAULT_PORT = 7860  # Gradio's, and the port a Space serves
PORTS_TRIED = 100  # without an asked-for port the app takes the first free one from DEFAULT_PORT on, like Gradio


class PortInUseError(OSError):
    """The port the app should listen on is taken; the message says which one and what to do."""


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (checked the way uvicorn binds: ``SO_REUSEADDR``)."""
    import socket

    host = host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str, port: int | None) -> int:
    """``port`` when it is free; without one, the first free port from :data:`DEFAULT_PORT` on.

    An asked-for port that is taken is the user's to resolve (a Space, a proxy or a bookmark expects it), so it raises
    :class:`PortInUseError` instead of moving elsewhere.
    """
    if port is not None:
        if not port_is_free(host, port):
            raise port_in_use_error(host, port)
        return port
    for candidate in range(DEFAULT_PORT, DEFAULT_PORT + PORTS_TRIED):
        if port_is_free(host, candidate):
            return candidate
    raise PortInUseError(
        f"ports {DEFAULT_PORT}-{DEFAULT_PORT + PORTS_TRIED - 1} on {host} are all in use: pass a free one with --port."
    )


def port_in_use_error(host: str, port: int) -> PortInUseError:
    return PortInUseError(
        f"port {port} on {host} is already in use (another program, perhaps an earlier prefkit app, listens there): "
        "stop that program, pass another --port (or GRADIO_SERVER_PORT), or leave both unset to take the next free "
        "port."
    )


def app_url(host: str, port: int) -> str:
    """The address to open in a browser for a server on ``host:port``."""
    return f"http://{'localhost' if host in ('0.0.0.0', '::', '[::]') else host}:{port}/"


def default_data_dir() -> str:
    """``/data/prefkit`` when ``/data`` exists and is writable (a Space's persistent storage), else ``./prefkit-data``."""
    if os.path.isdir("/data") and os.access("/data", os.W_OK):
        return "/data/prefkit"
    return "prefkit-data"


def on_space() -> bool:
    return bool(os.environ.get("SPACE_ID"))


@dataclass
class AppSettings:
    """The app's configuration. ``hub_token`` is kept out of ``repr`` so it never lands in a log."""

    policy: str = DEFAULT_POLICY
    reward_model: str = "demo"
    reward_function: str | None = None
    compare_policy: str | None = None
    n: int = 4
    max_n: int = 16
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 128
    max_generation_seconds: float = 60.0
    data_dir: str = field(default_factory=default_data_dir)
    prompts_file: str | None = None
    hub_dataset: str | None = None
    hub_token: str | None = field(default=None, repr=False)
    sync_minutes: float = 5.0
    relabel_fraction: float = 0.1
    generations_per_minute: int = 12
    votes_per_minute: int = 30
    max_prompt_chars: int = 2000
    max_answer_chars: int = 4000
    annotator_salt: str | None = field(default=None, repr=False)
    login: str = "auto"
    admins: str | None = None
    votes_per_day: int = 0
    generations_per_day: int = 0
    global_generations_per_minute: int = 60
    pair_selection: str = "random"
    gold_file: str | None = None
    gold_rate: float = 0.1
    fast_vote_seconds: float = 3.0
    min_gold_accuracy: float = 0.7
    min_agreement: float = 0.5
    export_reliability: str = "keep"
    train_tab: str = "auto"
    train_method: str = "dpo"
    train_max_steps: int = 20
    train_eval_prompts: int = 8
    train_args: str | None = None
    host: str | None = None
    port: int | None = None
    device: str = "auto"
    title: str = "prefkit: Best-of-N and preference labeling"

    _ENV = {
        "policy": "PREFKIT_POLICY",
        "reward_model": "PREFKIT_REWARD_MODEL",
        "reward_function": "PREFKIT_REWARD_FUNCTION",
        "compare_policy": "PREFKIT_COMPARE_POLICY",
        "n": "PREFKIT_N",
        "max_n": "PREFKIT_MAX_N",
        "temperature": "PREFKIT_TEMPERATURE",
        "top_p": "PREFKIT_TOP_P",
        "max_new_tokens": "PREFKIT_MAX_NEW_TOKENS",
        "max_generation_seconds": "PREFKIT_MAX_GENERATION_SECONDS",
        "data_dir": "PREFKIT_DATA_DIR",
        "prompts_file": "PREFKIT_PROMPTS_FILE",
        "hub_dataset": "PREFKIT_HUB_DATASET",
        "hub_token": "HF_TOKEN",
        "sync_minutes": "PREFKIT_SYNC_MINUTES",
        "relabel_fraction": "PREFKIT_RELABEL_FRACTION",
        "generations_per_minute": "PREFKIT_GENERATIONS_PER_MINUTE",
        "votes_per_minute": "PREFKIT_VOTES_PER_MINUTE",
        "max_prompt_chars": "PREFKIT_MAX_PROMPT_CHARS",
        "max_answer_chars": "PREFKIT_MAX_ANSWER_CHARS",
        "annotator_salt": "PREFKIT_ANNOTATOR_SALT",
        "login": "PREFKIT_LOGIN",
        "admins": "PREFKIT_ADMINS",
        "votes_per_day": "PREFKIT_VOTES_PER_DAY",
        "generations_per_day": "PREFKIT_GENERATIONS_PER_DAY",
        "global_generations_per_minute": "PREFKIT_GLOBAL_GENERATIONS_PER_MINUTE",
        "pair_selection": "PREFKIT_PAIR_SELECTION",
        "gold_file": "PREFKIT_GOLD_FILE",
        "gold_rate": "PREFKIT_GOLD_RATE",
        "fast_vote_seconds": "PREFKIT_FAST_VOTE_SECONDS",
        "min_gold_accuracy": "PREFKIT_MIN_GOLD_ACCURACY",
        "min_agreement": "PREFKIT_MIN_AGREEMENT",
        "export_reliability": "PREFKIT_EXPORT_RELIABILITY",
        "train_tab": "PREFKIT_TRAIN_TAB",
        "train_method": "PREFKIT_TRAIN_METHOD",
        "train_max_steps": "PREFKIT_TRAIN_MAX_STEPS",
        "train_eval_prompts": "PREFKIT_TRAIN_EVAL_PROMPTS",
        "train_args": "PREFKIT_TRAIN_ARGS",
        "host": "GRADIO_SERVER_NAME",
        "port": "GRADIO_SERVER_PORT",
        "device": "PREFKIT_DEVICE",
    }

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> AppSettings:
        """Settings from environment variables, then ``overrides`` (flags) on top; values are checked."""
        environ = os.environ if environ is None else environ
        values = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, variable in cls._ENV.items():
            raw = environ.get(variable)
            if raw is None or raw == "":
                continue
            kind = types[name]
            try:
                if "int" in kind and "float" not in kind:
                    values[name] = int(raw)
                elif "float" in kind:
                    values[name] = float(raw)
                else:
                    values[name] = raw
            except ValueError:
                raise ValueError(f"Environment variable {variable}={raw!r} is not a valid {kind}.") from None
        if "hub_token" not in values and environ.get("HUGGING_FACE_HUB_TOKEN"):
            values["hub_token"] = environ["HUGGING_FACE_HUB_TOKEN"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        problems = []
        if not 1 <= self.n <= self.max_n:
            problems.append(f"n={self.n} must be between 1 and max_n={self.max_n}")
        if not self.temperature > 0:
            problems.append(f"temperature={self.temperature} must be > 0")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p={self.top_p} must be in (0, 1]")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if not self.max_generation_seconds > 0:
            problems.append(f"max_generation_seconds={self.max_generation_seconds} must be > 0")
        if not 0 <= self.relabel_fraction <= 1:
            problems.append(f"relabel_fraction={self.relabel_fraction} must be in [0, 1]")
        if self.generations_per_minute < 1 or self.votes_per_minute < 1 or self.global_generations_per_minute < 1:
            problems.append("rate limits must be >= 1 per minute")
        for name in ("votes_per_day", "generations_per_day"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0 (0: no quota)")
        if self.login not in LOGIN_MODES:
            problems.append(f"login={self.login!r} must be one of {', '.join(LOGIN_MODES)}")
        elif self.login_mode == "huggingface" and on_space() and len(self.annotator_salt or "") < MIN_SECRET_SALT_CHARS:
            problems.append(
                "this Space signs annotators in with Hugging Face but has no secret PREFKIT_ANNOTATOR_SALT of at least "
                f"{MIN_SECRET_SALT_CHARS} characters: without it anyone could hash every public username and "
                "unmask the pseudonyms. Add one under Settings -> Variables and secrets (e.g. the output of "
                "`python -c \"import secrets; print(secrets.token_hex(32))\"`), or deploy with "
                "spaces/deploy.py --new_annotator_salt, and keep it: a new salt gives every annotator a new pseudonym"
            )
        if self.admin_usernames and self.login in LOGIN_MODES and self.login_mode != "huggingface":
            problems.append(
                "admins are set but annotators do not sign in (anyone could type an admin's name): turn on Hugging "
                "Face sign-in (hf_oauth: true in the Space's README, or --login huggingface) or leave admins unset"
            )
        if self.prompts_file and not Path(self.prompts_file).is_file():
            problems.append(f"prompts_file={self.prompts_file!r} does not exist")
        if self.pair_selection not in PAIR_SELECTIONS:
            problems.append(f"pair_selection={self.pair_selection!r} must be one of {', '.join(PAIR_SELECTIONS)}")
        if self.gold_file and not Path(self.gold_file).is_file():
            problems.append(f"gold_file={self.gold_file!r} does not exist (a JSONL file of prompt/a/b/answer records)")
        elif self.gold_file:
            try:  # a bad gold file stops the app before any model loads, with the line at fault
                read_gold_pairs(self.gold_file)
            except GoldPairError as error:
                problems.append(f"gold_file: {error}")
        for name in ("gold_rate", "min_gold_accuracy", "min_agreement"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name}={getattr(self, name)} must be in [0, 1]")
        if not self.fast_vote_seconds >= 0:
            problems.append(f"fast_vote_seconds={self.fast_vote_seconds} must be >= 0")
        if self.export_reliability not in RELIABILITY_POLICIES:
            problems.append(
                f"export_reliability={self.export_reliability!r} must be one of {', '.join(RELIABILITY_POLICIES)}"
            )
        problems += self._train_problems()
        if problems:
            raise ValueError("Invalid app settings: " + "; ".join(problems) + ".")

    def _train_problems(self) -> list[str]:
        problems = []
        if self.train_tab not in TRAIN_TAB_MODES:
            problems.append(f"train_tab={self.train_tab!r} must be one of {', '.join(TRAIN_TAB_MODES)}")
        if self.train_method not in TRAIN_METHODS:
            problems.append(f"train_method={self.train_method!r} must be one of {', '.join(TRAIN_METHODS)}")
        if self.train_max_steps < 1:
            problems.append(f"train_max_steps={self.train_max_steps} must be >= 1")
        if self.train_eval_prompts < 0:
            problems.append(f"train_eval_prompts={self.train_eval_prompts} must be >= 0 (0: no evaluation)")
        try:
            extra = self.train_flags
        except ValueError as error:
            problems.append(f"train_args={self.train_args!r} cannot be split into flags ({error})")
        else:
            taken = sorted({arg.split("=", 1)[0] for arg in extra} & set(TRAIN_FLAGS_SET_BY_THE_TAB))
            if taken:
                problems.append(
                    f"train_args may not set {', '.join(taken)}: the Train tab sets them (model, data, run folder, "
                    "steps; pushing is the tab's button)"
                )
        return problems

    @property
    def train_flags(self) -> list[str]:
        """``train_args`` split like a shell would (quotes group words)."""
        import shlex

        return shlex.split(self.train_args or "")

    @property
    def train_tab_enabled(self) -> bool:
        """``auto`` is on when the app runs locally and off on a Space, where anyone who opens the page could start a
        run on its hardware and push with its token: a Space turns it on with ``PREFKIT_TRAIN_TAB=on``."""
        return self.train_tab == "on" or (self.train_tab == "auto" and not on_space())

    @property
    def reliability_thresholds(self) -> ReliabilityThresholds:
        """The thresholds of the reliability report and the "drop" export policy."""
        return ReliabilityThresholds(
            min_gold_accuracy=self.min_gold_accuracy,
            min_agreement=self.min_agreement,
            fast_vote_seconds=self.fast_vote_seconds,
        )

    @property
    def salt(self) -> str:
        """The salt of the annotator pseudonyms (:func:`prefkit.data.votes.hash_annotator`)."""
        return self.annotator_salt or DEFAULT_SALT

    @property
    def login_mode(self) -> str:
        """``huggingface`` (sign-in) or ``name`` (the name field): ``login`` resolved for where the app runs."""
        return resolve_login(self.login)

    @property
    def admin_usernames(self) -> tuple[str, ...]:
        return parse_admins(self.admins)

    @property
    def server_name(self) -> str:
        return self.host or ("0.0.0.0" if on_space() else "127.0.0.1")
