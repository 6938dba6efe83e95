"""Run TRL's RLOOTrainer with a prefkit reward model or rule reward, QLoRA in two flags.

    prefkit rloo --dataset_name prefkit/data/bundled/sentiment_prompts.jsonl --reward_model my-reward-model --output_dir smollm2-rloo \
        --use_peft --num_generations 4 --max_completion_length 64
"""

from __future__ import annotations


def command():
    from ..trainers.grpo import RLOOConfig, RLOOTrainer
    from .ppo import GROUP_KEY_FLAGS, RewardArguments, reward_functions
    from .training import TrainingCommand

    return TrainingCommand(
        "rloo", RLOOConfig, RLOOTrainer, extra_arguments=(RewardArguments,), trainer_arguments=reward_functions,
        description=__doc__, key_flags=GROUP_KEY_FLAGS,
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    import sys

    from .ppo import trl_loop_rollout_error
    from .runner import EXIT_USER_ERROR

    message = trl_loop_rollout_error(argv, "rloo")
    if message is not None:
        print(message, file=sys.stderr)
        return EXIT_USER_ERROR
    return command().main(argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
