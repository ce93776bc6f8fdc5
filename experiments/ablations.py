"""
`make ablations`: a tuned, compute-accounted study of when LBR pays, on the math task (docs/DESIGN.md §8.5).

Every choice is made on *validation* problems (Seeds.validation_examples: their own stream, never
the test problems of results/math.md), on the tuning seeds; the test problems are decoded once,
by the chosen configuration of each method. Stages:

A  tuning. Every trained method (rlvr, soft, lbr) gets the same grid: the model learning rate
   (LRS) x the sampling temperature at evaluation (TEMPERATURES: the model's for rlvr and soft, the
   router's T_r for lbr, whose model samples at 1); the untrained `cot` base gets the temperatures.
   Criterion: the mean of validation Pass@1 and Pass@n (the paper claims both), averaged over the
   tuning seeds. Every run logs the gradient norm of model and router and the router's entropy
   per step (hypotheses 1 and 2).
B  LBR ablations, at LBR's chosen learning rate, on the same validation problems (each at the
   evaluation T_r that suits it best of TEMPERATURES): the loss normalised by the factors per
   committed token (hypothesis 1); an entropy bonus, and T_r = 2 during training (2); the tree
   widths and iid against distinct siblings (3); the router's features root / d1 / subtree (4).
   They answer the hypotheses; they are not candidates for the final table (that would give LBR
   more configurations than the baselines).
C  test: `experiments.math.run_seed` on every test seed with the chosen configurations, plus
   `rlvr` at LBR's training forward budget and the base model's cot with enough samples for its
   Pass@(b k) at LBR's forward budget b for every k (hypothesis 5) -> results/math.{md,json}; a paired
   bootstrap (over seeds and problems) of LBR minus the best baseline.
D  LBR's best shot: the best LBR configuration on validation of all tried in A and B, trained on
   every test seed and evaluated on the test problems, in a row of its own (it was chosen from more
   configurations than any baseline).
P  the planning task's joint-training question: seed 1 (the seed whose joint LBR training degraded)
   at each learning rate, with and without the factor normalisation.
Then results/ablations.md, results/ablations.json and the plots results/ablations_*.png.
Every RL run and every validation evaluation is cached (out/math/rl/NAME_sSEED/): a killed study
resumes (the test stage C re-evaluates, a few minutes).

Run:
    python -m experiments.ablations                # the study (pre-training cached in out/math, out/planning)
    python -m experiments.ablations --quick        # toy sizes, one seed, about a minute (CI)
    python -m experiments.ablations --report-only  # rewrite the report and plots from results/ablations.json
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch

from experiments import math as mx
from experiments import synthetic
from tools.cli import ArgumentParser, check_in_file, check_out_dir, make_out_dir, run as run_cli
from evaluate import evaluate
from experiments.common import bootstrap_interval, cached_json, load_saved, malformed, mean_std
from experiments.math import BUDGET, MathSizes, RunSpec, pass_at
from model import ModelConfig
from rlvr import NonFiniteLoss, new_router, train_rl
from router import RouterConfig
from sft import train_sft
from tasks import get_task
from tasks.common import Seeds, make_examples
from tree import TreeShape

TRAINED = ("rlvr", "soft", "lbr")
CHOSEN_LABEL = "chosen: widths (4, 1), iid, subtree"  # LBR at its chosen learning rate (the variants' reference)


@dataclass
class StudySizes:
    math: MathSizes = field(default_factory=lambda: replace(mx.FULL))  # pre-training, RL and test sizes
    tune_seeds: tuple[int, ...] = (0, 1)  # seeds whose validation problems make every choice
    test_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # seeds of the final table (test problems)
    val_size: int = 64  # validation problems per tuning seed
    lrs: tuple[float, ...] = (3e-5, 1e-4, 3e-4)  # model learning rates tried for every trained method
    temperatures: dict[str, tuple[float, ...]] = field(default_factory=lambda: {
        "cot": (1.0, 0.7), "rlvr": (1.0, 0.7), "soft": (1.0, 0.7), "lbr": (1.0, 2.0)})  # evaluation temperatures
    widths: tuple[tuple[int, ...], ...] = ((2, 1), (4, 1), (8, 1), (2, 2), (4, 2), (4, 1, 1))  # hypothesis 3
    entropy_coefs: tuple[float, ...] = (0.01, 0.1)  # β of the entropy bonus (hypothesis 2)
    train_router_temperature: float = 2.0  # T_r during training (hypothesis 2)
    cot_samples: int = 256  # test samples of cot: Pass@(b k) for k up to cot_samples / b
    planning_seed: int = 1  # the planning seed whose joint training degraded (stage P)
    planning_val_size: int = 256
    planning: synthetic.Sizes = field(default_factory=lambda: replace(synthetic.FULL))
    bootstrap: int = 10_000  # bootstrap resamples
    jobs: int = 2  # parallel processes (one thread each)


FULL = StudySizes()
QUICK = StudySizes(math=replace(mx.QUICK), tune_seeds=(0,), test_seeds=(0,), val_size=6, lrs=(1e-4, 3e-4),
                   widths=((2, 1), (4, 1), (2, 2)), cot_samples=8, planning_seed=0, planning_val_size=8,
                   planning=replace(synthetic.QUICK), bootstrap=200)
QUICK_NOTE = ("> **Quick mode (--quick) checks the pipeline, not the numbers.** Toy sizes and one seed: every stage "
              "(tuning, ablations, test, planning, bootstrap, report) ran end to end, but the models are trained "
              "far too little to solve a problem, so zeros are expected and mean nothing. For the study run "
              "`make ablations` (`python -m experiments.ablations`) without quick mode.")


# ---------------------------------------------------------------------------------------------
# one job: train a configuration on one seed (cached) and evaluate it on validation problems


def validation_job(seed: int, spec: RunSpec, temps: tuple[float, ...], sizes: StudySizes, out_root: str) -> dict:
    """RL of `spec` on seed `seed` (spec.method 'cot': none), then validation Pass@k at each
    evaluation temperature; each result cached in the run directory. Returns {"curve": per-step
    metrics, "val": {temperature: summary}}."""
    torch.set_num_threads(1)
    task, m = get_task("math"), sizes.math
    examples = make_examples(task, sizes.val_size, seed=Seeds(seed).validation_examples, split="eval")
    base, _ = mx.pretrained(seed, m, out_root)
    if spec.method == "cot":
        model, router, hist, run_dir = base, None, [], os.path.join(out_root, "rl", f"cot_s{seed}")
    else:
        run_dir = os.path.join(out_root, "rl", f"{spec.name}_s{seed}")
        try:
            model, router, hist = mx.train_method(base, spec, m, seed, out_root)
        except NonFiniteLoss as e:  # this configuration fails (scores 0); the study goes on
            print(f"[seed {seed}] {spec.name}: {e}", flush=True)
            return {"curve": [], "val": {t: mx.diverged_eval(str(e), sizes.val_size, m.samples) for t in temps}}
    out = {"curve": [{k: v for k, v in h.items() if k != "seconds"} for h in hist], "val": {}}
    for t in temps:
        dec = mx.decoder(task, None if spec.method == "cot" else spec, m, t)
        out["val"][t] = cached_eval(
            os.path.join(run_dir, f"validation_T{t:g}_n{m.samples}_p{sizes.val_size}_steps{m.rl.steps}.json"),
            lambda: evaluate(model, router, task, dec, examples, m.samples, (1, m.samples), Seeds(seed).validation_examples))
    print(f"[seed {seed}] {'cot' if spec.method == 'cot' else spec.name}: " + ", ".join(f"T {t:g} pass@1 {v['pass@1']:.3f} pass@{m.samples} "
                                                     f"{v[f'pass@{m.samples}']:.3f}" for t, v in out["val"].items()),
          flush=True)
    return out


def cached_eval(path: str, compute: Callable[[], dict]) -> dict:
    """What the study keeps of an `evaluate` result (Pass@1, Pass@n, forward tokens per committed
    token, n and the per-problem counts), cached at `path` (common.cached_json)."""
    def keep() -> dict:
        ev = compute()
        return {k: ev[k] for k in ("pass@1", f"pass@{ev['n']}", "fwd_per_token", "n", "correct")}
    return cached_json(path, keep)


def _job(args: tuple) -> dict:
    return validation_job(*args)


def run_jobs(jobs: list[tuple[int, RunSpec, tuple[float, ...]]], sizes: StudySizes, out_root: str) -> dict:
    """{(spec name, seed): validation_job result} for every (seed, spec, temperatures), in parallel;
    the most expensive (the widest trees) first, so that the processes finish together."""
    cost = lambda j: TreeShape.from_widths(j[1].widths).n_slots if j[1].method == "lbr" else 0  # noqa: E731
    order = sorted(jobs, key=cost, reverse=True)
    with ProcessPoolExecutor(max_workers=sizes.jobs) as pool:
        results = list(pool.map(_job, [(s, spec, t, sizes, out_root) for s, spec, t in order]))
    return {(spec.name, s): r for (s, spec, _), r in zip(order, results)}


def score(val: dict, n: int) -> float:
    """The selection criterion: the mean of Pass@1 and Pass@n."""
    return (val["pass@1"] + val[f"pass@{n}"]) / 2


def summarize(runs: dict, spec: RunSpec, seeds: tuple[int, ...], n: int) -> dict:
    """Validation metrics of `spec` averaged over `seeds`, at each evaluation temperature, and its
    training diagnostics: {"by_T": {T: {"pass@1", "pass@n", "score", per-seed lists}}, "best_T",
    "grad_norm_model", "grad_norm_router", "router_entropy_first/last", "model_factors", "fwd_per_token"}."""
    rs = [runs[(spec.name, s)] for s in seeds]
    by_t = {}
    for t in rs[0]["val"]:
        vals = [r["val"][t] for r in rs]
        by_t[f"{float(t):g}"] = {"pass@1": [v["pass@1"] for v in vals], f"pass@{n}": [v[f"pass@{n}"] for v in vals],
                   "score": statistics.mean(score(v, n) for v in vals),
                   "fwd_per_token": statistics.mean(v["fwd_per_token"] for v in vals)}
    out = {"name": spec.name, "spec": asdict(spec), "by_T": by_t, "best_T": max(by_t, key=lambda t: by_t[t]["score"])}
    curves = [r["curve"] for r in rs if r["curve"]]
    if curves:
        mean_of = lambda key, rows: statistics.mean(h[key] for c in curves for h in rows(c))  # noqa: E731
        out |= {"grad_norm_model": mean_of("grad_norm_model", lambda c: c),
                "grad_norm_router": mean_of("grad_norm_router", lambda c: c),
                "model_factors": mean_of("model_factors", lambda c: c),
                "train_fwd_per_token": mean_of("fwd_per_token", lambda c: c),
                "reward_last10": mean_of("reward", lambda c: c[-10:])}
        out["curves"] = {key: [[h[key] for h in c] for c in curves]
                         for key in ("reward", "grad_norm_model", "grad_norm_router", "router_entropy") if key in curves[0][0]}
        if "router_entropy" in curves[0][0]:
            out |= {"router_entropy_first10": mean_of("router_entropy", lambda c: c[:10]),
                    "router_entropy_last10": mean_of("router_entropy", lambda c: c[-10:])}
    return out


def test_job(args: tuple) -> dict:
    """Stage D: RL of `spec` on seed `seed` (cached) and its evaluation on the test problems of
    results/math.md at evaluation temperature `t` (cached in the run directory)."""
    seed, spec, t, sizes, out_root = args
    torch.set_num_threads(1)
    task, m = get_task("math"), sizes.math
    path = os.path.join(out_root, "rl", f"{spec.name}_s{seed}",
                        f"test_T{t:g}_n{m.samples}_p{m.eval_size}_steps{m.rl.steps}.json")
    try:
        model, router, _ = mx.train_method(mx.pretrained(seed, m, out_root)[0], spec, m, seed, out_root)
    except NonFiniteLoss as e:
        return mx.diverged_eval(str(e), m.eval_size, m.samples)
    examples = make_examples(task, m.eval_size, seed=Seeds(seed).experiment_eval_examples, split="eval")
    keep = cached_eval(path, lambda: evaluate(model, router, task, mx.decoder(task, spec, m, t), examples, m.samples,
                                              (1, m.samples), seed))
    print(f"[seed {seed}] test {spec.name} T_r {t:g}: pass@1 {keep['pass@1']:.3f}, pass@{m.samples} "
          f"{keep[f'pass@{m.samples}']:.3f}", flush=True)
    return keep


# ---------------------------------------------------------------------------------------------
# stage C: paired bootstrap of LBR minus a baseline on the test problems


def paired_bootstrap(a: list[dict], b: list[dict], k: int, resamples: int, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5th, 97.5th percentile) of Pass@k of A minus Pass@k of B, where a[s], b[s] are the
    `evaluate` results of seed s on the same test problems (common.bootstrap_interval)."""
    d = torch.tensor([[pass_at(x, k, [i]) - pass_at(y, k, [i]) for i in range(len(x["correct"]))] for x, y in zip(a, b)],
                     dtype=torch.float64)  # (S, P) per-problem differences
    return bootstrap_interval(d, resamples, seed)


# ---------------------------------------------------------------------------------------------
# stage P: the planning joint-training question


def planning_job(args: tuple) -> dict:
    """Joint LBR training on the planning task (experiments/synthetic.py's `lbr joint`) at one learning rate,
    seed `seed`, with or without the factor normalisation; validation Pass@1 (cached)."""
    seed, lr, factor_norm, sizes, out_root = args
    torch.set_num_threads(1)
    task, p = get_task("planning"), sizes.planning
    base, _ = train_sft(task, ModelConfig.tiny(task.tokenizer.vocab_size, max_seq_len=256), replace(p.sft, seed=seed),
                        os.path.join(out_root, f"base_s{seed}.pt"), torch.device("cpu"), quiet=True)
    base.requires_grad_(False)
    dec = synthetic.lbr_config(p.max_depth, p.max_new_tokens)
    router = new_router(RouterConfig(features="subtree"), base.cfg.n_embd, p.max_depth, seed)
    cfg = replace(p.rl, seed=seed, model_lr=lr, factor_norm=factor_norm)
    name = f"lbr_joint_lr{lr:g}" + ("_factor_norm" if factor_norm else "")
    run_dir = os.path.join(out_root, "rl", f"{name}_s{seed}")
    model = copy.deepcopy(base)
    try:
        hist = train_rl(model, router, task, dec, cfg, run_dir, quiet=True)
    except NonFiniteLoss as e:
        print(f"[planning seed {seed}] {name}: {e}", flush=True)
        return {"name": name, "lr": lr, "factor_norm": factor_norm, "diverged": str(e), "pass@1": 0.0,
                f"pass@{p.lbr_samples}": 0.0, "rewards": []}
    examples = make_examples(task, sizes.planning_val_size, seed=Seeds(seed).validation_examples, split="eval")
    full = cached_eval(os.path.join(run_dir, f"validation_n{p.lbr_samples}_p{sizes.planning_val_size}.json"),
                       lambda: evaluate(model.requires_grad_(False), router.requires_grad_(False), task, dec, examples,
                                        p.lbr_samples, (1, p.lbr_samples), Seeds(seed).validation_examples))
    ev = {k: full[k] for k in ("pass@1", f"pass@{p.lbr_samples}")}
    print(f"[planning seed {seed}] {name}: pass@1 {ev['pass@1']:.3f}", flush=True)
    return {"name": name, "lr": lr, "factor_norm": factor_norm, **ev,
            "grad_norm_model": statistics.mean(h["grad_norm_model"] for h in hist),
            "reward_first10": statistics.mean(h["reward"] for h in hist[:10]),
            "reward_last10": statistics.mean(h["reward"] for h in hist[-10:]),
            "rewards": [h["reward"] for h in hist]}


# ---------------------------------------------------------------------------------------------
# the study


def study(sizes: StudySizes, out: str, planning_out: str, results_dir: str, quick: bool) -> dict:
    """Stages A, B, C and P; returns everything the report needs (JSON-able)."""
    t0, m, n = time.time(), sizes.math, sizes.math.samples
    out_root = os.path.join(out, "quick") if quick else out  # as experiments.math.run's
    planning_root = os.path.join(planning_out, "quick") if quick else planning_out
    seeds = sizes.tune_seeds
    _pretrain(sizes, out_root)
    times = {"pretraining": time.time() - t0}

    # A: every method x learning rate (cot: none), each at every evaluation temperature
    t = time.time()
    grid = {meth: [RunSpec(meth, model_lr=lr) for lr in sizes.lrs] for meth in TRAINED}
    jobs = [(s, RunSpec("cot"), sizes.temperatures["cot"]) for s in seeds]
    jobs += [(s, spec, sizes.temperatures[meth]) for meth in TRAINED for spec in grid[meth] for s in seeds]
    runs = run_jobs(jobs, sizes, out_root)
    tuning = {"cot": [summarize(runs, RunSpec("cot"), seeds, n)]}
    tuning |= {meth: [summarize(runs, spec, seeds, n) for spec in grid[meth]] for meth in TRAINED}
    chosen, chosen_t = {}, {}
    for meth, rows in tuning.items():
        best = max(((r, tt) for r in rows for tt in r["by_T"]), key=lambda x: x[0]["by_T"][x[1]]["score"])
        chosen_t[meth] = float(best[1])
        if meth != "cot":
            chosen[meth] = RunSpec(**{**best[0]["spec"], "widths": tuple(best[0]["spec"]["widths"])})
    times["A"] = time.time() - t

    # C: the chosen configurations on the test problems of every test seed (results/math.*)
    t = time.time()
    test_sizes = replace(m, configs=chosen, eval_temperatures=chosen_t, cot_samples=sizes.cot_samples,
                         rlvr_at_budget=True)
    mx.run(quick, list(sizes.test_seeds), out, results_dir, jobs=sizes.jobs, sizes=test_sizes,
           cmd="python -m experiments.ablations" + (" --quick" if quick else ""))
    with open(os.path.join(results_dir, "math_quick.json" if quick else "math.json")) as f:
        test = json.load(f)["results"]
    times["C"] = time.time() - t

    # B: LBR variants at LBR's chosen learning rate
    t = time.time()
    lbr = chosen["lbr"]
    variants = {CHOSEN_LABEL: lbr, "loss / factors per token": replace(lbr, factor_norm=True)}
    variants |= {f"entropy bonus β = {b:g}": replace(lbr, router_entropy_coef=b) for b in sizes.entropy_coefs}
    variants |= {f"T_r = {sizes.train_router_temperature:g} in training": replace(
                    lbr, router_temperature=sizes.train_router_temperature),
                "distinct siblings": replace(lbr, sampler="distinct"),
                "router: root": replace(lbr, router="root"), "router: d1": replace(lbr, router="d1")}
    variants |= {f"widths {w}": replace(lbr, widths=w) for w in sizes.widths if w != lbr.widths}
    h2 = {CHOSEN_LABEL} | {label for label in variants if "entropy" in label or "in training" in label}
    # the entropy and temperature variants at every evaluation T_r (hypothesis 2), the others at T_r = 1
    jobs = [(s, spec, sizes.temperatures["lbr"] if label in h2 else (1.0,)) for label, spec in variants.items()
            for s in seeds]
    runs |= run_jobs([j for j in jobs if (j[1].name, j[0]) not in runs], sizes, out_root)
    ablation = {label: summarize(runs, spec, seeds, n) for label, spec in variants.items()}
    times["B"] = time.time() - t

    # D: LBR's best shot, the best LBR configuration on validation of every one tried (A's grid and B's
    # variants), on the test problems; more configurations than any baseline got, so reported apart
    t = time.time()
    pool = {f"lr {r['spec']['model_lr']:g}": r for r in tuning["lbr"]} | ablation
    label = max(pool, key=lambda lab: pool[lab]["by_T"][pool[lab]["best_T"]]["score"])
    best_spec = RunSpec(**{**pool[label]["spec"], "widths": tuple(pool[label]["spec"]["widths"])})
    best_t = float(pool[label]["best_T"])
    tried = len(sizes.lrs) * len(sizes.temperatures["lbr"]) + sum(len(r["by_T"]) for lab, r in ablation.items()
                                                                   if lab != CHOSEN_LABEL)
    best_shot = {"label": label, "spec": asdict(best_spec), "T": best_t, "configurations": tried, "test": None}
    if (best_spec, best_t) != (chosen["lbr"], chosen_t["lbr"]):
        with ProcessPoolExecutor(max_workers=sizes.jobs) as pool_ex:
            best_shot["test"] = list(pool_ex.map(test_job, [(s, best_spec, best_t, sizes, out_root)
                                                            for s in sizes.test_seeds]))
    times["D"] = time.time() - t

    # P: planning, seed 1, joint training at each learning rate (+ the factor normalisation at the default)
    t = time.time()
    pjobs = [(sizes.planning_seed, lr, False, sizes, planning_root) for lr in sizes.lrs]
    pjobs.append((sizes.planning_seed, sizes.planning.rl.model_lr, True, sizes, planning_root))
    with ProcessPoolExecutor(max_workers=sizes.jobs) as pool:
        planning = list(pool.map(planning_job, pjobs))
    times["P"] = time.time() - t
    times["total"] = time.time() - t0
    return {"sizes": _jsonable(asdict(sizes)), "tuning": tuning, "chosen": {k: asdict(v) for k, v in chosen.items()},
            "chosen_temperatures": chosen_t, "ablation": ablation, "test": test, "planning": planning,
            "best_shot": best_shot, "seconds": times}


def _pretrain(sizes: StudySizes, out_root: str) -> None:
    """The base models of the tuning seeds, in parallel (cached: instant once done); the test
    seeds' are made (or loaded) by stage C."""
    seeds = sorted(set(sizes.tune_seeds))
    with ProcessPoolExecutor(max_workers=sizes.jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        list(pool.map(mx.pretrained, seeds, [sizes.math] * len(seeds), [out_root] * len(seeds)))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------
# report


def report(res: dict, cmd: str, stem: str) -> str:
    sizes, n = res["sizes"], res["sizes"]["math"]["samples"]
    tune, test = res["sizes"]["tune_seeds"], res["test"]
    lrs, temps = sizes["lrs"], sizes["temperatures"]
    sec = res["seconds"]
    lines = ["# When does local branching pay? A tuned, compute-accounted study (mod chain)", "",
             f"Regenerate: `{cmd}`. Tuning seeds {tune} (validation problems, {sizes['val_size']} per seed, n = {n} "
             f"samples); test seeds {[r['seed'] for r in test]} (test problems, {sizes['math']['eval_size']} per seed, "
             f"the problems of results/{'math_quick' if res.get('quick') else 'math'}.md). Cells are mean ± standard deviation over seeds. Wall time of the "
             f"invocation that wrote this file (work cached by an earlier one counts ~0) on {os.cpu_count()} CPU cores: pre-training {sec['pretraining'] / 60:.1f} min (cached once done), tuning (A) "
             f"{sec['A'] / 60:.1f}, LBR ablations (B) {sec['B'] / 60:.1f}, test (C) {sec['C'] / 60:.1f}, planning (P) "
             f"{sec['P'] / 60:.1f}, LBR's best shot (D) {sec.get('D', 0) / 60:.1f}; total {sec['total'] / 60:.1f} min.", "",
             "## Protocol", "",
             f"Every choice is made on validation problems drawn from their own seed stream "
             f"(`Seeds.validation_examples`), never on the test problems. Every trained method (rlvr, soft, lbr) gets "
             f"the same number of configurations: model learning rate {', '.join(f'{x:g}' for x in lrs)} x sampling temperature at "
             f"evaluation (rlvr, soft: the model's, {' / '.join(f'{x:g}' for x in temps['rlvr'])}; lbr: the router's "
             f"T_r, {' / '.join(f'{x:g}' for x in temps['lbr'])}, its model samples at 1), so {len(lrs) * 2} "
             f"configurations each; the untrained `cot` base gets the {len(temps['cot'])} temperatures. Criterion: "
             f"(Pass@1 + Pass@{n}) / 2 on validation, averaged over the tuning seeds. The LBR ablations (B) are run "
             "at LBR's chosen learning rate to answer the hypotheses; none of them enters the equal-count rows of the "
             "final table; the best LBR configuration on validation of all those tried (D, LBR's best shot) is run on "
             "the test problems too, in a row of its own. "
             "RL for every method: "
             f"{sizes['math']['rl']['steps']} GRPO steps x {sizes['math']['rl']['prompts_per_step']} prompts x "
             f"{sizes['math']['rl']['group_size']} rollouts, router lr {sizes['math']['rl']['router_lr']:g}.", ""]

    # final table
    keys = ["cot", "rlvr", "soft", "lbr", BUDGET]
    tried = {"cot": len(temps["cot"]), "rlvr": len(lrs) * 2, "soft": len(lrs) * 2, "lbr": len(lrs) * 2,
             BUDGET: "0 (rlvr's)"}
    chosen, ct = res["chosen"], res["chosen_temperatures"]

    def chosen_label(key: str) -> str:
        if key == "cot":
            return f"T {ct['cot']:g}"
        if key == BUDGET:
            return "rlvr's, group size x b = " + "/".join(str(mx.budget_of(r)) for r in test)
        return f"lr {chosen[key]['model_lr']:g}, " + ("T_r" if key == "lbr" else "T") + f" {ct[key]:g}"

    get = lambda key, k: [pass_at(_ev(r, key, n), k) for r in test]  # noqa: E731
    lines += ["## Final table (test problems)", "",
              f"| method | configurations tried | chosen on validation | Pass@1 | Pass@{n} | fwd/token |",
              "| --- | ---: | --- | ---: | ---: | ---: |"]
    for key in keys:
        lines.append(f"| {key} | {tried[key]} | {chosen_label(key)} | {mean_std(get(key, 1))} | "
                     f"{mean_std(get(key, n))} | {mean_std([_ev(r, key, n)['fwd_per_token'] for r in test])} |")
    bs = res.get("best_shot") or {}
    if bs.get("test"):
        lines.append(f"| lbr, best of all {bs['configurations']} LBR configurations (more than the baselines got) | "
                     f"{bs['configurations']} | {bs['label']}, T_r {bs['T']:g} | "
                     f"{mean_std([pass_at(e, 1) for e in bs['test']])} | {mean_std([pass_at(e, n) for e in bs['test']])} | "
                     f"{mean_std([e['fwd_per_token'] for e in bs['test']])} |")
    elif bs:
        lines += ["", f"(The best of all {bs['configurations']} LBR configurations on validation is the chosen one.)"]
    baselines = ["cot", "rlvr", "soft"]
    fresh = [r for r in test if r["seed"] not in tune]  # seeds whose runs played no part in the choices
    lines += ["", f"Paired bootstrap ({sizes['bootstrap']} resamples of seeds, then of problems within each seed) of "
              "LBR minus a baseline on the test problems; the best baseline is the one with the highest test mean "
              f"(the strongest competitor after the fact: conservative for LBR). The tuning seeds {tune} also made the "
              "choices (on other problems), so their chosen runs were selected partly for their training luck; the rows "
              f"on seeds {[r['seed'] for r in fresh]} alone are free of that.", "",
              "| metric | baseline | seeds | LBR - baseline | 95% interval | LBR better (interval above 0) |",
              "| --- | --- | --- | ---: | --- | --- |"]
    for k in (1, n):
        best = max(baselines, key=lambda b: statistics.mean(get(b, k)))
        for base, rs in [(best, test), (best, fresh), (BUDGET, test)]:
            if not rs:
                continue
            mean, lo, hi = paired_bootstrap([_ev(r, "lbr", n) for r in rs], [_ev(r, base, n) for r in rs], k,
                                            sizes["bootstrap"])
            verdict = "yes" if lo > 0 else ("no: LBR below" if hi < 0 else "not resolved")
            lines.append(f"| Pass@{k} | {base}{' (best)' if base == best else ''} | {','.join(str(r['seed']) for r in rs)} "
                         f"| {mean:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {verdict} |")
        if bs.get("test"):  # LBR's best shot against the same best baseline
            mean, lo, hi = paired_bootstrap(bs["test"], [_ev(r, best, n) for r in test], k, sizes["bootstrap"])
            verdict = "yes" if lo > 0 else ("no: LBR below" if hi < 0 else "not resolved")
            lines.append(f"| Pass@{k} (lbr: best of all) | {best} (best) | {','.join(str(r['seed']) for r in test)} "
                         f"| {mean:+.3f} | [{lo:+.3f}, {hi:+.3f}] | {verdict} |")

    # A: tuning
    lines += ["", "## A. Tuning (validation problems)", "",
              f"Pass@1 / Pass@{n} on validation, mean ± std over the tuning seeds; ✓ marks the chosen configuration.", "",
              "| method | lr | T | Pass@1 | Pass@" + str(n) + " | criterion |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for meth, rows in res["tuning"].items():
        for r in rows:
            for t, v in r["by_T"].items():
                mark = " ✓" if (float(t) == ct[meth] and (meth == "cot" or r["spec"]["model_lr"] == chosen[meth]["model_lr"])) else ""
                lr = "-" if meth == "cot" else f"{r['spec']['model_lr']:g}"
                lines.append(f"| {meth} | {lr} | {float(t):g} | {mean_std(v['pass@1'])} | {mean_std(v[f'pass@{n}'])} | "
                             f"{v['score']:.3f}{mark} |")

    # H1
    lines += ["", "## H1. Gradient scale", "",
              "Per RL step, averaged over the steps and tuning seeds: model factors per rollout, the L2 norm of the "
              "model's and the router's gradient before clipping (clip at "
              f"{sizes['math']['rl']['grad_clip']:g}), final reward (last 10 steps).", "",
              "| method | lr | model factors / rollout | grad norm model | grad norm router | reward (last 10) | "
              f"validation Pass@1 / Pass@{n} (T = 1) |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for meth in TRAINED:
        for r in res["tuning"][meth]:
            v = r["by_T"][_t1(r)]
            lines.append(f"| {meth} | {r['spec']['model_lr']:g} | {_num(r, 'model_factors', 1)} | "
                         f"{_num(r, 'grad_norm_model')} | {_num(r, 'grad_norm_router')} | {_num(r, 'reward_last10', 3)} | "
                         f"{statistics.mean(v['pass@1']):.3f} / {statistics.mean(v[f'pass@{n}']):.3f} |")
    a, b = res["ablation"][CHOSEN_LABEL], res["ablation"]["loss / factors per token"]
    lines += ["", f"Loss divided by the factors per committed token (LBR at lr {chosen['lbr']['model_lr']:g}): grad norm "
              f"model {_num(a, 'grad_norm_model')} -> {_num(b, 'grad_norm_model')}; validation Pass@1 / Pass@{n} at T_r 1: "
              f"{_pp(a, '1', n)} -> {_pp(b, '1', n)}.", ""]

    # H2, H3, H4 from the ablation table
    lines += ["## B. LBR ablations (validation problems, LBR's chosen learning rate)", "",
              f"Each at the evaluation T_r of {' / '.join(f'{x:g}' for x in temps['lbr'])} that scores best for it "
              "(both are shown). Router entropy in nats of the distributions sampled in training (at the training "
              "T_r: 2 for the `T_r = 2` row), log K uniform (log 4 = 1.386), mean of the first and of the last 10 steps.",
              "",
              f"| variant | Pass@1 (T_r 1) | Pass@{n} (T_r 1) | best T_r | Pass@1 | Pass@{n} | entropy first -> last | "
              "fwd/token (train) |", "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for label, r in res["ablation"].items():
        v1, bt = r["by_T"][_t1(r)], r["best_T"]
        vb = r["by_T"][_key(r, bt)]
        ent = (f"{r['router_entropy_first10']:.3f} -> {r['router_entropy_last10']:.3f}"
               if "router_entropy_first10" in r else "-")
        lines.append(f"| {label} | {mean_std(v1['pass@1'])} | {mean_std(v1[f'pass@{n}'])} | {float(bt):g} | "
                     f"{mean_std(vb['pass@1'])} | {mean_std(vb[f'pass@{n}'])} | {ent} | {_num(r, 'train_fwd_per_token', 1)} |")

    # H5
    kmax = min(n, min(r["eval"]["cot"]["n"] // _eval_budget(r) for r in test))
    ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= kmax]
    b_train = "/".join(str(mx.budget_of(r)) for r in test)
    lines += ["", "## H5. Compute", "",
              f"LBR spends b = {b_train} (per test seed) model forward tokens per committed token in training for "
              f"rlvr's one (rounded). `{BUDGET}` trains rlvr with b times the rollouts per prompt (same steps and prompts: LBR's training forward "
              f"budget). At evaluation, LBR's Pass@k costs about as many forward tokens as cot's Pass@(b k) "
              f"(b from each seed's evaluation fwd/token ratio: "
              f"{'/'.join(str(_eval_budget(r)) for r in test)}):", "",
              "| k | lbr Pass@k | cot Pass@(b k) | rlvr Pass@k | " + BUDGET + " Pass@k |", "| ---: | ---: | ---: | ---: | ---: |"]
    for k in ks:
        cot_bk = [pass_at(r["eval"]["cot"], _eval_budget(r) * k) for r in test]
        lines.append(f"| {k} | {mean_std(get('lbr', k))} | {mean_std(cot_bk)} | {mean_std(get('rlvr', k))} | {mean_std(get(BUDGET, k))} |")

    # P
    lines += ["", f"## Planning: joint training on seed {sizes['planning_seed']}", "",
              "experiments/synthetic.py's `lbr joint` (widths (4, 1, 1), distinct siblings, subtree router, "
              f"{sizes['planning']['rl']['steps']} steps) at each model learning rate, validation problems "
              f"({sizes['planning_val_size']}, n = {sizes['planning']['lbr_samples']}); the same run at lr 1e-4 on "
              "the test problems is the `lbr joint` row of results/synthetic.md (seed 1 in results/synthetic.json).", "",
              "| run | Pass@1 | Pass@" + str(sizes['planning']['lbr_samples']) + " | grad norm model | reward first 10 -> last 10 |",
              "| --- | ---: | ---: | ---: | --- |"]
    pk = f"pass@{sizes['planning']['lbr_samples']}"
    for r in res["planning"]:
        lines.append(f"| {r['name']} | {r['pass@1']:.3f} | {r[pk]:.3f} | {_num(r, 'grad_norm_model')} | "
                     f"{_num(r, 'reward_first10', 3)} -> {_num(r, 'reward_last10', 3)} |")
    lines += ["", "## Figures", "", f"![widths and features]({stem}_variants.png)", "",
              f"![gradient norms and router entropy]({stem}_curves.png)", "", f"![compute]({stem}_budget.png)", ""]
    return "\n".join(lines) + "\n"


def _num(r: dict, key: str, digits: int = 2) -> str:
    """A training diagnostic of a summary, or 'diverged' when its runs stopped on a non-finite loss."""
    return f"{r[key]:.{digits}f}" if key in r else "diverged"


def _ev(r: dict, key: str, n: int) -> dict:
    """Test evaluation `key` of seed result r; a zero record where the run stopped on a non-finite loss."""
    return r["eval"].get(key) or mx.diverged_eval("not run", len(r["eval"]["cot"]["correct"]), n)


def _key(r: dict, t) -> str:
    """The key of r["by_T"] for temperature t (keys are strings after a JSON round trip)."""
    return next(k for k in r["by_T"] if float(k) == float(t))


def _t1(r: dict) -> str:
    return _key(r, 1.0)


def _pp(r: dict, t: str, n: int) -> str:
    v = r["by_T"][_t1(r)]
    return f"{statistics.mean(v['pass@1']):.3f} / {statistics.mean(v[f'pass@{n}']):.3f}"


def _eval_budget(r: dict) -> int:
    return max(1, round(r["eval"]["lbr"]["fwd_per_token"] / r["eval"]["cot"]["fwd_per_token"]))


def plots(res: dict, out_dir: str, stem: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = res["sizes"]["math"]["samples"]

    # variants: Pass@1 and Pass@n (validation, T_r 1) per width / feature / sampler
    abl = res["ablation"]
    labels = list(abl)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=False)
    for ax, metric in zip(axes, ["pass@1", f"pass@{n}"]):
        vals = [abl[lab]["by_T"][_t1(abl[lab])][metric] for lab in labels]
        ax.barh(range(len(labels)), [statistics.mean(v) for v in vals], xerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals],
                color="tab:blue", alpha=0.7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel(f"validation {metric.replace('pass', 'Pass')} (T_r 1)")
        ax.invert_yaxis()
    fig.suptitle("LBR variants at the chosen learning rate (mean ± std over tuning seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"{stem}_variants.png"), dpi=110)
    plt.close(fig)

    # curves: gradient norms of every method (lr 1e-4 row of the grid), router entropy of the H2 variants
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    lr_mid = res["sizes"]["lrs"][len(res["sizes"]["lrs"]) // 2]
    for meth in TRAINED:
        r = next(r for r in res["tuning"][meth] if r["spec"]["model_lr"] == lr_mid)
        _curve(axes[0], r, "grad_norm_model", f"{meth} (lr {lr_mid:g})")
        if meth == "lbr":
            _curve(axes[1], r, "grad_norm_router", f"lbr (lr {lr_mid:g})")
    for label in [lab for lab in abl if "entropy" in lab or "T_r" in lab or lab == CHOSEN_LABEL]:
        _curve(axes[2], abl[label], "router_entropy", label)
    for ax, title in zip(axes, ["model gradient norm (before clipping)", "router gradient norm", "router entropy (nats)"]):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("RL step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"{stem}_curves.png"), dpi=110)
    plt.close(fig)

    # compute: LBR Pass@k against cot Pass@(b k), rlvr and rlvr at LBR's budget
    test = res["test"]
    ks = list(range(1, n + 1))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key in ["lbr", "rlvr", BUDGET]:
        ax.plot(ks, [statistics.mean(pass_at(_ev(r, key, n), k) for r in test) for k in ks], label=key)
    kb = [k for k in ks if all(_eval_budget(r) * k <= r["eval"]["cot"]["n"] for r in test)]
    ax.plot(kb, [statistics.mean(pass_at(r["eval"]["cot"], _eval_budget(r) * k) for r in test) for k in kb],
            label="cot Pass@(b k): LBR's forward budget", linestyle="--")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("Pass@k (test)")
    ax.legend(fontsize=7)
    ax.set_title("Pass@k at equal samples and at LBR's forward budget", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"{stem}_budget.png"), dpi=110)
    plt.close(fig)


def _curve(ax, summary: dict, key: str, label: str) -> None:
    """Metric `key` per RL step of a summary (mean over its seeds); nothing for a diverged one."""
    if key not in summary.get("curves", {}):
        return
    runs = summary["curves"][key]
    steps = range(min(map(len, runs)))
    ax.plot([i + 1 for i in steps], [statistics.mean(c[i] for c in runs) for i in steps], label=label)


# ---------------------------------------------------------------------------------------------
# command line


def run(quick: bool, out: str, planning_out: str, results_dir: str, report_only: bool = False) -> str:
    """The study (or only its report from the saved JSON); returns the markdown."""
    check_out_dir(results_dir, "--results")
    check_out_dir(out, "--out")
    check_out_dir(planning_out, "--planning-out")
    stem = "ablations_quick" if quick else "ablations"
    path = os.path.join(results_dir, f"{stem}.json")
    if report_only:
        check_in_file(path, "--report-only reads", "run without --report-only first")
        res = load_saved(path, quick)
    else:
        make_out_dir(results_dir, "--results")
        sizes = QUICK if quick else FULL
        res = study(sizes, out, planning_out, results_dir, quick) | {"quick": quick}
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
        with open(path) as f:  # the report reads what --report-only will read (JSON keys are strings)
            res = json.load(f)
        in_code = json.loads(json.dumps({k: asdict(v) for k, v in mx.CHOSEN.items()}))
        if not quick and (res["chosen"] != in_code or res["chosen_temperatures"] != mx.CHOSEN_TEMPERATURES):
            print("note: experiments.math.CHOSEN / CHOSEN_TEMPERATURES differ from this study's choice "
                  f"({res['chosen']}, {res['chosen_temperatures']}): `make math` runs the old ones until they are updated")
    with malformed(path):
        md = report(res, "python -m experiments.ablations" + (" --quick" if quick else ""), stem)
        if quick:
            title, rest = md.split("\n", 1)
            md = f"{title}\n\n{QUICK_NOTE}\n{rest}"
        plots(res, results_dir, stem)
    with open(os.path.join(results_dir, f"{stem}.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {results_dir}/{stem}.md")
    if quick:
        print(QUICK_NOTE)
    return md


def main() -> None:
    ap = ArgumentParser(description="The LBR study on the math task: tuning on validation, ablations, test table "
                        "(results/ablations.md, results/math.md).")
    ap.add_argument("--quick", action="store_true", help="toy sizes, one seed, about a minute")
    ap.add_argument("--out", default="out/math", help="math base models and RL runs (cached)")
    ap.add_argument("--planning-out", default="out/planning", help="planning base models and RL runs (cached)")
    ap.add_argument("--results", default="results", help="where the tables, JSON and plots go")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report and plots from the saved JSON")
    args = ap.parse_args()
    run(args.quick, args.out, args.planning_out, args.results, args.report_only)


if __name__ == "__main__":
    run_cli(main)
