r"""A rollout engine on an OpenAI-compatible completions server: vLLM's ``vllm serve --enable-lora`` is the target.

:class:`ServerSampler` follows :class:`prefkit.sampling.RolloutEngine`: ``generate`` returns the same
:class:`prefkit.sampling.Samples` as :class:`prefkit.sampling.HFSampler` (prompt and completion ids, masks, stop flags,
texts, and the server's log-probs of the sampled tokens as ``logprobs``), and ``update_weights(policy)`` ships a PEFT
policy's LoRA adapter to the server. The base weights (bf16 or 4-bit on the trainer's side) are never merged or sent.

What goes over the wire (all JSON over HTTP, ``urllib`` only):

- ``GET  /v1/models``: which models the server serves (checked once, before anything is loaded);
- ``POST /v1/completions``: prompts as lists of token ids (rendered and truncated here, exactly as HFSampler does, so
  the trainer's forward pass sees the very tokens the server sampled from), ``n``, ``max_tokens``, ``temperature``,
  ``top_p=1``, ``top_k=-1``, ``min_p=0``, ``repetition_penalty=1`` (so the model's generation config cannot reshape the
  distribution), ``stop_token_ids``, ``logprobs``, ``return_tokens_as_token_ids=True`` (tokens come back as
  ``"token_id:<id>"``) and optionally ``seed``;
- ``POST /v1/load_lora_adapter`` / ``POST /v1/unload_lora_adapter``: vLLM's runtime LoRA endpoints, present when the
  server runs with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``.

Every call has a timeout and a bounded number of retries with exponential backoff (connection failures, timeouts,
HTTP 408/429/5xx); then it raises :class:`RolloutServerError`, which says what failed and what to check. A server
that answers something unusable (not JSON, no log-probs, the wrong number of completions) raises at once.

vLLM returns log-probs of the *raw* model distribution unless started with ``--logprobs-mode processed_logprobs``;
the PPO ratios need those of the sampling distribution (after temperature), so start it with that flag.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .chat import Prompt
from .sampling import EncodedPrompts, Samples, Truncation, completion_mask, encode_prompts, pad_left, stop_token_ids

__all__ = ["CompletionsClient", "RolloutServerError", "ServerSampler"]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
LORA_HINT = (
    "Start vLLM with runtime LoRA loading: VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve BASE --enable-lora "
    "--max-lora-rank R (R at least the policy's lora_r)."
)


class RolloutServerError(ConnectionError):
    """The rollout server could not be reached in time, refused a request, or answered something unusable (a
    ``ConnectionError``, so ``prefkit`` commands print its message as an ``error:`` line)."""


# --------------------------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------------------------


class CompletionsClient:
    """JSON over HTTP to an OpenAI-compatible server, with a timeout and bounded retries on every call.

    Args:
        url: the API root, e.g. ``http://host:8000/v1`` (``/v1`` is added when the URL has no path).
        timeout: seconds each call may wait for the server: to connect, and for each read of the answer.
        retries: further attempts after a connection failure, a timeout or HTTP 408/429/5xx; each waits
            ``backoff * 2**attempt`` seconds (at most 30) first. Other HTTP errors are not retried.
        api_key: sent as ``Authorization: Bearer ...`` (vLLM's ``--api-key``); never logged.
    """

    def __init__(self, url: str, *, timeout: float = 600.0, retries: int = 3, backoff: float = 1.0,
                 api_key: str | None = None):
        parsed = urllib.parse.urlparse(url or "")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"rollout_url={url!r} is not an http(s) URL; give the server's API root, e.g. http://localhost:8000/v1.")
        path = parsed.path.rstrip("/") or "/v1"
        self.base_url = urllib.parse.urlunparse((parsed.scheme, parsed.netloc, path, "", "", ""))
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds; got {timeout!r}.")
        if not (isinstance(retries, int) and retries >= 0):
            raise ValueError(f"retries must be an integer >= 0; got {retries!r}.")
        self.timeout, self.retries, self.backoff = float(timeout), retries, float(backoff)
        self._api_key = api_key

    def __repr__(self) -> str:
        return f"CompletionsClient({self.base_url!r}, timeout={self.timeout:g}, retries={self.retries})"

    def request(self, method: str, path: str, payload: dict | None = None, *, expect_json: bool = True) -> Any:
        """``method`` ``path`` (relative to the API root) with a JSON ``payload``; the parsed JSON answer (or the text
        when ``expect_json`` is False). Raises :class:`RolloutServerError` once the retries are spent."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 30.0))
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    body = response.read()
                break
            except urllib.error.HTTPError as error:
                message = _error_message(error.read())
                if error.code in RETRY_STATUSES:
                    problem = f"HTTP {error.code}: {message}"
                    continue
                hint = f" {LORA_HINT}" if error.code in (404, 405) and "lora_adapter" in path else ""
                raise RolloutServerError(f"{method} {url} was refused with HTTP {error.code}: {message}.{hint}") from None
            except (urllib.error.URLError, http.client.HTTPException, socket.timeout, TimeoutError, OSError) as error:
                reason = getattr(error, "reason", None) or error
                problem = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
        else:
            raise RolloutServerError(
                f"The rollout server did not answer {method} {url} after {self.retries + 1} attempt(s) "
                f"({self.timeout:g} s timeout each): {problem}. Check that the server is running and reachable from "
                "here (rollout_url), or raise rollout_timeout / rollout_retries for a slow one."
            )
        text = body.decode("utf-8", errors="replace")
        if not expect_json:
            return text
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise RolloutServerError(
                f"{method} {url} answered with a body that is not JSON (starts {text[:200]!r}). Is rollout_url the "
                "API root of an OpenAI-compatible server (e.g. http://host:8000/v1)?"
            ) from None

    def models(self) -> list[dict]:
        """``GET /models``: the served models, each a dict with at least ``id``."""
        answer = self.request("GET", "models")
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
            raise RolloutServerError(
                f"GET {self.base_url}/models did not list models as {{'data': [{{'id': ...}}, ...]}}; got {str(answer)[:200]!r}."
            )
        return data

    def check_model(self, model: str | None = None) -> str:
        """The served base model to sample from: ``model`` if the server lists it, else the one model it lists
        without a ``parent`` (LoRA adapters have one). Raises with the list when that is ambiguous or absent."""
        served = self.models()
        names = [m["id"] for m in served]
        if model is not None:
            if model not in names:
                raise RolloutServerError(
                    f"The rollout server at {self.base_url} does not serve rollout_model={model!r}; it serves {names}. "
                    "Pass the name given to vllm serve (or its --served-model-name)."
                )
            return model
        bases = [m["id"] for m in served if not m.get("parent")]
        if len(bases) != 1:
            raise RolloutServerError(
                f"The rollout server at {self.base_url} serves {names}: set rollout_model to the base model the policy "
                "was loaded from."
            )
        return bases[0]

    def load_adapter(self, name: str, path: str) -> None:
        """``POST /load_lora_adapter``: the server reads the adapter folder ``path`` (it must see that path)."""
        self.request("POST", "load_lora_adapter", {"lora_name": name, "lora_path": path}, expect_json=False)

    def unload_adapter(self, name: str) -> None:
        """``POST /unload_lora_adapter``."""
        self.request("POST", "unload_lora_adapter", {"lora_name": name}, expect_json=False)


def _error_message(body: bytes) -> str:
    """The message of an error answer: OpenAI's ``{"error": {"message": ...}}``, FastAPI's ``{"detail": ...}``, or
    the start of the text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        return text[:300] or "(empty answer)"
    if isinstance(answer, dict):
        error = answer.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        for key in ("message", "detail", "error"):
            if answer.get(key):
                return str(answer[key])[:300]
    return text[:300]


# --------------------------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------------------------


class ServerSampler:
    """Samples on an OpenAI-compatible completions server; a :class:`prefkit.sampling.RolloutEngine`.

    Args:
        client: a :class:`CompletionsClient`, or the server's URL.
        tokenizer: the policy's tokenizer (prompts are rendered and tokenized here; completions decoded here).
        model: the served base model's name (default: the one base model the server lists).
        stop_ids: ids that end a completion (default: the tokenizer's EOS); sent as ``stop_token_ids``, and the
            completion mask ends at the first one, which is kept.
        context_length: the model's context, to budget prompts as :class:`prefkit.sampling.HFSampler` does.
        adapter_dir: where :meth:`update_weights` writes adapters; the server must be able to read this path (same
            machine, or a shared file system). Default: a ``prefkit-rollout-adapters`` folder in the working directory.
        adapter_name: the PEFT adapter of the policy to ship.
        is_main_process, broadcast: in a run with several processes, only the main one saves and loads adapters;
            ``broadcast(obj)`` must return the main process's ``obj`` on every process (so all sample from the same
            adapter and all raise if loading failed).
    """

    def __init__(self, client: CompletionsClient | str, tokenizer, *, model: str | None = None,
                 stop_ids: Sequence[int] | None = None, context_length: int | None = None,
                 adapter_dir: str | None = None, adapter_name: str = "default", is_main_process: bool = True,
                 broadcast: Callable[[Any], Any] | None = None):
        self.client = client if isinstance(client, CompletionsClient) else CompletionsClient(client)
        self.tokenizer = tokenizer
        self.base_model = self.client.check_model(model)
        self.stop_ids = sorted(set(stop_ids)) if stop_ids is not None else stop_token_ids(None, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError("The tokenizer has neither a pad nor an EOS token; load it with prefkit.load_model or set one.")
        self.context_length = context_length
        self.adapter_dir = os.path.abspath(adapter_dir or "prefkit-rollout-adapters")
        self.adapter_name = adapter_name
        self.is_main_process = is_main_process
        self.broadcast = broadcast or (lambda obj: obj)
        self.served_model = self.base_model  # what completions are requested from: the base, then the latest adapter
        self.version = 0
        self._run_id = self.broadcast(uuid.uuid4().hex[:8])

    # ---- weights
    def update_weights(self, policy) -> str:
        """Make the server sample from ``policy`` (a ``peft.PeftModel``): save its LoRA adapter to a new folder in
        ``adapter_dir``, load it into the server under a new name, then unload and delete the previous one. Returns
        the name completions are now requested from."""
        if not (hasattr(policy, "peft_config") and hasattr(policy, "save_pretrained")):
            raise TypeError(
                f"update_weights needs a peft.PeftModel (its LoRA adapter is what the server loads); got {type(policy).__name__}."
            )
        self.version += 1
        name = f"prefkit-{self._run_id}-{self.version}"
        failure = None
        if self.is_main_process:
            folder = os.path.join(self.adapter_dir, name)
            try:
                policy.save_pretrained(folder, selected_adapters=[self.adapter_name])
                if self.adapter_name != "default":  # PEFT writes non-default adapters to a subfolder
                    folder = os.path.join(folder, self.adapter_name)
                self.client.load_adapter(name, folder)
                previous = self.served_model
                if previous != self.base_model:
                    self.client.unload_adapter(previous)
                    shutil.rmtree(os.path.join(self.adapter_dir, previous), ignore_errors=True)
            except OSError as error:  # a RolloutServerError, or a disk that cannot take the adapter
                failure = f"Loading the policy's adapter into the rollout server failed: {error}"
        failure = self.broadcast(failure)
        if failure is not None:
            raise RolloutServerError(failure)
        self.served_model = name
        return name

    # ---- sampling
    def encode(self, prompts: Sequence[Prompt], *, max_new_tokens: int = 256, max_prompt_length: int | None = None,
               truncation: Truncation = "error", chat_template: bool | None = None,
               add_special_tokens: bool | None = None, first_index: int = 0) -> EncodedPrompts:
        """Prompt ids within the budget: ``max_prompt_length`` capped by the context minus ``max_new_tokens``."""
        limits = [max_prompt_length] if max_prompt_length else []
        if self.context_length is not None:
            if self.context_length - max_new_tokens < 1:
                raise ValueError(
                    f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
                    f"{self.context_length}-token context; lower it."
                )
            limits.append(self.context_length - max_new_tokens)
        return encode_prompts(self.tokenizer, prompts, max_length=min(limits) if limits else None,
                              truncation=truncation, chat_template=chat_template,
                              add_special_tokens=add_special_tokens, first_index=first_index)

    def generate(
        self,
        prompts: Sequence[Prompt],
        n: int = 1,
        *,
        max_new_tokens: int = 256,
        max_prompt_length: int | None = None,
        truncation: Truncation = "error",
        chat_template: bool | None = None,
        add_special_tokens: bool | None = None,
        first_index: int = 0,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        seed: int | None = None,
        batch_size: int | None = None,
        return_logprobs: bool = True,
    ) -> Samples:
        """Sample ``n`` completions per prompt on the server, ``batch_size`` prompts per request (default: all).

        ``logprobs`` of the result are always filled (``return_logprobs`` is accepted for HFSampler's callers): the
        server's log-probabilities of each sampled token, 0 where masked. ``seed`` is sent as is: vLLM then seeds
        every prompt of a request alike, so identical prompts get identical completions (use ``n`` for several
        samples of one prompt).
        """
        prompts = list(prompts)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an integer >= 1 (completions per prompt); got {n!r}.")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}.")
        if do_sample and not temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling; got {temperature!r} (use do_sample=False for greedy).")
        if not do_sample and n > 1:
            raise ValueError(f"greedy decoding gives {n} identical completions: sample (do_sample=True) or use n=1.")
        encoded = self.encode(prompts, max_new_tokens=max_new_tokens, max_prompt_length=max_prompt_length,
                              truncation=truncation, chat_template=chat_template,
                              add_special_tokens=add_special_tokens, first_index=first_index)
        settings = {"n": n, "max_tokens": max_new_tokens, "temperature": temperature if do_sample else 0.0,
                    "top_p": top_p if do_sample else 1.0, "top_k": top_k if do_sample else -1}
        step = batch_size or max(len(prompts), 1)
        token_rows: list[list[int]] = []
        logprob_rows: list[list[float]] = []
        for start in range(0, len(prompts), step):
            batch = encoded.ids[start : start + step]
            payload = {
                "model": self.served_model, "prompt": batch, **settings, "min_p": 0.0, "repetition_penalty": 1.0,
                "stop_token_ids": self.stop_ids, "logprobs": 1, "return_tokens_as_token_ids": True, "stream": False,
            }
            if seed is not None:
                payload["seed"] = seed
            answer = self.client.request("POST", "completions", payload)
            tokens, logprobs = self._parse_completions(answer, expected=len(batch) * n)
            token_rows += tokens
            logprob_rows += logprobs

        width = max(len(row) for row in token_rows)
        completion_ids = torch.full((len(token_rows), width), self.pad_id, dtype=torch.long)
        behaviour = torch.zeros((len(token_rows), width), dtype=torch.float32)
        for row, (ids, values) in enumerate(zip(token_rows, logprob_rows)):
            completion_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            behaviour[row, : len(values)] = torch.as_tensor(values, dtype=torch.float32)
        lengths = torch.as_tensor([len(ids) for ids in token_rows])
        generated = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)  # what the server returned
        mask, finished = completion_mask(completion_ids, self.stop_ids)
        mask = mask & generated
        completion_ids = torch.where(mask, completion_ids, torch.full_like(completion_ids, self.pad_id))
        behaviour = torch.where(mask, behaviour, torch.zeros_like(behaviour))
        texts = []
        for row, ids in enumerate(completion_ids.tolist()):
            kept = ids[: int(mask[row].sum()) - (1 if finished[row] else 0)]
            texts.append(self.tokenizer.decode(kept, skip_special_tokens=True).strip())
        prompt_ids, prompt_mask = pad_left(encoded.ids, self.pad_id)
        return Samples(
            prompts=prompts,
            n=n,
            prompt_ids=prompt_ids.repeat_interleave(n, dim=0),
            prompt_mask=prompt_mask.repeat_interleave(n, dim=0),
            completion_ids=completion_ids,
            completion_mask=mask,
            finished=finished,
            texts=texts,
            truncated_prompt_tokens=encoded.truncated_tokens,
            logprobs=behaviour,
            settings={**settings, "max_new_tokens": max_new_tokens, "model": self.served_model},
        )

    def _parse_completions(self, answer: Any, expected: int) -> tuple[list[list[int]], list[list[float]]]:
        """Token ids and log-probs of each choice, prompt-major (choice ``index`` = prompt * n + sample)."""
        where = f"POST {self.client.base_url}/completions"
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or len(choices) != expected:
            got = f"{len(choices)} choices" if isinstance(choices, list) else f"{str(answer)[:200]!r}"
            raise RolloutServerError(f"{where} should answer {expected} choices (prompts × n); got {got}.")
        try:
            choices = sorted(choices, key=lambda choice: int(choice["index"]))
        except (KeyError, TypeError, ValueError):
            raise RolloutServerError(f"{where} answered choices without an integer 'index'.") from None
        tokens, logprobs = [], []
        for position, choice in enumerate(choices):
            block = choice.get("logprobs") if isinstance(choice, dict) else None
            if not isinstance(block, dict) or not isinstance(block.get("tokens"), list):
                raise RolloutServerError(
                    f"{where}: choice {position} has no logprobs.tokens. The server must return token log-probs "
                    "(OpenAI completions 'logprobs'); vLLM does."
                )
            ids, values = [], []
            for token, value in zip(block["tokens"], block.get("token_logprobs") or []):
                if not (isinstance(token, str) and token.startswith("token_id:")):
                    raise RolloutServerError(
                        f"{where}: choice {position} returned token {token!r} instead of 'token_id:<id>'; the server "
                        "must honour return_tokens_as_token_ids (vLLM >= 0.5 does)."
                    )
                if not isinstance(value, (int, float)) or math.isnan(value) or value > 1e-3:
                    raise RolloutServerError(f"{where}: choice {position} has log-prob {value!r} for {token}, not a log-probability.")
                try:
                    ids.append(int(token.split(":", 1)[1]))
                except ValueError:
                    raise RolloutServerError(f"{where}: choice {position} returned token {token!r}, not 'token_id:<id>'.") from None
                values.append(float(value))
            if not ids or len(ids) != len(block["tokens"]):
                raise RolloutServerError(
                    f"{where}: choice {position} has {len(block['tokens'])} tokens but "
                    f"{len(block.get('token_logprobs') or [])} token_logprobs (need one per token, at least one)."
                )
            tokens.append(ids)
            logprobs.append(values)
        return tokens, logprobs
