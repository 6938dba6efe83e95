"""The models behind the app, given ready-made (tests, notebooks) or loaded in the background (``app.py``).

The server starts at once; while the policy loads and the demo reward model trains on first use, the page shows
what is happening and how far it got, and any action that needs a model says it is still loading instead of
hanging.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from .logic import escape

logger = logging.getLogger(__name__)


class ModelsNotReady(RuntimeError):
    """An action needs the models but they are still loading (or failed to load); the message says which."""


@dataclass
class PolicySlot:
    """A policy the app samples from, with the name votes and the leaderboard know it by.

    ``source`` is what it was loaded from (a Hub id or folder, or an adapter folder for a policy trained in the app):
    what a training run starts from; never shown on the page, never written into a vote."""

    name: str
    model: Any
    tokenizer: Any
    source: str | None = None


def short_name(name_or_path: str) -> str:
    """``HuggingFaceTB/SmolLM2-135M-Instruct`` -> ``SmolLM2-135M-Instruct``; a folder -> its last part."""
    return os.path.basename(os.fspath(name_or_path).rstrip("/")) or os.fspath(name_or_path)


def _loaded_from(model) -> str | None:
    """The folder or Hub id a model in memory says it was loaded from (``config._name_or_path``), or None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(getattr(base, "config", None), "_name_or_path", None) or None


class AppModels:
    """Policy, reward and an optional second policy for "two models" pairs, plus their loading status.

    ``generate_lock`` serialises model calls across the app's events: one model copy serves every session.
    """

    def __init__(self):
        self.policy: PolicySlot | None = None
        self.compare: PolicySlot | None = None
        self.reward: Any = None
        self.reward_name: str = ""
        self.ready = threading.Event()
        self.error: str | None = None
        self.progress: float = 0.0
        self.message: str = "Starting..."
        self.started = time.time()
        self.generate_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ---- construction --------------------------------------------------------------------------------------------
    @classmethod
    def from_objects(
        cls,
        policy,
        tokenizer,
        reward,
        *,
        policy_name: str | None = None,
        reward_name: str | None = None,
        compare: tuple[Any, Any] | None = None,
        compare_name: str | None = None,
    ) -> AppModels:
        """Models already in memory (tests, notebooks). Unnamed, each is known by its Hub id's last part, also when
        its weights came from a local copy of it (the offline default, a Hub cache snapshot)."""
        from ..models import model_id

        models = cls()
        source = model_id(policy) if _loaded_from(policy) else None
        models.policy = PolicySlot(policy_name or short_name(model_id(policy)), policy, tokenizer, source)
        if compare is not None:
            models.compare = PolicySlot(compare_name or short_name(model_id(compare[0])), compare[0], compare[1])
            if models.compare.name == models.policy.name:
                models.compare.name += " (2)"
        models.reward = reward
        models.reward_name = reward_name or getattr(reward, "__name__", type(reward).__name__)
        models._set(1.0, "Ready.")
        models.ready.set()
        return models

    @classmethod
    def load_in_background(cls, settings) -> AppModels:
        """Start loading what ``settings`` names on a thread and return at once; poll :meth:`status`."""
        models = cls()
        models._thread = threading.Thread(target=models._load, args=(settings,), name="prefkit-app-models", daemon=True)
        models._thread.start()
        return models

    def _load(self, settings) -> None:
        try:
            from ..rewards import resolve_reward
            from ..models import load_model, resolve_device

            device = resolve_device(settings.device)
            self._set(0.02, f"Loading the policy {settings.policy} (the first run converts the offline copy, ~20 s)...")
            model, tokenizer = load_model(settings.policy)
            self.policy = PolicySlot(short_name(settings.policy), model.to(device).eval(), tokenizer, settings.policy)
            if settings.compare_policy:
                self._set(0.25, f"Loading the second model {settings.compare_policy}...")
                other, other_tokenizer = load_model(settings.compare_policy)
                name = short_name(settings.compare_policy)
                self.compare = PolicySlot(name if name != self.policy.name else f"{name} (2)", other.to(device).eval(), other_tokenizer)

            def reward_progress(fraction: float, message: str) -> None:
                self._set(0.3 + 0.7 * max(0.0, min(1.0, fraction)), f"Reward model: {message}")

            label = settings.reward_function or settings.reward_model
            self._set(0.3, f"Loading the reward model {label} (the demo model trains once on first use)...")
            self.reward = resolve_reward(label, device=device, progress=reward_progress)
            self.reward_name = label if label != "demo" else "prefkit demo reward model"
            self._set(1.0, "Ready.")
            self.ready.set()
        except Exception as error:  # shown in the UI; the server keeps running so votes already stored stay reachable
            logger.exception("Loading the app's models failed")
            self.error = f"{type(error).__name__}: {error}"
            self._set(self.progress, f"Loading failed: {self.error}")

    def _set(self, progress: float, message: str) -> None:
        self.progress, self.message = progress, message
        logger.info("%3.0f%% %s", 100 * progress, message)

    # ---- use ------------------------------------------------------------------------------------------------------
    def status(self) -> str:
        """The status line, Markdown; every name and message in it is escaped (a model name is user input)."""
        if self.ready.is_set():
            parts = [f"policy **{escape(self.policy.name)}**", f"reward **{escape(self.reward_name)}**"]
            if self.compare is not None:
                parts.insert(1, f"second model **{escape(self.compare.name)}**")
            return "Ready: " + ", ".join(parts) + "."
        if self.error:
            return f"Loading failed: {escape(self.error)}"
        elapsed = time.time() - self.started
        return f"Loading ({100 * self.progress:.0f}%, {elapsed:.0f} s): {escape(self.message)}"

    def require(self) -> None:
        """Raise :class:`ModelsNotReady` with the current status unless the models are loaded."""
        if not self.ready.is_set():
            raise ModelsNotReady(f"The models are not ready yet. {self.status()}")

    def wait(self, timeout: float | None = None) -> bool:
        return self.ready.wait(timeout)

    def set_compare(self, slot: PolicySlot) -> None:
        """Make ``slot`` the second model of "Policy vs second model" pairs (a policy trained in the Train tab), once
        no generation is using the models."""
        with self.generate_lock:
            self.compare = slot
