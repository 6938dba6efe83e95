"""Deploying the app as a Hugging Face Space: what the Space repo holds, and one call that uploads it.

A Space runs ``app.py`` from its repo root with the packages of ``requirements.txt`` and the Gradio version named in
``README.md``'s front matter. prefkit's Space is therefore: ``spaces/README.md`` and ``spaces/requirements.txt`` at
its root, the repository's ``app.py``, and the ``prefkit/`` package next to it (no PyPI release needed).

    python spaces/deploy.py --space_id me/prefkit-demo --hub_dataset me/prefkit-votes --storage small

On the Space the defaults resolve online (SmolLM2 from the Hub, the demo reward model trained on first start) and
votes go to ``/data/prefkit`` when persistent storage is attached.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PACKAGE_SUFFIXES = (".py", ".typed", ".jsonl", ".md", ".txt", ".json")


def repository_root() -> Path:
    return Path(__file__).resolve().parents[2]


def space_files(root: str | os.PathLike | None = None) -> dict[str, Path]:
    """``{path in the Space repo: local file}`` for everything the Space needs."""
    root = Path(root) if root is not None else repository_root()
    spaces = root / "spaces"
    if not (spaces / "README.md").is_file() or not (root / "app.py").is_file():
        raise FileNotFoundError(
            f"{root} is not a prefkit checkout (spaces/README.md and app.py are missing); deploy from a clone of the "
            "repository."
        )
    files = {
        "README.md": spaces / "README.md",
        "requirements.txt": spaces / "requirements.txt",
        "app.py": root / "app.py",
    }
    package = root / "prefkit"
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in PACKAGE_SUFFIXES:
            files[path.relative_to(root).as_posix()] = path
    return files


def stage_space(target: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Copy the Space's files into ``target`` (a folder that can be pushed as is)."""
    target = Path(target)
    for relative, source in space_files(root).items():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    return target


def deploy_space(
    space_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    hub_dataset: str | None = None,
    set_token_secret: bool = False,
    storage: str | None = None,
    variables: dict[str, str] | None = None,
    admins: str | None = None,
    new_annotator_salt: bool = False,
    api=None,
    root: str | os.PathLike | None = None,
) -> str:
    """Create (or update) the Space and upload the app in one commit; returns the Space's URL.

    ``hub_dataset`` becomes the Space variable ``PREFKIT_HUB_DATASET``; ``set_token_secret`` stores ``token`` as the
    Space secret ``HF_TOKEN`` (needed for the vote sync); ``storage`` ("small", "medium", "large") requests
    persistent storage, which the app uses at ``/data``. The token is never printed.

    The Space signs annotators in with Hugging Face (``hf_oauth: true`` in its README) and refuses to start without
    the secret ``PREFKIT_ANNOTATOR_SALT``: ``new_annotator_salt`` stores a fresh random one (the first deployment
    only; a new salt gives every annotator a new pseudonym). ``admins`` (Hub usernames, comma-separated) becomes the
    variable ``PREFKIT_ADMINS``, who may export and push the votes.
    """
    from huggingface_hub import HfApi

    api = api or HfApi(token=token)
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prefkit-space-") as folder:
        stage_space(folder, root)
        api.upload_folder(
            folder_path=folder,
            repo_id=space_id,
            repo_type="space",
            commit_message="Deploy the prefkit app",
            delete_patterns=["prefkit/**"],  # modules removed from prefkit disappear from the Space too
        )
    settings = {**(variables or {}), **({"PREFKIT_HUB_DATASET": hub_dataset} if hub_dataset else {})}
    if admins:
        settings["PREFKIT_ADMINS"] = admins
    for key, value in settings.items():
        api.add_space_variable(space_id, key, value)
    if new_annotator_salt:
        import secrets

        api.add_space_secret(space_id, "PREFKIT_ANNOTATOR_SALT", secrets.token_hex(32))
    if set_token_secret:
        if not token:
            raise ValueError("set_token_secret needs a token (pass --token or set HF_TOKEN).")
        api.add_space_secret(space_id, "HF_TOKEN", token)
    if storage:
        api.request_space_storage(space_id, storage)
    return f"https://huggingface.co/spaces/{space_id}"
