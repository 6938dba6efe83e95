"""Best-of-N: one batched generate and one batched scoring call per batch, ranks that follow the reward, costs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from prefkit.bon import BestOfNResult, PromptTooLongError, best_of_n

from helpers import EndlessPolicy

PROMPTS = ["Tell me about tea.", "What is the capital of France?", "Write a short poem about the sea."]


def vowel_score(text: str) -> float:
    """A known function of the text, with ties broken by length so that its first choice is unique."""
    return sum(text.count(v) for v in "aeiou") + len(text) / 1000


def vowel_reward(prompts, responses):
    return [vowel_score(response) for response in responses]


@pytest.fixture
def policy(tiny_model):
    return tiny_model.eval()


def test_best_is_the_candidate_the_reward_function_ranks_first_for_every_prompt(policy, tiny_tokenizer):
    results = best_of_n(policy, tiny_tokenizer, vowel_reward, PROMPTS, n=6, batch_size=2, max_new_tokens=12, seed=0)

    assert [result.prompt for result in results] == PROMPTS
    for result in results:
        texts = [candidate.text for candidate in result.candidates]
        assert result.best.text == max(texts, key=vowel_score)
        assert result.best.rank == 1


def test_each_candidate_carries_its_own_reward_and_ranks_follow_the_rewards(policy, tiny_tokenizer):
    results = best_of_n(policy, tiny_tokenizer, vowel_reward, PROMPTS, n=5, batch_size=3, max_new_tokens=12, seed=1)

    for result in results:
        assert len(result.candidates) == 5
        for candidate in result.candidates:
            assert candidate.reward == pytest.approx(vowel_score(candidate.text))
        by_rank = sorted(result.candidates, key=lambda candidate: candidate.rank)
        assert [candidate.rank for candidate in by_rank] == [1, 2, 3, 4, 5]
        assert [candidate.reward for candidate in by_rank] == sorted((c.reward for c in result.candidates), reverse=True)
        assert result.ranked == by_rank


def test_a_reward_returning_a_tensor_ranks_like_the_same_scores_as_a_list(policy, tiny_tokenizer):
    as_tensor = best_of_n(
        policy, tiny_tokenizer, lambda p, r: torch.tensor(vowel_reward(p, r)).unsqueeze(-1), PROMPTS[:1], n=4,
        max_new_tokens=10, seed=3,
    )[0]
    as_list = best_of_n(policy, tiny_tokenizer, vowel_reward, PROMPTS[:1], n=4, max_new_tokens=10, seed=3)[0]

    assert [c.text for c in as_tensor.candidates] == [c.text for c in as_list.candidates]
    assert [c.rank for c in as_tensor.candidates] == [c.rank for c in as_list.candidates]


class CountingScorer:
    """A reward object with ``.score`` (the RewardModel / ImplicitReward interface) that records its calls."""

    def __init__(self):
        self.calls: list[int] = []

    def score(self, prompts, responses):
        assert len(prompts) == len(responses)
        self.calls.append(len(responses))
        return [-len(response) for response in responses]


def test_one_generate_call_and_one_scoring_call_per_batch_of_prompts(policy, tiny_tokenizer, monkeypatch):
    generate_rows = []
    original = policy.generate

    def counting_generate(*args, **kwargs):
        generate_rows.append((kwargs["input_ids"].shape[0], kwargs["num_return_sequences"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(policy, "generate", counting_generate)
    scorer = CountingScorer()

    best_of_n(policy, tiny_tokenizer, scorer, PROMPTS, n=4, batch_size=2, max_new_tokens=6, seed=0)

    assert generate_rows == [(2, 4), (1, 4)]
    assert scorer.calls == [8, 4]


def test_scorer_objects_pair_each_prompt_with_its_own_candidates(policy, tiny_tokenizer):
    seen = []

    class Recorder:
        def score(self, prompts, responses):
            seen.extend(zip(prompts, responses))
            return [0.0] * len(responses)

    results = best_of_n(policy, tiny_tokenizer, Recorder(), PROMPTS, n=3, batch_size=2, max_new_tokens=6, seed=0)

    expected = [(result.prompt, candidate.text) for result in results for candidate in result.candidates]
    assert seen == expected


class LongerIsBetterJudge:
    """A pairwise judge in TRL's interface: one index per pair, 0 = first better, 1 = second better, -1 = tie."""

    def __init__(self):
        self.pairs_judged = 0

    def judge(self, prompts, completions):
        self.pairs_judged += len(completions)
        verdicts = []
        for first, second in completions:
            verdicts.append(-1 if len(first) == len(second) else (0 if len(first) > len(second) else 1))
        return verdicts


def test_pairwise_judge_ranks_candidates_by_round_robin_wins(policy, tiny_tokenizer):
    judge = LongerIsBetterJudge()

    result = best_of_n(policy, tiny_tokenizer, judge, PROMPTS[:2], n=4, max_new_tokens=12, seed=2)

    assert judge.pairs_judged == 2 * (4 * 3 // 2)
    for prompt_result in result:
        texts = [c.text for c in prompt_result.candidates]
        for candidate in prompt_result.candidates:
            longer_than = sum(len(candidate.text) > len(other) for other in texts)
            ties = sum(len(candidate.text) == len(other) for other in texts) - 1
            assert candidate.reward == longer_than + 0.5 * ties
        assert len(prompt_result.best.text) == max(len(t) for t in texts)


class LabelJudge:
    """A judge in prefkit's interface: verdicts are labels ("A", "B slightly better", "tie", "both bad")."""

    def judge(self, prompts, response_pairs):
        labels = []
        for first, second in response_pairs:
            if len(first) == len(second):
                labels.append("both bad")
            else:
                labels.append("A" if len(first) > len(second) else "B slightly better")
        return labels


def test_a_judge_answering_with_labels_ranks_like_one_answering_with_indices(policy, tiny_tokenizer):
    by_label = best_of_n(policy, tiny_tokenizer, LabelJudge(), PROMPTS[:1], n=4, max_new_tokens=12, seed=2)[0]
    by_index = best_of_n(policy, tiny_tokenizer, LongerIsBetterJudge(), PROMPTS[:1], n=4, max_new_tokens=12, seed=2)[0]

    assert [c.reward for c in by_label.candidates] == [c.reward for c in by_index.candidates]


def test_dpo_implicit_reward_ranks_by_beta_times_the_log_ratio_to_the_reference(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from prefkit.chat import AS_TRAINED
    from prefkit.logprobs import completion_logps
    from prefkit.testing import build_tiny_model
    from prefkit.trainers.dpo import ImplicitReward

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    import tempfile

    reference = AutoModelForCausalLM.from_pretrained(build_tiny_model(tempfile.mkdtemp(), seed=7)).eval()
    reward = ImplicitReward(policy, tiny_tokenizer, ref_model=reference, beta=0.5)

    result = best_of_n(policy, tiny_tokenizer, reward, PROMPTS[:1], n=4, max_new_tokens=8, seed=0)[0]

    texts = [c.text for c in result.candidates]
    prompts = [PROMPTS[0]] * 4
    # Tokenized as DPO trains on a plain-string row (raw prompt + answer + EOS), the implicit reward's default.
    logps = lambda model: completion_logps(model, tiny_tokenizer, prompts, texts, chat_template=AS_TRAINED)  # noqa: E731
    expected = 0.5 * (logps(policy) - logps(reference))
    assert [c.reward for c in result.candidates] == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-4)
    assert result.best.index == int(expected.argmax())


def test_kl_to_base_is_the_analytic_best_of_n_bound(policy, tiny_tokenizer):
    result = best_of_n(policy, tiny_tokenizer, vowel_reward, PROMPTS[:1], n=4, max_new_tokens=4, seed=0)[0]

    assert result.kl_to_base == pytest.approx(math.log(4) - 3 / 4)


class ForceEosAt(LogitsProcessor):
    """Make even-numbered rows emit EOS as their ``step``-th generated token."""

    def __init__(self, prompt_length, step, eos_id):
        self.prompt_length, self.step, self.eos_id = prompt_length, step, eos_id

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_length == self.step:
            scores[0::2] = -math.inf
            scores[0::2, self.eos_id] = 0.0
        else:
            scores[:, self.eos_id] = -math.inf  # nobody else stops early
        return scores


def test_token_counts_stop_at_eos_and_finished_says_whether_eos_was_reached(policy, tiny_tokenizer):
    from prefkit.chat import render_prompt

    prompt_length = len(tiny_tokenizer(render_prompt(tiny_tokenizer, PROMPTS[0]), add_special_tokens=False)["input_ids"])
    processor = ForceEosAt(prompt_length, step=3, eos_id=tiny_tokenizer.eos_token_id)

    result = best_of_n(
        policy, tiny_tokenizer, vowel_reward, PROMPTS[:1], n=4, max_new_tokens=10, seed=0,
        logits_processor=LogitsProcessorList([processor]),
    )[0]

    assert [c.finished for c in result.candidates] == [True, False, True, False]
    assert [c.num_tokens for c in result.candidates] == [4, 10, 4, 10]
    assert result.tokens_generated == 28
    assert "<|im_end|>" not in result.candidates[0].text


def test_cost_is_reported_per_prompt(policy, tiny_tokenizer):
    results = best_of_n(policy, tiny_tokenizer, vowel_reward, PROMPTS, n=2, batch_size=2, max_new_tokens=5, seed=0)

    for result in results:
        assert result.tokens_generated == sum(c.num_tokens for c in result.candidates)
        assert result.generate_seconds > 0
        assert result.score_seconds >= 0
        assert result.generation["n"] == 2 and result.generation["max_new_tokens"] == 5


def test_the_same_seed_gives_the_same_candidates_and_leaves_the_global_rng_alone(policy, tiny_tokenizer):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = best_of_n(policy, tiny_tokenizer, vowel_reward, PROMPTS[:1], n=3, max_new_tokens=8, seed=42)[0]
    assert torch.equal(torch.get_rng_state(), before)
    second = best_of_n(policy, tiny_tokenizer, vowel_reward, PROMPTS[:1], n=3, max_new_tokens=8, seed=42)[0]

    assert [c.text for c in first.candidates] == [c.text for c in second.candidates]


def test_to_dict_is_one_json_line_with_every_candidate(policy, tiny_tokenizer):
    result = best_of_n(policy, tiny_tokenizer, vowel_reward, PROMPTS[:1], n=3, max_new_tokens=5, seed=0)[0]

    record = json.loads(json.dumps(result.to_dict()))

    assert isinstance(result, BestOfNResult)
    assert record["best"] == result.best.text
    assert record["kl_to_base"] == pytest.approx(math.log(3) - 2 / 3)
    assert [c["rank"] for c in record["candidates"]] == [c.rank for c in result.candidates]


def test_duplicate_candidates_are_counted(policy, tiny_tokenizer):
    # top_k=1 makes every sample the greedy answer: all n candidates are the same text.
    result = best_of_n(policy, tiny_tokenizer, vowel_reward, PROMPTS[:1], n=4, max_new_tokens=5, seed=0, top_k=1)[0]

    assert len({c.text for c in result.candidates}) == 1
    assert result.duplicates == 3


def test_conversational_prompts_are_accepted(policy, tiny_tokenizer):
    messages = [{"role": "user", "content": "Tell me about tea."}]

    result = best_of_n(policy, tiny_tokenizer, vowel_reward, [messages], n=2, max_new_tokens=4, seed=0)[0]

    assert result.prompt == messages and len(result.candidates) == 2


# ---------------------------------------------------------------------------------------------------------------- bad input


def test_an_empty_prompt_list_is_an_error(policy, tiny_tokenizer):
    with pytest.raises(ValueError, match="prompts is empty"):
        best_of_n(policy, tiny_tokenizer, vowel_reward, [], n=2)


def test_a_single_string_instead_of_a_list_is_an_error(policy, tiny_tokenizer):
    with pytest.raises(TypeError, match="list of prompts"):
        best_of_n(policy, tiny_tokenizer, vowel_reward, "Tell me about tea.", n=2)


def test_a_blank_prompt_is_named_in_the_error(policy, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        best_of_n(policy, tiny_tokenizer, vowel_reward, ["Hello", "  "], n=2)


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_n_below_one_or_not_an_integer_is_an_error(policy, tiny_tokenizer, n):
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        best_of_n(policy, tiny_tokenizer, vowel_reward, PROMPTS, n=n)


def test_zero_temperature_is_an_error(policy, tiny_tokenizer):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        best_of_n(policy, tiny_tokenizer, vowel_reward, PROMPTS, n=2, temperature=0.0)


def test_greedy_decoding_is_refused(policy, tiny_tokenizer):
    with pytest.raises(ValueError, match="independent samples"):
        best_of_n(policy, tiny_tokenizer, vowel_reward, PROMPTS, n=2, do_sample=False)


def test_a_reward_model_on_another_device_than_the_policy_is_an_error(policy, tiny_tokenizer):
    class RewardOnMeta:
        def __init__(self):
            self.model = torch.nn.Linear(4, 1, device="meta")

        def score(self, prompts, responses):  # pragma: no cover - must not be reached
            raise AssertionError("scored despite the device mismatch")

    calls = []
    policy.generate = lambda *a, **k: calls.append(1)  # must not be reached either

    with pytest.raises(ValueError, match=r"policy is on cpu but the reward model is on meta"):
        best_of_n(policy, tiny_tokenizer, RewardOnMeta(), PROMPTS, n=2)
    assert calls == []


def test_a_reward_that_is_neither_callable_nor_a_scorer_is_an_error(policy, tiny_tokenizer):
    with pytest.raises(TypeError, match="reward is a int"):
        best_of_n(policy, tiny_tokenizer, 3, PROMPTS, n=2)


def test_a_reward_returning_the_wrong_number_of_scores_is_an_error(policy, tiny_tokenizer):
    with pytest.raises(ValueError, match="returned 1 scores for 2"):
        best_of_n(policy, tiny_tokenizer, lambda p, r: [1.0], PROMPTS[:1], n=2, max_new_tokens=3)


def test_a_nan_reward_names_the_candidate(policy, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"NaN for candidate 1 of prompts\[0\]"):
        best_of_n(policy, tiny_tokenizer, lambda p, r: [0.0, float("nan")], PROMPTS[:1], n=2, max_new_tokens=3)


def test_a_prompt_longer_than_the_context_is_an_error_before_any_sampling(policy, tiny_tokenizer):
    long_prompt = "tea " * 600  # the tiny model's context is 512 tokens
    calls = []
    policy.generate = lambda *a, **k: calls.append(1)

    with pytest.raises(PromptTooLongError, match=r"prompts\[1\] is \d+ tokens .* truncation='left'"):
        best_of_n(policy, tiny_tokenizer, vowel_reward, ["Hi there", long_prompt], n=2, max_new_tokens=8)
    assert calls == []


def test_left_truncation_keeps_the_end_of_a_long_prompt_and_warns(policy, tiny_tokenizer):
    long_prompt = "tea " * 600

    with pytest.warns(UserWarning, match=r"prompts\[0\] is \d+ tokens; keeping its last 504"):
        result = best_of_n(
            policy, tiny_tokenizer, vowel_reward, [long_prompt], n=2, max_new_tokens=8, seed=0, truncation="left"
        )[0]

    assert result.truncated_prompt_tokens > 0
    assert all(c.num_tokens <= 8 for c in result.candidates)


def test_max_new_tokens_filling_the_whole_context_is_an_error(policy, tiny_tokenizer):
    with pytest.raises(ValueError, match="leaves no room for a prompt"):
        best_of_n(policy, tiny_tokenizer, vowel_reward, PROMPTS, n=2, max_new_tokens=512)


@pytest.fixture(scope="module")
def tiny_reward_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model's folder saved as a one-label sequence classifier: a (random) reward model checkpoint."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-reward")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return str(folder)


def test_a_reward_model_scores_every_candidate_as_it_would_on_its_own(policy, tiny_tokenizer, tiny_reward_model_dir):
    from prefkit.reward_model import RewardModel

    reward_model = RewardModel.from_pretrained(tiny_reward_model_dir, device="cpu")

    result = best_of_n(policy, tiny_tokenizer, reward_model, PROMPTS[:1], n=4, max_new_tokens=8, seed=0)[0]

    texts = [c.text for c in result.candidates]
    alone = [reward_model.score([PROMPTS[0]], [text])[0] for text in texts]
    assert [c.reward for c in result.candidates] == pytest.approx(alone, abs=1e-5)
    assert result.best.text == texts[max(range(4), key=lambda k: alone[k])]


def test_best_of_n_scores_answers_cut_at_the_time_limit_and_says_so(tiny_model_dir):
    policy = EndlessPolicy(tiny_model_dir)
    policy.slow.set()

    result = best_of_n(policy.model, policy.tokenizer, vowel_reward, ["Hi"], n=3, max_new_tokens=400, max_time=0.2,
                       progress=False)[0]

    assert result.interrupted_by == "max_time" and result.to_dict()["interrupted_by"] == "max_time"
    assert not any(candidate.finished for candidate in result.candidates)
    assert 0 < result.tokens_generated < 3 * 400
    assert [c.reward for c in result.candidates] == vowel_reward(["Hi"] * 3, [c.text for c in result.candidates])
