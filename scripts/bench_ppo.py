"""Benchmark one PPO iteration: where the time goes, and what the four roles cost in memory under LoRA.

    python scripts/bench_ppo.py --model tiny
    python scripts/bench_ppo.py --model smollm2 --batch 8 --response_length 32
    python scripts/bench_ppo.py --model smollm2 --gradient_checkpointing   # activations recomputed in both runs
    python scripts/bench_ppo.py --model smollm2 --quantization 4bit        # QLoRA (bitsandbytes; CPU works too)
    python scripts/bench_ppo.py --model tiny-150k --compare_chunking       # whole-step memory, chunked log-probs or not
    python scripts/bench_ppo.py --model smollm2 --reward demo              # a reward model in memory, not a rule

Each configuration runs in its own fresh process so that peak memory is its own:

- ``policy``: the policy alone under LoRA, doing the same work a policy-only method would do on the same batch
  (sample the completions, then the same number of epochs of forward + backward + AdamW step);
- ``ppo``: one (or ``--iterations``) full PPO iteration(s) with all four roles: policy (LoRA adapter), reference (the
  same base, adapter disabled), value model (second adapter + scalar head on the same base) and reward (the
  ``vader`` rule reward by default, which holds no weights; ``--reward demo`` or a reward model's folder puts a reward
  *model* in memory beside the other three);
- ``ppo-unchunked`` (with ``--compare_chunking``): the same PPO iterations with ``logprob_chunk_size=None``, where the
  rollout's and the update's log-probs come from the full ``[rows, time, vocab]`` logits instead of chunks of the
  output head;
- ``runtime``: the interpreter with torch / transformers / peft imported and nothing loaded.

Memory is reported two ways, because on a CPU there is no allocator counter like ``torch.cuda.max_memory_allocated``:

- **tracked tensor bytes**: every parameter and buffer storage reachable from the models (counted once however many
  roles share it, via ``prefkit.models.parameter_storage``), plus gradients and AdamW state. Exact, and what
  "four models' memory" is about, but it leaves out activations;
- **peak RSS above the runtime**: the process's peak resident memory (``ru_maxrss``) minus the ``runtime``
  process's. Includes activations, the KV cache and allocator slack; coarse (allocator reuse, page granularity).

On a GPU the script also reports ``torch.cuda.max_memory_allocated`` for each configuration. The ratios printed are
``ppo / policy``; the target is <= 1.3 under LoRA. ``--compare_chunking`` also prints ``ppo / ppo-unchunked`` for the
peak (target <= 0.7 on a 150k-token vocabulary: ``--model tiny-150k`` is the tiny Llama with Qwen2.5's 151,936-token
output head, so the logits, not the layers, dominate).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

PROMPTS = [
    "Suggest a new activity I could do with my teddy bear.",
    "How do I make a good cup of tea?",
    "Write a short poem about the sea.",
    "What should I cook for dinner tonight?",
    "Give me one tip to sleep better.",
    "Describe your favourite season.",
    "How can I be more productive in the morning?",
    "Tell me something interesting about owls.",
]


QWEN_VOCAB = 151936


def resolve_model(name: str) -> str:
    if name == "tiny-150k":
        from prefkit.testing import build_tiny_model

        folder = os.path.join(tempfile.gettempdir(), "prefkit-bench-tiny-150k-model")
        if not os.path.exists(os.path.join(folder, "config.json")):
            build_tiny_model(folder, output_vocab_size=QWEN_VOCAB)
        return folder
    if name == "tiny":
        from prefkit.testing import build_tiny_model

        folder = os.path.join(tempfile.gettempdir(), "prefkit-bench-tiny-model")
        if not os.path.exists(os.path.join(folder, "config.json")):
            build_tiny_model(folder)
        return folder
    if name == "smollm2":
        from prefkit.models import DEFAULT_POLICY, resolve_model_path

        return resolve_model_path(DEFAULT_POLICY)
    return name


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def optimizer_state_bytes(optimizer) -> int:
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if hasattr(value, "numel")
    )


def gradient_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)


def cuda_peak() -> int | None:
    import torch

    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


# --------------------------------------------------------------------------------------------------------------------
# The configurations, each run in its own process
# --------------------------------------------------------------------------------------------------------------------


def run_runtime(options) -> dict:
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import prefkit.trainers.ppo  # noqa: F401

    return {"peak_rss": peak_rss_bytes()}


def run_policy(options) -> dict:
    """The policy alone: sample the batch, then the same epochs of forward/backward/step a PPO update does."""
    import torch

    import prefkit.trainers.ppo  # noqa: F401  (same imports as the other runs: same runtime memory)
    from prefkit.chat import render_prompt
    from prefkit.logprobs import DEFAULT_LOGPROB_CHUNK_SIZE, causal_lm_token_logprobs
    from prefkit.models import load_model, lora_config, parameter_storage

    torch.manual_seed(0)

    config = lora_config("causal-lm", r=options.lora_r, alpha=2 * options.lora_r, dropout=0.0)
    model, tokenizer = load_model(options.model_path, quantization=options.quantization, lora=config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if options.quantization is None:
        model.to(device)
    if options.gradient_checkpointing:
        model.get_base_model().activation_checkpointing_enable({"use_reentrant": False})
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    texts = [render_prompt(tokenizer, p) for p in PROMPTS[: options.batch]]
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)

    tick = time.perf_counter()
    model.eval()
    with torch.no_grad():
        sequences = model.generate(
            **encoded, max_new_tokens=options.response_length, do_sample=True, top_k=0, temperature=1.0,
            pad_token_id=tokenizer.pad_token_id,
        )
    rollout_seconds = time.perf_counter() - tick
    attention_mask = torch.ones_like(sequences)
    attention_mask[:, : encoded["attention_mask"].shape[1]] = encoded["attention_mask"]
    width = sequences.shape[1] - encoded["input_ids"].shape[1]

    tick = time.perf_counter()
    model.train()
    for _ in range(options.epochs):
        # the same log-prob path as the PPO run it is compared with: chunked through the head, PPOConfig's default
        logprobs = causal_lm_token_logprobs(model, sequences, attention_mask, width=width,
                                            chunk_size=DEFAULT_LOGPROB_CHUNK_SIZE).logprobs
        loss = -logprobs.mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
    optimization_seconds = time.perf_counter() - tick
    return {
        "weights": sum(parameter_storage(model).values()),
        "gradients": gradient_bytes(model),
        "optimizer": optimizer_state_bytes(optimizer),
        "peak_rss": peak_rss_bytes(),
        "cuda_peak": cuda_peak(),
        "time/rollout": rollout_seconds,
        "time/optimization": optimization_seconds,
    }


def reward_modules(rewards) -> list:
    """The torch modules behind reward functions: a reward model's ``.model``, also when the function is a bound
    ``.score`` method or a closure around the scorer (rule rewards have none)."""
    import torch

    found, seen = [], set()

    def visit(obj, depth: int) -> None:
        if obj is None or id(obj) in seen or depth > 3:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.nn.Module):
            found.append(obj)
            return
        for name in ("reward", "model", "ref_model", "__self__", "__wrapped__", "func", "_call"):
            visit(getattr(obj, name, None), depth + 1)
        for cell in getattr(obj, "__closure__", None) or ():
            visit(cell.cell_contents, depth + 1)

    for reward in rewards:
        visit(reward, 0)
    return found


def run_ppo(options, logprob_chunk_size: int | None | str = "default") -> dict:
    import torch
    from datasets import Dataset

    from prefkit.models import parameter_storage
    from prefkit.trainers.ppo import PPOConfig, PPOTrainer

    with tempfile.TemporaryDirectory() as output_dir:
        args = PPOConfig(
            output_dir=output_dir,
            use_peft=True,
            quantization=options.quantization,
            lora_r=options.lora_r,
            lora_alpha=2 * options.lora_r,
            lora_dropout=0.0,
            gradient_checkpointing=options.gradient_checkpointing,
            value_lora_r=options.value_lora_r,
            per_device_train_batch_size=options.batch,
            num_mini_batches=1,
            num_ppo_epochs=options.epochs,
            max_completion_length=options.response_length,
            temperature=1.0,
            max_steps=options.iterations,
            advantage_estimator="gae",
            **({} if logprob_chunk_size == "default" else {"logprob_chunk_size": logprob_chunk_size}),
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            log_completions=False,
            logging_steps=1,
            seed=0,
        )
        dataset = Dataset.from_list([{"prompt": p} for p in PROMPTS[: options.batch]])
        trainer = PPOTrainer(options.model_path, reward_funcs=options.reward, args=args, train_dataset=dataset)
        trainer.train()
        last = [entry for entry in trainer.state.log_history if "time/rollout" in entry][-1]
        storages = parameter_storage(trainer.model)
        if trainer.ref_model is not None:
            storages.update(parameter_storage(trainer.ref_model))
        for module in reward_modules(trainer.reward_functions):  # a reward model's weights (a rule holds none)
            storages.update(parameter_storage(module))
        result = {
            "weights": sum(storages.values()),
            "gradients": gradient_bytes(trainer.model),
            "optimizer": optimizer_state_bytes(trainer.optimizer),
            "peak_rss": peak_rss_bytes(),
            "cuda_peak": cuda_peak(),
            **{key: last[key] for key in ("time/rollout", "time/scoring", "time/logprobs", "time/optimization")},
        }
        del trainer
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return result


def run_ppo_unchunked(options) -> dict:
    """The same PPO iterations with every log-prob taken from the full logits (``logprob_chunk_size=None``)."""
    return run_ppo(options, logprob_chunk_size=None)


ROLES = {"runtime": run_runtime, "policy": run_policy, "ppo": run_ppo, "ppo-unchunked": run_ppo_unchunked}


# --------------------------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------------------------


def spawn(role: str, options) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--role", role, "--model", options.model]
    command += ["--batch", str(options.batch), "--response_length", str(options.response_length)]
    command += ["--epochs", str(options.epochs), "--iterations", str(options.iterations), "--lora_r", str(options.lora_r)]
    command += ["--reward", options.reward]
    if options.quantization:
        command += ["--quantization", options.quantization]
    if options.gradient_checkpointing:
        command += ["--gradient_checkpointing"]
    if options.value_lora_r:
        command += ["--value_lora_r", str(options.value_lora_r)]
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "HF_HUB_DISABLE_TELEMETRY": "1", "TQDM_DISABLE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{role} run failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def megabytes(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny, smollm2, or a model folder / Hub id")
    parser.add_argument("--quantization", default=None, choices=["4bit", "8bit"], help="load the base with bitsandbytes")
    parser.add_argument("--batch", type=int, default=8, help="completions per iteration (one per prompt)")
    parser.add_argument("--response_length", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4, help="PPO epochs per iteration (and policy-only epochs)")
    parser.add_argument("--iterations", type=int, default=2, help="PPO iterations; timings are the last one's")
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument("--gradient_checkpointing", action="store_true", help="activation checkpointing in both runs")
    parser.add_argument("--value_lora_r", type=int, default=None, help="rank of the value adapter (default: lora_r)")
    parser.add_argument("--reward", default="vader",
                        help="the PPO run's reward: vader (a rule, no weights), demo (the bundled reward model), or a "
                             "reward model's folder / Hub id")
    parser.add_argument("--compare_chunking", action="store_true",
                        help="also run PPO with logprob_chunk_size=None and compare peak memory")
    parser.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    options.model_path = resolve_model(options.model)

    if options.role:
        print(json.dumps(ROLES[options.role](options)))
        return 0

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(
        f"bench_ppo: model={options.model} quantization={options.quantization} batch={options.batch} "
        f"response_length={options.response_length} epochs={options.epochs} lora_r={options.lora_r} "
        f"value_lora_r={options.value_lora_r or options.lora_r} gradient_checkpointing={options.gradient_checkpointing} on {device}",
        flush=True,
    )
    runtime = spawn("runtime", options)
    policy = spawn("policy", options)
    ppo = spawn("ppo", options)
    unchunked = spawn("ppo-unchunked", options) if options.compare_chunking else None

    def tracked(result):
        return result["weights"] + result["gradients"] + result["optimizer"]

    rows = [
        ("weights + buffers (shared counted once)", policy["weights"], ppo["weights"]),
        ("gradient buffers", policy["gradients"], ppo["gradients"]),
        ("AdamW state", policy["optimizer"], ppo["optimizer"]),
        ("tracked tensor bytes", tracked(policy), tracked(ppo)),
        ("peak RSS above runtime", policy["peak_rss"] - runtime["peak_rss"], ppo["peak_rss"] - runtime["peak_rss"]),
    ]
    if ppo.get("cuda_peak") is not None:
        rows.append(("CUDA max_memory_allocated", policy["cuda_peak"], ppo["cuda_peak"]))
    print(f"\nmemory (runtime alone: peak RSS {megabytes(runtime['peak_rss'])})")
    print(f"  {'':42s} {'policy alone':>14s} {'PPO, 4 roles':>14s} {'ratio':>7s}")
    for name, alone, four in rows:
        ratio = f"{four / alone:.2f}x" if alone else "-"
        print(f"  {name:42s} {megabytes(alone):>14s} {megabytes(four):>14s} {ratio:>7s}")

    print("\none PPO iteration (seconds)")
    total = sum(ppo[k] for k in ("time/rollout", "time/scoring", "time/logprobs", "time/optimization"))
    for key in ("time/rollout", "time/scoring", "time/logprobs", "time/optimization"):
        print(f"  {key.split('/')[1]:14s} {ppo[key]:8.2f}  ({100 * ppo[key] / total:4.1f}%)")
    print(f"  {'total':14s} {total:8.2f}")
    print(
        f"policy alone, same batch: sampling {policy['time/rollout']:.2f} s, {options.epochs} epochs of "
        f"forward/backward {policy['time/optimization']:.2f} s"
    )
    ratio = tracked(ppo) / tracked(policy)
    measured = (ppo["peak_rss"] - runtime["peak_rss"]) / (policy["peak_rss"] - runtime["peak_rss"])
    print(f"\nfour roles / policy alone: tracked tensor bytes {ratio:.2f}x (target <= 1.3x; no activations, no KV "
          f"cache), peak RSS above runtime {measured:.2f}x (activations included; reward: {options.reward})")
    if unchunked is not None:
        print("\nlog-probs chunked (logprob_chunk_size=1024) vs from the full logits, the same PPO iterations")
        print(f"  {'':42s} {'chunked':>14s} {'full logits':>14s} {'ratio':>7s}")
        pairs = [("peak RSS above runtime", ppo["peak_rss"] - runtime["peak_rss"], unchunked["peak_rss"] - runtime["peak_rss"])]
        if ppo.get("cuda_peak") is not None:
            pairs.append(("CUDA max_memory_allocated", ppo["cuda_peak"], unchunked["cuda_peak"]))
        for name, chunked, full in pairs:
            print(f"  {name:42s} {megabytes(chunked):>14s} {megabytes(full):>14s} {chunked / full:>6.2f}x")
        for key in ("time/logprobs", "time/optimization"):
            print(f"  {key + ' (s)':42s} {ppo[key]:>14.2f} {unchunked[key]:>14.2f}")
        print("  (target: chunked peak <= 0.7x on a 150k-token vocabulary)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
