"""Reward model evaluation: accuracy and margins on known numbers, the distribution plot, prompt-disjoint splits."""

import pytest
from datasets import Dataset

from prefkit.evaluation import evaluate_reward_model, plot_reward_distributions, split_pairs_by_prompt, summarize_rewards


def test_summary_counts_a_pair_as_correct_only_when_chosen_scores_strictly_higher():
    result = summarize_rewards([2.0, 0.5, 1.0, -1.0], [1.0, 0.5, 3.0, -2.0])
    assert result["accuracy"] == 0.5  # pairs 0 and 3 win, pair 1 is a tie, pair 2 loses
    assert result["mean_margin"] == pytest.approx((1.0 + 0.0 - 2.0 + 1.0) / 4)
    assert result["chosen_mean"] == pytest.approx(0.625) and result["rejected_mean"] == pytest.approx(0.625)
    assert result["num_pairs"] == 4


class LengthReward:
    """A transparent scorer: longer responses score higher."""

    def score(self, prompts, responses, batch_size=None, max_length=None):
        self.prompts = prompts
        return [float(len(r if isinstance(r, str) else r[0]["content"])) for r in responses]


def test_evaluate_reward_model_scores_both_sides_of_each_pair():
    pairs = [
        {"prompt": "a", "chosen": "long answer", "rejected": "no"},
        {"prompt": "b", "chosen": "ok", "rejected": "much longer"},
    ]
    result = evaluate_reward_model(LengthReward(), pairs)
    assert result["chosen_rewards"] == [11.0, 2.0] and result["rejected_rewards"] == [2.0, 11.0]
    assert result["accuracy"] == 0.5


def test_evaluate_reward_model_passes_no_prompts_for_implicit_prompt_conversations():
    scorer = LengthReward()
    conversation = lambda text: [{"role": "user", "content": "hi"}, {"role": "assistant", "content": text}]  # noqa: E731
    evaluate_reward_model(scorer, [{"chosen": conversation("hello there"), "rejected": conversation("go away")}])
    assert scorer.prompts is None


def test_evaluate_reward_model_reports_every_bad_row():
    from prefkit.data.validation import PreferenceDataError

    pairs = [{"prompt": "a", "chosen": "", "rejected": "x"}, {"prompt": "b", "chosen": "y", "rejected": "y"}]
    with pytest.raises(PreferenceDataError) as error:
        evaluate_reward_model(LengthReward(), pairs)
    assert error.value.bad_rows == [0, 1]


def test_plot_writes_a_png_with_both_distributions(tmp_path):
    path = plot_reward_distributions([1.0, 2.0, 1.5, 0.2], [-1.0, 0.0, -0.5, 0.4], tmp_path / "plots" / "rewards.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_handles_all_equal_rewards(tmp_path):
    path = plot_reward_distributions([0.0, 0.0], [0.0, 0.0], tmp_path / "flat.png")
    assert path.exists()


def test_split_by_prompt_never_puts_a_prompt_on_both_sides():
    rows = [{"prompt": f"q{i % 10}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(40)]
    train, test = split_pairs_by_prompt(Dataset.from_list(rows), test_fraction=0.2, seed=0)
    assert not set(train["prompt"]) & set(test["prompt"])
    assert len(set(test["prompt"])) == 2 and len(train) + len(test) == 40
