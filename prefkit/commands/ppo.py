"""Train a policy with PPO (clip or KL-penalty) and GAE, or with REINFORCE / RLOO / GRPO advantages.

    prefkit ppo --dataset_name prompts.jsonl --reward vader --output_dir smollm2-ppo --use_peft --learning_rate 1e-4
    prefkit ppo --dataset_name prompts.jsonl --reward_model my-reward-model --quantization 4bit \
        --advantage_estimator rloo --num_generations 4
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml scripts/ppo.py --config ppo.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RewardArguments:
    """Where the reward comes from: a trained reward model, built-in rule rewards, or both (summed)."""

    reward_model: str | None = field(
        default=None, metadata={"help": "Folder or Hub id of a trained prefkit reward model (prefkit reward ...)."}
    )
    reward: list[str] | None = field(
        default=None,
        metadata={
            "help": "Reward(s), summed: built-in 'vader' (sentiment of the answer, offline), 'bleu' or 'rouge' "
            "(against the dataset's 'reference' column); also 'demo', a reward model folder or Hub id, "
            "'package.module:function' or 'implicit:DPO_MODEL'."
        },
    )

    def rewards(self) -> list:
        """The rewards named on the command line (reward models are loaded here), or a clear error if none."""
        from ..rewards import BUILTIN_REWARDS, SPELLINGS, UnknownRewardError, resolve_reward

        named = [("--reward", name) for name in self.reward or []]
        named += [("--reward_model", self.reward_model)] if self.reward_model else []
        if not named:
            raise SystemExit(
                "error: give a reward: --reward_model PATH (a trained reward model) and/or --reward NAME "
                f"({', '.join(sorted(BUILTIN_REWARDS))}, 'demo', 'package.module:function' or 'implicit:DPO_MODEL')."
            )
        rewards = []
        for flag, name in named:
            try:
                rewards.append(resolve_reward(name))
            except UnknownRewardError:
                raise SystemExit(f"error: unknown {flag} {name!r}. {SPELLINGS}") from None
            except ValueError as error:
                raise SystemExit(f"error: {flag} {name!r}: {error}") from None
        return rewards


@dataclass
class ValueModelArguments:
    value_model: str | None = field(
        default=None,
        metadata={
            "help": "Value model for GAE without LoRA (a checkpoint loaded as a sequence classifier; default: the "
            "policy's). Under LoRA the value model is a second adapter on the shared base."
        },
    )


def make_parser(prog: str | None = None):
    from trl import TrlParser

    from ..trainers.ppo import PPOConfig
    from ._common import DatasetArguments, ModelArguments

    return TrlParser((DatasetArguments, PPOConfig, ModelArguments, RewardArguments, ValueModelArguments), prog=prog)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = make_parser(prog)
    dataset_args, training_args, model_args, reward_args, value_args = parser.parse_args_and_config(args=argv)

    from ..trainers.ppo import PPOTrainer
    from ._common import load_splits, model_init_kwargs

    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args.model_init_kwargs)
    train_dataset, _ = load_splits(dataset_args, want_eval=False, seed=training_args.seed)
    trainer = PPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_args.rewards(),
        args=training_args,
        train_dataset=train_dataset,
        value_model=value_args.value_model,
    )
    print(
        f"prefkit ppo: rank {trainer.accelerator.process_index} of world size {trainer.accelerator.num_processes}, "
        f"device {trainer.accelerator.device}",
        flush=True,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"prefkit ppo: policy saved to {training_args.output_dir} (value model in value/)")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_args.dataset_name)
        trainer.accelerator.print(f"prefkit ppo: pushed to https://huggingface.co/{trainer.hub_model_id}")
    if hasattr(trainer, "end"):
        trainer.end()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
