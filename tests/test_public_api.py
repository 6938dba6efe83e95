"""The public names a user guesses resolve, lazily, to the real objects."""

import importlib

import pytest

import prefkit


@pytest.mark.parametrize("name", [n for n in prefkit.__all__ if n != "__version__"])
def test_every_public_name_imports(name):
    value = getattr(prefkit, name)
    assert value is getattr(importlib.import_module(prefkit._LAZY[name]), name)


def test_the_names_from_the_guide_are_there():
    from prefkit import DPOConfig, DPOTrainer, PPOConfig, PPOTrainer, RewardTrainer, best_of_n  # noqa: F401

    assert callable(best_of_n)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'DPOTrainr'"):
        prefkit.DPOTrainr  # noqa: B018
