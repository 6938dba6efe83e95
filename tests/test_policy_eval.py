"""`prefkit eval` / prefkit.evaluate: reward, win rate and KL against the base, with intervals, resumable."""

import copy
import json
import math

import pytest
import torch

from prefkit import evaluate
from prefkit.cli import main as prefkit
from prefkit.policy_eval import (
    EvaluationError,
    bootstrap_interval,
    distinct_n,
    kl_estimates,
    pairwise_outcomes,
    repeats_an_ngram,
)

PROMPTS = [f"Tell me something about topic number {i}." for i in range(12)]


def bang_reward(prompts, completions):
    """Known optimum: answers made of '!' score highest."""
    return [float(c.count("!")) for c in completions]


def tilted_copy(model, tokenizer, token: str, bias: float):
    """The model with a logit bias towards one token: a policy 'trained' towards a reward whose optimum is known."""
    tilted = copy.deepcopy(model)
    (target,) = tokenizer.encode(token, add_special_tokens=False)
    old = tilted.get_output_embeddings()
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[target] = bias
    tilted.lm_head = head
    return tilted


# ---- pure statistics ---------------------------------------------------------------------------------------------


def test_kl_estimators_are_exactly_unbiased_on_a_categorical_case():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    exact = float((p * (p / q).log()).sum())
    # one-token answers, one per category: the expectation under p is the p-weighted sum over categories
    k1, k3 = kl_estimates(p.log().unsqueeze(1), q.log().unsqueeze(1), torch.ones(4, 1))
    assert float((p * k1).sum()) == pytest.approx(exact, abs=1e-6)
    assert float((p * k3).sum()) == pytest.approx(exact, abs=1e-6)
    assert (k3 >= 0).all() and (k1 < 0).any()  # k1 goes negative on single samples, k3 never does


def test_kl_estimators_sum_over_the_answer_tokens_only():
    policy = torch.tensor([[-1.0, -2.0, -3.0]])
    base = torch.tensor([[-1.5, -2.0, -9.0]])
    k1, k3 = kl_estimates(policy, base, torch.tensor([[1.0, 1.0, 0.0]]))
    assert k1.item() == pytest.approx(0.5)
    assert k3.item() == pytest.approx(math.exp(-0.5) - 1 + 0.5)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_data():
    small = bootstrap_interval([0.0, 1.0] * 5, seed=1)
    large = bootstrap_interval([0.0, 1.0] * 200, seed=1)
    assert small[0] < 0.5 < small[1] and large[0] < 0.5 < large[1]
    assert large[1] - large[0] < small[1] - small[0]
    assert bootstrap_interval([2.0]) == (2.0, 2.0)


def test_diversity_measures():
    assert distinct_n(["a b c", "a b c"], 1) == 0.5
    assert distinct_n(["a b", "c d"], 2) == 1.0
    assert repeats_an_ngram("one two three four one two three four") and not repeats_an_ngram("one two three four five")


def test_pairwise_outcomes_ask_both_orders_so_a_position_biased_judge_scores_one_half():
    class AlwaysFirst:
        def judge(self, prompts, pairs):
            return ["A"] * len(pairs)

    class PrefersLonger:
        def judge(self, prompts, pairs):
            return ["A" if len(a) > len(b) else "B" for a, b in pairs]

    assert pairwise_outcomes(AlwaysFirst(), ["p", "p"], ["x", "y"], ["z", "w"]) == [0.5, 0.5]
    assert pairwise_outcomes(PrefersLonger(), ["p", "p"], ["long answer", "x"], ["short", "longer"]) == [1.0, 0.0]


# ---- evaluate on the tiny model --------------------------------------------------------------------------------


def test_a_policy_tilted_towards_the_reward_wins_with_an_interval_above_one_half(tiny_model, tiny_tokenizer, tmp_path):
    tilted = tilted_copy(tiny_model, tiny_tokenizer, "!", bias=4.0)
    report = evaluate(
        {"base": (tiny_model, tiny_tokenizer), "tilted": (tilted, tiny_tokenizer)}, PROMPTS, reward=bang_reward,
        num_samples=2, max_new_tokens=8, output_dir=tmp_path / "eval", progress=False,
    )
    base, trained = report["base"], report["tilted"]
    assert base.is_baseline and report.baseline == "base"
    assert trained.reward > base.reward
    assert trained.win_rate > 0.5 and trained.win_rate_interval[0] > 0.5
    assert trained.kl_k3 > 0.1 and base.kl_k3 == 0.0
    # the gain is paired by prompt; with as many answers per prompt for both, its mean is the difference of the means
    assert trained.reward_gain == pytest.approx(trained.reward - base.reward)
    assert trained.reward_gain_interval[0] > 0 and base.reward_gain is None
    summary = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert {p["name"] for p in summary["policies"]} == {"base", "tilted"}
    assert (tmp_path / "eval" / "eval.png").stat().st_size > 0
    assert "tilted" in report.table() and "(base)" in report.table()


def test_two_identical_policies_tie_at_zero_kl(tiny_model, tiny_tokenizer):
    report = evaluate(
        {"a": (tiny_model, tiny_tokenizer), "b": (copy.deepcopy(tiny_model), tiny_tokenizer)}, PROMPTS[:6],
        reward=bang_reward, max_new_tokens=6, progress=False,
    )
    other = report["b"]
    assert other.win_rate_interval[0] <= 0.5 <= other.win_rate_interval[1]
    assert other.kl_k3 == pytest.approx(0.0, abs=1e-5) and other.kl_k1 == pytest.approx(0.0, abs=1e-5)
    assert other.reward == report["a"].reward
    assert other.reward_gain == 0.0 and other.reward_gain_interval == (0.0, 0.0)


def test_an_interrupted_evaluation_resumes_from_its_samples(tiny_model, tiny_tokenizer, tmp_path):
    policies = {"base": (tiny_model, tiny_tokenizer)}
    first = evaluate(policies, PROMPTS[:4], reward=bang_reward, max_new_tokens=5, batch_size=2, output_dir=tmp_path, progress=False)
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    (tmp_path / "samples.jsonl").write_text("\n".join(lines[:2]) + "\n")  # as if stopped after the first batch
    calls = []
    original = tiny_model.generate
    tiny_model.generate = lambda *a, **k: calls.append(1) or original(*a, **k)
    second = evaluate(policies, PROMPTS[:4], reward=bang_reward, max_new_tokens=5, batch_size=2, output_dir=tmp_path, progress=False)
    assert len(calls) == 1  # only the missing batch was sampled again
    assert second["base"].reward == first["base"].reward
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 4


# ---- bad input: clear errors before any sampling -----------------------------------------------------------------


@pytest.fixture
def no_sampling(tiny_model):
    def refuse(*args, **kwargs):
        raise AssertionError("sampled before checking the input")

    tiny_model.generate = refuse
    return tiny_model


def test_missing_prompts_are_an_error(no_sampling, tiny_tokenizer):
    with pytest.raises(EvaluationError, match="empty"):
        evaluate([(no_sampling, tiny_tokenizer)], [], reward=bang_reward, progress=False)
    with pytest.raises(EvaluationError, match="No prompts"):
        evaluate([(no_sampling, tiny_tokenizer)], None, reward=bang_reward, progress=False)


def test_a_reward_that_returns_nan_is_an_error_before_sampling(no_sampling, tiny_tokenizer):
    from prefkit.rl import RewardFunctionError

    def nan_on_empty(prompts, completions):
        return [float("nan") if not c else 1.0 for c in completions]

    with pytest.raises(RewardFunctionError, match="non-finite"):
        evaluate([(no_sampling, tiny_tokenizer)], PROMPTS, reward=nan_on_empty, progress=False)


def test_an_adapter_on_another_base_is_an_error_before_loading(tiny_model_dir, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "someone/other-model"}))
    with pytest.raises(EvaluationError, match="LoRA adapter trained on someone/other-model"):
        evaluate([str(tiny_model_dir), str(adapter)], PROMPTS, reward=bang_reward, progress=False)


# ---- the command -------------------------------------------------------------------------------------------------


def test_prefkit_eval_prints_the_table_and_writes_its_files(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:3]) + "\n")
    out = tmp_path / "eval"
    argv = ["eval", "--policy", str(tiny_model_dir), str(tiny_model_dir), "--prompts_file", str(prompts),
            "--reward", "vader", "--max_new_tokens", "4", "--output_dir", str(out)]
    assert prefkit(argv) == 0
    printed = capsys.readouterr().out
    assert "win rate vs base" in printed and "(base)" in printed
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"completion", "reward", "kl_k3"} <= set(rows[0])


def test_prefkit_eval_without_a_reward_or_judge_says_what_to_add(tiny_model_dir, capsys):
    assert prefkit(["eval", "--policy", str(tiny_model_dir), "--prompt", "Hi"]) == 2
    assert capsys.readouterr().err.startswith("error: give --reward")


@pytest.mark.slow
def test_bench_alignment_quick_runs_every_method_and_writes_the_frontier(tmp_path):
    """Smoke test of scripts/bench_alignment.py --quick (tiny random model: checks the pipeline, not the methods)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_alignment.py"
    result = subprocess.run([sys.executable, str(script), "--quick", "--output_dir", str(tmp_path)], capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    methods = {r["method"] for r in rows}
    assert {"base", "best-of-1", "best-of-8", "dpo (beta 0.1)", "dpo chat (beta 0.1)", "kto", "iterative dpo", "ppo_clip_gae", "ppo_kl", "reinforce", "rloo", "grpo", "grpo_kl_in_loss",
            "TRL GRPO", "TRL RLOO"} <= methods
    assert all(math.isfinite(r["gold"]) and r["kl"] is not None and r["kl"] >= 0 for r in rows)
    bon = {r["method"]: r for r in rows if r["method"].startswith("best-of-")}
    assert bon["best-of-1"]["kl_analytic"] == 0.0 and bon["best-of-8"]["kl_analytic"] == pytest.approx(math.log(8) - 7 / 8)
    assert (tmp_path / "frontier.png").stat().st_size > 0 and "| method |" in (tmp_path / "results.md").read_text()
