"""Label response pairs with a judge: an LLM, BLEU / ROUGE against a reference, or a reward model.

    prefkit generate-pairs --prompts examples/prompts.txt --output pairs.jsonl --n 2
    prefkit label --input pairs.jsonl --output labeled.jsonl --judge llm --judge_model Qwen/Qwen2.5-7B-Instruct
    prefkit label --input pairs.jsonl --judge llm --base_url http://localhost:8000/v1 --api_model my-judge
    prefkit label --input pairs.jsonl --judge rouge --reference_column reference
    prefkit label --input pairs.jsonl --judge reward --reward_model my-org/my-reward-model

Input rows have ``prompt``, ``response_a``, ``response_b`` (what ``prefkit generate-pairs`` writes) and an ``id``.
Labels are appended to ``--output`` after every batch; a rerun labels only the pairs not there yet. The API key of an
HTTP judge is read from the environment variable named by ``--api_key_env``, never from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .runner import INTERRUPTED_RESUMABLE, CommandError, check_output_path, read_rows, run_command


@dataclass
class LabelArguments:
    input: str = field(
        metadata={"help": "Pairs to label: .jsonl/.parquet/.csv file or dataset with prompt, response_a, response_b."}
    )
    output: str = field(
        default="labeled.jsonl", metadata={"help": "JSONL file labels are appended to (resumed if it exists)."}
    )
    judge: str = field(
        default="llm", metadata={"help": "Which judge labels the pairs.", "choices": ["llm", "bleu", "rouge", "reward"]}
    )
    judge_model: str | None = field(
        default=None,
        metadata={"help": "--judge llm: Hub id or folder of a causal LM (default: the offline SmolLM2-135M-Instruct)."},
    )
    quantization: str | None = field(
        default=None,
        metadata={"help": "--judge llm: load the judge model in 4bit or 8bit.", "choices": ["4bit", "8bit", None]},
    )
    base_url: str | None = field(
        default=None,
        metadata={"help": "--judge llm: an OpenAI-compatible endpoint instead, e.g. http://localhost:8000/v1."},
    )
    api_model: str | None = field(
        default=None, metadata={"help": "--judge llm with --base_url: the model name the endpoint serves."}
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Environment variable holding the endpoint's API key (unset: no key)."},
    )
    logprobs: bool = field(
        default=False, metadata={"help": "--base_url: ask for token log-probabilities to compute the judge's P(A)."}
    )
    both_orders: bool = field(
        default=True, metadata={"help": "--judge llm: ask in both orders (cancels position bias)."}
    )
    max_new_tokens: int = field(default=16, metadata={"help": "--judge llm: longest verdict, in tokens."})
    reward_model: str | None = field(
        default=None, metadata={"help": "--judge reward: path or Hub id of a prefkit reward model."}
    )
    reference_column: str = field(
        default="reference", metadata={"help": "--judge bleu/rouge: column with the reference answer."}
    )
    rouge_type: str = field(default="rougeL", metadata={"help": "--judge rouge: rouge1, rouge2, rougeL or rougeLsum."})
    tie_threshold: float = field(
        default=0.0, metadata={"help": "bleu/rouge/reward: score differences up to this are ties."}
    )
    batch_size: int = field(default=16, metadata={"help": "Pairs per judge call (and per write)."})
    id_column: str = field(
        default="id", metadata={"help": "Column with the pair's stable id (a hash of its texts when absent)."}
    )
    split: str = field(default="train", metadata={"help": "Split to read when --input is a dataset."})
    drop_invalid: bool = field(
        default=False, metadata={"help": "Skip bad rows (reported with a count) instead of stopping."}
    )


def make_parser(prog: str | None = None):
    from trl import TrlParser

    return TrlParser((LabelArguments,), prog=prog)


def build_judge(args: LabelArguments):
    """The judge the arguments ask for (models load here, after the data was checked)."""
    import os

    from ..data import judges

    if args.judge == "bleu":
        return judges.BleuJudge(tie_threshold=args.tie_threshold)
    if args.judge == "rouge":
        return judges.RougeJudge(rouge_type=args.rouge_type, tie_threshold=args.tie_threshold)
    if args.judge == "reward":
        if not args.reward_model:
            raise CommandError(
                "--judge reward needs --reward_model PATH_OR_ID (a model trained with prefkit reward, or 'demo')."
            )
        from ..rewards import resolve_reward

        return judges.RewardModelJudge(
            resolve_reward(args.reward_model), batch_size=args.batch_size, tie_threshold=args.tie_threshold
        )
    if args.base_url:
        if not args.api_model:
            raise CommandError("--base_url needs --api_model, the model name the endpoint serves.")
        return judges.LLMJudge(
            base_url=args.base_url,
            api_model=args.api_model,
            api_key=os.environ.get(args.api_key_env),
            both_orders=args.both_orders,
            max_new_tokens=args.max_new_tokens,
            logprobs=args.logprobs,
        )
    from ..models import DEFAULT_POLICY, load_model

    model, tokenizer = load_model(args.judge_model or DEFAULT_POLICY, quantization=args.quantization)
    return judges.LLMJudge(
        model, tokenizer, both_orders=args.both_orders, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run_command(
        lambda: make_parser(prog).parse_args_and_config(args=argv), run, interrupted=INTERRUPTED_RESUMABLE
    )


def run(args: LabelArguments) -> int:
    from ..data.labeling import label_records, validate_pairs_to_label
    from ..data.validation import PreferenceDataError

    check_output_path(args.output, "--output")
    rows = read_rows(args.input, split=args.split, drop_invalid=args.drop_invalid, what="pairs")
    reference_column = args.reference_column if args.judge in ("bleu", "rouge") else None
    try:
        validate_pairs_to_label(rows, id_column=args.id_column, reference_column=reference_column, name=args.input)
    except PreferenceDataError as error:
        if not args.drop_invalid:
            raise
        bad = set(error.bad_rows)
        if not bad:
            raise
        rows = [r for i, r in enumerate(rows) if i not in bad]
        print(f"prefkit label: dropped {len(bad)} bad rows, {len(rows)} left (first problem: {error.problems[0]})")
    judge = build_judge(args)
    summary = label_records(
        rows,
        judge,
        args.output,
        batch_size=args.batch_size,
        id_column=args.id_column,
        reference_column=reference_column,
        total=len(rows),
    )
    print(f"prefkit label: {summary}")
    if summary.labels[None]:
        print(
            f"prefkit label: {summary.labels[None]} pairs got no verdict the judge's answer could be parsed from; "
            "rerun the same command to ask again"
        )
    stats = getattr(judge, "stats", None)
    if stats:
        print(
            f"prefkit label: {stats['asks']} judge answers, {stats['unparseable']} unparseable, "
            f"{stats['disagreements']} pairs where the two orders disagreed (labeled tie)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
