"""App configuration from flags and environment variables, and the files a Hugging Face Space is made of."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prefkit.app import settings as settings_module
from prefkit.app.settings import AppSettings, default_data_dir
from prefkit.app.space import deploy_space, space_files, stage_space

ROOT = Path(__file__).resolve().parents[1]


def test_environment_variables_configure_the_app_and_flags_override_them():
    environ = {"PREFKIT_POLICY": "me/policy", "PREFKIT_N": "6", "PREFKIT_TEMPERATURE": "0.5", "PREFKIT_DATA_DIR": "/tmp/x"}

    settings = AppSettings.from_env(environ, n=3)

    assert (settings.policy, settings.n, settings.temperature, settings.data_dir) == ("me/policy", 3, 0.5, "/tmp/x")


def test_a_malformed_environment_variable_is_named():
    with pytest.raises(ValueError, match="PREFKIT_N='eight' is not a valid int"):
        AppSettings.from_env({"PREFKIT_N": "eight"})


def test_out_of_range_settings_are_refused_together():
    with pytest.raises(ValueError, match=r"n=20 must be between 1 and max_n=16.*temperature=0 must be > 0"):
        AppSettings.from_env({}, n=20, temperature=0)


def test_the_generation_time_limit_comes_from_its_variable_or_flag_and_must_be_positive():
    from prefkit.commands.app import make_parser

    assert AppSettings(data_dir="x").max_generation_seconds == 60
    assert AppSettings.from_env({"PREFKIT_MAX_GENERATION_SECONDS": "12.5"}).max_generation_seconds == 12.5
    flag = make_parser().parse_args(["--max_generation_seconds", "3"]).max_generation_seconds
    assert AppSettings.from_env({"PREFKIT_MAX_GENERATION_SECONDS": "12.5"}, max_generation_seconds=flag).max_generation_seconds == 3
    with pytest.raises(ValueError, match="max_generation_seconds=0.0 must be > 0"):
        AppSettings.from_env({"PREFKIT_MAX_GENERATION_SECONDS": "0"})


def test_the_token_is_read_from_hf_token_but_never_shown_in_the_settings_repr():
    settings = AppSettings.from_env({"HF_TOKEN": "hf_very_secret", "PREFKIT_HUB_DATASET": "me/votes"})

    assert settings.hub_token == "hf_very_secret"
    assert "hf_very_secret" not in repr(settings)


def test_votes_go_to_persistent_storage_when_a_space_has_it(monkeypatch):
    monkeypatch.setattr(settings_module.os.path, "isdir", lambda path: path == "/data")
    monkeypatch.setattr(settings_module.os, "access", lambda path, mode: path == "/data")
    assert default_data_dir() == "/data/prefkit"

    monkeypatch.setattr(settings_module.os, "access", lambda path, mode: False)
    assert default_data_dir() == "prefkit-data"


def test_a_space_listens_on_all_interfaces(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "me/prefkit")
    assert AppSettings(data_dir="x").server_name == "0.0.0.0"
    monkeypatch.delenv("SPACE_ID")
    assert AppSettings(data_dir="x").server_name == "127.0.0.1"


# ---------------------------------------------------------------------------------------------------------------- Space


def front_matter(path: Path) -> dict[str, str]:
    text = path.read_text()
    assert text.startswith("---\n")
    block = text.split("---\n")[1]
    return dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)


def test_the_space_readme_declares_a_gradio_app_run_from_app_py():
    import gradio

    meta = front_matter(ROOT / "spaces" / "README.md")

    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["sdk_version"].split(".")[0] == gradio.__version__.split(".")[0]


def test_the_space_holds_app_py_the_package_and_its_bundled_data():
    files = space_files(ROOT)

    for needed in ("README.md", "requirements.txt", "app.py", "prefkit/__init__.py", "prefkit/app/blocks.py",
                   "prefkit/data/bundled/preferences.jsonl"):
        assert needed in files, needed
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]


def requirement_names() -> set[str]:
    names = set()
    for line in (ROOT / "spaces" / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):  # pip options such as --extra-index-url
            names.add(line.split(">")[0].split("<")[0].split("=")[0].strip().lower().replace("_", "-"))
    return names


# Import names whose distribution has another name, or that arrive with another requirement.
DISTRIBUTION = {"rouge_score": "rouge-score", "huggingface_hub": "huggingface-hub", "yaml": "pyyaml"}
PROVIDED = {
    "gradio": "the Space's sdk_version",
    "tokenizers": "transformers",
    "safetensors": "transformers",
    "gradio_client": "gradio",
    "wandb": "optional tracker, imported only with report_to=wandb",
    "trackio": "optional tracker, imported only with report_to=trackio",
}


def test_every_library_the_package_imports_is_in_the_space_requirements():
    imported = set()
    for path in (ROOT / "prefkit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "prefkit"}
    required = requirement_names()

    missing = sorted(
        name for name in third_party
        if name not in PROVIDED and DISTRIBUTION.get(name, name).lower().replace("_", "-") not in required
    )
    assert missing == []


def test_the_staged_space_starts_app_py_from_its_own_root(tmp_path):
    stage_space(tmp_path, ROOT)

    completed = subprocess.run(
        [sys.executable, "app.py", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "--reward_model" in completed.stdout


class FakeHubApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, folder_path, repo_id, **kwargs):
        uploaded = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
        self.calls.append(("upload_folder", repo_id, {**kwargs, "files": uploaded}))

    def add_space_variable(self, repo_id, key, value):
        self.calls.append(("add_space_variable", repo_id, {key: value}))

    def add_space_secret(self, repo_id, key, value):
        self.calls.append(("add_space_secret", repo_id, {key: value}))

    def request_space_storage(self, repo_id, storage):
        self.calls.append(("request_space_storage", repo_id, storage))


def test_deploying_creates_a_gradio_space_uploads_it_in_one_commit_and_configures_it(capsys):
    api = FakeHubApi()

    url = deploy_space(
        "me/prefkit-demo", token="hf_secret", hub_dataset="me/votes", set_token_secret=True, storage="small", api=api,
        root=ROOT,
    )

    assert url == "https://huggingface.co/spaces/me/prefkit-demo"
    kinds = [call[0] for call in api.calls]
    assert kinds == ["create_repo", "upload_folder", "add_space_variable", "add_space_secret", "request_space_storage"]
    assert api.calls[0][2]["repo_type"] == "space" and api.calls[0][2]["space_sdk"] == "gradio"
    upload = api.calls[1][2]
    assert upload["repo_type"] == "space" and {"app.py", "README.md", "requirements.txt", "prefkit/app/blocks.py"} <= set(upload["files"])
    assert api.calls[2][2] == {"PREFKIT_HUB_DATASET": "me/votes"}
    assert api.calls[3][2] == {"HF_TOKEN": "hf_secret"}
    assert "hf_secret" not in capsys.readouterr().out


def test_trust_and_selection_settings_come_from_the_environment(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"prompt": "2+2?", "a": "4", "b": "5", "answer": "a"}\n')

    settings = AppSettings.from_env(
        {"PREFKIT_PAIR_SELECTION": "uncertainty", "PREFKIT_GOLD_FILE": str(gold), "PREFKIT_GOLD_RATE": "0.25",
         "PREFKIT_MIN_GOLD_ACCURACY": "0.8", "PREFKIT_EXPORT_RELIABILITY": "drop"}
    )

    assert (settings.pair_selection, settings.gold_rate, settings.export_reliability) == ("uncertainty", 0.25, "drop")
    assert settings.reliability_thresholds.min_gold_accuracy == 0.8


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PREFKIT_PAIR_SELECTION": "smart"}, "pair_selection='smart' must be one of random, margin, uncertainty"),
        ({"PREFKIT_GOLD_RATE": "1.5"}, "gold_rate=1.5 must be in"),
        ({"PREFKIT_EXPORT_RELIABILITY": "trust"}, "export_reliability='trust' must be one of keep, weight, drop"),
        ({"PREFKIT_GOLD_FILE": "no-such-gold.jsonl"}, "gold_file='no-such-gold.jsonl' does not exist"),
    ],
)
def test_bad_trust_settings_are_refused_with_the_setting_named(environ, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AppSettings.from_env(environ)


def test_a_bad_gold_file_is_refused_before_any_model_loads_with_its_line(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"prompt": "2+2?", "a": "4", "b": "5", "answer": "a"}\n{"prompt": "p", "a": "x", "b": "y"}\n')

    with pytest.raises(ValueError, match=r"gold.jsonl, line 2: 'answer' is None"):
        AppSettings.from_env({"PREFKIT_GOLD_FILE": str(gold)})
