"""scripts/screenshot_app.py: its flags and the settings of its apps; the sign-in picture is taken for real with
``--tiny`` in headless Chromium (marked ``browser``, skipped without it). The other pictures cast votes and train
for minutes and are taken by hand."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "screenshot_app.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("screenshot_app", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_shoot_every_tab_into_docs_img_with_the_default_models(script):
    args = script.parse_args([])
    assert args.tabs == ["bon", "label", "data", "train", "signin"]
    assert args.output_dir == "docs/img" and not args.tiny and args.data_dir is None
    assert args.annotators == ["alice", "bob"] and args.width == 1280
    assert script.FILE_NAMES == {"bon": "app-bon.png", "label": "app-label.png", "data": "app-data.png",
                                 "train": "app-train.png", "signin": "app-signin.png"}


def test_lists_are_split_and_trimmed(script):
    args = script.parse_args(["--tabs", " data, train ", "--annotators", "ann, bo ,", "--tiny", "--train_timeout", "0"])
    assert args.tabs == ["data", "train"] and args.annotators == ["ann", "bo"]
    assert args.tiny and args.train_timeout == 0
    assert script.parse_args(["--tabs", "data,signin"]).tabs == ["data", "signin"]


SPACE_WITH_OAUTH = {"SPACE_ID": "me/labels", "OAUTH_CLIENT_ID": "client", "SYSTEM": "spaces"}


def test_the_sign_in_app_has_what_a_space_with_sign_in_requires_and_the_other_tabs_keep_the_name_field(
        script, monkeypatch):
    from prefkit.app import AppSettings
    from prefkit.app.auth import MIN_SECRET_SALT_CHARS

    for key, value in SPACE_WITH_OAUTH.items():
        monkeypatch.setenv(key, value)
    args = script.parse_args(["--annotators", "ada,bob"])
    overrides = script.sign_in_overrides(args, "votes", None)
    with pytest.raises(ValueError, match="PREFKIT_ANNOTATOR_SALT"):  # what a Space with hf_oauth: true checks ...
        AppSettings.from_env(SPACE_WITH_OAUTH, **{**overrides, "annotator_salt": "short"})
    settings = AppSettings.from_env(SPACE_WITH_OAUTH, **overrides)  # ... passes with the script's salt
    assert settings.login_mode == "huggingface" and settings.admin_usernames == ("ada",)
    assert len(settings.annotator_salt) >= MIN_SECRET_SALT_CHARS and settings.salt != "prefkit"
    assert not settings.train_tab_enabled
    assert script.sign_in_overrides(args, "votes", None)["annotator_salt"] != overrides["annotator_salt"]

    name_field = AppSettings.from_env({}, **script.app_overrides(args, "votes", None))
    assert name_field.login_mode == "name" and name_field.train_tab_enabled and name_field.admin_usernames == ()


def test_gradios_mocked_sign_in_gets_a_placeholder_account_instead_of_an_online_lookup_and_is_restored(script):
    import gradio.oauth

    original = gradio.oauth._get_mocked_oauth_info
    with script.offline_sign_in():
        account = gradio.oauth._get_mocked_oauth_info()  # the real one calls whoami() on the Hub
    assert account["userinfo"]["preferred_username"] == "nobody" and account["access_token"] == "placeholder"
    assert gradio.oauth._get_mocked_oauth_info is original


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tabs", "bon,settings"], "unknown tab(s) settings"),
        (["--tabs", ","], "(none given)"),
        (["--annotators", " , "], "--annotators: give at least one name"),
        (["--relabel_fraction", "1.5"], "--relabel_fraction 1.5: must be between 0 and 1"),
        (["--votes", "0"], "must be at least 1, got 0"),
        (["--train_timeout", "-1"], "must be 0 or more, got -1.0"),
        (["--train_eval_prompts", "-2"], "--train_eval_prompts -2: must be 0 or more"),
    ],
)
def test_bad_flags_are_errors_that_name_the_flag(script, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_large_screenshot_is_reduced_to_a_palette_under_the_limit(script, tmp_path):
    from PIL import Image
    import io
    import random

    rng = random.Random(0)
    image = Image.new("RGB", (400, 300))
    image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(400 * 300)])
    raw = io.BytesIO()
    image.save(raw, format="PNG")
    assert raw.tell() > 100 * 1024  # noise does not compress

    size = script.save_png(raw.getvalue(), tmp_path / "shot.png", max_kb=100)
    saved = Image.open(tmp_path / "shot.png")
    assert saved.size == (400, 300) and saved.mode == "P" and size == (tmp_path / "shot.png").stat().st_size
    assert size < raw.tell()

    small = script.save_png(raw.getvalue(), tmp_path / "kept.png", max_kb=10_000)
    assert Image.open(tmp_path / "kept.png").mode == "RGB" and small > size


@pytest.mark.browser
def test_the_sign_in_picture_shows_the_button_and_a_refused_signed_out_vote(script, tmp_path, monkeypatch, capsys):
    if (shutil.which("chromium") or shutil.which("chromium-browser")) is None or (
            shutil.which("chromedriver") is None and not Path("/usr/bin/chromedriver").exists()):
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="PyPI selenium is not installed")
    from PIL import Image

    # a rule reward, not the demo reward model (it trains on first use, for a minute)
    (tmp_path / "shot_rewards.py").write_text("def length(prompts, responses):\n    return [len(r) for r in responses]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PREFKIT_REWARD_FUNCTION", "shot_rewards:length")
    shots = tmp_path / "shots"
    assert script.main(["--tiny", "--tabs", "signin", "--output_dir", str(shots), "--max_new_tokens", "8",
                        "--max_kb", "200"]) == 0

    assert sorted(path.name for path in shots.iterdir()) == ["app-signin.png"]
    shot = shots / "app-signin.png"
    assert Image.open(shot).size[0] == 1280 and shot.stat().st_size <= 200 * 1024
    log = capsys.readouterr().out
    # the script waited for the button and the signed-out line, and checked the refused vote stored nothing
    assert "signed out, a vote is answered: 'Sign in with Hugging Face (the button at the top) to vote." in log
    assert "app-signin.png" in log
