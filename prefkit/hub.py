"""Model cards and Hub pushes for everything prefkit trains.

The trainers inherit :class:`ModelCardMixin`: ``trainer.push_to_hub()`` (from ``transformers.Trainer``) saves the
adapter or full model and the tokenizer, then writes the card built here and uploads the folder through
``huggingface_hub.HfApi`` (the one boundary tests replace).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from .version import __version__

_METHOD_PAPERS = {
    "dpo": ("Direct Preference Optimization: Your Language Model is Secretly a Reward Model", "2305.18290"),
    "kto": ("KTO: Model Alignment as Prospect Theoretic Optimization", "2402.01306"),
    "reward-model": ("Training language models to follow instructions with human feedback", "2203.02155"),
    "ppo": ("Proximal Policy Optimization Algorithms", "1707.06347"),
    "grpo": ("DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models", "2402.03300"),
    "rloo": ("Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs", "2402.14740"),
}


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def final_metrics(log_history: list[Mapping[str, Any]]) -> dict[str, float]:
    """The last logged value of each numeric metric in a ``Trainer.state.log_history``."""
    skip = {"epoch", "step", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second"}
    metrics: dict[str, float] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key not in skip and isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[key] = float(value)
    return metrics


def build_model_card(
    *,
    method: str,
    model_name: str,
    base_model: str | None,
    hub_model_id: str | None = None,
    datasets: list[str] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: list[str] | None = None,
    is_adapter: bool = False,
    pipeline_tag: str = "text-generation",
    usage: str | None = None,
):
    """A ``huggingface_hub.ModelCard`` that says what was trained, on what, how, and how well."""
    from huggingface_hub import ModelCard, ModelCardData

    all_tags = ["prefkit", method, "trl"] + [t for t in (tags or []) if t not in ("prefkit", method, "trl")]
    if is_adapter:
        all_tags += [t for t in ("peft", "lora") if t not in all_tags]
    card_data = ModelCardData(
        base_model=base_model,
        datasets=datasets or None,
        library_name="peft" if is_adapter else "transformers",
        tags=all_tags,
        pipeline_tag=pipeline_tag,
        model_name=model_name,
    )
    repo = hub_model_id or model_name
    lines = [
        f"# {model_name}",
        "",
        f"This model was trained with [prefkit](https://github.com/prefkit/prefkit) {__version__} using "
        f"**{method.upper() if method != 'reward-model' else 'Bradley-Terry reward modeling'}**"
        + (f", starting from [{base_model}](https://huggingface.co/{base_model})." if base_model else "."),
    ]
    if is_adapter:
        lines += ["", "It is a LoRA adapter: load it on top of the base model with `peft`."]
    if datasets:
        lines += ["", "Training data: " + ", ".join(f"[{d}](https://huggingface.co/datasets/{d})" for d in datasets) + "."]
    if hyperparameters:
        lines += ["", "## Training hyperparameters", "", "| hyperparameter | value |", "|---|---|"]
        lines += [f"| {key} | {_format_value(value)} |" for key, value in hyperparameters.items() if value is not None]
    if metrics:
        lines += ["", "## Final metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {_format_value(value)} |" for key, value in metrics.items()]
    lines += ["", "## Usage", "", "```python", usage or _default_usage(repo, is_adapter, pipeline_tag), "```"]
    lines += ["", "## Framework versions", "", f"- prefkit: {__version__}"]
    for package in ("trl", "transformers", "peft", "torch", "datasets"):
        try:
            from importlib.metadata import version

            lines.append(f"- {package}: {version(package)}")
        except Exception:
            pass
    if method in _METHOD_PAPERS:
        title, arxiv = _METHOD_PAPERS[method]
        lines += ["", "## Citation", "", f"{title} ([arXiv:{arxiv}](https://huggingface.co/papers/{arxiv}))"]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"
    return ModelCard(content)


def _default_usage(repo: str, is_adapter: bool, pipeline_tag: str) -> str:
    if pipeline_tag == "text-classification":
        return (
            "from prefkit import RewardModel\n\n"
            f'reward_model = RewardModel.from_pretrained("{repo}")\n'
            'print(reward_model.score(["How do I make tea?"], ["Boil water, then steep the bag for 3 minutes."]))'
        )
    if is_adapter:
        return (
            "from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n\n"
            f'model = AutoPeftModelForCausalLM.from_pretrained("{repo}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")'
        )
    return (
        "from transformers import pipeline\n\n"
        f'generator = pipeline("text-generation", model="{repo}")\n'
        'print(generator([{"role": "user", "content": "Suggest an activity to do with my teddy bear."}])[0]["generated_text"])'
    )


def name_adapter_bases(folder: str | os.PathLike) -> None:
    """Rewrite the ``adapter_config.json`` files of a saved folder (and of its subfolders, e.g. PPO's ``value/``, but
    not of its checkpoints) to name their base by its Hub id when the weights came from a local copy of it (the
    offline SmolLM2, a Hugging Face cache snapshot): that id is what loads the adapter on another machine, and no
    path of this one is saved or pushed.

    Done on the written files rather than on the in-memory config: PEFT reads the base's config from that name while
    saving, to see whether the vocabulary grew, and the local copy answers that without the Hub.
    """
    import json

    from .models import hub_id_of_folder

    for root, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith("checkpoint-")]
        if "adapter_config.json" not in names:
            continue
        path = os.path.join(root, "adapter_config.json")
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        hub_id = hub_id_of_folder(config.get("base_model_name_or_path"))
        if hub_id is None:
            continue
        config["base_model_name_or_path"] = hub_id
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(config, indent=2, sort_keys=True))  # PEFT's own layout


class ModelCardMixin:
    """Gives a ``transformers.Trainer`` subclass prefkit's model card, and keeps the Hub token out of saved files.

    Set ``_card_method`` and override :meth:`card_hyperparameters`.
    """

    _card_method = "dpo"
    _card_pipeline_tag = "text-generation"
    #: Dataset id(s) named in the card of every save (scripts set it from --dataset_name).
    card_dataset_name: str | list[str] | None = None

    def _save(self, output_dir: str | None = None, state_dict=None):
        # transformers pickles the whole TrainingArguments into training_args.bin, hub_token included, and
        # push_to_hub uploads that file. Blank the token while saving so it never reaches disk or the Hub.
        token = getattr(self.args, "hub_token", None)
        self.args.hub_token = None
        try:
            result = self._save_files(output_dir, state_dict=state_dict)
        finally:
            self.args.hub_token = token
        if self.is_world_process_zero():
            name_adapter_bases(output_dir or self.args.output_dir)
        # PEFT's save_pretrained leaves a placeholder card; every saved folder gets the real one.
        self._write_card(output_dir or self.args.output_dir)
        return result

    def _save_files(self, output_dir: str | None = None, state_dict=None):
        """What a save writes (weights, tokenizer, training_args.bin); trainers with their own layout override this,
        never ``_save``, so the token and card handling above applies to them too."""
        return super()._save(output_dir, state_dict=state_dict)

    def card_hyperparameters(self) -> dict[str, Any]:
        args = self.args
        return {
            "learning_rate": args.learning_rate,
            "num_train_epochs": args.num_train_epochs,
            "max_steps": args.max_steps if args.max_steps > 0 else None,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "world_size": args.world_size,
            "seed": args.seed,
            **self.card_peft_hyperparameters(),
        }

    def card_peft_hyperparameters(self) -> dict[str, Any]:
        from .models import is_quantized

        model = self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model
        values: dict[str, Any] = {"quantization": getattr(self.args, "quantization", None) or (
            "4bit/8bit" if is_quantized(model) else None
        )}
        peft_config = getattr(model, "peft_config", None)
        if peft_config:
            config = next(iter(peft_config.values()))
            values.update(
                lora_r=getattr(config, "r", None),
                lora_alpha=getattr(config, "lora_alpha", None),
                lora_target_modules=sorted(config.target_modules)
                if isinstance(config.target_modules, (set, list))
                else config.target_modules,
            )
        return values

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None, **kwargs):
        if dataset_name is not None:
            self.card_dataset_name = dataset_name
        self._write_card(self.args.output_dir, model_name=model_name, tags=tags, dataset=kwargs.get("dataset"))

    def _write_card(self, folder: str, model_name: str | None = None, tags=None, dataset=None) -> None:
        if not self.is_world_process_zero():
            return
        from .models import model_id

        model = self.accelerator.unwrap_model(self.model)
        base = model_id(model)
        base_model = base if base and not os.path.isdir(base) else None
        datasets = dataset or self.card_dataset_name
        if isinstance(datasets, str):
            datasets = [datasets]
        datasets = [d for d in (datasets or []) if d and not os.path.exists(d)]
        card = build_model_card(
            method=self._card_method,
            model_name=model_name or os.path.basename(os.path.normpath(self.args.output_dir)),
            base_model=base_model,
            hub_model_id=self.hub_model_id,
            datasets=datasets,
            hyperparameters=self.card_hyperparameters(),
            metrics=final_metrics(self.state.log_history),
            tags=[tags] if isinstance(tags, str) else list(tags or []),
            is_adapter=hasattr(model, "peft_config"),
            pipeline_tag=self._card_pipeline_tag,
        )
        os.makedirs(folder, exist_ok=True)
        card.save(os.path.join(folder, "README.md"))
