"""The bundled preference set: reproducible from its script, valid TRL data, documented, and learnable in a way that
carries over to requests on topics it has never seen."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prefkit.data import bundled_preferences_path, validate_preference_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rows():
    return [json.loads(line) for line in bundled_preferences_path().read_text(encoding="utf-8").splitlines()]


def test_the_committed_file_is_byte_identical_to_a_fresh_generation(tmp_path):
    fresh = tmp_path / "preferences.jsonl"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_preference_data.py"), "--output", str(fresh)],
        check=True,
        capture_output=True,
    )
    assert fresh.read_bytes() == bundled_preferences_path().read_bytes()


def test_it_has_at_least_200_valid_pairs_with_unique_ids(rows):
    assert len(rows) >= 200
    assert validate_preference_dataset(rows, "bundled") is None
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(set(r) == {"id", "prompt", "chosen", "rejected", "category", "split", "style"} for r in rows)


def test_held_out_requests_share_no_prompt_with_training(rows):
    train = {r["prompt"] for r in rows if r["split"] == "train"}
    test = {r["prompt"] for r in rows if r["split"] == "test"}
    assert test and not train & test


def test_the_card_states_the_licence_that_it_is_synthetic_and_the_true_counts(rows):
    card = (bundled_preferences_path().parent / "README.md").read_text(encoding="utf-8")
    assert "license: cc0-1.0" in card and "CC0-1.0" in card
    assert "**This data is synthetic.**" in card
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "test")}
    assert f"{len(rows)} preference pairs on {len({r['prompt'] for r in rows})} everyday requests" in card
    assert f"`train` ({counts['train']} pairs) or `test` ({counts['test']} pairs)" in card
    longer = sum(len(r["rejected"]) > len(r["chosen"]) for r in rows)
    assert f"{longer} rejected answers are longer than their" in card


def test_it_includes_the_lecture_example_and_unsafe_rejections(rows):
    teddy = [r for r in rows if r["prompt"] == "Suggest a new activity I could do with my teddy bear."]
    assert teddy and any("oven" in r["rejected"] for r in teddy)
    assert any("bleach and ammonia" in r["rejected"] for r in rows)


def _bag_of_words(texts, vocabulary):
    import torch

    features = torch.zeros(len(texts), len(vocabulary))
    for i, text in enumerate(texts):
        for word in re.findall(r"[a-z']+|[!?.]", text.lower()):
            if word in vocabulary:
                features[i, vocabulary[word]] += 1.0
    return features


def test_a_bag_of_words_reward_trained_on_train_ranks_unseen_topics_correctly(rows):
    """Bradley-Terry on word counts, trained on the train split, must order >= 90% of held-out pairs (unseen topics)
    correctly: the signal is the style of the answer, not the topic."""
    import torch

    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    words = sorted(
        {w for r in train for t in (r["chosen"], r["rejected"]) for w in re.findall(r"[a-z']+|[!?.]", t.lower())}
    )
    vocabulary = {w: i for i, w in enumerate(words)}
    torch.manual_seed(0)
    weights = torch.zeros(len(vocabulary), requires_grad=True)
    optimizer = torch.optim.Adam([weights], lr=0.05)
    chosen, rejected = (_bag_of_words([r[c] for r in train], vocabulary) for c in ("chosen", "rejected"))
    for _ in range(200):
        optimizer.zero_grad()
        loss = (
            -torch.nn.functional.logsigmoid(chosen @ weights - rejected @ weights).mean()
            + 1e-3 * weights.square().sum()
        )
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        margin = (
            _bag_of_words([r["chosen"] for r in test], vocabulary)
            - _bag_of_words([r["rejected"] for r in test], vocabulary)
        ) @ weights
    assert (margin > 0).float().mean().item() >= 0.9


def test_length_alone_does_not_separate_the_columns(rows):
    assert sum(len(r["chosen"]) > len(r["rejected"]) for r in rows) / len(rows) < 0.95


def test_style_decorrelated_pairs_defeat_length_and_politeness_shortcuts(rows):
    """Half the pairs prefer the terse answer, half the polite one, in train and in test: neither 'longer wins' nor
    'politer wins' passes them."""
    decorrelated = [r for r in rows if r["style"] != "kind-vs-unhelpful"]
    assert len(decorrelated) == len(rows) // 2
    longer_wins = sum(len(r["chosen"]) > len(r["rejected"]) for r in decorrelated) / len(decorrelated)
    assert 0.4 <= longer_wins <= 0.6
    for split in ("train", "test"):
        styles = {r["style"].split("-vs-")[0] for r in decorrelated if r["split"] == split}
        assert styles == {"terse-right", "polite-right"}


def test_the_style_probe_is_hand_written_outside_the_templates_and_valid():
    import json

    from prefkit.demo import style_probe_pairs

    probe = style_probe_pairs()
    assert validate_preference_dataset(probe, "style_probe") is None
    assert {r["style"].split("-vs-")[0] for r in probe} == {"terse-right", "polite-right"}
    bundled_prompts = {json.loads(line)["prompt"] for line in bundled_preferences_path().read_text().splitlines()}
    assert not bundled_prompts & {r["prompt"] for r in probe}
