"""The Train tab: train on the app's votes in a background process, watch the loss, and put the result to the vote.

A run is ``prefkit dpo`` (or ``prefkit reward``) started as a child process on the app's machine, on a dataset file
written from the vote store under the chosen reliability policy: the same command a person would type, so nothing
here trains. Everything about a run lives in its folder ``<data_dir>/train/<run id>/``:

================ ==================================================================================================
``status.json``  state (``training``, ``evaluating``, ``finished``, ``failed``, ``cancelled``), the name, the
                 counts, the process id, the error; rewritten atomically at each change
``data.jsonl``   the training rows (``prefkit export``'s format)
``command.json`` the command line that ran (no token: the child reads none from its flags)
``stdout.log``   the command's output: the trainer prints one ``{'loss': ...}`` line per step, which is the live loss
``stderr.log``   warnings, and on failure the ``error: ...`` line or the traceback shown in the tab
``exit_code``    written by the small wrapper process when the command ends (absent: it was killed or is running)
``model/``       the trained LoRA adapter, its tokenizer and model card
``eval/``        :func:`prefkit.evaluate`'s ``samples.jsonl``, ``eval.json`` and ``eval.png``
================ ==================================================================================================

Who may act: with Hugging Face sign-in (a Space), starting, cancelling and pushing are for the app's admins
(``PREFKIT_ADMINS``): the handlers check, and the page-load ``access`` event hides the controls from everyone else,
who still see the run's progress. With the name field (a local run) nobody's identity is checked, so everyone may.

So a page reload, or a new app object on the same data folder, reads the run back from disk; one run goes at a time;
"Cancel" kills the run's process group. When a DPO run ends well the app loads the adapter (merged into a copy of the
base) as a new source named ``<policy> + dpo-<votes>-<time>``: it becomes the second model of "Policy vs second
model" pairs, so the next pairs compare it with the base and its votes place it on the leaderboard; and
:func:`prefkit.evaluate` compares it with the base on held-out prompts with the app's reward (the table in the tab).
"""

from __future__ import annotations

import ast
import functools
import html
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.reliability import RELIABILITY_POLICIES, apply_reliability_policy
from ..data.votes import votes_to_rows
from .logic import MODE_TWO_MODELS, AppError
from .models import ModelsNotReady, PolicySlot
from .settings import TRAIN_METHODS

TRAIN_FOLDER = "train"
STATUS_FILE = "status.json"
DATA_FILE = "data.jsonl"
COMMAND_FILE = "command.json"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
EXIT_FILE = "exit_code"
MODEL_FOLDER = "model"
EVAL_FOLDER = "eval"

ACTIVE_STATES = ("training", "evaluating")
METHOD_LABELS = {"DPO (a LoRA adapter on the policy)": "dpo", "Reward model (LoRA, a scalar head on the policy)": "reward"}
CANCEL_GRACE_SECONDS = 5.0
STDERR_TAIL_LINES = 15

# Runs the wrapped command with its output in the run folder and records its exit status there, atomically, even
# when the app that started it is gone by then. Killing the process group kills both; then no status is written.
_WRAPPER = """\
import os, subprocess, sys
run_dir, command = sys.argv[1], sys.argv[2:]
with open(os.path.join(run_dir, "stdout.log"), "ab") as out, open(os.path.join(run_dir, "stderr.log"), "ab") as err:
    code = subprocess.call(command, stdout=out, stderr=err)
with open(os.path.join(run_dir, "exit_code.tmp"), "w") as f:
    f.write(str(code))
os.replace(os.path.join(run_dir, "exit_code.tmp"), os.path.join(run_dir, "exit_code"))
"""

# One lock per runs folder, shared by every runner of this process on it (an app object built again on the same
# data folder): a run's state changes once, whoever notices first.
_FOLDER_LOCKS: dict[str, threading.RLock] = {}
_FOLDER_LOCKS_GUARD = threading.Lock()


def _folder_lock(folder: Path) -> threading.RLock:
    with _FOLDER_LOCKS_GUARD:
        return _FOLDER_LOCKS.setdefault(str(folder.resolve()), threading.RLock())


# --------------------------------------------------------------------------------------------------------------------
# Pure pieces: names, log lines, errors, weights, prompts
# --------------------------------------------------------------------------------------------------------------------


def run_name(policy_name: str, method: str, votes: int, started: float) -> str:
    """``SmolLM2-135M-Instruct + dpo-42-20261203-1650``: the base's name, the method, how many votes, when (UTC)."""
    return f"{policy_name} + {method}-{votes}-{time.strftime('%Y%m%d-%H%M', time.gmtime(started))}"


def parse_log_line(line: str) -> dict[str, float] | None:
    """The numbers of one log line the trainer prints (``{'loss': '0.6931', 'epoch': '0.5', ...}``: a Python dict,
    values formatted as strings by transformers' ``PrinterCallback``), or None for any other line."""
    line = line.strip()
    if not (line.startswith("{") and line.endswith("}")):
        return None
    try:
        record = ast.literal_eval(line)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(record, dict):
        return None
    numbers = {}
    for key, value in record.items():
        try:
            numbers[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return numbers


def read_training_logs(run_dir: Path) -> list[dict[str, float]]:
    """One record per logged step (``--logging_steps 1``), with ``step`` added; the end-of-training summary line
    (``train_runtime``, ``train_loss``) is not a step."""
    path = Path(run_dir) / STDOUT_FILE
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as file:
        for line in file:
            record = parse_log_line(line)
            if record and "loss" in record and "train_runtime" not in record:
                records.append({"step": float(len(records) + 1), **record})
    return records


def error_message(run_dir: Path, exit_code: int | None) -> str:
    """Why a run failed: the command's ``error: ...`` line (a mistake it explains), else the end of its stderr (a
    traceback), else its exit status."""
    path = Path(run_dir) / STDERR_FILE
    lines = []
    if path.exists():
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = [part.rstrip() for line in text.splitlines() for part in line.split("\r")[-1:] if part.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1]
    if lines:
        return "\n".join(lines[-STDERR_TAIL_LINES:])
    if exit_code is None:
        return "the training process ended without recording an exit status (it was killed, or the machine restarted)"
    return f"the training command exited with status {exit_code} and printed nothing on stderr"


def systematic_resample(weights: Sequence[float], seed: int = 0) -> list[int]:
    r"""How many copies of each row a dataset of the same size gets, in proportion to ``weights`` (systematic
    resampling): with :math:`n` rows, :math:`p_i = w_i / \sum_j w_j` and one uniform offset :math:`u \in [0, 1)`, row
    :math:`i` gets :math:`\lfloor n C_i + u \rfloor - \lfloor n C_{i-1} + u \rfloor` copies, :math:`C_i = \sum_{j \le
    i} p_j`. Each count is :math:`\lfloor n p_i \rfloor` or :math:`\lceil n p_i \rceil`, they add up to :math:`n`,
    and their expectation is :math:`n p_i`, so a loss averaged over the copies is, in expectation, the loss weighted
    by ``weights``. (TRL's trainers do not read a ``weight`` column; this is how the Train tab honours one.)"""
    import random

    n = len(weights)
    if n == 0:
        return []
    if any(not (w >= 0) or math.isinf(w) for w in weights):
        raise ValueError(f"weights must be finite and >= 0, got {list(weights)}")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("every weight is 0: no row would be kept")
    offset = random.Random(seed).random()
    counts, cumulative, previous = [], 0.0, math.floor(offset)
    for weight in weights:
        cumulative += weight / total
        current = math.floor(n * cumulative + offset + 1e-12)
        counts.append(current - previous)
        previous = current
    counts[-1] += n - sum(counts)  # floating-point rounding at the end
    return counts


def bundled_heldout_prompts() -> list[str]:
    """prefkit's bundled held-out prompts (``sentiment_heldout.jsonl``: 8 subjects in three templates)."""
    from ..data import BUNDLED_DIR

    with open(BUNDLED_DIR / "sentiment_heldout.jsonl", encoding="utf-8") as file:
        return [json.loads(line)["prompt"] for line in file if line.strip()]


def held_out_prompts(app_prompts: Sequence[str], trained_prompts: Sequence[Any], count: int) -> list[str]:
    """Up to ``count`` prompts no training row used: the app's prompt list first, then the bundled held-out ones."""
    trained = {prompt for prompt in trained_prompts if isinstance(prompt, str)}
    chosen: list[str] = []
    for prompt in [*app_prompts, *bundled_heldout_prompts()]:
        if prompt not in trained and prompt not in chosen:
            chosen.append(prompt)
        if len(chosen) >= count:
            break
    return chosen


def eval_table(summary: dict[str, Any]):
    """The tab's evaluation table from ``eval.json``: one row per policy, intervals in brackets."""
    import pandas as pd

    def number(value, digits=3):
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    def interval(pair):
        return "" if not pair else f" [{number(pair[0])}, {number(pair[1])}]"

    rows = []
    for policy in summary.get("policies", []):
        base = policy.get("is_baseline")
        rows.append({
            "policy": policy["name"] + (" (base)" if base else ""),
            "reward [95% CI]": number(policy.get("reward")) + interval(policy.get("reward_interval")),
            "reward gain vs base [95% CI]": "–" if base else
            number(policy.get("reward_gain")) + interval(policy.get("reward_gain_interval")),
            "win rate vs base [95% CI]": "–" if base else
            number(policy.get("win_rate")) + interval(policy.get("win_rate_interval")),
            "KL to base (k3 ± sem, nats)": "–" if base or policy.get("kl_k3") is None else
            f"{number(policy['kl_k3'])} ± {number(policy.get('kl_k3_sem'))}",
            "length (tokens)": f"{policy.get('length', 0.0):.1f}",
        })
    columns = ["policy", "reward [95% CI]", "reward gain vs base [95% CI]", "win rate vs base [95% CI]",
               "KL to base (k3 ± sem, nats)", "length (tokens)"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------------------------


def _process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a child of this process that ended but was not reaped yet is a zombie: gone for our purposes
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _kill_group(pid: int, sig: int) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(pid, sig)  # the wrapper leads its own session: its group is it and the training command
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _write_json(path: Path, record: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + f".{uuid.uuid4().hex[:8]}.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(record, file, indent=2)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


# --------------------------------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------------------------------


class TrainRunner:
    """Starts, watches, cancels and registers the Train tab's runs; all its state is in ``<data_dir>/train``.

    Args:
        settings: the app's :class:`~prefkit.app.settings.AppSettings` (data folder, reliability thresholds, the
            ``train_*`` settings, sampling settings of the evaluation).
        store: the vote store the runs train on.
        models: the app's :class:`~prefkit.app.models.AppModels` (the policy a run starts from; where the trained
            policy is registered).
        prompts: the app's prompt list (held-out prompts for the evaluation come from it first).
    """

    def __init__(self, settings, store, models, prompts: Sequence[str] = ()):
        self.settings, self.store, self.models = settings, store, models
        self.prompts = list(prompts)
        self.folder = Path(settings.data_dir) / TRAIN_FOLDER
        self._lock = _folder_lock(self.folder)
        self._registered: str | None = None  # the run whose policy is a source in *this* app's models
        self._registering: str | None = None
        self._registration_failed: str | None = None  # not retried at every poll; a restart tries again
        self._watched: set[str] = set()
        self.registration_error: str | None = None
        self.resume()

    # ---- reading state ----------------------------------------------------------------------------------------------
    def run_ids(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(path.name for path in self.folder.iterdir() if (path / STATUS_FILE).is_file())

    def read(self, run_id: str) -> dict[str, Any]:
        with open(self.folder / run_id / STATUS_FILE, encoding="utf-8") as file:
            return json.load(file)

    def _write(self, run: dict[str, Any]) -> None:
        _write_json(self.folder / run["run_id"] / STATUS_FILE, run)

    def latest(self) -> dict[str, Any] | None:
        """The newest run's status, brought up to date (a process that ended is noticed here too)."""
        ids = self.run_ids()
        if not ids:
            return None
        self._check_process(ids[-1])
        self._ensure_registered()
        return self.read(ids[-1])

    def active(self) -> dict[str, Any] | None:
        for run_id in reversed(self.run_ids()):
            self._check_process(run_id)
            run = self.read(run_id)
            if run["state"] in ACTIVE_STATES:
                return run
        return None

    # ---- starting -----------------------------------------------------------------------------------------------------
    def training_rows(self, method: str, reliability: str) -> tuple[list[dict[str, Any]], str, int]:
        """``(rows, what the reliability policy did, votes used)``: the export the Data tab would make, with the
        ``weight`` policy applied by :func:`systematic_resample` (the trainers do not read a weight column)."""
        if reliability not in RELIABILITY_POLICIES:
            raise AppError(f"Unknown reliability policy {reliability!r}; choose one of {', '.join(RELIABILITY_POLICIES)}.")
        every_vote = self.store.read(include_hidden=True)
        visible = self.store.moderation().visible(every_vote)  # votes the admins hid never train
        applied = apply_reliability_policy(visible, reliability, self.settings.reliability_thresholds)
        weights = applied.weights if reliability == "weight" else None
        rows = votes_to_rows(applied.votes, kind="reward" if method == "reward" else "dpo", weights=weights)
        description = applied.description
        if len(every_vote) > len(visible):
            description += f" {len(every_vote) - len(visible)} vote(s) hidden by moderation were left out."
        if weights is not None and rows:
            counts = systematic_resample([row.get("weight", 1.0) for row in rows], seed=0)
            rows = [row for row, copies in zip(rows, counts) for _ in range(copies)]
            description += " The rows were resampled in proportion to their weight (systematic resampling)."
        return rows, description, len(applied.votes)

    def command(self, method: str, run_dir: Path, max_steps: int) -> list[str]:
        """The ``prefkit`` command line of a run (no token on it: a gated base model reads HF_TOKEN from the
        environment, as every prefkit command does)."""
        source = self.models.policy.source if self.models.policy is not None else None
        if not source:
            raise AppError(
                "The app's policy was given as an object without the folder or Hub id it came from, so a training run "
                "has nothing to start from: load the policy from a folder or Hub id."
            )
        import torch

        gpu = torch.cuda.is_available() and self.settings.device != "cpu"
        command = [
            sys.executable, "-m", "prefkit.cli", method,
            "--model_name_or_path", source,
            "--dataset_name", str(run_dir / DATA_FILE),
            "--output_dir", str(run_dir / MODEL_FOLDER),
            "--max_steps", str(max_steps),
            "--use_peft", "true",
            "--per_device_train_batch_size", "2",
            "--logging_steps", "1",
            "--disable_tqdm", "true",
            "--save_strategy", "no",
            "--report_to", "none",
            "--seed", "0",
        ]
        if gpu:
            command += ["--quantization", "4bit"]  # QLoRA on a GPU; a plain LoRA run on the CPU
        return command + self.settings.train_flags

    def start(self, method: str | None = None, reliability: str | None = None, max_steps: int | None = None) -> dict:
        """Write the dataset and start the run's process; returns its status. One run at a time."""
        method = (method or self.settings.train_method).strip().lower()
        method = METHOD_LABELS.get(method, method)
        if method not in TRAIN_METHODS:
            raise AppError(f"Unknown training method {method!r}; choose one of {', '.join(TRAIN_METHODS)}.")
        reliability = (reliability or self.settings.export_reliability).strip().lower()
        max_steps = int(max_steps or self.settings.train_max_steps)
        if max_steps < 1:
            raise AppError(f"Max steps must be at least 1 (got {max_steps}).")
        self.models.require()
        with self._lock:
            running = self.active()
            if running is not None:
                raise AppError(
                    f"A run is already {running['state']} ({running['name']}): one run at a time. Wait "
                    "for it or cancel it."
                )
            rows, description, votes = self.training_rows(method, reliability)
            if len(rows) < 2:
                raise AppError(
                    f"The votes make {len(rows)} training pair(s) under the '{reliability}' policy; a run needs at "
                    "least 2 (ties and 'both bad' make no pair). Vote on more pairs first."
                )
            started = time.time()
            run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started)) + f"-{uuid.uuid4().hex[:6]}"
            run_dir = self.folder / run_id
            run_dir.mkdir(parents=True)
            from ..data.export import export_pairs

            export_pairs(rows, run_dir / DATA_FILE)
            command = self.command(method, run_dir, max_steps)
            _write_json(run_dir / COMMAND_FILE, {"command": command})
            run = {
                "run_id": run_id, "name": run_name(self.models.policy.name, method, votes, started),
                "base": self.models.policy.name, "method": method, "reliability": reliability,
                "reliability_description": description, "votes": votes, "rows": len(rows), "max_steps": max_steps,
                "state": "training", "started_at": started, "ended_at": None, "pid": None, "exit_code": None,
                "error": None, "cancel_requested": False, "evaluation": None,
            }
            self._write(run)
            environment = {
                **os.environ,
                "PYTHONUNBUFFERED": "1",  # each log line reaches stdout.log as it is printed
                "TQDM_DISABLE": "1",  # no progress bars in stderr.log, so its end is the error
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "PYTHONPATH": os.pathsep.join(
                    [str(Path(__file__).resolve().parents[2]), *filter(None, [os.environ.get("PYTHONPATH")])]
                ),
            }
            process = subprocess.Popen(
                [sys.executable, "-c", _WRAPPER, str(run_dir), *command],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=environment, start_new_session=True,  # its own process group: cancel kills it all
            )
            run["pid"] = process.pid
            self._write(run)
            self._watch(run_id, process)
            return run

    # ---- watching -------------------------------------------------------------------------------------------------------
    def _watch(self, run_id: str, process: subprocess.Popen | None = None) -> None:
        """A thread that waits for the run's process (its child, or by polling its pid after a restart)."""
        if run_id in self._watched:
            return
        self._watched.add(run_id)

        def wait() -> None:
            if process is not None:
                process.wait()
            else:
                while _process_alive(self.read(run_id).get("pid")):
                    time.sleep(0.5)
            self._check_process(run_id)

        threading.Thread(target=wait, name=f"prefkit-train-{run_id}", daemon=True).start()

    def _check_process(self, run_id: str) -> None:
        """A training run whose process has ended moves on: cancelled, failed (with its error) or evaluating."""
        with self._lock:
            run = self.read(run_id)
            if run["state"] != "training" or _process_alive(run.get("pid")):
                return
            exit_path = self.folder / run_id / EXIT_FILE
            exit_code = int(exit_path.read_text().strip()) if exit_path.exists() else None
            run.update(exit_code=exit_code, ended_at=time.time())
            if run.get("cancel_requested"):
                run["state"] = "cancelled"
            elif exit_code != 0:
                run.update(state="failed", error=error_message(self.folder / run_id, exit_code))
            elif run["method"] == "dpo":
                run["state"] = "evaluating"
            else:
                run["state"] = "finished"
            self._write(run)
        if run["state"] == "evaluating":
            self._start_registration(run_id, evaluate=True)

    def resume(self) -> None:
        """After a restart (or a second app object on the same folder): watch runs still training, finish the
        registration a stopped app left undone, and load the newest trained policy as a source again."""
        for run_id in self.run_ids():
            run = self.read(run_id)
            if run["state"] == "training":
                if _process_alive(run.get("pid")):
                    self._watch(run_id)
                else:
                    self._check_process(run_id)
            elif run["state"] == "evaluating":
                self._start_registration(run_id, evaluate=True)
        self._ensure_registered()

    # ---- cancelling ------------------------------------------------------------------------------------------------------
    def cancel(self) -> dict[str, Any]:
        """Kill the running training process group (SIGTERM, then SIGKILL after a grace period)."""
        with self._lock:
            run = self.active()
            if run is None:
                raise AppError("No run is going: nothing to cancel.")
            if run["state"] != "training":
                raise AppError(
                    "The run has finished training and is being evaluated; that takes a moment and cannot be "
                    "cancelled (the trained model is kept)."
                )
            run["cancel_requested"] = True
            self._write(run)
        pid = run["pid"]
        _kill_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + CANCEL_GRACE_SECONDS
        while _process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _process_alive(pid):
            _kill_group(pid, signal.SIGKILL)
            while _process_alive(pid):
                time.sleep(0.1)
        self._check_process(run["run_id"])
        return self.read(run["run_id"])

    # ---- registering and evaluating ----------------------------------------------------------------------------------
    def newest_trained_policy(self) -> dict[str, Any] | None:
        """The newest DPO run whose adapter is saved (evaluating or finished)."""
        for run_id in reversed(self.run_ids()):
            run = self.read(run_id)
            if run["method"] == "dpo" and run["state"] in ("evaluating", "finished"):
                return run
        return None

    def _ensure_registered(self) -> None:
        run = self.newest_trained_policy()
        if (run is not None and run["state"] == "finished" and run["run_id"] not in (self._registered,
                                                                                   self._registration_failed)):
            self._start_registration(run["run_id"], evaluate=False)

    def _start_registration(self, run_id: str, evaluate: bool) -> None:
        with self._lock:
            if self._registering == run_id or (self._registered == run_id and not evaluate):
                return
            self._registering = run_id
        threading.Thread(
            target=self._register_and_evaluate, args=(run_id, evaluate), name=f"prefkit-register-{run_id}", daemon=True
        ).start()

    def _register_and_evaluate(self, run_id: str, evaluate: bool) -> None:
        try:
            self.models.wait()
            if self.models.policy is None:
                return
            slot = self.register(run_id)
            if evaluate:
                summary = self.evaluate(run_id, slot)
                with self._lock:
                    run = self.read(run_id)
                    run.update(state="finished", evaluation=summary, finished_at=time.time())
                    self._write(run)
        except Exception as error:  # shown in the tab; the adapter on disk and the votes are untouched
            message = f"{type(error).__name__}: {error}"
            with self._lock:
                run = self.read(run_id)
                if run["state"] == "evaluating":
                    run.update(state="failed", error=f"registering or evaluating the trained policy failed: {message}")
                    self._write(run)
                else:
                    self.registration_error = message
                    self._registration_failed = run_id
        finally:
            with self._lock:
                if self._registering == run_id:
                    self._registering = None

    def register(self, run_id: str) -> PolicySlot:
        """Load the run's adapter on a copy of the base, merged, and make it the second model of the app's pairs."""
        from ..models import load_policy

        run = self.read(run_id)
        base = self.models.policy.model
        device = next(base.parameters()).device
        model, tokenizer = load_policy(self.folder / run_id / MODEL_FOLDER, device=str(device))
        model = model.merge_and_unload().eval()  # a plain model: sampled like the base, no adapter per token
        slot = PolicySlot(run["name"], model, tokenizer, str(self.folder / run_id / MODEL_FOLDER))
        self.models.set_compare(slot)
        self._registered = run_id
        self.registration_error = None
        return slot

    def evaluation_prompts(self, run_id: str) -> list[str]:
        from ..data.io import read_jsonl

        trained = [row.get("prompt") for row in read_jsonl(self.folder / run_id / DATA_FILE)]
        return held_out_prompts(self.prompts, trained, self.settings.train_eval_prompts)

    def evaluate(self, run_id: str, slot: PolicySlot) -> dict[str, Any] | None:
        """:func:`prefkit.evaluate` of the trained policy against the base on held-out prompts, with the app's reward,
        at the app's sampling settings; returns ``eval.json``'s content (None with no evaluation prompts)."""
        prompts = self.evaluation_prompts(run_id)
        if not prompts:
            return None
        from ..policy_eval import evaluate

        base = self.models.policy
        with self.models.generate_lock:  # one model copy serves everyone: pairs wait while it samples
            report = evaluate(
                {base.name: (base.model, base.tokenizer), slot.name: (slot.model, slot.tokenizer)}, prompts,
                reward=self.models.reward, max_new_tokens=self.settings.max_new_tokens,
                temperature=self.settings.temperature, top_p=self.settings.top_p, seed=0,
                output_dir=self.folder / run_id / EVAL_FOLDER, progress=False,
            )
        return report.to_dict()

    # ---- pushing -------------------------------------------------------------------------------------------------------
    def push(self, repo_id: str, token: str | None, run_id: str | None = None, api=None) -> str:
        """Upload the newest finished run's model folder (with a model card naming the repo) to a private Hub repo;
        returns the repo's URL. The token goes to ``HfApi`` only: never into a file, a log or the page."""
        repo_id = (repo_id or "").strip()
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise AppError("Give the model repo as 'user/name'.")
        if not token:
            raise AppError("The server has no Hugging Face token: set HF_TOKEN (a Space secret) to push.")
        run = self.read(run_id) if run_id else next(
            (self.read(r) for r in reversed(self.run_ids()) if self.read(r)["state"] == "finished"), None
        )
        if run is None or run["state"] != "finished":
            raise AppError("No finished run to push yet: train one first.")
        folder = self.folder / run["run_id"] / MODEL_FOLDER
        self._write_card(run, folder, repo_id)
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
        api.create_repo(repo_id, private=True, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), commit_message=f"Upload {run['name']} (trained in the prefkit app)",
            ignore_patterns=["checkpoint-*", "*.tmp"],
        )
        with self._lock:
            current = self.read(run["run_id"])
            current["pushed_to"] = repo_id
            self._write(current)
        return f"https://huggingface.co/{repo_id}"

    def _write_card(self, run: dict[str, Any], folder: Path, repo_id: str) -> None:
        from ..hub import build_model_card, final_metrics
        from ..models import adapter_base

        base = adapter_base(folder) if (folder / "adapter_config.json").exists() else None
        logs = read_training_logs(folder.parent)
        card = build_model_card(
            method="dpo" if run["method"] == "dpo" else "reward-model",
            model_name=run["name"],
            base_model=base if base and not os.path.isabs(base) and not os.path.isdir(base) else None,
            hub_model_id=repo_id,
            hyperparameters={"max_steps": run["max_steps"], "training rows": run["rows"], "votes": run["votes"],
                             "reliability policy": run["reliability"]},
            metrics=final_metrics(logs),
            is_adapter=(folder / "adapter_config.json").exists(),
            pipeline_tag="text-generation" if run["method"] == "dpo" else "text-classification",
        )
        card.save(str(folder / "README.md"))


# --------------------------------------------------------------------------------------------------------------------
# What the tab shows
# --------------------------------------------------------------------------------------------------------------------


def status_markdown(run: dict[str, Any] | None, logs: Sequence[dict[str, float]], registration_error: str | None = None) -> str:
    """The tab's status paragraph (every name and message escaped)."""
    if run is None:
        return "*No run yet.* Choose a method and a reliability policy, then start a run on the votes collected so far."
    name = html.escape(run["name"])
    elapsed = (run.get("ended_at") or time.time()) - run["started_at"]
    step = int(logs[-1]["step"]) if logs else 0
    loss = f", loss {logs[-1]['loss']:.4f}" if logs else ""
    data = (f"{run['votes']} votes → {run['rows']} {'DPO' if run['method'] == 'dpo' else 'reward'} pairs "
            f"(reliability policy *{html.escape(run['reliability'])}*).")
    state = run["state"]
    if state == "training":
        head = (f"**Training** *{name}*: step {step} of {run['max_steps']} ({100 * step / run['max_steps']:.0f}%)"
                f"{loss}, {elapsed:.0f} s" + ("" if step else " (loading the model and the data)") + ".")
    elif state == "evaluating":
        head = (f"**Trained** *{name}* ({step} steps{loss}); now loading it as a source and evaluating it against the "
                "base on held-out prompts (new pairs wait meanwhile).")
    elif state == "finished":
        where = ("It is the second model of *Policy vs second model* pairs in **Compare & label**: vote on those "
                 "pairs to place it on the leaderboard next to the base." if run["method"] == "dpo" else
                 "A reward model is not a policy, so it is not a source of pairs; push it, or start the app with "
                 "`--reward_model` on it.")
        head = f"**Finished** *{name}* in {elapsed:.0f} s ({step} steps{loss}). {where}"
    elif state == "cancelled":
        head = f"**Cancelled** *{name}* at step {step} of {run['max_steps']}."
    else:
        exit_code = run.get("exit_code")
        status = f" (exit status {exit_code})" if exit_code is not None else ""
        head = f"**Failed** *{name}*{status}:\n\n```\n{html.escape(run.get('error') or 'unknown error')}\n```"
    note = f"\n\nLoading the trained policy failed: `{html.escape(registration_error)}`" if registration_error else ""
    return f"{head}\n\n{data}{note}"


def loss_frame(logs: Sequence[dict[str, float]]):
    import pandas as pd

    return pd.DataFrame({"step": [int(r["step"]) for r in logs], "loss": [r["loss"] for r in logs]},
                        columns=["step", "loss"])


ADMIN_NOTE = "*Starting, cancelling and pushing runs is for the app's admins (PREFKIT_ADMINS); the run's progress shows here.*"


@dataclass
class TrainTab:
    """What :func:`build_train_tab` made: the runner, and the admin-only parts the app's page-load ``access`` event
    shows or hides (``access_outputs``, updated by :meth:`access`)."""

    runner: TrainRunner
    controls: list = field(default_factory=list)
    note: Any = None

    @property
    def access_outputs(self) -> list:
        return [*self.controls, self.note]

    def access(self, admin: bool, login: str) -> list:
        """The updates of :attr:`access_outputs` for a visitor who is (not) an admin under ``login``."""
        import gradio as gr

        if login != "huggingface":  # a local run: shown from the start, as before
            return [gr.skip() for _ in self.access_outputs]
        return [*(gr.Column(visible=admin) for _ in self.controls), "" if admin else ADMIN_NOTE]


def build_train_tab(
    settings, store, models, prompts: Sequence[str] = (), *, mode=None, demo=None,
    require_admin: Callable[[Any, Any, str], None] | None = None,
) -> TrainTab:
    """The Train tab's widgets and events, inside ``gr.Tabs()`` of the app's Blocks; returns a :class:`TrainTab`
    (its runner is also ``demo.prefkit_train``). ``mode`` is the labeling tab's pair-mode radio: it gains "Policy vs
    second model" once a trained policy is registered. With ``demo``, every page load reads the run's state back from
    disk. ``require_admin(profile, request, what)`` raises :class:`AppError` for a visitor who may not start, cancel or
    push (the app passes its own; without it everyone may)."""
    import gradio as gr

    runner = TrainRunner(settings, store, models, prompts)
    hidden_until_access = settings.login_mode == "huggingface"  # the page-load access event shows them to admins

    def user_errors(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (AppError, ModelsNotReady) as error:
                raise gr.Error(html.escape(str(error)), print_exception=False) from None

        return wrapper

    def check_admin(profile, request, what: str) -> None:
        if require_admin is not None:
            require_admin(profile, request, what)

    def mode_update():
        if mode is None:
            return gr.skip()
        choices = [choice[0] if isinstance(choice, (tuple, list)) else choice for choice in mode.choices]
        if runner.models.compare is not None and MODE_TWO_MODELS not in choices:
            return gr.Radio(choices=[*choices, MODE_TWO_MODELS])
        return gr.skip()

    def view() -> list:
        """Status, loss, evaluation table (and the pair-mode radio): what every event of the tab shows."""
        run = runner.latest()
        logs = read_training_logs(runner.folder / run["run_id"]) if run else []
        table = eval_table(run["evaluation"]) if run and run.get("evaluation") else eval_table({})
        shown = [status_markdown(run, logs, runner.registration_error), loss_frame(logs), table]
        return shown + ([mode_update()] if mode is not None else [])

    def timer_state():
        """The poll runs while a run trains, evaluates or is being loaded, and stops after."""
        run = runner.latest()
        return gr.Timer(active=bool(run and run["state"] in ACTIVE_STATES) or runner._registering is not None)

    def poll() -> list:
        return [*view(), timer_state()]

    @user_errors
    def train_start(method_label: str, reliability: str, max_steps: float, request: gr.Request = None,
                    profile: gr.OAuthProfile | None = None):
        check_admin(profile, request, "start a training run")
        runner.start(METHOD_LABELS.get(method_label, method_label), reliability, int(max_steps))
        return view()

    @user_errors
    def train_cancel(request: gr.Request = None, profile: gr.OAuthProfile | None = None):
        check_admin(profile, request, "cancel a training run")
        runner.cancel()
        return view()

    def train_status():
        return view()

    @user_errors
    def train_push(repo_id: str, request: gr.Request = None, profile: gr.OAuthProfile | None = None):
        check_admin(profile, request, "push a trained model to the Hub")
        url = runner.push(repo_id, settings.hub_token)
        return f"Pushed to {html.escape(url)} (a private repo)."

    default_method = next(label for label, value in METHOD_LABELS.items() if value == settings.train_method)
    with gr.Tab("Train", id="train") as tab:
        gr.Markdown(
            "Train on the votes collected so far, in a background process on this machine: DPO gives a LoRA adapter "
            "on the policy (QLoRA on a GPU), which then joins **Compare & label** as a new source and is evaluated "
            "against the base on held-out prompts; a reward-model run trains a scalar head on the policy. One run at "
            "a time; it keeps going if you close or reload the page."
        )
        note = gr.Markdown(label="Train tab note", show_label=False, elem_id="train-admin-note")
        with gr.Column(visible=not hidden_until_access, elem_id="train-controls") as controls:
            with gr.Row():
                method = gr.Radio(list(METHOD_LABELS), value=default_method, label="Method")
                reliability = gr.Radio(
                    list(RELIABILITY_POLICIES), value=settings.export_reliability,
                    label="Reliability policy (keep all / weight by reliability / drop unreliable annotators)",
                )
                max_steps = gr.Number(value=settings.train_max_steps, precision=0, minimum=1, label="Max steps")
            with gr.Row():
                start_button = gr.Button("Start training", variant="primary", elem_id="train-start")
                cancel_button = gr.Button("Cancel the run", variant="stop", elem_id="train-cancel")
        status = gr.Markdown(label="Run status", show_label=False, elem_id="train-status")
        loss_plot = gr.LinePlot(x="step", y="loss", label="Training loss per step", height=240)
        evaluation = gr.Dataframe(
            label="Trained policy vs base on held-out prompts (prefkit.evaluate, the app's reward)", interactive=False
        )
        with gr.Column(visible=not hidden_until_access, elem_id="train-push") as push_controls:
            with gr.Row():
                repo = gr.Textbox(label="Push the trained model to a Hub model repo (user/name)", elem_id="train-repo")
                push_button = gr.Button("Push to Hub")
            push_info = gr.Markdown(label="Push status", show_label=False)
        timer = gr.Timer(2.0, active=False)

    shown = [status, loss_plot, evaluation, *([mode] if mode is not None else [])]
    at_once = dict(concurrency_limit=None)
    private = dict(api_visibility="private", **at_once)
    start_button.click(train_start, [method, reliability, max_steps], shown, api_name="train_start", **at_once).then(
        timer_state, None, [timer], api_name="train_timer_after_start", **private
    )
    cancel_button.click(train_cancel, None, shown, api_name="train_cancel", **at_once).then(
        timer_state, None, [timer], api_name="train_timer_after_cancel", **private
    )
    tab.select(train_status, None, shown, api_name="train_status", **at_once).then(
        timer_state, None, [timer], api_name="train_timer_on_select", **private
    )
    timer.tick(poll, None, [*shown, timer], api_name="train_poll", **private)
    push_button.click(train_push, [repo], [push_info], api_name="train_push", **at_once)
    if demo is not None:
        demo.load(poll, None, [*shown, timer], api_name="train_status_on_load", **private)
        demo.prefkit_train = runner
    return TrainTab(runner, [controls, push_controls], note)
