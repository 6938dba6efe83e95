"""The shared body of ``prefkit grpo`` and ``prefkit rloo``: TRL's own loop with prefkit rewards and QLoRA flags."""

from __future__ import annotations


def run(name: str, config_class, trainer_class, argv: list[str] | None, prog: str | None) -> int:
    from trl import TrlParser

    from ._common import DatasetArguments, ModelArguments, load_splits, model_init_kwargs
    from .ppo import RewardArguments

    parser = TrlParser((DatasetArguments, config_class, ModelArguments, RewardArguments), prog=prog)
    dataset_args, training_args, model_args, reward_args = parser.parse_args_and_config(args=argv)
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args.model_init_kwargs)
    train_dataset, eval_dataset = load_splits(dataset_args, training_args.eval_strategy != "no", training_args.seed)
    trainer = trainer_class(
        model=model_args.model_name_or_path,
        reward_funcs=reward_args.rewards(),
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
    )
    print(
        f"prefkit {name}: rank {trainer.accelerator.process_index} of world size {trainer.accelerator.num_processes}, "
        f"device {trainer.accelerator.device}",
        flush=True,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"prefkit {name}: model saved to {training_args.output_dir}")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_args.dataset_name)
        trainer.accelerator.print(f"prefkit {name}: pushed to https://huggingface.co/{trainer.hub_model_id}")
    if hasattr(trainer, "end"):
        trainer.end()
    return 0
