"""prefkit.IterativeDPOTrainer: each round samples from the policy the previous round trained, the held-out reward
rises over rounds, a rerun resumes at the first unfinished round, the reference is the one the config names, and bad
input fails before a model loads."""

import json
import math
import os
import shutil

import pytest

from prefkit import IterativeDPOConfig, IterativeDPOTrainer
from prefkit.cli import main as prefkit
from prefkit.data.io import read_jsonl
from prefkit.presets import SENTIMENT_HELDOUT, SENTIMENT_PROMPTS
from prefkit.rl import RewardFunction
from prefkit.trainers import iterative_dpo
from prefkit.trainers.iterative_dpo import pair_indices, policy_fingerprint, sample_and_score
from prefkit.trainers.startup import load_model_for_training

TRAIN_PROMPTS = read_jsonl(SENTIMENT_PROMPTS)
HELDOUT_PROMPTS = [row["prompt"] for row in read_jsonl(SENTIMENT_HELDOUT)]


def digit_share(prompts, completions):
    """Share of digits in each answer: a reward whose optimum (all digits) is known and far from the tiny model's
    ~2% at random, so a rise on held-out prompts is learning, not noise."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def make_config(output_dir, **overrides) -> IterativeDPOConfig:
    settings = dict(
        output_dir=str(output_dir),
        num_rounds=2,
        samples_per_prompt=4,
        prompts_per_round=16,  # a fresh random 16 of the 72 prompts each round
        max_new_tokens=8,
        learning_rate=3e-2,  # full fine-tuning of a random 2-layer model: large steps move it in seconds
        lr_scheduler_type="constant",
        max_steps=4,  # per round: about 2 epochs over ~14 pairs
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        eval_max_new_tokens=8,
        max_length=128,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        bf16=False,
        gradient_checkpointing=False,
        seed=0,
    )
    settings.update(overrides)
    return IterativeDPOConfig(**settings)


def run(model_dir, output_dir, eval_prompts=HELDOUT_PROMPTS, **overrides):
    trainer = IterativeDPOTrainer(model_dir, args=make_config(output_dir, **overrides), train_dataset=TRAIN_PROMPTS,
                                  reward=digit_share, eval_prompts=eval_prompts)
    return trainer.train()


@pytest.fixture(scope="module")
def two_rounds(tiny_model_dir, tmp_path_factory):
    """Two rounds of full fine-tuning, evaluated on the 24 held-out prompts; shared by the tests that only read it."""
    output_dir = tmp_path_factory.mktemp("iterative") / "run"
    rounds = run(tiny_model_dir, output_dir)
    return output_dir, rounds


def file_times(folder) -> dict[str, int]:
    return {os.path.relpath(os.path.join(root, name), folder): os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, names in os.walk(folder) for name in names}


# --------------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------------


def test_round_2_pairs_say_that_round_1s_policy_produced_them(two_rounds):
    output_dir, rounds = two_rounds
    round_1_pairs = read_jsonl(output_dir / "round-1" / "pairs.jsonl")
    round_2_pairs = read_jsonl(output_dir / "round-2" / "pairs.jsonl")
    assert {p["round"] for p in round_1_pairs} == {1} and {p["round"] for p in round_2_pairs} == {2}
    assert {p["generated_by"]["policy"] for p in round_1_pairs} == {"initial"}
    round_1_weights = policy_fingerprint(output_dir / "round-1" / "model")
    assert rounds[0]["fingerprint"] == round_1_weights
    assert {(p["generated_by"]["round"], p["generated_by"]["fingerprint"]) for p in round_2_pairs} == {(1, round_1_weights)}
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in round_1_pairs + round_2_pairs)


def test_the_initial_model_reproduces_round_1s_samples_but_not_round_2s(two_rounds, tiny_model_dir):
    output_dir, _ = two_rounds
    args = make_config(output_dir)
    initial_model, tokenizer = load_model_for_training(tiny_model_dir, args)

    def resample(round_index):
        recorded = read_jsonl(output_dir / f"round-{round_index}" / "samples.jsonl")
        again = sample_and_score(initial_model, tokenizer, [{"prompt": r["prompt"]} for r in recorded],
                                 RewardFunction(digit_share), round_index=round_index, num_samples=4,
                                 max_new_tokens=8, batch_size=args.sampling_batch_size, seed=args.seed)
        return [r["completions"] for r in recorded], [r["completions"] for r in again]

    recorded, again = resample(1)
    assert recorded == again  # same seeds, same model: the comparison below is meaningful
    recorded, again = resample(2)
    assert sum(a != b for a, b in zip(recorded, again)) > len(recorded) // 2


def test_held_out_reward_rises_over_rounds_and_rounds_json_and_png_are_written(two_rounds):
    output_dir, rounds = two_rounds
    summary = json.loads((output_dir / "rounds.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2] and summary["rounds"] == rounds
    held_out = [rounds[0]["eval"]["initial_reward"]] + [r["eval"]["reward"] for r in rounds]
    # digit share on the 24 held-out prompts: about 0.02 at the start; 0.18 (seed 0) or 0.2 (seed 1) after two rounds,
    # while one round may still be within noise of the start
    assert held_out[2] > held_out[0] + 0.05, held_out
    assert sum(held_out[1:]) / 2 > held_out[0], held_out
    assert rounds[1]["eval"]["kl"] > 0
    assert (output_dir / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (output_dir / "round-2" / "eval" / "eval.json").is_file()
    # output_dir itself holds the last round's policy
    assert policy_fingerprint(output_dir) == rounds[1]["fingerprint"]


def test_with_reference_previous_round_each_round_starts_at_its_reference(two_rounds):
    _, rounds = two_rounds
    # DPO's loss is exactly ln 2 while the policy equals its reference: true at round 2's first step only if the
    # reference is round 1's policy, which round 2 starts from.
    assert [r["train"]["first_loss"] for r in rounds] == pytest.approx([math.log(2)] * 2, abs=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------------------------------


QUICK_ROUND = dict(prompts_per_round=4, max_steps=1)  # the round a resumed run adds: only that it runs matters


@pytest.fixture
def count_sampled_rounds(monkeypatch):
    sampled = []

    def counting(*args, round_index, **kwargs):
        sampled.append(round_index)
        return sample_and_score(*args, round_index=round_index, **kwargs)

    monkeypatch.setattr(iterative_dpo, "sample_and_score", counting)
    return sampled


def test_a_rerun_with_more_rounds_continues_without_redoing_finished_ones(two_rounds, tiny_model_dir, tmp_path,
                                                                           count_sampled_rounds):
    finished, _ = two_rounds
    output_dir = tmp_path / "run"
    shutil.copytree(finished, output_dir)
    before = {r: file_times(output_dir / f"round-{r}") for r in (1, 2)}

    rounds = run(tiny_model_dir, output_dir, eval_prompts=None, num_rounds=3, **QUICK_ROUND)

    assert count_sampled_rounds == [3]
    assert {r: file_times(output_dir / f"round-{r}") for r in (1, 2)} == before
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert rounds[2]["generated_by"]["fingerprint"] == policy_fingerprint(output_dir / "round-2" / "model")
    assert len(json.loads((output_dir / "rounds.json").read_text())["rounds"]) == 3


def test_a_round_without_its_completion_marker_is_run_again(two_rounds, tiny_model_dir, tmp_path, count_sampled_rounds):
    finished, _ = two_rounds
    output_dir = tmp_path / "run"
    shutil.copytree(finished, output_dir)
    (output_dir / "round-2" / "round.json").unlink()  # killed after training round 2, before marking it finished
    round_1 = file_times(output_dir / "round-1")

    rounds = run(tiny_model_dir, output_dir, eval_prompts=None, **QUICK_ROUND)

    assert count_sampled_rounds == [2]
    assert file_times(output_dir / "round-1") == round_1
    assert (output_dir / "round-2" / "round.json").is_file() and [r["round"] for r in rounds] == [1, 2]


# --------------------------------------------------------------------------------------------------------------------
# The reference under LoRA
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_round_1(tiny_model_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("iterative-lora") / "run"
    run(tiny_model_dir, output_dir, eval_prompts=None, **LORA, num_rounds=1)
    return output_dir


LORA = dict(use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.0, prompts_per_round=8, samples_per_prompt=2,
            max_steps=3)


@pytest.mark.parametrize("reference,starts_at_reference", [("previous_round", True), ("initial", False)])
def test_under_lora_the_reference_is_the_previous_adapter_or_the_base(lora_round_1, tiny_model_dir, tmp_path,
                                                                      reference, starts_at_reference):
    output_dir = tmp_path / "run"
    shutil.copytree(lora_round_1, output_dir)
    rounds = run(tiny_model_dir, output_dir, eval_prompts=None, **{**LORA, "max_steps": 1}, num_rounds=2,
                 reference=reference)
    first_loss = rounds[1]["train"]["first_loss"]
    # round 2 starts from adapter 1: its loss is ln 2 against a frozen copy of adapter 1, not against the bare base
    assert (first_loss == pytest.approx(math.log(2), abs=1e-6)) is starts_at_reference, first_loss
    saved = sorted(os.listdir(output_dir / "round-2" / "model"))
    assert "adapter_model.safetensors" in saved and "ref" not in saved  # only the policy's adapter is saved


# --------------------------------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------------------------------


def test_best_vs_worst_pairs_the_highest_with_the_lowest_reward():
    assert pair_indices(["a", "b", "c", "d"], [0.2, 0.9, -0.5, 0.1], "best_vs_worst") == [(1, 2)]


def test_empty_and_repeated_answers_and_ties_make_no_pair():
    assert pair_indices(["a", "", "a"], [0.0, 5.0, 9.0], "best_vs_worst") == []
    assert pair_indices(["a", "b"], [0.5, 0.5], "best_vs_worst") == []
    assert pair_indices(["a", "b"], [0.9, 0.5], "best_vs_worst", margin=0.4) == []


def test_all_above_margin_pairs_every_two_answers_far_enough_apart_higher_first():
    pairs = pair_indices(["a", "b", "c"], [0.0, 1.0, 0.3], "all_above_margin", margin=0.2)
    assert sorted(pairs) == [(1, 0), (1, 2), (2, 0)]
    assert pair_indices(["a", "b", "c"], [0.0, 1.0, 0.1], "all_above_margin", margin=0.2) == [(1, 0), (1, 2)]


# --------------------------------------------------------------------------------------------------------------------
# Bad input: a clear error before any model loads
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field,value,message", [
    ("num_rounds", 0, "num_rounds must be at least 1"),
    ("samples_per_prompt", 1, "samples_per_prompt must be at least 2"),
    ("pair_strategy", "random", "pair_strategy must be one of best_vs_worst, all_above_margin"),
    ("reference", "base", "reference must be one of previous_round, initial"),
    ("temperature", 0.0, "temperature must be > 0"),
])
def test_bad_settings_are_rejected_by_the_config(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        make_config(tmp_path, **{field: value})


def test_every_bad_setting_is_named_in_one_error(tmp_path):
    with pytest.raises(ValueError) as error:
        make_config(tmp_path, num_rounds=0, samples_per_prompt=1)
    assert "num_rounds" in str(error.value) and "samples_per_prompt" in str(error.value)


def test_prompts_without_a_prompt_column_fail_before_the_model_loads(tmp_path):
    # The model does not exist: reaching the point of loading it would raise a different error.
    with pytest.raises(ValueError, match="column 'prompt': is missing"):
        IterativeDPOTrainer(str(tmp_path / "no-such-model"), args=make_config(tmp_path),
                            train_dataset=[{"question": "Hi?"}], reward=digit_share)


def test_a_missing_reward_fails_before_the_model_loads(tmp_path):
    with pytest.raises(ValueError, match="needs a reward"):
        IterativeDPOTrainer(str(tmp_path / "no-such-model"), args=make_config(tmp_path), train_dataset=TRAIN_PROMPTS)


@pytest.mark.parametrize("flags,message", [
    (["--num_rounds", "0"], "num_rounds must be at least 1"),
    (["--samples_per_prompt", "1"], "samples_per_prompt must be at least 2"),
    (["--pair_strategy", "random"], "pair_strategy"),
    (["--dataset_name", "NO_PROMPTS"], "'prompt' column"),
])
def test_the_command_reports_bad_input_in_one_error_line(tmp_path, capsys, flags, message):
    no_prompts = tmp_path / "questions.jsonl"
    no_prompts.write_text(json.dumps({"question": "Hi?"}) + "\n")
    argv = ["dpo-iterative", "--dataset_name", str(SENTIMENT_PROMPTS), "--reward", "vader", "--output_dir",
            str(tmp_path / "out"), "--model_name_or_path", str(tmp_path / "no-such-model"), "--report_to", "none"]
    argv += [str(no_prompts) if flag == "NO_PROMPTS" else flag for flag in flags]
    assert prefkit(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
    assert "Traceback" not in err


def test_help_is_one_screen_whose_flags_all_exist(capsys):
    import re

    assert prefkit(["dpo-iterative", "--help"]) == 0
    short = capsys.readouterr().out
    assert prefkit(["dpo-iterative", "--help-all"]) == 0
    full = capsys.readouterr().out
    assert len(short.splitlines()) < 60 and "Examples:\n  prefkit dpo-iterative" in short
    shown = set(re.findall(r"^  (--\w+)", short, flags=re.MULTILINE)) - {"--config"}
    assert {"--num_rounds", "--samples_per_prompt", "--reward", "--reference"} <= shown
    assert [flag for flag in sorted(shown) if f"{flag} " not in full] == []


def test_the_example_config_parses_and_names_files_that_exist(monkeypatch):
    from pathlib import Path

    from prefkit.commands.dpo_iterative import command

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    dataset_args, training_args, _ = command().parse(["--config", "examples/dpo_iterative.yaml"])
    assert (repo / dataset_args.dataset_name).is_file() and (repo / training_args.eval_prompts).is_file()
    assert training_args.num_rounds == 3 and training_args.eval_reward == "vader"


# --------------------------------------------------------------------------------------------------------------------
# The command, the script, the Hub
# --------------------------------------------------------------------------------------------------------------------


def test_ctrl_c_names_the_round_a_rerun_resumes_at(two_rounds, tmp_path, capsys, monkeypatch):
    finished, _ = two_rounds
    output_dir = tmp_path / "run"
    shutil.copytree(finished, output_dir)

    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(IterativeDPOTrainer, "train", interrupt)
    argv = ["dpo-iterative", "--dataset_name", str(SENTIMENT_PROMPTS), "--reward", "vader", "--output_dir",
            str(output_dir), "--num_rounds", "4", "--report_to", "none"]
    assert prefkit(argv) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"interrupted after 2 finished round(s) in {output_dir}; rerun the same command to resume at round 3")


def test_the_script_is_the_command(capsys, monkeypatch):
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "dpo_iterative.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_.value.code == 0
    assert "--samples_per_prompt" in capsys.readouterr().out


def test_pushing_a_finished_run_uploads_its_rounds_data_but_not_each_rounds_policy(two_rounds, tiny_model_dir, tmp_path,
                                                                                    monkeypatch, count_sampled_rounds):
    import huggingface_hub

    finished, _ = two_rounds
    output_dir = tmp_path / "run"
    shutil.copytree(finished, output_dir)
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create_repo", repo_id))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    run(tiny_model_dir, output_dir, push_to_hub=True, hub_model_id="someone/iterative")

    assert count_sampled_rounds == []  # both rounds were finished: only the upload happened
    upload = dict(calls)["upload_folder"]
    assert ("create_repo", "someone/iterative") in calls
    assert upload["repo_id"] == "someone/iterative" and upload["folder_path"] == str(output_dir)
    assert "round-*/model/*" in upload["ignore_patterns"]


def test_with_full_fine_tuning_reference_initial_is_the_starting_model(two_rounds, tiny_model_dir, tmp_path):
    finished, _ = two_rounds
    output_dir = tmp_path / "run"
    shutil.copytree(finished, output_dir)
    rounds = run(tiny_model_dir, output_dir, eval_prompts=None, num_rounds=3, reference="initial", **QUICK_ROUND)
    # round 3 starts from round 2's weights, far (KL ~25 nats) from the starting model it is now compared with
    assert rounds[2]["train"]["first_loss"] != pytest.approx(math.log(2), abs=1e-3)


@pytest.mark.slow
def test_qlora_rounds_train_the_previous_adapter_on_the_exact_4bit_base(tiny_model_dir, tmp_path, caplog):
    rounds = run(tiny_model_dir, tmp_path / "run", eval_prompts=None, **{**LORA, "max_steps": 2}, quantization="4bit")
    # the policy starts each round at its reference (a frozen copy of the previous adapter on the same 4-bit base);
    # (the 4-bit kernels round differently with and without gradients: ~2e-4 here, a round of training moves it more)
    assert [r["train"]["first_loss"] for r in rounds] == pytest.approx([math.log(2)] * 2, abs=2e-3)
    # sampling before training must not leave bitsandbytes' CPU-packed weights to be converted back approximately
    assert "repacked by bitsandbytes" not in caplog.text
    assert rounds[1]["generated_by"]["fingerprint"] == policy_fingerprint(tmp_path / "run" / "round-1" / "model")


def test_pairs_sampled_through_the_chat_template_train_as_messages():
    from prefkit.trainers.iterative_dpo import dpo_row

    # TRL applies the chat template to conversational rows only: a text prompt the sampler rendered with the template
    # must become messages, or DPO would train on raw text the policy never saw
    assert dpo_row({"prompt": "Hi?", "chosen": "Hello!", "rejected": "No.", "round": 1}, chat=True) == {
        "prompt": [{"role": "user", "content": "Hi?"}], "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "No."}]}
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert dpo_row({"prompt": messages, "chosen": "Hello!", "rejected": "No."}, chat=True)["prompt"] == messages
    assert dpo_row({"prompt": "Hi?", "chosen": "Hello!", "rejected": "No."}, chat=False) == {
        "prompt": "Hi?", "chosen": "Hello!", "rejected": "No."}


def test_an_output_dir_under_a_file_is_an_error_before_the_model_loads(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    argv = ["dpo-iterative", "--dataset_name", str(SENTIMENT_PROMPTS), "--reward", "vader", "--output_dir",
            str(a_file / "out"), "--model_name_or_path", str(tmp_path / "no-such-model"), "--report_to", "none"]
    assert prefkit(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output_dir") and "Traceback" not in err
