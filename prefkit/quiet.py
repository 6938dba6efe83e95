"""Known-harmless messages from the libraries prefkit builds on, kept out of a user's terminal.

prefkit installs these filters when it is imported; each names the message it drops and why it is harmless, and
leaves every other record of the same logger alone.

- bitsandbytes, on CPUs with AVX512-BF16, tries to fetch an optional faster 4-bit CPU kernel from the Hugging Face
  Hub (``kernels-community``) at import and logs "Failed to load CPU gemm_4bit_forward ..." when it cannot (no
  ``kernels`` package, or no network). It then uses its built-in CPU kernel: QLoRA on the CPU works and gives the
  same results, only that optional speed-up is missing. A user reads the message as a failure, so it is logged at
  DEBUG on ``prefkit`` instead (``pip install kernels`` with Hub access enables the faster kernel).
"""

from __future__ import annotations

import logging

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


def install_filters() -> None:
    """Add the filters above once (importing prefkit twice, or reloading it, does not stack them)."""
    logger = logging.getLogger(BNB_CPU_KERNEL_LOGGER)
    if not any(isinstance(f, _DropBitsandbytesCPUKernelNotice) for f in logger.filters):
        logger.addFilter(_DropBitsandbytesCPUKernelNotice())
