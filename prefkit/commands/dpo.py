"""Train a policy with DPO.

    prefkit dpo --dataset_name pairs.jsonl --output_dir smollm2-dpo --quantization 4bit --learning_rate 5e-6
    accelerate launch --config_file scripts/accelerate_configs/multi_gpu.yaml scripts/dpo.py --config dpo.yaml
"""

from __future__ import annotations


def make_parser(prog: str | None = None):
    from trl import TrlParser

    from ..trainers.dpo import DPOConfig
    from ._common import DatasetArguments, ModelArguments

    return TrlParser((DatasetArguments, DPOConfig, ModelArguments), prog=prog)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = make_parser(prog)
    dataset_args, training_args, model_args = parser.parse_args_and_config(args=argv)

    from ..trainers.dpo import DPOTrainer
    from ._common import load_splits, model_init_kwargs

    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args.model_init_kwargs)
    train_dataset, eval_dataset = load_splits(dataset_args, training_args.eval_strategy != "no", training_args.seed)

    trainer = DPOTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
    )
    # Every rank says it is there, so a multi-process launch can be checked from the log.
    print(
        f"prefkit dpo: rank {trainer.accelerator.process_index} of world size {trainer.accelerator.num_processes}, "
        f"device {trainer.accelerator.device}",
        flush=True,
    )
    trainer.card_dataset_name = dataset_args.dataset_name
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"prefkit dpo: model saved to {training_args.output_dir}")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_args.dataset_name)
        trainer.accelerator.print(f"prefkit dpo: pushed to https://huggingface.co/{trainer.hub_model_id}")
    if hasattr(trainer, "end"):  # transformers >= 5.18: finish trackers, destroy the process group
        trainer.end()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
