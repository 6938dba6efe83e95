"""The configuration of :class:`prefkit.trainers.ppo.PPOTrainer`: ``TrainingArguments`` plus the PPO fields."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ...logprobs import check_logprob_chunk_size
from ...memory_plan import MemoryBudgetArguments
from ..startup import QLoRAArguments
from ..policy_eval_callback import PolicyEvalArguments

LOSS_TYPES = ("clip", "kl_penalty")
KL_PLACEMENTS = ("reward", "loss", "both")
LORA_LEARNING_RATE = 1e-4
FULL_LEARNING_RATE = 1e-5
ADVANTAGE_ESTIMATORS = ("gae", "reinforce", "rloo", "grpo")
ROLLOUT_ENGINES = ("hf", "server")
KL_PENALTY_COEF = 0.1
GRPO_KL_PENALTY_COEF = 0.04  # Shao et al. (2024), DeepSeekMath, sec. 4.2


@dataclass
class PPOConfig(TrainingArguments, QLoRAArguments, PolicyEvalArguments, MemoryBudgetArguments):
    r"""Configuration of :class:`PPOTrainer`: ``transformers.TrainingArguments`` plus the PPO fields, named as in TRL's
    former ``PPOConfig`` where it had them, plus prefkit's QLoRA fields (``--quantization 4bit``).

    Batch sizes (per process): one PPO iteration samples ``per_device_train_batch_size × gradient_accumulation_steps ×
    num_mini_batches`` completions (``local_batch_size``), from ``local_batch_size / num_generations`` prompts; each of
    ``num_ppo_epochs`` epochs splits them into ``num_mini_batches`` minibatches, one optimizer step each, accumulated
    over ``gradient_accumulation_steps`` micro-batches of ``per_device_train_batch_size``. ``max_steps`` (if > 0)
    counts PPO iterations; otherwise ``total_episodes`` completions, otherwise ``num_train_epochs`` passes over the
    prompts.

    ``memory_budget`` (default ``"auto"``: the CUDA device's memory, nothing planned on CPU; ``"off"``): before the
    models load, the micro-batch (keeping ``local_mini_batch_size``) and gradient checkpointing are chosen to fit it,
    counting the policy, reference, value and reward models and the rollout's KV cache (:mod:`prefkit.memory_plan`).
    """

    # ---- TrainingArguments defaults that suit on-policy RL
    learning_rate: float | None = field(
        default=None,
        metadata={"help": "Initial AdamW learning rate. Default: 1e-4 when training a LoRA adapter (use_peft, "
                  "quantization, a PeftModel or peft_config), 1e-5 for full fine-tuning: a LoRA adapter barely moves "
                  "in a short run at full fine-tuning rates."},
    )
    logging_steps: float = field(
        default=1, metadata={"help": "Log every X PPO iterations (each one samples a whole batch, so log often)."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; default: on where the hardware supports it natively."}
    )
    model_init_kwargs: dict | str | None = field(
        default=None, metadata={"help": "Keyword arguments for from_pretrained when the model is given by name."}
    )

    # ---- Rollout
    max_completion_length: int = field(
        default=53, metadata={"help": "Maximum number of tokens generated per completion (TRL's name)."}
    )
    response_length: int | None = field(
        default=None, metadata={"help": "Deprecated alias of max_completion_length (the name in TRL's former PPOConfig)."}
    )
    max_prompt_length: int | None = field(
        default=512, metadata={"help": "Prompts longer than this many tokens keep their last tokens. None: no limit."}
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (log-probs use the same one)."})
    stop_token_ids: list[int] | None = field(
        default=None,
        metadata={"help": "Token ids that end a completion besides the tokenizer's and generation config's EOS."},
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={"help": "Subtract this from the score of completions that hit max_completion_length without EOS."},
    )
    num_generations: int = field(
        default=1, metadata={"help": "Completions sampled per prompt (RLOO and GRPO need at least 2)."}
    )
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Batch size of generation and of the no-gradient forward passes."}
    )
    ds3_gather_for_generation: bool = field(
        default=True, metadata={"help": "Gather DeepSpeed ZeRO-3 weights for generation (faster, more memory)."}
    )

    # ---- Rollout engine
    rollout_engine: str = field(
        default="hf",
        metadata={
            "help": "What samples the completions: 'hf' (transformers' generate on the policy itself) or 'server' "
            "(an OpenAI-compatible completions server such as `vllm serve --enable-lora` at rollout_url; needs "
            "LoRA: each iteration the policy's adapter is saved and loaded into the server).",
            "choices": list(ROLLOUT_ENGINES),
        },
    )
    rollout_url: str | None = field(
        default=None, metadata={"help": "API root of the rollout server (rollout_engine='server'), e.g. http://localhost:8000/v1."}
    )
    rollout_model: str | None = field(
        default=None,
        metadata={"help": "Name of the base model the server serves (vllm serve's model or --served-model-name). "
                  "Default: the one base model the server lists."},
    )
    rollout_timeout: float = field(
        default=600.0,
        metadata={"help": "Seconds each call to the rollout server may wait (to connect, and for each read of the answer)."},
    )
    rollout_retries: int = field(
        default=3,
        metadata={"help": "Further attempts after a failed call to the rollout server (connection error, timeout, HTTP "
                  "408/429/5xx), with exponential backoff; then training stops with an error after a checkpoint."},
    )
    rollout_adapter_dir: str | None = field(
        default=None,
        metadata={"help": "Folder the policy's LoRA adapter is saved to each iteration for the server to load; the "
                  "server must be able to read it (same machine or shared storage). Default: <output_dir>/rollout_adapters."},
    )
    rollout_is_cap: float | None = field(
        default=2.0,
        metadata={"help": "Truncated importance sampling (Yao et al. 2025): weight the policy loss by min(pi_old / "
                  "pi_sampler, cap) per token, correcting for the server's log-probs differing from the trainer's. "
                  "None: no correction. Has no effect with rollout_engine='hf', whose sampler is the policy itself."},
    )

    # ---- Batches and epochs
    num_mini_batches: int = field(default=1, metadata={"help": "Minibatches (optimizer steps) per PPO epoch."})
    num_ppo_epochs: int = field(default=4, metadata={"help": "Epochs over each rollout batch."})
    total_episodes: int | None = field(
        default=None, metadata={"help": "Completions to train on in total (instead of num_train_epochs)."}
    )

    # ---- Objective
    loss_type: str = field(
        default="clip",
        metadata={
            "help": "Policy objective: 'clip' (PPO-Clip) or 'kl_penalty' (PPO-KL-penalty: rho*A - beta*KL to the "
            "reference, no clipping).",
            "choices": list(LOSS_TYPES),
        },
    )
    advantage_estimator: str = field(
        default="gae",
        metadata={
            "help": "'gae' (token-level, with a value model), 'reinforce' (return minus a baseline), 'rloo' "
            "(leave-one-out over num_generations samples) or 'grpo' (group-normalized).",
            "choices": list(ADVANTAGE_ESTIMATORS),
        },
    )
    cliprange: float = field(default=0.2, metadata={"help": "PPO-Clip epsilon: ratios are clipped to [1-eps, 1+eps]."})
    kl_placement: str | None = field(
        default=None,
        metadata={
            "help": "Where the KL to the reference enters the objective, counted once by default: 'reward' "
            "(-kl_coef * KL_t in every token's reward, as InstructGPT), 'loss' (+kl_penalty_coef * KL in the policy "
            "loss, as the PPO paper's sec. 4 and the GRPO paper) or 'both'. Default: 'loss' for "
            "loss_type='kl_penalty' or advantage_estimator='grpo', 'reward' otherwise.",
            "choices": list(KL_PLACEMENTS),
        },
    )
    kl_coef: float = field(
        default=0.05,
        metadata={"help": "beta_ref: weight of the per-token KL to the reference in the reward (kl_placement 'reward' or 'both')."},
    )
    kl_estimator: str = field(
        default="k1",
        metadata={"help": "Estimator of the reward's per-token KL: 'k1' (log ratio) or 'k3' (non-negative).", "choices": ["k1", "k3"]},
    )
    kl_penalty_coef: float | None = field(
        default=None,
        metadata={
            "help": "beta: weight of the KL penalty in the loss (kl_placement 'loss' or 'both'). Default: 0.04 with "
            "advantage_estimator='grpo' (the GRPO paper's), 0.1 otherwise."
        },
    )
    kl_penalty_estimator: str = field(
        default="k3",
        metadata={
            "help": "Per-token penalty in the loss: 'k3' (its gradient is that of KL(ref || policy)) or "
            "'k2' (gradient of KL(policy || ref)).",
            "choices": ["k2", "k3"],
        },
    )
    kl_penalty_importance_weight: bool = field(
        default=True,
        metadata={
            "help": "Weight the loss's KL penalty by the (stop-gradient) ratio pi/pi_old, so that its gradient is "
            "that of the KL on every minibatch, not only the first (on-policy) one. False: the GRPO paper's form."
        },
    )
    adaptive_kl: bool = field(
        default=False,
        metadata={
            "help": "Adapt beta towards target_kl (Ziegler et al. 2019): kl_penalty_coef when the KL is in the loss "
            "(kl_placement 'loss' or 'both'), kl_coef otherwise."
        },
    )
    target_kl: float = field(default=6.0, metadata={"help": "Target KL per completion (nats) of the adaptive controller."})
    kl_horizon: int = field(default=10000, metadata={"help": "Horizon (episodes) of the adaptive KL controller."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    value_lora_r: int | None = field(
        default=None,
        metadata={
            "help": "LoRA rank of the value adapter on the shared base (default: lora_r). A smaller rank saves "
            "its weights, gradients and AdamW state (the only memory the value model adds)."
        },
    )
    cliprange_value: float | None = field(
        default=0.2, metadata={"help": "Clip range of the value loss around the rollout values (None: unclipped)."}
    )
    whiten_rewards: bool = field(default=False, metadata={"help": "Rescale per-token rewards to unit variance."})
    whiten_advantages: bool | None = field(
        default=None,
        metadata={
            "help": "Normalize advantages over the batch. Default: on for gae/reinforce, off for rloo/grpo. For "
            "REINFORCE it only rescales (divides by the std of the returns), so that the baseline still centres them."
        },
    )
    reinforce_baseline: str = field(
        default="running",
        metadata={"help": "REINFORCE baseline: 'running' (moving average of past returns) or 'batch' (batch mean).", "choices": ["running", "batch"]},
    )
    baseline_momentum: float = field(default=0.9, metadata={"help": "Momentum of the running REINFORCE baseline."})
    grpo_scale_rewards: bool = field(
        default=True, metadata={"help": "GRPO: divide by the group's standard deviation (False: Dr. GRPO)."}
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "Weights of several reward functions (default: all 1)."}
    )

    # ---- Several processes
    sync_check_steps: int | None = field(
        default=None,
        metadata={
            "help": "With several processes: also check every N PPO iterations that every process holds the same "
            "trainable weights (policy adapter, value adapter and head), by gathering one checksum per tensor. The check "
            "always runs before each checkpoint and at the end of training; a mismatch stops training with the name of "
            "the first differing tensor. None: only then."
        },
    )

    # ---- Samples
    log_completions: bool = field(default=True, metadata={"help": "Log sample completions as a table."})
    log_completions_steps: int = field(default=10, metadata={"help": "Log sample completions every N iterations."})
    num_completions_to_log: int = field(default=8, metadata={"help": "Completions per sample table."})

    # ---- Memory
    logprob_chunk_size: int | None = field(
        default=1024,
        metadata={
            "help": "Tokens per chunk when the policy and reference log-probs go from the last hidden state through "
            "the output head: the [batch, time, vocab] logits are never held (same numbers). None or 0: full logits."
        },
    )

    def __post_init__(self):
        self._apply_prefkit_defaults()
        self._check_policy_eval_fields()
        if self.response_length is not None:
            warnings.warn(
                "PPOConfig(response_length=...) is deprecated: use max_completion_length (TRL's name).",
                FutureWarning,
                stacklevel=3,
            )
            self.max_completion_length, self.response_length = self.response_length, None
        self._resolve_learning_rate(FULL_LEARNING_RATE)  # LORA_LEARNING_RATE under LoRA
        if isinstance(self.model_init_kwargs, str):
            self.model_init_kwargs = json.loads(self.model_init_kwargs)
        super().__post_init__()
        self._check_ppo_fields()

    def _check_ppo_fields(self) -> None:
        problems = []
        for check in (lambda: check_logprob_chunk_size(self.logprob_chunk_size), self._check_memory_budget):
            try:
                check()
            except ValueError as error:
                problems.append(str(error))
        if self.loss_type not in LOSS_TYPES:
            problems.append(f"loss_type={self.loss_type!r}: use one of {list(LOSS_TYPES)}")
        if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
            problems.append(f"advantage_estimator={self.advantage_estimator!r}: use one of {list(ADVANTAGE_ESTIMATORS)}")
        if self.kl_estimator not in ("k1", "k3"):
            problems.append(f"kl_estimator={self.kl_estimator!r}: use 'k1' or 'k3'")
        if self.kl_penalty_estimator not in ("k2", "k3"):
            problems.append(
                f"kl_penalty_estimator={self.kl_penalty_estimator!r}: use 'k3' or 'k2' (k1's gradient is zero in expectation)"
            )
        if self.kl_placement is not None and self.kl_placement not in KL_PLACEMENTS:
            problems.append(f"kl_placement={self.kl_placement!r}: use one of {list(KL_PLACEMENTS)}")
        if self.loss_type == "kl_penalty" and self.kl_placement == "reward":
            problems.append(
                "loss_type='kl_penalty' with kl_placement='reward' is an unclipped policy gradient with no penalty in "
                "the loss to keep it near the reference: use kl_placement 'loss' (the default) or 'both'"
            )
        if self.reinforce_baseline not in ("running", "batch"):
            problems.append(f"reinforce_baseline={self.reinforce_baseline!r}: use 'running' or 'batch'")
        if self.num_generations < 1:
            problems.append(f"num_generations={self.num_generations}: must be at least 1")
        elif self.advantage_estimator in ("rloo", "grpo") and self.num_generations < 2:
            problems.append(
                f"advantage_estimator={self.advantage_estimator!r} compares several completions of the same prompt, so "
                f"it needs num_generations >= 2 (got {self.num_generations}); e.g. --num_generations 4"
            )
        if self.num_mini_batches < 1 or self.num_ppo_epochs < 1:
            problems.append("num_mini_batches and num_ppo_epochs must be at least 1")
        elif self.num_generations >= 1 and self.local_batch_size % self.num_generations:
            problems.append(
                f"the rollout batch (per_device_train_batch_size × gradient_accumulation_steps × num_mini_batches = "
                f"{self.local_batch_size}) must be a multiple of num_generations={self.num_generations}"
            )
        if self.max_completion_length < 1:
            problems.append(f"max_completion_length={self.max_completion_length}: must be at least 1")
        if not self.temperature > 0:
            problems.append(f"temperature={self.temperature}: must be > 0")
        if not self.cliprange > 0:
            problems.append(f"cliprange={self.cliprange}: must be > 0")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            problems.append(f"gamma={self.gamma}, lam={self.lam}: both must be in [0, 1]")
        if self.adaptive_kl and not (self.target_kl > 0 and self.kl_horizon > 0):
            problems.append(f"adaptive_kl needs target_kl > 0 and kl_horizon > 0 (got {self.target_kl}, {self.kl_horizon})")
        if not 0 <= self.baseline_momentum < 1:
            problems.append(f"baseline_momentum={self.baseline_momentum}: must be in [0, 1)")
        if self.sync_check_steps is not None and self.sync_check_steps < 1:
            problems.append(
                f"sync_check_steps={self.sync_check_steps}: give a number of PPO iterations >= 1, or None to check only "
                "before each checkpoint and at the end"
            )
        if self.rollout_engine not in ROLLOUT_ENGINES:
            problems.append(f"rollout_engine={self.rollout_engine!r}: use one of {list(ROLLOUT_ENGINES)}")
        elif self.rollout_engine == "server" and not self.rollout_url:
            problems.append("rollout_engine='server' needs rollout_url, the server's API root (e.g. http://localhost:8000/v1)")
        elif self.rollout_engine == "hf" and self.rollout_url:
            problems.append(
                f"rollout_url={self.rollout_url!r} is set but rollout_engine='hf' samples locally: add "
                "--rollout_engine server to sample on that server, or drop rollout_url"
            )
        if self.rollout_url and not self.rollout_url.startswith(("http://", "https://")):
            problems.append(f"rollout_url={self.rollout_url!r}: give an http(s) URL, e.g. http://localhost:8000/v1")
        if not self.rollout_timeout > 0:
            problems.append(f"rollout_timeout={self.rollout_timeout}: must be > 0 seconds")
        if self.rollout_retries < 0:
            problems.append(f"rollout_retries={self.rollout_retries}: must be >= 0")
        if self.rollout_is_cap is not None and not self.rollout_is_cap >= 1:
            problems.append(
                f"rollout_is_cap={self.rollout_is_cap}: must be >= 1 (a cap below 1 would shrink even tokens both "
                "engines agree on) or None to turn the correction off"
            )
        if self.eval_strategy != "no":
            problems.append(
                "PPOTrainer has no eval dataset (eval_strategy must be 'no'): for held-out evaluation give "
                "eval_prompts and eval_reward (eval/reward, eval/win_rate, eval/kl every eval_every_steps)"
            )
        if problems:
            raise ValueError("Invalid PPOConfig:\n  " + "\n  ".join(problems))
        if self.whiten_advantages is None:
            self.whiten_advantages = self.advantage_estimator in ("gae", "reinforce")
        if self.kl_placement is None:
            in_loss = self.loss_type == "kl_penalty" or self.advantage_estimator == "grpo"
            self.kl_placement = "loss" if in_loss else "reward"
        if self.kl_penalty_coef is None:
            self.kl_penalty_coef = GRPO_KL_PENALTY_COEF if self.advantage_estimator == "grpo" else KL_PENALTY_COEF

    @property
    def kl_in_reward(self) -> bool:
        """Whether the per-token reward carries -kl_coef * KL_t."""
        return self.kl_placement in ("reward", "both")

    @property
    def kl_in_loss(self) -> bool:
        """Whether the policy loss carries +kl_penalty_coef * KL (see :func:`prefkit.losses.kl_penalty`)."""
        return self.kl_placement in ("loss", "both")

    # Derived sizes (per process)
    @property
    def local_batch_size(self) -> int:
        """Completions sampled per process per PPO iteration."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_mini_batches

    @property
    def local_mini_batch_size(self) -> int:
        """Completions per optimizer step per process."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    @property
    def prompts_per_rollout(self) -> int:
        """Prompts per process per PPO iteration."""
        return self.local_batch_size // self.num_generations
