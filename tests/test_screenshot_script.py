"""scripts/screenshot_app.py's flags (the script itself drives a browser for minutes and is run by hand, not here)."""

from __future__ import annotations

import importlib.util
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
    assert args.tabs == ["bon", "label", "data", "train"]
    assert args.output_dir == "docs/img" and not args.tiny and args.data_dir is None
    assert args.annotators == ["alice", "bob"] and args.width == 1280
    assert script.FILE_NAMES == {"bon": "app-bon.png", "label": "app-label.png", "data": "app-data.png",
                                 "train": "app-train.png"}


def test_lists_are_split_and_trimmed(script):
    args = script.parse_args(["--tabs", " data, train ", "--annotators", "ann, bo ,", "--tiny", "--train_timeout", "0"])
    assert args.tabs == ["data", "train"] and args.annotators == ["ann", "bo"]
    assert args.tiny and args.train_timeout == 0


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
