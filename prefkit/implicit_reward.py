r"""DPO's implicit reward as a scorer: :math:`\hat r(x, y) = \beta \log \pi_\theta(y \mid x) / \pi_{ref}(y \mid x)`.

A DPO-trained policy is also a reward model (Rafailov et al., 2023). :class:`ImplicitReward` scores (prompt, response)
pairs with it, anywhere prefkit takes a reward: Best-of-N, judges, PPO, TRL's ``reward_funcs``. It is inference
only; :meth:`prefkit.DPOTrainer.implicit_reward` builds one over the model being trained.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from .chat import AS_TRAINED, Prompt
from .logprobs import DEFAULT_LOGPROB_CHUNK_SIZE, check_logprob_chunk_size, completion_logps
from .losses import implicit_reward


class ImplicitReward:
    r"""DPO's implicit reward :math:`\hat r(x, y) = \beta \log \pi_\theta(y \mid x) / \pi_{ref}(y \mid x)` as a scorer.

    Args:
        model: the DPO-trained policy (a ``PeftModel`` when trained with LoRA).
        tokenizer: its tokenizer.
        ref_model: the reference. ``None`` with a ``PeftModel`` means "the base with the adapter disabled".
        beta: the β the model was trained with.
        chat_template: how a (prompt, response) pair is tokenized. Default ``"as_trained"``: exactly as
            ``trl.DPOTrainer`` (and so :class:`prefkit.DPOTrainer`) trained on it: a conversational prompt (a list of
            messages) through the chat template, a plain-string prompt as raw ``prompt + response + EOS``, so the
            score of a training pair is the ``rewards/chosen`` TRL logs for it. ``True`` renders string prompts as a
            user turn of the chat template (for a model trained on conversational rows, scored on string prompts);
            ``False`` never uses the template.
        logprob_chunk_size: completion tokens per chunk of the output head
            (:func:`prefkit.logprobs.chunked_token_logprobs`): the ``[batch, length, vocab]`` logits are never held.
            ``None`` computes the full logits instead (same scores, more memory).

    ``score(prompts, responses)`` returns one float per pair. The reward is only defined up to a prompt-dependent
    constant, so compare scores of responses to the same prompt. Instances are also callable with TRL's
    reward-function signature ``reward(prompts=..., completions=..., **kwargs) -> list[float]``.
    """

    def __init__(
        self,
        model,
        tokenizer,
        ref_model=None,
        beta: float = 0.1,
        batch_size: int = 8,
        max_length: int | None = None,
        chat_template: bool | str = AS_TRAINED,
        logprob_chunk_size: int | None = DEFAULT_LOGPROB_CHUNK_SIZE,
    ):
        if ref_model is None and not hasattr(model, "disable_adapter"):
            raise ValueError(
                "ImplicitReward needs a reference: pass ref_model, or a PeftModel whose disabled adapter is the reference."
            )
        check_logprob_chunk_size(logprob_chunk_size)
        self.model = model
        self.tokenizer = tokenizer
        self.ref_model = ref_model
        self.beta = beta
        self.batch_size = batch_size
        self.max_length = max_length
        self.chat_template = chat_template
        self.logprob_chunk_size = logprob_chunk_size
        self.__name__ = "dpo_implicit_reward"

    @classmethod
    def from_pretrained(cls, adapter_or_model: str, ref_model: str | None = None, beta: float = 0.1, **kwargs):
        """Load a DPO-trained LoRA adapter folder (its base becomes the reference) or a full model plus ``ref_model``."""
        import os

        from .models import load_model, load_policy

        if os.path.exists(os.path.join(adapter_or_model, "adapter_config.json")):
            # prefkit resolves the recorded base, so an adapter of an offline default model (recorded by its Hub id)
            # loads without the Hub too.
            model, tokenizer = load_policy(adapter_or_model)
            return cls(model, tokenizer, None, beta=beta, **kwargs)
        if ref_model is None:
            raise ValueError(f"{adapter_or_model} is a full model: pass ref_model= (the model it was trained from).")
        model, tokenizer = load_model(adapter_or_model)
        reference, _ = load_model(ref_model)
        return cls(model.eval(), tokenizer, reference.eval(), beta=beta, **kwargs)

    def _logps(self, model, prompts, responses, disable_adapter: bool) -> torch.Tensor:
        context = model.disable_adapter() if disable_adapter else contextlib.nullcontext()
        was_training = model.training
        model.eval()
        try:
            with context:
                return completion_logps(
                    model, self.tokenizer, prompts, responses, batch_size=self.batch_size, max_length=self.max_length,
                    chat_template=self.chat_template, chunk_size=self.logprob_chunk_size,
                )
        finally:
            model.train(was_training)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"Got {len(prompts)} prompts and {len(responses)} responses; they must pair up.")
        policy_logps = self._logps(self.model, prompts, responses, disable_adapter=False)
        if self.ref_model is None:
            ref_logps = self._logps(self.model, prompts, responses, disable_adapter=True)
        else:
            ref_logps = self._logps(self.ref_model, prompts, responses, disable_adapter=False)
        return implicit_reward(policy_logps, ref_logps, self.beta).tolist()

    def __call__(self, prompts=None, completions=None, **kwargs) -> list[float]:
        return self.score(prompts, completions)
