"""Benchmark: batched ``best_of_n`` against a naive loop (one generate and one score call per candidate).

    python scripts/bench_bon.py                               # SmolLM2-135M-Instruct + demo reward model, N = 4, 8, 16
    python scripts/bench_bon.py --n 8 --num_prompts 4 --max_new_tokens 64 --device cuda

Both modes sample the same number of candidates per prompt with the same settings and the same reward; answers
stop at end-of-sequence as they would in use (so the batched run pays for waiting on its longest answer). Each N is
timed in the same process, batched and loop alternately, after a warm-up. Prints seconds for both and the ratio,
and writes ``bench_results/bench_bon.json`` and ``.png``. Target: batched >= 4x faster than the loop at N = 8.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PROMPTS = [
    "Suggest a new activity I could do with my teddy bear.",
    "How do I make a good cup of tea?",
    "Write a short poem about the sea.",
    "Give me three tips for a rainy weekend.",
    "What should I cook for a friend who is vegetarian?",
    "Explain why the sky is blue to a child.",
    "Help me write a thank-you note to my neighbour.",
    "What is a fun way to learn French?",
]


def parse_args(argv=None):
    from prefkit.models import DEFAULT_POLICY

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=DEFAULT_POLICY)
    parser.add_argument("--reward_model", default="demo", help="reward model folder, or 'demo' (prefkit's demo model)")
    parser.add_argument("--reward_function", default=None, help="'module:function' reward instead of a model")
    parser.add_argument("--n", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--num_prompts", type=int, default=2)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per mode and N (the minimum is kept)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="bench_results")
    return parser.parse_args(argv)


def naive_best_of_n(policy, tokenizer, reward, prompts, n, max_new_tokens, temperature, device):
    """The loop Best-of-N replaces: every candidate is its own generate call and its own reward call."""
    import torch

    from prefkit.bon import score_responses
    from prefkit.chat import render_prompt

    best, tokens = [], 0
    for prompt in prompts:
        ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False, return_tensors="pt").to(device)
        scored = []
        for _ in range(n):
            with torch.no_grad():
                output = policy.generate(
                    **ids, do_sample=True, max_new_tokens=max_new_tokens, temperature=temperature, top_p=1.0,
                    pad_token_id=tokenizer.pad_token_id,
                )
            completion = output[0, ids["input_ids"].shape[1] :]
            text = tokenizer.decode(completion, skip_special_tokens=True).strip()
            tokens += completion.shape[0]  # one sequence: generation stops at its EOS, nothing is padded
            scored.append((score_responses(reward, [prompt], [text])[0], text))
        best.append(max(scored)[1])
    return best, tokens


def timed(function, device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    began = time.perf_counter()
    value = function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - began, value


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from prefkit.bon import best_of_n
    from prefkit.commands.bon import BestOfNArguments, load_reward
    from prefkit.models import resolve_device
    from prefkit.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    policy, tokenizer = load_model(args.model_name_or_path, dtype=args.dtype)
    policy.to(device).eval()
    reward = load_reward(BestOfNArguments(reward_model=args.reward_model, reward_function=args.reward_function), device)
    prompts = PROMPTS[: args.num_prompts]
    device_name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"bench_bon: {args.model_name_or_path} on {device_name}, dtype {next(policy.parameters()).dtype}, "
          f"{len(prompts)} prompts, max_new_tokens {args.max_new_tokens}, reward {args.reward_function or args.reward_model}")

    # Warm-up: first calls pay for kernel selection and allocator growth.
    best_of_n(policy, tokenizer, reward, prompts[:1], n=2, max_new_tokens=8, progress=False)
    naive_best_of_n(policy, tokenizer, reward, prompts[:1], 1, 8, args.temperature, device)

    rows = []
    header = f"{'N':>4} {'batched s':>10} {'loop s':>9} {'speed-up':>9} {'batched tok':>12} {'loop tok':>9} {'gen s':>7} {'score s':>8}"
    print(header)
    for n in args.n:
        batched_times, loop_times = [], []
        for _ in range(args.repeats):
            seconds, results = timed(
                lambda: best_of_n(
                    policy, tokenizer, reward, prompts, n=n, batch_size=len(prompts), max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature, progress=False,
                ),
                device,
            )
            batched_times.append(seconds)
            loop_seconds, (_, loop_tokens) = timed(
                lambda: naive_best_of_n(policy, tokenizer, reward, prompts, n, args.max_new_tokens, args.temperature, device),
                device,
            )
            loop_times.append(loop_seconds)
        row = {
            "n": n,
            "batched_seconds": min(batched_times),
            "loop_seconds": min(loop_times),
            "speedup": min(loop_times) / min(batched_times),
            "batched_tokens": sum(r.tokens_generated for r in results),
            "loop_tokens": loop_tokens,
            "batched_generate_seconds": sum(r.generate_seconds for r in results),
            "batched_score_seconds": sum(r.score_seconds for r in results),
        }
        rows.append(row)
        print(f"{n:>4} {row['batched_seconds']:>10.2f} {row['loop_seconds']:>9.2f} {row['speedup']:>8.1f}x "
              f"{row['batched_tokens']:>12} {row['loop_tokens']:>9} {row['batched_generate_seconds']:>7.2f} "
              f"{row['batched_score_seconds']:>8.3f}")

    at_8 = [row for row in rows if row["n"] == 8]
    if at_8:
        verdict = "meets" if at_8[0]["speedup"] >= 4 else "MISSES"
        print(f"target: batched >= 4x the loop at N = 8 -> {at_8[0]['speedup']:.1f}x ({verdict})")

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": device_name, "model": args.model_name_or_path, "prompts": len(prompts),
              "max_new_tokens": args.max_new_tokens, "reward": args.reward_function or args.reward_model, "rows": rows}
    (out / "bench_bon.json").write_text(json.dumps(report, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    ns = [row["n"] for row in rows]
    axis.plot(ns, [row["loop_seconds"] for row in rows], "o-", label="loop (1 generate + 1 score per candidate)")
    axis.plot(ns, [row["batched_seconds"] for row in rows], "o-", label="best_of_n (batched)")
    for row in rows:
        axis.annotate(f"{row['speedup']:.1f}x", (row["n"], row["batched_seconds"]), textcoords="offset points", xytext=(0, 6))
    axis.set_xlabel("N (samples per prompt)")
    axis.set_ylabel(f"seconds for {len(prompts)} prompts")
    axis.set_xscale("log", base=2)
    axis.set_xticks(ns, [str(n) for n in ns])
    axis.set_title(f"Best-of-N on {device_name}")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "bench_bon.png", dpi=120)
    print(f"wrote {out / 'bench_bon.json'} and {out / 'bench_bon.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
