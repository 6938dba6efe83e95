"""Benchmark: prefkit.DPOTrainer against trl.DPOTrainer, same model, pairs and settings.

Contenders (``--contenders``, default the first four):

- ``trl``: trl.DPOTrainer with its defaults (gradient checkpointing on, a reference forward every step);
- ``trl-best``: TRL's fastest settings for the same pairs: reference log-probs precomputed once
  (``precompute_ref_log_probs``), gradient checkpointing off;
- ``prefkit``: prefkit.DPOTrainer with its defaults: prefix-shared pairs (each pair's prompt computed once);
- ``prefkit-best``: prefkit's fastest settings: prefix sharing, reference log-probs precomputed (into a fresh cache,
  so the reference pass is paid as TRL pays it), gradient checkpointing off;
- ``prefkit-unshared``: ``prefix_sharing=False``, TRL's batch through prefkit's wrapper;
- ``prefkit-packed``: prefkit-best with ``padding_free=True`` (each micro-batch's pairs packed into one row);
- ``prefkit-grouped``: prefkit-best with ``train_sampling_strategy="group_by_length"`` (pairs of similar lengths
  batched together: another order of the same pairs, so its loss curve is not compared with TRL's);
- ``prefkit-cached``: prefkit-best reading its reference log-probs from a cache an untimed run filled first: a later
  run of a sweep (another beta, learning rate or seed on the same pairs and base model).

Every contender trains on the same pairs in the same order with the same batch size, so the numbers compare the
same optimisation step for step. Each run is its own process (clean peak-memory numbers); the contenders alternate,
after one throw-away warm-up run, and the medians are compared. The model is a random-init Qwen2.5-shaped network
saved once to a temp folder (``--size small`` is sized for a 2-core CPU; ``0.5b`` and ``1.5b`` are the real shapes),
and both trainers load it *by name*, the way users call them (prefkit: ``quantization``/``use_peft`` on the config;
TRL: ``quantization_config``/``peft_config`` arguments). The pairs are chat-shaped: ~256-token prompts and ~128-token
answers, every length varying uniformly by ±50%.

    python scripts/bench_dpo.py                                      # CPU: the small shape, LoRA
    python scripts/bench_dpo.py --size 0.5b --mode qlora             # GPU

The clock runs from building the trainer to the end of ``train()``: TRL precomputes reference log-probs in its
constructor, and a "best" run pays for that pass. Prints one JSON line per run, then a summary with pairs/s, CPU
seconds per pair (less sensitive than wall time to other jobs on the machine: each run is one process, and with
``OMP_NUM_THREADS=1`` one thread), peak memory, their ratios (``prefkit-best`` against ``trl-best``, the others
against ``trl``), and how far each contender's per-step loss curve is from TRL's.
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
    # "small" is sized for a 2-core CPU: the attention, MLP and head proportions of Qwen2.5, ~6M parameters
    "small": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, vocab_size=8192),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=4096),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, vocab_size=151936),
}
CONTENDERS = ("trl", "trl-best", "prefkit", "prefkit-best", "prefkit-unshared", "prefkit-packed", "prefkit-grouped",
              "prefkit-cached")
# precomputed reference, no checkpointing
BEST = ("trl-best", "prefkit-best", "prefkit-packed", "prefkit-grouped", "prefkit-cached")
SAME_ORDER = ("trl", "trl-best", "prefkit", "prefkit-best", "prefkit-unshared", "prefkit-packed", "prefkit-cached")
# "best": each library's fastest settings for the same pairs: reference log-probs precomputed once before training
# (no reference forward per step) and no gradient checkpointing; prefkit adds prefix sharing (its default). The batch
# stays the same for every contender, so the numbers compare the same optimisation, step for step.
WORDS = (
    "teddy bear movie sleep activity companion fun suggest great buddy delightful awesome watch play read story "
    "park picnic garden friend soft cozy warm happy kind gentle quiet tea sea poem river morning evening"
).split()


def _prepare(size: str, folder: str, n_rows: int, prompt_words: int, answer_words: int, spread: float = 0.5,
             model_class: str = "Qwen2ForCausalLM") -> tuple[str, dict]:
    """Save the random-init model, its tokenizer and the preference data; return the data file and mean token
    lengths of prompts and answers. Lengths vary uniformly by up to ±``spread`` around the requested word counts."""
    import torch
    import transformers
    from transformers import Qwen2Config

    from prefkit.data.io import write_jsonl
    from prefkit.testing import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer()
    tokenizer.chat_template = None  # plain-text prompts, as in TRL's measured anchor
    config = Qwen2Config(**SIZES[size], tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    if "SequenceClassification" in model_class:
        config.num_labels = 1  # a reward model's scalar head
    torch.manual_seed(0)
    getattr(transformers, model_class)(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    rng = random.Random(0)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    vary = lambda k: max(1, round(k * rng.uniform(1 - spread, 1 + spread)))  # noqa: E731
    rows = [{"prompt": words(vary(prompt_words)), "chosen": " " + words(vary(answer_words)),
             "rejected": " " + words(vary(answer_words))} for _ in range(n_rows)]
    path = os.path.join(folder, "pairs.jsonl")
    write_jsonl(rows, path)
    count = lambda column: statistics.mean(len(tokenizer(row[column])["input_ids"]) for row in rows)  # noqa: E731
    lengths = {"prompt_tokens": round(count("prompt"), 1),
               "answer_tokens": round((count("chosen") + count("rejected")) / 2, 1)}
    return path, lengths


def _current_rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def common_args(impl: str, a: argparse.Namespace, cuda: bool) -> dict:
    """Training arguments every contender shares; the "best" ones turn gradient checkpointing off."""
    return dict(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=a.bs, max_steps=a.steps, learning_rate=a.lr,
        logging_steps=1, save_strategy="no", report_to=[], bf16=cuda, use_cpu=not cuda, max_length=a.max_length,
        gradient_checkpointing=a.gc == "on" and impl not in BEST, disable_tqdm=True, seed=0,
    )


def prefkit_args(impl: str, a: argparse.Namespace) -> dict:
    """prefkit's model loading and the batching each prefkit contender names."""
    return dict(use_peft=a.mode != "full", quantization="4bit" if a.mode == "qlora" else None, lora_r=16, lora_alpha=32,
                lora_dropout=0.0, prefix_sharing=impl != "prefkit-unshared", padding_free=impl == "prefkit-packed",
                **({"train_sampling_strategy": "group_by_length"} if impl == "prefkit-grouped" else {}))


def trl_model_args(a: argparse.Namespace, task_type: str) -> dict:
    """TRL's way to ask for the same model: ``peft_config`` and ``quantization_config`` arguments."""
    import torch
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    quantization = None
    if a.mode == "qlora":
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
    peft = None if a.mode == "full" else LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                    task_type=task_type)
    return dict(peft_config=peft, quantization_config=quantization)


def trl_init(a: argparse.Namespace) -> dict:
    import torch

    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"dtype": dtype if a.mode != "full" else torch.float32}


def timed_run(impl: str, a: argparse.Namespace, build) -> dict:
    """Build the trainer (``build()``), train it, and return the run's record: wall time, CPU time and peak memory
    from just before the trainer is built (TRL precomputes reference log-probs in its constructor, and a "best" run
    must pay for that pass; model loading, the same for every contender, is counted too) to the end of training."""
    import resource

    import torch

    cuda = torch.cuda.is_available()
    rss_before = _current_rss_gib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    trainer = build()
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
    args = trainer.args
    return dict(impl=impl, size=a.size, mode=a.mode, gc=bool(args.gradient_checkpointing),
                precompute_ref=bool(getattr(args, "precompute_ref_log_probs", False)), bs=a.bs, steps=a.steps,
                seconds=round(seconds, 3), train_seconds=round(seconds - (train_start - start), 3),
                tokens_per_s=round(tokens[-1] / seconds, 1) if tokens else None,
                pairs_per_s=round(a.steps * a.bs / seconds, 3),
                cpu_s_per_pair=round(cpu_seconds / (a.steps * a.bs), 4), threads=torch.get_num_threads(),
                final_loss=round(result.training_loss, 5), losses=losses,
                peak_gib=round(peak, 3), memory="cuda max_memory_allocated" if cuda else "peak RSS above the pre-trainer RSS",
                device=torch.cuda.get_device_name(0) if cuda else "cpu")


def _worker(impl: str, a: argparse.Namespace) -> dict:
    import torch
    from datasets import load_dataset

    cuda = torch.cuda.is_available()
    data = load_dataset("json", data_files=a.data, split="train")
    import prefkit.trainers.dpo  # noqa: F401  (both runs import the same libraries before the baseline)
    import trl  # noqa: F401

    best = impl in BEST
    common = dict(**common_args(impl, a, cuda), precompute_ref_log_probs=best, precompute_ref_batch_size=2 * a.bs)

    def build():
        if impl.startswith("prefkit"):
            from prefkit import DPOConfig, DPOTrainer

            # a fresh cache per run: the reference pass is paid here, as TRL pays it (a later run of a sweep would
            # read it back for free, which this benchmark does not count)
            cache = os.path.join(a.model_dir, "ref-cache") if impl == "prefkit-cached" else tempfile.mkdtemp(prefix="ref-cache-")
            args = DPOConfig(**common, **prefkit_args(impl, a), ref_logps_cache_dir=cache)
            return DPOTrainer(a.model_dir, args=args, train_dataset=data)
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**common, model_init_kwargs=trl_init(a))
        return DPOTrainer(a.model_dir, args=args, train_dataset=data, **trl_model_args(a, "CAUSAL_LM"))

    return timed_run(impl, a, build)


def build_parser(doc: str, contenders_help: str) -> argparse.ArgumentParser:
    """The options every preference-training benchmark here shares (bench_dpo.py, bench_reward.py)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--mode", choices=["lora", "qlora", "full"], default="lora")
    parser.add_argument("--gc", choices=["on", "off"], default="on", help="gradient checkpointing (TRL's default: on)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds of every contender after one warm-up")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate; large enough that the loss moves")
    parser.add_argument("--prompt-words", type=int, default=77, help="mean prompt length in words (77: ~256 tokens)")
    parser.add_argument("--answer-words", type=int, default=39, help="mean answer length in words (39: ~128 tokens)")
    parser.add_argument("--spread", type=float, default=0.5, help="lengths vary uniformly by ±this fraction")
    parser.add_argument("--max-length", type=int, default=1024, help="max_length of prompt + answer (tokens)")
    parser.add_argument("--contenders", default="trl,trl-best,prefkit,prefkit-best", help=contenders_help)
    parser.add_argument("--output", help="also write the summary JSON here")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    return parser


def compare(a: argparse.Namespace, script: str, task: str, model_class: str) -> dict:
    """Prepare the model and pairs once, run every contender in its own process (one warm-up, then alternating
    rounds), print each run's JSON line and a summary table; return the summary."""
    contenders = [name.strip() for name in a.contenders.split(",") if name.strip()]
    unknown = sorted(set(contenders) - set(CONTENDERS))
    if unknown or "trl" not in contenders:
        raise SystemExit(f"--contenders: {unknown or 'trl is missing'}; choose among {', '.join(CONTENDERS)}, trl included.")
    folder = tempfile.mkdtemp(prefix=f"bench-{task.split()[0].lower()}-{a.size}-")
    data, lengths = _prepare(a.size, folder, a.steps * a.bs + a.bs, a.prompt_words, a.answer_words, a.spread,
                             model_class=model_class)
    base = [sys.executable, os.path.abspath(script), "--size", a.size, "--mode", a.mode, "--gc", a.gc,
            "--steps", str(a.steps), "--bs", str(a.bs), "--lr", str(a.lr), "--max-length", str(a.max_length),
            "--model-dir", folder, "--data", data]

    def run(impl: str) -> dict:
        out = subprocess.run(base + ["--worker", impl], capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode != 0 or not lines:
            raise SystemExit(f"{impl} run failed:\n{out.stderr[-4000:]}")
        record = json.loads(lines[-1])
        print(json.dumps(record), flush=True)
        return record

    run("trl")  # warm-up (page cache, kernels), not counted
    if "prefkit-cached" in contenders:
        run("prefkit-cached")  # fills the shared reference cache, not counted: the first run of a sweep
    results: dict[str, list[dict]] = {impl: [] for impl in contenders}
    for repeat in range(a.repeats):
        order = contenders if repeat % 2 == 0 else contenders[::-1]
        for impl in order:
            results[impl].append(run(impl))

    def median(impl: str, key: str) -> float | None:
        values = [r[key] for r in results[impl] if r.get(key) is not None]
        return statistics.median(values) if values else None

    def loss_gap(impl: str) -> float | None:
        """Largest per-step loss difference from TRL over all paired runs (None: another order of the pairs)."""
        if impl not in SAME_ORDER:
            return None
        return max(abs(x - y) for ours, theirs in zip(results[impl], results["trl"])
                   for x, y in zip(ours["losses"], theirs["losses"], strict=True))

    summary = {
        "task": task, "size": a.size, "mode": a.mode, "gc": a.gc, "bs": a.bs, "steps": a.steps, "lr": a.lr, "repeats": a.repeats,
        **lengths, "device": results["trl"][0]["device"], "memory": results["trl"][0]["memory"],
        "loss_moved": round(results["trl"][0]["losses"][0] - results["trl"][0]["losses"][-1], 4),
    }
    def baseline(impl: str) -> str:
        """What a contender is compared with: TRL's best settings for prefkit's best, TRL's defaults otherwise."""
        return "trl-best" if impl in BEST and impl != "trl-best" and "trl-best" in contenders else "trl"

    for impl in contenders:
        key = impl.replace("-", "_")
        for metric in ("pairs_per_s", "tokens_per_s", "peak_gib", "cpu_s_per_pair"):
            summary[f"{key}_{metric}"] = median(impl, metric)
        if impl != "trl":
            ref = baseline(impl)
            summary[f"{key}_baseline"] = ref
            summary[f"{key}_speed_ratio"] = round(median(impl, "pairs_per_s") / median(ref, "pairs_per_s"), 3)
            summary[f"{key}_cpu_ratio"] = round(median(ref, "cpu_s_per_pair") / median(impl, "cpu_s_per_pair"), 3)
            summary[f"{key}_memory_ratio"] = round(median(impl, "peak_gib") / median(ref, "peak_gib"), 3)
            gap = loss_gap(impl)
            summary[f"{key}_max_loss_gap"] = None if gap is None else float(f"{gap:.2g}")
    print()
    print(f"{task} {a.size} {a.mode} gc={a.gc} bs={a.bs} lr={a.lr} on {summary['device']} (median of {a.repeats}, "
          f"{summary['memory']}); prompts {lengths['prompt_tokens']} tokens, answers {lengths['answer_tokens']} "
          f"tokens on average; the loss moved by {summary['loss_moved']} over {a.steps} steps")
    print(f"  {'contender':<17} {'pairs/s':>8} {'cpu-s/pair':>10} {'peak GiB':>8}   ratios to the baseline "
          "(speed: pairs/s; cpu: cpu-seconds per pair, inverted; memory: peak)")
    for impl in contenders:
        key = impl.replace("-", "_")
        row = (f"  {impl:<17} {median(impl, 'pairs_per_s'):>8.3f} {median(impl, 'cpu_s_per_pair'):>10.4f} "
               f"{median(impl, 'peak_gib'):>8.3f}")
        if impl != "trl":
            row += (f"   vs {summary[key + '_baseline']:<8} speed x{summary[key + '_speed_ratio']:.3f}  "
                    f"cpu x{summary[key + '_cpu_ratio']:.3f}  memory x{summary[key + '_memory_ratio']:.3f}  "
                    + ("another pair order" if summary[key + "_max_loss_gap"] is None
                       else f"max loss gap to trl {summary[key + '_max_loss_gap']:.2g}"))
        print(row)
    if a.output:
        with open(a.output, "w") as f:
            json.dump({"summary": summary, "runs": results}, f, indent=2)
    return summary


def run_benchmark(doc: str, contenders_help: str, worker, script: str, task: str, model_class: str) -> None:
    """The command line of a preference-training benchmark: a worker run (``--worker``) prints its record, otherwise
    every contender is compared (:func:`compare`)."""
    a = build_parser(doc, contenders_help).parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if a.worker:
        print(json.dumps(worker(a.worker, a)), flush=True)
        return
    compare(a, script, task, model_class)


def main() -> None:
    run_benchmark(__doc__, "comma-separated subset of trl (TRL's defaults), trl-best, prefkit (its defaults: "
                           "prefix-shared pairs), prefkit-best, prefkit-unshared (prefix_sharing=False), prefkit-packed, "
                           "prefkit-grouped, prefkit-cached", _worker, __file__, "DPO", "Qwen2ForCausalLM")


if __name__ == "__main__":
    main()
