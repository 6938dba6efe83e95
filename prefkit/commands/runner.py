"""How every ``prefkit <command>`` runs, so they all fail the same way.

* A user's mistake (bad rows, a missing or unwritable file, a bad flag or config value, a reward function that
  returns nonsense) prints ``error: <what, where, what to do>`` on stderr and exits with status 2, no traceback.
* Ctrl-C exits with status 130 and says how to resume (``interrupted; rerun the same command to resume`` for
  commands whose output is their checkpoint), no traceback.
* Anything else is a bug in prefkit or a library: its traceback is shown.

Also here: the checks every command makes before it loads a model (:func:`check_output_path`) and reading input
rows with a progress bar (:func:`read_rows`).
"""

from __future__ import annotations

import dis
import errno
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
INTERRUPTED = "interrupted"
INTERRUPTED_RESUMABLE = "interrupted; rerun the same command to resume"

PACKAGE_DIR = Path(__file__).resolve().parent.parent

# Errors that always mean a problem for the user to fix, wherever they were raised; looked up only in modules
# already imported (an error of a module never imported cannot be one of its classes).
USER_ERROR_CLASSES = (
    ("prefkit.data.validation", "PreferenceDataError"),
    ("prefkit.data.scales", "UnknownLabelError"),
    ("prefkit.data.judges", "JudgeBackendError"),
    ("prefkit.rl", "RewardFunctionError"),
    ("prefkit.rewards", "UnknownRewardError"),
    ("prefkit.models", "ModelNotAvailableError"),
    ("prefkit.policy_eval", "EvaluationError"),
)

# What to do about an OSError, by its errno.
OS_ERROR_ADVICE = {
    errno.ENOENT: "check the path",
    errno.EACCES: "check its permissions, or choose a path you can write to",
    errno.EPERM: "check its permissions, or choose a path you can write to",
    errno.EROFS: "the file system is read-only; choose a path on a writable one",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder; give a file path",
    errno.ENOSPC: "the disk is full; free some space or choose another disk",
}


class CommandError(ValueError):
    """A mistake in a command's arguments, with what to do about it; printed as ``error: ...`` with exit status 2."""


def run_command(
    parse: Callable[[], Sequence[Any]],
    body: Callable[..., int | None],
    *,
    interrupted: str | Callable[..., str] = INTERRUPTED,
) -> int:
    """``body(*parse())`` with prefkit's exit statuses: 0, 2 for a user's mistake, 130 for Ctrl-C.

    ``parse`` returns the parsed arguments (a ``TrlParser``'s tuple of dataclasses); a ``ValueError`` while parsing is
    always a bad flag or config value (a config's ``__post_init__`` rejecting it). ``interrupted`` is what Ctrl-C
    prints: a sentence, or a function of the parsed arguments that says how this run resumes.
    """
    parsed: Sequence[Any] | None = None
    try:
        try:
            parsed = parse()
        except ValueError as error:
            raise CommandError(str(error)) from error
        except ImportError as error:  # the launch asks for an optional package (e.g. DeepSpeed) that is not installed
            raise CommandError(missing_package_message(error)) from error
        return int(body(*parsed) or 0)
    except KeyboardInterrupt:
        if isinstance(interrupted, str):
            message = interrupted
        else:
            message = INTERRUPTED if parsed is None else interrupted(*parsed)
        print(message, file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exit_:
        if not isinstance(exit_.code, str):  # --help (0) or an argparse usage error (2): already printed
            raise
        print(_with_prefix(exit_.code), file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as error:
        message = user_error_message(error)
        if message is None:
            raise
        print(_with_prefix(message), file=sys.stderr)
        return EXIT_USER_ERROR


def missing_package_message(error: ImportError) -> str:
    """What to say when building the config needs a package that is missing: ``accelerate launch`` with a DeepSpeed
    config sets ``ACCELERATE_USE_DEEPSPEED``, and ``TrainingArguments`` then requires ``deepspeed``."""
    import re

    quoted = re.search(r"'([A-Za-z0-9_.\-]+)(?:[<>=!~].*?)?'", str(error))
    name = getattr(error, "name", None)
    package = quoted.group(1) if quoted else (name if name and re.fullmatch(r"[A-Za-z0-9_.\-]+", name) else None)
    package = package.split(".")[0] if package else None
    what = f"the package '{package}' is" if package else "a package is"
    install = f"pip install {package}" if package else "install it"
    return (f"{what} needed by this launch configuration but is not installed. Install it ({install}) or launch "
            "without it (e.g. scripts/accelerate_configs/multi_gpu.yaml instead of a DeepSpeed config).")


def _with_prefix(message: str) -> str:
    return message if message.startswith("error:") else f"error: {message}"


def user_error_message(error: BaseException) -> str | None:
    """What to print for a user's mistake, or ``None`` for a bug (whose traceback should be shown).

    A user's mistake is an OSError (a path that is missing, unwritable, on a full disk), one of
    :data:`USER_ERROR_CLASSES`, a :class:`CommandError`, or a ``ValueError`` / ``KeyError`` that a ``raise``
    statement in prefkit raised (prefkit raises those with a message for the user; the same types raised inside a
    library, or by an operation such as unpacking, are bugs).
    """
    if isinstance(error, OSError):
        return describe_os_error(error)
    if isinstance(error, CommandError) or isinstance(error, _loaded_user_error_classes()):
        return str(error)
    if isinstance(error, (ValueError, KeyError)) and raised_by_prefkit(error):
        return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return None


def _loaded_user_error_classes() -> tuple[type, ...]:
    classes = []
    for module_name, class_name in USER_ERROR_CLASSES:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type):
            classes.append(cls)
    return tuple(classes)


def raised_by_prefkit(error: BaseException) -> bool:
    """True when the innermost frame of ``error``'s traceback is a ``raise`` statement in prefkit's source."""
    frame = error.__traceback__
    if frame is None:
        return False
    while frame.tb_next is not None:
        frame = frame.tb_next
    code = frame.tb_frame.f_code
    try:
        Path(code.co_filename).resolve().relative_to(PACKAGE_DIR)
    except ValueError:
        return False
    instruction = next((i for i in dis.get_instructions(code) if i.offset == frame.tb_lasti), None)
    return instruction is not None and instruction.opname in ("RAISE_VARARGS", "RERAISE")


def describe_os_error(error: OSError) -> str:
    """``<path>: <reason>; <what to do>`` for an OSError the operating system raised, else its own message."""
    if error.filename is None:
        return str(error)
    where = os.fsdecode(error.filename)
    if error.filename2 is not None:
        where += f" -> {os.fsdecode(error.filename2)}"
    reason = error.strerror or type(error).__name__
    advice = OS_ERROR_ADVICE.get(error.errno)
    return f"{where}: {reason}" + (f"; {advice}." if advice else ".")


def check_output_path(path: str | os.PathLike, flag: str, *, folder: bool = False) -> Path:
    """Fail now, before a model loads or a batch is generated, if ``path`` cannot be written; returns it as a Path.

    ``folder``: ``path`` is a folder to write into (``--output_dir``), else a file (``--output``). Nothing is created:
    the nearest existing folder on the way must be a folder this user can create files in (a file it can write,
    when the file already exists). A problem raises :class:`CommandError` naming the path and the flag.
    """
    path = Path(path).expanduser()
    kind = "a folder" if folder else "a file"
    if path.exists():
        if folder != path.is_dir():
            raise CommandError(
                f"{flag} {path} is {'a file' if folder else 'a folder'}, but it must be {kind}; choose another path."
            )
        if not folder and not os.access(path, os.W_OK):
            raise CommandError(f"{flag} {path} exists and is not writable; check its permissions or choose another path.")
    ancestor = path if folder else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CommandError(
            f"{flag} {path} cannot be created: {ancestor} is a file, not a folder; choose another path."
        )
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise CommandError(
            f"{flag} {path} cannot be written: creating a file in {ancestor} failed ({reason}); choose a folder you "
            "can write to, or fix its permissions."
        ) from None
    return path


def read_rows(name_or_path: str, *, split: str = "train", drop_invalid: bool = False, what: str = "rows") -> list[dict]:
    """Every row of a JSONL / TXT / Parquet / CSV file or a dataset, streamed with a progress bar."""
    from tqdm.auto import tqdm

    from ..data.io import load_records

    rows = load_records(name_or_path, split=split, drop_invalid=drop_invalid)
    return list(tqdm(rows, desc=f"reading {what}", unit="row"))
