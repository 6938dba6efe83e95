"""Benchmark: prefkit.RewardTrainer against trl.RewardTrainer, same model, pairs and settings.

The same harness as ``bench_dpo.py`` (random-init Qwen2.5-shaped model, here with a scalar ``score`` head; chat-shaped
pairs, ~256-token prompts and ~128-token answers varying ±50%; one process per run, a warm-up, alternating rounds,
medians), for Bradley-Terry reward modeling. Contenders: ``trl`` (trl.RewardTrainer, its defaults), ``trl-best``
(gradient checkpointing off), ``prefkit`` (prefkit.RewardTrainer, its defaults: each pair's prompt computed once),
``prefkit-best`` (the same, checkpointing off), ``prefkit-unshared`` (``prefix_sharing=False``), ``prefkit-packed``
(prefkit-best with ``padding_free=True``) and ``prefkit-grouped`` (prefkit-best with
``train_sampling_strategy="group_by_length"``: another order of the same pairs).

    python scripts/bench_reward.py                       # CPU, the "small" shape
    python scripts/bench_reward.py --size 0.5b --mode qlora   # GPU

Prints one JSON line per run, then pairs/s, CPU-seconds per pair, peak memory, their ratios, and the largest per-step
loss difference from TRL (both minimise -log sigmoid(r_chosen - r_rejected) on the same pairs in the same order).
"""

from __future__ import annotations


from bench_dpo import common_args, prefkit_args, run_benchmark, timed_run, trl_init, trl_model_args


def _worker(impl: str, a) -> dict:
    import torch
    from datasets import load_dataset

    cuda = torch.cuda.is_available()
    data = load_dataset("json", data_files=a.data, split="train")
    import prefkit.trainers.reward  # noqa: F401  (both runs import the same libraries before the baseline)
    import trl  # noqa: F401

    common = common_args(impl, a, cuda)  # "best": no gradient checkpointing (a reward model has no reference pass)

    def build():
        if impl.startswith("prefkit"):
            from prefkit import RewardConfig, RewardTrainer

            args = RewardConfig(**common, **prefkit_args(impl, a), final_evaluation=False)
            return RewardTrainer(a.model_dir, args=args, train_dataset=data)
        from trl import RewardConfig, RewardTrainer

        args = RewardConfig(**common, model_init_kwargs=trl_init(a))
        return RewardTrainer(a.model_dir, args=args, train_dataset=data, **trl_model_args(a, "SEQ_CLS"))

    return timed_run(impl, a, build)


def main() -> None:
    run_benchmark(__doc__, "comma-separated subset of trl (TRL's defaults), trl-best (no gradient checkpointing), "
                           "prefkit (its defaults: prefix-shared pairs), prefkit-best, prefkit-unshared "
                           "(prefix_sharing=False), prefkit-packed, prefkit-grouped", _worker, __file__, "Reward modeling",
                  "Qwen2ForSequenceClassification")


if __name__ == "__main__":
    main()
