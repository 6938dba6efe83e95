"""`prefkit bon` / scripts/bon.py: prompts from a file or arguments in, one JSONL line per prompt out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prefkit.commands.bon import main

REWARD_MODULE = '''
def vowels(prompts, responses):
    return [sum(r.count(v) for v in "aeiou") + len(r) / 1000 for r in responses]
'''


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    (tmp_path / "bon_test_rewards.py").write_text(REWARD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "bon_test_rewards:vowels"


def vowels(text):
    return sum(text.count(v) for v in "aeiou") + len(text) / 1000


def test_prompts_from_a_text_file_give_one_ranked_jsonl_line_each_and_a_plot(tmp_path, tiny_model_dir, reward_module):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("Tell me about tea.\n\nWhat is the capital of France?\nWrite a poem.\n")
    output = tmp_path / "out" / "bon.jsonl"

    code = main([
        "--model_name_or_path", tiny_model_dir, "--reward_function", reward_module, "--prompts_file", str(prompts_file),
        "--output", str(output), "--n", "3", "--batch_size", "2", "--max_new_tokens", "6", "--seed", "0", "--device", "cpu",
    ])

    assert code == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["Tell me about tea.", "What is the capital of France?", "Write a poem."]
    for record in records:
        assert len(record["candidates"]) == 3
        assert record["best"] == max((c["text"] for c in record["candidates"]), key=vowels)
    assert output.with_suffix(".png").stat().st_size > 0


def test_prompts_given_as_arguments_and_a_jsonl_prompt_column_are_concatenated(tmp_path, tiny_model_dir, reward_module):
    prompts_file = tmp_path / "eval.jsonl"
    prompts_file.write_text(json.dumps({"question": "Tell me about tea."}) + "\n")
    output = tmp_path / "bon.jsonl"

    main([
        "--model_name_or_path", tiny_model_dir, "--reward_function", reward_module, "--prompt", "Hello there",
        "--prompts_file", str(prompts_file), "--prompt_column", "question", "--output", str(output), "--n", "2",
        "--max_new_tokens", "4", "--no_plot", "--device", "cpu",
    ])

    assert [json.loads(line)["prompt"] for line in output.read_text().splitlines()] == ["Hello there", "Tell me about tea."]
    assert not output.with_suffix(".png").exists()


def test_a_missing_prompt_column_is_named_before_any_model_loads(tmp_path, capsys):
    prompts_file = tmp_path / "eval.jsonl"
    prompts_file.write_text(json.dumps({"question": "Tell me about tea."}) + "\n")

    assert main(["--model_name_or_path", str(tmp_path / "no-such-model"), "--prompts_file", str(prompts_file)]) == 2
    assert "no column 'prompt' (it has ['question'])" in capsys.readouterr().err


def test_no_prompts_at_all_is_an_error(tmp_path, capsys):
    assert main(["--model_name_or_path", str(tmp_path / "no-such-model")]) == 2
    assert capsys.readouterr().err.startswith("error: no prompts")


def test_the_script_is_the_same_program(tmp_path, tiny_model_dir):
    (tmp_path / "bon_test_rewards.py").write_text(REWARD_MODULE)
    output = tmp_path / "bon.jsonl"
    root = Path(__file__).resolve().parents[1]

    completed = subprocess.run(
        [sys.executable, str(root / "scripts" / "bon.py"), "--model_name_or_path", tiny_model_dir,
         "--reward_function", "bon_test_rewards:vowels", "--prompt", "Tell me about tea.", "--n", "2",
         "--max_new_tokens", "4", "--output", str(output), "--no_plot", "--device", "cpu"],
        capture_output=True, text=True, env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{root}"}, timeout=300,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "KL(best-of-2 || policy)" in completed.stdout
    assert len(output.read_text().splitlines()) == 1


def test_a_reward_model_folder_ranks_the_candidates(tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefkit.reward_model import RewardModel

    reward_dir = tmp_path / "reward"
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).save_pretrained(reward_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(reward_dir)
    output = tmp_path / "bon.jsonl"

    main([
        "--model_name_or_path", tiny_model_dir, "--reward_model", str(reward_dir), "--prompt", "Tell me about tea.",
        "--n", "3", "--max_new_tokens", "6", "--output", str(output), "--no_plot", "--device", "cpu", "--seed", "0",
    ])

    (record,) = [json.loads(line) for line in output.read_text().splitlines()]
    reward_model = RewardModel.from_pretrained(reward_dir, device="cpu")
    texts = [c["text"] for c in record["candidates"]]
    scores = reward_model.score(["Tell me about tea."] * 3, texts)
    assert [c["reward"] for c in record["candidates"]] == pytest.approx(scores, abs=1e-5)
    assert record["best"] == texts[max(range(3), key=lambda k: scores[k])]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_split_the_prompts_and_the_output_keeps_prompt_order(tmp_path, tiny_model_dir):
    (tmp_path / "bon_test_rewards.py").write_text(REWARD_MODULE)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Question number {k}?\n" for k in range(5)))
    output = tmp_path / "bon.jsonl"
    root = Path(__file__).resolve().parents[1]

    completed = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
         str(root / "scripts" / "bon.py"), "--model_name_or_path", tiny_model_dir, "--reward_function",
         "bon_test_rewards:vowels", "--prompts_file", str(prompts), "--n", "2", "--max_new_tokens", "4",
         "--output", str(output), "--no_plot", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{root}", "OMP_NUM_THREADS": "1"},
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "(2 processes)" in completed.stdout
    assert [json.loads(line)["prompt"] for line in output.read_text().splitlines()] == [f"Question number {k}?" for k in range(5)]
    assert sorted(p.name for p in tmp_path.glob("bon*.jsonl")) == ["bon.jsonl"]  # shards merged and removed


def test_the_benchmark_times_both_modes_on_the_same_prompts_and_reports_their_ratio(tmp_path, tiny_model_dir):
    (tmp_path / "bon_test_rewards.py").write_text(REWARD_MODULE)
    root = Path(__file__).resolve().parents[1]

    completed = subprocess.run(
        [sys.executable, str(root / "scripts" / "bench_bon.py"), "--model_name_or_path", tiny_model_dir,
         "--reward_function", "bon_test_rewards:vowels", "--n", "2", "3", "--max_new_tokens", "4", "--device", "cpu",
         "--output_dir", str(tmp_path / "bench")],
        capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{root}", "OMP_NUM_THREADS": "1"},
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((tmp_path / "bench" / "bench_bon.json").read_text())
    assert [row["n"] for row in report["rows"]] == [2, 3]
    for row in report["rows"]:
        assert row["speedup"] == pytest.approx(row["loop_seconds"] / row["batched_seconds"])
        assert row["batched_tokens"] > 0 and row["loop_tokens"] > 0
    assert (tmp_path / "bench" / "bench_bon.png").stat().st_size > 0
