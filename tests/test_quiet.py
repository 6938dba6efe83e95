"""Known-harmless third-party messages are dropped; everything else from the same loggers still shows."""

import logging
import subprocess
import sys

import prefkit  # noqa: F401  (installs the filters)
from prefkit.quiet import BNB_CPU_KERNEL_LOGGER, install_filters


def test_the_bitsandbytes_cpu_kernel_notice_is_dropped_and_other_warnings_are_not(caplog):
    install_filters()  # twice: no second filter
    logger = logging.getLogger(BNB_CPU_KERNEL_LOGGER)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "No module named 'kernels'")
        logger.warning("something else went wrong")
    messages = [r.getMessage() for r in caplog.records if r.name == BNB_CPU_KERNEL_LOGGER]
    assert messages == ["something else went wrong"]


def test_importing_bitsandbytes_after_prefkit_prints_no_kernel_failure():
    result = subprocess.run(
        [sys.executable, "-c", "import prefkit, bitsandbytes"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "gemm_4bit_forward" not in result.stderr + result.stdout


def test_a_training_run_on_the_cpu_raises_no_checkpointing_rename_or_pin_memory_warning(tiny_model_dir, tmp_path):
    """What a user saw on every CPU run: transformers' gradient_checkpointing rename (raised by TRL's own use of the
    old name) and PyTorch's pin_memory warning. A run now raises neither; other warnings are untouched."""
    import warnings

    from datasets import Dataset

    from prefkit import DPOConfig, DPOTrainer
    from helpers import separable_preference_rows

    args = DPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to="none",
                     bf16=False, use_peft=True, lora_r=4, gradient_checkpointing=True, save_strategy="no")
    assert args.dataloader_pin_memory is False  # no accelerator on this machine
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        import prefkit.quiet

        prefkit.quiet.install_filters()  # simplefilter above reset the filters, as a user's own settings might
        trainer = DPOTrainer(tiny_model_dir, args=args, train_dataset=Dataset.from_list(separable_preference_rows(4)))
        trainer.train()
        warnings.warn("an unrelated warning", UserWarning)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "gradient_checkpointing" in m or "pin_memory" in m], messages
    assert "an unrelated warning" in messages


def test_quantization_on_a_machine_without_gpu_is_said_once_with_what_to_use_instead(tiny_model_dir, caplog, monkeypatch):
    import torch

    import prefkit.models as models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(models, "_warned_quantization_on_cpu", False)
    with caplog.at_level(logging.WARNING, logger="prefkit.models"):
        models.load_model(tiny_model_dir, quantization="4bit")
        models.load_model(tiny_model_dir, quantization="4bit")
        models.load_model(tiny_model_dir)
    notes = [r.getMessage() for r in caplog.records if "quantization (QLoRA) is for GPUs" in r.getMessage()]
    assert len(notes) == 1 and "--use_peft" in notes[0]


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _report(rows):
    table = "Key | Status | \n------+---------+-\n" + "".join(f"{key} | {status} | \n" for key, status in rows)
    return "\x1b[1mLlamaForSequenceClassification LOAD REPORT\x1b[0m from: base\n" + table + "\nNotes:\n- MISSING: ..."


def test_the_head_only_load_report_is_dropped_while_loading_an_adapter_base_and_nothing_else():
    from prefkit.quiet import TRANSFORMERS_LOAD_LOGGER, head_loaded_from_adapter

    logger = logging.getLogger(TRANSFORMERS_LOAD_LOGGER)
    collect = _Collect()
    logger.addHandler(collect)
    try:
        with head_loaded_from_adapter():
            logger.warning(_report([("score.weight", "MISSING")]))  # the head the adapter brings: dropped
            logger.warning(_report([("classifier.weight", "MISSING"), ("classifier.bias", "MISSING")]))  # dropped
            logger.warning(_report([("score.weight", "MISSING"), ("model.layers.0.mlp.up_proj.weight", "MISSING")]))
            logger.warning(_report([("score.weight", "UNEXPECTED")]))
            logger.warning("an unrelated warning")
        logger.warning(_report([("score.weight", "MISSING")]))  # outside prefkit's adapter loading: kept
    finally:
        logger.removeHandler(collect)
    assert len(collect.messages) == 4
    assert "up_proj" in collect.messages[0] and "UNEXPECTED" in collect.messages[1]
    assert collect.messages[2] == "an unrelated warning" and "score.weight" in collect.messages[3]


def test_reloading_a_trained_lora_reward_model_reports_no_missing_head(tiny_model_dir, tmp_path):
    from datasets import Dataset

    from prefkit import RewardConfig, RewardModel, RewardTrainer
    from prefkit.quiet import TRANSFORMERS_LOAD_LOGGER
    from helpers import separable_preference_rows

    args = RewardConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to="none",
                        bf16=False, use_peft=True, lora_r=4, save_strategy="no", final_evaluation=False)
    trainer = RewardTrainer(tiny_model_dir, args=args, train_dataset=Dataset.from_list(separable_preference_rows(4)))
    trainer.train()
    trainer.save_model()
    expected = trainer.model.eval()
    logger = logging.getLogger(TRANSFORMERS_LOAD_LOGGER)
    collect = _Collect()
    logger.addHandler(collect)
    try:
        reloaded = RewardModel.from_pretrained(str(tmp_path))
    finally:
        logger.removeHandler(collect)
    assert not [m for m in collect.messages if "LOAD REPORT" in m], collect.messages
    # and the head really is the trained one, not a new random one
    import torch

    head = [p for n, p in expected.named_parameters() if "score" in n and "modules_to_save" in n][0]
    loaded = [p for n, p in reloaded.model.named_parameters() if "score" in n and "modules_to_save" in n][0]
    assert torch.equal(head.detach().cpu(), loaded.detach().cpu())
