"""The demo reward model: trained by prefkit itself on the bundled pairs, cached once, atomically, under a lock."""

import dataclasses
import json
import threading

import pytest

import prefkit.demo as demo
from prefkit.demo import build_demo_reward_model, demo_reward_model_dir, load_demo_reward_model


@pytest.fixture
def short_demo_preset(monkeypatch):
    """The real recipe (MiniLM, bundled data, held-out topics), cut to two optimizer steps."""
    monkeypatch.setattr(demo, "DEMO_PRESET", dataclasses.replace(demo.DEMO_PRESET, max_steps=2))


def test_load_demo_reward_model_trains_it_once_into_the_cache_and_reports_progress(short_demo_preset, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFKIT_CACHE", str(tmp_path))
    updates = []
    reward_model = load_demo_reward_model(progress=lambda fraction, message: updates.append((fraction, message)))

    folder = demo_reward_model_dir()
    assert folder == tmp_path / "reward-demo-v2"
    assert (folder / "reward_distributions.png").exists()
    evaluation = json.loads((folder / "reward_eval.json").read_text())
    assert evaluation["num_pairs"] == 80 and evaluation["train_pairs"] == 424  # the bundled set's held-out topics
    assert reward_model.input_format == "pair"
    fractions = [fraction for fraction, _ in updates]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("step 2/2" in message for _, message in updates)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".reward-demo-v2-")]  # no staging folder left

    updates.clear()
    load_demo_reward_model(progress=lambda fraction, message: updates.append(message))
    assert updates == ["Loading the demo reward model"]  # cached: not trained again


def test_concurrent_builds_train_the_demo_model_once(tmp_path, monkeypatch):
    """Two processes (here threads) asking for the demo model at once: the lock lets one train, the other reuses it."""
    trained = []

    def train_slowly(output_dir, **kwargs):
        import time

        trained.append(output_dir)
        time.sleep(0.5)
        (output_dir / "config.json").write_text("{}")
        (output_dir / "model.safetensors").write_bytes(b"weights")
        (output_dir / "reward_eval.json").write_text(json.dumps({"accuracy": 1.0}))
        return {"accuracy": 1.0}

    monkeypatch.setattr(demo, "train_demo_reward_model", train_slowly)
    target = tmp_path / "demo"
    results = []
    threads = [threading.Thread(target=lambda: results.append(build_demo_reward_model(target))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(trained) == 1
    assert results == [{"accuracy": 1.0}, {"accuracy": 1.0}]
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "reward_eval.json"]


def test_failed_training_leaves_no_half_written_model(tmp_path, monkeypatch):
    def crash(output_dir, **kwargs):
        (output_dir / "config.json").write_text("{}")
        raise RuntimeError("out of memory")

    monkeypatch.setattr(demo, "train_demo_reward_model", crash)
    with pytest.raises(RuntimeError, match="out of memory"):
        build_demo_reward_model(tmp_path / "demo")
    assert not (tmp_path / "demo").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["demo.lock"]


UNSEEN = [  # prompts and answers written for this test; none of the topics is in the bundled data
    ("How can I keep my houseplants alive while I'm on vacation?",
     "Great question! Water them well right before you leave, move them out of direct sun, and group them together "
     "so they keep each other humid. For longer trips, ask a neighbour to water them once a week.",
     "Not my problem. Just let them die."),
    ("What should I cook for a friend who is vegetarian?",
     "A warm vegetable curry with chickpeas and rice is a lovely choice: it's filling, easy to make in one pot, and "
     "you can adjust the spice to your friend's taste.",
     "Whatever. Give them a salad or something, who cares."),
    ("Can you explain what a black hole is?",
     "Sure! A black hole is a region of space where gravity is so strong that nothing, not even light, can escape. "
     "It forms when a very massive star collapses at the end of its life.",
     "Look it up yourself, I'm not a teacher."),
    ("I feel lonely since I moved to a new city. What can I do?",
     "I'm sorry you're feeling lonely; moving is a big change. You could join a local club or class around something "
     "you enjoy, volunteer, or say yes to invitations from coworkers.",
     "Everyone is lonely. Deal with it."),
    ("How do I change a flat tire on my bike?",
     "Here's how: remove the wheel, lever one side of the tire off, pull out the tube, patch the hole or fit a new "
     "tube, then put everything back and pump it up to the pressure printed on the tire.",
     "I don't know. Take it to a shop."),
    ("Write a haiku about autumn.",
     "Crisp leaves drift and spin,\ngolden light on quiet paths,\nthe year breathes out slow.",
     "No. Write your own poem."),
]


@pytest.mark.slow
def test_full_demo_recipe_prefers_kind_helpful_answers_on_unseen_prompts(tmp_path, monkeypatch):
    """The model the app shows: trained with the real preset (a few CPU minutes), then asked about new topics."""
    monkeypatch.setenv("PREFKIT_CACHE", str(tmp_path))
    reward_model = load_demo_reward_model()
    evaluation = json.loads((demo_reward_model_dir() / "reward_eval.json").read_text())
    assert evaluation["accuracy"] >= 0.9
    # not a politeness detector: style-decorrelated held-out pairs and the hand-written probe (issue target >= 0.8)
    assert evaluation["style_decorrelated_accuracy"] >= 0.8 and evaluation["style_decorrelated_pairs"] == 40
    assert evaluation["style_probe_accuracy"] >= 0.8
    prompts = [prompt for prompt, _, _ in UNSEEN]
    kind = reward_model.score(prompts, [answer for _, answer, _ in UNSEEN])
    dismissive = reward_model.score(prompts, [answer for _, _, answer in UNSEEN])
    assert all(k > d for k, d in zip(kind, dismissive)), list(zip(prompts, kind, dismissive))
