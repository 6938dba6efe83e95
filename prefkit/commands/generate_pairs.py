"""Sample response pairs from a model, to be labeled.

    prefkit generate-pairs --prompts prefkit/data/bundled/sentiment_prompts.jsonl --output pairs.jsonl --n 4 --temperature 0.9
    prefkit generate-pairs --prompts examples/prompts.txt --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct --quantization 4bit

Prompts come from a JSONL / Parquet / CSV file or a dataset with a ``prompt`` column (text or chat messages, plus an
optional ``id``), or a .txt file with one prompt per line. Pairs are appended to ``--output`` after every batch; a
rerun skips the prompts whose pairs are already there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .runner import INTERRUPTED_RESUMABLE, check_output_path, read_rows, run_command


@dataclass
class GeneratePairsArguments:
    prompts: str = field(
        metadata={
            "help": "Prompts: .jsonl/.parquet/.csv file or dataset with a 'prompt' column, or a .txt file (one per line)."
        }
    )
    output: str = field(
        default="pairs.jsonl", metadata={"help": "JSONL file the pairs are appended to (resumed if it exists)."}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt."})
    id_column: str = field(
        default="id", metadata={"help": "Column with a stable prompt id (a hash of the prompt when absent)."}
    )
    split: str = field(default="train", metadata={"help": "Split to read when --prompts is a dataset."})
    n: int = field(default=2, metadata={"help": "Answers sampled per prompt (num_return_sequences)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature; must be > 0."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0 = off)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Longest answer, in tokens."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Repetition penalty (1.0 = off)."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (combined with each batch's prompt ids)."})
    pairing: str = field(
        default="all",
        metadata={
            "help": "'all': every two distinct answers; 'disjoint': 1-2, 3-4, ...",
            "choices": ["all", "disjoint"],
        },
    )
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first N prompts."})
    quantization: str | None = field(
        default=None,
        metadata={"help": "Load the model in 4bit or 8bit (bitsandbytes).", "choices": ["4bit", "8bit", None]},
    )
    drop_invalid: bool = field(
        default=False, metadata={"help": "Skip bad prompt rows (reported with a count) instead of stopping."}
    )


def make_parser(prog: str | None = None):
    from trl import TrlParser

    from .arguments import ModelArguments

    return TrlParser((GeneratePairsArguments, ModelArguments), prog=prog)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run_command(
        lambda: make_parser(prog).parse_args_and_config(args=argv), run, interrupted=INTERRUPTED_RESUMABLE
    )


def run(args: GeneratePairsArguments, model_args) -> int:
    from tqdm.auto import tqdm

    from ..data.generation import iter_generate_pairs, prompt_id
    from ..data.io import append_jsonl, done_ids
    from ..data.validation import validate_dataset

    output = check_output_path(args.output, "--output")
    rows = read_rows(args.prompts, split=args.split, drop_invalid=args.drop_invalid, what="prompts")
    if args.prompt_column != "prompt":
        rows = [
            {**{k: v for k, v in r.items() if k != args.prompt_column}, "prompt": r.get(args.prompt_column)}
            for r in rows
        ]
    if args.max_prompts is not None:
        rows = rows[: args.max_prompts]
    report = validate_dataset(
        rows, args.prompts, format="prompts", id_column=args.id_column, drop_invalid=args.drop_invalid
    )
    if report.num_dropped:
        print(f"prefkit generate-pairs: {report.summary()}")
    rows = list(report.dataset)
    ids = [str(r[args.id_column]) if r.get(args.id_column) is not None else prompt_id(r["prompt"]) for r in rows]
    unique = dict(zip(ids, rows))  # the same prompt twice (no id column) would give the same pair ids
    if len(unique) < len(rows):
        print(f"prefkit generate-pairs: skipping {len(rows) - len(unique)} repeated prompts")
        ids, rows = list(unique), list(unique.values())
    output.parent.mkdir(parents=True, exist_ok=True)
    done = done_ids(output, "prompt_id")
    todo = [(r["prompt"], i) for r, i in zip(rows, ids) if i not in done]
    print(f"prefkit generate-pairs: {len(rows)} prompts, {len(rows) - len(todo)} already done, {len(todo)} to go")
    if not todo:
        return 0

    from ..models import load_model

    model, tokenizer = load_model(
        model_args.model_name_or_path,
        quantization=args.quantization,
        dtype=model_args.dtype or "auto",
        revision=model_args.model_revision,
    )
    batches = iter_generate_pairs(
        model,
        tokenizer,
        [p for p, _ in todo],
        args.n,
        ids=[i for _, i in todo],
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        repetition_penalty=args.repetition_penalty,
        batch_size=args.batch_size,
        seed=args.seed,
        pairing=args.pairing,
    )
    written = 0
    with tqdm(total=len(todo), desc="generating pairs", unit="prompt") as bar:
        for batch_ids, batch_rows in batches:
            written += append_jsonl(batch_rows, output)
            bar.update(len(batch_ids))
    print(f"prefkit generate-pairs: wrote {written} pairs to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
