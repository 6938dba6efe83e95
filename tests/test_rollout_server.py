"""The "server" rollout engine against a fake vLLM: an OpenAI-compatible completions server in a thread that serves the
tiny model with transformers' generate, answers in vLLM's shape (token ids as 'token_id:<id>', token log-probs) and
loads LoRA adapters by path with peft. A real vLLM needs a GPU and is not run here."""

from __future__ import annotations

import copy
import json
import math
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from datasets import Dataset

from prefkit.commands.ppo import make_parser
from prefkit.losses import truncated_importance_weights
from prefkit.sampling import HFSampler
from prefkit.sampling_server import CompletionsClient, RolloutServerError, ServerSampler
from prefkit.trainers.ppo import PolicyAndValue, PPOConfig, PPOTrainer
from prefkit.trainers.ppo.rollout import Responses, rollout_logprobs_and_values

SERVED = "tiny-base"
PROMPTS = ["Say something kind.", "How was your day?", "Describe the sea.", "What do you think of tea?"]


class FakeVLLM:
    """vLLM's /v1/models, /v1/completions (token-id prompts, n, temperature, max_tokens, stop_token_ids, seed,
    logprobs, return_tokens_as_token_ids) and /v1/load_lora_adapter, /v1/unload_lora_adapter, one prompt at a time
    through ``generate`` (no padding: independent of prefkit's batching).

    Knobs: ``perturb`` is added to every returned log-prob; ``malformed`` ('not-json' or 'no-logprobs') spoils the
    completions answer; ``die_after_completions`` shuts the server down after that many completions answers;
    ``delay`` seconds pass before a completions answer; ``drop_connections`` hangs up on completions requests
    without answering; ``lora_endpoints=False`` answers 404 there (vLLM without VLLM_ALLOW_RUNTIME_LORA_UPDATING)."""

    def __init__(self, model_dir, tokenizer):
        from transformers import AutoModelForCausalLM

        self.base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.tokenizer = tokenizer
        self.adapters: dict[str, tuple[object, str]] = {}  # name -> (PeftModel, folder)
        self.log: list[tuple[str, dict]] = []  # (path, payload) of every POST
        self.perturb, self.malformed, self.die_after_completions, self.delay = 0.0, None, None, 0.0
        self.lora_endpoints, self.drop_connections = True, False
        self.completions_served = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path != "/v1/models":
                    return self.reply(404, {"error": {"message": f"no route {self.path}"}})
                models = [{"id": SERVED, "object": "model", "parent": None}]
                models += [{"id": name, "object": "model", "parent": SERVED} for name in fake.adapters]
                self.reply(200, {"object": "list", "data": models})

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.log.append((self.path, payload))
                if fake.drop_connections and self.path == "/v1/completions":
                    self.close_connection = True  # hang up without an answer, as a crashing worker does
                    return
                with fake.lock:
                    status, body, kind = fake.handle(self.path, payload)
                self.reply(status, body, kind)
                if self.path == "/v1/completions" and fake.die_after_completions == fake.completions_served:
                    threading.Thread(target=fake.close).start()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path, payload):
        if path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter") and not self.lora_endpoints:
            return 404, {"detail": "Not Found"}, "application/json"
        if path == "/v1/load_lora_adapter":
            from peft import PeftModel

            name = payload["lora_name"]
            if name in self.adapters:
                return 400, {"error": {"message": f"The lora adapter '{name}' has already been loaded."}}, "application/json"
            model = PeftModel.from_pretrained(copy.deepcopy(self.base), payload["lora_path"]).eval()
            self.adapters[name] = (model, payload["lora_path"])
            return 200, f"Success: LoRA adapter '{name}' added successfully.".encode(), "text/plain"
        if path == "/v1/unload_lora_adapter":
            if self.adapters.pop(payload["lora_name"], None) is None:
                return 404, {"error": {"message": "no such adapter"}}, "application/json"
            return 200, b"Success", "text/plain"
        if path != "/v1/completions":
            return 404, {"error": {"message": f"no route {path}"}}, "application/json"
        time.sleep(self.delay)
        self.completions_served += 1
        if self.malformed == "not-json":
            return 200, b"<html>Bad gateway</html>", "text/html"
        model = self.base if payload["model"] == SERVED else self.adapters[payload["model"]][0]
        choices = []
        if payload.get("seed") is not None:
            torch.manual_seed(payload["seed"])
        for i, prompt in enumerate(payload["prompt"]):
            ids = torch.tensor([prompt])
            with torch.no_grad():
                out = model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                    temperature=payload["temperature"], top_k=0, top_p=1.0, max_new_tokens=payload["max_tokens"],
                    num_return_sequences=payload["n"], eos_token_id=payload["stop_token_ids"],
                    pad_token_id=self.tokenizer.pad_token_id, output_scores=True, return_dict_in_generate=True,
                )
            logprobs = torch.stack([torch.log_softmax(s.float(), -1) for s in out.scores], dim=1)  # [n, steps, V]
            for j in range(payload["n"]):
                new = out.sequences[j, ids.shape[1]:].tolist()
                stops = [t for t, token in enumerate(new) if token in payload["stop_token_ids"]]
                length = stops[0] + 1 if stops else len(new)
                tokens = new[:length]
                values = [float(logprobs[j, t, token]) + self.perturb for t, token in enumerate(tokens)]
                block = {"tokens": [f"token_id:{t}" for t in tokens], "token_logprobs": values,
                         "top_logprobs": [{f"token_id:{t}": v} for t, v in zip(tokens, values)], "text_offset": []}
                if self.malformed == "no-logprobs":
                    block = None
                choices.append({"index": i * payload["n"] + j, "text": self.tokenizer.decode(tokens),
                                "logprobs": block, "finish_reason": "stop" if stops else "length"})
        choices.reverse()  # the client must order choices by their index
        return 200, {"id": "cmpl-1", "object": "text_completion", "model": payload["model"], "choices": choices}, "application/json"


@pytest.fixture
def server(tiny_model_dir, tiny_tokenizer):
    fake = FakeVLLM(tiny_model_dir, tiny_tokenizer)
    yield fake
    if fake.thread.is_alive():
        fake.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_config(tmp_path, url, **overrides) -> PPOConfig:
    settings = dict(
        output_dir=str(tmp_path / "ppo"), use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0,
        learning_rate=5e-3, per_device_train_batch_size=4, num_ppo_epochs=1, max_completion_length=6,
        temperature=1.0, max_steps=2, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        seed=0, advantage_estimator="reinforce", rollout_engine="server", rollout_url=url, rollout_retries=1,
        rollout_timeout=30, log_completions=False,
    )
    settings.update(overrides)
    return PPOConfig(**settings)


def length_reward(prompts, completions):
    return [float(len(c)) / 10 for c in completions]


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


# ---------------------------------------------------------------------------------------------------------------------
# The engine alone
# ---------------------------------------------------------------------------------------------------------------------


def test_server_samples_are_the_tokens_and_log_probs_of_the_served_model(server, tiny_tokenizer):
    sampler = ServerSampler(server.url, tiny_tokenizer, context_length=512)
    samples = sampler.generate(PROMPTS[:2], n=2, max_new_tokens=6, temperature=0.8, batch_size=1)
    assert len(samples) == 4 and samples.logprobs.shape == samples.completion_ids.shape
    sent = [payload for path, payload in server.log if path == "/v1/completions"]
    assert len(sent) == 2 and sent[0]["model"] == SERVED and sent[0]["return_tokens_as_token_ids"] is True
    assert sent[0]["prompt"] == [tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True, tokenize=True, return_dict=False)]
    # Teacher-forced log-probs of each returned completion under the base model, at the same temperature.
    for row in range(4):
        prompt = samples.prompt_ids[row][samples.prompt_mask[row].bool()]
        completion = samples.completion_ids[row][samples.completion_mask[row]]
        with torch.no_grad():
            logits = server.base(torch.cat([prompt, completion]).unsqueeze(0)).logits[0].float() / 0.8
        expected = torch.log_softmax(logits[len(prompt) - 1 : -1], -1).gather(-1, completion.unsqueeze(1)).squeeze(1)
        torch.testing.assert_close(samples.logprobs[row][samples.completion_mask[row]], expected, atol=1e-4, rtol=0)
        assert samples.logprobs[row][~samples.completion_mask[row]].abs().sum() == 0


def test_hf_engine_behaviour_log_probs_equal_the_trainers_so_tis_is_a_no_op(tiny_model, tiny_tokenizer):
    sampler = HFSampler(tiny_model, tiny_tokenizer)
    samples = sampler.generate(PROMPTS, n=2, max_new_tokens=8, temperature=0.7, top_k=0, return_logprobs=True, seed=0)
    responses = Responses(samples.input_ids, samples.attention_mask, samples.position_ids, samples.completion_ids,
                          samples.completion_mask.float(), samples.finished, samples.texts)
    old_logprobs, _, _ = rollout_logprobs_and_values(PolicyAndValue(tiny_model), tiny_model, responses, temperature=0.7)
    weights = truncated_importance_weights(old_logprobs, samples.logprobs, 2.0, samples.completion_mask)
    assert samples.completion_mask.sum() > 8
    torch.testing.assert_close(weights, torch.ones_like(weights), atol=1e-4, rtol=0)


def test_hf_sampler_update_weights_samples_from_the_new_policy(tiny_model, tiny_tokenizer):
    changed = copy.deepcopy(tiny_model)
    with torch.no_grad():
        changed.model.norm.weight.mul_(-1.0)  # flips every logit: another greedy answer
    sampler = HFSampler(tiny_model, tiny_tokenizer)
    before = sampler.generate(PROMPTS[:2], do_sample=False, max_new_tokens=5).completion_ids
    sampler.update_weights(changed)
    after = sampler.generate(PROMPTS[:2], do_sample=False, max_new_tokens=5).completion_ids
    assert not torch.equal(before, after)
    assert torch.equal(after, HFSampler(changed, tiny_tokenizer).generate(PROMPTS[:2], do_sample=False, max_new_tokens=5).completion_ids)


@pytest.mark.parametrize(("malformed", "message"), [("not-json", "not JSON"), ("no-logprobs", "no logprobs")])
def test_a_server_answering_nonsense_is_a_clear_error(server, tiny_tokenizer, malformed, message):
    server.malformed = malformed
    sampler = ServerSampler(CompletionsClient(server.url, retries=0), tiny_tokenizer)
    with pytest.raises(RolloutServerError, match=message):
        sampler.generate(PROMPTS[:1], max_new_tokens=4)


@pytest.mark.timeout(60)
def test_a_slow_server_hits_the_timeout_instead_of_hanging(server, tiny_tokenizer):
    server.delay = 5.0
    sampler = ServerSampler(CompletionsClient(server.url, timeout=0.5, retries=0), tiny_tokenizer)
    start = time.monotonic()
    with pytest.raises(RolloutServerError, match=r"did not answer POST .*0.5 s timeout"):
        sampler.generate(PROMPTS[:1], max_new_tokens=4)
    assert time.monotonic() - start < 4


@pytest.mark.timeout(60)
def test_a_server_that_hangs_up_is_retried_then_a_clear_error(server, tiny_tokenizer):
    server.drop_connections = True
    sampler = ServerSampler(CompletionsClient(server.url, retries=2, backoff=0.1), tiny_tokenizer)
    with pytest.raises(RolloutServerError, match=r"did not answer POST .*after 3 attempt\(s\).*RemoteDisconnected"):
        sampler.generate(PROMPTS[:1], max_new_tokens=4)
    assert [path for path, _ in server.log].count("/v1/completions") == 3


def test_a_yaml_config_takes_the_rollout_settings(tmp_path):
    config = tmp_path / "ppo.yaml"
    config.write_text("rollout_engine: server\nrollout_url: http://gpu-box:8000/v1\nrollout_is_cap: null\nuse_peft: true\n")
    parsed = make_parser().parse_args_and_config(["--config", str(config), "--output_dir", str(tmp_path / "out")])
    config = next(p for p in parsed if isinstance(p, PPOConfig))
    assert (config.rollout_engine, config.rollout_url, config.rollout_is_cap) == ("server", "http://gpu-box:8000/v1", None)


def test_a_server_without_runtime_lora_says_how_to_start_it(server, tiny_model, tiny_tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    server.lora_endpoints = False
    policy = get_peft_model(tiny_model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    sampler = ServerSampler(server.url, tiny_tokenizer, adapter_dir=str(tmp_path / "adapters"))
    with pytest.raises(RolloutServerError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve"):
        sampler.update_weights(policy)


def test_an_unknown_served_model_name_lists_what_the_server_serves(server, tiny_tokenizer):
    with pytest.raises(RolloutServerError, match=r"does not serve rollout_model='gpt-9'; it serves \['tiny-base'\]"):
        ServerSampler(server.url, tiny_tokenizer, model="gpt-9")


# ---------------------------------------------------------------------------------------------------------------------
# PPO through the server
# ---------------------------------------------------------------------------------------------------------------------


def test_ppo_trains_through_the_server_and_ships_each_iterations_adapter(server, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    # GAE: the policy's base also carries the value adapter, and only the policy's may reach the server.
    args = server_config(tmp_path, server.url, save_strategy="steps", save_steps=1, advantage_estimator="gae")
    trainer = PPOTrainer(tiny_model_dir, length_reward, args, Dataset.from_list([{"prompt": p} for p in PROMPTS]))
    trainer.train()

    # Each iteration sampled from a new adapter; the first one's was unloaded and deleted once the second loaded.
    loads = [payload["lora_name"] for path, payload in server.log if path == "/v1/load_lora_adapter"]
    sampled_from = [payload["model"] for path, payload in server.log if path == "/v1/completions"]
    assert len(loads) == 2 and sampled_from == loads
    assert list(server.adapters) == [loads[1]]
    assert [payload["lora_name"] for path, payload in server.log if path == "/v1/unload_lora_adapter"] == [loads[0]]
    assert sorted(os.listdir(tmp_path / "ppo" / "rollout_adapters")) == [loads[1]]

    # The adapter the server sampled iteration 2 from is the policy trained by iteration 1 (checkpoint-1).
    trained = load_file(str(tmp_path / "ppo" / "checkpoint-1" / "adapter_model.safetensors"))
    served = {k: v for k, v in server.adapters[loads[1]][0].state_dict().items() if "lora_" in k}
    assert len(served) == len(trained) > 0
    for key, value in trained.items():
        served_key = key.replace(".weight", ".default.weight")
        torch.testing.assert_close(served[served_key], value)
    assert any(value.abs().sum() > 0 for key, value in trained.items() if "lora_B" in key)  # it did move

    # The server's log-probs are the trainer's up to float noise, so TIS weights are ~1.
    assert len(logged(trainer, "rollout/logprob_diff_mean")) == 2
    assert max(logged(trainer, "rollout/logprob_diff_max")) < 1e-3
    assert all(abs(w - 1) < 1e-3 for w in logged(trainer, "rollout/is_weight_mean"))


@pytest.mark.parametrize(("perturb", "weight", "truncated"), [(-0.25, math.exp(0.25), 0.0), (-1.0, 2.0, 1.0)])
def test_tis_weights_what_the_trainer_measures_against_a_perturbed_server(
    server, tiny_model_dir, tmp_path, monkeypatch, perturb, weight, truncated
):
    import prefkit.trainers.ppo.trainer as ppo_trainer

    # Record the advantages the rollout computed and those the policy loss received.
    computed, received = [], []
    compute_advantages, ppo_clip_loss = ppo_trainer.compute_advantages, ppo_trainer.ppo_clip_loss
    monkeypatch.setattr(ppo_trainer, "compute_advantages", lambda *a, **k: computed.append(compute_advantages(*a, **k)) or computed[-1])
    monkeypatch.setattr(ppo_trainer, "ppo_clip_loss", lambda new, old, adv, *a: received.append(adv) or ppo_clip_loss(new, old, adv, *a))

    server.perturb = perturb  # the server's log-probs are off by a known amount
    args = server_config(tmp_path, server.url, max_steps=1, rollout_is_cap=2.0)
    trainer = PPOTrainer(tiny_model_dir, length_reward, args, Dataset.from_list([{"prompt": p} for p in PROMPTS]))
    trainer.train()
    assert logged(trainer, "rollout/logprob_diff_mean")[0] == pytest.approx(-perturb, abs=1e-3)
    assert logged(trainer, "rollout/is_weight_mean")[0] == pytest.approx(weight, abs=2e-3)
    assert logged(trainer, "rollout/is_truncated_frac")[0] == pytest.approx(truncated)
    # One epoch, one minibatch of every row: the loss saw each token's advantage times its weight.
    ((advantages, _),), (weighted,) = computed, received
    assert advantages.abs().sum() > 0
    assert weighted.abs().sum().item() == pytest.approx(weight * advantages.abs().sum().item(), rel=5e-3)


@pytest.mark.timeout(120)
def test_a_server_dying_mid_run_stops_training_with_a_checkpoint(server, tiny_model_dir, tmp_path):
    server.die_after_completions = 1  # answers iteration 1, then is gone
    args = server_config(tmp_path, server.url, max_steps=3, save_strategy="steps", save_steps=100)
    trainer = PPOTrainer(tiny_model_dir, length_reward, args, Dataset.from_list([{"prompt": p} for p in PROMPTS]))
    with pytest.raises(RolloutServerError, match=r"(?s)At PPO step 2: .*did not answer POST .*load_lora_adapter.*checkpoint-1"):
        trainer.train()
    assert (tmp_path / "ppo" / "checkpoint-1" / "adapter_model.safetensors").is_file()
    assert trainer.state.global_step == 1


@pytest.mark.timeout(60)
def test_a_bad_rollout_url_fails_before_the_model_loads(tmp_path):
    args = server_config(tmp_path, f"http://127.0.0.1:{free_port()}/v1", rollout_retries=0)
    # The model does not exist: had it been loaded first, the error would be about the model.
    with pytest.raises(RolloutServerError, match=r"did not answer GET http://127\.0\.0\.1:\d+/v1/models"):
        PPOTrainer("no-such-org/no-such-model", length_reward, args, Dataset.from_list([{"prompt": p} for p in PROMPTS]))


def test_full_fine_tuning_with_the_server_engine_is_refused_before_loading(server, tmp_path):
    args = server_config(tmp_path, server.url, use_peft=False)
    with pytest.raises(ValueError, match="needs a LoRA policy: add --use_peft"):
        PPOTrainer("no-such-org/no-such-model", length_reward, args, Dataset.from_list([{"prompt": p} for p in PROMPTS]))
    assert not server.log  # not even a request


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rollout_url": None}, "rollout_engine='server' needs rollout_url"),
        ({"rollout_engine": "hf"}, "is set but rollout_engine='hf'"),
        ({"rollout_url": "localhost:8000"}, "give an http"),
        ({"rollout_is_cap": 0.5}, "rollout_is_cap=0.5: must be >= 1"),
        ({"rollout_engine": "vllm"}, "rollout_engine='vllm': use one of"),
    ],
)
def test_bad_rollout_settings_are_named(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        server_config(tmp_path, "http://localhost:8000/v1", **overrides)


def test_the_command_line_takes_the_rollout_flags():
    parsed = make_parser().parse_args_into_dataclasses(
        ["--output_dir", "out", "--use_peft", "--rollout_engine", "server", "--rollout_url", "http://gpu-box:8000/v1",
         "--rollout_model", "Qwen/Qwen2.5-1.5B", "--rollout_is_cap", "3", "--rollout_timeout", "120"]
    )
    config = next(p for p in parsed if isinstance(p, PPOConfig))
    assert (config.rollout_engine, config.rollout_url, config.rollout_model) == ("server", "http://gpu-box:8000/v1", "Qwen/Qwen2.5-1.5B")
    assert (config.rollout_is_cap, config.rollout_timeout) == (3.0, 120.0)


@pytest.mark.timeout(120)
def test_prefkit_ppo_prints_an_unreachable_server_as_an_error_line(tiny_model_dir, tmp_path, capsys):
    from prefkit.cli import main as prefkit

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    argv = ["ppo", "--model_name_or_path", tiny_model_dir, "--dataset_name", str(prompts), "--output_dir",
            str(tmp_path / "out"), "--use_peft", "--reward", "vader", "--per_device_train_batch_size", "4",
            "--report_to", "none", "--rollout_engine", "server", "--rollout_retries", "0",
            "--rollout_url", f"http://127.0.0.1:{free_port()}/v1"]
    assert prefkit(argv) == 2
    assert capsys.readouterr().err.startswith("error: The rollout server did not answer GET http://127.0.0.1:")


@pytest.mark.parametrize("command", ["grpo", "rloo"])
def test_trl_loops_point_rollout_flags_to_prefkit_ppo(command, capsys):
    from prefkit.cli import main as prefkit

    assert prefkit([command, "--output_dir", "unused", "--rollout_engine", "server", "--rollout_url=http://h:8000/v1"]) == 2
    err = capsys.readouterr().err
    assert f"prefkit ppo --advantage_estimator {command}" in err and "--rollout_engine, --rollout_url" in err
