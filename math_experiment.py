"""
The math experiment behind `python rlvr.py --task math` and `make math` (docs/DESIGN.md §8.2, §8.3).

Per seed (seeds run in parallel processes, one CPU thread each):
1. pre-train the tiny GPT on the built-in "mod chain" task (tasks/math.py) with sft.py
   (cached in out/math/), and print its health: greedy accuracy per number of operations;
2. RL with equal budgets (the same steps, prompts and group size) for `rlvr` (GRPO on `cot`
   rollouts), `soft` (GRPO on soft-token rollouts) and `lbr` (GRPO on LBR rollouts, model and
   router jointly);
3. evaluate `cot` (the base model, no RL) and each trained model with n samples per problem:
   Pass@1 and Pass@n by the unbiased estimator, per number of operations, forward tokens per
   committed token, and `cot` best-of-k at LBR's forward-token budget.
Then results/math.md (tables with mean ± spread over seeds, the health checks, the command),
results/math.json and results/math_passk.png (Pass@k against k per method).

Run:
    python rlvr.py --task math              # default size, seeds 0 1 2
    python rlvr.py --task math --quick      # toy size, one seed, about a minute
    python math_experiment.py --report-only # rewrite the table and plot from results/math.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from dataclasses import dataclass, field, replace

import torch

from cli import ArgumentParser, check_in_file, check_int, check_out_dir, run as run_cli
from decode import CotConfig, LBRConfig, SoftConfig, greedy_completions
from model import ModelConfig
from experiment import mean_std, plot_learning_curves, provenance, run_seeds, seed_logger
from evaluate import evaluate
from rlvr import RLConfig, new_router, train_rl
from router import RouterConfig
from sft import SFTConfig, train_sft
from tasks import get_task
from tasks.common import Seeds, make_examples

METHODS = ["cot", "rlvr", "soft", "lbr"]


@dataclass
class MathSizes:
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(steps=3000))  # pre-training (cached per seed)
    rl: RLConfig = field(default_factory=lambda: RLConfig(steps=60))  # every method: 60 x 16 prompts x 8 rollouts
    n_layer: int = 2  # the tiny model (ModelConfig.tiny)
    n_embd: int = 64
    eval_size: int = 150  # evaluation problems, operation counts drawn from MathConfig.eval_ops
    samples: int = 32  # samples per problem (n): Pass@1 .. Pass@n
    widths: tuple[int, ...] = (4, 1)  # LBR tree: 4 candidates, each with one continuation token
    sampler: str = "iid"  # LBR siblings: iid, so that a fresh router starts as exactly the base model
    router: str = "subtree"  # LBR router features
    soft_k: int = 4  # soft-token draws per step (the same 4 branches as LBR's candidates)


FULL = MathSizes()
QUICK = MathSizes(sft=SFTConfig(steps=150, eval_every=150, eval_size=32), rl=RLConfig(steps=2, prompts_per_step=4, group_size=4),
                  eval_size=10, samples=4)
# after 150 pre-training steps the tiny model solves no problem (greedy accuracy 0, teacher-forced token
# accuracy about 0.67), so QUICK's tables are zeros by design: its run shows that every stage works end to
# end, and its report says so
QUICK_NOTE = ("> **Quick mode (--quick) checks the pipeline, not the numbers.** Toy sizes and one seed: every stage "
              "(pre-training, health, RL of every method, evaluation, report) ran end to end, but the models are "
              "trained far too little to solve a problem, so zeros are expected and mean nothing. For the results "
              "run `make math` (`python rlvr.py --task math`) without quick mode.")


def decoders(task, sizes: MathSizes) -> dict[str, CotConfig | SoftConfig | LBRConfig]:
    T = task.max_answer_len
    return {"cot": CotConfig(max_new_tokens=T), "rlvr": CotConfig(max_new_tokens=T),
            "soft": SoftConfig(k=sizes.soft_k, discrete_after=task.hash_id, max_new_tokens=T),
            "lbr": LBRConfig(widths=sizes.widths, sampler=sizes.sampler, max_new_tokens=T)}


def run_seed(seed: int, sizes: MathSizes, out_root: str, quiet: bool = True) -> dict:
    """Pre-train (or load), train every method, evaluate; returns a JSON-able dict."""
    t_start, dev, task, log = time.time(), torch.device("cpu"), get_task("math"), seed_logger(seed)
    model_cfg = ModelConfig.tiny(task.tokenizer.vocab_size, n_layer=sizes.n_layer, n_embd=sizes.n_embd, max_seq_len=256)
    base, ckpt = train_sft(task, model_cfg, replace(sizes.sft, seed=seed), os.path.join(out_root, f"base_s{seed}.pt"),
                           dev, quiet=quiet)
    base.requires_grad_(False)
    t_experiment = time.time()
    health = task.health(base, make_examples(task, 500, seed=Seeds(seed).eval_examples, split="eval"), greedy_completions)
    log(f"pre-trained ({ckpt['history'][-1]['seconds']:.0f}s of training): "
        + json.dumps({k: round(v, 3) for k, v in health.items()}))
    examples = make_examples(task, sizes.eval_size, seed=Seeds(seed).experiment_eval_examples, split="eval")
    ks = tuple(range(1, sizes.samples + 1))
    decs = decoders(task, sizes)
    out = {"seed": seed, "health": health, "pretrain_seconds": ckpt["history"][-1]["seconds"], "eval": {},
           "curves": {}}
    out["eval"]["cot greedy"] = evaluate(base, None, task, CotConfig(greedy=True, max_new_tokens=task.max_answer_len),
                                         examples, 1, (1,), seed)
    out["eval"]["cot"] = evaluate(base, None, task, decs["cot"], examples, sizes.samples, ks, seed)
    log(f"cot: pass@1 {out['eval']['cot']['pass@1']:.3f}, pass@{sizes.samples} {out['eval']['cot'][f'pass@{sizes.samples}']:.3f}")
    for method in METHODS[1:]:
        model = copy.deepcopy(base)
        router = (new_router(RouterConfig(features=sizes.router), model.cfg.n_embd, len(sizes.widths), seed)
                  if method == "lbr" else None)
        hist = train_rl(model, router, task, decs[method], replace(sizes.rl, seed=seed),
                        os.path.join(out_root, "rl", f"{method}_s{seed}"), quiet=True)
        out["curves"][method] = [h["reward"] for h in hist]
        out["eval"][method] = evaluate(model.requires_grad_(False), router, task, decs[method], examples, sizes.samples,
                                       ks, seed)
        log(f"{method}: pass@1 {out['eval'][method]['pass@1']:.3f}, "
            f"pass@{sizes.samples} {out['eval'][method][f'pass@{sizes.samples}']:.3f}")
        if method == "lbr":  # diagnostics: where does LBR's sharper distribution come from?
            # the jointly trained model decoding alone (no router): did RL narrow the model itself?
            out["eval"]["lbr model, cot"] = evaluate(model, None, task, decs["cot"], examples, sizes.samples, ks, seed)
            # the same model and router with a flatter router (T_r = 2) at evaluation only
            flat = replace(decs["lbr"], router_temperature=2.0)
            out["eval"]["lbr, T_r = 2"] = evaluate(model, router, task, flat, examples, sizes.samples, ks, seed)
    out["seconds"], out["experiment_seconds"] = time.time() - t_start, time.time() - t_experiment
    log(f"done in {out['seconds']:.0f}s")
    return out


# ---------------------------------------------------------------------------------------------
# report


def report(results: list[dict], sizes: MathSizes, cmd: str, seconds: float, stem: str) -> str:
    n = sizes.samples
    get = lambda key, metric: [r["eval"][key][metric] for r in results]  # noqa: E731
    diffs = sorted({k.split("_")[1] for k in results[0]["eval"]["cot"] if k.startswith("pass@1_")},
                   key=lambda d: int(d[3:]))
    task_cfg = get_task("math").cfg
    lines = ["# Math experiment (mod chain, docs/DESIGN.md §7.3)", "", provenance(cmd, results, seconds), "",
             f"Task: arithmetic mod {task_cfg.p}, operators `{task_cfg.ops}`, {task_cfg.distractors} distractor "
             f"statements; pre-training on {list(task_cfg.train_ops)} operations, RL on {list(task_cfg.rl_ops)}, "
             f"evaluation on {list(task_cfg.eval_ops)} ({sizes.eval_size} problems per seed, n = {n} samples each).",
             "", "## Health of the pre-trained models", "",
             "Greedy accuracy per number of operations (RL needs room: greedy well below Pass@n on the RL "
             "difficulties), and teacher-forced token accuracy.", "",
             "| seed | tf acc | " + " | ".join(f"greedy {d}" for d in diffs) + " |",
             "| ---: | ---: | " + " | ".join("---:" for _ in diffs) + " |"]
    for r in results:
        h = r["health"]
        lines.append(f"| {r['seed']} | {h['tf_acc']:.3f} | " + " | ".join(f"{h[f'greedy_acc_{d}']:.3f}" for d in diffs) + " |")

    rl = sizes.rl
    lines += ["", "## Pass@1 and Pass@" + str(n), "",
              f"RL: {rl.steps} GRPO steps x {rl.prompts_per_step} prompts x {rl.group_size} rollouts for every trained "
              f"method (model lr {rl.model_lr}, router lr {rl.router_lr}). `soft`: K = {sizes.soft_k} draws per step, "
              f"probability-weighted embedding mixture, discrete after `#`. `lbr`: widths {sizes.widths}, "
              f"`{sizes.sampler}` siblings, `{sizes.router}` router, model and router trained jointly. "
              "`fwd/token` = model forward tokens per committed token. Diagnostics (no extra training): "
              "`lbr model, cot` decodes with the LBR-trained model alone (no router), `lbr, T_r = 2` evaluates the "
              "trained model and router with the router's temperature raised to 2.", "",
              f"| method | Pass@1 | Pass@{n} | " + " | ".join(f"Pass@1 {d}" for d in diffs) + " | "
              + " | ".join(f"Pass@{n} {d}" for d in diffs) + " | fwd/token |",
              "| --- | ---: | ---: | " + " | ".join("---:" for _ in diffs * 2) + " | ---: |"]
    for key in ["cot greedy"] + METHODS + [k for k in ("lbr model, cot", "lbr, T_r = 2") if k in results[0]["eval"]]:
        pn = mean_std(get(key, f"pass@{n}")) if f"pass@{n}" in results[0]["eval"][key] else "-"
        lines.append(f"| {key} | {mean_std(get(key, 'pass@1'))} | {pn} | "
                     + " | ".join(mean_std(get(key, f"pass@1_{d}")) for d in diffs) + " | "
                     + " | ".join(mean_std(get(key, f"pass@{n}_{d}")) if pn != "-" else "-" for d in diffs)
                     + f" | {mean_std(get(key, 'fwd_per_token'))} |")
    budget = [max(1, min(round(r["eval"]["lbr"]["fwd_per_token"] / r["eval"]["cot"]["fwd_per_token"]), n))
              for r in results]
    lines += [f"| cot best-of-k, k = LBR's forward budget ({'/'.join(map(str, budget))}), verifier picks | "
              f"{mean_std([r['eval']['cot'][f'pass@{k}'] for r, k in zip(results, budget)])} | | "
              + " | ".join("" for _ in diffs * 2) + " | |",
              f"| cot majority vote of k = LBR's budget | "
              f"{mean_std([r['eval']['cot'][f'majority@{k}'] for r, k in zip(results, budget)])} | | "
              + " | ".join("" for _ in diffs * 2) + " | |"]
    lines += ["", "## Figures", "", f"![Pass@k]({stem}_passk.png)", "", f"![learning curves]({stem}_curves.png)", ""]
    return "\n".join(lines) + "\n"


def plots(results: list[dict], sizes: MathSizes, out_dir: str, stem: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = list(range(1, sizes.samples + 1))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key in METHODS:
        vals = [[r["eval"][key][f"pass@{k}"] for r in results] for k in ks]
        m = [statistics.mean(v) for v in vals]
        ax.plot(ks, m, label=key)
        ax.fill_between(ks, [min(v) for v in vals], [max(v) for v in vals], alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("Pass@k")
    ax.set_title("Pass@k on mod chain (mean, min-max over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"{stem}_passk.png"), dpi=110)
    plt.close(fig)

    plot_learning_curves({k: [r["curves"][k] for r in results] for k in METHODS[1:]},
                         os.path.join(out_dir, f"{stem}_curves.png"))


def run(quick: bool, seeds: list[int] | None, out: str, results_dir: str, jobs: int = 0,
        report_only: bool = False) -> str:
    """The whole experiment (or only its report from the saved JSON); returns the markdown.
    Raises ValueError for unusable arguments, before any work."""
    sizes = QUICK if quick else FULL
    seeds = seeds or ([0] if quick else [0, 1, 2])
    stem = "math_quick" if quick else "math"
    out_root = os.path.join(out, "quick") if quick else out
    check_int("--jobs", jobs, 0, "0: one process per seed")
    check_out_dir(results_dir, "--results")
    check_out_dir(out, "--out")
    if report_only:
        check_in_file(os.path.join(results_dir, f"{stem}.json"), "--report-only reads", "run without --report-only first")
    results, seconds = run_seeds(run_seed, seeds, sizes, out_root, os.path.join(results_dir, f"{stem}.json"), jobs,
                                 report_only)
    seeds = [r["seed"] for r in results]
    cmd = "python rlvr.py --task math" + (" --quick" if quick else "") + f" --seeds {' '.join(map(str, seeds))}"
    md = report(results, sizes, cmd, seconds, stem)
    if quick:  # under the title, where a reader of the file looks first
        title, rest = md.split("\n", 1)
        md = f"{title}\n\n{QUICK_NOTE}\n{rest}"
    plots(results, sizes, results_dir, stem)
    with open(os.path.join(results_dir, f"{stem}.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {results_dir}/{stem}.md ({seconds / 60:.1f} min)")
    if quick:  # and again at the end, where a reader of the console looks
        print(QUICK_NOTE)
    return md


def add_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("math experiment (python rlvr.py --task math without --method)")
    g.add_argument("--quick", action="store_true", help="toy sizes, one seed, about a minute")
    g.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (quick: 0)")
    g.add_argument("--jobs", type=int, default=0, help="parallel seed processes (default: one per seed)")
    g.add_argument("--results", default="results", help="where the table, JSON and plots go")
    g.add_argument("--report-only", action="store_true", help="rewrite the table and plots from the saved JSON")


def main() -> None:
    ap = ArgumentParser(description="The math experiment (python rlvr.py --task math).")
    add_args(ap)
    ap.add_argument("--out", default="out/math", help="checkpoints and run directories (cached)")
    args = ap.parse_args()
    run(args.quick, args.seeds, args.out, args.results, args.jobs, args.report_only)


if __name__ == "__main__":
    run_cli(main)
