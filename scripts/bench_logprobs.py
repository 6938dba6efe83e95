"""Peak memory and time of token log-probs from the full logits vs chunk by chunk (prefkit.logprobs).

    python scripts/bench_logprobs.py                                   # 8 x 1024 tokens, SmolLM2's vocab (49,152)
    python scripts/bench_logprobs.py --vocab 128256 --hidden 2048 --batch 2 --time 512   # Llama 3's vocab
    python scripts/bench_logprobs.py --json                            # one JSON line instead of the table

What is measured is the output head and the log-softmax alone, on random final hidden states ``[batch, time,
hidden]`` and a random ``[vocab, hidden]`` head, in the two ways PPO's log-prob passes can run:

- ``full``: ``selective_log_softmax(F.linear(hidden, W).float() / T, labels)``, what PPO computes from the model's
  logits today (with ``entropy_from_logits`` in the training pass, as PPO logs ``policy/entropy_avg``);
- ``chunked``: :func:`prefkit.logprobs.chunked_token_logprobs` with ``--chunk_size`` tokens at a time.

Each mode runs twice, in fresh processes: ``value`` (no gradient: the rollout's old and reference log-probs) and
``train`` (forward with entropy, then backward to the hidden states and the head: the PPO update). On a GPU the peak is
``torch.cuda.max_memory_allocated`` above what the inputs hold; on a CPU it is the process's peak resident memory
(``ru_maxrss``) above its resident memory once the inputs exist, which is coarse (page granularity, allocator slack) but
includes every temporary. The analytic size of the ``[batch, time, vocab]`` float32 logits is printed beside it. The
decoder body below the head is not run: its activations are the same in both modes and add to both peaks.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_one(args) -> dict:
    """One mode in this process: build the inputs, then measure the peak and time of one pass above them."""
    import torch
    import torch.nn.functional as F

    from prefkit.logprobs import chunked_token_logprobs, entropy_from_logits, selective_log_softmax

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    # Inputs are filled in place: a freed temporary as large as the head would raise the peak-RSS watermark above
    # the baseline and hide what the pass itself needs.
    generator = torch.Generator(device=device).manual_seed(0)
    hidden = torch.empty(args.batch, args.time, args.hidden, device=device, dtype=dtype).normal_(generator=generator)
    weight = torch.empty(args.vocab, args.hidden, device=device, dtype=dtype).normal_(std=args.hidden**-0.5, generator=generator)
    labels = torch.randint(0, args.vocab, (args.batch, args.time), generator=generator, device=device)
    train = args.run.endswith("train")
    hidden.requires_grad_(train)
    weight.requires_grad_(train)
    if train:  # the gradients' storage is the same in both modes: allocate it before the baseline
        hidden.grad, weight.grad = torch.zeros_like(hidden), torch.zeros_like(weight)

    def peak_rss_bytes() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB

    def rss_bytes() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()

    # Warm-up on a few tokens of a small head: the kernels' code and buffers are loaded before the baseline.
    small_hidden = hidden[:1, :4].detach().clone().requires_grad_()
    small_weight = weight[:256].detach().clone().requires_grad_()
    small_labels = labels[:1, :4] % 256
    full_small = selective_log_softmax(F.linear(small_hidden, small_weight).float() / args.temperature, small_labels)
    chunked_small = chunked_token_logprobs(small_hidden, small_weight, small_labels, args.temperature, 2, return_entropy=True)
    (full_small.sum() + chunked_small.logprobs.sum() + entropy_from_logits(small_weight[:4]).sum()).backward()
    del small_hidden, small_weight, full_small, chunked_small

    watermark_above_baseline = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = rss_bytes()
        watermark_above_baseline = peak_rss_bytes() - baseline  # a peak below this would go unseen
    tick = time.perf_counter()
    with torch.set_grad_enabled(train):
        if args.run.startswith("full"):
            logits = F.linear(hidden, weight).float() / args.temperature
            logprobs = selective_log_softmax(logits, labels)
            if train:
                with torch.no_grad():
                    entropy = entropy_from_logits(logits)
            del logits
        else:
            logprobs, entropy = chunked_token_logprobs(
                hidden, weight, labels, args.temperature, args.chunk_size, return_entropy=train
            )
        if train:
            logprobs.sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = peak_rss_bytes() - baseline
    seconds = time.perf_counter() - tick
    result = {
        "run": args.run, "peak_bytes": peak, "seconds": seconds, "watermark_above_baseline": watermark_above_baseline,
        "logprobs_sum": float(logprobs.double().sum()),
    }
    if train:
        result["grad_hidden_norm"] = float(hidden.grad.double().norm())
        result["grad_weight_norm"] = float(weight.grad.double().norm())
        result["entropy_sum"] = float(entropy.double().sum())
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--time", type=int, default=1024, help="tokens per row whose log-probs are computed")
    parser.add_argument("--vocab", type=int, default=49152, help="49152: SmolLM2; 128256: Llama 3; 151936: Qwen2.5")
    parser.add_argument("--hidden", type=int, default=576, help="576: SmolLM2-135M; 2048: Llama 3.2 1B")
    parser.add_argument("--chunk_size", type=int, default=1024)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # internal: one mode in this process
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.run is not None:
        print(json.dumps(run_one(args)))
        return

    passed = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--json"]
    results = {}
    for run in ("full_value", "chunked_value", "full_train", "chunked_train"):
        command = [sys.executable, __file__, *passed, "--device", args.device, "--run", run]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[run] = json.loads(output.strip().splitlines()[-1])
    logits_bytes = args.batch * args.time * args.vocab * 4
    summary = {
        "shape": {"batch": args.batch, "time": args.time, "vocab": args.vocab, "hidden": args.hidden},
        "chunk_size": args.chunk_size, "dtype": args.dtype, "device": args.device,
        "float32_logits_bytes": logits_bytes,
        "runs": results,
        "peak_ratio_value": results["chunked_value"]["peak_bytes"] / max(results["full_value"]["peak_bytes"], 1),
        "peak_ratio_train": results["chunked_train"]["peak_bytes"] / max(results["full_train"]["peak_bytes"], 1),
        "time_ratio_train": results["chunked_train"]["seconds"] / results["full_train"]["seconds"],
        "max_relative_difference": max(
            abs(results[f"chunked_{kind}"][key] - results[f"full_{kind}"][key]) / max(abs(results[f"full_{kind}"][key]), 1e-12)
            for kind in ("value", "train")
            for key in results[f"full_{kind}"]
            if key not in ("run", "peak_bytes", "seconds", "watermark_above_baseline")
        ),
    }
    if args.json:
        print(json.dumps(summary))
        return
    gib = 1024**3
    peak_kind = "max_memory_allocated" if args.device.startswith("cuda") else "peak RSS"
    print(
        f"[{args.batch} x {args.time}] tokens, vocab {args.vocab:,}, hidden {args.hidden}, {args.dtype} on {args.device}, "
        f"chunk {args.chunk_size}: the float32 logits alone are {logits_bytes / gib:.2f} GiB"
    )
    print(f"{'pass':<8} {'full peak':>12} {'chunked peak':>14} {'ratio':>7} {'full s':>8} {'chunked s':>10}")
    for kind in ("value", "train"):
        full, chunked = results[f"full_{kind}"], results[f"chunked_{kind}"]
        print(
            f"{kind:<8} {full['peak_bytes'] / gib:>10.3f} G {chunked['peak_bytes'] / gib:>12.3f} G "
            f"{chunked['peak_bytes'] / max(full['peak_bytes'], 1):>7.3f} {full['seconds']:>8.2f} {chunked['seconds']:>10.2f}"
        )
    slack = max(run["watermark_above_baseline"] for run in results.values())
    print(f"({peak_kind} above the inputs, peaks under {slack / gib:.3f} G unseen; same numbers: largest relative "
          f"difference of the sums and gradient norms {summary['max_relative_difference']:.1e})")


if __name__ == "__main__":
    main()
