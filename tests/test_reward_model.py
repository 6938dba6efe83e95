"""RewardModel: how pairs become tokens, batched scores, pad-token safety, loading, and the errors callers get."""

import pytest
import torch

from prefkit.reward_model import RewardModel, encode_reward_input, reward_input_format

PROMPTS = ["Tell me about tea.", "What is the capital of France?", "Write a short poem about the sea, please."]
RESPONSES = [
    "Happy to help! Boil water and steep the tea for three minutes.",
    "Paris.",
    "The sea is wide and blue, it sings the whole day through, and I love it.",
]


@pytest.fixture
def tiny_reward_model(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    from prefkit.models import load_tokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    torch.nn.init.normal_(model.score.weight, std=1.0)  # scores far apart, so a wrong token read shows
    return RewardModel(model.eval(), load_tokenizer(tiny_model_dir))


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from prefkit.models import DEFAULT_ENCODER, load_tokenizer

    return load_tokenizer(DEFAULT_ENCODER)


# -- layout of a pair -------------------------------------------------------------------------------------------


def test_chat_template_renders_prompt_as_user_turn_and_response_as_assistant_turn(tiny_tokenizer):
    ids = encode_reward_input(tiny_tokenizer, "Hi there", "Hello!")
    assert tiny_tokenizer.decode(ids) == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"


def test_string_and_message_forms_of_a_pair_encode_identically(tiny_tokenizer):
    as_text = encode_reward_input(tiny_tokenizer, "Hi there", "Hello!")
    as_messages = encode_reward_input(
        tiny_tokenizer, [{"role": "user", "content": "Hi there"}], [{"role": "assistant", "content": "Hello!"}]
    )
    assert as_text == as_messages


def test_tokenizer_without_chat_template_uses_prompt_response_eos_text(tiny_model_dir):
    from prefkit.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    tokenizer.chat_template = None
    assert reward_input_format(tokenizer) == "text"
    ids = encode_reward_input(tokenizer, "Hi there. ", "Hello!")
    assert ids == tokenizer("Hi there. Hello!" + tokenizer.eos_token)["input_ids"]


def test_encoder_tokenizer_lays_out_cls_prompt_sep_response_sep(minilm_tokenizer):
    assert reward_input_format(minilm_tokenizer) == "pair"
    ids = encode_reward_input(minilm_tokenizer, "How do I make tea?", "Boil water and steep it.")
    assert ids == minilm_tokenizer("How do I make tea?", "Boil water and steep it.")["input_ids"]


def test_encoder_truncation_keeps_end_of_prompt_and_start_of_response(minilm_tokenizer):
    prompt = "one two three four five six seven eight nine ten"
    response = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    ids = encode_reward_input(minilm_tokenizer, prompt, response, max_length=13)
    assert len(ids) == 13
    assert minilm_tokenizer.decode(ids) == "[CLS] six seven eight nine ten [SEP] alpha beta gamma delta epsilon [SEP]"


def test_decoder_truncation_keeps_the_last_tokens_where_the_score_is_read(tiny_tokenizer):
    full = encode_reward_input(tiny_tokenizer, "Tell me a long story about the sea.", "The sea is wide and blue.")
    cut = encode_reward_input(tiny_tokenizer, "Tell me a long story about the sea.", "The sea is wide and blue.", max_length=10)
    assert cut == full[-10:]


# -- batching and the pad token -----------------------------------------------------------------------------------


def test_batched_scores_equal_one_at_a_time_scores_with_a_left_padding_tokenizer(tiny_reward_model):
    assert tiny_reward_model.tokenizer.padding_side == "left"
    batched = tiny_reward_model.score(PROMPTS, RESPONSES, batch_size=3)
    single = [tiny_reward_model.score([p], [r], batch_size=1)[0] for p, r in zip(PROMPTS, RESPONSES)]
    assert batched == pytest.approx(single, abs=1e-5)
    assert max(single) - min(single) > 0.1  # the inputs really score differently


def test_tokenizer_without_pad_token_gets_one_and_the_model_config_shares_its_id(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.config.pad_token_id = None
    reward_model = RewardModel(model, tokenizer)
    assert tokenizer.pad_token is not None
    assert model.config.pad_token_id == tokenizer.pad_token_id
    batched = reward_model.score(PROMPTS, RESPONSES)
    single = [reward_model.score([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES)]
    assert batched == pytest.approx(single, abs=1e-5)


def test_wrong_pad_id_on_model_config_is_corrected_so_batches_read_the_real_last_token(tiny_model_dir):
    """The bug behind reward models stuck at 50%: the config's pad id differs from the one used to pad."""
    from transformers import AutoModelForSequenceClassification

    from prefkit.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    torch.nn.init.normal_(model.score.weight, std=1.0)
    model.config.pad_token_id = tokenizer.eos_token_id  # wrong: the tokenizer pads with <|pad|>
    reward_model = RewardModel(model, tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    single = [reward_model.score([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES)]
    assert reward_model.score(PROMPTS, RESPONSES) == pytest.approx(single, abs=1e-5)


def test_scores_come_back_in_input_order_whatever_the_batch_size(tiny_reward_model):
    prompts, responses = PROMPTS * 3, RESPONSES[::-1] * 3
    reference = tiny_reward_model.score(prompts, responses, batch_size=1)
    assert tiny_reward_model.score(prompts, responses, batch_size=4) == pytest.approx(reference, abs=1e-5)


def test_conversational_completions_score_like_plain_strings(tiny_reward_model):
    messages = [[{"role": "user", "content": p}] for p in PROMPTS]
    completions = [[{"role": "assistant", "content": r}] for r in RESPONSES]
    assert tiny_reward_model.score(messages, completions) == pytest.approx(tiny_reward_model.score(PROMPTS, RESPONSES))


def test_call_accepts_positional_pairs_and_trl_keywords(tiny_reward_model):
    expected = tiny_reward_model.score(PROMPTS, RESPONSES)
    assert tiny_reward_model(PROMPTS, RESPONSES) == pytest.approx(expected)
    assert tiny_reward_model(prompts=PROMPTS, completions=RESPONSES, completion_ids=None) == pytest.approx(expected)


def test_reward_func_has_trl_signature_and_a_name(tiny_reward_model):
    reward_func = tiny_reward_model.as_reward_func()
    assert reward_func.__name__ == "reward_model"
    completions = [[{"role": "assistant", "content": r}] for r in RESPONSES]
    rewards = reward_func(prompts=PROMPTS, completions=completions, completion_ids=[[1]] * 3, trainer_state=None)
    assert rewards == pytest.approx(tiny_reward_model.score(PROMPTS, RESPONSES))


# -- bad input -----------------------------------------------------------------------------------------------------


def test_score_rejects_empty_lists(tiny_reward_model):
    with pytest.raises(ValueError, match="no responses"):
        tiny_reward_model.score([], [])


def test_score_rejects_mismatched_lengths(tiny_reward_model):
    with pytest.raises(ValueError, match="3 prompts and 2 responses"):
        tiny_reward_model.score(PROMPTS, RESPONSES[:2])


def test_score_rejects_a_bare_string_instead_of_a_list(tiny_reward_model):
    with pytest.raises(TypeError, match=r"wrap it: score\(\[prompt\], \[response\]\)"):
        tiny_reward_model.score("Tell me about tea.", "Boil water.")


def test_score_names_the_entry_that_is_not_text(tiny_reward_model):
    with pytest.raises(TypeError, match=r"responses\[1\] is a int"):
        tiny_reward_model.score(PROMPTS[:2], ["fine", 42])
    with pytest.raises(TypeError, match=r"prompts\[0\] is a NoneType"):
        tiny_reward_model.score([None], ["fine"])


def test_score_names_a_malformed_message(tiny_reward_model):
    with pytest.raises(TypeError, match=r"prompts\[0\], message 0"):
        tiny_reward_model.score([[{"text": "hi"}]], ["fine"])


# -- loading -------------------------------------------------------------------------------------------------------


def test_from_pretrained_refuses_a_causal_lm_checkpoint_whose_head_would_be_random(tiny_model_dir):
    with pytest.raises(ValueError, match="LlamaForCausalLM checkpoint, not a reward model"):
        RewardModel.from_pretrained(tiny_model_dir)


def test_saved_full_reward_model_reloads_with_identical_scores(tiny_reward_model, tmp_path):
    tiny_reward_model.model.save_pretrained(tmp_path)
    tiny_reward_model.tokenizer.save_pretrained(tmp_path)
    reloaded = RewardModel.from_pretrained(tmp_path)
    assert reloaded.device.type == "cpu"
    assert reloaded.score(PROMPTS, RESPONSES) == pytest.approx(tiny_reward_model.score(PROMPTS, RESPONSES), abs=1e-6)


def test_demo_reward_model_missing_without_training_says_how_to_train_it():
    from prefkit.demo import load_demo_reward_model

    with pytest.raises(FileNotFoundError, match="prefkit reward --preset demo"):
        load_demo_reward_model(train_if_missing=False)
