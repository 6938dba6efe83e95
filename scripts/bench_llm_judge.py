"""Benchmark: how much position bias an LLM judge has, and what asking in both orders does about it.

    python scripts/bench_llm_judge.py                                   # SmolLM2-135M-Instruct, 16 held-out pairs
    python scripts/bench_llm_judge.py --model Qwen/Qwen2.5-7B-Instruct --pairs 40 --quantization 4bit
    python scripts/bench_llm_judge.py --base_url http://localhost:8000/v1 --api_model my-judge

Pairs come from the held-out split of the bundled preference set, with the better answer shown first for half of
them and second for the other half, so a judge that always picks the first answer is right exactly half the time.
Baseline (same run, same answers): the usual single-order judge, i.e. the verdict of the first ask alone. prefkit's
judge asks again with the answers swapped and calls a disagreement a tie. Prints how often each order's answer was
"A", single-order accuracy, and the both-orders labels (correct / wrong / tie / unparseable).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="judge model id or folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--quantization", default=None, choices=["4bit", "8bit"])
    parser.add_argument("--base_url", default=None, help="OpenAI-compatible endpoint instead of a local model")
    parser.add_argument("--api_model", default=None)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args(argv)

    import os

    from prefkit.data import bundled_preferences_path
    from prefkit.data.judges import LLMJudge, parse_verdict
    from prefkit.models import DEFAULT_POLICY, load_model

    rows = [json.loads(line) for line in bundled_preferences_path().read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["split"] == "test"][: args.pairs]
    pairs, truth = [], []
    for i, row in enumerate(rows):
        better_first = i % 2 == 0
        pairs.append((row["chosen"], row["rejected"]) if better_first else (row["rejected"], row["chosen"]))
        truth.append("A" if better_first else "B")
    if args.base_url:
        judge = LLMJudge(base_url=args.base_url, api_model=args.api_model, api_key=os.environ.get("OPENAI_API_KEY"))
        name = args.api_model
    else:
        name = args.model or DEFAULT_POLICY
        model, tokenizer = load_model(name, quantization=args.quantization)
        judge = LLMJudge(model, tokenizer, batch_size=args.batch_size)
    judgements = judge.judge([r["prompt"] for r in rows], pairs)

    first = [parse_verdict(j.raw[0]) for j in judgements]
    second = [parse_verdict(j.raw[1]) for j in judgements]
    n = len(rows)
    single_correct = sum(v == t for v, t in zip(first, truth))
    outcome = Counter(
        "unparseable" if j.label is None else "tie" if j.label == "tie" else "correct" if j.label == t else "wrong"
        for j, t in zip(judgements, truth)
    )
    print(f"judge {name}; {n} held-out pairs, better answer first in {truth.count('A')}")
    print(f"answer 'A' when asked (A, B): {first.count('A')}/{n};  when asked (B, A): {second.count('A')}/{n}")
    print(
        f"single order (baseline): {single_correct}/{n} correct ({single_correct / n:.0%}), "
        f"{n - single_correct} wrong or unparseable"
    )
    print(
        f"both orders (prefkit)  : {outcome['correct']}/{n} correct, {outcome['wrong']} wrong, {outcome['tie']} ties, "
        f"{outcome['unparseable']} unparseable"
    )
    print(
        f"false preferences: single order {sum(v in ('A', 'B') and v != t for v, t in zip(first, truth))}, "
        f"both orders {outcome['wrong']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
