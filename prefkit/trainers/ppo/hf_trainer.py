"""The one place prefkit's PPO reaches into ``transformers.Trainer``'s private API.

:class:`prefkit.trainers.ppo.PPOTrainer` keeps ``Trainer`` for what it does well: ``train()`` resolves and loads a
checkpoint, callbacks and ``report_to`` see every step, checkpoints rotate, ``push_to_hub`` works. But its loop is
not Trainer's (one PPO iteration per step, not one batch of a dataloader), and Trainer has no public hook for a loop
of one's own. :class:`CustomLoopTrainer` fills that gap with the private pieces of Trainer's own loop, and nothing
else in prefkit's PPO touches them.

Written for ``transformers>=5.0,<6`` (and ``accelerate>=1.15,<2``), the ranges in pyproject.toml. Every private name
used here is listed in :data:`TRAINER_PRIVATE_METHODS`, :data:`TRAINER_LOOP_STATE` and
:data:`ACCELERATE_PRIVATE_METHODS`; ``tests/test_ppo_trainer_adapter.py`` checks them against the installed versions,
so an upgrade that renames or re-signs one fails there, by name, rather than somewhere inside a training run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
from transformers import Trainer
from transformers.trainer_utils import TrainOutput

#: Private methods of ``transformers.Trainer`` that :class:`CustomLoopTrainer` overrides or calls, with the
#: parameters (in order) it overrides them with or passes them.
TRAINER_PRIVATE_METHODS: dict[str, tuple[str, ...]] = {
    # overridden: Trainer.train() calls them after resolving resume_from_checkpoint
    "_inner_training_loop": ("batch_size", "args", "resume_from_checkpoint", "trial", "ignore_keys_for_eval"),
    "_load_from_checkpoint": ("resume_from_checkpoint", "model"),
    # called: the steps of Trainer's own loop
    "_init_training_state": ("max_steps", "num_update_steps_per_epoch", "num_train_epochs", "resume_from_checkpoint", "trial"),
    "_prepare_for_training": ("max_steps", "train_dataloader", "resume_from_checkpoint"),
    "_load_rng_state": ("checkpoint",),
    "_get_learning_rate": (),
    "_save_checkpoint": ("model", "trial"),
    "_finalize_training": ("trial", "num_train_samples", "start_time"),
}

#: Attributes Trainer's loop keeps on the trainer, which :class:`CustomLoopTrainer` sets as Trainer's loop does, each
#: with a method of Trainer that reads it (the logged loss, speed and token counts come from them).
TRAINER_LOOP_STATE: dict[str, str] = {
    "_tr_loss": "_finalize_training",
    "_total_loss_scalar": "_finalize_training",
    "_initial_global_step": "_finalize_training",
    "_initial_num_input_tokens_seen": "log",
    "_globalstep_last_logged": "_maybe_log_save_evaluate",
}

#: Private methods of accelerate classes called here: ``"Class.method": parameters``.
ACCELERATE_PRIVATE_METHODS: dict[str, tuple[str, ...]] = {
    "GradientState._set_sync_gradients": ("sync_gradients",),
}


class CustomLoopTrainer(Trainer):
    """A ``transformers.Trainer`` whose subclass writes the training loop.

    A subclass defines ``training_loop(resume_from_checkpoint, trial) -> TrainOutput``, which ``train()`` runs once
    the checkpoint (if any) is resolved and its weights loaded, and ``load_checkpoint_weights(folder, model)``, which
    loads what its ``save`` wrote. Its loop calls, in order: :meth:`prepare_training`, :meth:`begin_training`, then
    per step :meth:`add_step_loss` and :meth:`log_and_save`, and at the end :meth:`finish_training`.
    """

    # ---- Trainer.train() hands over here
    def _inner_training_loop(
        self, batch_size=None, args=None, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None
    ):
        return self.training_loop(resume_from_checkpoint, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        self.load_checkpoint_weights(resume_from_checkpoint, model)

    # ---- the pieces of Trainer's loop a custom loop needs
    def prepare_training(self, max_steps: int, steps_per_epoch: int, resume_from_checkpoint: str | None, trial) -> nn.Module:
        """Fresh (or resumed) ``self.state``, the optimizer and scheduler, the model wrapped for training (DDP,
        DeepSpeed, ...) and, when resuming, the random state; returns the wrapped model."""
        self.accelerator.free_memory()
        num_train_epochs = math.ceil(max_steps / steps_per_epoch)
        self._init_training_state(max_steps, steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial)
        model, _ = self._prepare_for_training(max_steps, None, resume_from_checkpoint)
        if resume_from_checkpoint is not None:
            self._load_rng_state(resume_from_checkpoint)
        return model

    def begin_training(self, model: nn.Module) -> None:
        """Start the loss and throughput accounting of this ``train()`` call, then tell the callbacks."""
        self._initial_num_input_tokens_seen = self.state.num_input_tokens_seen
        self._initial_global_step = self.state.global_step
        self._tr_loss = torch.tensor(0.0, device=self.args.device)
        self._total_loss_scalar = 0.0
        self._globalstep_last_logged = self.state.global_step
        model.zero_grad()
        self.control = self.callback_handler.on_train_begin(self.args, self.state, self.control)

    def add_step_loss(self, loss: float) -> None:
        """Count one step's training loss towards the logged ``loss`` and ``train_loss``."""
        self._tr_loss += loss

    def log_and_save(self, model: nn.Module, trial, start_time: float, logs: Callable[[], dict[str, float]]) -> None:
        """After a step: if the callbacks ask for a log, log ``logs()`` with the learning rate and the mean loss since
        the last log; if they ask for a checkpoint, save one."""
        if self.control.should_log and self.state.global_step > self._globalstep_last_logged:
            entry = logs()
            entry["learning_rate"] = self._get_learning_rate()
            tr_loss = self.accelerator.reduce(self._tr_loss.clone(), "mean").item()
            self._tr_loss -= self._tr_loss
            entry["loss"] = tr_loss / (self.state.global_step - self._globalstep_last_logged)
            self._total_loss_scalar += tr_loss
            self._globalstep_last_logged = self.state.global_step
            self.store_flos()
            self.log(entry, start_time)
        if self.control.should_save:
            self.save_checkpoint(model, trial)
            self.control = self.callback_handler.on_save(self.args, self.state, self.control)

    def save_checkpoint(self, model: nn.Module, trial=None) -> None:
        """Write ``checkpoint-<global_step>``: weights, optimizer, scheduler, random and trainer state."""
        self._save_checkpoint(model, trial)

    def finish_training(self, trial, num_train_samples: int, start_time: float) -> TrainOutput:
        """Log the run's speed and mean loss, tell the callbacks that training ended, return ``train()``'s output."""
        return self._finalize_training(trial, num_train_samples, start_time)

    def set_sync_gradients(self, sync: bool) -> None:
        """Whether the next backward pass synchronizes gradients across processes (the last micro-batch of a
        gradient-accumulation step), as accelerate's ``accumulate`` context decides it."""
        self.accelerator.gradient_state._set_sync_gradients(sync)
