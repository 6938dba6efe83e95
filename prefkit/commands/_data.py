"""Shared plumbing of the data commands (generate-pairs, label, export): reading inputs with a progress bar and
turning data errors into a clear message and exit status 2 instead of a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


def read_rows(name_or_path: str, *, split: str = "train", drop_invalid: bool = False, what: str = "rows") -> list[dict]:
    """Every row of a JSONL / TXT / Parquet / CSV file or a dataset, streamed with a progress bar."""
    from tqdm.auto import tqdm

    from ..data.io import load_records

    return list(tqdm(load_records(name_or_path, split=split, drop_invalid=drop_invalid), desc=f"reading {what}", unit="row"))


def data_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Run a command's ``main``; a bad-data error (bad rows, missing file) prints its message and returns 2."""
    from ..data.judges import JudgeBackendError
    from ..data.scales import UnknownLabelError
    from ..data.validation import PreferenceDataError

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs)
        except (PreferenceDataError, UnknownLabelError, JudgeBackendError, FileNotFoundError, KeyError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            print(f"error: {message}", file=sys.stderr)
            return 2

    return wrapper
