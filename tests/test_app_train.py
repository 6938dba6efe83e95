"""The Train tab: votes -> a background `prefkit dpo` run -> a new source in the app, evaluated against the base."""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from prefkit.app import AppModels, AppSettings, build_app  # noqa: E402
from prefkit.app.logic import MODE_TWO_MODELS, AppError, make_pair, summary, vote_from_pair  # noqa: E402
from prefkit.app.train_tab import (  # noqa: E402
    TrainRunner,
    error_message,
    parse_log_line,
    read_training_logs,
    status_markdown,
    systematic_resample,
)
from prefkit.data.votes import Vote, VoteStore  # noqa: E402
from helpers import start_app  # noqa: E402

TOKEN = "hf_train_tab_secret_0123456789"
PROMPTS = ["Tell me about tea.", "Write a poem.", "How do I make a cup of tea?"]
DPO_LABEL = "DPO (a LoRA adapter on the policy)"


def vowel_reward(prompts, responses):
    return [sum(response.count(v) for v in "aeiou") + len(response) / 1000 for response in responses]


def add_votes(store: VoteStore, count: int = 6) -> None:
    for index in range(count):
        store.append(Vote.new(
            prompt=PROMPTS[index % 2], response_a=f"A warm and kind answer, number {index}.", response_b="No.",
            verdict="a", source_a="tiny", source_b="tiny", annotator=f"annotator-{index % 2}",
        ))


def make_settings(data_dir, **overrides) -> AppSettings:
    values = dict(data_dir=str(data_dir), n=2, max_new_tokens=8, relabel_fraction=0.0, train_tab="on",
                  train_max_steps=2, train_eval_prompts=2, hub_token=TOKEN)
    return AppSettings(**{**values, **overrides})


def make_models(tiny_model_dir) -> AppModels:
    from prefkit.models import load_model

    policy, tokenizer = load_model(tiny_model_dir)
    return AppModels.from_objects(policy.eval(), tokenizer, vowel_reward, policy_name="tiny")


def wait_for_state(runner: TrainRunner, states, timeout: float = 300.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = runner.latest()
        if run is not None and run["state"] in states:
            return run
        time.sleep(0.5)
    raise AssertionError(f"the run did not reach {states} in {timeout:.0f} s: {runner.latest()}")


def wait_until(condition, timeout: float = 120.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """An app on six votes whose Train tab ran DPO to the end (started through the page's API)."""
    data_dir = tmp_path_factory.mktemp("train-app")
    store = VoteStore(data_dir)
    add_votes(store)
    models = make_models(tiny_model_dir)
    settings = make_settings(data_dir)
    previous = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = TOKEN  # the run's process sees the token the way a Space secret is seen
    try:
        demo = build_app(store=store, settings=settings, models=models, prompts=PROMPTS, seed=0)
        demo.queue()
        _, url, _ = start_app(demo)
        client = Client(url, verbose=False)
        client.predict(DPO_LABEL, "keep", 2, api_name="/train_start")
        runner = demo.prefkit_train
        run = wait_for_state(runner, ("finished", "failed", "cancelled"))
        assert run["state"] == "finished", run
        yield dict(demo=demo, client=client, runner=runner, run=run, store=store, models=models, settings=settings,
                   data_dir=data_dir)
    finally:
        if previous is None:
            os.environ.pop("HF_TOKEN", None)
        else:
            os.environ["HF_TOKEN"] = previous
    demo.close()


@pytest.mark.slow
def test_a_finished_run_is_named_after_its_base_and_votes_and_shows_its_loss(trained):
    run = trained["run"]
    assert run["name"].startswith("tiny + dpo-6-") and "/" not in run["name"]
    assert (run["votes"], run["rows"]) == (6, 6)
    logs = read_training_logs(trained["runner"].folder / run["run_id"])
    assert [int(record["step"]) for record in logs] == [1, 2]
    assert logs[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)  # DPO starts at log 2: policy == reference


@pytest.mark.slow
def test_the_trained_policy_is_the_second_model_of_the_next_pairs_and_reaches_the_leaderboard(trained):
    models, run, store = trained["models"], trained["run"], trained["store"]
    wait_until(lambda: models.compare is not None, what="the trained policy to be registered")
    assert models.compare.name == run["name"]

    pair = make_pair(models, "Tell me about tea.", MODE_TWO_MODELS, n=2, temperature=0.8, top_p=0.95,
                     max_new_tokens=8, rng=random.Random(0))
    assert (pair.source_a, pair.source_b) == ("tiny", run["name"])
    store.append(vote_from_pair(pair, "left", strength=None, rewrite=None, annotator="a1", session="s1"))

    board = summary(store.read())["leaderboard"]
    assert set(board["model"]) == {"tiny", run["name"]}


@pytest.mark.slow
def test_the_tab_shows_the_evaluation_against_the_base_with_intervals(trained):
    evaluation = trained["run"]["evaluation"]
    assert [p["name"] for p in evaluation["policies"]] == ["tiny", trained["run"]["name"]]
    assert evaluation["settings"]["num_prompts"] == 2

    status, _, table = trained["client"].predict(api_name="/train_status")[:3]
    assert "Finished" in status and "Compare &amp; label" not in status
    rows = table["data"]
    assert [row[0] for row in rows] == ["tiny (base)", trained["run"]["name"]]
    assert rows[1][3].count("[") == 1  # the win rate against the base, with its interval


@pytest.mark.slow
def test_a_new_app_object_on_the_same_folder_reads_the_run_back_and_registers_it_again(trained, tiny_model_dir):
    models = make_models(tiny_model_dir)
    runner = TrainRunner(trained["settings"], trained["store"], models, PROMPTS)

    run = runner.latest()
    assert (run["run_id"], run["state"]) == (trained["run"]["run_id"], "finished")
    wait_until(lambda: models.compare is not None, what="the reloaded app to register the trained policy")
    assert models.compare.name == trained["run"]["name"]


@pytest.mark.slow
def test_pushing_uploads_the_adapter_and_no_file_holds_the_token(trained, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create_repo", repo_id, private))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    message = trained["client"].predict("me/tiny-dpo", api_name="/train_push")

    assert "https://huggingface.co/me/tiny-dpo" in message and TOKEN not in message
    assert calls[0] == ("token", TOKEN) and calls[1] == ("create_repo", "me/tiny-dpo", True)
    upload = calls[2][1]
    folder = Path(upload["folder_path"])
    assert (folder / "adapter_model.safetensors").exists()
    assert "me/tiny-dpo" in (folder / "README.md").read_text()
    written = [path for path in Path(trained["data_dir"]).rglob("*") if path.is_file()]
    assert len(written) > 10
    assert not [path for path in written if TOKEN.encode() in path.read_bytes()]


def test_cancel_kills_the_run_and_its_process_group_and_one_run_goes_at_a_time(tiny_model_dir, tmp_path):
    store = VoteStore(tmp_path)
    add_votes(store)
    runner = TrainRunner(make_settings(tmp_path, train_max_steps=100000), store, make_models(tiny_model_dir), PROMPTS)
    run = runner.start("dpo", "keep")
    with pytest.raises(AppError, match="one run at a time"):
        runner.start("dpo", "keep")

    cancelled = runner.cancel()

    assert cancelled["state"] == "cancelled"
    with pytest.raises(ProcessLookupError):
        os.killpg(run["pid"], 0)  # nobody left in the run's process group
    assert "Cancelled" in status_markdown(cancelled, [])
    assert len(store.read()) == 6


@pytest.mark.slow  # the command starts (imports TRL) before it rejects the flag: 15-45 s here
def test_a_crash_shows_the_commands_error_line_and_leaves_the_votes_alone(tiny_model_dir, tmp_path):
    store = VoteStore(tmp_path)
    add_votes(store)
    before = {path: path.read_bytes() for path in Path(tmp_path, "votes").glob("*")}
    runner = TrainRunner(make_settings(tmp_path, train_args="--no_such_flag 1"), store, make_models(tiny_model_dir))
    runner.start("dpo", "keep")

    run = wait_for_state(runner, ("failed", "finished"), timeout=180)

    assert run["state"] == "failed" and run["exit_code"] == 2
    assert run["error"].startswith("error:") and "--no_such_flag" in run["error"]
    assert "--no_such_flag" in status_markdown(run, [])
    assert {path: path.read_bytes() for path in Path(tmp_path, "votes").glob("*")} == before


def test_too_few_training_pairs_is_a_message_not_a_run(tiny_model_dir, tmp_path):
    store = VoteStore(tmp_path)
    add_votes(store, count=1)
    runner = TrainRunner(make_settings(tmp_path), store, make_models(tiny_model_dir))

    with pytest.raises(AppError, match="at least 2"):
        runner.start("dpo", "keep")
    assert runner.latest() is None


def test_train_settings_are_checked_and_the_tab_is_off_on_a_space_unless_turned_on(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="train_args may not set --output_dir"):
        AppSettings(data_dir=str(tmp_path), train_args="--output_dir elsewhere --beta 0.2").check()
    with pytest.raises(ValueError, match="train_method='ppo' must be one of dpo, reward"):
        AppSettings.from_env({"PREFKIT_TRAIN_METHOD": "ppo"}, data_dir=str(tmp_path))
    assert AppSettings(data_dir=str(tmp_path)).train_tab_enabled
    monkeypatch.setenv("SPACE_ID", "me/space")
    assert not AppSettings(data_dir=str(tmp_path)).train_tab_enabled
    assert AppSettings.from_env({"PREFKIT_TRAIN_TAB": "on"}, data_dir=str(tmp_path)).train_tab_enabled


def test_prefkit_app_flags_set_the_train_settings(tmp_path):
    from prefkit.commands.app import FLAGS, make_parser

    args = make_parser().parse_args(["--train_tab", "off", "--train-max-steps", "5", "--train_method", "reward",
                                     "--data_dir", str(tmp_path)])
    settings = AppSettings.from_env({}, **{name: getattr(args, name) for name in FLAGS})

    assert (settings.train_tab_enabled, settings.train_max_steps, settings.train_method) == (False, 5, "reward")


def test_the_trainers_log_lines_are_read_as_numbers():
    line = "{'loss': '0.6931', 'grad_norm': '1.395', 'rewards/margins': '0', 'epoch': '0.1667'}"
    assert parse_log_line(line) == {"loss": 0.6931, "grad_norm": 1.395, "rewards/margins": 0.0, "epoch": 0.1667}
    assert parse_log_line("prefkit dpo: model saved to out") is None
    assert parse_log_line("{not python}") is None


def test_the_error_shown_is_the_error_line_else_the_end_of_stderr(tmp_path):
    (tmp_path / "stderr.log").write_text("warning: slow\nerror: --dataset_name x.jsonl: No such file\n")
    assert error_message(tmp_path, 2) == "error: --dataset_name x.jsonl: No such file"
    (tmp_path / "stderr.log").write_text("Traceback (most recent call last):\n  File ...\nRuntimeError: boom\n")
    assert error_message(tmp_path, 1).endswith("RuntimeError: boom")


def test_systematic_resampling_gives_each_row_its_share_of_copies():
    weights = [0.9, 0.1, 0.5, 0.5, 1.0]
    n, total = len(weights), sum(weights)
    for seed in range(20):
        counts = systematic_resample(weights, seed=seed)
        assert sum(counts) == n
        assert all(math.floor(n * w / total) <= c <= math.ceil(n * w / total) for c, w in zip(counts, weights))
    mean = [sum(systematic_resample(weights, seed=s)[i] for s in range(4000)) / 4000 for i in range(n)]
    assert mean == pytest.approx([n * w / total for w in weights], abs=0.03)
    assert systematic_resample([1.0, 1.0, 1.0]) == [1, 1, 1]
    with pytest.raises(ValueError, match="every weight is 0"):
        systematic_resample([0.0, 0.0])


@pytest.mark.slow
def test_a_reward_run_under_the_weight_policy_gives_a_reward_model_that_is_not_a_source(tiny_model_dir, tmp_path):
    from prefkit.rewards import resolve_reward

    store = VoteStore(tmp_path)
    add_votes(store)
    models = make_models(tiny_model_dir)
    runner = TrainRunner(make_settings(tmp_path), store, models, PROMPTS)
    runner.start("reward", "weight")

    run = wait_for_state(runner, ("finished", "failed", "cancelled"), timeout=240)

    assert run["state"] == "finished" and run["name"].startswith("tiny + reward-6-"), run
    assert "resampled in proportion to their weight" in run["reliability_description"]
    assert models.compare is None and run["evaluation"] is None
    reward = resolve_reward(str(runner.folder / run["run_id"] / "model"))
    scores = reward(["Tell me about tea."] * 2, ["A warm and kind answer.", "No."])
    assert len(scores) == 2 and all(math.isfinite(score) for score in scores)
