"""Run TRL's GRPOTrainer with a prefkit reward model or rule reward, QLoRA in two flags.

    prefkit grpo --dataset_name prompts.jsonl --reward_model my-reward-model --output_dir smollm2-grpo \
        --use_peft --num_generations 4 --max_completion_length 64
    prefkit grpo --dataset_name prompts.jsonl --reward vader --quantization 4bit
"""

from __future__ import annotations


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from ..trainers.grpo import GRPOConfig, GRPOTrainer
    from ._trl_loop import run

    return run("grpo", GRPOConfig, GRPOTrainer, argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
