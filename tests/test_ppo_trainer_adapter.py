"""The private transformers.Trainer API that PPO's loop relies on, pinned against the installed transformers.

All of it goes through prefkit/trainers/ppo/hf_trainer.py. When a transformers (or accelerate) upgrade renames or
re-signs one of those names, these tests fail and say which, instead of a PPO run failing halfway.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from accelerate.state import GradientState
from transformers import Trainer

import prefkit.trainers.ppo as ppo_package
from prefkit.trainers.ppo import hf_trainer
from prefkit.trainers.ppo.hf_trainer import (
    ACCELERATE_PRIVATE_METHODS,
    TRAINER_LOOP_STATE,
    TRAINER_PRIVATE_METHODS,
    CustomLoopTrainer,
)

PPO_FOLDER = Path(ppo_package.__file__).parent
ACCELERATE_CLASSES = {"GradientState": GradientState}


def parameter_names(function) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name != "self"]


def private_attributes_used(path: Path) -> set[str]:
    """Every ``x._name`` read, called or assigned in a source file, and every ``_name`` method a class in it defines
    (overrides included); dunder names aside."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            names |= {item.name for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


@pytest.mark.parametrize("name", sorted(TRAINER_PRIVATE_METHODS))
def test_each_private_trainer_method_the_adapter_uses_exists_with_the_same_leading_parameters(name):
    expected = list(TRAINER_PRIVATE_METHODS[name])
    method = getattr(Trainer, name, None)
    assert callable(method), f"transformers.Trainer.{name} is gone"
    signature = inspect.signature(method)
    actual = parameter_names(method)
    assert actual[: len(expected)] == expected, f"Trainer.{name}{signature}; the adapter relies on {expected}"
    extra = [signature.parameters[p] for p in actual[len(expected) :]]
    assert all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in extra), (
        f"Trainer.{name}{signature} has new required parameters"
    )


@pytest.mark.parametrize("name", ["_inner_training_loop", "_load_from_checkpoint"])
def test_the_adapters_overrides_accept_what_trainer_train_passes(name):
    assert parameter_names(getattr(CustomLoopTrainer, name)) == parameter_names(getattr(Trainer, name))


@pytest.mark.parametrize("attribute", sorted(TRAINER_LOOP_STATE))
def test_each_loop_attribute_the_adapter_sets_is_read_by_the_installed_trainer(attribute):
    reader = TRAINER_LOOP_STATE[attribute]
    source = inspect.getsource(getattr(Trainer, reader))
    assert f"self.{attribute}" in source, f"Trainer.{reader} no longer reads self.{attribute}"


@pytest.mark.parametrize("qualified_name", sorted(ACCELERATE_PRIVATE_METHODS))
def test_each_private_accelerate_method_the_adapter_calls_exists(qualified_name):
    class_name, method_name = qualified_name.split(".")
    method = getattr(ACCELERATE_CLASSES[class_name], method_name, None)
    assert callable(method), f"accelerate's {qualified_name} is gone"
    assert parameter_names(method) == list(ACCELERATE_PRIVATE_METHODS[qualified_name])


def test_the_adapter_lists_every_private_name_it_uses():
    declared = set(TRAINER_PRIVATE_METHODS) | set(TRAINER_LOOP_STATE)
    declared |= {name.split(".")[1] for name in ACCELERATE_PRIVATE_METHODS}
    undeclared = private_attributes_used(Path(hf_trainer.__file__)) - declared
    assert not undeclared, f"hf_trainer.py uses private names it does not list (so no test pins them): {undeclared}"


@pytest.mark.parametrize(
    "module", sorted(p.name for p in PPO_FOLDER.glob("*.py") if p.name != "hf_trainer.py")
)
def test_no_other_ppo_module_touches_trainer_or_accelerate_private_api(module):
    borrowed = {name for name in private_attributes_used(PPO_FOLDER / module) if hasattr(Trainer, name)}
    borrowed |= private_attributes_used(PPO_FOLDER / module) & set(TRAINER_LOOP_STATE)
    borrowed |= private_attributes_used(PPO_FOLDER / module) & {n.split(".")[1] for n in ACCELERATE_PRIVATE_METHODS}
    assert not borrowed, f"{module} uses Trainer's private {sorted(borrowed)}: go through hf_trainer.py"
