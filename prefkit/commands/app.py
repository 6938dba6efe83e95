"""Launch the Gradio app: Best-of-N reranking and pairwise preference labeling.

    prefkit app                                   # SmolLM2-135M-Instruct + the demo reward model, offline
    prefkit app --policy my/model --reward_model my/reward-model --n 8 --data_dir votes/
    PREFKIT_HUB_DATASET=me/votes HF_TOKEN=... prefkit app   # votes also sync to a Hub dataset

Every flag has an environment variable (see ``prefkit.app.settings``); flags win. The server starts at once and
the page shows the models' loading progress.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from .runner import CommandError, check_output_path, run_command

FLAGS = {
    "policy": (str, "Policy to sample from: Hub id or folder (env PREFKIT_POLICY)."),
    "reward_model": (str, "Reward model folder / Hub id, or 'demo' (env PREFKIT_REWARD_MODEL)."),
    "reward_function": (str, "A 'module:function' reward instead of a model (env PREFKIT_REWARD_FUNCTION)."),
    "compare_policy": (str, "A second model for 'two models' pairs (env PREFKIT_COMPARE_POLICY)."),
    "n": (int, "Default N of the Best-of-N tab and of best-vs-sample pairs (env PREFKIT_N)."),
    "max_n": (int, "Largest N offered (env PREFKIT_MAX_N)."),
    "temperature": (float, "Sampling temperature (env PREFKIT_TEMPERATURE)."),
    "top_p": (float, "Nucleus sampling threshold (env PREFKIT_TOP_P)."),
    "max_new_tokens": (int, "Longest answer in tokens (env PREFKIT_MAX_NEW_TOKENS)."),
    "max_generation_seconds": (
        float, "Seconds one generation may take; answers are cut there and say so (env PREFKIT_MAX_GENERATION_SECONDS)."
    ),
    "data_dir": (str, "Where votes are stored (env PREFKIT_DATA_DIR; default /data/prefkit on a Space, else ./prefkit-data)."),
    "prompts_file": (str, "Prompt list for the labeling tab, .txt or .jsonl (env PREFKIT_PROMPTS_FILE)."),
    "hub_dataset": (str, "Hub dataset repo to sync votes to; needs HF_TOKEN (env PREFKIT_HUB_DATASET)."),
    "sync_minutes": (float, "Minutes between sync commits (env PREFKIT_SYNC_MINUTES)."),
    "relabel_fraction": (float, "Share of pairs re-shown to a second annotator (env PREFKIT_RELABEL_FRACTION)."),
    "generations_per_minute": (int, "Per-session generation rate limit (env PREFKIT_GENERATIONS_PER_MINUTE)."),
    "votes_per_minute": (int, "Per-session vote rate limit (env PREFKIT_VOTES_PER_MINUTE)."),
    "max_prompt_chars": (int, "Longest prompt accepted (env PREFKIT_MAX_PROMPT_CHARS)."),
    "max_answer_chars": (int, "Longest rewritten answer accepted (env PREFKIT_MAX_ANSWER_CHARS)."),
    "login": (
        str, "Who is voting: 'huggingface' (sign-in; off a Space Gradio mocks it with this machine's Hub login), "
        "'name' (the name field) or 'auto' (sign-in on a Space with hf_oauth: true) (env PREFKIT_LOGIN)."
    ),
    "admins": (str, "Hub usernames, comma-separated, who may export, push and see the annotator tables; needs "
               "sign-in (env PREFKIT_ADMINS)."),
    "votes_per_day": (int, "Votes one annotator may cast per UTC day; 0: no quota (env PREFKIT_VOTES_PER_DAY)."),
    "generations_per_day": (
        int, "Generations one annotator may ask for per UTC day; 0: no quota (env PREFKIT_GENERATIONS_PER_DAY)."
    ),
    "global_generations_per_minute": (
        int, "Generations of all sessions together per minute (env PREFKIT_GLOBAL_GENERATIONS_PER_MINUTE)."
    ),
    "train_tab": (str, "The Train tab: on, off, or auto (on locally, off on a Space) (env PREFKIT_TRAIN_TAB)."),
    "train_method": (str, "The Train tab's default method: dpo or reward (env PREFKIT_TRAIN_METHOD)."),
    "train_max_steps": (int, "Optimizer steps of a Train-tab run (env PREFKIT_TRAIN_MAX_STEPS)."),
    "train_eval_prompts": (
        int, "Held-out prompts a trained policy is evaluated on against the base; 0: none (env PREFKIT_TRAIN_EVAL_PROMPTS)."
    ),
    "device": (str, "'auto', 'cpu' or 'cuda' (env PREFKIT_DEVICE)."),
    "host": (str, "Address to listen on (env GRADIO_SERVER_NAME; 0.0.0.0 on a Space)."),
    "port": (int, "Port (env GRADIO_SERVER_PORT; default: 7860, or the next free one when it is taken)."),
}


def make_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    for name, (kind, help_) in FLAGS.items():
        spellings = dict.fromkeys([f"--{name}", f"--{name.replace('_', '-')}"])
        parser.add_argument(*spellings, type=kind, default=None, help=help_)
    parser.add_argument("--share", action="store_true", help="Also open a public gradio.live link.")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run_command(lambda: (make_parser(prog).parse_args(argv),), run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines could carry URLs with tokens

    from ..app import AppSettings, choose_port, launch
    from ..app.settings import DEFAULT_PORT, app_url

    overrides = {name: getattr(args, name) for name in FLAGS}
    try:
        settings = AppSettings.from_env(**overrides)
    except ValueError as error:
        raise CommandError(str(error)) from None
    check_output_path(settings.data_dir, "--data_dir", folder=True)
    port = choose_port(settings.server_name, settings.port)  # a taken --port is an error before any model loads
    print(f"prefkit app: policy {settings.policy}, reward {settings.reward_function or settings.reward_model}, "
          f"votes in {settings.data_dir}" + (f", syncing to {settings.hub_dataset}" if settings.hub_dataset and settings.hub_token else ""),
          flush=True)
    moved = f" (port {DEFAULT_PORT} is taken)" if settings.port is None and port != DEFAULT_PORT else ""
    print(f"prefkit app: open {app_url(settings.server_name, port)}{moved}", flush=True)
    launch(dataclasses.replace(settings, port=port), share=args.share)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
