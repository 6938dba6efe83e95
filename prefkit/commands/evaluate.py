"""Did my run work? Compare a trained policy with the model it started from, on held-out prompts.

    prefkit eval --policy HuggingFaceTB/SmolLM2-135M-Instruct smollm2-dpo --prompts_file prefkit/data/bundled/sentiment_heldout.jsonl \
        --reward vader --output_dir eval-dpo
    prefkit eval --policy base-model ppo-run dpo-run --prompts_file examples/prompts.txt --reward my_rewards:helpfulness \
        --judge Qwen/Qwen2.5-1.5B-Instruct --num_samples 2

The first policy is the baseline. Prints a table (reward, win rate and KL to the baseline with intervals, length,
diversity) and writes samples.jsonl (every answer and score; a rerun resumes it), eval.json and eval.png.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .runner import INTERRUPTED_RESUMABLE, CommandError, check_output_path, run_command


@dataclass
class EvalArguments:
    """Which policies, which prompts, how to score them."""

    policy: list[str] = field(
        default_factory=list,
        metadata={"help": "Policies to evaluate (Hub ids, model folders or LoRA adapter folders): --policy BASE TRAINED "
                  "... The first is the baseline the others are compared with."},
    )
    prompt: list[str] | None = field(default=None, metadata={"help": "Prompts given on the command line."})
    prompts_file: str | None = field(
        default=None,
        metadata={"help": "Held-out prompts: a .txt file (one per line) or a .jsonl/.json/.parquet/.csv file or dataset "
                  "with a prompt column."},
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt in --prompts_file."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first this many prompts."})
    reward: str | None = field(
        default=None,
        metadata={"help": "Reward to report: built-in (vader, bleu, rouge), 'demo', a reward model folder or Hub id, "
                  "'package.module:function' or 'implicit:DPO_MODEL'."},
    )
    judge: str | None = field(
        default=None,
        metadata={"help": "Pairwise judge for the win rate: a causal LM (Hub id or folder) asked as an LLM judge in both "
                  "orders. Default: the higher --reward wins."},
    )
    num_samples: int = field(default=1, metadata={"help": "Answers per prompt and policy."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest answer, in tokens."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0); KL is measured at it."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold in (0, 1]."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call."})
    seed: int = field(default=0, metadata={"help": "Seed: the same seed gives every policy the same random numbers."})
    output_dir: str = field(default="prefkit-eval", metadata={"help": "Where samples.jsonl, eval.json and eval.png go."})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda when available), 'cpu', 'cuda', ..."})


def make_parser(prog: str | None = None):
    from trl import TrlParser

    return TrlParser((EvalArguments,), prog=prog)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run_command(
        lambda: make_parser(prog).parse_args_and_config(args=argv), run, interrupted=INTERRUPTED_RESUMABLE
    )


def run(args: EvalArguments) -> int:
    if not args.policy:
        raise CommandError("give the policies to compare: --policy BASE TRAINED (the first is the baseline).")
    if not args.reward and not args.judge:
        raise CommandError("give --reward (and/or --judge): without one there is nothing to compare the answers by.")
    from ..models import resolve_device
    from .bon import read_prompts

    prompts = read_prompts(args)  # bad prompts fail before any model loads
    check_output_path(args.output_dir, "--output_dir", folder=True)

    from ..data.judges import LLMJudge
    from ..policy_eval import evaluate

    device = resolve_device(args.device)
    judge = None
    if args.judge:
        from ..models import load_policy

        judge_model, judge_tokenizer = load_policy(args.judge, device=device)
        judge = LLMJudge(judge_model, judge_tokenizer, both_orders=False)  # evaluate asks both orders itself
    report = evaluate(
        args.policy, prompts, reward=args.reward, judge=judge, num_samples=args.num_samples,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        batch_size=args.batch_size, seed=args.seed, output_dir=args.output_dir, device=device,
    )
    print(report.table())
    print(f"\nprefkit eval: wrote {report.output_dir}/samples.jsonl, eval.json and eval.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
