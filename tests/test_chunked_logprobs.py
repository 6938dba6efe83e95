"""Chunked token log-probs (prefkit.logprobs): the same numbers and gradients as the full logits, less memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from prefkit.logprobs import (
    IGNORE_INDEX,
    causal_lm_token_logprobs,
    chunked_head_fallback_reason,
    chunked_token_logprobs,
    completion_logps,
    entropy_from_logits,
    selective_log_softmax,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def full_logprobs_and_entropy(hidden, weight, labels, temperature=1.0, bias=None):
    """The reference: every logit at once, ``log_softmax`` in float64, written independently of prefkit."""
    logits = (hidden.double() @ weight.double().T + (0 if bias is None else bias.double())) / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    scored = labels != IGNORE_INDEX
    selected = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * scored
    entropy = -(log_probs.exp() * log_probs).sum(dim=-1) * scored
    return selected, entropy


def random_head_inputs(batch=3, time=11, hidden=16, vocab=53, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    hidden_states = torch.randn(batch, time, hidden, generator=generator).to(dtype).requires_grad_()
    weight = torch.randn(vocab, hidden, generator=generator).to(dtype).requires_grad_()
    bias = torch.randn(vocab, generator=generator).to(dtype).requires_grad_()
    labels = torch.randint(0, vocab, (batch, time), generator=generator)
    return hidden_states, weight, bias, labels


# ---- the pure function


@pytest.mark.parametrize("chunk_size", [1, 7, 33, 1000])
def test_chunked_logprobs_and_entropy_equal_the_full_softmax(chunk_size):
    hidden, weight, bias, labels = random_head_inputs()
    result = chunked_token_logprobs(hidden, weight, labels, 0.7, chunk_size, bias=bias, return_entropy=True)
    expected, expected_entropy = full_logprobs_and_entropy(hidden, weight, labels, 0.7, bias)
    assert result.logprobs.dtype == torch.float32 and result.logprobs.shape == labels.shape
    torch.testing.assert_close(result.logprobs.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.entropy.double(), expected_entropy, atol=1e-5, rtol=1e-5)
    assert not result.entropy.requires_grad


@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
def test_chunked_gradients_equal_the_full_softmax_gradients(chunk_size):
    hidden, weight, bias, labels = random_head_inputs(seed=1)
    upstream = torch.randn(labels.shape, generator=torch.Generator().manual_seed(2))
    result = chunked_token_logprobs(hidden, weight, labels, 1.3, chunk_size, bias=bias)
    chunked_grads = torch.autograd.grad((result.logprobs * upstream).sum(), (hidden, weight, bias))
    expected, _ = full_logprobs_and_entropy(hidden, weight, labels, 1.3, bias)
    full_grads = torch.autograd.grad((expected * upstream.double()).sum(), (hidden, weight, bias))
    for name, chunked, full in zip(("hidden", "weight", "bias"), chunked_grads, full_grads):
        assert chunked.dtype == torch.float32, name
        torch.testing.assert_close(chunked.double(), full.double(), atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"gradient of {name}: {m}")


def test_ignored_positions_read_zero_and_are_never_computed():
    hidden, weight, _, labels = random_head_inputs(seed=3)
    labels[0, :4] = IGNORE_INDEX
    labels[2, -1] = IGNORE_INDEX
    poisoned = hidden.detach().clone()
    poisoned[0, :4] = float("nan")  # a skipped position's hidden state must not reach any output or gradient
    poisoned[2, -1] = float("nan")
    poisoned.requires_grad_()
    result = chunked_token_logprobs(poisoned, weight, labels, chunk_size=4, return_entropy=True)
    assert (result.logprobs[0, :4] == 0).all() and result.logprobs[2, -1] == 0 and (result.entropy[0, :4] == 0).all()
    clean = hidden.detach().clone()
    expected, _ = full_logprobs_and_entropy(clean, weight, labels)
    torch.testing.assert_close(result.logprobs.double(), expected, atol=1e-5, rtol=1e-5)
    grad_hidden, grad_weight = torch.autograd.grad(result.logprobs.sum(), (poisoned, weight))
    assert torch.isfinite(grad_weight).all()
    assert (grad_hidden[0, :4] == 0).all() and torch.isfinite(grad_hidden).all()


def test_bfloat16_matches_the_full_path_in_bfloat16():
    hidden, weight, _, labels = random_head_inputs(seed=4, dtype=torch.bfloat16)
    result = chunked_token_logprobs(hidden, weight, labels, 0.9, chunk_size=4)
    logits = F.linear(hidden, weight).float() / 0.9  # what PPO does with a bf16 model's logits
    expected = selective_log_softmax(logits, labels)
    torch.testing.assert_close(result.logprobs, expected, atol=2e-2, rtol=0)
    grad_chunked = torch.autograd.grad(result.logprobs.sum(), (hidden, weight))
    grad_full = torch.autograd.grad(expected.sum(), (hidden, weight))
    for chunked, full in zip(grad_chunked, grad_full):
        assert chunked.dtype == torch.bfloat16
        torch.testing.assert_close(chunked.float(), full.float(), atol=5e-2, rtol=5e-2)


def test_autocast_runs_the_head_in_the_autocast_dtype_like_the_full_path():
    hidden, weight, _, labels = random_head_inputs(seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = chunked_token_logprobs(hidden, weight, labels, chunk_size=4)
        expected = selective_log_softmax(F.linear(hidden, weight).float(), labels)
    # The bf16 head's rounding is large next to float32's: equal to the autocast full path, not to float32.
    torch.testing.assert_close(result.logprobs, expected, atol=1e-4, rtol=0)
    float32, _ = full_logprobs_and_entropy(hidden, weight, labels)
    assert (result.logprobs.double() - float32).abs().max() > 1e-3
    grad_weight = torch.autograd.grad(result.logprobs.sum(), weight)[0]
    assert grad_weight.dtype == torch.float32  # the parameter's dtype, as autograd would give


def test_frozen_inputs_get_no_gradient_and_cost_none():
    hidden, weight, _, labels = random_head_inputs(seed=6)
    frozen_weight = weight.detach()
    result = chunked_token_logprobs(hidden, frozen_weight, labels, chunk_size=8)
    (grad_hidden,) = torch.autograd.grad(result.logprobs.sum(), (hidden,))
    expected, _ = full_logprobs_and_entropy(hidden, frozen_weight, labels)
    torch.testing.assert_close(grad_hidden, torch.autograd.grad(expected.sum(), hidden)[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda h, w, y: (h, w[:, :-1], y), r"must be \[vocab, hidden\]"),
        (lambda h, w, y: (h, w, y[:, :-1]), "one label per hidden state"),
        (lambda h, w, y: (h, w, y.float()), "integer token ids"),
        (lambda h, w, y: (h, w, y.index_fill(1, torch.tensor([3]), 53)), r"labels\[0, 3\] is 53, outside"),
        (lambda h, w, y: (h, w, y.index_fill(1, torch.tensor([2]), -7)), r"labels\[0, 2\] is -7, outside"),
    ],
)
def test_bad_inputs_get_an_error_that_says_what_to_pass(change, message):
    hidden, weight, _, labels = random_head_inputs()
    with pytest.raises(ValueError, match=message):
        chunked_token_logprobs(*change(hidden, weight, labels))


@pytest.mark.parametrize("kwargs, message", [({"temperature": 0.0}, "temperature"), ({"chunk_size": 0}, "chunk_size")])
def test_bad_settings_are_refused(kwargs, message):
    hidden, weight, _, labels = random_head_inputs()
    with pytest.raises(ValueError, match=message):
        chunked_token_logprobs(hidden, weight, labels, **kwargs)


# ---- through a causal LM


def _left_padded_batch(tokenizer, texts=("Say hello to my friend. Hello friend!", "Paris.")):
    encoded = tokenizer(list(texts), return_tensors="pt", padding=True)
    mask = encoded["attention_mask"]
    return encoded["input_ids"], mask, (mask.cumsum(1) - 1).clamp(min=0)


def _full_path(model, ids, mask, positions, width, temperature):
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -width - 1 : -1]
    logits = logits.float() / temperature
    return selective_log_softmax(logits, ids[:, -width:]), entropy_from_logits(logits.detach())


def test_model_logprobs_entropy_and_gradients_equal_the_full_logits(tiny_model, tiny_tokenizer):
    ids, mask, positions = _left_padded_batch(tiny_tokenizer)
    width = 6
    assert chunked_head_fallback_reason(tiny_model) is None  # tied-embedding Llama: the chunked path is taken
    chunked = causal_lm_token_logprobs(
        tiny_model, ids, mask, positions, width, temperature=0.8, chunk_size=4, return_entropy=True
    )
    chunked_grads = torch.autograd.grad(chunked.logprobs.sum(), list(tiny_model.parameters()))
    logprobs, entropy = _full_path(tiny_model, ids, mask, positions, width, 0.8)
    full_grads = torch.autograd.grad(logprobs.sum(), list(tiny_model.parameters()))
    torch.testing.assert_close(chunked.logprobs, logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.entropy, entropy, atol=1e-5, rtol=1e-5)
    names = [name for name, _ in tiny_model.named_parameters()]
    for name, a, b in zip(names, chunked_grads, full_grads):  # the tied embedding gets the head's gradient too
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"gradient of {name}: {m}")


def test_a_mask_skips_positions_and_chunking_off_gives_the_same_numbers(tiny_model, tiny_tokenizer):
    ids, mask, positions = _left_padded_batch(tiny_tokenizer)
    score = torch.ones(ids.shape[0], 5, dtype=torch.long)
    score[1, 3:] = 0
    with torch.no_grad():
        chunked = causal_lm_token_logprobs(tiny_model, ids, mask, positions, 5, chunk_size=3, mask=score)
        full = causal_lm_token_logprobs(tiny_model, ids, mask, positions, 5, chunk_size=None, mask=score)
        unmasked, _ = _full_path(tiny_model, ids, mask, positions, 5, 1.0)
    assert (chunked.logprobs[1, 3:] == 0).all() and (full.logprobs[1, 3:] == 0).all()
    torch.testing.assert_close(chunked.logprobs, full.logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.logprobs[0], unmasked[0], atol=1e-5, rtol=1e-5)


def test_lora_policy_and_its_disabled_adapter_reference(tiny_model, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1, generator=torch.Generator().manual_seed(7))
    ids, mask, positions = _left_padded_batch(tiny_tokenizer)
    lora = [p for n, p in policy.named_parameters() if "lora_" in n]
    chunked = causal_lm_token_logprobs(policy, ids, mask, positions, 6, temperature=0.7, chunk_size=5).logprobs
    chunked_grads = torch.autograd.grad(chunked.sum(), lora)
    full, _ = _full_path(policy, ids, mask, positions, 6, 0.7)
    full_grads = torch.autograd.grad(full.sum(), lora)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)
    for a, b in zip(chunked_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with torch.no_grad(), policy.disable_adapter():
        reference = causal_lm_token_logprobs(policy, ids, mask, positions, 6, temperature=0.7, chunk_size=5).logprobs
        base, _ = _full_path(policy, ids, mask, positions, 6, 0.7)
    torch.testing.assert_close(reference, base, atol=1e-5, rtol=1e-5)
    assert (reference - chunked.detach()).abs().max() > 1e-3  # the adapter was on, then off


def test_lora_on_the_head_falls_back_to_the_full_logits_and_says_so_once(tiny_model, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(tiny_model, LoraConfig(r=4, target_modules=["q_proj", "lm_head"], lora_dropout=0.0))
    reason = chunked_head_fallback_reason(policy)
    assert reason is not None and "LoRA" in reason
    ids, mask, positions = _left_padded_batch(tiny_tokenizer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            first = causal_lm_token_logprobs(policy, ids, mask, positions, 4).logprobs
            causal_lm_token_logprobs(policy, ids, mask, positions, 4)
    said = [w for w in caught if "Chunked log-probs are off" in str(w.message)]
    assert len(said) == 1 and "full logits" in str(said[0].message)
    with torch.no_grad():
        expected, _ = _full_path(policy, ids, mask, positions, 4, 1.0)
    torch.testing.assert_close(first, expected)


def test_logit_softcapping_falls_back_to_the_full_logits():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, final_logit_softcapping=2.0,
    )
    model = Gemma2ForCausalLM(config).eval()
    reason = chunked_head_fallback_reason(model)
    assert reason is not None and "final_logit_softcapping" in reason
    ids = torch.randint(0, 97, (2, 9))
    with pytest.warns(UserWarning, match="final_logit_softcapping"), torch.no_grad():
        result = causal_lm_token_logprobs(model, ids, torch.ones_like(ids), None, 5).logprobs
    with torch.no_grad():
        expected, _ = _full_path(model, ids, torch.ones_like(ids), None, 5, 1.0)
    torch.testing.assert_close(result, expected)


def test_a_model_that_changes_its_logits_unannounced_is_caught_by_the_one_time_check(tiny_model_dir, tiny_tokenizer):
    from transformers import LlamaForCausalLM

    class ScaledLogits(LlamaForCausalLM):  # e.g. remote code that scales the logits in forward, no config field
        calls = 0

        def forward(self, *args, **kwargs):
            ScaledLogits.calls += 1
            output = super().forward(*args, **kwargs)
            output.logits = output.logits * 3.0
            return output

    model = ScaledLogits.from_pretrained(tiny_model_dir).eval()
    assert chunked_head_fallback_reason(model) is None  # nothing in the config or the head says so
    ids, mask, positions = _left_padded_batch(tiny_tokenizer)
    with pytest.warns(UserWarning, match="differ from its decoder body"), torch.no_grad():
        result = causal_lm_token_logprobs(model, ids, mask, positions, 4).logprobs
    with torch.no_grad():
        again = causal_lm_token_logprobs(model, ids, mask, positions, 4).logprobs
    assert ScaledLogits.calls == 3  # the check ran once (one forward), then one full-logits forward per call
    with torch.no_grad():
        expected, _ = _full_path(model, ids, mask, positions, 4, 1.0)
    torch.testing.assert_close(result, expected)
    torch.testing.assert_close(again, expected)


def test_width_and_mask_shapes_are_checked(tiny_model, tiny_tokenizer):
    ids, mask, positions = _left_padded_batch(tiny_tokenizer)
    with pytest.raises(ValueError, match=r"width must be in \[1, "):
        causal_lm_token_logprobs(tiny_model, ids, mask, positions, ids.shape[1])
    with pytest.raises(ValueError, match=r"mask is \[2, 3\]; it must be \[batch, width\] = \[2, 4\]"):
        causal_lm_token_logprobs(tiny_model, ids, mask, positions, 4, mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="chunk_size must be a positive number of tokens or None"):
        causal_lm_token_logprobs(tiny_model, ids, mask, positions, 4, chunk_size=-2)


# ---- the scorers


def test_completion_logps_are_the_same_chunked_or_not(tiny_model, tiny_tokenizer):
    prompts = ["Say hello.", [{"role": "user", "content": "What is the capital of France?"}]]
    answers = ["Hello there, friend!", "Paris."]
    chunked = completion_logps(tiny_model, tiny_tokenizer, prompts, answers, chunk_size=2)
    full = completion_logps(tiny_model, tiny_tokenizer, prompts, answers, chunk_size=None)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)
    assert (full < 0).all()


def test_implicit_reward_scores_are_the_same_chunked_or_not(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from prefkit.implicit_reward import ImplicitReward

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        policy.model.layers[0].mlp.down_proj.weight.mul_(1.5)  # a policy that differs from its reference
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts, answers = ["Say hello.", "Name a colour."], ["Hello!", "Blue, like the sea."]
    chunked = ImplicitReward(policy, tiny_tokenizer, reference, logprob_chunk_size=3).score(prompts, answers)
    full = ImplicitReward(policy, tiny_tokenizer, reference, logprob_chunk_size=None).score(prompts, answers)
    assert chunked == pytest.approx(full, abs=1e-5)
    assert any(abs(score) > 1e-3 for score in full)
    with pytest.raises(ValueError, match="logprob_chunk_size must be a positive number of tokens"):
        ImplicitReward(policy, tiny_tokenizer, reference, logprob_chunk_size=-1)


# ---- PPO's roles


def _policy_and_value(tiny_model, chunk_size):
    from peft import LoraConfig, get_peft_model

    from prefkit.trainers.ppo.policy_value import PolicyAndValue, add_value_adapter

    policy = get_peft_model(tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    value_head = add_value_adapter(policy)
    wrapper = PolicyAndValue(policy, value_head=value_head, logprob_chunk_size=chunk_size)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in wrapper.named_parameters():
            if "lora_B" in name or "value_head" in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return wrapper


def test_ppo_forward_with_logprobs_equals_the_logits_forward_in_values_and_gradients(tiny_model, tiny_tokenizer):
    wrapper = _policy_and_value(tiny_model, chunk_size=3)
    ids, mask, positions = _left_padded_batch(tiny_tokenizer)
    width, temperature = 6, 0.7
    responses = ids[:, -width:]
    trained = [p for p in wrapper.parameters() if p.requires_grad]

    (logprobs, entropy), values = wrapper(ids, mask, positions, width, True, return_logprobs=True, temperature=temperature)
    chunked_grads = torch.autograd.grad(logprobs.sum() + values.sum(), trained)
    logits, full_values = wrapper(ids, mask, positions, width, True)
    logits = logits.float() / temperature
    full_logprobs = selective_log_softmax(logits, responses)  # what the PPO loop computes from the logits
    full_grads = torch.autograd.grad(full_logprobs.sum() + full_values.sum(), trained)

    torch.testing.assert_close(logprobs, full_logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, entropy_from_logits(logits.detach()), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values, full_values)
    for a, b in zip(chunked_grads, full_grads):  # the policy and the value adapters, and the value head
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_ppo_reference_logprobs_are_the_base_with_the_adapter_disabled_or_the_given_model(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from prefkit.trainers.ppo.policy_value import causal_lm_logits

    wrapper = _policy_and_value(AutoModelForCausalLM.from_pretrained(tiny_model_dir), chunk_size=4)
    ids, mask, positions = _left_padded_batch(tiny_tokenizer)
    with torch.no_grad():
        reference = wrapper.reference_logprobs(None, ids, mask, positions, 5, temperature=0.9)
        separate = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        given = wrapper.reference_logprobs(separate, ids, mask, positions, 5, temperature=0.9)
        expected = selective_log_softmax(causal_lm_logits(separate, ids, mask, positions, 5).float() / 0.9, ids[:, -5:])
        policy = wrapper.policy_logprobs(ids, mask, positions, 5, temperature=0.9).logprobs
    torch.testing.assert_close(reference, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(given, expected, atol=1e-5, rtol=1e-5)
    assert (policy - reference).abs().max() > 1e-3
    assert wrapper.policy.active_adapter == "default"  # the reference context put the policy back


def test_ppo_config_chunk_size_defaults_to_the_library_default_and_a_bad_one_is_refused(tmp_path, tiny_model):
    from prefkit.logprobs import DEFAULT_LOGPROB_CHUNK_SIZE
    from prefkit.trainers.ppo.config import PPOConfig
    from prefkit.trainers.ppo.policy_value import PolicyAndValue

    assert PPOConfig(output_dir=str(tmp_path)).logprob_chunk_size == DEFAULT_LOGPROB_CHUNK_SIZE
    with pytest.raises(ValueError, match="logprob_chunk_size must be a positive number of tokens or None"):
        PolicyAndValue(tiny_model, logprob_chunk_size=2.5)


# ---- memory, measured


@pytest.mark.slow
def test_the_chunked_path_holds_measurably_less_memory():
    """Peak resident memory of the head + log-softmax on a 64k vocabulary, each mode in a fresh process."""
    command = [
        sys.executable, os.path.join(REPO, "scripts", "bench_logprobs.py"), "--batch", "2", "--time", "512",
        "--vocab", "65536", "--hidden", "64", "--chunk_size", "128", "--device", "cpu", "--json",
    ]
    summary = json.loads(subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO).stdout)
    logits_bytes = summary["float32_logits_bytes"]  # 256 MiB
    runs = summary["runs"]
    assert runs["full_value"]["peak_bytes"] > logits_bytes  # the full path holds at least the logits once
    assert runs["chunked_value"]["peak_bytes"] < 0.5 * logits_bytes
    assert runs["full_train"]["peak_bytes"] > 1.5 * logits_bytes
    assert runs["chunked_train"]["peak_bytes"] < 0.5 * logits_bytes
    assert summary["max_relative_difference"] < 1e-4  # and the same numbers


@pytest.mark.parametrize("bad", [-1, 2.5, "big", True])
def test_ppo_config_refuses_a_bad_chunk_size_when_it_is_built(bad, tmp_path):
    from prefkit import PPOConfig

    with pytest.raises(ValueError, match="logprob_chunk_size must be a positive number of tokens"):
        PPOConfig(output_dir=str(tmp_path), logprob_chunk_size=bad, report_to="none")
    assert PPOConfig(output_dir=str(tmp_path), logprob_chunk_size=None, report_to="none").logprob_chunk_size is None
