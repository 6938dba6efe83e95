"""Test data shared by several test files (imported as ``helpers``: pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from prefkit.data.io import write_jsonl as _write_rows


def separable_preference_rows(n: int = 32, conversational: bool = False) -> list[dict]:
    """Pairs a tiny model can learn to separate: the chosen answer is always kind, the rejected one dismissive."""
    topics = ["tea", "the sea", "my teddy bear", "a poem", "France", "a picnic", "the fox", "numbers"]
    rows = []
    for i in range(n):
        topic = topics[i % len(topics)]
        prompt = f"Tell me about {topic}."
        chosen = f"Happy to help! Here is something kind and helpful about {topic}."
        rejected = "No. Figure it out yourself."
        if conversational:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
        else:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    """``rows`` written as a JSONL file (parents created); returns the path, for passing on as a dataset name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_rows(rows, path)
    return path


def free_port() -> int:
    """A TCP port nothing listens on now (the system's choice), so tests never depend on a fixed one."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_ranks(script: str | Path, args: list[str], env: dict[str, str], cwd: str | Path,
                  expect_failure: bool = False) -> str:
    """Run ``script`` on two CPU ranks under torchrun (gloo, a free port) and return its combined output; fail the
    test, killing both ranks, when it errs (with ``expect_failure``: when it succeeds) or takes over 10 minutes."""
    import os
    import signal
    import subprocess
    import sys

    import pytest

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               str(script), *args]
    env = {**env, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    # Own process group, so a timeout takes the ranks down with the launcher instead of leaving them behind.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=cwd, start_new_session=True)
    try:
        log, _ = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        log, _ = process.communicate()
        pytest.fail(f"the two-process run did not finish in 10 minutes:\n{log[-3000:]}")
    if expect_failure:
        assert process.returncode != 0, f"the two-process run should have failed:\n{log[-3000:]}"
    else:
        assert process.returncode == 0, log[-3000:]
    return log


class EndlessPolicy:
    """The tiny model, made to never emit a stop token and, once ``slow`` is set, to take ``seconds_per_token``
    per forward pass; ``forwards`` counts the passes (one per generated token)."""

    def __init__(self, tiny_model_dir, seconds_per_token: float = 0.02):
        from prefkit.models import load_model
        from prefkit.sampling import stop_token_ids

        self.model, self.tokenizer = load_model(tiny_model_dir)
        self.model.eval()
        self.forwards = 0
        self.slow = threading.Event()
        stop_ids = stop_token_ids(self.model, self.tokenizer)

        def never_stop(module, inputs, output):
            self.forwards += 1
            output.logits[..., stop_ids] = float("-inf")
            if self.slow.is_set():
                time.sleep(seconds_per_token)

        self.model.register_forward_hook(never_stop)


def run_two_ranks_expecting_failure(script: str | Path, args: list[str], env: dict[str, str], cwd: str | Path) -> str:
    """:func:`run_two_ranks` for a run that must fail: its combined output."""
    return run_two_ranks(script, args, env, cwd, expect_failure=True)


def start_app(demo, attempts: int = 3, **kwargs):
    """``demo.launch`` on 127.0.0.1 and a free port, without blocking; returns what ``launch`` returns.

    Gradio checks that its own page answers before returning, with a 3-second HTTP timeout, and raises "When
    localhost is not accessible, a shareable link must be created" when it does not; on a loaded machine that is a
    slow answer, not a broken app, so the launch is retried on a new port (up to ``attempts`` times)."""
    for attempt in range(attempts):
        try:
            return demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=free_port(),
                               **kwargs)
        except ValueError as error:
            if "localhost is not accessible" not in str(error) or attempt == attempts - 1:
                raise
            demo.close()
