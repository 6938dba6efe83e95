"""Train a policy with PPO (clip or KL-penalty) and GAE, or with REINFORCE / RLOO / GRPO advantages.

    prefkit ppo --dataset_name prefkit/data/bundled/sentiment_prompts.jsonl --reward vader --output_dir smollm2-ppo --use_peft --learning_rate 1e-4
    prefkit ppo --dataset_name prefkit/data/bundled/sentiment_prompts.jsonl --reward_model my-reward-model --quantization 4bit \
        --advantage_estimator rloo --num_generations 4
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml scripts/ppo.py --config examples/ppo.yaml
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


REWARD_KEY_FLAGS = (
    ("reward", "built-in reward(s) to maximise: vader, bleu, rouge, demo, a reward model, or module:function"),
    ("reward_model", "folder or Hub id of a reward model trained with `prefkit reward`"),
)
GROUP_KEY_FLAGS = REWARD_KEY_FLAGS + (  # GRPO's and RLOO's
    ("num_generations", "answers sampled per prompt, compared with each other"),
    ("max_completion_length", "longest sampled answer in tokens"),
    ("beta", "weight of the KL to the reference (0: no reference model is loaded)"),
)
KEY_FLAGS = REWARD_KEY_FLAGS + (
    ("advantage_estimator", "gae (PPO with a value model), reinforce, rloo or grpo"),
    ("kl_coef", "weight of the KL to the reference in the reward: higher keeps the policy closer"),
    ("max_completion_length", "longest sampled answer in tokens"),
)


def trl_loop_rollout_error(argv: list[str] | None, command: str) -> str | None:
    """The error line for ``prefkit grpo|rloo --rollout_engine ...``: those commands run TRL's loops, which sample with
    TRL's own vLLM integration, not prefkit's rollout engines. None when no such flag is given."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    used = sorted({arg.split("=", 1)[0] for arg in argv if arg.split("=", 1)[0].startswith("--rollout_")})
    if not used:
        return None
    return (
        f"error: prefkit {command} runs TRL's {command.upper()} loop, which has no {', '.join(used)}. For prefkit's "
        f"rollout engines use prefkit ppo --advantage_estimator {command} --num_generations 4 --rollout_engine server "
        "--rollout_url URL; for TRL's own vLLM sampling use --use_vllm --vllm_mode server with `trl vllm-serve`."
    )


def reward_functions(reward_args: RewardArguments, *other_arguments) -> dict:
    """The trainer's ``reward_funcs``, from ``--reward`` / ``--reward_model``."""
    return {"reward_funcs": reward_args.rewards()}


def ppo_trainer_arguments(reward_args: RewardArguments, value_args: ValueModelArguments) -> dict:
    return {**reward_functions(reward_args), "value_model": value_args.value_model}


def command():
    from ..trainers.ppo import PPOConfig, PPOTrainer
    from .training import TrainingCommand, train_split_only

    return TrainingCommand(
        "ppo",
        PPOConfig,
        PPOTrainer,
        extra_arguments=(RewardArguments, ValueModelArguments),
        splits=train_split_only,
        trainer_arguments=ppo_trainer_arguments,
        saved="policy saved to {output_dir} (value model in value/)",
        description=__doc__,
        key_flags=KEY_FLAGS,
    )


def make_parser(prog: str | None = None):
    return command().parser(prog)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return command().main(argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
