"""Who is voting: a Hugging Face sign-in on a Space with OAuth, else the name typed in the page; who is an admin.

Votes carry a pseudonym, never a name, username or token: ``hash_annotator(key, salt)``, a salted SHA-256 of

- ``hf:<the account's stable id>`` (the OpenID ``sub`` claim, which survives a username change) when signed in with
  Hugging Face,
- the typed name (lower-cased) when the app runs with the name field,
- ``session:<browser session>`` when neither is given.

The salt is what keeps a pseudonym from being reversed: Hub usernames are public, so with a known salt anyone could
hash every username and match. On a Space with sign-in the salt must therefore be a secret
(``PREFKIT_ANNOTATOR_SALT``, at least :data:`MIN_SECRET_SALT_CHARS` characters); the app refuses to start without
one rather than invent one that would change (and give every annotator a new pseudonym) whenever the Space restarts
without persistent storage. Locally the salt defaults to ``prefkit``, as the vote files always had.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..data.votes import hash_annotator

LOGIN_MODES = ("auto", "huggingface", "name")
"""``auto``: Hugging Face sign-in on a Space that has OAuth (``hf_oauth: true``), the name field elsewhere."""

DEFAULT_SALT = "prefkit"
MIN_SECRET_SALT_CHARS = 16


def space_has_oauth(environ: dict[str, str] | None = None) -> bool:
    """Whether this process runs on a Space whose README turns on OAuth (the Space then sets ``OAUTH_CLIENT_ID``)."""
    environ = os.environ if environ is None else environ
    return bool(environ.get("SPACE_ID")) and bool(environ.get("OAUTH_CLIENT_ID"))


def resolve_login(login: str, environ: dict[str, str] | None = None) -> str:
    """``huggingface`` or ``name``: what ``login`` (one of :data:`LOGIN_MODES`) means here."""
    if login == "auto":
        return "huggingface" if space_has_oauth(environ) else "name"
    return login


def parse_admins(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"alice, Bob"`` -> ``("alice", "bob")``: Hub usernames, compared without case, an optional leading ``@``."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(item.strip().lstrip("@").lower() for item in items if item.strip().lstrip("@")))


@dataclass(frozen=True)
class Annotator:
    """Who is acting, as the app keeps it for one request.

    ``id`` is the only part that is stored (with each vote). ``username`` stays in memory to check the admin list
    and greet the person; it is never written to a file or a log (``repr`` leaves it out)."""

    id: str
    signed_in: bool = False
    username: str | None = None

    def __repr__(self) -> str:
        return f"Annotator(id={self.id!r}, signed_in={self.signed_in})"


def profile_key(profile: Any) -> str | None:
    """The stable part of a Hugging Face profile (``gr.OAuthProfile``): its ``sub`` (account id), else its username."""
    if profile is None:
        return None
    get = profile.get if hasattr(profile, "get") else (lambda key, default=None: getattr(profile, key, default))
    key = get("sub") or get("preferred_username") or getattr(profile, "username", None)
    return str(key) if key else None


def identify(profile: Any, name: str | None, session: str | None, salt: str, login: str) -> Annotator:
    """The :class:`Annotator` behind a request.

    With ``login="huggingface"`` only the signed-in profile counts (the name field is not shown, and a name sent
    through the API is ignored: it proves nothing); signed out, the pseudonym is the browser session's.
    With ``login="name"`` the typed name, else the session.
    """
    if login == "huggingface":
        key = profile_key(profile)
        if key is None:
            return Annotator(hash_annotator(f"session:{session or 'unknown'}", salt))
        username = getattr(profile, "username", None) or profile.get("preferred_username")
        return Annotator(hash_annotator(f"hf:{key}", salt), signed_in=True, username=username)
    name = (name or "").strip()
    if name:
        return Annotator(hash_annotator(name, salt))
    return Annotator(hash_annotator(f"session:{session or 'unknown'}", salt))


def is_admin(annotator: Annotator, admins: tuple[str, ...], login: str) -> bool:
    """Whether ``annotator`` may export and push the votes and see the per-annotator trust tables.

    With Hugging Face sign-in: a signed-in username on ``admins``. With the name field nobody's identity is checked,
    so the app is trusted to whoever can open it (a local run): everyone is an admin. (The settings refuse an admin
    list without sign-in, so a list never looks enforced when it is not.)"""
    if login != "huggingface":
        return True
    return annotator.signed_in and (annotator.username or "").lower() in admins
