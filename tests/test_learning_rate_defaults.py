"""Learning-rate defaults: TRL's for full fine-tuning, ten times that for a LoRA adapter, an explicit value always."""

import pytest
import trl

from prefkit import DPOConfig, DPOTrainer, GRPOConfig, KTOConfig, RLOOConfig
from prefkit.trainers.startup import LORA_LEARNING_RATE_FACTOR
from helpers import separable_preference_rows


@pytest.mark.parametrize("config_class, trl_class", [(DPOConfig, trl.DPOConfig), (KTOConfig, trl.KTOConfig),
                                                     (GRPOConfig, trl.GRPOConfig), (RLOOConfig, trl.RLOOConfig)])
def test_lora_flags_get_ten_times_trls_full_fine_tuning_rate(config_class, trl_class, tmp_path):
    full = trl_class.__dataclass_fields__["learning_rate"].default
    assert config_class(output_dir=str(tmp_path)).learning_rate == full
    assert config_class(output_dir=str(tmp_path), use_peft=True).learning_rate == pytest.approx(full * LORA_LEARNING_RATE_FACTOR)
    assert config_class(output_dir=str(tmp_path), quantization="4bit").learning_rate == pytest.approx(full * 10)
    assert config_class(output_dir=str(tmp_path), use_peft=True, learning_rate=3e-3).learning_rate == 3e-3
    assert repr(config_class(output_dir=str(tmp_path), use_peft=True).learning_rate) == repr(float(f"{full * 10:g}"))


def test_an_adapter_from_peft_config_gets_the_lora_rate_unless_one_was_given(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig

    data = Dataset.from_list(separable_preference_rows(4))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    default = DPOConfig(output_dir=str(tmp_path / "a"), report_to="none", bf16=False)
    trainer = DPOTrainer(tiny_model_dir, args=default, train_dataset=data, peft_config=lora)
    assert trainer.args.learning_rate == pytest.approx(1e-5)
    explicit = DPOConfig(output_dir=str(tmp_path / "b"), report_to="none", bf16=False, learning_rate=2e-6)
    trainer = DPOTrainer(tiny_model_dir, args=explicit, train_dataset=data, peft_config=lora)
    assert trainer.args.learning_rate == 2e-6
    plain = trl.DPOConfig(output_dir=str(tmp_path / "c"), report_to="none", bf16=False)  # TRL's config: TRL's rate
    trainer = DPOTrainer(tiny_model_dir, args=plain, train_dataset=data, peft_config=lora)
    assert trainer.args.learning_rate == 1e-6
