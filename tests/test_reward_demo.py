"""The demo reward model: trained by prefkit itself on the bundled pairs, cached once, atomically, under a lock."""

import dataclasses
import json
import threading

import pytest

import prefkit.trainers.reward as reward_trainer
from prefkit.reward_model import build_demo_reward_model, demo_reward_model_dir, load_demo_reward_model


@pytest.fixture
def short_demo_preset(monkeypatch):
    """The real recipe (MiniLM, bundled data, held-out topics), cut to two optimizer steps."""
    monkeypatch.setattr(reward_trainer, "DEMO_PRESET", dataclasses.replace(reward_trainer.DEMO_PRESET, max_steps=2))


def test_load_demo_reward_model_trains_it_once_into_the_cache_and_reports_progress(short_demo_preset, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFKIT_CACHE", str(tmp_path))
    updates = []
    reward_model = load_demo_reward_model(progress=lambda fraction, message: updates.append((fraction, message)))

    folder = demo_reward_model_dir()
    assert folder == tmp_path / "reward-demo"
    assert (folder / "reward_distributions.png").exists()
    evaluation = json.loads((folder / "reward_eval.json").read_text())
    assert evaluation["num_pairs"] == 40 and evaluation["train_pairs"] == 212  # the bundled set's held-out topics
    assert reward_model.input_format == "pair"
    fractions = [fraction for fraction, _ in updates]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("step 2/2" in message for _, message in updates)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".reward-demo-")]  # no staging folder left

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

    monkeypatch.setattr(reward_trainer, "train_demo_reward_model", train_slowly)
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

    monkeypatch.setattr(reward_trainer, "train_demo_reward_model", crash)
    with pytest.raises(RuntimeError, match="out of memory"):
        build_demo_reward_model(tmp_path / "demo")
    assert not (tmp_path / "demo").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["demo.lock"]
