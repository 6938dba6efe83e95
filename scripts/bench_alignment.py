"""The lecture's methods on one reward-KL plot, offline: which moves the model furthest for the KL it spends?

    python scripts/bench_alignment.py --quick                 # every method on a tiny random model: a smoke test
    python scripts/bench_alignment.py --output_dir bench-out  # the full run the docs report (hours on a CPU)
    python scripts/bench_alignment.py --methods base bon dpo rloo --output_dir bench-out

Setup. The policy is SmolLM2-135M-Instruct (offline copy) with LoRA. The **gold reward** is VADER sentiment of the
answer, in [-1, 1], on neutral everyday prompts; it stands in for people, and no method optimises it directly:

1. the base model answers the training prompts several times; the gold reward ranks its answers into pairs (the
   "human labels");
2. a **proxy reward model** (MiniLM, Bradley-Terry) trains on those pairs;
3. **DPO** trains on the same pairs (a beta sweep, as plain text; ``dpo_chat``: beta 0.1 on the same pairs as
   conversations, the chat-template text the policy samples and is evaluated through); **KTO** on the same labels
   without the pairing (each chosen answer a thumbs up, each rejected one a thumbs down, as conversations);
   **iterative DPO** with the same budget of labels and steps (3 rounds: the current policy answers 24 training
   prompts 4 times, the gold reward ranks the answers, DPO trains 16 steps on the pairs); **PPO-Clip + GAE**, **PPO with the KL penalty**, **REINFORCE**,
   **RLOO** and **GRPO** (prefkit) and TRL's **GRPOTrainer** / **RLOOTrainer** optimise the proxy reward model;
   **Best-of-N** picks by the proxy among N base samples (N = 1 ... 64);
4. every result is measured on **held-out prompts** by :func:`prefkit.evaluate`: gold reward (bootstrap interval),
   proxy reward, and KL to the base (k3, on the policy's own samples). Best-of-N reports the analytic bound
   log N - (N-1)/N and a measured estimate, the mean of log N + (N-1) log F(proxy of the pick), F the proxy's CDF
   estimated on 32 further base samples per prompt that are never candidates (noisy; ties in the proxy make the true
   KL lower than the bound). A pool of 64 candidates per prompt gives 64/N disjoint draws of Best-of-N.
5. every trained method's **gain** over the base is paired by prompt (the same held-out prompts, the same random
   numbers) with a bootstrap interval over prompts; the table's last column says whether the method met the target:
   a gain of at least 0.15 with an interval above zero, at no more KL than Best-of-16 spends (log 16 - 15/16).

Pairs and the proxy are cached in --output_dir with the settings that made them; a later invocation with the same
settings reuses them and merges its rows into results.json, so methods can be run (or re-run) one at a time.

Gold and proxy plotted against KL show reward over-optimisation (Gao et al., 2022): the proxy keeps rising while
the gold reward flattens or falls. Outputs in --output_dir: results.json, results.md (the table) and frontier.png.
What the numbers do not show: VADER rewards sentiment words, not helpfulness; one seed; small held-out set (see the
intervals). The quick mode runs every method on prefkit's tiny random test model (for the policy and the proxy's
backbone) with budgets far too small to learn anything: it checks that the pipeline runs, not how methods compare.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from prefkit.presets import (
    DPO_DEMO,
    GROUP_DEMO,
    ITERATIVE_DPO_DEMO,
    KTO_DEMO,
    LORA,
    PPO_DEMO,
    RL_DEMO,
    SENTIMENT_HELDOUT,
    SENTIMENT_PROMPTS,
)

ALL_METHODS = ["base", "bon", "dpo", "dpo_chat", "kto", "dpo_iterative", "ppo_clip_gae", "ppo_kl", "reinforce", "rloo", "grpo", "grpo_kl_in_loss", "trl_grpo", "trl_rloo"]


def prompts() -> tuple[list[str], list[str]]:
    """prefkit's bundled sentiment prompts: 72 for training (24 subjects, three templates: "Describe a power cut.",
    "Write two sentences about ...", "What do you think of ...?") and 24 held out, about 8 subjects never trained on."""
    from prefkit.data.io import read_jsonl

    return [r["prompt"] for r in read_jsonl(SENTIMENT_PROMPTS)], [r["prompt"] for r in read_jsonl(SENTIMENT_HELDOUT)]


def budgets(quick: bool) -> dict:
    if quick:
        return dict(train_prompts=8, heldout_prompts=6, samples_per_prompt=4, max_new_tokens=8, rm_epochs=1,
                    dpo_steps=2, kto_steps=4, dpo_betas=[0.1], dpo_rounds=2, dpo_round_prompts=4, rl_iterations=1, rl_batch=8, bon_ns=[1, 2, 4, 8], bon_reference=8,
                    eval_samples=1)
    # the training settings are prefkit's demo presets (prefkit.presets), so `prefkit ppo --preset demo` is a row here
    return dict(train_prompts=72, heldout_prompts=24, samples_per_prompt=4,
                max_new_tokens=RL_DEMO["max_completion_length"], rm_epochs=3, dpo_steps=DPO_DEMO["max_steps"],
                kto_steps=KTO_DEMO["max_steps"], dpo_rounds=ITERATIVE_DPO_DEMO["num_rounds"],
                dpo_round_prompts=ITERATIVE_DPO_DEMO["prompts_per_round"],
                dpo_betas=[0.05, 0.1, 0.3], rl_iterations=RL_DEMO["max_steps"], rl_batch=RL_DEMO["per_device_train_batch_size"],
                bon_ns=[1, 2, 4, 8, 16, 32, 64], bon_reference=32, eval_samples=4)


# What the shared pairs, the proxy and Best-of-N depend on: a run whose settings differ in these makes them anew (a
# method's own budget, such as dpo_steps, changes only that method's rows).
SETUP_BUDGETS = ("train_prompts", "heldout_prompts", "samples_per_prompt", "max_new_tokens", "rm_epochs", "bon_ns",
                 "bon_reference")


# The done-when of the benchmark: a trained method beats the base by this much gold reward, with a paired interval
# above zero, at no more KL than Best-of-16 spends (its analytic bound log 16 - 15/16).
TARGET_GAIN = 0.15
TARGET_KL = math.log(16) - 15 / 16
EVAL_BATCH = 24  # answers per generate call in the held-out evaluation


def gold(prompts, completions, **columns):
    from prefkit.rewards import vader_sentiment

    return vader_sentiment(prompts, completions)


# --------------------------------------------------------------------------------------------------------------------


def make_pairs(policy, tokenizer, train_prompts, b, seed):
    """Base samples of the training prompts, ranked by the gold reward into (chosen, rejected) pairs."""
    from prefkit.sampling import generate

    samples = generate(policy, tokenizer, train_prompts, b["samples_per_prompt"], max_new_tokens=b["max_new_tokens"],
                       temperature=1.0, top_k=0, seed=seed, batch_size=16)
    pairs = []
    for prompt, answers in zip(train_prompts, samples.by_prompt()):
        scored = sorted(zip(gold([prompt] * len(answers), answers), answers), reverse=True)
        for i in range(len(scored) // 2):  # best with worst, second best with second worst, ...
            (high, better), (low, worse) = scored[i], scored[-1 - i]
            if high > low and better.strip() and worse.strip():
                pairs.append({"prompt": prompt, "chosen": better, "rejected": worse})
    return pairs, len(train_prompts) * b["samples_per_prompt"]


def train_proxy(pairs, out, b, backbone):
    from datasets import Dataset

    from prefkit import RewardConfig, RewardModel, RewardTrainer
    from prefkit.models import DEFAULT_ENCODER

    args = RewardConfig(output_dir=str(out), num_train_epochs=b["rm_epochs"], per_device_train_batch_size=16,
                        learning_rate=1e-4, report_to="none", save_strategy="no", logging_steps=5, bf16=False,
                        disable_tqdm=True, max_length=256, seed=0, final_evaluation=False)
    trainer = RewardTrainer(backbone or DEFAULT_ENCODER, args=args, train_dataset=Dataset.from_list(pairs))
    trainer.train()
    trainer.save_model(str(out))
    return RewardModel.from_pretrained(str(out))


def lora_common(out, **extra):
    return dict(output_dir=str(out), **LORA, report_to="none", save_strategy="no", logging_steps=1, bf16=False,
                disable_tqdm=True, seed=0, **extra)


def run_dpo(policy_name, pairs, out, b, beta):
    from datasets import Dataset

    from prefkit import DPOConfig, DPOTrainer

    args = DPOConfig(**lora_common(out, **{**DPO_DEMO, "max_steps": b["dpo_steps"], "beta": beta}))
    trainer = DPOTrainer(policy_name, args=args, train_dataset=Dataset.from_list(pairs))
    trainer.train()
    trainer.save_model(str(out))  # the adapter, so the row can be measured again
    return trainer.model, trainer.processing_class


def as_chat(pairs):
    """The pairs as conversations (a user prompt, assistant answers): TRL then trains them through the chat template,
    the text the policy reads and writes when it is sampled and evaluated. The "dpo" rows train the same pairs as
    plain text (TRL's standard format: prompt + answer, no template), as they were measured."""
    from prefkit.trainers.iterative_dpo import dpo_row

    return [dpo_row(pair, chat=True) for pair in pairs]


def run_kto(policy_name, pairs, out, b):
    """KTO on the same labels without the pairing: every chosen answer a thumbs up, every rejected one a thumbs
    down (prefkit.data.labels.pairs_to_unpaired), as conversations."""
    from datasets import Dataset

    from prefkit import KTOConfig, KTOTrainer
    from prefkit.data.labels import pairs_to_unpaired

    args = KTOConfig(**lora_common(out, **{**KTO_DEMO, "max_steps": b["kto_steps"]}))
    trainer = KTOTrainer(policy_name, args=args, train_dataset=Dataset.from_list(pairs_to_unpaired(as_chat(pairs))))
    trainer.train()
    trainer.save_model(str(out))
    return trainer.model, trainer.processing_class


def run_iterative_dpo(policy_name, train_prompts, out, b, seed, labeller=gold):
    """Iterative DPO with offline DPO's budget of labels and steps (prefkit.presets.ITERATIVE_DPO_DEMO): each round
    the current policy answers a fresh subset of the training prompts, the gold reward ranks the answers (the same
    labeller as the offline pairs, now asked about the policy's own answers), DPO trains on the pairs."""
    from prefkit import IterativeDPOConfig, IterativeDPOTrainer
    from prefkit.models import load_policy
    from prefkit.trainers.iterative_dpo import finished_rounds

    rounds = b["dpo_rounds"]
    settings = {**ITERATIVE_DPO_DEMO, "num_rounds": rounds, "max_steps": max(1, b["dpo_steps"] // rounds),
                "prompts_per_round": b["dpo_round_prompts"], "samples_per_prompt": b["samples_per_prompt"],
                "max_new_tokens": b["max_new_tokens"]}
    args = IterativeDPOConfig(**lora_common(out, **settings))
    args.seed = seed
    trainer = IterativeDPOTrainer(policy_name, args=args, train_dataset=[{"prompt": p} for p in train_prompts],
                                  reward=labeller)
    resumed = bool(finished_rounds(out))  # an earlier invocation finished some rounds: its time is not counted here
    records = trainer.train()
    print("  rounds: " + "; ".join(f"{r['round']}: {r['num_pairs']} pairs, sampled gold {r['sample_reward_mean']:.3f}"
                                    for r in records))
    labels = sum(r["num_prompts"] * r["samples_per_prompt"] for r in records)
    return load_policy(str(out)), labels, resumed  # the adapter on its base, which resolves offline like any prefkit model


def rl_budget(b):
    """The RL settings that --quick shrinks (the full run's are the presets')."""
    return {"max_steps": b["rl_iterations"], "per_device_train_batch_size": b["rl_batch"],
            "max_completion_length": b["max_new_tokens"]}


def run_ppo(policy_name, proxy, train_prompts, out, b, **ppo):
    from datasets import Dataset

    from prefkit import PPOConfig, PPOTrainer

    args = PPOConfig(**lora_common(out, **{**PPO_DEMO, **rl_budget(b), **ppo}, log_completions=False))
    data = Dataset.from_list([{"prompt": p} for p in train_prompts])
    trainer = PPOTrainer(policy_name, reward_funcs=proxy.as_reward_func(name="proxy"), args=args, train_dataset=data)
    trainer.train()
    trainer.save_model(str(out))
    model = trainer.accelerator.unwrap_model(trainer.model)
    return getattr(model, "policy", model), trainer.processing_class


def run_trl(kind, policy_name, proxy, train_prompts, out, b):
    import trl
    from datasets import Dataset
    from peft import LoraConfig

    from prefkit.models import load_model

    model, tokenizer = load_model(policy_name)
    common = dict(output_dir=str(out), **{**GROUP_DEMO, **rl_budget(b)}, gradient_checkpointing=False, report_to="none",
                  save_strategy="no", logging_steps=1, bf16=False, disable_tqdm=True, seed=0)
    config = trl.GRPOConfig(**common) if kind == "grpo" else trl.RLOOConfig(**common)
    trainer_class = trl.GRPOTrainer if kind == "grpo" else trl.RLOOTrainer
    data = Dataset.from_list([{"prompt": p} for p in train_prompts])
    trainer = trainer_class(model=model, reward_funcs=proxy.as_reward_func(name="proxy"), args=config,
                            train_dataset=data, processing_class=tokenizer,
                            peft_config=LoraConfig(r=LORA["lora_r"], lora_alpha=LORA["lora_alpha"], target_modules="all-linear",
                                                   task_type="CAUSAL_LM"))
    trainer.train()
    trainer.save_model(str(out))
    return trainer.model, tokenizer


def best_of_n_curve(policy, tokenizer, proxy, heldout, b, seed, out):
    """Gold and proxy reward of the proxy's pick among N base samples, for every N.

    Each prompt has a pool of max(N) candidates and ``bon_reference`` more samples that are never candidates. For
    each N the candidates split into max(N)/N disjoint groups of N, one pick each, and a prompt's value is the mean
    over its groups (64 picks for N = 1, one for N = 64): every candidate is used, so small N are measured precisely.
    The gain is paired by prompt: the picks' gold minus the mean gold of all the prompt's candidates (the base's
    expected gold reward on that prompt). Every score is kept in ``out/bon_pool.json``.
    """
    from prefkit.policy_eval import bootstrap_interval
    from prefkit.sampling import generate

    candidates = max(b["bon_ns"])
    pool_size = candidates + b["bon_reference"]
    samples = generate(policy, tokenizer, heldout, pool_size, max_new_tokens=b["max_new_tokens"], temperature=1.0,
                       top_k=0, seed=seed, batch_size=max(1, 64 // pool_size))  # one prompt (its whole pool) or 64 sequences per call
    groups = samples.by_prompt()
    proxy_scores = [proxy.score([p] * len(a), a) for p, a in zip(heldout, groups)]
    gold_scores = [gold([p] * len(a), a) for p, a in zip(heldout, groups)]
    (out / "bon_pool.json").write_text(json.dumps([
        {"prompt": p, "completions": a, "proxy": r, "gold": g}
        for p, a, r, g in zip(heldout, groups, proxy_scores, gold_scores)]))
    rows = []
    for n in b["bon_ns"]:
        per_prompt_gold, per_prompt_proxy, per_prompt_gain, log_ratio = [], [], [], []
        for proxies, golds in zip(proxy_scores, gold_scores):
            rest = proxies[candidates:]  # never candidates, for any N: they estimate the proxy's CDF F
            picks = [max(range(start, start + n), key=lambda i: proxies[i]) for start in range(0, candidates, n)]
            per_prompt_gold.append(sum(golds[i] for i in picks) / len(picks))
            per_prompt_proxy.append(sum(proxies[i] for i in picks) / len(picks))
            per_prompt_gain.append(per_prompt_gold[-1] - sum(golds[:candidates]) / candidates)
            for i in picks:
                # pi_BoN(y) / pi(y) = N F(r(y))^(N-1) for a continuous reward
                below = sum(p < proxies[i] for p in rest) + 0.5 * sum(p == proxies[i] for p in rest)
                cdf = min(max(below / len(rest), 0.5 / len(rest)), 1.0)
                log_ratio.append(math.log(n) + (n - 1) * math.log(cdf))
        rows.append({
            "method": f"best-of-{n}", "gold": sum(per_prompt_gold) / len(per_prompt_gold),
            "gold_interval": bootstrap_interval(per_prompt_gold), "gain": sum(per_prompt_gain) / len(per_prompt_gain),
            "gain_interval": bootstrap_interval(per_prompt_gain),
            "proxy": sum(per_prompt_proxy) / len(per_prompt_proxy),
            "kl": max(0.0, sum(log_ratio) / len(log_ratio)), "kl_sem": None,
            "kl_analytic": math.log(n) - (n - 1) / n, "samples": n * len(heldout),
        })
    return rows


def evaluate_policies(policies, heldout, b, folder):
    """prefkit.evaluate on the held-out prompts, every policy with the same random numbers. The base's answers are
    the same in every call (same seed, batches and model), so they are sampled once, in the base row, and reused."""
    from prefkit import evaluate
    from prefkit.data.io import read_jsonl, write_jsonl

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "samples.jsonl").unlink(missing_ok=True)  # answers of an earlier model of the same name
    base_samples = folder.parent / "base" / "samples.jsonl"
    if folder.name != "base" and base_samples.exists():
        write_jsonl(read_jsonl(base_samples), folder / "samples.jsonl")
    return evaluate(policies, heldout, reward=gold, num_samples=b["eval_samples"], max_new_tokens=b["max_new_tokens"],
                    temperature=1.0, batch_size=EVAL_BATCH, output_dir=folder, progress=False)


def measure(name, base_pair, trained_pair, heldout, proxy, b, started, samples_used, out):
    """Held-out gold reward and KL of a trained policy (prefkit.evaluate), its gain over the base paired by prompt,
    and the proxy's mean on the same answers."""
    from prefkit.data.io import read_jsonl

    wall = round(time.perf_counter() - started, 1)  # training time; the evaluation below is not counted
    folder = out / "eval" / name.replace(" ", "_").replace("(", "").replace(")", "")
    report = evaluate_policies({"base": base_pair, name: trained_pair}, heldout, b, folder)
    answers = [r for r in read_jsonl(folder / "samples.jsonl") if r["policy"] == name]
    proxy_scores = proxy.score([r["prompt"] for r in answers], [r["completion"] for r in answers])
    policy = report[name]
    return {"method": name, "gold": policy.reward, "gold_interval": policy.reward_interval, "gain": policy.reward_gain,
            "gain_interval": policy.reward_gain_interval, "proxy": sum(proxy_scores) / len(proxy_scores), "kl": policy.kl_k3,
            "kl_sem": policy.kl_k3_sem, "win_rate": policy.win_rate, "length": policy.length, "wall_seconds": wall,
            "samples": samples_used}


def meets_target(row) -> str:
    """'yes' when a trained method gains >= TARGET_GAIN over the base with a paired interval above 0 at KL <= TARGET_KL."""
    if row["method"] == "base" or row["method"].startswith("best-of-") or row.get("gain") is None:
        return "-"
    failed = []
    if row["gain"] < TARGET_GAIN:
        failed.append(f"gain < {TARGET_GAIN}")
    if row["gain_interval"][0] <= 0:
        failed.append("interval reaches 0")
    if row["kl"] is not None and row["kl"] > TARGET_KL:
        failed.append(f"KL > {TARGET_KL:.2f}")
    return "yes" if not failed else "no: " + ", ".join(failed)


def plot(rows, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    bon = [r for r in rows if r["method"].startswith("best-of-")]
    if bon:
        axes.plot([r["kl"] for r in bon], [r["gold"] for r in bon], "o-", color="gray", label="Best-of-N (gold)")
        if all(r.get("proxy") is not None for r in bon):
            axes.plot([r["kl"] for r in bon], [r["proxy"] for r in bon], "o--", color="lightgray", label="Best-of-N (proxy)")
    import matplotlib

    points = [r for r in rows if not r["method"].startswith("best-of-") and r["kl"] is not None]
    colors = matplotlib.colormaps["tab20"].colors  # one color per row: the default cycle repeats after ten
    markers = "osD^v<>ph*"
    for index, r in enumerate(points):
        low, high = r["gold_interval"]
        axes.errorbar([r["kl"]], [r["gold"]], yerr=[[r["gold"] - low], [high - r["gold"]]],
                      xerr=[[r["kl_sem"] or 0.0], [r["kl_sem"] or 0.0]], fmt=markers[index % len(markers)],
                      color=colors[index % len(colors)], capsize=3, label=r["method"])
    axes.set_xlabel("KL to the base policy (nats per answer)")
    axes.set_ylabel("gold reward (VADER) on held-out prompts")
    axes.set_title("Reward-KL frontier, SmolLM2-135M-Instruct + LoRA")
    axes.legend(fontsize=7, loc="best", ncol=2)
    figure.tight_layout()
    figure.savefig(path)


def table(rows) -> str:
    lines = ["| method | gold reward [95% CI] | gain over base [95% CI] | proxy reward | KL (nats) | training time (s) | "
             "samples | target met |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        interval = r.get("gold_interval") or (math.nan, math.nan)
        kl = "-" if r["kl"] is None else f"{r['kl']:.2f}" + (f" ± {r['kl_sem']:.2f}" if r.get("kl_sem") else "")
        if r.get("kl_analytic") is not None:
            kl += f" (bound {r['kl_analytic']:.2f})"
        proxy = "-" if r.get("proxy") is None else f"{r['proxy']:.3f}"
        wall = "-" if r.get("wall_seconds") is None else f"{r['wall_seconds']:.0f}"
        gain = "-"
        if r.get("gain") is not None:
            gain = f"{r['gain']:+.3f} [{r['gain_interval'][0]:+.3f}, {r['gain_interval'][1]:+.3f}]"
        lines.append(f"| {r['method']} | {r['gold']:.3f} [{interval[0]:.3f}, {interval[1]:.3f}] | {gain} | {proxy} | {kl} | "
                     f"{wall} | {r.get('samples', '-')} | {meets_target(r)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets: checks the pipeline in a few minutes")
    parser.add_argument("--methods", nargs="+", default=ALL_METHODS, choices=ALL_METHODS)
    parser.add_argument("--output_dir", default="bench-alignment")
    parser.add_argument("--policy", default=None, help="policy model (default: SmolLM2-135M-Instruct; --quick: tiny)")
    parser.add_argument("--proxy_backbone", default=None, help="proxy reward model backbone (default: MiniLM; --quick: tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dpo_betas", type=float, nargs="+", default=None, help="override the DPO beta sweep")
    parser.add_argument("--rl_iterations", type=int, default=None, help="override the RL iterations per method")
    args = parser.parse_args(argv)

    import torch

    from prefkit.models import DEFAULT_POLICY, load_model

    torch.manual_seed(args.seed)
    b = budgets(args.quick)
    if args.dpo_betas:
        b["dpo_betas"] = args.dpo_betas
    if args.rl_iterations:
        b["rl_iterations"] = args.rl_iterations
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_prompts, heldout = prompts()
    train_prompts, heldout = train_prompts[: b["train_prompts"]], heldout[: b["heldout_prompts"]]
    policy_name, backbone = args.policy, args.proxy_backbone
    if args.quick and policy_name is None:
        from prefkit.testing import build_tiny_model

        policy_name = str(build_tiny_model(out / "tiny-model"))
        backbone = backbone or policy_name
    policy_name = policy_name or DEFAULT_POLICY
    base_model, tokenizer = load_model(policy_name)
    base_pair = (base_model.eval(), tokenizer)

    # The pairs and the proxy are shared by every method: a later invocation with the same settings (say, --methods
    # rloo after a run that stopped) reuses them, and its rows join the earlier ones in results.json.
    from prefkit.data.io import read_jsonl, write_jsonl

    # what the pairs, the proxy and Best-of-N depend on (not the number of held-out answers per prompt)
    setup = {"budgets": {k: b[k] for k in SETUP_BUDGETS}, "quick": args.quick, "policy": args.policy,
             "proxy_backbone": args.proxy_backbone, "seed": args.seed}
    setup_file, results_file = out / "setup.json", out / "results.json"
    reuse = setup_file.exists() and json.loads(setup_file.read_text()) == setup and (out / "proxy-rm" / "done").exists()
    if reuse:
        pairs = read_jsonl(out / "pairs.jsonl")
        pair_samples = len(train_prompts) * b["samples_per_prompt"]
        from prefkit import RewardModel

        proxy = RewardModel.from_pretrained(str(out / "proxy-rm"))
        previous = json.loads(results_file.read_text()) if results_file.exists() else {}
        rm_seconds = previous.get("proxy_training_seconds", math.nan)
        rows = previous.get("rows", [])
        if previous.get("budgets", {}).get("eval_samples") != b["eval_samples"]:  # measured on fewer or more answers
            rows = [r for r in rows if r["method"].startswith("best-of-")]
        print(f"reusing the {len(pairs)} pairs, the proxy reward model and {len(rows)} result rows in {out}")
    else:
        began = time.perf_counter()
        pairs, pair_samples = make_pairs(base_model, tokenizer, train_prompts, b, args.seed)
        write_jsonl(pairs, out / "pairs.jsonl")
        print(f"{len(pairs)} gold-ranked pairs from {pair_samples} base samples ({time.perf_counter() - began:.0f} s)")
        began = time.perf_counter()
        proxy = train_proxy(pairs, out / "proxy-rm", b, backbone)
        (out / "proxy-rm" / "done").write_text("")
        rm_seconds = time.perf_counter() - began
        print(f"proxy reward model trained in {rm_seconds:.0f} s")
        setup_file.write_text(json.dumps(setup, indent=2))
        rows = []
        for stale in ("base", "bon"):  # answers of another setup must not be reused
            (out / "eval" / stale / "samples.jsonl").unlink(missing_ok=True)

    def keep(new_rows):
        """Replace earlier rows of the same methods; keep the rest in their order."""
        names = {r["method"] for r in new_rows}
        rows[:] = [r for r in rows if r["method"] not in names] + new_rows
    for method in args.methods:
        started = time.perf_counter()
        print(f"== {method}")
        if method == "base":

            report = evaluate_policies({"base": base_pair}, heldout, b, out / "eval" / "base")
            keep([{"method": "base", "gold": report["base"].reward, "gold_interval": report["base"].reward_interval,
                   "kl": 0.0, "kl_sem": 0.0, "samples": 0, "wall_seconds": None}])
        elif method == "bon":
            keep(best_of_n_curve(base_model, tokenizer, proxy, heldout, b, args.seed, out))
        elif method == "dpo":
            for beta in b["dpo_betas"]:
                started = time.perf_counter()
                pair = run_dpo(policy_name, pairs, out / f"dpo-{beta}", b, beta)
                keep([measure(f"dpo (beta {beta})", base_pair, pair, heldout, proxy, b, started, pair_samples, out)])
        elif method == "dpo_chat":
            pair = run_dpo(policy_name, as_chat(pairs), out / "dpo-chat", b, DPO_DEMO["beta"])
            keep([measure(f"dpo chat (beta {DPO_DEMO['beta']})", base_pair, pair, heldout, proxy, b, started,
                          pair_samples, out)])
        elif method == "kto":
            pair = run_kto(policy_name, pairs, out / "kto", b)
            keep([measure("kto", base_pair, pair, heldout, proxy, b, started, pair_samples, out)])
        elif method == "dpo_iterative":
            # --quick: the tiny random model's answers carry no sentiment (VADER scores them all 0, so a round may have
            # no pair); the proxy labels them instead, to check the pipeline
            pair, labels, resumed = run_iterative_dpo(policy_name, train_prompts, out / "dpo-iterative", b, args.seed,
                                                      labeller=proxy if args.quick else gold)
            row = measure("iterative dpo", base_pair, pair, heldout, proxy, b, started, labels, out)
            keep([{**row, "wall_seconds": None} if resumed else row])
        elif method in ("trl_grpo", "trl_rloo"):
            pair = run_trl(method.split("_")[1], policy_name, proxy, train_prompts, out / method, b)
            keep([measure(f"TRL {method.split('_')[1].upper()}", base_pair, pair, heldout, proxy, b, started,
                          b["rl_iterations"] * b["rl_batch"], out)])
        else:
            settings = {
                "ppo_clip_gae": dict(loss_type="clip", advantage_estimator="gae"),
                "ppo_kl": dict(loss_type="kl_penalty", advantage_estimator="gae"),
                # The batch-mean baseline: what the published REINFORCE row measured (centred normalization made any
                # baseline the batch mean then; prefkit's default now is a running baseline, not measured here).
                "reinforce": dict(advantage_estimator="reinforce", reinforce_baseline="batch"),
                "rloo": dict(advantage_estimator="rloo", num_generations=GROUP_DEMO["num_generations"]),
                # The KL in the reward, as the published GRPO row measured; prefkit's GRPO default now puts it in the
                # loss as the GRPO paper does (kl_placement="loss", beta 0.04), not measured here yet.
                "grpo": dict(advantage_estimator="grpo", num_generations=GROUP_DEMO["num_generations"],
                             kl_placement="reward"),
                # prefkit's GRPO default: the GRPO paper's KL in the loss (k3, beta 0.04, importance-weighted).
                "grpo_kl_in_loss": dict(advantage_estimator="grpo", num_generations=GROUP_DEMO["num_generations"]),
            }[method]
            pair = run_ppo(policy_name, proxy, train_prompts, out / method, b, **settings)
            keep([measure(method, base_pair, pair, heldout, proxy, b, started, b["rl_iterations"] * b["rl_batch"], out)])
        print(table(rows))  # every row so far: Best-of-N adds one per N
        # after every method, so a long run that stops early keeps what it measured
        results_file.write_text(json.dumps({"budgets": b, "quick": args.quick, "rows": rows,
                                            "proxy_training_seconds": round(rm_seconds, 1)}, indent=2))
        (out / "results.md").write_text(table(rows) + "\n")

    plot(rows, out / "frontier.png")
    print(table(rows))
    print(f"\nwrote {out}/results.json, results.md and frontier.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
