"""Crash safety: the app process is SIGKILLed while people vote; every vote the page confirmed is still there."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from prefkit.data.votes import TornLineWarning, Vote, VoteStore, read_votes, vote_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> Client:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            client = Client(url, verbose=False)
            if client.predict(api_name="/status").startswith("Ready"):
                return client
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the app did not become ready in {timeout} s:\n{log.read_text()[-3000:]}")


def test_votes_confirmed_before_a_sigkill_are_all_recovered_and_a_torn_line_is_skipped(tiny_model_dir, tmp_path):
    (tmp_path / "crash_rewards.py").write_text("def length(prompts, responses):\n    return [len(r) for r in responses]\n")
    data_dir = tmp_path / "data"
    port = free_port()
    log = tmp_path / "app.log"
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable, str(ROOT / "app.py"), "--policy", tiny_model_dir, "--reward_function", "crash_rewards:length",
        "--data_dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port), "--n", "2", "--max_new_tokens", "4",
        "--votes_per_minute", "100000", "--generations_per_minute", "100000", "--relabel_fraction", "0",
    ]
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=tmp_path)
    confirmed: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/", process, log)

        def vote_until_killed(name: str) -> None:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            while not stop.is_set():
                try:
                    client.predict("Tell me about tea.", "Two samples of the policy", name, api_name="/new_pair")
                    reveal = client.predict("clearly", "", name, api_name="/vote_left")[0]
                except Exception:
                    return  # the server is gone
                with lock:
                    confirmed.append(reveal.split("id `")[1][:8])

        voters = [threading.Thread(target=vote_until_killed, args=(f"voter-{k}",)) for k in range(2)]
        for voter in voters:
            voter.start()
        deadline = time.time() + 120
        while len(confirmed) < 20 and time.time() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)  # mid-stream: both voters are between calls or inside one
        process.wait(timeout=30)
        stop.set()
        for voter in voters:
            voter.join(timeout=60)
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == -signal.SIGKILL
    assert len(confirmed) >= 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornLineWarning)  # the kill may itself have torn a line
        stored = read_votes(data_dir)
    stored_ids = [vote.vote_id[:8] for vote in stored]
    assert set(confirmed) <= set(stored_ids)
    assert len(stored_ids) == len(set(stored_ids))
    assert len(stored) <= len(confirmed) + 2  # at most the votes in flight when the process died

    # A write cut short leaves a torn last line: it is skipped with a warning, never a crash.
    (killed_file,) = vote_files(data_dir)
    partial = json.dumps(stored[0].to_dict())[:57]
    with open(killed_file, "a") as file:
        file.write(partial)
    with pytest.warns(TornLineWarning, match="torn last line"):
        after = read_votes(data_dir)
    assert [vote.vote_id for vote in after] == [vote.vote_id for vote in stored]

    # The next process writes its own file and nothing collected before is lost.
    VoteStore(data_dir).append(Vote.new(prompt="p", response_a="x", response_b="y", verdict="tie"))
    with pytest.warns(TornLineWarning):
        assert len(read_votes(data_dir)) == len(stored) + 1
