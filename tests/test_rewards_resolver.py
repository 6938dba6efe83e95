"""One reward resolver for every spelling, used by PPO, GRPO, Best-of-N, labeling and the app."""

import json
import textwrap

import pytest

from prefkit import demo, reward_model
from prefkit.rewards import BUILTIN_REWARDS, SPELLINGS, UnknownRewardError, resolve_reward, resolve_rewards
from helpers import write_jsonl


def count_words(prompts, completions):
    return [float(len(c.split())) for c in completions]


class Scorer:
    def score(self, prompts, completions):
        return [1.0 for _ in completions]


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    """An importable module with a reward function, as a user would write one."""
    (tmp_path / "my_rewards.py").write_text(
        textwrap.dedent(
            """
            def exclamations(prompts, completions):
                return [float(c.count("!")) for c in completions]

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards"


def test_objects_that_score_pass_through_unchanged():
    scorer = Scorer()
    assert resolve_reward(count_words) is count_words
    assert resolve_reward(scorer) is scorer


def test_builtin_names_resolve_to_the_rule_rewards():
    for name, function in BUILTIN_REWARDS.items():
        assert resolve_reward(name) is function


def test_module_function_is_imported(reward_module):
    function = resolve_reward(f"{reward_module}:exclamations")
    assert function(["p", "p"], ["hi!", "hi!!"]) == [1.0, 2.0]


def test_module_function_errors_say_what_is_wrong(reward_module):
    with pytest.raises(ValueError, match="could not import module 'no_such_module'"):
        resolve_reward("no_such_module:f")
    with pytest.raises(ValueError, match="has no callable 'NOT_CALLABLE'"):
        resolve_reward(f"{reward_module}:NOT_CALLABLE")


def test_demo_goes_to_the_demo_loader(monkeypatch):
    calls = []
    monkeypatch.setattr(demo, "load_demo_reward_model", lambda **kwargs: calls.append(kwargs) or Scorer())
    assert isinstance(resolve_reward("demo", device="cpu", train_demo_if_missing=False), Scorer)
    assert calls == [{"train_if_missing": False, "progress": None, "device": "cpu"}]


def test_a_folder_or_hub_id_loads_a_reward_model(tmp_path, monkeypatch):
    loaded = []

    class FakeRewardModel:
        @classmethod
        def from_pretrained(cls, name, **kwargs):
            loaded.append((str(name), kwargs))
            return cls()

    monkeypatch.setattr(reward_model, "RewardModel", FakeRewardModel)  # the Hub/disk boundary
    folder = tmp_path / "rm"
    folder.mkdir()
    resolve_reward(str(folder), device="cpu", quantization="4bit")
    resolve_reward("org/reward-model")
    assert loaded == [(str(folder), {"device": "cpu", "quantization": "4bit"}), ("org/reward-model", {"device": None})]


def test_a_real_reward_model_folder_scores(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "reward-model"
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    scores = resolve_reward(str(folder)).score(["Hi"], ["Hello"])
    assert len(scores) == 1 and isinstance(scores[0], float)


def test_implicit_prefix_loads_a_dpo_adapter_as_an_implicit_reward(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefkit import ImplicitReward

    adapter = tmp_path / "dpo-adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir)

    reward = resolve_reward(f"implicit:{adapter}", beta=0.5)
    assert isinstance(reward, ImplicitReward) and reward.beta == 0.5
    # a fresh LoRA adapter (B = 0) is the reference itself: the implicit reward is zero
    assert reward.score(["Hi"], ["Hello there"]) == pytest.approx([0.0], abs=1e-5)


def test_unknown_names_and_non_rewards_list_every_spelling(tmp_path):
    with pytest.raises(UnknownRewardError, match="'sentiment'") as error:
        resolve_reward("sentiment")
    assert SPELLINGS in str(error.value)
    with pytest.raises(UnknownRewardError):
        resolve_reward(str(tmp_path / "missing" / "deep" / "folder"))
    with pytest.raises(TypeError, match="cannot score"):
        resolve_reward(42)
    with pytest.raises(ValueError, match="reward is required"):
        resolve_rewards([])


def test_prefkit_ppo_takes_a_module_function_reward_like_prefkit_bon(tiny_model_dir, reward_module, tmp_path):
    from prefkit.cli import main as prefkit

    prompts = write_jsonl([{"prompt": f"Say something {i}"} for i in range(4)], tmp_path / "prompts.jsonl")
    out = tmp_path / "ppo"
    argv = [
        "ppo", "--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(prompts), "--output_dir", str(out),
        "--reward", f"{reward_module}:exclamations", "--use_peft", "--max_steps", "1", "--per_device_train_batch_size",
        "4", "--max_completion_length", "4", "--num_ppo_epochs", "1", "--report_to", "none", "--save_strategy", "no",
        "--disable_tqdm", "true",
    ]
    assert prefkit(argv) == 0
    assert (out / "README.md").is_file()
