r"""Scoring (prompt, response) pairs with a trained reward model: batched, any tokenizer, usable as a TRL reward.

::

    from prefkit import RewardModel

    reward_model = RewardModel.from_pretrained("my-reward-model")        # a full model or a LoRA adapter folder
    reward_model.score(["How do I make tea?"], ["Boil water, steep the bag for three minutes."])   # -> [1.93]
    GRPOTrainer(..., reward_funcs=[reward_model.as_reward_func()])      # a TRL reward function

How a pair becomes tokens (the same function, :func:`encode_reward_input`, tokenizes the training data in
:class:`prefkit.RewardTrainer`, so a model is scored on exactly what it was trained on):

- **chat** — the tokenizer has a chat template: the prompt (a string becomes one user turn, or a list of messages)
  followed by the response as an assistant turn, rendered by the reward model's *own* template. This is what TRL
  tokenizes for conversational data; the policy that wrote the response may use a different template or tokenizer.
  A pair of plain strings is rendered this way only when ``chat_template_for_text`` is on: a model trained by
  :class:`prefkit.RewardTrainer` records in ``prefkit_reward.json`` whether it was (off by default, as
  ``trl.RewardTrainer`` trains on such pairs as text), and :meth:`RewardModel.from_pretrained` follows the record;
  a model without one (from the Hub, or trained by prefkit 0.1) is scored through its template.
- **pair** — no chat template but a ``[CLS]``/``[SEP]`` tokenizer (BERT family encoders):
  ``[CLS] prompt [SEP] response [SEP]``; the score is read from the [CLS] projection. Messages are flattened to
  ``"role: content"`` lines.
- **text** — neither: ``prompt + response + EOS`` as plain text (TRL's standard format); the score is read at the
  last token.

Inputs longer than ``max_length`` tokens (default: what the model's position embeddings allow) are truncated: in
chat and text format the *first* tokens are dropped, so the end of the response, where a decoder reads its score,
is kept; in pair format the prompt loses its start first (down to half the budget), then the response its end.
Batches are padded on the right (position ids stay those of a single example) after sorting by length, so each
batch is only as long as its longest member.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from .chat import as_messages
from .logprobs import pad_right
from .models import context_length

logger = logging.getLogger(__name__)

Prompt = str | list[dict[str, Any]]
Response = str | list[dict[str, Any]]
InputFormat = Literal["chat", "pair", "text"]
REWARD_INPUT_FILE = "prefkit_reward.json"  # how the saved model tokenized its training pairs



# --------------------------------------------------------------------------------------------------------------------
# From (prompt, response) to token ids
# --------------------------------------------------------------------------------------------------------------------


def reward_input_format(tokenizer) -> InputFormat:
    """``"chat"``, ``"pair"`` or ``"text"``: how :func:`encode_reward_input` lays out a pair for this tokenizer."""
    if getattr(tokenizer, "chat_template", None):
        return "chat"
    if getattr(tokenizer, "cls_token_id", None) is not None and getattr(tokenizer, "sep_token_id", None) is not None:
        return "pair"
    return "text"


def _as_answer(response: Response) -> list[dict[str, Any]]:
    return response if isinstance(response, list) else [{"role": "assistant", "content": response}]


def _plain(value: Prompt | Response) -> str:
    """Messages flattened to ``role: content`` lines for tokenizers without a chat template."""
    if isinstance(value, str):
        return value
    return "\n".join(f"{message['role']}: {message['content']}" for message in value)


def _keep_end(ids: list[int], max_length: int | None) -> list[int]:
    return ids if max_length is None or len(ids) <= max_length else ids[len(ids) - max_length :]


def encode_reward_input(
    tokenizer,
    prompt: Prompt | None,
    response: Response,
    *,
    max_length: int | None = None,
    tools: list | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    chat_template_for_text: bool = True,
) -> list[int]:
    """Token ids a reward model scores for ``response`` to ``prompt`` (layouts in the module docstring).

    ``prompt=None`` means ``response`` is already complete: a whole conversation, or a whole text (TRL's "implicit
    prompt" datasets). ``tools`` and ``chat_template_kwargs`` go to the chat template, as TRL passes a dataset's
    columns of those names. ``chat_template_for_text=False`` lays out a pair of plain strings as text even when the
    tokenizer has a chat template, exactly as ``trl.RewardTrainer`` tokenizes standard-format pairs.
    """
    layout = reward_input_format(tokenizer)
    text_pair = isinstance(response, str) and (prompt is None or isinstance(prompt, str))
    if layout == "chat" and not (prompt is None and isinstance(response, str)) and (chat_template_for_text or not text_pair):
        messages = ([] if prompt is None else as_messages(prompt)) + _as_answer(response)
        encoded = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, tools=tools, **(chat_template_kwargs or {})
        )
        return _keep_end(list(encoded["input_ids"]), max_length)
    if layout == "pair":
        return _encode_sentence_pair(tokenizer, None if prompt is None else _plain(prompt), _plain(response), max_length)
    # Plain text, exactly as TRL tokenizes standard-format data: prompt + response + EOS, the tokenizer's own
    # special tokens (e.g. BOS) included.
    text = (_plain(prompt) if prompt is not None else "") + _plain(response)
    eos = tokenizer.eos_token
    if eos and not text.endswith(eos):
        text += eos
    return _keep_end(list(tokenizer(text)["input_ids"]), max_length)


def _encode_sentence_pair(tokenizer, prompt: str | None, response: str, max_length: int | None) -> list[int]:
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if prompt is None:
        budget = None if max_length is None else max(max_length - 2, 0)
        return [cls_id, *response_ids[:budget], sep_id]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if max_length is not None:
        budget = max(max_length - 3, 0)
        if len(prompt_ids) + len(response_ids) > budget:
            # The prompt keeps its end (the question closest to the answer), and at least half the budget if needed;
            # the response keeps its start.
            prompt_budget = max(budget - len(response_ids), min(len(prompt_ids), budget // 2))
            prompt_ids = prompt_ids[len(prompt_ids) - prompt_budget :] if prompt_budget > 0 else []
            response_ids = response_ids[: budget - len(prompt_ids)]
    return [cls_id, *prompt_ids, sep_id, *response_ids, sep_id]


# --------------------------------------------------------------------------------------------------------------------
# Input checks: what a caller gets wrong, said before any forward pass
# --------------------------------------------------------------------------------------------------------------------


def _check_messages(value: Any, what: str, index: int) -> None:
    if not value:
        raise ValueError(f"{what}[{index}] is an empty list of messages; expected at least one message.")
    for turn, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise TypeError(
                f"{what}[{index}], message {turn} is {message!r:.60}; expected {{'role': ..., 'content': ...}}."
            )
        if not isinstance(message["content"], str):
            raise TypeError(
                f"{what}[{index}], message {turn} has content of type {type(message['content']).__name__}; "
                "expected text."
            )


def _check_inputs(prompts: Any, responses: Any) -> tuple[list | None, list]:
    for what, value in (("responses", responses), ("prompts", prompts)):
        if what == "prompts" and value is None:
            continue
        if isinstance(value, (str, bytes, Mapping)) or not (hasattr(value, "__len__") and hasattr(value, "__iter__")):
            raise TypeError(
                f"{what} must be a list (one entry per pair), got a {type(value).__name__}. "
                f"To score one pair, wrap it: score([prompt], [response])."
            )
    if len(responses) == 0:
        raise ValueError("score() got no responses: pass at least one (prompt, response) pair.")
    if prompts is not None and len(prompts) != len(responses):
        raise ValueError(
            f"Got {len(prompts)} prompts and {len(responses)} responses; they must pair up one to one "
            "(repeat a prompt for each of its responses)."
        )
    for index, response in enumerate(responses):
        if isinstance(response, list):
            _check_messages(response, "responses", index)
        elif not isinstance(response, str):
            raise TypeError(
                f"responses[{index}] is a {type(response).__name__} ({response!r:.60}); expected text or a list of "
                "assistant messages."
            )
    for index, prompt in enumerate(prompts or []):
        if isinstance(prompt, list):
            _check_messages(prompt, "prompts", index)
        elif not isinstance(prompt, str):
            raise TypeError(
                f"prompts[{index}] is a {type(prompt).__name__} ({prompt!r:.60}); expected text or a list of messages."
            )
    return (None if prompts is None else list(prompts)), list(responses)


# --------------------------------------------------------------------------------------------------------------------
# RewardModel
# --------------------------------------------------------------------------------------------------------------------


class RewardModel:
    """A sequence-classification reward model (``num_labels=1``) with its tokenizer, ready to score pairs.

    Args:
        model: an ``AutoModelForSequenceClassification`` with one label, or a ``PeftModel`` around one (e.g. the
            model a :class:`prefkit.RewardTrainer` is training).
        tokenizer: its tokenizer. A pad token is set when missing and its id mirrored onto the model's config, so a
            batch reads each sequence's real last token (without this, reward models stall at 50% accuracy).
        batch_size: default batch size of :meth:`score`.
        max_length: default truncation length of :meth:`score` (``None``: the model's position limit).

    ``reward_model(prompts, responses)`` is ``reward_model.score(prompts, responses)``; it also accepts TRL's
    keyword form ``reward_model(prompts=..., completions=...)``. :meth:`as_reward_func` returns a named function
    for TRL's ``reward_funcs``.
    """

    def __init__(
        self, model, tokenizer, *, batch_size: int = 16, max_length: int | None = None, chat_template_for_text: bool = True
    ):
        from .models import ensure_pad_token

        config = model.config
        if getattr(config, "num_labels", 1) != 1:
            raise ValueError(
                f"The model has num_labels={config.num_labels}; a reward model outputs one scalar (num_labels=1)."
            )
        ensure_pad_token(tokenizer, _base_model(model))
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.chat_template_for_text = chat_template_for_text
        self.__name__ = "reward_model"

    # -- loading -------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        device: str | torch.device | None = None,
        dtype: Any = None,
        trust_remote_code: bool = False,
        *,
        quantization: Literal["4bit", "8bit"] | None = None,
        revision: str | None = None,
        base_model: str | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
    ) -> RewardModel:
        """Load a reward model from a folder or the Hub.

        Args:
            path_or_id: a full sequence-classification checkpoint, or a LoRA adapter folder/repo whose
                ``adapter_config.json`` names its base (the base is loaded, then the adapter and the trained head
                saved with it).
            device: where to run (default: CUDA when available, else CPU).
            dtype: weight dtype (default: bf16 on a bf16-capable GPU, float32 otherwise).
            quantization: load the weights (the base, for an adapter) in ``"4bit"`` or ``"8bit"``.
            base_model: for an adapter, load this base instead of the one its config names (e.g. a local copy).
        """
        from .models import load_model, load_tokenizer, resolve_model_path

        name = os.fspath(path_or_id)
        path = resolve_model_path(name, revision)
        adapter_config = _read_json(path, "adapter_config.json", revision)
        load_kwargs = dict(dtype=dtype or "auto", trust_remote_code=trust_remote_code, quantization=quantization)
        if adapter_config is not None:
            task_type = adapter_config.get("task_type")
            if task_type not in ("SEQ_CLS", None):
                raise ValueError(
                    f"{name} is a {task_type} adapter, not a reward model (expected task_type SEQ_CLS). Reward models "
                    "are trained with prefkit.RewardTrainer or `prefkit reward`."
                )
            base = base_model or adapter_config.get("base_model_name_or_path")
            if not base:
                raise ValueError(f"{name}/adapter_config.json names no base model; pass base_model=.")
            if os.path.isabs(base) and not os.path.isdir(base):
                raise FileNotFoundError(
                    f"The adapter {name} was trained on the local model {base}, which no longer exists. Pass "
                    "base_model= with the folder or Hub id of that model."
                )
            from .quiet import head_loaded_from_adapter

            with head_loaded_from_adapter():  # the adapter's trained head replaces the new one below
                model, base_tokenizer = load_model(base, task="sequence-classification", revision=None, **load_kwargs)
            try:
                tokenizer = load_tokenizer(path, padding_side="right", revision=revision, trust_remote_code=trust_remote_code)
            except (OSError, ValueError):  # the adapter was saved without its tokenizer
                tokenizer = base_tokenizer
            if len(tokenizer) > model.get_input_embeddings().num_embeddings:
                model.resize_token_embeddings(len(tokenizer))
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, path, revision=revision)
        else:
            _check_is_reward_checkpoint(name, path, revision)
            model, tokenizer = load_model(
                path, task="sequence-classification", revision=revision, tokenizer_padding_side="right", **load_kwargs
            )
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        from .models import is_quantized

        if not is_quantized(model) and getattr(model, "hf_device_map", None) is None:
            model = model.to(device)
        model.eval()
        record = _read_json(path, REWARD_INPUT_FILE, revision) or {}
        return cls(
            model, tokenizer, batch_size=batch_size, max_length=max_length,
            chat_template_for_text=record.get("chat_template_for_text", True),
        )

    # -- properties ----------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def input_format(self) -> InputFormat:
        """How pairs are laid out for this model's tokenizer (see the module docstring)."""
        return reward_input_format(self.tokenizer)

    @property
    def name_or_path(self) -> str:
        from .models import model_id

        return model_id(self.model)

    # -- scoring -------------------------------------------------------------------------------------------------

    def encode(self, prompt: Prompt | None, response: Response, max_length: int | None = None) -> list[int]:
        """The token ids :meth:`score` feeds the model for one pair."""
        limit = max_length or self.max_length or context_length(self.model, self.tokenizer)
        return encode_reward_input(
            self.tokenizer, prompt, response, max_length=limit, chat_template_for_text=self.chat_template_for_text
        )

    def score(
        self,
        prompts: Sequence[Prompt] | None,
        responses: Sequence[Response],
        batch_size: int | None = None,
        max_length: int | None = None,
    ) -> list[float]:
        """One reward per (prompt, response) pair, in input order.

        Args:
            prompts: strings or lists of messages; ``None`` when ``responses`` are complete conversations/texts.
            responses: strings, or lists of assistant messages (TRL's conversational completions).
            batch_size: pairs per forward pass (default: the instance's ``batch_size``).
            max_length: truncation length in tokens (module docstring says which tokens go).

        Raises:
            TypeError / ValueError: with the index of the offending entry, for non-list arguments, no pairs,
                mismatched lengths, or entries that are neither text nor messages.
        """
        prompts, responses = _check_inputs(prompts, responses)
        batch_size = batch_size or self.batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        encoded = [
            self.encode(None if prompts is None else prompts[i], responses[i], max_length) for i in range(len(responses))
        ]
        return self._score_ids(encoded, batch_size)

    @torch.no_grad()
    def _score_ids(self, encoded: list[list[int]], batch_size: int) -> list[float]:
        # Longest first: batches hold similar lengths, and an out-of-memory error shows up on the first batch.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
        scores = [0.0] * len(encoded)
        device = self.device
        was_training = self.model.training
        self.model.eval()
        try:
            with _autocast_for(self.model, device), no_cpu_weight_packing(self.model):
                for start in range(0, len(order), batch_size):
                    rows = order[start : start + batch_size]
                    input_ids, attention_mask = pad_right([encoded[i] for i in rows], self.tokenizer.pad_token_id)
                    outputs = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
                    for row, value in zip(rows, outputs.logits[:, 0].float().tolist()):
                        scores[row] = value
        finally:
            self.model.train(was_training)
        return scores

    def __call__(self, prompts=None, responses=None, **kwargs) -> list[float]:
        if responses is None:
            responses = kwargs.get("completions")
        if responses is None:
            raise TypeError("Pass responses: reward_model(prompts, responses) or reward_model(prompts=..., completions=...).")
        return self.score(prompts, responses)

    def as_reward_func(self, batch_size: int | None = None, name: str | None = None) -> RewardModelFunc:
        """A reward function for TRL's ``GRPOTrainer`` / ``RLOOTrainer`` (``reward_funcs=[...]``).

        It has TRL's signature ``f(prompts, completions, **kwargs) -> list[float]`` and takes standard (text) or
        conversational (message-list) prompts and completions. ``name`` (default ``"reward_model"``) is what TRL
        logs the reward under, e.g. ``rewards/reward_model/mean``.
        """
        return RewardModelFunc(self, batch_size=batch_size, name=name or "reward_model")

    def __repr__(self) -> str:
        return f"RewardModel({self.name_or_path!r}, format={self.input_format!r}, device={self.device})"


class RewardModelFunc:
    """``f(prompts, completions, **kwargs) -> list[float]`` over a :class:`RewardModel` (TRL's reward signature).

    A class rather than a closure so that ``__name__`` is an attribute TRL can read, and so it can be inspected.
    """

    def __init__(self, reward_model: RewardModel, batch_size: int | None = None, name: str = "reward_model"):
        self.reward_model = reward_model
        self.batch_size = batch_size
        self.__name__ = name

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        return self.reward_model.score(prompts, completions, batch_size=self.batch_size)

    def __repr__(self) -> str:
        return f"RewardModelFunc({self.__name__!r}, {self.reward_model!r})"


def _base_model(model):
    """The transformers model under a PeftModel (whose config the pad token id must reach)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _autocast_for(model, device: torch.device):
    """bf16/fp16 autocast when a model mixes float dtypes (QLoRA trained under autocast: fp32 norms, bf16 adapters),
    a no-op otherwise."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    low = [d for d in (torch.bfloat16, torch.float16) if d in dtypes]
    if len(dtypes) > 1 and low:
        return torch.autocast(device_type=device.type, dtype=low[0])
    return contextlib.nullcontext()


@contextlib.contextmanager
def no_cpu_weight_packing(model):
    """Keep bitsandbytes from repacking 4-bit weights for its CPU inference kernel while scoring.

    On CPUs with AVX512-BF16, the first no-grad forward of a ``Linear4bit`` converts its weights in place to a packed
    layout, and saving converts them back only approximately (``_convert_weight_packed_for_cpu_inverse`` is
    "best-effort"): a QLoRA model scored and then saved would drift from the one that reloads. Scoring through the
    regular kernel keeps the weights exactly as trained.
    """
    saved = {m: m.support_avx512bf16_for_cpu for m in model.modules() if getattr(m, "support_avx512bf16_for_cpu", False)}
    for module in saved:
        module.support_avx512bf16_for_cpu = False
    try:
        yield
    finally:
        for module, value in saved.items():
            module.support_avx512bf16_for_cpu = value


def write_reward_input_record(output_dir: str | os.PathLike, chat_template_for_text: bool) -> None:
    """Record in ``output_dir`` how the reward model saved there tokenized its training pairs (read back by
    :meth:`RewardModel.from_pretrained`, so a model is scored on the layout it was trained on)."""
    with open(os.path.join(output_dir, REWARD_INPUT_FILE), "w", encoding="utf-8") as f:
        json.dump({"chat_template_for_text": bool(chat_template_for_text)}, f, indent=2)
        f.write("\n")


def _read_json(path: str, filename: str, revision: str | None) -> dict | None:
    """``filename`` of a local folder or Hub repo as a dict, or None when it does not exist."""
    if os.path.isdir(path):
        file = os.path.join(path, filename)
    else:
        try:
            from huggingface_hub import hf_hub_download

            file = hf_hub_download(path, filename, revision=revision)
        except Exception:  # no such file, or the Hub is unreachable (the model load then says why)
            return None
    if not os.path.isfile(file):
        return None
    with open(file, encoding="utf-8") as f:
        return json.load(f)


def _check_is_reward_checkpoint(name: str, path: str, revision: str | None) -> None:
    """Refuse a checkpoint without a trained scoring head: loading it would give a random head and random scores."""
    config = _read_json(path, "config.json", revision)
    if config is None:
        return  # let from_pretrained say what is missing
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(
            f"{name} is a {architectures[0]} checkpoint, not a reward model: it has no trained scoring head, so its "
            "scores would be random. Train a reward model from it first (prefkit.RewardTrainer or `prefkit reward "
            f"--model_name_or_path {name} --dataset_name pairs.jsonl`), then load the result."
        )
    if config.get("num_labels", len(config.get("id2label") or {0: 0})) != 1:
        raise ValueError(f"{name} is a classifier with {len(config.get('id2label', {}))} labels; a reward model has one.")
