"""Benchmark: RewardModel.score (length-sorted batches, right padding) against scoring one pair per forward pass.

    python scripts/bench_reward_score.py                                  # MiniLM reward model, bundled pairs, CPU
    python scripts/bench_reward_score.py --model my-rm --batch_size 32 --device cuda

The model is the untrained MiniLM encoder with a fresh scalar head unless --model names a trained reward model; speed
does not depend on the weights. Baseline (same run, same model, same inputs): one forward pass per pair, the loop
people write first. Also checks that both give the same scores (padding must not change a score). Prints pairs per
second and the speed-up ratio.
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="reward model folder or id (default: MiniLM with a new head)")
    parser.add_argument("--pairs", type=int, default=256, help="(prompt, response) pairs, from the bundled set")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    args = parser.parse_args(argv)

    import torch

    from prefkit.data import bundled_preferences_path
    from prefkit.models import DEFAULT_ENCODER, load_model
    from prefkit.reward_model import RewardModel

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.model:
        reward_model = RewardModel.from_pretrained(args.model, device=device)
    else:
        torch.manual_seed(0)
        model, tokenizer = load_model(DEFAULT_ENCODER, task="sequence-classification")
        reward_model = RewardModel(model.to(device).eval(), tokenizer)
    rows = [json.loads(line) for line in bundled_preferences_path().read_text(encoding="utf-8").splitlines()]
    prompts, responses = [], []
    for row in rows:
        prompts += [row["prompt"], row["prompt"]]
        responses += [row["chosen"], row["rejected"]]
    prompts, responses = prompts[: args.pairs], responses[: args.pairs]

    reward_model.score(prompts[:4], responses[:4])  # warm-up
    start = time.perf_counter()
    one_by_one = [reward_model.score([p], [r], batch_size=1)[0] for p, r in zip(prompts, responses)]
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    batched = reward_model.score(prompts, responses, batch_size=args.batch_size)
    ours = time.perf_counter() - start

    worst = max(abs(a - b) for a, b in zip(one_by_one, batched))
    print(f"device {device}, {len(prompts)} pairs, model {reward_model.name_or_path}")
    print(f"one pair per forward : {baseline:7.2f} s  {len(prompts) / baseline:8.1f} pairs/s")
    print(f"RewardModel.score    : {ours:7.2f} s  {len(prompts) / ours:8.1f} pairs/s  (batch_size {args.batch_size})")
    print(f"speed-up             : {baseline / ours:7.2f}x   largest score difference {worst:.2e}")
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
