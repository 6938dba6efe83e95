"""A small PPO run on the tiny model for the multi-process tests: `torchrun --nproc_per_node 2 ppo_rank_script.py ...`
or plain `python ppo_rank_script.py ...` (one process). Not a test file itself (pytest collects only test_*.py).

Each process writes ``<report>-rank<r>.json``: its rank, the world size, the trainer's log history and sync-checked
steps, the optimizer's step count and, with ``--record_writes``, every file it wrote under the output folder.
``PREFKIT_TEST_PERTURB_RANK=<r>`` (read only here) nudges rank r's value head after the first step, to show that the
sync check catches processes that drifted apart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def letters(prompts, completions, **kwargs):
    """A reward that varies on the tiny model's token soup, so every process has gradients."""
    return [sum(c.isalpha() for c in text) / max(len(text), 1) for text in completions]


def record_writes(output_dir: str, writes: list[str]) -> None:
    """Append to ``writes`` the path (relative to ``output_dir``) of every file this process opens for writing there:
    Python-level opens through an audit hook, and ``torch.save`` / safetensors' ``save_file``, which write from C."""
    import safetensors.torch
    import torch

    root = os.path.realpath(output_dir)

    def note(path) -> None:
        if isinstance(path, bytes):
            path = path.decode()
        if isinstance(path, (str, os.PathLike)):
            path = os.path.realpath(os.fspath(path))
            if path.startswith(root + os.sep):
                writes.append(os.path.relpath(path, root))

    def audit(event, args):
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
            if writing:
                note(path)

    sys.addaudithook(audit)

    def spy(original, path_position):
        def wrapper(*args, **kwargs):
            note(args[path_position] if len(args) > path_position else kwargs.get("f", kwargs.get("filename")))
            return original(*args, **kwargs)

        return wrapper

    # Replace every reference, including `from safetensors.torch import save_file as safe_save_file` aliases.
    replacements = {id(torch.save): spy(torch.save, 1), id(safetensors.torch.save_file): spy(safetensors.torch.save_file, 1)}
    for module in list(sys.modules.values()):
        try:
            items = list(vars(module).items())
        except TypeError:
            continue
        for name, value in items:
            if id(value) in replacements and not isinstance(value, (int, str)):
                try:
                    setattr(module, name, replacements[id(value)])
                except (AttributeError, TypeError):
                    pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("output_dir")
    parser.add_argument("report")
    parser.add_argument("--per_device_train_batch_size", type=int, default=4)
    parser.add_argument("--max_steps", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None)
    parser.add_argument("--record_writes", action="store_true")
    options = parser.parse_args()

    from datasets import Dataset
    from transformers import TrainerCallback

    import torch

    from prefkit.trainers.ppo import PPOConfig, PPOTrainer

    writes: list[str] = []
    if options.record_writes:
        record_writes(options.output_dir, writes)
    prompts = [f"Prompt {i}: tell me something about the number {i}." for i in range(16)]
    args = PPOConfig(
        output_dir=options.output_dir, use_peft=True, max_steps=options.max_steps,
        per_device_train_batch_size=options.per_device_train_batch_size, max_completion_length=6, num_ppo_epochs=1,
        learning_rate=1e-3, lr_scheduler_type="linear", adaptive_kl=True, kl_horizon=100, report_to="none",
        save_strategy="steps", save_steps=1, logging_steps=1, log_completions_steps=1, num_completions_to_log=64,
        disable_tqdm=True, seed=0,
    )
    trainer = PPOTrainer(
        model=options.model, reward_funcs=letters, args=args,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
    )
    rank = trainer.accelerator.process_index
    perturb = os.environ.get("PREFKIT_TEST_PERTURB_RANK")
    if perturb is not None and int(perturb) == rank:

        class Nudge(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 1:
                    with torch.no_grad():
                        head = next(p for n, p in trainer._policy_and_value.named_parameters() if "value_head" in n)
                        head.add_(1e-3)

        trainer.add_callback(Nudge())
    trainer.train(resume_from_checkpoint=options.resume_from_checkpoint)
    trainer.save_model()
    optimizer_steps = max(int(s["step"]) for s in trainer.optimizer.state_dict()["state"].values())
    report = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "global_step": trainer.state.global_step,
        "log_history": trainer.state.log_history,
        "sync_checked_steps": trainer.sync_checked_steps,
        "optimizer_steps": optimizer_steps,
        "writes": writes,
    }
    with open(f"{options.report}-rank{rank}.json", "w", encoding="utf-8") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
