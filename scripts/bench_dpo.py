"""Benchmark: prefkit.DPOTrainer against trl.DPOTrainer, same model, data and settings.

Each run is its own process (clean peak-memory numbers); the two trainers alternate, after one throw-away warm-up
run, and the medians are compared. The model is a random-init Qwen2.5-shaped network saved once to a temp folder,
and both trainers load it *by name*, the way users call them (prefkit: ``quantization``/``use_peft`` on the config;
TRL: ``quantization_config``/``peft_config`` arguments).

    python scripts/bench_dpo.py --size tiny --mode lora            # CPU
    python scripts/bench_dpo.py --size 0.5b --mode qlora --gc on   # GPU

Prints one JSON line per run, then a summary with tokens/s and peak memory for each and prefkit/TRL ratios
(target: tokens/s ratio >= 0.97, memory ratio <= 1.00).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=4096),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, vocab_size=151936),
}
WORDS = (
    "teddy bear movie sleep activity companion fun suggest great buddy delightful awesome watch play read story "
    "park picnic garden friend soft cozy warm happy kind gentle quiet tea sea poem river morning evening"
).split()


def _prepare(size: str, folder: str, n_rows: int) -> str:
    """Save the random-init model, its tokenizer and the preference data; return the data file."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from prefkit.data.io import write_jsonl
    from prefkit.testing import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer()
    tokenizer.chat_template = None  # plain-text prompts, as in TRL's measured anchor
    config = Qwen2Config(**SIZES[size], tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    rng = random.Random(0)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    rows = [{"prompt": words(96), "chosen": words(160), "rejected": words(160)} for _ in range(n_rows)]
    path = os.path.join(folder, "pairs.jsonl")
    write_jsonl(rows, path)
    return path


def _current_rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _worker(impl: str, a: argparse.Namespace) -> dict:
    import resource

    import torch
    from datasets import load_dataset

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    data = load_dataset("json", data_files=a.data, split="train")
    import prefkit.trainers.dpo  # noqa: F401  (both runs import the same libraries before the baseline)
    import trl  # noqa: F401

    rss_before = _current_rss_gib()
    common = dict(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=a.bs, max_steps=a.steps, learning_rate=5e-6,
        logging_steps=1, save_strategy="no", report_to=[], bf16=cuda, use_cpu=not cuda, max_length=512,
        gradient_checkpointing=a.gc == "on", disable_tqdm=True, seed=0,
    )
    if impl == "prefkit":
        from prefkit import DPOConfig, DPOTrainer

        args = DPOConfig(**common, use_peft=a.mode != "full", quantization="4bit" if a.mode == "qlora" else None,
                         lora_r=16, lora_alpha=32, lora_dropout=0.0)
        trainer = DPOTrainer(a.model_dir, args=args, train_dataset=data)
    else:
        from peft import LoraConfig
        from transformers import BitsAndBytesConfig
        from trl import DPOConfig, DPOTrainer

        quantization = None
        if a.mode == "qlora":
            quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                              bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
        peft = None if a.mode == "full" else LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
        init = {"dtype": dtype if a.mode != "full" else torch.float32}
        args = DPOConfig(**common, model_init_kwargs=init)
        trainer = DPOTrainer(a.model_dir, args=args, train_dataset=data, peft_config=peft, quantization_config=quantization)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    tokens = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h][-1]
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:  # what building and training the trainer added to the process, imports and data excluded
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20 - rss_before
    return dict(impl=impl, size=a.size, mode=a.mode, gc=a.gc, bs=a.bs, steps=a.steps, seconds=round(seconds, 3),
                tokens_per_s=round(tokens / seconds, 1), final_loss=round(result.training_loss, 5),
                peak_gib=round(peak, 3), memory="cuda max_memory_allocated" if cuda else "peak RSS above the pre-trainer RSS",
                device=torch.cuda.get_device_name(0) if cuda else "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--mode", choices=["lora", "qlora", "full"], default="lora")
    parser.add_argument("--gc", choices=["on", "off"], default="on", help="gradient checkpointing (TRL's default: on)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="alternating prefkit/TRL pairs after one warm-up")
    parser.add_argument("--output", help="also write the summary JSON here")
    parser.add_argument("--worker", choices=["prefkit", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    a = parser.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

    if a.worker:
        print(json.dumps(_worker(a.worker, a)), flush=True)
        return

    folder = tempfile.mkdtemp(prefix=f"bench-dpo-{a.size}-")
    data = _prepare(a.size, folder, a.steps * a.bs + a.bs)
    base = [sys.executable, os.path.abspath(__file__), "--size", a.size, "--mode", a.mode, "--gc", a.gc,
            "--steps", str(a.steps), "--bs", str(a.bs), "--model-dir", folder, "--data", data]

    def run(impl: str) -> dict:
        out = subprocess.run(base + ["--worker", impl], capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode != 0 or not lines:
            raise SystemExit(f"{impl} run failed:\n{out.stderr[-4000:]}")
        record = json.loads(lines[-1])
        print(json.dumps(record), flush=True)
        return record

    run("trl")  # warm-up (page cache, kernels), not counted
    results: dict[str, list[dict]] = {"prefkit": [], "trl": []}
    for repeat in range(a.repeats):
        order = ("prefkit", "trl") if repeat % 2 == 0 else ("trl", "prefkit")
        for impl in order:
            results[impl].append(run(impl))

    def median(impl: str, key: str) -> float:
        return statistics.median(r[key] for r in results[impl])

    summary = {
        "size": a.size, "mode": a.mode, "gc": a.gc, "bs": a.bs, "steps": a.steps, "repeats": a.repeats,
        "device": results["trl"][0]["device"], "memory": results["trl"][0]["memory"],
        "trl_tokens_per_s": median("trl", "tokens_per_s"), "prefkit_tokens_per_s": median("prefkit", "tokens_per_s"),
        "trl_peak_gib": median("trl", "peak_gib"), "prefkit_peak_gib": median("prefkit", "peak_gib"),
        "same_final_loss": all(p["final_loss"] == t["final_loss"] for p, t in zip(results["prefkit"], results["trl"])),
    }
    summary["speed_ratio"] = round(summary["prefkit_tokens_per_s"] / summary["trl_tokens_per_s"], 3)
    summary["memory_ratio"] = round(summary["prefkit_peak_gib"] / summary["trl_peak_gib"], 3)
    print()
    print(f"DPO {a.size} {a.mode} gc={a.gc} bs={a.bs} on {summary['device']} (median of {a.repeats}, {summary['memory']})")
    print(f"  tokens/s   trl {summary['trl_tokens_per_s']:>10.1f}   prefkit {summary['prefkit_tokens_per_s']:>10.1f}   ratio {summary['speed_ratio']:.3f}  (target >= 0.97)")
    print(f"  peak GiB   trl {summary['trl_peak_gib']:>10.3f}   prefkit {summary['prefkit_peak_gib']:>10.3f}   ratio {summary['memory_ratio']:.3f}  (target <= 1.00)")
    print(f"  same final loss in every pair: {summary['same_final_loss']}")
    if a.output:
        with open(a.output, "w") as f:
            json.dump({"summary": summary, "runs": results}, f, indent=2)


if __name__ == "__main__":
    main()
