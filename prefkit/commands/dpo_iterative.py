"""Iterative (online) DPO: each round samples answers from the current policy, scores them with a reward, and runs
DPO on the best against the worst answer of each prompt. Every round is saved under --output_dir/round-N (samples,
pairs, policy, held-out evaluation); a rerun of the same command resumes at the first unfinished round.

    prefkit dpo-iterative --dataset_name prefkit/data/bundled/sentiment_prompts.jsonl --reward vader --use_peft \
        --output_dir smollm2-dpo-iterative --num_rounds 3 --eval_prompts examples/heldout.txt
    prefkit dpo-iterative --config examples/dpo_iterative.yaml
    prefkit dpo-iterative --config examples/dpo_iterative.yaml --num_rounds 5   # two more rounds after a finished run
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

KEY_FLAGS = (
    ("num_rounds", "rounds of sample -> score -> pair -> DPO"),
    ("samples_per_prompt", "answers sampled per prompt each round (at least 2)"),
    ("reward", "what scores the answers: vader, demo, a reward model folder, module:function"),
    ("pair_strategy", "best_vs_worst (one pair per prompt) or all_above_margin (with --pair_margin)"),
    ("reference", "previous_round (the policy that sampled) or initial (the starting model)"),
    ("beta", "how far each round's policy may move from its reference"),
    ("max_new_tokens", "longest sampled answer in tokens"),
    ("prompts_per_round", "sample a fresh random subset of this many prompts each round"),
    ("eval_prompts", "held-out prompts: reward and KL to the starting model after every round"),
)


def resume_message(output_dir: str) -> str:
    from ..trainers.iterative_dpo import finished_rounds

    done = len(finished_rounds(output_dir))
    return (f"interrupted after {done} finished round(s) in {output_dir}; rerun the same command to resume at round "
            f"{done + 1}")


def command():
    from ..trainers.iterative_dpo import IterativeDPOConfig, IterativeDPOTrainer
    from .training import TrainingCommand

    @dataclass(frozen=True)
    class IterativeDPOCommand(TrainingCommand):
        """``prefkit dpo``'s parsing and help; the body runs the rounds instead of one ``train()``."""

        def main(self, argv: list[str] | None = None, prog: str | None = None) -> int:
            from .runner import run_command

            argv = list(sys.argv[1:] if argv is None else argv)
            if any(flag in argv for flag in ("-h", "--help", "--help-all")):
                return super().main(argv, prog)
            return run_command(lambda: self.parse(argv, prog), self.train,
                               interrupted=lambda dataset_args, training_args, *rest: resume_message(training_args.output_dir))

        def train(self, dataset_args, training_args, model_args, *extra_arguments) -> int:
            from .arguments import model_init_kwargs
            from .runner import check_output_path
            from .training import train_split_only

            check_output_path(training_args.output_dir, "--output_dir", folder=True)
            training_args.model_init_kwargs = model_init_kwargs(model_args, training_args.model_init_kwargs)
            prompts, _ = train_split_only(dataset_args, training_args)
            trainer = IterativeDPOTrainer(model_args.model_name_or_path, args=training_args, train_dataset=prompts)
            rounds = trainer.train()
            for record in rounds:
                held_out = record["eval"]
                summary = "" if held_out is None else (
                    f", held-out {held_out['reward_name']} {held_out['reward']:.3f} (start {held_out['initial_reward']:.3f}), "
                    f"KL to start {held_out['kl']:.2f}")
                print(f"prefkit {self.name}: round {record['round']}: {record['num_pairs']} pairs, sampled reward "
                      f"{record['sample_reward_mean']:.3f}{summary}")
            print(f"prefkit {self.name}: final policy in {training_args.output_dir}, every round in "
                  f"{training_args.output_dir}/round-N, reward and KL over rounds in {training_args.output_dir}/rounds.png")
            return 0

    return IterativeDPOCommand("dpo-iterative", IterativeDPOConfig, IterativeDPOTrainer, description=__doc__,
                               key_flags=KEY_FLAGS)


def make_parser(prog: str | None = None):
    return command().parser(prog)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return command().main(argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
