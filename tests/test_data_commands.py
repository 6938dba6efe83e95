"""`prefkit generate-pairs`, `prefkit label` and `prefkit export` end to end on the tiny model, including resuming."""

from __future__ import annotations

import json
from pathlib import Path

from prefkit.cli import main as prefkit
from prefkit.data.judges import parse_verdict


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


PROMPTS = [
    {"id": "tea", "prompt": "How do I make tea?"},
    {"id": "teddy", "prompt": "Suggest a new activity I could do with my teddy bear."},
    {"id": "paris", "prompt": [{"role": "user", "content": "What is the capital of France?"}]},
]


def test_generate_pairs_writes_pairs_and_a_rerun_generates_nothing_new(tmp_path, tiny_model_dir, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    output = tmp_path / "pairs.jsonl"
    argv = [
        "generate-pairs",
        "--prompts",
        str(prompts),
        "--output",
        str(output),
        "--model_name_or_path",
        tiny_model_dir,
        "--n",
        "3",
        "--max_new_tokens",
        "6",
        "--batch_size",
        "2",
    ]
    assert prefkit(argv) == 0
    first = output.read_text()
    rows = read_jsonl(output)
    assert len(rows) == 9 and {r["prompt_id"] for r in rows} == {"tea", "teddy", "paris"}
    assert prefkit(argv) == 0
    assert "3 already done, 0 to go" in capsys.readouterr().out and output.read_text() == first


def test_generate_pairs_resumes_with_the_prompts_that_are_missing(tmp_path, tiny_model_dir):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    output = tmp_path / "pairs.jsonl"
    argv = [
        "generate-pairs",
        "--prompts",
        str(prompts),
        "--output",
        str(output),
        "--model_name_or_path",
        tiny_model_dir,
        "--n",
        "2",
        "--max_new_tokens",
        "6",
        "--batch_size",
        "1",
    ]
    assert prefkit(argv) == 0
    complete = read_jsonl(output)
    write_jsonl(output, [r for r in complete if r["prompt_id"] != "paris"])  # as if killed before the last batch
    assert prefkit(argv) == 0
    assert read_jsonl(output) == complete  # same rows: sampling is seeded per batch of prompt ids


def test_generate_pairs_reads_a_text_file_of_prompts(tmp_path, tiny_model_dir):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("How do I make tea?\n\nWhat is the capital of France?\n")
    output = tmp_path / "pairs.jsonl"
    assert (
        prefkit(
            [
                "generate-pairs",
                "--prompts",
                str(prompts),
                "--output",
                str(output),
                "--model_name_or_path",
                tiny_model_dir,
                "--max_new_tokens",
                "4",
            ]
        )
        == 0
    )
    assert [r["prompt"] for r in read_jsonl(output)] == ["How do I make tea?", "What is the capital of France?"]


def test_generate_pairs_reports_bad_prompts_before_loading_a_model(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "ok"}, {"prompt": ""}])
    code = prefkit(
        [
            "generate-pairs",
            "--prompts",
            str(prompts),
            "--model_name_or_path",
            "no/such-model",
            "--output",
            str(tmp_path / "out.jsonl"),
        ]
    )
    assert code == 2 and "row 1, column 'prompt': is empty" in capsys.readouterr().err


PAIRS = [
    {
        "id": f"p{i}",
        "prompt": "How do I make tea?",
        "reference": "Boil water and steep the tea for three minutes.",
        "response_a": a,
        "response_b": b,
    }
    for i, (a, b) in enumerate(
        [
            ("Boil water and steep the tea for three minutes.", "Tea is nice."),
            ("No idea.", "Boil the water, then steep the tea for three minutes."),
            ("Steep the tea in boiled water for three minutes.", "Ask someone else."),
            ("Whatever.", "Boil water and steep the tea."),
        ]
    )
]


def test_label_with_rouge_then_resume_labels_only_the_new_pairs(tmp_path, capsys):
    output = tmp_path / "labeled.jsonl"
    first = write_jsonl(tmp_path / "first.jsonl", PAIRS[:2])
    assert prefkit(["label", "--input", str(first), "--output", str(output), "--judge", "rouge"]) == 0
    everything = write_jsonl(tmp_path / "all.jsonl", PAIRS)
    assert prefkit(["label", "--input", str(everything), "--output", str(output), "--judge", "rouge"]) == 0
    assert "labeled 2 pairs (A: 1, B: 1), skipped 2 already done" in capsys.readouterr().out
    rows = read_jsonl(output)
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3"] and [r["label"] for r in rows] == ["A", "B", "A", "B"]


def test_label_with_bleu_needs_the_reference_column(tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{k: v for k, v in p.items() if k != "reference"} for p in PAIRS])
    assert prefkit(["label", "--input", str(pairs), "--judge", "bleu", "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "column 'reference': is missing" in capsys.readouterr().err


def test_label_with_the_tiny_llm_judge_reports_unparseable_answers(tmp_path, tiny_model_dir, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS[:2])
    output = tmp_path / "labeled.jsonl"
    assert (
        prefkit(
            [
                "label",
                "--input",
                str(pairs),
                "--output",
                str(output),
                "--judge",
                "llm",
                "--judge_model",
                tiny_model_dir,
                "--max_new_tokens",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = read_jsonl(output)
    unparseable = sum(parse_verdict(answer) is None for r in rows for answer in r["judge_raw"])
    assert f"4 judge answers, {unparseable} unparseable" in out
    assert all(r["judge"]["judge"] == "llm" and r["judge"]["model"] == tiny_model_dir for r in rows)


def test_label_with_a_reward_model_loads_it_with_reward_model_from_pretrained(tmp_path, monkeypatch):
    from prefkit import reward_model as reward_model_module

    class FakeRewardModel:
        loaded = []

        @classmethod
        def from_pretrained(cls, path, **kwargs):
            cls.loaded.append(path)
            return cls()

        def score(self, prompts, responses):
            return [float(len(r)) for r in responses]

    monkeypatch.setattr(reward_model_module, "RewardModel", FakeRewardModel)  # the Hub/disk boundary
    output = tmp_path / "labeled.jsonl"
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    command = ["label", "--input", str(pairs), "--output", str(output), "--judge", "reward", "--reward_model", "my/reward"]
    assert prefkit(command) == 0
    assert FakeRewardModel.loaded == ["my/reward"]
    assert [r["label"] for r in read_jsonl(output)] == ["A", "B", "A", "B"]


def test_label_with_the_demo_reward_model_name_uses_the_demo_loader(tmp_path, monkeypatch):
    from prefkit import demo as demo_module

    class LengthReward:
        def score(self, prompts, responses):
            return [float(len(r)) for r in responses]

    calls = []
    monkeypatch.setattr(
        demo_module, "load_demo_reward_model", lambda **kwargs: calls.append(kwargs) or LengthReward()
    )
    output = tmp_path / "labeled.jsonl"
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    command = ["label", "--input", str(pairs), "--output", str(output), "--judge", "reward", "--reward_model", "demo"]
    assert prefkit(command) == 0
    assert len(calls) == 1
    assert [r["label"] for r in read_jsonl(output)] == ["A", "B", "A", "B"]


LABELED = [
    {
        "id": "r1",
        "prompt": "Tea?",
        "response_a": "Boil water.",
        "response_b": "No.",
        "label": "A better",
        "confidence": 0.9,
    },
    {"id": "r2", "prompt": "Tea?", "response_a": "Ugh.", "response_b": "Steep it.", "label": "B", "confidence": 0.4},
    {"id": "r3", "prompt": "Tea?", "response_a": "Hm.", "response_b": "Meh.", "label": "both bad"},
    {"id": "r4", "prompt": "Tea?", "response_a": "Sure.", "response_b": "Fine.", "label": None},
]


def test_export_writes_pairs_with_margins_and_leaves_out_unlabeled_rows(tmp_path, capsys):
    labeled = write_jsonl(tmp_path / "labeled.jsonl", LABELED)
    output = tmp_path / "pairs.jsonl"
    assert prefkit(["export", "--input", str(labeled), "--output", str(output)]) == 0
    assert read_jsonl(output) == [
        {"prompt": "Tea?", "chosen": "Boil water.", "rejected": "No.", "margin": 2 / 3, "id": "r1"},
        {"prompt": "Tea?", "chosen": "Steep it.", "rejected": "Ugh.", "margin": 0.0, "id": "r2"},
    ]
    assert "4 input rows -> 2 pairs rows (1 rows without a label" in capsys.readouterr().out


def test_export_min_confidence_drops_unsure_judge_labels(tmp_path):
    labeled = write_jsonl(tmp_path / "labeled.jsonl", LABELED)
    output = tmp_path / "pairs.parquet"
    assert prefkit(["export", "--input", str(labeled), "--output", str(output), "--min_confidence", "0.5"]) == 0
    from datasets import load_dataset

    assert load_dataset("parquet", data_files=str(output), split="train")["id"] == ["r1"]


def test_export_unpaired_turns_both_bad_into_two_negatives(tmp_path):
    labeled = write_jsonl(tmp_path / "labeled.jsonl", LABELED)
    output = tmp_path / "kto.jsonl"
    assert prefkit(["export", "--input", str(labeled), "--output", str(output), "--format", "unpaired"]) == 0
    assert [(r["id"], r["label"]) for r in read_jsonl(output)] == [
        ("r1/a", True),
        ("r1/b", False),
        ("r2/b", True),
        ("r2/a", False),
        ("r3/a", False),
        ("r3/b", False),
    ]


def test_export_pairs_pointwise_scores_within_each_prompt(tmp_path):
    rows = [
        {"id": i, "prompt": "Tea?", "completion": c, "score": s}
        for i, (c, s) in enumerate([("a", 1), ("b", 5), ("c", 3)])
    ]
    output = tmp_path / "pairs.jsonl"
    assert (
        prefkit(
            [
                "export",
                "--input",
                str(write_jsonl(tmp_path / "points.jsonl", rows)),
                "--output",
                str(output),
                "--pointwise_mode",
                "all_pairs",
            ]
        )
        == 0
    )
    assert [(r["chosen"], r["rejected"], r["margin"], r["id"]) for r in read_jsonl(output)] == [
        ("b", "c", 2.0, "1|2"),
        ("b", "a", 4.0, "1|0"),
        ("c", "a", 2.0, "2|0"),
    ]


def test_export_with_a_custom_scale_file(tmp_path):
    scale = tmp_path / "scale.json"
    scale.write_text(
        json.dumps({"labels": ["A clearly", "A a bit", "same", "B a bit", "B clearly"], "margins": [2, 1, 0, 1, 2]})
    )
    labeled = write_jsonl(tmp_path / "labeled.jsonl", [{**LABELED[0], "label": "B clearly"}])
    output = tmp_path / "pairs.jsonl"
    assert prefkit(["export", "--input", str(labeled), "--output", str(output), "--scale", str(scale)]) == 0
    assert read_jsonl(output)[0]["margin"] == 2.0 and read_jsonl(output)[0]["chosen"] == "No."


def test_export_push_to_hub_goes_through_the_hub_client(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    uploaded = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: uploaded.setdefault("repo", (repo_id, kw)))
    monkeypatch.setattr(
        HfApi,
        "create_commit",
        lambda self, repo_id, operations, **kw: uploaded.setdefault(
            "files", {op.path_in_repo: op.path_or_fileobj for op in operations}
        ),
    )
    labeled = write_jsonl(tmp_path / "labeled.jsonl", LABELED)
    assert prefkit(["export", "--input", str(labeled), "--push_to_hub", "me/tea", "--license", "cc-by-4.0"]) == 0
    assert uploaded["repo"][0] == "me/tea" and uploaded["repo"][1]["repo_type"] == "dataset"
    assert b"license: cc-by-4.0" in uploaded["files"]["README.md"]


def test_export_says_what_to_rename_when_columns_are_unknown(tmp_path, capsys):
    data = write_jsonl(tmp_path / "x.jsonl", [{"question": "Tea?", "good": "Boil water.", "bad": "No."}])
    assert prefkit(["export", "--input", str(data), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "'question' -> 'prompt'" in capsys.readouterr().err
