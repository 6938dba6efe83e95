"""Known-harmless messages from the libraries prefkit builds on, kept out of a user's terminal.

prefkit installs these filters when it is imported; each names the message it drops and why it is harmless, and
leaves every other record of the same logger alone.

- bitsandbytes, on CPUs with AVX512-BF16, tries to fetch an optional faster 4-bit CPU kernel from the Hugging Face
  Hub (``kernels-community``) at import and logs "Failed to load CPU gemm_4bit_forward ..." when it cannot (no
  ``kernels`` package, or no network). It then uses its built-in CPU kernel: QLoRA on the CPU works and gives the
  same results, only that optional speed-up is missing. A user reads the message as a failure, so it is logged at
  DEBUG on ``prefkit`` instead (``pip install kernels`` with Hub access enables the faster kernel).
- transformers 5 renamed ``gradient_checkpointing`` to ``activation_checkpointing`` and warns (FutureWarning) each
  time the old name is read or set. TRL 1.16's configs and trainers use the old name themselves, so every run printed
  four such warnings whatever the user wrote; the flag still works (``--gradient_checkpointing`` is TRL's flag) and
  there is nothing for the user to change. Dropped for those messages only.

- transformers reports a reward-model adapter's classification head (``score`` / ``classifier``) as "MISSING ...
  newly initialized" while it loads the base, though the adapter's trained head replaces it a moment later.
  :func:`head_loaded_from_adapter` drops that report while prefkit loads such a base, and only when the head is all
  it lists; a base that lacks anything else is still reported.

(PyTorch's "'pin_memory' argument is set as true but no accelerator is found" is not filtered: prefkit's configs turn
``dataloader_pin_memory`` off on machines without an accelerator, so it is not raised; see
``trainers/startup.py``.)
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

BNB_CPU_KERNEL_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_CPU_KERNEL_MESSAGE = "Failed to load CPU gemm_4bit_forward"


class _DropBitsandbytesCPUKernelNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(BNB_CPU_KERNEL_MESSAGE):
            logging.getLogger("prefkit").debug(
                "bitsandbytes' optional Hub CPU kernel is unavailable (%s); using its built-in CPU kernel, which is "
                "correct, only slower.", record.getMessage()
            )
            return False
        return True


CHECKPOINTING_RENAME_WARNINGS = (
    # the flag, is_gradient_checkpointing, gradient_checkpointing_enable / _disable
    r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated and will be removed in v6",
)


def install_filters() -> None:
    """Add the filters above once (importing prefkit twice, or reloading it, does not stack them)."""
    for message in CHECKPOINTING_RENAME_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)  # filterwarnings de-duplicates
    logger = logging.getLogger(BNB_CPU_KERNEL_LOGGER)
    if not any(isinstance(f, _DropBitsandbytesCPUKernelNotice) for f in logger.filters):
        logger.addFilter(_DropBitsandbytesCPUKernelNotice())


TRANSFORMERS_LOAD_LOGGER = "transformers.modeling_utils"
_REPORT_ROW = re.compile(r"^\s*([\w.]+)\s*\|\s*([A-Z_]+)\s*\|", re.MULTILINE)


class _DropHeadOnlyLoadReport(logging.Filter):
    def __init__(self, heads: tuple[str, ...]):
        super().__init__()
        self.heads = heads

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        rows = [(key, status) for key, status in _REPORT_ROW.findall(message) if key != "Key"]
        head_only = bool(rows) and all(status == "MISSING" and key.split(".")[0] in self.heads for key, status in rows)
        return not head_only


@contextmanager
def head_loaded_from_adapter(heads: tuple[str, ...] = ("score", "classifier")) -> Iterator[None]:
    """While loading the base of a reward-model adapter, drop transformers' report that only says the head is new."""
    logger = logging.getLogger(TRANSFORMERS_LOAD_LOGGER)
    dropper = _DropHeadOnlyLoadReport(heads)
    logger.addFilter(dropper)
    try:
        yield
    finally:
        logger.removeFilter(dropper)
