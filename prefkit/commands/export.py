"""Export labels to a TRL dataset: a JSONL or Parquet file, and/or a Hub dataset repository with a card.

    prefkit export --input labeled.jsonl --output pairs.jsonl                     # pairwise, margins from the scale
    prefkit export --input labeled.jsonl --output kto.parquet --format unpaired   # KTO rows
    prefkit export --input prefkit/data/bundled/sentiment_pairs.jsonl --output kto.jsonl --format unpaired   # pairs -> KTO
    prefkit export --input labeled.jsonl --push_to_hub me/my-prefs --license cc-by-4.0
    prefkit export --input prefkit-data --output votes.jsonl --reliability drop   # the app's votes, unreliable annotators out

The input is what ``prefkit label`` (or the labeling app) writes: ``prompt``, ``response_a``, ``response_b``,
``label``. Pointwise rows (``completion`` + ``score`` / boolean ``label``; ``--pointwise_mode`` says how scores become
pairs) and ready TRL pairs are read too. Rows whose
label is missing (an unreadable judge answer) or whose ``confidence`` is below ``--min_confidence`` are left out with a
count. A JSONL export that is interrupted resumes where it stopped.

The labeling app's data folder (or its ``votes/`` subfolder) is read as votes: votes on gold pairs are never
exported, and ``--reliability`` says what to do with annotators' votes: ``keep`` them all, ``weight`` each row by its
annotator's reliability (a ``weight`` column), or ``drop`` the annotators below ``--min_gold_accuracy`` /
``--min_agreement`` (see ``prefkit.data.reliability``). The dataset card says which policy was applied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .runner import INTERRUPTED_RESUMABLE, CommandError, check_output_path, read_rows, run_command


@dataclass
class ExportArguments:
    input: str = field(
        metadata={"help": "Labeled pairs, pointwise rows or TRL pairs: .jsonl/.parquet/.csv file or dataset."}
    )
    output: str | None = field(default=None, metadata={"help": "Where to write: a .jsonl or .parquet file."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "Also upload to this Hub dataset repo (user/name), with a dataset card."}
    )
    format: str = field(
        default="pairs",
        metadata={
            "help": "'pairs' (prompt/chosen/rejected[/margin]) or 'unpaired' (KTO: prompt/completion/label).",
            "choices": ["pairs", "unpaired"],
        },
    )
    scale: str = field(
        default="7-point",
        metadata={
            "help": 'Label scale: 7-point, 5-point, 3-point, or a JSON file {"labels": [...], "margins": [...]}.'
        },
    )
    pointwise_mode: str = field(
        default="best_vs_worst",
        metadata={"help": "Pointwise input: pairs per prompt.", "choices": ["best_vs_worst", "all_pairs"]},
    )
    both_bad: bool = field(
        default=True, metadata={"help": "--format unpaired: 'both bad' labels give two undesirable rows."}
    )
    min_confidence: float = field(
        default=0.0, metadata={"help": "Leave out judge labels whose confidence is below this."}
    )
    keep_columns: list[str] = field(
        default_factory=lambda: ["id"], metadata={"help": "Extra columns to carry into the export."}
    )
    split: str = field(
        default="train", metadata={"help": "Split to read when --input is a dataset; also the split name on the Hub."}
    )
    drop_invalid: bool = field(
        default=False, metadata={"help": "Skip bad rows (reported with a count) instead of stopping."}
    )
    private: bool | None = field(default=None, metadata={"help": "--push_to_hub: create the repo private."})
    license: str | None = field(
        default=None, metadata={"help": "--push_to_hub: licence for the dataset card, e.g. cc-by-4.0."}
    )
    description: str | None = field(default=None, metadata={"help": "--push_to_hub: a paragraph for the dataset card."})
    reliability: str = field(
        default="keep",
        metadata={
            "help": "App votes only: 'keep' every annotator, 'weight' rows by annotator reliability, or 'drop' "
            "annotators below --min_gold_accuracy / --min_agreement.",
            "choices": ["keep", "weight", "drop"],
        },
    )
    min_gold_accuracy: float = field(
        default=0.7, metadata={"help": "--reliability drop: least share of gold pairs an annotator must get right."}
    )
    min_agreement: float = field(
        default=0.5, metadata={"help": "--reliability drop: least agreement with other annotators on shared pairs."}
    )


def make_parser(prog: str | None = None):
    from trl import TrlParser

    return TrlParser((ExportArguments,), prog=prog)


def load_scale(spec: str):
    """``7-point`` / ``5-point`` / ``3-point`` or a JSON file with ``labels`` (and optional ``margins``)."""
    import json
    from pathlib import Path

    from ..data.scales import GradedScale

    named = {"7-point": GradedScale.seven_point, "5-point": GradedScale.five_point, "3-point": GradedScale.three_point}
    if spec in named:
        return named[spec]()
    path = Path(spec)
    if not path.is_file():
        raise CommandError(f"--scale {spec!r} is neither one of {sorted(named)} nor a JSON file.")
    return GradedScale.from_dict(json.loads(path.read_text(encoding="utf-8")))


def build_rows(records: list[dict], args: ExportArguments, scale) -> tuple[list[dict], str]:
    """TRL rows from whatever the input holds, and a sentence saying what was left out."""
    from ..data.labels import labels_to_pairs, labels_to_unpaired, pairs_to_unpaired, pointwise_to_pairs
    from ..data.validation import (
        ONE_FORMAT_PER_DATASET,
        PreferenceDataError,
        RowProblem,
        check_one_format,
        detect_format,
        format_hint,
        validate_dataset,
    )

    columns = list(dict.fromkeys(k for r in records[:1000] for k in r))
    kind = detect_format(columns)
    if kind in ONE_FORMAT_PER_DATASET:
        check_one_format(records, args.input, kind)  # a TRL dataset (and Arrow) holds one format, not a mix
    errors = "drop" if args.drop_invalid else "raise"
    keep = tuple(args.keep_columns)
    if kind == "labeled":

        def confident(record: dict) -> bool:  # rows without a confidence (people's labels) always pass
            return record.get("confidence") is None or record["confidence"] >= args.min_confidence

        unlabeled = [r for r in records if r.get("label") is None]
        unsure = [r for r in records if r.get("label") is not None and not confident(r)]
        usable = [r for r in records if r.get("label") is not None and confident(r)]
        note = f"{len(unlabeled)} rows without a label and {len(unsure)} below --min_confidence left out"
        if args.format == "unpaired":
            return labels_to_unpaired(usable, scale, both_bad=args.both_bad, keep_columns=keep, errors=errors), note
        return labels_to_pairs(usable, scale, keep_columns=keep, errors=errors), note
    if kind == "pointwise":
        if args.format == "unpaired":
            report = validate_dataset(records, args.input, format="pointwise", drop_invalid=args.drop_invalid)
            rows = list(report.dataset)
            if any(not isinstance(r.get("label"), bool) for r in rows):
                raise CommandError(
                    "--format unpaired needs boolean 'label' columns; numeric scores pair up with --format pairs."
                )
            return [
                {k: r[k] for k in ("prompt", "completion", "label", *keep) if k in r} for r in rows
            ], f"{report.num_dropped} bad rows dropped"
        return pointwise_to_pairs(
            records, args.pointwise_mode, keep_columns=keep, errors=errors
        ), "pointwise rows paired within each prompt"
    if kind == "preference":
        report = validate_dataset(records, args.input, format="preference", drop_invalid=args.drop_invalid)
        if args.format == "unpaired":  # each pair: its chosen answer desirable, its rejected one not
            rows = pairs_to_unpaired(report.dataset, keep_columns=keep, errors=errors)
            return rows, f"{report.num_dropped} bad rows dropped"
        trl = ("prompt", "chosen", "rejected", "margin")
        return [
            {k: r[k] for k in (*trl, *keep) if k in r} for r in report.dataset
        ], f"{report.num_dropped} bad rows dropped"
    raise PreferenceDataError(
        args.input,
        [
            RowProblem(
                None, None, f"has columns {sorted(columns)}; export needs labeled pairs, pointwise rows or TRL pairs"
            )
        ],
        hint=format_hint(columns),
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run_command(
        lambda: make_parser(prog).parse_args_and_config(args=argv), run, interrupted=INTERRUPTED_RESUMABLE
    )


def vote_rows(args: ExportArguments) -> tuple[list[dict], str, int, str, int]:
    """Training rows from the app's vote folder under ``--reliability``: rows, a note, the vote count, the sentence
    for the dataset card, and how many votes the app's moderation hid (left out, still on disk)."""
    from ..data.reliability import ReliabilityThresholds, apply_reliability_policy
    from ..data.votes import Moderation, read_moderation, read_votes, votes_to_rows

    try:
        thresholds = ReliabilityThresholds(min_gold_accuracy=args.min_gold_accuracy, min_agreement=args.min_agreement)
        thresholds.check()
    except ValueError as error:
        raise CommandError(f"{error} Pass --min_gold_accuracy and --min_agreement as shares between 0 and 1.") from None
    every_vote = read_votes(args.input, include_hidden=True)  # the folder read once; moderation splits it
    moderation = Moderation.replay(read_moderation(args.input))
    votes, hidden = moderation.visible(every_vote), len(moderation.hidden(every_vote))
    applied = apply_reliability_policy(votes, args.reliability, thresholds)
    kind = "kto" if args.format == "unpaired" else "dpo"
    weights = applied.weights if args.reliability == "weight" else None
    rows = votes_to_rows(applied.votes, kind=kind, weights=weights)
    note = f"{len(votes) - len(applied.votes)} votes left out: gold pairs" + (
        f" and {len(applied.dropped_annotators)} dropped annotators" if applied.dropped_annotators else ""
    ) + (f"; {hidden} hidden by moderation, not counted" if hidden else "")
    return rows, note, len(votes), applied.description, hidden


def run(args: ExportArguments) -> int:
    from ..data.export import export_pairs, push_dataset_to_hub, to_dataset
    from ..data.votes import vote_files

    if not args.output and not args.push_to_hub:
        raise CommandError("give --output FILE.jsonl|.parquet and/or --push_to_hub user/name.")
    if args.output:
        check_output_path(args.output, "--output")
    reliability = hidden = None
    if os.path.isdir(args.input) and vote_files(args.input):
        rows, note, count, reliability, hidden = vote_rows(args)
        print(f"prefkit export: {count} votes -> {len(rows)} {args.format} rows ({note})")
        print(f"prefkit export: {reliability}")
    else:
        if args.reliability != "keep":
            raise CommandError(
                f"--reliability {args.reliability} needs the labeling app's votes (who voted, gold pairs): pass the "
                "app's data folder as --input, or leave --reliability at keep for labeled rows."
            )
        scale = load_scale(args.scale)
        records = read_rows(args.input, split=args.split, drop_invalid=args.drop_invalid, what="labels")
        rows, note = build_rows(records, args, scale)
        print(f"prefkit export: {len(records)} input rows -> {len(rows)} {args.format} rows ({note})")
    if not rows:
        from ..data.validation import PreferenceDataError, RowProblem

        raise PreferenceDataError(args.input, [RowProblem(None, None, f"gives nothing to export ({note})")])
    dataset = to_dataset(rows)
    if args.output:
        path = export_pairs(dataset, args.output, progress=True)
        print(f"prefkit export: wrote {path}")
    if args.push_to_hub:
        push_dataset_to_hub(
            dataset,
            args.push_to_hub,
            private=args.private,
            license=args.license,
            description=args.description,
            split=args.split,
            reliability=reliability,
            hidden_votes=hidden,
        )
        print(f"prefkit export: pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
