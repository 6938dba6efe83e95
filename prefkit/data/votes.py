"""The vote store: every human preference vote, durable the moment the UI says "saved".

A vote is one JSON line (:class:`Vote`, schema version :data:`SCHEMA_VERSION`) appended to a file that belongs to
one process (``<folder>/votes/votes-<host>-<pid>-<time>-<random>.jsonl``), under a lock, written with a single
``os.write`` and ``fsync``-ed before :meth:`VoteStore.append` returns. Files are never rewritten, so a crash can at
worst tear the last line of one file; :func:`read_votes` skips such a line with a warning and keeps everything
before it. Several processes (or Space restarts) write side by side without coordination.

When a Hub dataset repo and a token are configured, :class:`HubSync` (a ``huggingface_hub.CommitScheduler``)
uploads the changed vote files every few minutes in one commit: never one commit per vote, and no commit when
nothing changed. The scheduler's lock is the store's lock, so an upload never sees half a line.

Moderation never deletes a vote. An admin's "hide" or "un-hide" (of one vote, or of every vote of one annotator
pseudonym, with a reason) is a :class:`ModerationEntry` appended the same way to a moderation log beside the vote
files (``<folder>/votes/moderation-<host>-<pid>-<time>-<random>.jsonl``); replaying the log in time order gives
:class:`Moderation`, the set of hidden votes. :meth:`VoteStore.read` and :func:`read_votes` leave hidden votes out
(so counts, the leaderboard, reliability tables, exports and training never see them); ``include_hidden=True`` reads
everything that was ever collected.

    store = VoteStore("prefkit-data", hub_repo="me/my-votes", token=os.environ["HF_TOKEN"])
    store.append(Vote.new(prompt=..., response_a=..., response_b=..., verdict="a", strength="clearly", ...))
    votes = store.read()
    store.hide(vote_id=votes[0].vote_id, reason="spam", by=admin_pseudonym)  # the vote stays on disk
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: optional gold_answer and seconds_to_vote (version-1 records read as before)
VERDICTS = ("a", "b", "tie", "both_bad")
STRENGTHS = ("slightly", "clearly", "much")
SIDES = ("a", "b")
GOLD_ANSWERS = ("a", "b", "tie")
VOTES_SUBFOLDER = "votes"
MODERATION_SCHEMA_VERSION = 1
MODERATION_ACTIONS = ("hide", "unhide")
MAX_REASON_CHARS = 500


class VoteError(ValueError):
    """A vote that cannot be stored as given (the message says which field and what is allowed)."""


def hash_annotator(name: str, salt: str = "prefkit") -> str:
    """A stable pseudonym for an annotator (names and logins never reach the vote files)."""
    digest = hashlib.sha256(f"{salt}\x00{name.strip().lower()}".encode()).hexdigest()
    return f"ann-{digest[:16]}"


def item_id(prompt: Any, response_a: str, response_b: str) -> str:
    """The same prompt with the same two responses, in either order, is the same item (to measure agreement)."""
    first, second = sorted([response_a, response_b])
    payload = json.dumps([prompt, first, second], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Vote:
    """One pairwise judgement, as stored.

    ``response_a`` / ``response_b`` are the two responses in a fixed (canonical) order; ``shown_left`` says which of
    them the annotator saw on the left, and ``verdict`` is about A and B, not left and right. ``strength`` grades a
    win ("slightly" / "clearly" / "much" better, or None when not given). ``rewrite`` is an answer the annotator wrote
    and prefers to both. ``reward_a`` / ``reward_b`` are the reward model's scores when known. ``gold_answer`` is set
    only on a gold pair (a pair with a known answer, mixed in to check annotators): ``"a"``, ``"b"`` or ``"tie"``;
    such votes never become training rows. ``seconds_to_vote`` is the time from showing the pair to the vote, when
    the app measured it.
    """

    prompt: Any
    response_a: str
    response_b: str
    verdict: str
    source_a: str = ""
    source_b: str = ""
    shown_left: str = "a"
    strength: str | None = None
    rewrite: str | None = None
    annotator: str = "anonymous"
    session: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    reward_a: float | None = None
    reward_b: float | None = None
    pair_id: str = ""
    vote_id: str = ""
    item_id: str = ""
    created_at: str = ""
    gold_answer: str | None = None
    seconds_to_vote: float | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def new(cls, **fields: Any) -> Vote:
        """A vote with fresh ids and timestamp, checked (:class:`VoteError` names the bad field)."""
        vote = cls(**fields)
        vote.vote_id = vote.vote_id or uuid.uuid4().hex
        vote.pair_id = vote.pair_id or uuid.uuid4().hex
        vote.item_id = vote.item_id or item_id(vote.prompt, vote.response_a, vote.response_b)
        vote.created_at = vote.created_at or _now()
        vote.check()
        return vote

    def check(self) -> None:
        if self.verdict not in VERDICTS:
            raise VoteError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}.")
        if self.strength is not None and self.strength not in STRENGTHS:
            raise VoteError(f"strength must be one of {STRENGTHS} or None, got {self.strength!r}.")
        if self.strength is not None and self.verdict not in SIDES:
            raise VoteError(f"strength grades a win; a {self.verdict!r} verdict takes no strength.")
        if self.shown_left not in SIDES:
            raise VoteError(f"shown_left must be 'a' or 'b', got {self.shown_left!r}.")
        for name in ("response_a", "response_b"):
            if not isinstance(getattr(self, name), str):
                raise VoteError(f"{name} must be a string.")
        if not (isinstance(self.prompt, str) and self.prompt.strip()) and not isinstance(self.prompt, list):
            raise VoteError("prompt must be a non-empty string or a list of messages.")
        if self.rewrite is not None and not self.rewrite.strip():
            self.rewrite = None
        if self.gold_answer is not None and self.gold_answer not in GOLD_ANSWERS:
            raise VoteError(f"gold_answer must be one of {GOLD_ANSWERS} or None, got {self.gold_answer!r}.")
        if self.seconds_to_vote is not None and (
            isinstance(self.seconds_to_vote, bool)
            or not isinstance(self.seconds_to_vote, (int, float))
            or not self.seconds_to_vote >= 0
        ):
            raise VoteError(f"seconds_to_vote must be a number >= 0 or None, got {self.seconds_to_vote!r}.")

    @property
    def is_gold(self) -> bool:
        """A vote on a gold pair (known answer): it checks the annotator and is never training data."""
        return self.gold_answer is not None

    @property
    def winner(self) -> str | None:
        """``"a"`` or ``"b"`` when one response won, else None."""
        return self.verdict if self.verdict in SIDES else None

    def source_of(self, side: str) -> str:
        return self.source_a if side == "a" else self.source_b

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Vote:
        known = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        return cls(**known)


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------


class TornLineWarning(UserWarning):
    """A line of a vote file is not a complete vote (usually the last line of a file whose writer was killed)."""


def _records_root(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    return folder / VOTES_SUBFOLDER if (folder / VOTES_SUBFOLDER).is_dir() else folder


def vote_files(folder: str | os.PathLike) -> list[Path]:
    """Every vote file under ``folder`` (the data folder or its ``votes/`` subfolder), oldest name first."""
    return sorted(_records_root(folder).glob("votes-*.jsonl"))


def moderation_files(folder: str | os.PathLike) -> list[Path]:
    """Every moderation log file under ``folder`` (the data folder or its ``votes/`` subfolder)."""
    return sorted(_records_root(folder).glob("moderation-*.jsonl"))


def read_vote_file(path: str | os.PathLike) -> list[Vote]:
    """The votes of one file; a torn or malformed line is skipped with a :class:`TornLineWarning`."""
    votes = []
    with open(path, "rb") as file:
        data = file.read()
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last = number == len(lines)  # no newline after it: the write was cut short
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            vote = Vote.from_dict(record)
            vote.check()
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            reason = "torn last line (the writer stopped mid-write)" if last else f"malformed line ({error})"
            warnings.warn(f"{path}, line {number}: {reason}; skipped.", TornLineWarning, stacklevel=2)
            continue
        if vote.schema_version > SCHEMA_VERSION:
            warnings.warn(
                f"{path}, line {number}: vote schema {vote.schema_version} is newer than this prefkit reads "
                f"({SCHEMA_VERSION}); upgrade prefkit. Skipped.",
                TornLineWarning,
                stacklevel=2,
            )
            continue
        votes.append(vote)
    return votes


def read_votes(folder: str | os.PathLike, include_hidden: bool = False) -> list[Vote]:
    """The votes under ``folder`` in time order, each once (a vote id seen twice is kept once).

    Votes an admin hid (the folder's moderation log, :func:`read_moderation`) are left out unless ``include_hidden``.
    """
    votes = _read_all_votes(folder)
    if include_hidden:
        return votes
    return Moderation.replay(read_moderation(folder)).visible(votes)


def _read_all_votes(folder: str | os.PathLike) -> list[Vote]:
    seen: set[str] = set()
    votes = []
    for path in vote_files(folder):
        for vote in read_vote_file(path):
            if vote.vote_id in seen:
                continue
            seen.add(vote.vote_id)
            votes.append(vote)
    votes.sort(key=lambda vote: vote.created_at)
    return votes


# --------------------------------------------------------------------------------------------------------------------
# Moderation: hidden, never deleted
# --------------------------------------------------------------------------------------------------------------------


class ModerationError(VoteError):
    """A moderation action that cannot be taken as given (unknown vote or annotator, no reason, nothing to undo)."""


@dataclass
class ModerationEntry:
    """One line of the moderation log: ``action`` (``"hide"`` / ``"unhide"``) of one vote (``vote_id``) or of every
    vote of one annotator pseudonym (``annotator``), why (``reason``), and by whom (``by``: the admin's pseudonym,
    never a username)."""

    action: str
    reason: str
    vote_id: str | None = None
    annotator: str | None = None
    by: str = ""
    created_at: str = ""
    entry_id: str = ""
    schema_version: int = MODERATION_SCHEMA_VERSION

    @classmethod
    def new(cls, **fields: Any) -> ModerationEntry:
        entry = cls(**fields)
        entry.reason = (entry.reason or "").strip() if isinstance(entry.reason, str) else entry.reason
        entry.entry_id = entry.entry_id or uuid.uuid4().hex
        entry.created_at = entry.created_at or _now()
        entry.check()
        return entry

    def check(self) -> None:
        if self.action not in MODERATION_ACTIONS:
            raise ModerationError(f"action must be one of {MODERATION_ACTIONS}, got {self.action!r}.")
        targets = [name for name in ("vote_id", "annotator") if getattr(self, name)]
        if len(targets) != 1:
            raise ModerationError("A moderation action names either one vote id or one annotator pseudonym.")
        if not all(isinstance(getattr(self, name), str) for name in targets):
            raise ModerationError(f"{targets[0]} must be a string.")
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ModerationError("Give a reason: the moderation log keeps why each vote was hidden or shown again.")
        if len(self.reason) > MAX_REASON_CHARS:
            raise ModerationError(f"The reason is limited to {MAX_REASON_CHARS} characters (got {len(self.reason)}).")

    @property
    def target(self) -> str:
        return f"vote {self.vote_id}" if self.vote_id else f"annotator {self.annotator}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> ModerationEntry:
        return cls(**{name: record[name] for name in cls.__dataclass_fields__ if name in record})


def read_moderation(folder: str | os.PathLike) -> list[ModerationEntry]:
    """The moderation log under ``folder``, every process's file merged, in time order; a torn or malformed line is
    skipped with a :class:`TornLineWarning` (as in a vote file)."""
    entries: list[ModerationEntry] = []
    seen: set[str] = set()
    for path in moderation_files(folder):
        lines = path.read_bytes().split(b"\n")
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                entry = ModerationEntry.from_dict(record)
                entry.check()
            except (ValueError, TypeError, UnicodeDecodeError) as error:
                reason = "torn last line" if number == len(lines) else f"malformed line ({error})"
                warnings.warn(f"{path}, line {number}: {reason}; skipped.", TornLineWarning, stacklevel=2)
                continue
            if entry.schema_version > MODERATION_SCHEMA_VERSION:
                warnings.warn(f"{path}, line {number}: moderation schema {entry.schema_version} is newer than this "
                              "prefkit reads; upgrade prefkit. Skipped.", TornLineWarning, stacklevel=2)
                continue
            if entry.entry_id in seen:
                continue
            seen.add(entry.entry_id)
            entries.append(entry)
    entries.sort(key=lambda entry: entry.created_at)  # stable: one file's entries keep their order
    return entries


@dataclass
class Moderation:
    """What the moderation log says now: the hidden vote ids and annotators, each with the entry that hid it.

    A vote is hidden when its id is, or when its annotator is (all of that annotator's votes, later ones included,
    until the annotator is un-hidden). Un-hiding a vote id undoes a hide of that id only."""

    hidden_votes: dict[str, ModerationEntry] = field(default_factory=dict)
    hidden_annotators: dict[str, ModerationEntry] = field(default_factory=dict)
    entries: list[ModerationEntry] = field(default_factory=list)

    @classmethod
    def replay(cls, entries: Iterable[ModerationEntry]) -> Moderation:
        moderation = cls(entries=list(entries))
        for entry in moderation.entries:
            hidden = moderation.hidden_votes if entry.vote_id else moderation.hidden_annotators
            key = entry.vote_id or entry.annotator
            if entry.action == "hide":
                hidden[key] = entry
            else:
                hidden.pop(key, None)
        return moderation

    def hidden_by(self, vote: Vote) -> ModerationEntry | None:
        """The entry that hides ``vote`` (its own before its annotator's), or None when it is visible."""
        return self.hidden_votes.get(vote.vote_id) or self.hidden_annotators.get(vote.annotator)

    def is_hidden(self, vote: Vote) -> bool:
        return self.hidden_by(vote) is not None

    def visible(self, votes: Iterable[Vote]) -> list[Vote]:
        return [vote for vote in votes if not self.is_hidden(vote)]

    def hidden(self, votes: Iterable[Vote]) -> list[Vote]:
        return [vote for vote in votes if self.is_hidden(vote)]



# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------


class _AppendOnlyFile:
    """One process's file of JSON lines (``<folder>/<prefix>-<host>-<pid>-<time>-<random>.jsonl``): each line goes in
    with one ``os.write`` and is ``fsync``-ed before :meth:`append` returns. The caller holds the lock."""

    def __init__(self, folder: Path, prefix: str):
        self.folder = folder
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:40] or "host"
        self.path = folder / f"{prefix}-{host}-{os.getpid()}-{stamp}-{uuid.uuid4().hex[:6]}.jsonl"
        self.fd: int | None = None

    def _open(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            # Make the new file's directory entry durable too.
            directory = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        return self.fd

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        fd = self._open()
        try:
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError:
            # Disk full or similar: this file may now end in half a line. Start a fresh file for the next line so
            # that the fragment stays a torn last line (skipped on reading) instead of swallowing the next one.
            self.rotate()
            raise

    def rotate(self) -> None:
        self.close()
        self.path = self.path.with_name(f"{self.path.stem.rsplit('-', 1)[0]}-{uuid.uuid4().hex[:6]}.jsonl")

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


class VoteStore:
    """Append-only, crash-safe vote storage in ``folder/votes/``, with optional scheduled sync to a Hub dataset.

    Moderation (:meth:`hide`, :meth:`unhide`) goes to a log beside the vote files, written the same way; no vote is
    ever removed from disk.

    Args:
        folder: the data folder (created if needed).
        hub_repo: a Hub dataset repo id to sync to (needs ``token`` or a logged-in machine).
        token: Hugging Face token for the sync; kept in memory only, never written or logged.
        every_minutes: how often the scheduler commits changed files.
        private: create the dataset repo private when it does not exist.
        hf_api: the ``HfApi`` client to use (tests pass a stand-in).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        hub_repo: str | None = None,
        token: str | None = None,
        every_minutes: float = 5,
        private: bool = True,
        hf_api=None,
    ):
        self.folder = Path(folder)
        self.votes_folder = self.folder / VOTES_SUBFOLDER
        self.votes_folder.mkdir(parents=True, exist_ok=True)
        self._votes_file = _AppendOnlyFile(self.votes_folder, "votes")
        self._moderation_file = _AppendOnlyFile(self.votes_folder, "moderation")  # created at the first action
        self._lock = threading.Lock()
        self._appended = 0
        self.sync: HubSync | None = None
        if hub_repo:
            self.sync = HubSync.start(self.votes_folder, hub_repo, token=token, every_minutes=every_minutes, private=private, hf_api=hf_api)
            if self.sync is not None and self.sync.scheduler is not None:
                self._lock = self.sync.scheduler.lock  # an upload never sees half a line

    @property
    def path(self) -> Path:
        """This process's vote file."""
        return self._votes_file.path

    @property
    def _fd(self) -> int | None:
        return self._votes_file.fd

    @property
    def moderation_path(self) -> Path:
        """This process's moderation log file (it exists once this process moderated something)."""
        return self._moderation_file.path

    def append(self, vote: Vote | dict[str, Any]) -> Vote:
        """Store one vote durably; when this returns, the vote survives a crash of this process."""
        if isinstance(vote, dict):
            vote = Vote.new(**vote)
        vote.check()
        with self._lock:
            self._votes_file.append(vote.to_dict())
            self._appended += 1
        return vote

    def _rotate(self) -> None:
        self._votes_file.rotate()

    @property
    def appended(self) -> int:
        """Votes appended by this process."""
        return self._appended

    def read(self, include_hidden: bool = False) -> list[Vote]:
        """Every vote in the folder, from every process that wrote there; hidden ones only with ``include_hidden``."""
        return read_votes(self.votes_folder, include_hidden=include_hidden)

    # ---- moderation -------------------------------------------------------------------------------------------------
    def moderation(self) -> Moderation:
        """The moderation log of the folder (every process's), replayed."""
        return Moderation.replay(read_moderation(self.votes_folder))

    def hidden(self) -> list[Vote]:
        """The votes moderation hides now (still on disk, left out of :meth:`read`)."""
        return self.moderation().hidden(self.read(include_hidden=True))

    def hide(self, *, vote_id: str | None = None, annotator: str | None = None, reason: str, by: str = "") -> ModerationEntry:
        """Hide one vote (``vote_id``) or every vote of one annotator pseudonym (``annotator``, later votes too).

        Raises :class:`ModerationError` for an unknown vote or annotator, an empty reason, or a target already
        hidden. ``by`` is the admin's pseudonym (never a username)."""
        return self._moderate("hide", vote_id, annotator, reason, by)

    def unhide(self, *, vote_id: str | None = None, annotator: str | None = None, reason: str, by: str = "") -> ModerationEntry:
        """Undo :meth:`hide` of that vote id or annotator (the log keeps both entries)."""
        return self._moderate("unhide", vote_id, annotator, reason, by)

    def _moderate(self, action: str, vote_id: str | None, annotator: str | None, reason: str, by: str) -> ModerationEntry:
        vote_id, annotator = (vote_id or "").strip() or None, (annotator or "").strip() or None
        entry = ModerationEntry.new(action=action, vote_id=vote_id, annotator=annotator, reason=reason, by=by)
        votes = self.read(include_hidden=True)
        if vote_id is not None and vote_id not in {vote.vote_id for vote in votes}:
            raise ModerationError(f"No vote has the id {vote_id!r}: copy it from the votes table or an export's vote_id column.")
        if annotator is not None and annotator not in {vote.annotator for vote in votes}:
            raise ModerationError(f"No vote comes from the annotator {annotator!r}: give a pseudonym (ann-...) from the annotator tables.")
        with self._lock:
            moderation = self.moderation()
            hidden = moderation.hidden_votes if vote_id else moderation.hidden_annotators
            key = vote_id or annotator
            if action == "hide" and key in hidden:
                raise ModerationError(f"The {entry.target} is already hidden ({hidden[key].reason!r}).")
            if action == "unhide" and key not in hidden:
                why = ""
                if vote_id:
                    vote = next(vote for vote in votes if vote.vote_id == vote_id)
                    if vote.annotator in moderation.hidden_annotators:
                        why = (f" It is hidden with every vote of its annotator {vote.annotator}: un-hide the annotator "
                               "to show it again.")
                raise ModerationError(f"The {entry.target} is not hidden by itself, so there is nothing to un-hide.{why}")
            self._moderation_file.append(entry.to_dict())
        return entry

    def sync_status(self) -> str:
        if self.sync is None:
            return "Hub sync off (set a dataset repo and a token to turn it on)."
        return self.sync.status()

    def close(self) -> None:
        with self._lock:
            self._votes_file.close()
            self._moderation_file.close()


# --------------------------------------------------------------------------------------------------------------------
# Hub sync
# --------------------------------------------------------------------------------------------------------------------


class HubSync:
    """A ``CommitScheduler`` over the votes folder that remembers how its last upload went."""

    def __init__(self, scheduler=None, repo_id: str = "", error: str | None = None):
        self.scheduler = scheduler
        self.repo_id = repo_id
        self.error = error
        self.last_commit_time: float | None = None
        self.last_commit_url: str | None = None
        self.last_attempt_time: float | None = None
        self.commits = 0

    @classmethod
    def start(cls, folder: Path, repo_id: str, *, token=None, every_minutes=5, private=True, hf_api=None) -> HubSync:
        from huggingface_hub import CommitScheduler

        sync = cls(repo_id=repo_id)

        class _Scheduler(CommitScheduler):
            def push_to_hub(self):  # runs on the scheduler's worker thread
                sync.last_attempt_time = time.time()
                try:
                    info = super().push_to_hub()
                except Exception as error:  # keep the message, never the token
                    sync.error = _redact(f"{type(error).__name__}: {error}", token)
                    raise
                sync.error = None
                if info is not None:
                    sync.commits += 1
                    sync.last_commit_time = time.time()
                    sync.last_commit_url = getattr(info, "commit_url", None)
                return info

        try:
            sync.scheduler = _Scheduler(
                repo_id=repo_id,
                folder_path=folder,
                every=every_minutes,
                path_in_repo=VOTES_SUBFOLDER,
                repo_type="dataset",
                private=private,
                token=token,
                allow_patterns=["votes-*.jsonl", "moderation-*.jsonl"],
                hf_api=hf_api,
            )
        except Exception as error:  # offline, bad token, no permission: keep collecting locally
            sync.error = _redact(f"could not start: {type(error).__name__}: {error}", token)
            logger.warning("Hub sync to %s is off: %s", repo_id, sync.error)
        return sync

    def trigger(self):
        """Upload now (returns a future); the scheduler also does this on its own every few minutes."""
        if self.scheduler is None:
            raise RuntimeError(f"Hub sync to {self.repo_id} is not running: {self.error}")
        return self.scheduler.trigger()

    def status(self) -> str:
        if self.scheduler is None:
            return f"Hub sync to {self.repo_id} is off: {self.error}"
        if self.error:
            return f"Hub sync to {self.repo_id}: last upload failed ({self.error}); votes are safe locally, retrying."
        if self.last_commit_time is None:
            if self.last_attempt_time is None:
                return f"Hub sync to {self.repo_id}: waiting for the first scheduled upload."
            return f"Hub sync to {self.repo_id}: up to date (nothing new to upload)."
        when = time.strftime("%H:%M:%S UTC", time.gmtime(self.last_commit_time))
        return f"Hub sync to {self.repo_id}: last upload at {when} ({self.commits} commit(s) this run)."

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()


def _redact(message: str, token: str | None) -> str:
    return message.replace(token, "***") if token else message


# --------------------------------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------------------------------


def vote_counts(votes: Iterable[Vote]) -> dict[str, Any]:
    """Totals: votes, per verdict, per annotator, rewrites."""
    votes = list(votes)
    by_verdict = {verdict: 0 for verdict in VERDICTS}
    by_annotator: dict[str, int] = {}
    for vote in votes:
        by_verdict[vote.verdict] = by_verdict.get(vote.verdict, 0) + 1
        by_annotator[vote.annotator] = by_annotator.get(vote.annotator, 0) + 1
    return {
        "votes": len(votes),
        "by_verdict": by_verdict,
        "by_annotator": dict(sorted(by_annotator.items(), key=lambda item: -item[1])),
        "rewrites": sum(vote.rewrite is not None for vote in votes),
        "items": len({vote.item_id for vote in votes}),
    }


def oriented_verdict(vote: Vote) -> str:
    """The verdict relative to the item's sorted response order, so two votes on the same item compare."""
    first, _ = sorted([vote.response_a, vote.response_b])
    if vote.verdict not in SIDES or first == vote.response_a:
        return vote.verdict
    return "b" if vote.verdict == "a" else "a"


def double_labeled(votes: Iterable[Vote]) -> list[tuple[str, str]]:
    """Pairs of verdicts (oriented to the item) from the first two different annotators of every item labeled twice."""
    first_votes: dict[str, dict[str, str]] = {}
    for vote in votes:
        by_annotator = first_votes.setdefault(vote.item_id, {})
        if vote.annotator not in by_annotator and len(by_annotator) < 2:
            by_annotator[vote.annotator] = oriented_verdict(vote)
    return [tuple(verdicts.values()) for verdicts in first_votes.values() if len(verdicts) == 2]


# --------------------------------------------------------------------------------------------------------------------
# Votes as labels and training rows (through the data exporter)
# --------------------------------------------------------------------------------------------------------------------

_GRADED = {"slightly": "{side} slightly better", "clearly": "{side} better", "much": "{side} much better"}
#: The label a rewrite gets against each of the two original responses ("clearly better").
REWRITE_LABEL = "A better"


def vote_label(vote: Vote) -> str:
    """The vote as a label of :data:`prefkit.data.scales.DEFAULT_SCALE`: a win without a strength is binary ("A" /
    "B", no margin); "slightly" / "clearly" / "much" are "A slightly better" / "A better" / "A much better"."""
    from .scales import BOTH_BAD, TIE

    if vote.verdict == "tie":
        return TIE
    if vote.verdict == "both_bad":
        return BOTH_BAD
    side = vote.verdict.upper()
    return side if vote.strength is None else _GRADED[vote.strength].format(side=side)


def votes_to_label_records(
    votes: Iterable[Vote], rewrites: bool = True, weights: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """Labeled records (``prompt``, ``response_a``, ``response_b``, ``label`` + ids) for
    :func:`prefkit.data.labels.labels_to_pairs`.

    A rewrite makes new pairs: the rewrite (as response A) is "clearly better" (:data:`REWRITE_LABEL`) than each
    original response it differs from, whatever the verdict on the originals was. Votes on gold pairs are left out
    (they check annotators; they are not training data). ``weights`` (vote id -> weight) adds a ``weight`` field.
    """
    records = []
    for vote in votes:
        if vote.is_gold:
            continue
        common = {"vote_id": vote.vote_id, "annotator": vote.annotator}
        if weights is not None:
            common["weight"] = float(weights.get(vote.vote_id, 1.0))
        records.append(
            {"prompt": vote.prompt, "response_a": vote.response_a, "response_b": vote.response_b, "label": vote_label(vote),
             "source": "vote", **common}
        )
        if rewrites and vote.rewrite:
            for original in (vote.response_a, vote.response_b):
                if original.strip() != vote.rewrite.strip():
                    records.append(
                        {"prompt": vote.prompt, "response_a": vote.rewrite, "response_b": original,
                         "label": REWRITE_LABEL, "source": "rewrite", **common}
                    )
    return records


EXPORT_KINDS = ("dpo", "reward", "kto")


def votes_to_rows(
    votes: Iterable[Vote], kind: str = "dpo", rewrites: bool = True, weights: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """TRL training rows from votes, through the data exporter's label conversion.

    ``kind``: ``"dpo"`` (``prompt`` / ``chosen`` / ``rejected``, plus ``margin`` when any vote was graded),
    ``"reward"`` (the same pairs, always with ``margin``: 0 for an ungraded win, which is "no margin" to the
    Bradley-Terry loss) or ``"kto"`` (unpaired ``prompt`` / ``completion`` / ``label``; "both bad" gives two
    undesirable rows). Ties make no pair; votes on gold pairs are never rows. ``weights`` (vote id -> weight, from
    :func:`prefkit.data.reliability.apply_reliability_policy`) adds a ``weight`` column (1.0 for a vote not in it).
    """
    from .labels import labels_to_pairs, labels_to_unpaired

    if kind not in EXPORT_KINDS:
        raise ValueError(f"kind must be one of {EXPORT_KINDS}, got {kind!r}.")
    records = votes_to_label_records(votes, rewrites=rewrites, weights=weights)
    keep = ("vote_id", "weight") if weights is not None else ("vote_id",)
    if kind == "kto":
        return labels_to_unpaired(records, keep_columns=keep)
    rows = labels_to_pairs(records, keep_columns=keep)
    if kind == "reward":
        for row in rows:
            row.setdefault("margin", 0.0)
    return rows
