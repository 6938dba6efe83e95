"""Benchmark: prefkit's batched pair generation against sampling one answer per generate call.

    python scripts/bench_generate_pairs.py                       # SmolLM2-135M-Instruct, 8 prompts, n=4, CPU
    python scripts/bench_generate_pairs.py --model Qwen/Qwen2.5-0.5B-Instruct --prompts 32 --device cuda

Baseline (measured in the same run, same model, same prompts, same token budget): for every prompt, ``n`` separate
``model.generate`` calls with one sequence each, the loop people write first. prefkit: ``generate_pairs``, one
``generate`` per batch of prompts with ``num_return_sequences=n`` and left padding. Prints wall time, answers per
second and the speed-up ratio.
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model id or folder (default: SmolLM2-135M-Instruct, offline)")
    parser.add_argument("--prompts", type=int, default=8, help="number of prompts (from the bundled preference set)")
    parser.add_argument("--n", type=int, default=4, help="answers per prompt")
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--batch_size", type=int, default=8, help="prompts per generate call (prefkit)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    args = parser.parse_args(argv)

    import torch

    from prefkit.data import bundled_preferences_path
    from prefkit.data.generation import generate_pairs
    from prefkit.chat import render_prompt
    from prefkit.models import DEFAULT_POLICY, load_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model(args.model or DEFAULT_POLICY)
    model.to(device).eval()
    seen, prompts = set(), []
    for line in bundled_preferences_path().read_text(encoding="utf-8").splitlines():
        prompt = json.loads(line)["prompt"]
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    prompts = prompts[: args.prompts]
    sampling = dict(
        do_sample=True,
        temperature=1.0,
        top_k=0,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
    )

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    # Warm-up (first-call allocations, kernel selection) is not timed.
    warm = tokenizer(render_prompt(tokenizer, prompts[0]), return_tensors="pt", add_special_tokens=False).to(device)
    with torch.no_grad():
        model.generate(**warm, **{**sampling, "max_new_tokens": 2, "min_new_tokens": 2})

    sync()
    start = time.perf_counter()
    with torch.no_grad():
        for prompt in prompts:
            inputs = tokenizer(render_prompt(tokenizer, prompt), return_tensors="pt", add_special_tokens=False).to(
                device
            )
            for _ in range(args.n):
                model.generate(**inputs, **sampling)
    sync()
    baseline = time.perf_counter() - start

    # min_new_tokens makes both sides produce the same number of tokens, so the ratio compares like with like.
    model.generation_config.min_new_tokens = args.max_new_tokens
    sync()
    start = time.perf_counter()
    generate_pairs(
        model,
        tokenizer,
        prompts,
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        progress=False,
    )
    sync()
    batched = time.perf_counter() - start

    answers = len(prompts) * args.n
    name = args.model or DEFAULT_POLICY
    print(f"model {name} on {device}; {len(prompts)} prompts x {args.n} answers x {args.max_new_tokens} new tokens")
    print(f"one answer per generate call : {baseline:8.2f} s  {answers / baseline:7.2f} answers/s")
    print(f"prefkit generate_pairs       : {batched:8.2f} s  {answers / batched:7.2f} answers/s")
    print(f"speed-up                     : {baseline / batched:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
