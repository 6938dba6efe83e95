"""Best-of-N from the command line: prompts in (a file or arguments), ranked candidates out as JSONL.

    prefkit bon --prompt "Suggest a new activity I could do with my teddy bear." --n 8
    prefkit bon --prompts_file examples/prompts.txt --reward_model my-reward-model --n 16 --output bon.jsonl
    prefkit bon --prompts_file prefkit/data/bundled/sentiment_heldout.jsonl --implicit_reward_model smollm2-dpo --beta 0.1
    accelerate launch scripts/bon.py --prompts_file examples/prompts.txt

Each output line is :meth:`prefkit.bon.BestOfNResult.to_dict` (prompt, best, every candidate with its reward and
rank, tokens, seconds, KL bound). Lines are written batch by batch, so an interrupted run keeps what it finished.
A PNG next to the output compares the reward of one sample with the reward of the best of N.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..models import DEFAULT_POLICY
from .runner import CommandError, check_output_path, run_command


@dataclass
class BestOfNArguments:
    """Best-of-N sampling: which policy, which reward, which prompts, how many samples."""

    model_name_or_path: str = field(
        default=DEFAULT_POLICY, metadata={"help": "Policy to sample from: Hub id or local folder (default: SmolLM2-135M-Instruct)."}
    )
    reward_model: str = field(
        default="demo",
        metadata={
            "help": "Reward model folder or Hub id (a sequence classifier trained with prefkit reward), 'demo' for "
            "prefkit's demo reward model (trained on first use), a built-in reward (vader, bleu, rouge), "
            "'package.module:function' or 'implicit:DPO_MODEL'. Ignored when --implicit_reward_model or "
            "--reward_function is given."
        },
    )
    implicit_reward_model: str | None = field(
        default=None,
        metadata={"help": "Rank by DPO's implicit reward beta*log(pi/pi_ref) of this DPO-trained adapter folder or model."},
    )
    implicit_reward_ref: str | None = field(
        default=None, metadata={"help": "Reference model for --implicit_reward_model when it is a full model (not an adapter)."}
    )
    beta: float = field(default=0.1, metadata={"help": "The beta the DPO model was trained with (scales the implicit reward)."})
    reward_function: str | None = field(
        default=None,
        metadata={"help": "A Python reward function 'package.module:function' called as function(prompts, responses)."},
    )
    prompt: list[str] | None = field(default=None, metadata={"help": "One or more prompts given on the command line."})
    prompts_file: str | None = field(
        default=None,
        metadata={"help": "Prompts: a .txt file (one per line) or a .jsonl/.json/.parquet/.csv file or dataset with a prompt column."},
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt in --prompts_file."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first this many prompts."})
    output: str = field(default="bon.jsonl", metadata={"help": "JSONL file to write, one line per prompt."})
    n: int = field(default=8, metadata={"help": "Samples per prompt (N)."})
    batch_size: int = field(default=4, metadata={"help": "Prompts per generate call (each call samples batch_size * n)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest answer, in tokens."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold in (0, 1]."})
    seed: int | None = field(default=None, metadata={"help": "Seed for reproducible samples."})
    truncation: str = field(
        default="error",
        metadata={"help": "Prompts longer than the context: 'error' or 'left' (keep their end, warn).", "choices": ["error", "left"]},
    )
    device: str = field(default="auto", metadata={"help": "'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1' ..."})
    dtype: str = field(default="auto", metadata={"help": "Weight dtype of the policy: auto, bfloat16, float16 or float32."})
    plot: bool = field(default=True, metadata={"help": "Write <output>.png: reward of one sample vs the best of N."})


def make_parser(prog: str | None = None):
    from trl import TrlParser

    return TrlParser((BestOfNArguments,), prog=prog)


def read_prompts(args: BestOfNArguments) -> list:
    """The prompts of ``--prompt`` then ``--prompts_file``; errors name the file, line or column at fault."""
    prompts: list = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if path.suffix.lower() == ".txt":
            if not path.is_file():
                raise CommandError(f"--prompts_file {path}: no such file.")
            lines = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if not lines:
                from ..data.validation import EmptyDatasetError

                raise EmptyDatasetError(str(path), "at least one prompt, one per line")
            prompts += lines
        else:
            from ..data.io import load_dataset_any

            dataset = load_dataset_any(args.prompts_file, split="train")
            if args.prompt_column not in dataset.column_names:
                raise CommandError(
                    f"{args.prompts_file} has no column {args.prompt_column!r} (it has {dataset.column_names}). "
                    "Pass --prompt_column."
                )
            prompts += list(dataset[args.prompt_column])
    if args.max_prompts is not None:
        prompts = prompts[: args.max_prompts]
    if not prompts:
        raise CommandError("no prompts: pass --prompt \"...\" or --prompts_file examples/prompts.txt.")
    return prompts


def reward_spec(args: BestOfNArguments) -> str:
    """What the flags name, as one :func:`prefkit.rewards.resolve_reward` spelling (``--reward_function`` first, then
    ``--implicit_reward_model``, then ``--reward_model``, which itself takes every spelling)."""
    from ..rewards import IMPLICIT_PREFIX

    if args.reward_function:
        return args.reward_function
    if args.implicit_reward_model:
        return IMPLICIT_PREFIX + args.implicit_reward_model
    return args.reward_model


def load_reward(args: BestOfNArguments, device: str):
    """The reward the flags ask for, on ``device``."""
    from ..rewards import resolve_reward

    try:
        return resolve_reward(reward_spec(args), ref_model=args.implicit_reward_ref, beta=args.beta, device=device)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


def plot_rewards(records: list[dict], path: Path) -> Path:
    """Histogram of the reward of every sample against the reward of the best of N (records: JSONL lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = [candidate["reward"] for record in records for candidate in record["candidates"]]
    best = [record["best_reward"] for record in records]
    n = records[0]["n"]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    bins = 30 if len(samples) > 60 else 12
    axis.hist(samples, bins=bins, alpha=0.6, density=True, label=f"one sample (mean {sum(samples) / len(samples):.3f})")
    axis.hist(best, bins=bins, alpha=0.6, density=True, label=f"best of {n} (mean {sum(best) / len(best):.3f})")
    axis.set_xlabel("reward")
    axis.set_ylabel("density")
    axis.set_title(f"Best-of-{n} over {len(records)} prompts (KL to base <= {records[0]['kl_to_base']:.3f} nats)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def summarize(records: list[dict], output: Path) -> str:
    n = records[0]["n"]
    mean_sample = sum(r["mean_reward"] for r in records) / len(records)
    mean_best = sum(r["best_reward"] for r in records) / len(records)
    tokens = sum(r["tokens_generated"] for r in records)
    generate_seconds = sum(r["generate_seconds"] for r in records)
    score_seconds = sum(r["score_seconds"] for r in records)
    return (
        f"prefkit bon: {len(records)} prompts x {n} samples -> {output}\n"
        f"  mean reward of one sample {mean_sample:.4f}, of the best of {n} {mean_best:.4f} "
        f"(+{mean_best - mean_sample:.4f})\n"
        f"  KL(best-of-{n} || policy) <= log N - (N-1)/N = {records[0]['kl_to_base']:.4f} nats\n"
        f"  {tokens} tokens generated in {generate_seconds:.1f} s ({tokens / max(generate_seconds, 1e-9):.0f} tokens/s), "
        f"scored in {score_seconds:.1f} s"
    )


def shard_path(output: Path, rank: int) -> Path:
    return output.with_name(f"{output.stem}.rank{rank}{output.suffix}")


def merge_shards(output: Path, world_size: int) -> list[dict]:
    """Rank k sampled prompts k, k + W, k + 2W...: interleave the shards back into prompt order, then remove them."""
    shards = [[json.loads(line) for line in shard_path(output, rank).read_text(encoding="utf-8").splitlines()] for rank in range(world_size)]
    records = []
    for index in range(sum(len(shard) for shard in shards)):
        records.append(shards[index % world_size][index // world_size])
    with open(output, "w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
    for rank in range(world_size):
        shard_path(output, rank).unlink()
    return records


def interrupted_message(args: BestOfNArguments) -> str:
    return f"interrupted; the prompts finished so far are in {args.output} (per-rank shards under accelerate launch); a rerun starts over"


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run_command(lambda: make_parser(prog).parse_args_and_config(args=argv), run, interrupted=interrupted_message)


def run(args: BestOfNArguments) -> int:
    prompts = read_prompts(args)  # bad input fails before any model loads
    if args.truncation not in ("error", "left"):
        raise CommandError(f"--truncation must be 'error' or 'left', got {args.truncation!r}.")
    check_output_path(args.output, "--output")

    from accelerate import PartialState
    from tqdm.auto import tqdm

    from ..bon import best_of_n
    from ..models import load_model

    # Under `accelerate launch`, each process samples every W-th prompt on its own device.
    import torch

    # Several CPU processes form a gloo group only when told they run on the CPU.
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    rank, world_size = state.process_index, state.num_processes
    device = str(state.device) if args.device == "auto" else args.device
    policy, tokenizer = load_model(args.model_name_or_path, dtype=args.dtype)
    policy.to(device).eval()
    reward = load_reward(args, device)

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    mine = list(range(rank, len(prompts), world_size))
    target = output if world_size == 1 else shard_path(output, rank)
    with open(target, "w", encoding="utf-8") as file, tqdm(
        total=len(mine), desc=f"best-of-{args.n}", unit="prompt", disable=not state.is_local_main_process
    ) as bar:
        for start in range(0, len(mine), args.batch_size):
            indices = mine[start : start + args.batch_size]
            batch = best_of_n(
                policy,
                tokenizer,
                reward,
                [prompts[i] for i in indices],
                n=args.n,
                batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens,
                temperature=args.temperature,
                top_p=args.top_p,
                seed=None if args.seed is None else args.seed + indices[0],
                truncation=args.truncation,
                progress=False,
            )
            for result in batch:
                file.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
            file.flush()
            bar.update(len(batch))

    state.wait_for_everyone()
    if not state.is_main_process:
        return 0
    if world_size > 1:
        records = merge_shards(output, world_size)
    else:
        records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    print(summarize(records, output) + (f"\n  ({world_size} processes)" if world_size > 1 else ""))
    if args.plot:
        png = plot_rewards(records, output.with_suffix(".png"))
        print(f"  plot: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
