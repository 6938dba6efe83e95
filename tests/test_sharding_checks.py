"""A quantized base under parameter sharding (DeepSpeed ZeRO-3, FSDP) is refused before any model loads, with what
to do instead; a launch that needs a missing package (DeepSpeed) is one `error:` line."""

import json

import pytest

from prefkit import DPOConfig, PPOConfig, RewardConfig
from prefkit.cli import main as prefkit
from prefkit.presets import SENTIMENT_PAIRS
from prefkit.trainers.startup import check_quantization_with_sharding, parameter_sharding

ZERO3 = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}
ZERO2 = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}
FSDP = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}


class Args:
    def __init__(self, deepspeed=None, fsdp=None):
        self.deepspeed, self.fsdp = deepspeed, fsdp


def config(quantization):
    return DPOConfig(output_dir="unused", quantization=quantization, report_to="none")


@pytest.mark.parametrize("environ, expected", [({}, None), (ZERO2, None), (ZERO3, "deepspeed-zero3"), (FSDP, "fsdp"),
                                               ({"ACCELERATE_USE_DEEPSPEED": "false", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, None)])
def test_sharding_is_read_from_what_accelerate_launch_sets(environ, expected):
    assert parameter_sharding(Args(), environ) == expected


def test_sharding_is_read_from_the_configs_own_deepspeed_and_fsdp_fields(tmp_path):
    zero3 = tmp_path / "ds.json"
    zero3.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert parameter_sharding(Args(deepspeed=str(zero3)), {}) == "deepspeed-zero3"
    assert parameter_sharding(Args(deepspeed={"zero_optimization": {"stage": 2}}), {}) is None
    assert parameter_sharding(Args(fsdp="full_shard auto_wrap"), {}) == "fsdp"
    assert parameter_sharding(Args(fsdp=[]), {}) is None


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
@pytest.mark.parametrize("environ, name", [(ZERO3, "DeepSpeed ZeRO-3"), (FSDP, "FSDP")])
def test_a_quantized_base_under_sharding_is_refused_with_what_to_do(quantization, environ, name):
    with pytest.raises(ValueError) as error:
        check_quantization_with_sharding(config(quantization), "DPO", environ)
    message = str(error.value)
    assert f"a {quantization} bitsandbytes base cannot be sharded with {name}" in message
    assert "--quantization none --use_peft true" in message and "deepspeed_zero2.yaml" in message


@pytest.mark.parametrize("environ", [{}, ZERO2])
def test_a_quantized_base_with_whole_weights_per_process_is_allowed(environ):
    check_quantization_with_sharding(config("4bit"), "DPO", environ)


def test_bf16_lora_under_sharding_is_allowed():
    check_quantization_with_sharding(config(None), "DPO", ZERO3)
    check_quantization_with_sharding(config(None), "DPO", FSDP)


@pytest.mark.parametrize("config_class", [DPOConfig, RewardConfig, PPOConfig])
def test_every_trainer_refuses_before_loading_a_model(config_class, monkeypatch, tmp_path):
    """The check runs in the shared prologue, before the (here nonexistent) model would load."""
    from datasets import Dataset

    from prefkit import DPOTrainer, PPOTrainer, RewardTrainer

    args = config_class(output_dir=str(tmp_path), quantization="4bit", report_to="none")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    trainer_class = {DPOConfig: DPOTrainer, RewardConfig: RewardTrainer, PPOConfig: PPOTrainer}[config_class]
    rows = [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}] * 2
    with pytest.raises(ValueError, match="cannot be sharded with FSDP"):
        trainer_class("no-such-model-is-ever-loaded", args=args, train_dataset=Dataset.from_list(rows))


def test_the_command_prints_one_error_line_and_exits_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    argv = ["dpo", "--dataset_name", str(SENTIMENT_PAIRS), "--quantization", "4bit", "--output_dir", str(tmp_path / "out"),
            "--report_to", "none"]
    assert prefkit(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: DPO: a 4bit bitsandbytes base cannot be sharded with FSDP")


def test_a_launch_that_needs_a_missing_package_is_one_error_line(monkeypatch, capsys, tmp_path):
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    argv = ["dpo", "--dataset_name", str(SENTIMENT_PAIRS), "--output_dir", str(tmp_path / "out"), "--report_to", "none"]
    assert prefkit(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the package 'deepspeed' is needed by this launch configuration but is not installed. Install "
                   "it (pip install deepspeed) or launch without it (e.g. scripts/accelerate_configs/multi_gpu.yaml "
                   "instead of a DeepSpeed config)."]
