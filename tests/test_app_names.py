"""The app knows a policy by its Hub name, not by the folder its weights were read from."""

from transformers import AutoModelForCausalLM

from prefkit.app.models import AppModels


def test_a_policy_read_from_a_local_copy_of_a_hub_model_is_named_by_its_hub_id(tiny_model_dir, tiny_tokenizer, tmp_path):
    # A Hugging Face cache snapshot of "HuggingFaceTB/TinyChat" (what the offline default's copy resolves to as well).
    snapshot = tmp_path / "models--HuggingFaceTB--TinyChat" / "snapshots" / "0123abc"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(snapshot)
    policy = AutoModelForCausalLM.from_pretrained(snapshot)
    models = AppModels.from_objects(policy, tiny_tokenizer, lambda prompts, completions, **kwargs: [0.0] * len(completions))
    assert models.policy.name == "TinyChat"
    assert "--" not in models.policy.name


def test_a_policy_from_a_folder_of_its_own_is_named_by_the_folder(tiny_model_dir, tiny_tokenizer, tmp_path):
    folder = tmp_path / "my-dpo-model"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(folder)
    models = AppModels.from_objects(
        AutoModelForCausalLM.from_pretrained(folder), tiny_tokenizer, lambda prompts, completions, **kwargs: [0.0] * len(completions)
    )
    assert models.policy.name == "my-dpo-model"
