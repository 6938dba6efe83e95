"""KL-coefficient controllers, the reward-function adapter and its output checks, and the built-in rule rewards."""

from __future__ import annotations

import math

import pytest
import torch

from prefkit.rl import (
    AdaptiveKLController,
    FixedKLController,
    RewardFunction,
    RewardFunctionError,
    combine_rewards,
    validate_scores,
)
from prefkit.rewards import BUILTIN_REWARDS, as_reward_functions, bleu, resolve_reward, rouge, vader_sentiment

# --------------------------------------------------------------------------------------------------------------------
# KL controllers
# --------------------------------------------------------------------------------------------------------------------


def test_fixed_controller_never_moves():
    controller = FixedKLController(0.05)
    controller.update(current_kl=100.0, n_steps=512)
    assert controller.value == 0.05


def test_adaptive_controller_follows_ziegler_formula():
    controller = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    controller.update(current_kl=6.6, n_steps=256)  # error +0.1 (inside the clip)
    assert controller.value == pytest.approx(0.1 * (1 + 0.1 * 256 / 10_000))


@pytest.mark.parametrize("current_kl,error", [(60.0, 0.2), (0.0, -0.2)])
def test_adaptive_controller_clips_the_proportional_error(current_kl, error):
    controller = AdaptiveKLController(0.1, target=6.0, horizon=1000)
    controller.update(current_kl=current_kl, n_steps=100)
    assert controller.value == pytest.approx(0.1 * (1 + error * 100 / 1000))


def test_adaptive_controller_raises_beta_above_target_and_lowers_it_below():
    high, low = AdaptiveKLController(0.1, 6.0, 100), AdaptiveKLController(0.1, 6.0, 100)
    for _ in range(10):
        high.update(12.0, 10)
        low.update(1.0, 10)
    assert high.value > 0.1 > low.value


def test_controller_state_round_trips():
    controller = AdaptiveKLController(0.1, 6.0, 100)
    controller.update(9.0, 50)
    restored = AdaptiveKLController(0.1, 6.0, 100)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == controller.value != 0.1


@pytest.mark.parametrize("target,horizon", [(0.0, 100), (6.0, 0)])
def test_adaptive_controller_rejects_nonsense_settings(target, horizon):
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target, horizon)


# --------------------------------------------------------------------------------------------------------------------
# Reward functions
# --------------------------------------------------------------------------------------------------------------------

PROMPTS = ["a", "b", "c"]
COMPLETIONS = ["x", "yy", "zzz"]


def test_callable_reward_is_called_with_prompts_and_completions():
    def length(prompts, completions):
        return [float(len(c)) for c in completions]

    scores = RewardFunction(length)(PROMPTS, COMPLETIONS)
    assert scores.tolist() == [1.0, 2.0, 3.0]
    assert scores.dtype == torch.float32


def test_object_with_score_method_is_used_through_score():
    class Scorer:
        def score(self, prompts, completions):
            return torch.tensor([[0.5], [1.5], [2.5]])  # a [n, 1] reward-model head is fine

    function = RewardFunction(Scorer())
    assert function.name == "Scorer"
    assert function(PROMPTS, COMPLETIONS).tolist() == [0.5, 1.5, 2.5]


def test_named_parameters_receive_dataset_columns():
    def matches(prompts, completions, reference):
        return [float(c == r) for c, r in zip(completions, reference)]

    function = RewardFunction(matches)
    assert function.required_columns == ["reference"]
    assert function(PROMPTS, COMPLETIONS, {"reference": ["x", "no", "zzz"], "other": [1, 2, 3]}).tolist() == [1.0, 0.0, 1.0]


def test_var_keyword_reward_receives_every_column():
    seen = {}

    def spy(prompts, completions, **columns):
        seen.update(columns)
        return [0.0] * len(completions)

    RewardFunction(spy)(PROMPTS, COMPLETIONS, {"a": [1, 2, 3], "b": [4, 5, 6]})
    assert set(seen) == {"a", "b"}


def test_missing_required_column_is_reported_with_what_exists():
    def needs_reference(prompts, completions, reference):
        return [0.0] * len(completions)

    with pytest.raises(ValueError, match=r"needs_reference.*\['reference'\].*\['prompt'\]"):
        RewardFunction(needs_reference).check_columns(["prompt"])


def test_reward_with_wrong_signature_is_rejected():
    with pytest.raises(TypeError, match="prompts, completions"):
        RewardFunction(lambda completions: [0.0])


@pytest.mark.parametrize(
    "output,message",
    [
        ([1.0, 2.0], r"shape \[2\] for 3 completions"),
        (torch.zeros(3, 2), r"shape \[3, 2\]"),
        (None, "returned None"),
        (["good", "bad", "ugly"], "not a list of numbers"),
    ],
)
def test_wrong_reward_output_is_a_clear_error_naming_the_function(output, message):
    with pytest.raises(RewardFunctionError, match=message) as error:
        validate_scores(output, PROMPTS, COMPLETIONS, "my_reward")
    assert "my_reward" in str(error.value)


def test_non_finite_rewards_name_the_rows():
    with pytest.raises(RewardFunctionError, match="2 non-finite") as error:
        validate_scores([1.0, math.nan, math.inf], PROMPTS, COMPLETIONS, "ratio_reward")
    text = str(error.value)
    assert "completion 1" in text and "completion 2" in text and "completion 0" not in text
    assert "'yy'" in text  # the offending completion is shown


def test_weighted_rewards_are_summed_and_kept_per_function():
    def ones(prompts, completions):
        return [1.0] * len(completions)

    def lengths(prompts, completions):
        return [float(len(c)) for c in completions]

    total, per_function = combine_rewards(as_reward_functions([ones, lengths]), [2.0, 0.5], PROMPTS, COMPLETIONS, {})
    assert total.tolist() == [2.5, 3.0, 3.5]
    assert per_function["lengths"].tolist() == [1.0, 2.0, 3.0]


def test_duplicate_reward_names_are_made_distinct():
    def reward(prompts, completions):
        return [0.0] * len(completions)

    assert [f.name for f in as_reward_functions([reward, reward])] == ["reward_0", "reward_1"]


def test_no_reward_is_a_clear_error():
    with pytest.raises(ValueError, match="reward is required"):
        as_reward_functions(None)


# --------------------------------------------------------------------------------------------------------------------
# Built-in rule rewards
# --------------------------------------------------------------------------------------------------------------------


def test_vader_prefers_positive_answers():
    scores = vader_sentiment(["q"] * 3, ["I love this, it is wonderful!", "It is a table.", "I hate this, awful."])
    assert scores[0] > 0.5 > scores[1] > -0.5 > scores[2]
    assert vader_sentiment(["q"], [""]) == [0.0]


def test_vader_reads_conversational_completions():
    assert vader_sentiment(["q"], [[{"role": "assistant", "content": "Wonderful, thank you!"}]])[0] > 0.5


def test_bleu_and_rouge_are_one_for_the_reference_and_lower_otherwise():
    reference = ["the cat sat on the mat"]
    assert bleu(["q"], reference, reference=reference)[0] == pytest.approx(1.0)
    assert rouge(["q"], reference, reference=reference)[0] == pytest.approx(1.0)
    assert bleu(["q"], ["a dog ran in the park"], reference=reference)[0] < 0.2
    assert rouge(["q"], ["a dog ran in the park"], reference=reference)[0] < 0.5


def test_bleu_needs_a_reference_column():
    assert RewardFunction(bleu).required_columns == ["reference"]


def test_resolve_reward_by_name_and_unknown_name():
    assert resolve_reward("vader") is BUILTIN_REWARDS["vader"]
    with pytest.raises(ValueError, match="vader"):
        resolve_reward("sentiment")
