"""Writing preference rows where trainers read them: a ``datasets.Dataset``, a JSONL or Parquet file, or a Hub
dataset repository with a dataset card.

Rows are in TRL's columns: pairwise ``prompt`` / ``chosen`` / ``rejected`` (+ ``margin``), or unpaired ``prompt`` /
``completion`` / ``label`` for KTO. They are validated before anything is written, so a file on disk is always one
that ``DPOTrainer`` / ``RewardTrainer`` / ``KTOTrainer`` accept.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from .io import done_ids, write_jsonl
from .validation import PreferenceDataError, RowProblem, check_one_format, validate_dataset

EXPORT_SUFFIXES = (".jsonl", ".parquet")


def to_dataset(rows: Any):
    """A ``datasets.Dataset`` from a list of dicts (or a ``Dataset``, returned as is)."""
    from datasets import Dataset

    if isinstance(rows, Dataset):
        return rows
    rows = list(rows)
    if not rows:
        raise PreferenceDataError("rows", [RowProblem(None, None, "is empty; there is nothing to export")])
    check_one_format(rows, "rows")  # Arrow cannot hold texts and conversations in one column
    return Dataset.from_list(rows)


def export_format(dataset: Any) -> str:
    """``"pairwise"`` (chosen/rejected) or ``"unpaired"`` (completion + boolean label), from the columns."""
    columns = set(dataset.column_names)
    if {"chosen", "rejected"} <= columns:
        return "pairwise"
    if {"prompt", "completion", "label"} <= columns:
        return "unpaired"
    raise PreferenceDataError(
        "rows",
        [
            RowProblem(
                None, None, f"has columns {sorted(columns)}; expected prompt/chosen/rejected or prompt/completion/label"
            )
        ],
        hint="Turn labels into rows first: prefkit.data.labels_to_pairs / labels_to_unpaired / pointwise_to_pairs.",
    )


def _validate(dataset: Any) -> None:
    kind = export_format(dataset)
    validate_dataset(dataset, "rows to export", format="preference" if kind == "pairwise" else "unpaired")


def export_pairs(
    rows_or_dataset: Any, path: str | os.PathLike, *, validate: bool = True, progress: bool = False
) -> Path:
    """Write TRL rows to ``path``; the format follows the extension (``.jsonl`` or ``.parquet``). Returns the path.

    Rows are validated first (a bad row raises :class:`PreferenceDataError` and nothing is written). The file is
    written as ``<path>.partial`` and renamed into place at the end, so ``path`` is never half-written. A JSONL
    export that was interrupted resumes: rows whose ``id`` is already in the ``.partial`` file are not written again.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise ValueError(f"{path}: unknown export format {suffix!r}; use one of {', '.join(EXPORT_SUFFIXES)}.")
    dataset = to_dataset(rows_or_dataset)
    if validate:
        _validate(dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    if suffix == ".jsonl":
        done = done_ids(partial) if "id" in dataset.column_names else set()
        if partial.exists() and not done:
            partial.unlink()  # nothing to resume from
        todo = (row for row in dataset if str(row.get("id")) not in done)
        bar = tqdm(todo, total=len(dataset) - len(done), desc=f"writing {path.name}", unit="row", disable=not progress)
        write_jsonl(bar, partial, append=True)
    else:
        dataset.to_parquet(str(partial))
    os.replace(partial, path)
    return path


# ---- Hub ------------------------------------------------------------------------------------------------------------


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def build_dataset_card(
    dataset: Any,
    repo_id: str,
    *,
    license: str | None = None,
    description: str | None = None,
    split: str = "train",
    source: str | None = None,
    reliability: str | None = None,
    hidden_votes: int | None = None,
) -> str:
    """A dataset card (YAML front matter + Markdown) describing TRL preference rows: format, size, margins, usage.

    ``reliability``: which reliability policy chose the rows (keep / weight / drop, from
    :func:`prefkit.data.reliability.apply_reliability_policy`), for a "Label reliability" section.
    ``hidden_votes``: how many votes the app's moderation hid (left out of the rows), for a "Moderation" section."""
    kind = export_format(dataset)
    n = len(dataset)
    columns = list(dataset.column_names)
    conversational = bool(n) and isinstance(dataset[0]["prompt"], list)
    tags = ["prefkit", "trl", "preference"] + (["dpo", "reward-modeling"] if kind == "pairwise" else ["kto"])
    front = [
        "---",
        f"license: {license or 'unknown'}",
        "task_categories:",
        "- text-generation",
        "tags:",
        *[f"- {tag}" for tag in tags],
        "size_categories:",
        f"- {_size_category(n)}",
        "configs:",
        "- config_name: default",
        "  data_files:",
        f"  - split: {split}",
        f"    path: data/{split}-*.parquet",
        "---",
    ]
    lines = [f"# {repo_id.split('/')[-1]}", ""]
    lines += [description.strip(), ""] if description else []
    fmt = "conversational" if conversational else "standard"
    if kind == "pairwise":
        lines += [
            f"Pairwise preference data in TRL's {fmt} format: {n} rows with columns {', '.join(f'`{c}`' for c in columns)}.",
            "`chosen` is the preferred response to `prompt`, `rejected` the other one.",
        ]
        if "margin" in columns:
            margins = [float(m) for m in dataset["margin"]]
            lines.append(
                f"`margin` says how much better `chosen` is (used by TRL's `RewardTrainer` in "
                f"`-log σ(r_chosen - r_rejected - margin)`); here it ranges from {min(margins):.3g} to {max(margins):.3g}, "
                f"mean {sum(margins) / len(margins):.3g}."
            )
        if "margin" in columns:
            usage = [
                "from prefkit import RewardConfig, RewardTrainer",
                "",
                'trainer = RewardTrainer(model="sentence-transformers/all-MiniLM-L6-v2", '
                'args=RewardConfig(output_dir="reward-model"), train_dataset=dataset)',
            ]
        else:
            usage = [
                "from prefkit import DPOConfig, DPOTrainer",
                "",
                'trainer = DPOTrainer(model="HuggingFaceTB/SmolLM2-135M-Instruct", '
                'args=DPOConfig(output_dir="dpo-model"), train_dataset=dataset)',
            ]
    else:
        positives = sum(bool(x) for x in dataset["label"])
        lines += [
            f"Unpaired preference data in TRL's {fmt} format for KTO: {n} rows with columns "
            f"{', '.join(f'`{c}`' for c in columns)}; `label` is true for a desirable completion "
            f"({positives} rows) and false for an undesirable one ({n - positives} rows).",
        ]
        usage = [
            "from trl import KTOConfig, KTOTrainer",
            "",
            'trainer = KTOTrainer(model=model, args=KTOConfig(output_dir="kto-model"), train_dataset=dataset, '
            "processing_class=tokenizer)",
        ]
    if "weight" in columns:
        lines.append(
            "`weight` is the labeling annotator's reliability (0 to 1). TRL's trainers do not read it; use it to "
            "filter or sample rows, or in a weighted loss."
        )
    lines += ["", "## Source", "", source.strip() if source else "Collected and exported with prefkit.", ""]
    if reliability:
        lines += ["## Label reliability", "", reliability.strip(), ""]
    if hidden_votes is not None:
        lines += ["## Moderation", "", moderation_sentence(hidden_votes), ""]
    lines += [
        "## Usage",
        "",
        "```python",
        "from datasets import load_dataset",
        f'dataset = load_dataset("{repo_id}", split="{split}")',
        "",
        *usage,
        "trainer.train()",
        "```",
        "",
        f"## Licence\n\n{license or 'Not stated by the uploader.'}",
        "",
    ]
    return "\n".join(front) + "\n\n" + "\n".join(lines)


def moderation_sentence(hidden_votes: int) -> str:
    """What moderation left out of an export, for its dataset card and the app's export message."""
    if hidden_votes == 0:
        return "No votes were hidden by moderation."
    return (f"{hidden_votes} vote{'s were' if hidden_votes != 1 else ' was'} hidden by the app's admins (moderation) and "
            "left out of these rows; the vote store keeps them.")


def push_dataset_to_hub(
    rows_or_dataset: Any,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    card: str | None = None,
    *,
    license: str | None = None,
    description: str | None = None,
    split: str = "train",
    commit_message: str | None = None,
    validate: bool = True,
    reliability: str | None = None,
    hidden_votes: int | None = None,
):
    """Upload TRL rows to a Hub dataset repo as Parquet, with a dataset card, in one commit; returns the commit info.

    ``card``: the full README.md text; by default one is built by :func:`build_dataset_card` from the data
    (``license``, ``description``, ``reliability``, the policy that chose the rows, and ``hidden_votes``, how many
    votes moderation left out, go into it). ``token``
    defaults to the logged-in one and is never printed.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    dataset = to_dataset(rows_or_dataset)
    if validate:
        _validate(dataset)
    if card is None:
        card = build_dataset_card(
            dataset, repo_id, license=license, description=description, split=split, reliability=reliability,
            hidden_votes=hidden_votes,
        )
    buffer = io.BytesIO()
    dataset.to_parquet(buffer)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=f"data/{split}-00000-of-00001.parquet", path_or_fileobj=buffer.getvalue()),
        CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")),
    ]
    return api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message or f"Upload {len(dataset)} preference rows with prefkit",
        repo_type="dataset",
    )
