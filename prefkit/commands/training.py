"""The one body of ``prefkit dpo``, ``reward``, ``ppo``, ``grpo`` and ``rloo``, in the shape of TRL's scripts:
parse with ``TrlParser`` -> load the splits -> build the trainer -> ``train()`` -> ``save_model()`` ->
``push_to_hub()``. A command says only what differs: its config and trainer, extra arguments, how it splits the
data and what else its trainer takes."""

from __future__ import annotations

import dataclasses
import os
import sys
import textwrap
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
    description: str | None = None  # the command module's docstring: what it does, then indented examples
    key_flags: tuple[tuple[str, str], ...] = ()  # (flag, one-line help): the command's own flags people change most

    def parser(self, prog: str | None = None):
        from trl import TrlParser

        from ..presets import PRESETS

        presets = [f"--preset {name}: {preset.description}" for name, preset in PRESETS.get(self.name, {}).items()]
        epilog = " ".join(part for part in [self.epilog, *presets, "(Flags given with a preset override it.)" if presets else None] if part)
        parser = TrlParser(self.argument_classes, prog=prog, epilog=epilog or None)
        parser.error = _short_usage_error(parser.prog)  # not argparse's 150-line usage before the one line that matters
        return parser

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

    @property
    def argument_classes(self) -> tuple[type, ...]:
        return (DatasetArguments, self.config_class, ModelArguments, *self.extra_arguments)

    def short_help(self, prog: str | None = None) -> str:
        """One screen for ``--help``: what the command does, the flags people change, ``--config``, the presets,
        examples, and where the full list is (``--help-all``)."""
        from ..presets import PRESETS

        prog = prog or f"prefkit {self.name}"
        prose, examples = split_docstring(self.description or "")
        presets = PRESETS.get(self.name, {})
        lines = [f"usage: {prog} [--config FILE.yaml]{' [--preset NAME]' if presets else ''} [--FLAG VALUE ...]", ""]
        lines += [textwrap.fill(paragraph, HELP_WIDTH) + "\n" for paragraph in prose]
        lines.append(f"The flags people change most ({prog} --help-all lists every flag):")
        flags = [(flag, COMMON_FLAG_HELP[flag]) for flag in COMMON_FLAGS_HEAD]
        flags += list(self.key_flags) + [(flag, COMMON_FLAG_HELP[flag]) for flag in COMMON_FLAGS_TAIL]
        lines += [help_line(f"--{flag}", text + self._default_text(flag)) for flag, text in flags]
        lines += ["", "Config files and presets:"]
        lines.append(help_line("--config FILE.yaml", "any flag above (or in --help-all) as a YAML key: "
                               "`learning_rate: 5.0e-6`; flags given on the command line override the file"))
        lines += [help_line(f"--preset {name}", preset.description) for name, preset in presets.items()]
        if presets:
            lines.append(help_line("", "a preset only sets defaults: --config and flags override it"))
        if self.epilog:
            lines += ["", textwrap.fill(self.epilog, HELP_WIDTH)]
        if examples:
            lines += ["", "Examples:"] + [f"  {example}" for example in examples]
        lines += ["", f"Every flag (TRL's and transformers' training arguments too): {prog} --help-all"]
        return "\n".join(lines)

    def _default_text(self, flag: str) -> str:
        for cls in self.argument_classes:
            field = next((f for f in dataclasses.fields(cls) if f.name == flag), None)
            if field is None:
                continue
            if field.default is not dataclasses.MISSING:
                value = field.default
            elif field.default_factory is not dataclasses.MISSING:
                value = field.default_factory()
            else:
                return ""
            if value is None or value is False or value == -1:  # unset, off, or TRL's "not used"
                return ""
            if isinstance(value, list):
                value = " ".join(map(str, value))
            return f" (default: {value})"
        raise KeyError(f"prefkit {self.name} has no flag --{flag}")

    def main(self, argv: list[str] | None = None, prog: str | None = None) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        if "--help-all" in argv:
            self.parser(prog).print_help()
            print("\n--config FILE.yaml: any of these flags as YAML keys; flags on the command line override the file.")
            return 0
        if "-h" in argv or "--help" in argv:
            print(self.short_help(prog))
            return 0
        return run_command(
            lambda: self.parse(argv, prog),
            self.train,
            interrupted=lambda dataset_args, training_args, *rest: interrupted_training_message(training_args.output_dir),
        )

    def train(self, dataset_args: DatasetArguments, training_args, model_args: ModelArguments, *extra_arguments) -> int:
        check_output_path(training_args.output_dir, "--output_dir", folder=True)
        notice = cpu_fallback_notice(self.name, training_args)
        if notice is not None:
            print(notice, file=sys.stderr, flush=True)
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


def cpu_fallback_notice(command: str, training_args, environ: dict[str, str] | None = None) -> str | None:
    """One line when ``accelerate launch`` set this run up for a GPU but torch sees none, so it trains on the CPU
    (a CPU-only torch build, or no device visible); None otherwise, and on every process but the first.

    ``accelerate launch`` exports ``ACCELERATE_MIXED_PRECISION`` to the processes it starts, and
    ``ACCELERATE_USE_CPU=True`` only when the config or ``--cpu`` asked for the CPU; a run started without accelerate,
    or with ``--use_cpu``, chose its device itself.
    """
    environ = os.environ if environ is None else environ
    if training_args.process_index != 0 or training_args.use_cpu or training_args.device.type != "cpu":
        return None
    launched = "ACCELERATE_MIXED_PRECISION" in environ
    asked_for_cpu = environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes", "y", "on", "t")
    if not launched or asked_for_cpu:
        return None
    return (
        f"prefkit {command}: accelerate launched this run for a GPU, but torch sees none (a CPU-only torch build, or "
        "no GPU visible), so it trains on the CPU; pass --cpu to accelerate launch if that is what you want."
    )


HELP_WIDTH = 100

# The flags of every training command that people change most, in the order ``--help`` shows them (a command's own
# ``key_flags`` go between the two groups).
COMMON_FLAGS_HEAD = (
    "model_name_or_path", "dataset_name", "output_dir", "learning_rate", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "use_peft", "lora_r", "quantization",
)
COMMON_FLAGS_TAIL = ("push_to_hub", "hub_model_id", "report_to")
COMMON_FLAG_HELP = {
    "model_name_or_path": "Hub id or local folder of the model to start from",
    "dataset_name": "Hub dataset id, dataset folder, or a .jsonl / .parquet / .csv file",
    "output_dir": "where the model, its checkpoints and its model card are saved",
    "learning_rate": "AdamW learning rate (LoRA adapters want a larger one than full fine-tuning)",
    "num_train_epochs": "passes over the dataset",
    "max_steps": "stop after this many optimizer steps instead (overrides --num_train_epochs)",
    "per_device_train_batch_size": "examples per device per step",
    "gradient_accumulation_steps": "steps whose gradients add up before each optimizer step (a larger batch)",
    "use_peft": "train a LoRA adapter instead of all the weights",
    "lora_r": "LoRA rank",
    "quantization": "4bit (QLoRA, nf4) or 8bit base weights; implies --use_peft",
    "push_to_hub": "upload the model to the Hub as it is saved (needs HF_TOKEN or `hf auth login`)",
    "hub_model_id": "the Hub repo to push to, USER/NAME (default: the --output_dir name)",
    "report_to": "where metrics go: none, wandb, tensorboard, trackio, ...",
}


def help_line(flag: str, text: str, width: int = 30) -> str:
    """``  --flag   text``, the text wrapped in a column like argparse's."""
    return textwrap.fill(text, HELP_WIDTH, initial_indent=f"  {flag:<{width}} ", subsequent_indent=" " * (width + 3))


def split_docstring(docstring: str) -> tuple[list[str], list[str]]:
    """``(paragraphs of prose, examples)`` of a command module's docstring, whose examples are indented lines; an
    example continued on the next line (ending in a backslash, or run together by Python) becomes one line."""
    prose, examples = [], []
    for paragraph in docstring.strip().split("\n\n"):
        lines = paragraph.splitlines()
        if all(line.startswith(" ") for line in lines):
            for line in lines:
                line = " ".join(line.split())
                if examples and (examples[-1].endswith("\\") or not line.startswith(("prefkit", "accelerate", "python"))):
                    examples[-1] = examples[-1].rstrip("\\ ") + " " + line
                else:
                    examples.append(line)
        else:
            prose.append(" ".join(paragraph.split()))
    return prose, examples


def end_training(trainer) -> None:
    """Finish the trackers and destroy the process group, after letting go of the model.

    Under DDP the wrapped model's reducer holds the gloo process group; destroyed after the group, its destructor
    can wait forever for a peer that has already exited. So the model goes first, while the group is alive.
    """
    accelerator = trainer.accelerator
    trainer.model_wrapped = trainer.model = None
    accelerator.free_memory()  # drops the prepared (DDP) model, optimizer and dataloaders, then collects garbage
    accelerator.end_training()


def _short_usage_error(prog: str) -> Callable[[str], None]:
    """``ArgumentParser.error`` for the training commands: the problem in one line and where the flags are listed."""

    def error(message: str) -> None:
        # A string exit code: the command runner prints it and returns the user-error status.
        raise SystemExit(f"error: {message}\n  ({prog} --help lists the main flags, --help-all every flag)")

    return error

