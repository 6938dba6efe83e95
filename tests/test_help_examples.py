"""Every file a command's --help example reads exists in the repository or is written by an example of a command's
help (``prefkit label --output labeled.jsonl`` before ``prefkit export --input labeled.jsonl``): a new user can paste
the examples of the data commands in order and get files the next one reads."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(p for p in (ROOT / "prefkit" / "commands").glob("*.py") if ast.get_docstring(ast.parse(p.read_text())))
INPUT_FLAGS = ("--dataset_name", "--prompts", "--prompts_file", "--config", "--input", "--config_file")
OUTPUT_FLAGS = ("--output", "--output_dir")
FILE = re.compile(r"\.(jsonl|json|txt|yaml|yml|csv|parquet)$")


def example_lines(path: Path) -> list[str]:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    text = re.sub(r"\\\n\s*", " ", doc)  # join continued lines
    return [line.strip() for line in text.splitlines() if line.strip().startswith(("prefkit ", "accelerate ", "python "))]


def flag_values(line: str):
    tokens = line.split("#")[0].split()
    return zip(tokens, tokens[1:])


WRITTEN = {value for path in COMMANDS for line in example_lines(path) for flag, value in flag_values(line) if flag in OUTPUT_FLAGS}


@pytest.mark.parametrize("path", COMMANDS, ids=[p.stem for p in COMMANDS])
def test_help_examples_read_files_that_exist_or_that_an_example_writes(path):
    missing = [
        f"{flag} {value}  ({line})"
        for line in example_lines(path)
        for flag, value in flag_values(line)
        if flag in INPUT_FLAGS and FILE.search(value) and value not in WRITTEN and not (ROOT / value).exists()
    ]
    assert missing == []


def test_the_examples_were_found():
    assert sum(len(example_lines(p)) for p in COMMANDS) > 25
