"""Shared fixtures: a tiny offline Llama (causal LM and reward model from the same folder), built once per session."""

from __future__ import annotations

import os

# Set before transformers / huggingface_hub / trl are imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Converted models and demo artefacts go to a per-session folder unless the caller pinned PREFKIT_CACHE."""
    if "PREFKIT_CACHE" not in os.environ:
        os.environ["PREFKIT_CACHE"] = str(tmp_path_factory.mktemp("prefkit-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from prefkit.testing import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from prefkit.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def tiny_policy(tiny_model_dir):
    """``(model, tokenizer)`` of the tiny model in eval mode, as the app tests inject it: one per test module."""
    from prefkit.models import load_model

    model, tokenizer = load_model(tiny_model_dir)
    return model.eval(), tokenizer


@pytest.fixture
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def separable_pairs():
    from datasets import Dataset

    from helpers import separable_preference_rows

    return Dataset.from_list(separable_preference_rows(32))
