"""`make setup` installs torch from the default index, or from the index TORCH_INDEX names (e.g. PyTorch's CPU wheels)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def setup_commands(tmp_path, *variables: str) -> list[str]:
    """The commands `make setup` would run (``make -n`` prints them without running them)."""
    result = subprocess.run(
        ["make", "-n", "-B", "setup", f"VENV={tmp_path / 'venv'}", *variables],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    return result.stdout.splitlines()


def torch_install(commands: list[str]) -> str:
    [line] = [line for line in commands if '"torch==' in line]
    return line


def test_torch_comes_from_the_default_index_unless_told_otherwise(tmp_path):
    commands = setup_commands(tmp_path)
    assert "pip install" in torch_install(commands)
    assert not any("index-url" in line for line in commands)


def test_torch_index_is_passed_to_the_torch_install_only(tmp_path):
    commands = setup_commands(tmp_path, f"TORCH_INDEX={CPU_INDEX}")
    assert f'--index-url {CPU_INDEX} "torch==' in torch_install(commands)
    assert sum(CPU_INDEX in line for line in commands) == 1  # the project and its dependencies still come from PyPI
