"""Tiny offline models for tests, benchmarks and examples.

Nothing here downloads anything. :func:`build_tiny_model` trains a byte-level BPE tokenizer on a small built-in
corpus, wraps it with a ChatML chat template and saves it next to a freshly initialised 2-layer Llama. The folder
loads back with the ``Auto*`` classes like any Hub checkpoint, as a causal LM or (``num_labels=1``) as a reward
model, so every code path that takes a model id can be exercised in seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "Suggest a new activity I could do with my teddy bear.",
    "You could have a picnic with your teddy bear in the garden, or read it a bedtime story.",
    "I would suggest you do not spend much time with your teddy bear at all.",
    "How do I make a cup of tea? Boil water, pour it over the tea bag, wait three minutes.",
    "What is the capital of France? The capital of France is Paris.",
    "Write a short poem about the sea. The sea is wide and blue, it sings the whole day through.",
    "Thank you so much, that was very helpful and kind!",
    "No. Figure it out yourself, I am not going to help you with that.",
    "The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) [ ] { } ? ! . , ; :",
    "good great happy wonderful love kind helpful bad sad awful hate terrible useless",
    "user assistant system hello hi yes no maybe please sorry thanks",
]


def train_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ChatML specials, left padding and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<|pad|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        padding_side="left",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(
    folder: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 512,
    seed: int = 0,
    output_vocab_size: int | None = None,
) -> Path:
    """Save a tiny random Llama causal LM and its tokenizer to ``folder`` and return the folder.

    ``output_vocab_size`` gives the model more embedding and output-head rows than the tokenizer has tokens (Qwen2.5's
    151,936, say), for measuring what a large vocabulary costs; sampled ids past the tokenizer decode to nothing.

    The same folder loads as ``AutoModelForSequenceClassification(num_labels=1)`` to give a tiny reward model.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tiny_tokenizer(vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=max(output_vocab_size or 0, len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
