"""RewardModel.as_reward_func() drives TRL's GRPOTrainer for real (tiny policy, tiny reward model, CPU)."""

import pytest
import torch
from datasets import Dataset


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_reward_func_trains_trl_grpo_for_two_steps(tiny_model_dir, tiny_tokenizer, tmp_path, conversational):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl import GRPOConfig, GRPOTrainer

    from prefkit import RewardModel

    torch.manual_seed(0)
    reward_model = RewardModel(
        AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1), tiny_tokenizer
    )
    calls = []
    score = reward_model.score

    def recording_score(prompts, completions, **kwargs):
        rewards = score(prompts, completions, **kwargs)
        calls.append((prompts, completions, rewards))
        return rewards

    reward_model.score = recording_score  # watch what TRL passes through the reward function
    prompts = ["Tell me about tea.", "Write a short poem about the sea.", "What is the capital of France?", "Hi!"]
    if conversational:
        prompts = [[{"role": "user", "content": p}] for p in prompts]
    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-4,
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        reward_funcs=[reward_model.as_reward_func()],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tiny_tokenizer,
    )
    trainer.train()

    assert trainer.state.global_step == 2
    logged = [entry for entry in trainer.state.log_history if "rewards/reward_model/mean" in entry]
    assert logged, "TRL did not log the reward under the function's name"
    prompts_seen, completions_seen, rewards = calls[0]
    assert isinstance(completions_seen[0], list if conversational else str)
    assert rewards == pytest.approx(score(prompts_seen, completions_seen), abs=1e-6)
    assert logged[0]["rewards/reward_model/mean"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-4)
