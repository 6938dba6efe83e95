"""prefkit.ref_cache: keys by content (reference weights without the trainable adapter, tokenized rows, settings),
atomic entries, and stale or foreign entries detected and recomputed, never used."""

import json
import shutil

import pytest
import torch
from datasets import Dataset

from prefkit import ref_cache
from prefkit.ref_cache import StaleCacheWarning, cache_key, dataset_fingerprint, load, reference_fingerprint, save

ROWS = [{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]},
        {"prompt_ids": [7], "chosen_ids": [8, 9, 10], "rejected_ids": [11, 12]}]


def test_the_data_fingerprint_follows_content_not_history():
    a = Dataset.from_list(ROWS)
    b = Dataset.from_list([{"x": 0}, {"x": 1}]).map(lambda row, i: ROWS[i], with_indices=True, remove_columns=["x"])
    assert dataset_fingerprint(a) == dataset_fingerprint(b)
    assert dataset_fingerprint(a.select([0, 1])) == dataset_fingerprint(a)
    assert dataset_fingerprint(a.select([1, 0])) != dataset_fingerprint(a)  # order is part of it: rows align by index
    changed = [dict(ROWS[0]), ROWS[1]]
    changed[0]["chosen_ids"] = [4, 99]
    assert dataset_fingerprint(Dataset.from_list(changed)) != dataset_fingerprint(a)
    assert dataset_fingerprint(a, ["prompt_ids"]) != dataset_fingerprint(a)


def test_the_reference_fingerprint_ignores_the_trainable_adapter_but_not_the_base_or_a_ref_adapter(tiny_model):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    before = reference_fingerprint(model)
    lora = next(p for n, p in model.named_parameters() if "lora_A" in n)
    with torch.no_grad():
        lora.add_(1.0)
    assert reference_fingerprint(model) == before  # the reference pass disables this adapter
    model.add_adapter("ref", LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with_ref = reference_fingerprint(model)
    assert with_ref != before  # TRL's previous-round reference adapter is part of the reference
    base = next(p for n, p in model.named_parameters() if "embed_tokens" in n)
    with torch.no_grad():
        base[0, 0] += 1e-3
    assert reference_fingerprint(model) != with_ref


def parts(**changes):
    return {"reference": "r" * 64, "data": "d" * 64, "max_length": 256, "truncation_mode": "keep_start",
            "ld_alpha": None, "precision": "float32", **changes}


def test_an_entry_round_trips_and_another_key_misses(tmp_path):
    chosen, rejected = torch.tensor([-1.5, -2.0]), torch.tensor([-3.0, -4.25])
    folder = save(tmp_path, parts(), chosen, rejected)
    assert folder.name == cache_key(parts()) and sorted(p.name for p in folder.iterdir()) == ["meta.json", "ref_logps.safetensors"]
    got = load(tmp_path, parts(), 2)
    assert got is not None and torch.equal(got[0], chosen) and torch.equal(got[1], rejected)
    assert load(tmp_path, parts(max_length=128), 2) is None  # another truncation: another key, nothing there
    assert not list(tmp_path.glob(".tmp-*"))  # the staging folder is gone


def test_a_foreign_entry_under_this_key_is_detected_and_not_used(tmp_path):
    other = save(tmp_path, parts(data="e" * 64), torch.zeros(2), torch.zeros(2))
    shutil.copytree(other, tmp_path / cache_key(parts()))  # copied or renamed by hand
    with pytest.warns(StaleCacheWarning, match="metadata differs from this run's \\(data\\)"):
        assert load(tmp_path, parts(), 2) is None


def test_a_wrong_row_count_or_a_corrupt_file_is_detected(tmp_path):
    save(tmp_path, parts(), torch.zeros(3), torch.zeros(3))
    with pytest.warns(StaleCacheWarning, match="version or row count"):
        assert load(tmp_path, parts(), 2) is None
    folder = save(tmp_path, parts(), torch.zeros(2), torch.zeros(2))
    (folder / "ref_logps.safetensors").write_bytes(b"not a safetensors file")
    with pytest.warns(StaleCacheWarning, match="cannot be read"):
        assert load(tmp_path, parts(), 2) is None
    meta = json.loads((folder / "meta.json").read_text())
    save(tmp_path, parts(), torch.tensor([0.0, float("nan")]), torch.zeros(2))
    with pytest.warns(StaleCacheWarning, match="not finite"):
        assert load(tmp_path, parts(), 2) is None
    assert meta["key"]["max_length"] == 256


def test_save_refuses_mismatched_vectors(tmp_path):
    with pytest.raises(ValueError, match="two vectors of one length"):
        save(tmp_path, parts(), torch.zeros(2), torch.zeros(3))


def test_the_default_folder_follows_prefkit_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFKIT_CACHE", str(tmp_path))
    assert ref_cache.default_cache_dir() == tmp_path / "ref_logps"


# -- through prefkit.DPOTrainer ----------------------------------------------------------------------------------------


def _trainer(model_dir, tmp_path, rows, cache_dir, **config):
    from prefkit import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / "out"), precompute_ref_log_probs=True, ref_logps_cache_dir=str(cache_dir),
                     use_peft=True, lora_r=4, per_device_train_batch_size=2, max_steps=1, report_to="none",
                     save_strategy="no", bf16=False, disable_tqdm=True, **config)
    return DPOTrainer(model_dir, args=args, train_dataset=Dataset.from_list(rows))


def _pairs(n=4, suffix=""):
    return [{"prompt": f"Question {i}?", "chosen": f"A good answer {i}{suffix}.", "rejected": f"No {i}."} for i in range(n)]


@pytest.mark.slow
def test_a_second_run_with_another_beta_and_seed_reuses_the_reference_pass(tiny_model_dir, tmp_path, monkeypatch):
    import trl

    computed = []
    original = trl.DPOTrainer._precompute_ref_logps

    def counting(self, dataset, name, batch_size):
        computed.append(name)
        return original(self, dataset, name, batch_size)

    monkeypatch.setattr(trl.DPOTrainer, "_precompute_ref_logps", counting)
    cache = tmp_path / "cache"
    first = _trainer(tiny_model_dir, tmp_path, _pairs(), cache, beta=0.1, seed=1)
    assert computed == ["train"] and len(list(cache.iterdir())) == 1
    second = _trainer(tiny_model_dir, tmp_path, _pairs(), cache, beta=0.3, seed=2)
    assert computed == ["train"]  # reused: TRL's reference pass did not run again
    for column in ("ref_chosen_logps", "ref_rejected_logps"):
        assert second.train_dataset[column] == pytest.approx(first.train_dataset[column], abs=1e-6)
    # the cached numbers are the ones TRL computes without the cache
    plain = _trainer(tiny_model_dir, tmp_path, _pairs(), cache, beta=0.3, seed=2, ref_logps_cache=False)
    assert computed == ["train", "train"]
    assert second.train_dataset["ref_chosen_logps"] == pytest.approx(plain.train_dataset["ref_chosen_logps"], abs=1e-5)
    second.train()
    plain.train()
    loss = [e["loss"] for e in second.state.log_history if "loss" in e]
    assert loss == pytest.approx([e["loss"] for e in plain.state.log_history if "loss" in e], abs=1e-5)


@pytest.mark.slow
def test_changed_data_or_truncation_computes_again(tiny_model_dir, tmp_path):
    cache = tmp_path / "cache"
    _trainer(tiny_model_dir, tmp_path, _pairs(), cache)
    _trainer(tiny_model_dir, tmp_path, _pairs(suffix=" indeed"), cache)
    _trainer(tiny_model_dir, tmp_path, _pairs(), cache, max_length=12)
    assert len(list(cache.iterdir())) == 3
