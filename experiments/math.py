"""
The math experiment behind `python rlvr.py --task math` and `make math` (docs/DESIGN.md §8.2, §8.3).

Per seed (seeds run in parallel processes, one CPU thread each):
1. pre-train the tiny GPT on the built-in "mod chain" task (tasks/math.py) with sft.py
   (cached in out/math/), and print its health: greedy accuracy per number of operations;
2. RL with equal budgets (the same steps, prompts and group size) for `rlvr` (GRPO on `cot`
   rollouts), `soft` (GRPO on soft-token rollouts) and `lbr` (GRPO on LBR rollouts, model and
   router jointly), each in its own configuration (`MathSizes.configs`: the learning rates and
   the LBR settings chosen on validation problems by `make ablations`); then `rlvr` once more at
   LBR's training forward budget (group size x b, b = LBR's forward tokens per committed token
   over rlvr's in training);
3. evaluate `cot` (the base model, no RL; with `cot_samples` samples, for its Pass@(b k)) and each
   trained model with n samples per problem: Pass@1 and Pass@n by the unbiased estimator, per
   number of operations, forward tokens per committed token, and `cot` best-of-k at LBR's
   forward-token budget.
Then results/math.md (tables with mean ± spread over seeds, the health checks, the command),
results/math.json and results/math_passk.png (Pass@k against k per method).

Run:
    python rlvr.py --task math              # default size, seeds 0 1 2
    python rlvr.py --task math --quick      # toy size, one seed, about a minute
    python -m experiments.math --report-only # rewrite the table and plot from results/math.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, fields, replace

import torch

from tools.cli import ArgumentParser, check_in_file, check_int, check_out_dir, make_out_dir, run as run_cli
from decode import CotConfig, LBRConfig
from soft import SoftConfig
from model import ModelConfig
from experiments.common import load_saved, malformed, mean_std, plot_learning_curves, provenance, run_seeds, seed_logger
from evaluate import evaluate, greedy_completions, pass_at_k
from rlvr import NonFiniteLoss, RLConfig, new_router, train_rl
from router import RouterConfig
from sft import SFTConfig, train_sft
from tasks import get_task
from tasks.common import Seeds, make_examples

METHODS = ["cot", "rlvr", "soft", "lbr"]
BUDGET = "rlvr, LBR's budget"  # rlvr with LBR's training forward budget (larger groups)


@dataclass(frozen=True)
class RunSpec:
    """One RL configuration of a trained method: what experiments/ablations.py varies and chooses on validation
    problems. Its `name` names the run directory, so that a configuration trained once (by the
    study's tuning stage or by this experiment) is found again, never retrained."""
    method: str  # 'rlvr' (GRPO on cot rollouts), 'soft' or 'lbr'
    model_lr: float = 1e-4  # Adam learning rate of the model
    widths: tuple[int, ...] = (4, 1)  # lbr tree: 4 candidates, each with one continuation token
    sampler: str = "iid"  # lbr siblings: iid, so that a fresh router starts as exactly the base model
    router: str = "subtree"  # lbr router features
    router_temperature: float = 1.0  # lbr: T_r of the router while training
    router_entropy_coef: float = 0.0  # lbr: entropy bonus β (RLConfig.router_entropy_coef)
    factor_norm: bool = False  # loss / factors per committed token (RLConfig.factor_norm)
    group_size_mult: int = 1  # rollouts per prompt = RLConfig.group_size x this (rlvr at LBR's budget)

    @property
    def name(self) -> str:
        """e.g. 'lbr_lr0.0001' or 'lbr_lr0.0001_widths8-1': the method, the learning rate and every
        field that differs from its default."""
        parts = [self.method, f"lr{self.model_lr:g}"]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("method", "model_lr") and value != f.default:
                parts.append(f.name + ("-".join(map(str, value)) if isinstance(value, tuple) else f"{value}"))
        return "_".join(parts)


# The configuration of each trained method, chosen on validation problems by `make ablations`
# (results/ablations.md): the learning rate of each method from the same grid, nothing else tuned.
CHOSEN = {"rlvr": RunSpec("rlvr", model_lr=3e-5), "soft": RunSpec("soft", model_lr=3e-4),
          "lbr": RunSpec("lbr", model_lr=3e-5)}
CHOSEN_TEMPERATURES = {"cot": 0.7, "rlvr": 0.7, "soft": 0.7, "lbr": 2.0}


@dataclass
class MathSizes:
    sft: SFTConfig = field(default_factory=lambda: SFTConfig(steps=3000))  # pre-training (cached per seed)
    rl: RLConfig = field(default_factory=lambda: RLConfig(steps=60))  # every method: 60 x 16 prompts x 8 rollouts
    n_layer: int = 2  # the tiny model (ModelConfig.tiny)
    n_embd: int = 64
    eval_size: int = 150  # evaluation problems, operation counts drawn from MathConfig.eval_ops
    samples: int = 32  # samples per problem (n): Pass@1 .. Pass@n
    cot_samples: int = 256  # samples per problem of the base model's cot (more than n: its Pass@(b k) at LBR's budget)
    configs: dict[str, RunSpec] = field(default_factory=lambda: dict(CHOSEN))  # per trained method
    # the sampling temperature of each method at evaluation (lbr: of its router, T_r; its model samples at 1),
    # chosen on validation with the learning rate
    eval_temperatures: dict[str, float] = field(default_factory=lambda: dict(CHOSEN_TEMPERATURES))
    rlvr_at_budget: bool = True  # also train rlvr with LBR's training forward budget (BUDGET)
    soft_k: int = 4  # soft-token draws per step (the same 4 branches as LBR's candidates)


FULL = MathSizes()
QUICK = MathSizes(sft=SFTConfig(steps=150, eval_every=150, eval_size=32), rl=RLConfig(steps=2, prompts_per_step=4, group_size=4),
                  eval_size=10, samples=4, cot_samples=8)
# after 150 pre-training steps the tiny model solves no problem (greedy accuracy 0, teacher-forced token
# accuracy about 0.67), so QUICK's tables are zeros by design: its run shows that every stage works end to
# end, and its report says so
QUICK_NOTE = ("> **Quick mode (--quick) checks the pipeline, not the numbers.** Toy sizes and one seed: every stage "
              "(pre-training, health, RL of every method, evaluation, report) ran end to end, but the models are "
              "trained far too little to solve a problem, so zeros are expected and mean nothing. For the results "
              "run `make math` (`python rlvr.py --task math`) without quick mode.")


def decoder(task, spec: RunSpec | None, sizes: MathSizes, temperature: float | None = None):
    """How a method decodes (spec None: the base model's `cot`). Without `temperature`, as in
    training (the model samples at 1; lbr's router at spec.router_temperature); with it, at that
    evaluation temperature: the model's of cot, rlvr and soft, the router's T_r of lbr."""
    T = task.max_answer_len
    if spec is None or spec.method == "rlvr":
        return CotConfig(max_new_tokens=T, temperature=temperature or 1.0)
    if spec.method == "soft":
        return SoftConfig(k=sizes.soft_k, discrete_after=task.hash_id, max_new_tokens=T, temperature=temperature or 1.0)
    return LBRConfig(widths=spec.widths, sampler=spec.sampler, max_new_tokens=T,
                     router_temperature=temperature or spec.router_temperature)


def pretrained(seed: int, sizes: MathSizes, out_root: str, quiet: bool = True) -> tuple:
    """(frozen base model, its checkpoint dict): pre-trained on mod chain, cached as out_root/base_sSEED.pt."""
    task = get_task("math")
    model_cfg = ModelConfig.tiny(task.tokenizer.vocab_size, n_layer=sizes.n_layer, n_embd=sizes.n_embd, max_seq_len=256)
    base, ckpt = train_sft(task, model_cfg, replace(sizes.sft, seed=seed), os.path.join(out_root, f"base_s{seed}.pt"),
                           torch.device("cpu"), quiet=quiet)
    return base.requires_grad_(False), ckpt


def train_method(base, spec: RunSpec, sizes: MathSizes, seed: int, out_root: str) -> tuple:
    """(model, router or None, per-step metrics): RL of a copy of `base` in configuration `spec`,
    in out_root/rl/NAME_sSEED (resumed, or just loaded when finished)."""
    task = get_task("math")
    model = copy.deepcopy(base)
    dec = decoder(task, spec, sizes)
    router = (new_router(RouterConfig(features=spec.router), model.cfg.n_embd, len(spec.widths), seed)
              if spec.method == "lbr" else None)
    cfg = replace(sizes.rl, seed=seed, model_lr=spec.model_lr, router_entropy_coef=spec.router_entropy_coef,
                  factor_norm=spec.factor_norm, group_size=sizes.rl.group_size * spec.group_size_mult)
    hist = train_rl(model, router, task, dec, cfg, os.path.join(out_root, "rl", f"{spec.name}_s{seed}"), quiet=True)
    model.requires_grad_(False)
    if router is not None:
        router.requires_grad_(False)
    return model, router, hist


def budget_of(result: dict) -> int | str:
    """b of a seed's result (`training_budget` of its lbr and rlvr curves); '-' without both."""
    c = result["curves"]
    return training_budget(c["lbr"], c["rlvr"]) if c.get("lbr") and c.get("rlvr") else "-"


def diverged_eval(message: str, problems: int, n: int) -> dict:
    """The evaluation record of a run stopped by a non-finite loss: no sample correct."""
    return {"pass@1": 0.0, f"pass@{n}": 0.0, "fwd_per_token": 0.0, "n": n, "correct": [0] * problems,
            "diverged": message}


def training_budget(lbr_hist: list[dict], rlvr_hist: list[dict]) -> int:
    """b: LBR's training forward tokens per committed token over rlvr's (rounded, >= 1): rlvr with
    its group size times b spends about LBR's training forward budget."""
    mean = lambda h: statistics.mean(r["fwd_per_token"] for r in h)  # noqa: E731
    return max(1, round(mean(lbr_hist) / max(mean(rlvr_hist), 1e-9)))


def run_seed(seed: int, sizes: MathSizes, out_root: str, quiet: bool = True) -> dict:
    """Pre-train (or load), train every method, evaluate; returns a JSON-able dict."""
    t_start, task, log = time.time(), get_task("math"), seed_logger(seed)
    base, ckpt = pretrained(seed, sizes, out_root, quiet)
    t_experiment = time.time()
    health = task.health(base, make_examples(task, 500, seed=Seeds(seed).eval_examples, split="eval"), greedy_completions)
    log(f"pre-trained ({ckpt['history'][-1]['seconds']:.0f}s of training): "
        + json.dumps({k: round(v, 3) for k, v in health.items()}))
    examples = make_examples(task, sizes.eval_size, seed=Seeds(seed).experiment_eval_examples, split="eval")
    ks = tuple(range(1, sizes.samples + 1))
    out = {"seed": seed, "health": health, "pretrain_seconds": ckpt["history"][-1]["seconds"], "eval": {},
           "curves": {}, "configs": {m: asdict(spec) for m, spec in sizes.configs.items()},
           "eval_temperatures": dict(sizes.eval_temperatures)}
    out["eval"]["cot greedy"] = evaluate(base, None, task, CotConfig(greedy=True, max_new_tokens=task.max_answer_len),
                                         examples, 1, (1,), seed)
    out["eval"]["cot"] = evaluate(base, None, task, decoder(task, None, sizes, sizes.eval_temperatures["cot"]), examples,
                                  max(sizes.cot_samples, sizes.samples), ks, seed)

    def run(key: str, spec: RunSpec) -> tuple:
        try:
            model, router, hist = train_method(base, spec, sizes, seed, out_root)
        except NonFiniteLoss as e:  # a result: this configuration fails on this seed (no sample is correct)
            log(f"{key}: {e}")
            out["curves"][key] = []
            out["eval"][key] = diverged_eval(str(e), len(examples), sizes.samples)
            return None, None, []
        out["curves"][key] = [{k: v for k, v in h.items() if k != "seconds"} for h in hist]  # wall time: not a result
        out["eval"][key] = evaluate(model, router, task, decoder(task, spec, sizes, sizes.eval_temperatures[spec.method]),
                                    examples, sizes.samples, ks, seed)
        log(f"{key}: pass@1 {out['eval'][key]['pass@1']:.3f}, pass@{sizes.samples} "
            f"{out['eval'][key][f'pass@{sizes.samples}']:.3f}")
        return model, router, hist

    for method in METHODS[1:]:
        model, router, _ = run(method, sizes.configs[method])
        if method == "lbr" and model is not None:  # diagnostic: the jointly trained model decoding alone (did RL narrow the model itself?)
            out["eval"]["lbr model, cot"] = evaluate(model, None, task, decoder(task, None, sizes), examples,
                                                     sizes.samples, ks, seed)
    if sizes.rlvr_at_budget and out["curves"]["lbr"] and out["curves"]["rlvr"]:
        b = training_budget(out["curves"]["lbr"], out["curves"]["rlvr"])
        run(BUDGET, replace(sizes.configs["rlvr"], group_size_mult=b))
    out["seconds"], out["experiment_seconds"] = time.time() - t_start, time.time() - t_experiment
    log(f"done in {out['seconds']:.0f}s")
    return out


# ---------------------------------------------------------------------------------------------
# report


def _metric(ev: dict | None, metric: str) -> float:
    """A metric of an evaluation; 0 for a run stopped by a non-finite loss (absent or 'diverged')."""
    return 0.0 if ev is None or ("diverged" in ev and metric not in ev) else ev[metric]


def pass_at(ev: dict, k: int, problems: list[int] | None = None) -> float:
    """Pass@k of an `evaluate` result from its per-problem counts (any k <= its n), over `problems`
    (default: all)."""
    sel = problems if problems is not None else range(len(ev["correct"]))
    return sum(pass_at_k(ev["n"], ev["correct"][i], k) for i in sel) / len(sel)


def report(results: list[dict], sizes: MathSizes, cmd: str, seconds: float, stem: str) -> str:
    n = sizes.samples
    get = lambda key, metric: [_metric(r["eval"].get(key), metric) for r in results]  # noqa: E731
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
    spec = {m: RunSpec(**{**c, "widths": tuple(c["widths"])}) for m, c in results[0]["configs"].items()}
    lbr = spec["lbr"]
    lines += ["", "## Pass@1 and Pass@" + str(n), "",
              f"RL: {rl.steps} GRPO steps x {rl.prompts_per_step} prompts x {rl.group_size} rollouts for every trained "
              f"method; model learning rate (chosen on validation problems by `make ablations`, results/ablations.md) "
              f"rlvr {spec['rlvr'].model_lr:g}, soft {spec['soft'].model_lr:g}, lbr {lbr.model_lr:g}; router lr "
              f"{rl.router_lr:g}. `soft`: K = {sizes.soft_k} draws per step, probability-weighted embedding mixture, "
              f"discrete after `#`. `lbr`: widths {lbr.widths}, `{lbr.sampler}` siblings, `{lbr.router}` router, "
              f"model and router trained jointly, router temperature {lbr.router_temperature:g} in training. Sampling "
              "temperature at evaluation (chosen on validation; lbr: of the router): "
              + ", ".join(f"{m} {t:g}" for m, t in results[0]["eval_temperatures"].items())
              + f". `{BUDGET}`: rlvr with its group size multiplied by b = LBR's training forward tokens per "
              "committed token over rlvr's (so about LBR's training forward budget; b per seed: "
              + "/".join(str(budget_of(r)) for r in results) + "). `fwd/token` = model forward tokens per "
              "committed token. Diagnostic (no extra training): `lbr model, cot` decodes with the LBR-trained "
              "model alone (no router). A run stopped by a non-finite loss counts as solving nothing (listed "
              "below the table).", "",
              f"| method | Pass@1 | Pass@{n} | " + " | ".join(f"Pass@1 {d}" for d in diffs) + " | "
              + " | ".join(f"Pass@{n} {d}" for d in diffs) + " | fwd/token |",
              "| --- | ---: | ---: | " + " | ".join("---:" for _ in diffs * 2) + " | ---: |"]
    for key in ["cot greedy"] + METHODS + [k for k in (BUDGET, "lbr model, cot") if k in results[0]["eval"]]:
        pn = mean_std(get(key, f"pass@{n}")) if f"pass@{n}" in results[0]["eval"][key] else "-"
        lines.append(f"| {key} | {mean_std(get(key, 'pass@1'))} | {pn} | "
                     + " | ".join(mean_std(get(key, f"pass@1_{d}")) for d in diffs) + " | "
                     + " | ".join(mean_std(get(key, f"pass@{n}_{d}")) if pn != "-" else "-" for d in diffs)
                     + f" | {mean_std(get(key, 'fwd_per_token'))} |")
    budget = [max(1, min(round(r["eval"]["lbr"]["fwd_per_token"] / r["eval"]["cot"]["fwd_per_token"]), n))
              for r in results]
    at_n = ""  # cot Pass@(b n), LBR's budget for its Pass@n, when cot has the samples
    if all(r["eval"]["cot"]["n"] >= b * n for r, b in zip(results, budget)):
        at_n = mean_std([pass_at(r["eval"]["cot"], b * n) for r, b in zip(results, budget)])
    lines += [f"| cot best-of-k, k = LBR's forward budget ({'/'.join(map(str, budget))}), verifier picks (the "
              f"Pass@{n} cell: cot Pass@(k x {n})) | "
              f"{mean_std([pass_at(r['eval']['cot'], k) for r, k in zip(results, budget)])} | {at_n} | "
              + " | ".join("" for _ in diffs * 2) + " | |",
              f"| cot majority vote of k = LBR's budget | "
              f"{mean_std([r['eval']['cot'][f'majority@{k}'] for r, k in zip(results, budget)])} | | "
              + " | ".join("" for _ in diffs * 2) + " | |"]
    diverged = [f"- seed {r['seed']}, {key}: {ev['diverged']}" for r in results for key, ev in r["eval"].items()
                if "diverged" in ev]
    lines += ["", "Runs stopped by a non-finite loss: " + ("none." if not diverged else ""), *diverged]
    lines += ["", "## Figures", "", f"![Pass@k]({stem}_passk.png)", "", f"![learning curves]({stem}_curves.png)", ""]
    return "\n".join(lines) + "\n"


def plots(results: list[dict], sizes: MathSizes, out_dir: str, stem: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = list(range(1, sizes.samples + 1))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key in METHODS:
        vals = [[pass_at(r["eval"][key], k) for r in results] for k in ks]
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

    plot_learning_curves({k: [[h["reward"] for h in r["curves"][k]] for r in results] for k in METHODS[1:]},
                         os.path.join(out_dir, f"{stem}_curves.png"))


def run(quick: bool, seeds: list[int] | None, out: str, results_dir: str, jobs: int = 0,
        report_only: bool = False, sizes: MathSizes | None = None, cmd: str | None = None) -> str:
    """The whole experiment (or only its report from the saved JSON); returns the markdown.
    `sizes` (default FULL or QUICK) and `cmd` (the command the report names) are experiments/ablations.py's.
    Raises ValueError for unusable arguments, before any work."""
    sizes = sizes or (QUICK if quick else FULL)
    seeds = seeds or ([0] if quick else [0, 1, 2, 3, 4])
    default_cmd = lambda s: f"python rlvr.py --task math{' --quick' if quick else ''} --seeds {' '.join(map(str, s))}"  # noqa: E731
    stem = "math_quick" if quick else "math"
    out_root = os.path.join(out, "quick") if quick else out
    check_int("--jobs", jobs, 0, "0: one process per seed")
    check_out_dir(results_dir, "--results")
    check_out_dir(out, "--out")
    json_path = os.path.join(results_dir, f"{stem}.json")
    if report_only:
        check_in_file(json_path, "--report-only reads", "run without --report-only first")
        cmd = load_saved(json_path, quick).get("cmd")  # the command that made it (checks the mode)
    else:
        make_out_dir(results_dir, "--results")
        cmd = cmd or default_cmd(seeds)
    results, seconds = run_seeds(run_seed, seeds, sizes, out_root, json_path, jobs, report_only,
                                 extra={"cmd": cmd, "quick": quick})
    with malformed(json_path):
        cmd = cmd or default_cmd([r["seed"] for r in results])
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
    g.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 3 4 (quick: 0)")
    g.add_argument("--jobs", type=int, default=0, help="parallel seed processes (default: one per seed)")
    g.add_argument("--results", default="results", help="where the table, JSON and plots go")
    g.add_argument("--report-only", action="store_true", help="rewrite the table and plots from the saved JSON")


def main() -> None:
    ap = ArgumentParser(description="The math experiment (python rlvr.py --task math).")
    add_args(ap)
    ap.add_argument("--out", default="out/math", help="checkpoints and run directories (cached)")
    ap.add_argument("--task", choices=["math"], help=argparse.SUPPRESS)  # `python rlvr.py --task math` lands here
    args, rest = ap.parse_known_args()
    if rest:  # the experiment's settings are its own (MathSizes, chosen by `make ablations`)
        flags = [a.split("=")[0] for a in rest if a.startswith("-")]
        raise ValueError(f"{', '.join(flags or rest)}: settings of one run, which the math experiment (--task math "
                         "without --method) does not take; add --method cot|soft|lbr --base ... for one run")
    run(args.quick, args.seeds, args.out, args.results, args.jobs, args.report_only)


if __name__ == "__main__":
    run_cli(main)
