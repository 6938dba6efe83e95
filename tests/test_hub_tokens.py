"""No trainer lets the Hub token out: after one step, save_model and push_to_hub (to a faked Hub), every byte written
under output_dir and every byte uploaded is searched for it, for each of prefkit's trainers."""

from __future__ import annotations

import os

import pytest
from datasets import Dataset

from helpers import separable_preference_rows

PROMPTS = [f"Say something kind about the number {i}." for i in range(8)]


def kindness(prompts, completions):
    return [float(len(c)) for c in completions]


class RecordingHub:
    """Replaces HfApi.create_repo / upload_folder; keeps the token each call authenticated with and the bytes of
    every file in each uploaded folder (a superset of what is uploaded, whatever the ignore patterns)."""

    def __init__(self):
        self.tokens: list[str | None] = []
        self.uploaded: dict[str, bytes] = {}
        self.commit_messages: list[str] = []

    def install(self, monkeypatch):
        from huggingface_hub import HfApi, RepoUrl

        def create_repo(api, repo_id, token=None, **kwargs):
            self.tokens.append(token)
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(api, repo_id, folder_path, token=None, commit_message=None, **kwargs):
            self.tokens.append(token)
            self.commit_messages.append(str(commit_message))
            for path, data in files_under(folder_path).items():
                self.uploaded[f"{repo_id}:{path}"] = data
            return f"https://huggingface.co/{repo_id}/commit/0"

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        return self


def files_under(folder) -> dict[str, bytes]:
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def common_args(output_dir, token, name):
    return dict(
        output_dir=str(output_dir), hub_token=token, hub_model_id=f"alice/tiny-{name}", max_steps=1, logging_steps=1,
        learning_rate=1e-3, report_to="none", save_strategy="no", bf16=False, disable_tqdm=True, use_peft=True,
        lora_r=4, lora_alpha=8, seed=0,
    )


def dpo(model_dir, output_dir, token):
    from prefkit import DPOConfig, DPOTrainer

    args = DPOConfig(**common_args(output_dir, token, "dpo"), per_device_train_batch_size=4, gradient_checkpointing=False)
    return DPOTrainer(model_dir, args=args, train_dataset=Dataset.from_list(separable_preference_rows(8)))


def kto(model_dir, output_dir, token):
    from prefkit import KTOConfig, KTOTrainer

    rows = [{"prompt": r["prompt"], "completion": r[column], "label": column == "chosen"}
            for r in separable_preference_rows(4) for column in ("chosen", "rejected")]
    args = KTOConfig(**common_args(output_dir, token, "kto"), per_device_train_batch_size=4, gradient_checkpointing=False)
    return KTOTrainer(model_dir, args=args, train_dataset=Dataset.from_list(rows))


def reward(model_dir, output_dir, token):
    from prefkit import RewardConfig, RewardTrainer

    args = RewardConfig(**common_args(output_dir, token, "reward"), per_device_train_batch_size=4, gradient_checkpointing=False)
    return RewardTrainer(model_dir, args=args, train_dataset=Dataset.from_list(separable_preference_rows(8)))


def grpo(model_dir, output_dir, token):
    from prefkit import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        **common_args(output_dir, token, "grpo"), per_device_train_batch_size=4, num_generations=4, max_completion_length=4
    )
    return GRPOTrainer(model_dir, reward_funcs=kindness, args=args, train_dataset=Dataset.from_dict({"prompt": PROMPTS}))


def rloo(model_dir, output_dir, token):
    from prefkit import RLOOConfig, RLOOTrainer

    args = RLOOConfig(
        **common_args(output_dir, token, "rloo"), per_device_train_batch_size=4, num_generations=4, max_completion_length=4
    )
    return RLOOTrainer(model_dir, reward_funcs=kindness, args=args, train_dataset=Dataset.from_dict({"prompt": PROMPTS}))


def ppo(model_dir, output_dir, token):
    from prefkit import PPOConfig, PPOTrainer

    args = PPOConfig(
        **common_args(output_dir, token, "ppo"), per_device_train_batch_size=4, max_completion_length=4, num_ppo_epochs=1,
        log_completions_steps=1,
    )
    return PPOTrainer(model_dir, reward_funcs=kindness, args=args, train_dataset=Dataset.from_dict({"prompt": PROMPTS}))


TRAINERS = {"dpo": dpo, "kto": kto, "reward": reward, "grpo": grpo, "rloo": rloo, "ppo": ppo}


@pytest.mark.parametrize("name", list(TRAINERS))
def test_hub_token_is_in_no_saved_and_no_uploaded_byte(name, tiny_model_dir, tmp_path, monkeypatch):
    secret = f"hf_fake_secret_{name}"
    hub = RecordingHub().install(monkeypatch)
    trainer = TRAINERS[name](tiny_model_dir, tmp_path / name, secret)
    trainer.train()
    trainer.save_model()
    trainer.push_to_hub()

    assert trainer.state.global_step == 1
    # The token did reach the Hub client, as the credential of every call; it is the files that must not hold it.
    assert hub.tokens and all(token == secret for token in hub.tokens)
    written = files_under(trainer.args.output_dir)
    assert "training_args.bin" in written and "README.md" in written
    leaks = [path for path, data in written.items() if secret.encode() in data]
    assert not leaks, f"{name} wrote the Hub token to {leaks}"
    assert any(path.endswith(":README.md") for path in hub.uploaded)
    leaks = [path for path, data in hub.uploaded.items() if secret.encode() in data]
    leaks += [message for message in hub.commit_messages if secret in message]
    assert not leaks, f"{name} uploaded the Hub token in {leaks}"


def test_the_private_trainer_save_hook_the_hub_mixin_overrides_still_exists_and_is_called_by_save_model():
    """ModelCardMixin overrides Trainer._save (transformers' private hook) to keep the token out of every save: if a
    transformers upgrade renames or re-signs it, or save_model stops calling it, the token would leak silently."""
    import inspect

    from transformers import Trainer

    assert callable(getattr(Trainer, "_save", None)), "transformers.Trainer._save is gone"
    assert list(inspect.signature(Trainer._save).parameters)[:3] == ["self", "output_dir", "state_dict"]
    assert "self._save(" in inspect.getsource(Trainer.save_model)
