"""Benchmark: prefkit.RewardTrainer against trl.RewardTrainer, same model, pairs and settings.

The same harness as ``bench_dpo.py`` (random-init Qwen2.5-shaped model, here with a scalar ``score`` head; chat-shaped
pairs, ~256-token prompts and ~128-token answers varying ±50%; one process per run, a warm-up, alternating rounds,
medians), for Bradley-Terry reward modeling. Contenders: ``trl`` (trl.RewardTrainer, its defaults), ``trl-best``
(gradient checkpointing off), ``prefkit`` (prefkit.RewardTrainer, its defaults: each pair's prompt computed once),
``prefkit-best`` (the same, checkpointing off), ``prefkit-unshared`` (``prefix_sharing=False``), ``prefkit-packed``
(prefkit-best with ``padding_free=True``) and ``prefkit-grouped`` (prefkit-best with
``train_sampling_strategy="group_by_length"``: another order of the same pairs).

    python scripts/bench_reward.py                       # CPU, the "small" shape
    python scripts/bench_reward.py --size 0.5b --mode qlora   # GPU

Prints one JSON line per run, then pairs/s, CPU-seconds per pair, peak memory, their ratios, and the largest per-step
loss difference from TRL (both minimise -log sigmoid(r_chosen - r_rejected) on the same pairs in the same order).
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time

from bench_dpo import BEST, _current_rss_gib, build_parser, compare


def _worker(impl: str, a) -> dict:
    import torch
    from datasets import load_dataset

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    data = load_dataset("json", data_files=a.data, split="train")
    import prefkit.trainers.reward  # noqa: F401  (both runs import the same libraries before the baseline)
    import trl  # noqa: F401

    rss_before = _current_rss_gib()
    best = impl in BEST  # no gradient checkpointing (a reward model has no reference pass to precompute)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    common = dict(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=a.bs, max_steps=a.steps, learning_rate=a.lr,
        logging_steps=1, save_strategy="no", report_to=[], bf16=cuda, use_cpu=not cuda, max_length=a.max_length,
        gradient_checkpointing=a.gc == "on" and not best, disable_tqdm=True, seed=0,
    )
    if impl.startswith("prefkit"):
        from prefkit import RewardConfig, RewardTrainer

        args = RewardConfig(**common, use_peft=a.mode != "full", quantization="4bit" if a.mode == "qlora" else None,
                            lora_r=16, lora_alpha=32, lora_dropout=0.0, prefix_sharing=impl != "prefkit-unshared",
                            padding_free=impl == "prefkit-packed",
                            **({"train_sampling_strategy": "group_by_length"} if impl == "prefkit-grouped" else {}),
                            final_evaluation=False)
        trainer = RewardTrainer(a.model_dir, args=args, train_dataset=data)
    else:
        from peft import LoraConfig
        from transformers import BitsAndBytesConfig
        from trl import RewardConfig, RewardTrainer

        quantization = None
        if a.mode == "qlora":
            quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                              bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
        peft = None if a.mode == "full" else LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="SEQ_CLS")
        init = {"dtype": dtype if a.mode != "full" else torch.float32}
        args = RewardConfig(**common, model_init_kwargs=init)
        trainer = RewardTrainer(a.model_dir, args=args, train_dataset=data, peft_config=peft, quantization_config=quantization)
    train_start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    tokens = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:  # what building and training the trainer added to the process, imports and data excluded
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 - rss_before
    return dict(impl=impl, size=a.size, mode=a.mode, gc=bool(args.gradient_checkpointing), bs=a.bs, steps=a.steps,
                seconds=round(seconds, 3), train_seconds=round(seconds - (train_start - start), 3),
                tokens_per_s=round(tokens[-1] / seconds, 1) if tokens else None,
                pairs_per_s=round(a.steps * a.bs / seconds, 3),
                cpu_s_per_pair=round(cpu_seconds / (a.steps * a.bs), 4), threads=torch.get_num_threads(),
                final_loss=round(result.training_loss, 5), losses=losses,
                peak_gib=round(peak, 3), memory="cuda max_memory_allocated" if cuda else "peak RSS above the pre-trainer RSS",
                device=torch.cuda.get_device_name(0) if cuda else "cpu")


def main() -> None:
    parser = build_parser(__doc__, "comma-separated subset of trl (TRL's defaults), trl-best (no gradient "
                                   "checkpointing), prefkit (its defaults: prefix-shared pairs), prefkit-best, "
                                   "prefkit-unshared (prefix_sharing=False), prefkit-packed, prefkit-grouped")
    a = parser.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if a.worker:
        print(json.dumps(_worker(a.worker, a)), flush=True)
        return
    compare(a, __file__, "Reward modeling", "Qwen2ForSequenceClassification")


if __name__ == "__main__":
    main()
