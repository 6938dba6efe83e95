"""The one body of ``prefkit dpo``, ``reward``, ``ppo``, ``grpo`` and ``rloo``, in the shape of TRL's scripts:
parse with ``TrlParser`` -> load the splits -> build the trainer -> ``train()`` -> ``save_model()`` ->
``push_to_hub()``. A command says only what differs: its config and trainer, extra arguments, how it splits the
data and what else its trainer takes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .arguments import DatasetArguments, ModelArguments, load_splits, model_init_kwargs
from .runner import INTERRUPTED, check_output_path, run_command


def train_and_eval_splits(dataset_args: DatasetArguments, training_args) -> tuple:
    """The train split, and an eval split when ``--eval_strategy`` asks for one."""
    return load_splits(dataset_args, training_args.eval_strategy != "no", training_args.seed)


def train_split_only(dataset_args: DatasetArguments, training_args) -> tuple:
    return load_splits(dataset_args, want_eval=False, seed=training_args.seed)


def no_trainer_arguments(*extra_arguments) -> dict[str, Any]:
    return {}


def interrupted_training_message(output_dir: str) -> str:
    """What Ctrl-C prints: the checkpoint a rerun can resume from, or that there is none yet."""
    from transformers.trainer_utils import get_last_checkpoint

    checkpoint = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if checkpoint is None:
        return f"{INTERRUPTED} before the first checkpoint was saved in {output_dir}; rerunning the same command starts over"
    return f"{INTERRUPTED}; rerun the same command with --resume_from_checkpoint {checkpoint} to resume"


@dataclass(frozen=True)
class TrainingCommand:
    """A training command: TRL's script, run through :func:`~prefkit.commands.runner.run_command`."""

    name: str
    config_class: type
    trainer_class: type
    extra_arguments: tuple[type, ...] = ()  # more argument dataclasses, parsed after the model arguments
    splits: Callable[[DatasetArguments, Any], tuple] = train_and_eval_splits
    trainer_arguments: Callable[..., dict[str, Any]] = no_trainer_arguments  # (*extra_arguments) -> trainer kwargs
    saved: str = "model saved to {output_dir}"
    epilog: str | None = None

    def parser(self, prog: str | None = None):
        from trl import TrlParser

        from ..presets import PRESETS

        classes = (DatasetArguments, self.config_class, ModelArguments, *self.extra_arguments)
        presets = [f"--preset {name}: {preset.description}" for name, preset in PRESETS.get(self.name, {}).items()]
        epilog = " ".join(part for part in [self.epilog, *presets, "(Flags given with a preset override it.)" if presets else None] if part)
        return TrlParser(classes, prog=prog, epilog=epilog or None)

    def parse(self, argv: list[str] | None = None, prog: str | None = None) -> tuple:
        """The parsed argument dataclasses; ``--preset NAME`` (:mod:`prefkit.presets`) first sets the defaults, then
        ``--config`` and the command line override them."""
        from ..presets import get_preset, split_preset

        preset_name, argv = split_preset(sys.argv[1:] if argv is None else argv)
        parser = self.parser(prog)
        if preset_name is not None:
            given = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]
            parser.set_defaults(**get_preset(self.name, preset_name).resolved(given))
        return parser.parse_args_and_config(args=argv)

    def main(self, argv: list[str] | None = None, prog: str | None = None) -> int:
        return run_command(
            lambda: self.parse(argv, prog),
            self.train,
            interrupted=lambda dataset_args, training_args, *rest: interrupted_training_message(training_args.output_dir),
        )

    def train(self, dataset_args: DatasetArguments, training_args, model_args: ModelArguments, *extra_arguments) -> int:
        check_output_path(training_args.output_dir, "--output_dir", folder=True)
        training_args.model_init_kwargs = model_init_kwargs(model_args, training_args.model_init_kwargs)
        train_dataset, eval_dataset = self.splits(dataset_args, training_args)
        optional = {"eval_dataset": eval_dataset} if eval_dataset is not None else {}
        trainer = self.trainer_class(
            model=model_args.model_name_or_path,
            args=training_args,
            train_dataset=train_dataset,
            **optional,
            **self.trainer_arguments(*extra_arguments),
        )
        # Every rank says it is there, so a multi-process launch can be checked from the log.
        print(
            f"prefkit {self.name}: rank {trainer.accelerator.process_index} of world size "
            f"{trainer.accelerator.num_processes}, device {trainer.accelerator.device}",
            flush=True,
        )
        if hasattr(trainer, "card_dataset_name"):  # the model card names the dataset it was trained on
            trainer.card_dataset_name = dataset_args.dataset_name
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model(training_args.output_dir)
        trainer.accelerator.print(f"prefkit {self.name}: " + self.saved.format(output_dir=training_args.output_dir))
        if training_args.push_to_hub:
            trainer.push_to_hub(dataset_name=dataset_args.dataset_name)
            trainer.accelerator.print(f"prefkit {self.name}: pushed to https://huggingface.co/{trainer.hub_model_id}")
        end_training(trainer)
        return 0


def end_training(trainer) -> None:
    """Finish the trackers and destroy the process group, after letting go of the model.

    Under DDP the wrapped model's reducer holds the gloo process group; destroyed after the group, its destructor
    can wait forever for a peer that has already exited. So the model goes first, while the group is alive.
    """
    accelerator = trainer.accelerator
    trainer.model_wrapped = trainer.model = None
    accelerator.free_memory()  # drops the prepared (DDP) model, optimizer and dataloaders, then collects garbage
    accelerator.end_training()
