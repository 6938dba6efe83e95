"""Known-harmless third-party messages are dropped; everything else from the same loggers still shows."""

import logging
import subprocess
import sys

import prefkit  # noqa: F401  (installs the filters)
from prefkit.quiet import BNB_CPU_KERNEL_LOGGER, install_filters


def test_the_bitsandbytes_cpu_kernel_notice_is_dropped_and_other_warnings_are_not(caplog):
    install_filters()  # twice: no second filter
    logger = logging.getLogger(BNB_CPU_KERNEL_LOGGER)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "No module named 'kernels'")
        logger.warning("something else went wrong")
    messages = [r.getMessage() for r in caplog.records if r.name == BNB_CPU_KERNEL_LOGGER]
    assert messages == ["something else went wrong"]


def test_importing_bitsandbytes_after_prefkit_prints_no_kernel_failure():
    result = subprocess.run(
        [sys.executable, "-c", "import prefkit, bitsandbytes"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "gemm_4bit_forward" not in result.stderr + result.stdout
