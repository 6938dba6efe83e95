r"""PPO for language models: PPO-Clip and PPO-KL-penalty, with GAE and a value model, or REINFORCE / RLOO / GRPO
advantages, on (Q)LoRA with one shared copy of the base weights.

The objective (the lecture's): maximize reward without drifting far from the model you started from,

.. math:: \max_\theta\; \mathbb{E}_{x,\, \hat y \sim \pi_\theta}\big[r(x, \hat y)\big]
          - \beta_{ref}\, \mathrm{KL}\big(\pi_\theta(\hat y \mid x) \,\|\, \pi_{ref}(\hat y \mid x)\big),

optimized token by token with advantages :math:`\hat A_t \approx` reward − baseline. One PPO iteration, in order
(:meth:`PPOTrainer._ppo_iteration` reads top to bottom like CleanRL's ``ppo.py``):

1. **rollout**: sample a completion per prompt (``num_generations`` per prompt for RLOO/GRPO) with the KV cache,
   at ``temperature``, stopping at EOS or ``max_completion_length`` tokens;
2. **score**: the reward function(s) score each completion (``missing_eos_penalty`` for truncated ones);
3. **old and reference log-probs, values**: :math:`\log\pi_{\theta_{old}}(a_t \mid s_t)`,
   :math:`\log\pi_{ref}(a_t \mid s_t)` and :math:`V(s_t)` for every response token;
4. **rewards with KL**: :math:`r_t = -\beta_{ref}\,\widehat{\mathrm{KL}}_t`, plus the score at the last token
   (``kl_placement="reward"``; with ``"loss"`` the KL is a penalty in step 6 instead; it is counted once unless
   ``"both"``);
5. **advantages and returns**: GAE over :math:`(r_t, V(s_t))`, or a sequence-level baseline
   (REINFORCE: running/batch mean; RLOO: leave-one-out; GRPO: group-normalized);
6. **epochs over shuffled minibatches**: ratio :math:`\rho_t`, PPO-Clip or PPO-KL-penalty policy loss (plus
   :math:`\beta\,\mathrm{KL}` when ``kl_placement`` puts it in the loss, importance-weighted so that it stays the
   KL's gradient on off-policy minibatches), clipped value loss, entropy, approximate KL and clip fractions; one
   optimizer step per minibatch;
7. **adaptive β**: the KL coefficient moves towards ``target_kl`` (optional).

Steps 1-5 are in :mod:`.rollout`, the four roles on one base in :mod:`.policy_value`, the configuration in
:mod:`.config`, and what the loop borrows from ``transformers.Trainer`` in :mod:`.hf_trainer`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from typing import Any

import torch
import torch.nn as nn

from ...data.validation import PreferenceDataError, validate_dataset
from ...evaluation import plot_training_curves
from ...hub import ModelCardMixin
from ...losses import (
    kl_estimate,
    kl_penalty,
    masked_mean,
    masked_var,
    ppo_clip_loss,
    ppo_kl_penalty_loss,
    truncated_importance_weights,
    value_loss,
)
from ...rewards import as_reward_functions
from ...rl import RewardFunctionError, kl_controller
from ...sampling import stop_token_ids
from ...sampling_server import CompletionsClient, RolloutServerError, ServerSampler
from ..startup import attach_memory_plan, check_before_loading, load_for_training, plan_memory_before_loading
from ..policy_eval_callback import PolicyEvalMixin
from .callbacks import CompletionSamplesCallback
from .config import PPOConfig
from .hf_trainer import CustomLoopTrainer
from .policy_value import PolicyAndValue, add_value_adapter, backbone_and_head, disable_dropout
from .rollout import (
    HFRolloutEngine,
    Rollout,
    RunningBaseline,
    compute_advantages,
    generate_responses,
    kl_shaped_rewards,
    rollout_logprobs_and_values,
    score_completions,
)

logger = logging.getLogger(__name__)

PPO_STATE_NAME = "ppo_state.json"  # KL coefficients and the REINFORCE running baseline, for resuming
CURVES_NAME = "ppo_curves.png"
ROLLOUT_ADAPTERS = "rollout_adapters"  # default folder, in output_dir, of the adapters a rollout server loads
LOGPROB_GAP_WARNING = 0.1  # nats per token: above this the server's log-probs are probably of another distribution
ROLLOUT_ERRORS = (RewardFunctionError, RolloutServerError)  # a run stops on these after a checkpoint
PROMPTS_HINT = (
    "PPO trains on prompts only: a 'prompt' column of text or of messages [{'role': 'user', 'content': ...}] that "
    "end before the answer."
)


class PPOTrainer(ModelCardMixin, PolicyEvalMixin, CustomLoopTrainer):
    r"""PPO / REINFORCE / RLOO / GRPO on a ``transformers.Trainer``: callbacks, ``report_to``, checkpoints,
    ``resume_from_checkpoint`` and ``push_to_hub`` come from the framework; :meth:`_ppo_iteration` is the algorithm.

    Args:
        model: a model id or folder (loaded with ``args.quantization`` / ``args.use_peft``), a causal LM, or a
            ``PeftModel`` whose ``"default"`` adapter is the policy. Default: SmolLM2-135M-Instruct.
        reward_funcs: the reward: a callable ``reward_fn(prompts, completions, **columns) -> list[float] | Tensor``,
            an object with ``.score(prompts, completions)`` (:class:`prefkit.RewardModel`), a built-in name
            (``"vader"``, ``"bleu"``, ``"rouge"``), a path to a reward model, or a list of these (weighted by
            ``args.reward_weights``).
        args: a :class:`PPOConfig`.
        train_dataset: prompts (TRL's ``prompt`` column, text or messages); other columns reach reward functions that
            ask for them by name.
        value_model: for ``advantage_estimator="gae"`` without LoRA: a decoder ``*ForSequenceClassification``
            (``num_labels=1``) or its name. Under LoRA leave it ``None``: the value model is a second adapter on the
            policy's base. Ignored by the other estimators (they need no value model).
        ref_model: the reference policy; default: the base with the adapter disabled (LoRA), or a frozen copy of the
            policy taken before training.
        processing_class: the tokenizer (default: the model's, left-padded).
        peft_config: a ``peft.LoraConfig`` (default: from ``args.use_peft`` / ``lora_*``).

    Sample completions go to ``completions.jsonl`` through a :class:`CompletionSamplesCallback`
    (``self.completion_samples``; ``args.log_completions=False`` leaves it out).
    """

    _tag_names = ["prefkit", "ppo", "trl"]
    _card_method = "ppo"

    def __init__(
        self,
        model: Any = None,
        reward_funcs: Any = None,
        args: PPOConfig | None = None,
        train_dataset=None,
        value_model: Any = None,
        ref_model: nn.Module | None = None,
        processing_class=None,
        peft_config=None,
        callbacks=None,
        optimizers=(None, None),
    ):
        from ...models import DEFAULT_POLICY, ensure_pad_token

        model = DEFAULT_POLICY if model is None else model
        if isinstance(model, os.PathLike):
            model = os.fspath(model)

        # ---- everything that can be checked before a model loads
        args = check_before_loading(model, args, config_class=PPOConfig, method="PPO", train_dataset=train_dataset,
                                    validate=_validate_prompts, dataset_hint="a dataset with a 'prompt' column")
        if not isinstance(args, PPOConfig):
            raise TypeError(f"args is a {type(args).__name__}; pass prefkit.PPOConfig.")
        reward_functions = as_reward_functions(reward_funcs)
        for function in reward_functions:
            function.check_columns(train_dataset.column_names)
        if args.reward_weights is not None and len(args.reward_weights) != len(reward_functions):
            raise ValueError(f"args.reward_weights has {len(args.reward_weights)} weights for {len(reward_functions)} reward functions.")
        world_size = max(args.world_size, 1)
        prompts_per_iteration = args.prompts_per_rollout * world_size
        if len(train_dataset) < prompts_per_iteration:
            raise ValueError(
                f"train_dataset has {len(train_dataset)} prompts but one PPO iteration needs {prompts_per_iteration} "
                f"(local_batch_size {args.local_batch_size} / num_generations {args.num_generations} × {world_size} "
                "processes). Add prompts or lower per_device_train_batch_size / num_mini_batches."
            )
        is_peft_model = hasattr(model, "peft_config") and hasattr(model, "disable_adapter")
        uses_lora = is_peft_model or peft_config is not None or args.use_peft
        needs_values = args.advantage_estimator == "gae"
        if needs_values and value_model is None and not uses_lora and not isinstance(model, str):
            raise ValueError(
                "advantage_estimator='gae' needs a value model. Pass value_model= (a decoder "
                "AutoModelForSequenceClassification with num_labels=1, e.g. loaded from the policy's checkpoint), or "
                "train with LoRA (args.use_peft=True) so the value model is a second adapter on the shared base, or "
                "choose advantage_estimator='reinforce', 'rloo' or 'grpo', which need no value model."
            )
        if not needs_values and value_model is not None:
            logger.warning("value_model is ignored: advantage_estimator=%r needs no value model.", args.advantage_estimator)
            value_model = None
        rollout_client = None
        if args.rollout_engine == "server":
            if not uses_lora:
                raise ValueError(
                    "rollout_engine='server' ships the policy's LoRA adapter to the server each iteration, so it needs "
                    "a LoRA policy: add --use_peft (or --quantization 4bit, or pass a PeftModel / peft_config). Full "
                    "fine-tuning would mean sending every weight each iteration, which prefkit does not do."
                )
            rollout_client = CompletionsClient(
                args.rollout_url, timeout=args.rollout_timeout, retries=args.rollout_retries,
                api_key=os.environ.get("VLLM_API_KEY"),
            )
            rollout_model = rollout_client.check_model(args.rollout_model)  # a bad URL fails here, before any loading

        memory_plan = plan_memory_before_loading(model, args, "PPO", ref_model=ref_model, value_model=value_model,
                                                 reward_funcs=reward_funcs, train_dataset=train_dataset,
                                                 peft_config=peft_config)

        # ---- models
        if isinstance(model, str) and needs_values and value_model is None and not uses_lora:
            value_model = model  # full fine-tuning: a value model from the same checkpoint
        # LoRA when asked for, and always on a quantized base (quantized weights cannot be trained).
        model, processing_class, peft_config = load_for_training(
            model, args, processing_class=processing_class, peft_config=peft_config, padding_side="left"
        )
        if not is_peft_model:
            if peft_config is not None:
                from peft import get_peft_model

                model = get_peft_model(model, peft_config)
                is_peft_model = True

        value_head = None
        if needs_values:
            if isinstance(value_model, str):
                from ...models import load_model

                value_model, _ = load_model(
                    value_model, task="sequence-classification", num_labels=1, dtype=model.dtype
                )
                ensure_pad_token(processing_class, value_model)
            if value_model is None:  # shared base: a second adapter and a scalar head
                value_head = add_value_adapter(model, args.value_lora_r)
            else:
                backbone_and_head(value_model)  # fail now if it cannot give token-level values

        if ref_model is None and not is_peft_model:
            # Full fine-tuning: the reference is a frozen copy of the policy as it is now.
            ref_model = copy.deepcopy(model)
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
        for role in (model, value_model, ref_model):
            disable_dropout(role)

        wrapper = PolicyAndValue(model, value_model=value_model, value_head=value_head,
                                 logprob_chunk_size=args.logprob_chunk_size)
        super().__init__(
            model=wrapper,
            args=args,
            data_collator=lambda rows: rows,
            train_dataset=train_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self.ref_model = ref_model
        if ref_model is not None and not getattr(ref_model, "is_loaded_in_4bit", False):
            self.ref_model = ref_model.to(self.accelerator.device)
        self.reward_functions = reward_functions
        # The KL to the reference is counted where kl_placement says: in the reward (kl_ctl), in the loss
        # (kl_penalty_ctl) or both. adaptive_kl moves the loss's beta when it has one, else the reward's.
        self.kl_ctl = kl_controller(
            args.kl_coef if args.kl_in_reward else 0.0,
            args.adaptive_kl and not args.kl_in_loss,
            args.target_kl,
            args.kl_horizon,
        )
        self.kl_penalty_ctl = kl_controller(
            args.kl_penalty_coef if args.kl_in_loss else 0.0, args.adaptive_kl and args.kl_in_loss, args.target_kl, args.kl_horizon
        )
        self.reinforce_baseline = RunningBaseline(args.baseline_momentum, use_batch_mean=args.reinforce_baseline == "batch")
        self.stop_ids = stop_token_ids(model, processing_class, args.stop_token_ids)
        if rollout_client is not None:
            from accelerate.utils import broadcast_object_list

            from ...models import context_length

            self.rollout_engine = ServerSampler(
                rollout_client, processing_class, model=rollout_model, stop_ids=self.stop_ids,
                context_length=context_length(model, processing_class),
                adapter_dir=args.rollout_adapter_dir or os.path.join(args.output_dir, ROLLOUT_ADAPTERS),
                is_main_process=self.accelerator.is_main_process,
                broadcast=lambda obj: broadcast_object_list([obj])[0] if self.accelerator.num_processes > 1 else obj,
            )
        else:
            self.rollout_engine = HFRolloutEngine(
                self.accelerator, processing_class, self.stop_ids, args.ds3_gather_for_generation
            )
        self._warned_logprob_gap = False
        self.completion_samples: CompletionSamplesCallback | None = None
        if args.log_completions:
            self.completion_samples = CompletionSamplesCallback(args.log_completions_steps, args.num_completions_to_log)
            self.add_callback(self.completion_samples)
        self._metrics_since_log: list[dict[str, float]] = []
        #: PPO steps after which the processes were checked to hold the same trainable weights (several processes).
        self.sync_checked_steps: list[int] = []
        self._logged_sharded_sync_check = False
        attach_memory_plan(self, memory_plan)
        self.add_policy_eval_from_args()

    # ------------------------------------------------------------------------------------------------------------

    @property
    def _policy_and_value(self) -> PolicyAndValue:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------------------------------------------------
    # Schedule: which prompts each iteration uses (a pure function of the step, so resuming continues the same run)
    # ------------------------------------------------------------------------------------------------------------

    def _iterations_per_epoch(self) -> int:
        return max(len(self.train_dataset) // (self.args.prompts_per_rollout * max(self.args.world_size, 1)), 1)

    def _total_iterations(self) -> int:
        args = self.args
        if args.max_steps > 0:
            return args.max_steps
        if args.total_episodes is not None:
            return max(math.ceil(args.total_episodes / (args.local_batch_size * max(args.world_size, 1))), 1)
        return max(math.ceil(args.num_train_epochs * self._iterations_per_epoch()), 1)

    def _prompt_indices(self, iteration: int) -> list[int]:
        args = self.args
        world_size = max(args.world_size, 1)
        per_process = args.prompts_per_rollout
        per_iteration = per_process * world_size
        epoch, position = divmod(iteration, self._iterations_per_epoch())
        order = torch.randperm(len(self.train_dataset), generator=torch.Generator().manual_seed(args.seed + epoch))
        start = position * per_iteration + self.accelerator.process_index * per_process
        return order[start : start + per_process].tolist()

    # ------------------------------------------------------------------------------------------------------------
    # Training loop (Trainer.train calls this after resolving and loading the checkpoint)
    # ------------------------------------------------------------------------------------------------------------

    def training_loop(self, resume_from_checkpoint: str | None = None, trial=None):
        """The PPO loop. Resuming (``resume_from_checkpoint``) continues the same run on any number of processes that
        divides the checkpoint's rollout batch: the prompt order is one global permutation per epoch of which each
        iteration takes the next ``prompts_per_rollout × world_size`` prompts (process ``r`` the ``r``-th slice), so the
        position is the step times the global batch, whatever the world size; weights, optimizer, scheduler, β and the
        REINFORCE baseline are the same on every process and come back as saved. Per-process random states
        (``rng_state_<rank>.pth``) come back only for the ranks that wrote one: on another world size the sampling and
        minibatch shuffles of the resumed iterations draw fresh random numbers, so they continue the same run, not
        the same samples. A per-process batch that does not rebuild the checkpoint's global batch is refused here,
        before any step."""
        args = self.args
        max_steps = self._total_iterations()
        iterations_per_epoch = self._iterations_per_epoch()
        if resume_from_checkpoint is not None:
            check_resume_batch(
                self._read_ppo_state(resume_from_checkpoint).get("rollout_batch"), args, self.accelerator.num_processes,
                resume_from_checkpoint,
            )
        model = self.prepare_training(max_steps, iterations_per_epoch, resume_from_checkpoint, trial)
        if resume_from_checkpoint is not None:
            self._load_ppo_state(resume_from_checkpoint)

        world_size = max(args.world_size, 1)
        logger.info("***** Running PPO *****")
        logger.info("  Prompts = %d, iterations = %d (from step %d)", len(self.train_dataset), max_steps, self.state.global_step)
        logger.info(
            "  Completions per iteration = %d (%d prompts × %d generations × %d processes)",
            args.local_batch_size * world_size, args.prompts_per_rollout, args.num_generations, world_size,
        )
        logger.info("  Objective = %s, advantages = %s", args.loss_type, args.advantage_estimator)

        start_time = time.time()
        self._metrics_since_log = []
        self.begin_training(model)

        while self.state.global_step < max_steps and not self.control.should_training_stop:
            self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
            try:
                metrics = self._ppo_iteration(model)
            except ROLLOUT_ERRORS as error:
                raise self._keep_progress(error, model, trial) from None
            self.state.global_step += 1
            self.state.epoch = self.state.global_step / iterations_per_epoch
            self._metrics_since_log.append(metrics)
            self.add_step_loss(metrics["loss/policy_avg"] + args.vf_coef * metrics.get("loss/value_avg", 0.0))
            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            if self._sync_check_due(max_steps):  # before a checkpoint, so none is written from diverged processes
                self.check_processes_in_sync()
            self.log_and_save(model, trial, start_time, self._metrics_to_log)

        output = self.finish_training(trial, max_steps * args.prompts_per_rollout * world_size, start_time)
        if self.is_world_process_zero():
            plot_training_curves(self.state.log_history, os.path.join(args.output_dir, CURVES_NAME))
        return output

    def _metrics_to_log(self) -> dict[str, float]:
        """The mean of each metric over the iterations since the last log, and the episodes (completions) so far."""
        logs = _average(self._metrics_since_log)
        self._metrics_since_log = []
        logs["episode"] = self.state.global_step * self.args.local_batch_size * max(self.args.world_size, 1)
        return logs

    def _keep_progress(self, error: Exception, model, trial) -> Exception:
        """A reward that breaks, or a rollout server that dies, mid-run must not cost the iterations already trained:
        checkpoint, then report (the same error type, with the step and the checkpoint in its message)."""
        message = f"At PPO step {self.state.global_step + 1}: {error}"
        if self.state.global_step > 0 and self.args.save_strategy != "no":
            self.save_checkpoint(model, trial)
            folder = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
            message += f"\nTraining up to step {self.state.global_step} was saved to {folder}; resume with resume_from_checkpoint."
        return type(error)(message)

    # ------------------------------------------------------------------------------------------------------------
    # One PPO iteration
    # ------------------------------------------------------------------------------------------------------------

    def _ppo_iteration(self, model) -> dict[str, float]:
        args = self.args
        accelerator = self.accelerator
        device = accelerator.device
        timings: dict[str, float] = {}

        # 1. Rollout: sample completions with the current policy, the k samples of a prompt side by side.
        tick = time.perf_counter()
        rows = [self.train_dataset[i] for i in self._prompt_indices(self.state.global_step)]
        rows = [row for row in rows for _ in range(args.num_generations)]
        prompts = [row["prompt"] for row in rows]
        # The engine samples with the current weights: the model itself (hf), or its adapter shipped to a server.
        self.rollout_engine.update_weights(
            self._policy_and_value.policy if args.rollout_engine == "server" else self.model_wrapped
        )
        sampled = generate_responses(
            self.rollout_engine, prompts, max_new_tokens=args.max_completion_length, temperature=args.temperature,
            max_prompt_length=args.max_prompt_length, batch_size=args.local_rollout_forward_batch_size, device=device,
        )
        self.state.num_input_tokens_seen += int(accelerator.gather(sampled.attention_mask.sum()).sum().item())
        completions = sampled.texts
        response_mask = sampled.response_mask  # [B, T]
        timings["time/rollout"] = time.perf_counter() - tick

        # 2. Score the completions.
        tick = time.perf_counter()
        scores, per_function = score_completions(
            self.reward_functions, args.reward_weights, rows, completions, sampled.contains_eos, args.missing_eos_penalty
        )  # [B]
        timings["time/scoring"] = time.perf_counter() - tick

        # 3. Log-probs of the sampled tokens under the old policy and the reference; values.
        tick = time.perf_counter()
        old_logprobs, ref_logprobs, values = rollout_logprobs_and_values(
            self._policy_and_value, self.ref_model, sampled, temperature=args.temperature,
            batch_size=args.local_rollout_forward_batch_size, autocast=accelerator.autocast,
        )  # [B, T] each
        timings["time/logprobs"] = time.perf_counter() - tick
        # A server sampled with its own kernels: measure how far its log-probs are from ours, and weight each token's
        # policy-gradient term by min(pi_old / mu, cap) (truncated importance sampling, prefkit.losses).
        rollout_metrics, is_weights = {}, None
        if sampled.behaviour_logprobs is not None:
            gap = (old_logprobs - sampled.behaviour_logprobs).abs() * response_mask  # [B, T]
            rollout_metrics["rollout/logprob_diff_mean"] = masked_mean(gap, response_mask)
            logprob_diff_max = accelerator.gather(gap.max().reshape(1)).max()
            if args.rollout_is_cap is not None:
                is_weights = truncated_importance_weights(
                    old_logprobs, sampled.behaviour_logprobs, args.rollout_is_cap, response_mask
                )  # [B, T]
                log_ratio = old_logprobs - sampled.behaviour_logprobs
                rollout_metrics["rollout/is_weight_mean"] = masked_mean(is_weights, response_mask)
                rollout_metrics["rollout/is_truncated_frac"] = masked_mean(
                    (log_ratio > math.log(args.rollout_is_cap)).float(), response_mask
                )

        # 4. Per-token rewards: -beta_ref * KL_t everywhere, plus the sequence score on the last real token.
        kl = kl_estimate(old_logprobs, ref_logprobs, args.kl_estimator) * response_mask  # [B, T]
        all_reduce = self._sum_over_processes if self.accelerator.num_processes > 1 else None
        rewards, non_score_rewards = kl_shaped_rewards(
            scores, kl, self.kl_ctl.value, response_mask, args.whiten_rewards, all_reduce
        )

        # 5. Advantages (and returns, the value model's labels). REINFORCE's running baseline moves after its use.
        baseline = None
        if args.advantage_estimator == "reinforce":
            mean_return = self._mean_over_processes({"mean": rewards.sum(dim=1).mean()})["mean"]
            baseline = self.reinforce_baseline.baseline(mean_return)
            self.reinforce_baseline.update(mean_return)
        advantages, returns = compute_advantages(rewards, values, response_mask, args, baseline, all_reduce)

        # 6. Epochs over shuffled minibatches, one optimizer step each.
        tick = time.perf_counter()
        rollout = Rollout(
            sampled.query_responses, sampled.attention_mask, sampled.position_ids, sampled.responses, response_mask,
            old_logprobs, ref_logprobs, values, advantages, returns, is_weights,
        )
        stats = self._optimize(model, rollout)
        timings["time/optimization"] = time.perf_counter() - tick
        self.lr_scheduler.step()

        # 7. Metrics (averaged over processes), then adapt beta to the KL we just measured.
        sequence_kl = kl.sum(dim=1)  # [B]
        metrics = {
            "objective/kl": sequence_kl.mean(),
            "objective/entropy": (-old_logprobs * response_mask).sum(dim=1).mean(),
            "objective/non_score_reward": non_score_rewards.sum(dim=1).mean(),
            "objective/rlhf_reward": (scores + non_score_rewards.sum(dim=1)).mean(),
            "objective/scores": scores.mean(),
            "val/num_eos_tokens": sampled.contains_eos.float().sum(),
            "val/response_length": response_mask.sum(dim=1).mean(),
            **{f"rewards/{name}": function_scores.to(device).mean() for name, function_scores in per_function.items()},
            **rollout_metrics,
            **stats,
        }
        if values is not None:
            residual_variance = masked_var(returns - values, response_mask, unbiased=False)
            metrics["val/var_explained"] = 1.0 - residual_variance / masked_var(returns, response_mask, unbiased=False).clamp(min=1e-8)
        metrics.update({key: torch.tensor(seconds) for key, seconds in timings.items()})
        metrics = self._mean_over_processes(metrics)
        metrics["val/num_eos_tokens"] *= max(args.world_size, 1)  # a count: sum over processes, not mean
        if sampled.behaviour_logprobs is not None:
            metrics["rollout/logprob_diff_max"] = float(logprob_diff_max)  # the largest over every process
            self._warn_about_logprob_gap(metrics["rollout/logprob_diff_mean"])
        metrics["objective/kl_coef"] = self.kl_ctl.value
        if args.kl_in_loss:
            metrics["objective/kl_penalty_coef"] = self.kl_penalty_ctl.value
        n_episodes = args.local_batch_size * max(args.world_size, 1)
        self.kl_ctl.update(metrics["objective/kl"], n_episodes)
        self.kl_penalty_ctl.update(metrics["objective/kl"], n_episodes)

        if self.completion_samples is not None:
            self.completion_samples.add_rollout(self.state.global_step + 1, prompts, completions, scores)
        return metrics

    # ---- 6. optimization
    def _optimize(self, model, rollout: Rollout) -> dict[str, torch.Tensor]:
        args = self.args
        accelerator = self.accelerator
        device = accelerator.device
        stats: dict[str, list[torch.Tensor]] = {
            key: []
            for key in (
                "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "policy/entropy_avg",
                "val/ratio", "val/ratio_var", "loss/value_avg", "val/clipfrac_avg", "grad_norm",
            )
        }
        with_values = rollout.values is not None
        response_width = rollout.responses.shape[1]
        model.train()
        for _ in range(args.num_ppo_epochs):
            order = torch.randperm(args.local_batch_size, device=device)
            for mini_start in range(0, args.local_batch_size, args.local_mini_batch_size):
                mini_batch = order[mini_start : mini_start + args.local_mini_batch_size]
                # Gradient accumulation over micro-batches: DDP synchronizes on the last one only.
                micro_batches = mini_batch.split(args.per_device_train_batch_size)
                for position, index in enumerate(micro_batches):
                    is_last = position == len(micro_batches) - 1
                    self.set_sync_gradients(is_last)
                    mask = rollout.response_mask[index]
                    old_logprobs = rollout.old_logprobs[index]
                    advantages = rollout.advantages[index]
                    if rollout.is_weights is not None:
                        # TIS: w * min(rho A, clip(rho) A) = min(rho (wA), clip(rho) (wA)) since w > 0
                        advantages = advantages * rollout.is_weights[index]
                    with contextlib.nullcontext() if is_last else accelerator.no_sync(model):
                        # log-probs (and entropy) through the chunked output head: never the [rows, T, vocab] logits
                        token_logprobs, new_values = model(
                            rollout.query_responses[index],
                            rollout.attention_mask[index],
                            rollout.position_ids[index],
                            response_width,
                            with_values,
                            return_logprobs=True,
                            temperature=args.temperature,
                        )
                        new_logprobs = token_logprobs.logprobs
                        if args.loss_type == "clip":
                            policy = ppo_clip_loss(new_logprobs, old_logprobs, advantages, mask, args.cliprange)
                            loss = policy.loss
                            if args.kl_in_loss:  # the GRPO paper's form: clipped surrogate + beta * KL
                                loss = loss + kl_penalty(
                                    new_logprobs, old_logprobs, rollout.ref_logprobs[index], mask,
                                    self.kl_penalty_ctl.value, args.kl_penalty_estimator,
                                    args.kl_penalty_importance_weight,
                                )
                        else:
                            policy = ppo_kl_penalty_loss(
                                new_logprobs, old_logprobs, rollout.ref_logprobs[index], advantages, mask,
                                kl_coef=self.kl_penalty_ctl.value, kl_estimator=args.kl_penalty_estimator,
                                importance_weighted=args.kl_penalty_importance_weight,
                            )
                            loss = policy.loss
                        if with_values:
                            value = value_loss(
                                new_values, rollout.values[index], rollout.returns[index], mask, args.cliprange_value
                            )
                            loss = loss + args.vf_coef * value.loss
                        accelerator.backward(loss / len(micro_batches))
                    if is_last:
                        if args.max_grad_norm and args.max_grad_norm > 0:
                            grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                            stats["grad_norm"].append(torch.as_tensor(grad_norm, dtype=torch.float32, device=device))
                        self.optimizer.step()
                        self.optimizer.zero_grad()
                    with torch.no_grad():
                        ratio = torch.exp(new_logprobs - old_logprobs)
                        stats["policy/approxkl_avg"].append(policy.approx_kl)
                        stats["policy/clipfrac_avg"].append(policy.clipfrac)
                        stats["loss/policy_avg"].append(policy.loss.detach())
                        stats["policy/entropy_avg"].append(masked_mean(token_logprobs.entropy, mask))
                        stats["val/ratio"].append(masked_mean(ratio, mask))
                        stats["val/ratio_var"].append(masked_var(ratio, mask, unbiased=False))
                        if with_values:
                            stats["loss/value_avg"].append(value.loss.detach())
                            stats["val/clipfrac_avg"].append(value.clipfrac)
                    del token_logprobs, new_logprobs, new_values, loss
        return {key: torch.stack(items).mean() for key, items in stats.items() if items}

    def _warn_about_logprob_gap(self, mean_gap: float) -> None:
        if mean_gap > LOGPROB_GAP_WARNING and not self._warned_logprob_gap:
            self._warned_logprob_gap = True
            logger.warning(
                "The rollout server's log-probs differ from the trainer's by %.3f nats per token on average "
                "(rollout/logprob_diff_mean). Check that it serves the same base model in the same precision and that "
                "vLLM runs with --logprobs-mode processed_logprobs (its default returns log-probs before temperature).",
                mean_gap,
            )

    def _sum_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over processes (whitening takes the global batch's mean and variance from it)."""
        return self.accelerator.reduce(tensor, "sum")

    def _mean_over_processes(self, metrics: dict[str, torch.Tensor]) -> dict[str, float]:
        """Mean of each scalar metric over processes, as Python floats."""
        keys = list(metrics)
        stacked = torch.stack([torch.as_tensor(metrics[k], dtype=torch.float32, device=self.accelerator.device) for k in keys])
        stacked = self.accelerator.reduce(stacked, "mean")
        return {key: float(value) for key, value in zip(keys, stacked.tolist())}

    # ------------------------------------------------------------------------------------------------------------
    # Processes in step: DDP keeps every copy of the weights identical; check that it did
    # ------------------------------------------------------------------------------------------------------------

    def _sync_check_due(self, max_steps: int) -> bool:
        """Whether this step ends with a sync check: before each checkpoint, at the end, every ``sync_check_steps``.
        Every process reaches the same answer (the same step and control flags), as the collective check needs."""
        if self.accelerator.num_processes < 2:
            return False
        every = self.args.sync_check_steps
        return (
            self.control.should_save
            or self.control.should_training_stop
            or self.state.global_step >= max_steps
            or (every is not None and self.state.global_step % every == 0)
        )

    def check_processes_in_sync(self) -> None:
        """Raise :class:`ProcessesOutOfSyncError`, naming the first differing tensor, unless every process holds the
        same trainable weights (policy adapter, value adapter and value head, or the whole trainable model).

        A collective call: every process must make it. Skipped (with a log line) where the weights are sharded
        (FSDP, DeepSpeed ZeRO-3), since there each process holds a different part by design. The steps checked (and
        passed) are appended to :attr:`sync_checked_steps`.
        """
        if self.accelerator.num_processes < 2:
            return
        if self.is_fsdp_enabled or (
            self.is_deepspeed_enabled and getattr(self.accelerator.state.deepspeed_plugin, "zero_stage", 0) == 3
        ):
            if not self._logged_sharded_sync_check:
                self._logged_sharded_sync_check = True
                logger.info("Weights are sharded across processes (FSDP / ZeRO-3): the sync check does not apply.")
            return
        named = [(name, p) for name, p in self._policy_and_value.named_parameters() if p.requires_grad]
        gather = lambda checksums: self.accelerator.gather(checksums.unsqueeze(0))  # noqa: E731  [world, n, 2]
        check_in_sync(named, gather, where=f"after PPO step {self.state.global_step}")
        self.sync_checked_steps.append(self.state.global_step)
        logger.info("PPO step %d: %d processes hold the same %d trainable tensors.",
                    self.state.global_step, self.accelerator.num_processes, len(named))

    # ------------------------------------------------------------------------------------------------------------
    # Saving and resuming: policy adapter at the root, value adapter + head in value/, PPO state in ppo_state.json
    # ------------------------------------------------------------------------------------------------------------

    def _save_files(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self._policy_and_value.save(output_dir)
        self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        with open(os.path.join(output_dir, PPO_STATE_NAME), "w", encoding="utf-8") as f:
            json.dump(self._ppo_state(), f, indent=2)

    def _ppo_state(self) -> dict[str, Any]:
        args = self.args
        return {
            "kl_coef": self.kl_ctl.state_dict(),
            "kl_penalty_coef": self.kl_penalty_ctl.state_dict(),
            "running_baseline": self.reinforce_baseline.value,
            # What a resume on another number of processes must rebuild (check_resume_batch).
            "rollout_batch": {
                "completions_per_iteration": args.local_batch_size * self.accelerator.num_processes,
                "num_generations": args.num_generations,
                "num_mini_batches": args.num_mini_batches,
                "world_size": self.accelerator.num_processes,
            },
        }

    @staticmethod
    def _read_ppo_state(checkpoint: str) -> dict[str, Any]:
        path = os.path.join(checkpoint, PPO_STATE_NAME)
        if not os.path.isfile(path):
            return {}
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def _load_ppo_state(self, checkpoint: str) -> None:
        state = self._read_ppo_state(checkpoint)
        if not state:
            logger.warning("%s has no %s: KL coefficients and baseline restart from the config.", checkpoint, PPO_STATE_NAME)
            return
        self.kl_ctl.load_state_dict(state["kl_coef"])
        self.kl_penalty_ctl.load_state_dict(state["kl_penalty_coef"])
        self.reinforce_baseline.value = state.get("running_baseline")

    def load_checkpoint_weights(self, folder: str, model=None) -> None:
        """Resuming: the policy, value adapter and head (or value model) saved in ``folder`` (the optimizer,
        scheduler and random state are Trainer's)."""
        self.accelerator.unwrap_model(model if model is not None else self.model).load(folder)

    # ------------------------------------------------------------------------------------------------------------
    # Model card
    # ------------------------------------------------------------------------------------------------------------

    def card_hyperparameters(self) -> dict[str, Any]:
        args = self.args
        values = {
            "loss_type": args.loss_type,
            "advantage_estimator": args.advantage_estimator,
            "num_generations": args.num_generations,
            "max_completion_length": args.max_completion_length,
            "temperature": args.temperature,
            "num_ppo_epochs": args.num_ppo_epochs,
            "num_mini_batches": args.num_mini_batches,
            "cliprange": args.cliprange if args.loss_type == "clip" else None,
            "kl_coef": args.kl_coef if args.kl_in_reward else None,
            "kl_estimator": args.kl_estimator,
            "kl_placement": args.kl_placement,
            "kl_penalty_coef": args.kl_penalty_coef if args.kl_in_loss else None,
            "adaptive_kl": args.adaptive_kl,
            "target_kl": args.target_kl if args.adaptive_kl else None,
            "gamma": args.gamma if args.advantage_estimator == "gae" else None,
            "lam": args.lam if args.advantage_estimator == "gae" else None,
            "vf_coef": args.vf_coef if args.advantage_estimator == "gae" else None,
            "cliprange_value": args.cliprange_value if args.advantage_estimator == "gae" else None,
            "reward": ", ".join(f.name for f in self.reward_functions),
            "rollout_engine": args.rollout_engine if args.rollout_engine == "server" else None,
            "rollout_is_cap": args.rollout_is_cap if args.rollout_engine == "server" else None,
        }
        return {**values, **super().card_hyperparameters()}


class ProcessesOutOfSyncError(RuntimeError):
    """Processes that should hold identical weights (data parallel) hold different ones."""


def parameter_checksums(tensors: list[torch.Tensor]) -> torch.Tensor:
    r"""Two float64 checksums per tensor, ``[n, 2]``: :math:`\sum_i x_i` and :math:`\sum_i w_i x_i` with
    :math:`w_i = 1 + (i \bmod 97)` over the flattened tensor (the weighted sum also catches values that moved
    between positions). Equal tensors give bit-equal checksums on the same hardware; a change of one element by
    one unit in the last place of a float32 almost always shows (float64 holds float32's 24 bits with 29 to spare)."""
    rows = []
    for tensor in tensors:
        flat = tensor.detach().reshape(-1).to(torch.float64)
        weights = torch.arange(flat.numel(), device=flat.device, dtype=torch.float64).remainder_(97).add_(1)
        rows.append(torch.stack([flat.sum(), (flat * weights).sum()]))
    if not rows:
        return torch.zeros(0, 2, dtype=torch.float64)
    return torch.stack(rows)


def check_in_sync(named_tensors: list[tuple[str, torch.Tensor]], gather, where: str = "") -> None:
    """Raise :class:`ProcessesOutOfSyncError` naming the first tensor whose checksums differ between processes.

    ``gather(checksums [n, 2]) -> [world_size, n, 2]`` collects every process's checksums (an all-gather), so every
    process reaches the same verdict and raises the same error."""
    names = [name for name, _ in named_tensors]
    local = parameter_checksums([tensor for _, tensor in named_tensors])
    gathered = gather(local).cpu()  # [world_size, n, 2]
    differs = (gathered != gathered[:1]).any(dim=2).any(dim=0)  # [n]
    if not differs.any():
        return
    first = int(differs.nonzero()[0])
    sums = ", ".join(f"{float(row[first, 0])!r} on rank {rank}" for rank, row in enumerate(gathered))
    others = int(differs.sum()) - 1
    raise ProcessesOutOfSyncError(
        f"Processes hold different weights {where}: the first differing trainable tensor is {names[first]!r} "
        f"(sum {sums}){f', and {others} more tensor(s) differ' if others else ''}. Data-parallel training keeps one "
        "copy per process identical; something changed one process's copy only (a callback, hook or manual edit on "
        "one rank, weights loaded on one rank, or different library versions). Training stopped so the processes do "
        "not go on training different models; resume from the last checkpoint once the cause is gone."
    )


def check_resume_batch(saved: dict[str, Any] | None, args: PPOConfig, world_size: int, checkpoint: str) -> None:
    """Refuse, with what to set, a resume whose global rollout batch differs from the checkpoint's ``saved`` one
    (``ppo_state.json``'s ``rollout_batch``), or whose number of processes cannot split it: the prompt order and the
    optimizer's steps per iteration are those of the global batch, so only an equal global batch continues the run.
    A checkpoint from before ``rollout_batch`` was saved (``saved`` is None) is not checked."""
    if not saved:
        return
    completions = int(saved["completions_per_iteration"])
    generations, mini_batches = int(saved["num_generations"]), int(saved["num_mini_batches"])
    prompts = completions // generations
    written = (
        f"{checkpoint} was written by a run sampling {completions} completions per PPO iteration ({prompts} prompts × "
        f"{generations} generations, in {mini_batches} minibatches) on {saved['world_size']} process(es)"
    )
    changed = [
        f"{name}={now} (the checkpoint's: {then})"
        for name, now, then in (("num_generations", args.num_generations, generations),
                                ("num_mini_batches", args.num_mini_batches, mini_batches))
        if now != then
    ]
    if changed:
        raise ValueError(f"{written}; this resume has {', '.join(changed)}. Set them back to continue the same run.")
    fits = [n for n in range(1, prompts + 1) if prompts % n == 0 and (completions // n) % mini_batches == 0]
    if world_size not in fits:
        raise ValueError(
            f"{written}; {world_size} processes cannot split it (each process needs whole prompts, a prompt's "
            f"completions stay on one process, and an equal share of each minibatch). Resume on {_or_list(fits)} "
            "process(es)."
        )
    per_process = completions // world_size
    if args.local_batch_size != per_process:
        per_step = per_process // mini_batches
        hint = (
            f"--per_device_train_batch_size {per_step // args.gradient_accumulation_steps}"
            if per_step % args.gradient_accumulation_steps == 0
            else f"--per_device_train_batch_size {per_step} --gradient_accumulation_steps 1"
        )
        raise ValueError(
            f"{written}; on {world_size} process(es) that is {per_process} completions per process, but this run "
            f"samples {args.local_batch_size} (per_device_train_batch_size {args.per_device_train_batch_size} × "
            f"gradient_accumulation_steps {args.gradient_accumulation_steps} × num_mini_batches {mini_batches}). To "
            f"continue the same run, set {hint}."
        )


def _or_list(numbers: list[int]) -> str:
    words = [str(n) for n in numbers]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _validate_prompts(dataset: Any, name: str) -> None:
    """Every bad row of a prompt dataset in one error, before a model loads (ids may repeat: they are not checked)."""
    try:
        validate_dataset(dataset, name, format="prompts", id_column=None)
    except PreferenceDataError as error:
        # validate_dataset's hint suggests drop_invalid, which PPOTrainer does not take: say what PPO reads instead.
        raise PreferenceDataError(error.name, error.problems, error.total_rows, hint=PROMPTS_HINT) from None


def _average(history: list[dict[str, float]]) -> dict[str, float]:
    keys = {key for entry in history for key in entry}
    return {key: sum(e[key] for e in history if key in e) / sum(1 for e in history if key in e) for key in sorted(keys)}
