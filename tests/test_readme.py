"""README.md as a specification: every ```python block and every command of every ```bash block runs as written,
so the README cannot drift from the code unnoticed.

The harness shrinks each snippet to seconds by rewriting its text, never through a knob in prefkit: Hub model ids
become the tiny offline model, training stops after one step, and sampling writes a few tokens (``SHRINK_CALLS``,
``SHRINK_FLAGS``). "demo", prefkit's demo reward model, is a tiny reward model placed where prefkit looks for it.

Each block runs in its own temporary working directory holding a copy of what the README's commands read from a
clone (``examples/``, ``scripts/``, the bundled data); a block that reads what an earlier block wrote (``NEEDS``)
gets a copy of it. Commands run in this process, through the same ``main`` the ``prefkit`` executable and the
scripts call: a fresh interpreter per command would spend more time importing the trainers than running them.
"""

from __future__ import annotations

import ast
import gc
import re
import runpy
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
TRAINING_COMMANDS = ("dpo", "kto", "reward", "ppo", "grpo", "rloo")

# Command lines of the README that are not run here, by how they start, and why.
NOT_RUN = {
    "make ": "creates .venv and installs packages from the network (minutes); tests/test_makefile.py checks the Makefile",
    "accelerate launch ": "launches on GPUs (one, several, DeepSpeed, FSDP); the CPU multi-process run, torchrun with "
                          "gloo, is tests/test_cli_dpo.py's",
    "python spaces/deploy.py ": "creates a Space on the Hub: needs a token and the network (tests/test_app_settings.py "
                                "deploys to a fake Hub)",
}
# Python calls left out of the snippets, and why.
NOT_RUN_CALLS = {
    "push_to_hub": "needs a Hub token and the network (tests/test_hub.py pushes to a fake Hub)",
}

# Hub ids the README names: each becomes the tiny test model.
MODEL_IDS = ("HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-7B-Instruct")

# How each call of a Python snippet, and each command, is shrunk: keyword arguments set (added or replaced), flags
# appended (the last value of a flag wins, over --config too). "{model}" is the tiny model's folder. A command or
# config class without an entry here fails the test, so that nothing new runs at full size.
_TRAINING_KWARGS = {"max_steps": 1, "per_device_train_batch_size": 2}
_RL_KWARGS = {**_TRAINING_KWARGS, "max_completion_length": 8}
SHRINK_CALLS = {
    "DPOConfig": _TRAINING_KWARGS,
    "RewardConfig": {**_TRAINING_KWARGS, "per_device_eval_batch_size": 40},  # the held-out pairs in a few batches
    "PPOConfig": _RL_KWARGS,
    "GRPOConfig": {**_RL_KWARGS, "num_generations": 2},
    "RLOOConfig": {**_RL_KWARGS, "num_generations": 2},
    "generate_pairs": {"max_new_tokens": 8},
    "best_of_n": {"n": 2, "max_new_tokens": 8},
    "evaluate": {"max_new_tokens": 8},
}
_TRAINING_FLAGS = ("--model_name_or_path", "{model}", "--max_steps", "1", "--per_device_train_batch_size", "2",
                   "--save_strategy", "no")
_POLICY_FLAGS = (*_TRAINING_FLAGS, "--eval_num_prompts", "2", "--eval_max_new_tokens", "8")  # held-out evaluation
SHRINK_FLAGS = {
    "dpo": _POLICY_FLAGS,
    "reward": (*_TRAINING_FLAGS, "--per_device_eval_batch_size", "40"),
    "ppo": (*_POLICY_FLAGS, "--max_completion_length", "8"),
    "grpo": (*_POLICY_FLAGS, "--max_completion_length", "8", "--num_generations", "2"),
    "rloo": (*_POLICY_FLAGS, "--max_completion_length", "8", "--num_generations", "2"),
    "eval": ("--max_new_tokens", "8", "--max_prompts", "4"),
    "generate-pairs": ("--model_name_or_path", "{model}", "--max_new_tokens", "8", "--max_prompts", "2"),
    "label": ("--max_new_tokens", "8"),
    "export": (),
    "bon": ("--model_name_or_path", "{model}", "--n", "2", "--max_new_tokens", "8", "--max_prompts", "2"),
}

# What a clone gives the README's commands: copied into every block's working directory.
CLONE_PATHS = ("examples", "scripts", "prefkit/data/bundled")

# Folders a block reads that an earlier block writes: {block id: {folder: id of the block that writes it}}.
NEEDS = {
    "did-the-run-work-bash-1": {"smollm2-dpo": "quickstart-dpo-with-qlora-python-1"},
    "did-the-run-work-python-1": {"smollm2-dpo": "quickstart-dpo-with-qlora-python-1"},
}

# What the README says a block writes: checked after it runs.
WRITES = {
    "quickstart-dpo-with-qlora-python-1": ["smollm2-dpo/adapter_model.safetensors", "smollm2-dpo/README.md"],
    "quickstart-dpo-with-qlora-bash-1": ["smollm2-dpo/adapter_model.safetensors",
                                         "smollm2-dpo-beta0.3/adapter_model.safetensors"],
    "did-the-run-work-bash-1": ["eval-dpo/samples.jsonl", "eval-dpo/eval.json", "eval-dpo/eval.png"],
    "did-the-run-work-python-1": ["eval-dpo/samples.jsonl", "eval-dpo/eval.json", "eval-dpo/eval.png"],
    "preference-data-generate-judge-export-python-1": ["pairs.jsonl"],
    "preference-data-generate-judge-export-bash-1": ["candidates.jsonl", "labeled.jsonl", "pairs.parquet"],
    "reward-models-python-1": ["smollm2-rm/reward_eval.json", "smollm2-rm/reward_distributions.png"],
    "reward-models-bash-1": ["smollm2-rm/reward_eval.json", "smollm2-rm/reward_distributions.png"],
    "rl-ppo-reinforce-rloo-grpo-python-1": ["smollm2-ppo/adapter_model.safetensors", "smollm2-ppo/value"],
    "rl-ppo-reinforce-rloo-grpo-bash-1": ["smollm2-ppo/adapter_model.safetensors",
                                          "smollm2-grpo/adapter_model.safetensors",
                                          "smollm2-rloo/adapter_model.safetensors"],
    "best-of-n-bash-1": ["bon.jsonl"],
}


# ---- reading the README ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    id: str          # <section slug>-<language>-<n-th block of that language in the section>
    language: str
    text: str
    line: int        # of the opening fence, 1-based


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


def readme_blocks(text: str) -> list[Block]:
    blocks, section, counts = [], "top", {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = _slug(line.lstrip("#"))
        fence = re.match(r"^```(\w+)\s*$", line)
        if fence:
            start = i
            i += 1
            body = []
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            language = fence.group(1)
            if language in ("python", "bash"):
                counts[section, language] = counts.get((section, language), 0) + 1
                blocks.append(Block(f"{section}-{language}-{counts[section, language]}", language, "\n".join(body) + "\n", start + 1))
        i += 1
    return blocks


def command_lines(block: Block) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments left out."""
    commands, pending = [], ""
    for line in block.text.splitlines():
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        argv = shlex.split(pending, comments=True)
        if argv:
            commands.append(shlex.join(argv))
        pending = ""
    return commands


def not_run_reason(command: str) -> str | None:
    return next((reason for prefix, reason in NOT_RUN.items() if command.startswith(prefix)), None)


def command_name(argv: list[str]) -> str | None:
    """``dpo`` for ``prefkit dpo ...`` and ``python scripts/dpo.py ...``; None for anything else."""
    if argv[0] == "prefkit" and len(argv) > 1:
        return argv[1]
    if argv[0] == "python" and len(argv) > 1 and argv[1].startswith("scripts/") and argv[1].endswith(".py"):
        return Path(argv[1]).stem.replace("_", "-")
    return None


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
PYTHON_BLOCKS = [b for b in BLOCKS if b.language == "python"]
BASH_BLOCKS = [b for b in BLOCKS if b.language == "bash"]


# ---- shrinking -------------------------------------------------------------------------------------------------


def _with_model(text: str, model: str) -> str:
    for model_id in MODEL_IDS:
        text = text.replace(model_id, model)
    return text


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


class _Shrink(ast.NodeTransformer):
    def visit_Expr(self, node: ast.Expr):
        if isinstance(node.value, ast.Call) and _called_name(node.value) in NOT_RUN_CALLS:
            return ast.Pass()
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call):
        self.generic_visit(node)
        name = _called_name(node)
        if name is not None and name.endswith("Config") and name not in SHRINK_CALLS:
            raise AssertionError(f"the README builds a {name}: add how to shrink it to SHRINK_CALLS in {__file__}")
        for key, value in SHRINK_CALLS.get(name, {}).items():
            node.keywords = [k for k in node.keywords if k.arg != key] + [ast.keyword(key, ast.Constant(value))]
        return node


def shrink_python(source: str, model: str) -> str:
    tree = _Shrink().visit(ast.parse(_with_model(source, model)))
    return ast.unparse(ast.fix_missing_locations(tree))


def shrink_command(command: str, model: str) -> list[str]:
    argv = shlex.split(_with_model(command, model))
    name = command_name(argv)
    if name not in SHRINK_FLAGS:
        raise AssertionError(f"the README runs `{command}`: add how to shrink `{name}` to SHRINK_FLAGS in {__file__}")
    return argv + [flag.format(model=model) for flag in SHRINK_FLAGS[name]]


# ---- running ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory, tiny_model_dir):
    """A prefkit cache whose demo reward model is a tiny reward model (the real one trains for minutes)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefkit.demo import DEMO_REWARD_DIR

    cache = tmp_path_factory.mktemp("readme-cache")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(cache / DEMO_REWARD_DIR)
    tokenizer.save_pretrained(cache / DEMO_REWARD_DIR)
    return cache


class BlockRunner:
    """Runs README blocks, each in its own working directory, and remembers where each one ran (for ``NEEDS``)."""

    def __init__(self, root: Path, model: str):
        self.root, self.model = root, model
        self.finished: dict[str, Path] = {}

    def workdir(self, block: Block) -> Path:
        folder = self.root / block.id
        shutil.rmtree(folder, ignore_errors=True)
        for path in CLONE_PATHS:
            shutil.copytree(REPO / path, folder / path, ignore=shutil.ignore_patterns("__pycache__"))
        for name, producer in NEEDS.get(block.id, {}).items():
            source = self.finished.get(producer) or self.run(next(b for b in BLOCKS if b.id == producer))
            shutil.copytree(source / name, folder / name)
        return folder

    def run(self, block: Block) -> Path:
        folder = self.workdir(block)
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder)
            if block.language == "python":
                self._run_python(block)
            else:
                for command in command_lines(block):
                    if not_run_reason(command) is None:
                        self._run_command(command, patch)
        gc.collect()
        self.finished[block.id] = folder
        return folder

    def _run_python(self, block: Block) -> None:
        source = shrink_python(block.text, self.model)
        try:
            exec(compile(source, f"README.md:{block.line}", "exec"), {"__name__": "__main__"})
        except Exception as error:
            raise AssertionError(f"the python block at README.md:{block.line} failed, as run:\n{source}") from error

    def _run_command(self, command: str, patch: pytest.MonkeyPatch) -> None:
        from prefkit.cli import main as prefkit

        argv = shrink_command(command, self.model)
        if argv[0] == "prefkit":
            status = prefkit(argv[1:])
        else:  # python scripts/<name>.py ...: the script as its own program
            patch.setattr(sys, "argv", argv[1:])
            try:
                runpy.run_path(argv[1], run_name="__main__")
                status = 0
            except SystemExit as exit_:
                status = exit_.code or 0
        assert status == 0, f"`{command}` exited with status {status}; as run: {shlex.join(argv)}"


@pytest.fixture(scope="module")
def runner(tmp_path_factory, tiny_model_dir):
    return BlockRunner(tmp_path_factory.mktemp("readme"), tiny_model_dir)


@pytest.fixture
def readme_env(demo_cache, monkeypatch):
    monkeypatch.setenv("PREFKIT_CACHE", str(demo_cache))
    monkeypatch.setenv("TQDM_DISABLE", "1")


# ---- the tests -------------------------------------------------------------------------------------------------


def missing_outputs(block: Block, folder: Path) -> list[str]:
    return [path for path in WRITES.get(block.id, []) if not (folder / path).exists()]


@pytest.mark.slow
@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_python_block_runs_and_writes_what_the_readme_says(block, runner, readme_env):
    folder = runner.run(block)
    assert missing_outputs(block, folder) == []


@pytest.mark.slow
@pytest.mark.parametrize("block", BASH_BLOCKS, ids=[b.id for b in BASH_BLOCKS])
def test_every_command_of_the_bash_block_runs_and_writes_what_the_readme_says(block, runner, readme_env):
    reasons = {not_run_reason(command) for command in command_lines(block)}
    if None not in reasons:
        pytest.skip("not run here: " + "; ".join(sorted(reasons)))
    folder = runner.run(block)
    assert missing_outputs(block, folder) == []


def test_the_readme_has_the_snippets_this_test_expects():
    ids = {b.id for b in BLOCKS}
    assert len(PYTHON_BLOCKS) >= 6 and len(BASH_BLOCKS) >= 6
    for block_id, needs in NEEDS.items():
        assert block_id in ids and set(needs.values()) <= ids, f"NEEDS names a block the README no longer has: {block_id}"
    assert sorted(set(WRITES) - ids) == []


def test_every_command_is_run_or_listed_with_the_reason_it_is_not():
    unknown = []
    for block in BASH_BLOCKS:
        for command in command_lines(block):
            if not_run_reason(command) is not None:
                continue
            argv = shlex.split(command)
            if command_name(argv) not in SHRINK_FLAGS:
                unknown.append(f"README.md:{block.line}: {command}")
    assert unknown == []


def test_every_file_the_readme_names_under_examples_exists():
    named = set(re.findall(r"\bexamples/[\w./-]+\w", README.read_text(encoding="utf-8")))
    assert {"examples/dpo.yaml", "examples/heldout.txt", "examples/prompts.txt"} <= named
    assert sorted(path for path in named if not (REPO / path).exists()) == []


@pytest.mark.parametrize("command", TRAINING_COMMANDS)
def test_examples_has_a_config_for_every_training_command_and_it_parses(command, monkeypatch):
    """Every key is a real flag with a valid value (TrlParser rejects unknown keys), and the files it names exist."""
    import importlib

    config = REPO / "examples" / f"{command}.yaml"
    monkeypatch.chdir(REPO)  # its paths are relative to a clone's root
    dataset_args, training_args, *_ = importlib.import_module(f"prefkit.commands.{command}").command().parse(
        ["--config", str(config)]
    )
    assert (REPO / dataset_args.dataset_name).is_file()
    eval_prompts = getattr(training_args, "eval_prompts", None)  # the policy trainers' held-out evaluation
    assert eval_prompts is None or (REPO / eval_prompts).is_file()
    assert f"--config examples/{command}.yaml" in config.read_text(encoding="utf-8")  # it says how to use it
