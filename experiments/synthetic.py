"""
`make synthetic`: the planning experiment (docs/DESIGN.md §8.1) end to end, over several seeds.

Per seed (seeds run in parallel processes, one CPU thread each):
1. pre-train the tiny GPT on the planning task (cached in out/planning/) and record its health
   checks;
2. routing evidence, base model frozen: LBR with widths (4, 1, ..., 1) of lookahead depth 1..3,
   routers `root`, `d1`, `subtree` each trained alone by the likelihood-ratio gradient, plus the
   untrained P(<eos>) readout as a reference; success (Pass@1) per target depth j;
3. end-to-end RL with equal budgets (same steps, prompts, group size): `cot` (sampling, greedy;
   no RL), vanilla RLVR (`cot` + GRPO), the soft-token baseline (`soft` + GRPO, K = 4), LBR with the router trained alone, LBR with model and
   router trained jointly; Pass@1, Pass@8, forward tokens per committed token, and `cot`
   best-of-n at LBR's forward-token budget; learning curves.
Then results/synthetic.md (tables, health checks, the command and seeds), results/synthetic.json
and the plots results/synthetic_*.png.

Run:
    python -m experiments.synthetic                 # default size, seeds 0 1 2 (about 15-20 minutes on 2 cores)
    python -m experiments.synthetic --quick         # toy size, one seed, about a minute (CI)
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import time
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn

from tools.cli import ArgumentParser, check_in_file, check_int, check_out_dir, run
from decode import CotConfig, LBRConfig
from soft import SoftConfig
from evaluate import generate
from model import ModelConfig, Transformer
from experiments.common import mean_std, plot_learning_curves, provenance, run_seeds, seed_logger
from evaluate import evaluate, greedy_completions
from rlvr import RLConfig, new_router, train_rl
from router import RouterConfig, RouterInput
from tree import children_table
from sft import SFTConfig, health_checks, train_sft
from tasks import get_task
from tasks.common import Seeds, make_examples

N_ARMS = 4  # the planning task's default: the first decision is 4-way (chance = 0.25)


@dataclass
class Sizes:
    sft: SFTConfig = field(default_factory=SFTConfig)  # pre-training (cached per seed)
    rl: RLConfig = field(default_factory=RLConfig)  # every RL run (equal budgets)
    eval_size: int = 256  # evaluation problems (target depths 1..3, held out)
    lbr_samples: int = 8  # samples per problem for LBR and trained models (Pass@1, Pass@8)
    cot_samples: int = 16  # samples per problem for base-model cot (also gives best-of-n up to 16)
    max_depth: int = 3  # lookahead depths 1..max_depth (L - 1: targets are never leaves)
    max_new_tokens: int = 8  # answers are at most 4 tokens + <eos>


FULL = Sizes()
QUICK = Sizes(sft=SFTConfig(steps=200, eval_every=200, eval_size=64), rl=RLConfig(steps=3, prompts_per_step=4, group_size=4),
              eval_size=16, lbr_samples=4, cot_samples=8)
# 200 pre-training steps do not teach the tiny model to follow edges (teacher-forced accuracy about 0.5), so
# QUICK's numbers are zeros and "healthy NO" by design: its run shows that every stage works end to end, and
# its report says so
QUICK_NOTE = ("> **Quick mode (--quick) checks the pipeline, not the numbers.** Toy sizes and one seed: every stage "
              "(pre-training, health checks, router training, RL, evaluation, report) ran end to end, but the "
              "models are trained far too little for the health checks to pass or for the success rates to mean "
              "anything; zeros and `healthy NO` are expected. For the results run `make synthetic` "
              "(`python -m experiments.synthetic`) without quick mode.")


class EOSReadout(nn.Module):
    """An untrained reference router: score = log p(candidate) + max over the candidate's subtree of
    log p(<eos> | node). It reads the model's own "the target is here" signal; no learning."""

    def __init__(self, model: Transformer, eos_id: int):
        super().__init__()
        self.model, self.eos_id = model, eos_id

    def forward(self, x: RouterInput) -> torch.Tensor:
        lp_eos = self.model.head(x.sub_hidden).log_softmax(-1)[..., self.eos_id]  # (..., K, Ms)
        return x.cand_logp + lp_eos.masked_fill(~x.sub_mask, float("-inf")).amax(-1)


@torch.no_grad()
def oracle_ceiling(model: Transformer, task, depth: int, examples: list, samples: int, seed: int) -> dict:
    """What a router that knew the answer could do at the first step: the share of first trees
    (widths (4, 1, ..., 1), distinct sampler, the frozen base model) in which some candidate's
    chain follows the answer path for min(depth, j) tokens, i.e. the right arm is among the
    candidates and its sampled continuation walks down that arm. Per target depth j."""
    dec = lbr_config(depth, max_new_tokens=1)
    router = new_router(RouterConfig(), model.cfg.n_embd, depth, seed)  # fresh: the candidates do not depend on it
    prompts = [e.prompt for e in examples for _ in range(samples)]
    traj = generate(model, router, prompts, dec, task.stop_ids, torch.Generator().manual_seed(seed))
    children = children_table(traj.parent, N_ARMS)  # (B, M, K)
    hits = []
    for b, e in enumerate(e for e in examples for _ in range(samples)):
        need = e.answer[: min(depth, e.info["depth"])]
        found = False
        for c in children[b, int(traj.prompt_len[b]) - 1].tolist():
            path, node = [], c
            while node >= 0 and len(path) < len(need):
                path.append(int(traj.tokens[b, node]))
                node = int(children[b, node, 0])
            found |= path == need
        hits.append(found)
    out = {"pass@1": sum(hits) / len(hits)}
    labels = [task.difficulty(e) for e in examples for _ in range(samples)]
    for d in sorted(set(labels)):
        sel = [h for h, lab in zip(hits, labels) if lab == d]
        out[f"pass@1_{d}"] = sum(sel) / len(sel)
    return out


def lbr_config(depth: int, max_new_tokens: int, greedy_router: bool = False) -> LBRConfig:
    return LBRConfig(widths=(N_ARMS,) + (1,) * (depth - 1), sampler="distinct", greedy_router=greedy_router,
                     max_new_tokens=max_new_tokens)


def run_seed(seed: int, sizes: Sizes, out_root: str, quiet: bool = True) -> dict:
    """Everything for one seed; returns a JSON-able dict."""
    t_start, dev, task, log = time.time(), torch.device("cpu"), get_task("planning"), seed_logger(seed)

    base, ckpt = train_sft(task, ModelConfig.tiny(task.tokenizer.vocab_size, max_seq_len=256),
                           replace(sizes.sft, seed=seed), os.path.join(out_root, f"base_s{seed}.pt"), dev, quiet=quiet)
    base.requires_grad_(False)
    t_experiment = time.time()
    health = task.health(base, make_examples(task, 512, seed=Seeds(seed).eval_examples, split="eval"), greedy_completions)
    log(f"pre-trained ({ckpt['history'][-1]['seconds']:.0f}s of training): " + json.dumps({k: round(v, 3) for k, v in health.items()}))
    examples = make_examples(task, sizes.eval_size, seed=Seeds(seed).experiment_eval_examples, split="eval")
    rl = replace(sizes.rl, seed=seed)
    out = {"seed": seed, "health": health, "pretrain_seconds": ckpt["history"][-1]["seconds"], "routing": {}, "e2e": {},
           "curves": {}}

    def rl_run(name: str, dec, router, freeze_model: bool) -> tuple[Transformer, list[dict]]:
        model = copy.deepcopy(base)
        cfg = replace(rl, freeze_model=freeze_model)
        run_dir = os.path.join(out_root, "rl", f"{name.replace(' ', '_').replace('@', '_d')}_s{seed}")
        hist = train_rl(model, router, task, dec, cfg, run_dir, quiet=True)
        out["curves"][name] = [h["reward"] for h in hist]
        return model.requires_grad_(False), hist

    ks = tuple(k for k in (1, 8) if k <= sizes.lbr_samples)
    # routing evidence: base frozen, each router trained alone; the readout needs no training
    for features, depths in [("root", [1]), ("d1", [1]), ("subtree", list(range(1, sizes.max_depth + 1)))]:
        for depth in depths:
            router = new_router(RouterConfig(features=features), base.cfg.n_embd, depth, seed)
            model, _ = rl_run(f"router {features}@{depth}", lbr_config(depth, sizes.max_new_tokens), router, freeze_model=True)
            ev = evaluate(model, router, task, lbr_config(depth, sizes.max_new_tokens), examples, sizes.lbr_samples, ks, seed)
            out["routing"][f"{features}@{depth}"] = ev
            log(f"router {features} depth {depth}: pass@1 {ev['pass@1']:.3f}")
    for depth in range(1, sizes.max_depth + 1):
        out["routing"][f"oracle@{depth}"] = oracle_ceiling(base, task, depth, examples, sizes.lbr_samples, seed)
        ev = evaluate(base, EOSReadout(base, task.eos_id), task, lbr_config(depth, sizes.max_new_tokens, greedy_router=True),
                      examples, 1, (1,), seed)
        out["routing"][f"readout@{depth}"] = ev

    # end to end, equal budgets: cot (no RL), vanilla RLVR, LBR router alone (from above), LBR joint
    cot_ks = tuple(range(1, sizes.cot_samples + 1))
    out["e2e"]["cot"] = evaluate(base, None, task, CotConfig(max_new_tokens=sizes.max_new_tokens), examples,
                                 sizes.cot_samples, cot_ks, seed)
    out["e2e"]["cot greedy"] = evaluate(base, None, task, CotConfig(greedy=True, max_new_tokens=sizes.max_new_tokens),
                                        examples, 1, (1,), seed)
    model, _ = rl_run("rlvr", CotConfig(max_new_tokens=sizes.max_new_tokens), None, freeze_model=False)
    out["e2e"]["rlvr"] = evaluate(model, None, task, CotConfig(max_new_tokens=sizes.max_new_tokens), examples,
                                  sizes.lbr_samples, ks, seed)
    soft = SoftConfig(k=N_ARMS, max_new_tokens=sizes.max_new_tokens)
    model, _ = rl_run("soft", soft, None, freeze_model=False)
    out["e2e"]["soft"] = evaluate(model, None, task, soft, examples, sizes.lbr_samples, ks, seed)
    depth = sizes.max_depth
    out["e2e"]["lbr router"] = out["routing"][f"subtree@{depth}"]
    out["curves"]["lbr router"] = out["curves"][f"router subtree@{depth}"]
    router = new_router(RouterConfig(features="subtree"), base.cfg.n_embd, depth, seed)
    model, _ = rl_run("lbr joint", lbr_config(depth, sizes.max_new_tokens), router, freeze_model=False)
    out["e2e"]["lbr joint"] = evaluate(model, router, task, lbr_config(depth, sizes.max_new_tokens), examples, sizes.lbr_samples, ks, seed)
    out["seconds"], out["experiment_seconds"] = time.time() - t_start, time.time() - t_experiment
    log(f"done in {out['seconds']:.0f}s")
    return out


# ---------------------------------------------------------------------------------------------
# report


def report(results: list[dict], sizes: Sizes, cmd: str, seconds: float, stem: str) -> str:
    get = lambda section, key, metric: [r[section][key][metric] for r in results]  # noqa: E731
    depths = sorted(int(k.split("@")[1]) for k in results[0]["routing"] if k.startswith("subtree@"))
    js = sorted({int(k.split("_j")[1]) for k in results[0]["routing"]["subtree@1"] if "_j" in k})
    lines = [f"# Synthetic planning experiment (subgoal star, {N_ARMS} arms of 4 nodes)", "",
             provenance(cmd, results, seconds), ""]

    lines += ["## Health of the pre-trained models", "",
              "Gate of docs/DESIGN.md §7.2: (1) teacher-forced accuracy after the first answer token >= 0.99; "
              "(2) the first answer token (argmax) is a child of s >= 0.99; (3) first-token accuracy about "
              f"1/{N_ARMS} at j >= 2 (counted as failed above 2/{N_ARMS}; j = 1 is a one-edge check, which the model "
              "may solve). `p_child` is the probability mass "
              "of the first token on the children of s (how often a *sampled* first token is one).", "",
              "| seed | (1) tf acc after first | (2) first is child | p_child | (3) first acc j=1 | j=2 | j=3 | healthy |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        h = r["health"]
        ok = all(c.passed for c in health_checks(h))
        lines.append(f"| {r['seed']} | {h['tf_acc_rest']:.3f} | {h['first_is_child']:.3f} | {h['p_child']:.3f} | "
                     f"{h.get('first_acc_j1', float('nan')):.3f} | {h.get('first_acc_j2', float('nan')):.3f} | "
                     f"{h.get('first_acc_j3', float('nan')):.3f} | {'yes' if ok else 'NO'} |")

    lines += ["", "## Routing evidence (base model frozen, router trained alone)", "",
              f"Success = Pass@1 of LBR with widths ({N_ARMS}, 1, ..., 1) and the `distinct` sampler (the candidates "
              "are distinct first tokens), sampled router; per target depth j. `root` and `d1` read nothing below "
              "depth 1, so their success does not depend on the lookahead depth: they are trained once, at depth 1. "
              "`readout` is the untrained reference (greedy: log p(candidate) + max log p(<eos>) in the subtree). "
              "`oracle` is not a method: the share of first trees in which some candidate's sampled "
              "chain walks down the answer path for min(depth, j) tokens, i.e. the trees in which the lookahead "
              "shows the right arm (a router that knew the answer could pick it). It caps a router that picks by "
              "that evidence; a router can beat it only by luck (picking a candidate on the right arm whose "
              "sampled chain strayed: the next steps regrow the tree).", "",
              "| router | lookahead depth | " + " | ".join(f"j={j}" for j in js) + " | all |",
              "| --- | ---: | " + " | ".join("---:" for _ in js) + " | ---: |"]
    for key in (["root@1", "d1@1"] + [f"subtree@{d}" for d in depths] + [f"readout@{d}" for d in depths]
                + [f"oracle@{d}" for d in depths if f"oracle@{d}" in results[0]["routing"]]):
        name, d = key.split("@")
        cells = [mean_std(get("routing", key, f"pass@1_j{j}")) for j in js] + [mean_std(get("routing", key, "pass@1"))]
        lines.append(f"| {name} | {d if name not in ('root', 'd1') else 'any'} | " + " | ".join(cells) + " |")

    lines += ["", "## End to end (equal RL budgets)", "",
              f"RL: {sizes.rl.steps} GRPO steps x {sizes.rl.prompts_per_step} prompts x "
              f"{sizes.rl.group_size} rollouts for every trained method (router lr {sizes.rl.router_lr}, model lr "
              f"{sizes.rl.model_lr}). LBR: widths ({N_ARMS}, 1, 1), subtree router. "
              "`fwd/token` = model forward tokens per committed token.", "",
              "| method | Pass@1 | Pass@8 | " + " | ".join(f"Pass@1 j={j}" for j in js) + " | fwd/token |",
              "| --- | ---: | ---: | " + " | ".join("---:" for _ in js) + " | ---: |"]
    for key in ["cot greedy", "cot", "rlvr", "soft", "lbr router", "lbr joint"]:
        p8 = mean_std(get("e2e", key, "pass@8")) if "pass@8" in results[0]["e2e"][key] else "-"
        lines.append(f"| {key} | {mean_std(get('e2e', key, 'pass@1'))} | {p8} | "
                     + " | ".join(mean_std(get("e2e", key, f"pass@1_j{j}")) for j in js)
                     + f" | {mean_std(get('e2e', key, 'fwd_per_token'))} |")
    # cot samples with the forward tokens of one LBR rollout (capped by the samples drawn)
    budget = [max(1, min(round(r["e2e"]["lbr joint"]["fwd_per_token"] / r["e2e"]["cot"]["fwd_per_token"]),
                         sizes.cot_samples)) for r in results]
    bon = [r["e2e"]["cot"][f"pass@{n}"] for r, n in zip(results, budget)]
    maj = [r["e2e"]["cot"][f"majority@{n}"] for r, n in zip(results, budget)]
    lines += [f"| cot best-of-n, n = LBR's budget ({'/'.join(map(str, budget))}), verifier picks | {mean_std(bon)} | | | | | |",
              f"| cot majority vote of n = LBR's budget | {mean_std(maj)} | | | | | |"]

    lines += ["", "## Figures", "", f"![routing evidence]({stem}_depth.png)", "", f"![router ablation]({stem}_routers.png)", "",
              f"![learning curves]({stem}_curves.png)", ""]
    return "\n".join(lines) + "\n"


def plots(results: list[dict], out_dir: str, stem: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def stats(vals):
        m = statistics.mean(vals)
        return m, (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    depths = sorted(int(k.split("@")[1]) for k in results[0]["routing"] if k.startswith("subtree@"))
    js = sorted({int(k.split("_j")[1]) for k in results[0]["routing"]["subtree@1"] if "_j" in k})
    fig, axes = plt.subplots(1, len(js), figsize=(4 * len(js), 3.4), sharey=True)
    for ax, j in zip(axes, js):
        curves = [("subtree", "subtree router (trained)", "o-"), ("readout", "P(<eos>) readout (untrained)", "s--"),
                  ("oracle", "oracle: some candidate's chain is right", "^:")]
        for key, label, style in [c for c in curves if f"{c[0]}@1" in results[0]["routing"]]:
            m, s = zip(*[stats([r["routing"][f"{key}@{d}"][f"pass@1_j{j}"] for r in results]) for d in depths])
            ax.errorbar(depths, m, yerr=s, fmt=style, capsize=3, label=label,
                        color={"subtree": "tab:blue", "readout": "tab:orange", "oracle": "tab:purple"}[key])
        for key, label, color in [("root@1", "root router", "grey"), ("d1@1", "d1 router", "tab:green")]:
            m, _ = stats([r["routing"][key][f"pass@1_j{j}"] for r in results])
            ax.axhline(m, color=color, ls=":", label=label)
        m, _ = stats([r["e2e"]["cot"][f"pass@1_j{j}"] for r in results])
        ax.axhline(m, color="black", ls="-.", lw=0.8, label="cot sampling")
        ax.axhline(1 / N_ARMS, color="red", ls=":", lw=0.8, label=f"chance of the first step (1/{N_ARMS})")
        ax.axvline(j, color="red", alpha=0.15, lw=8)
        ax.set_title(f"target depth j = {j}")
        ax.set_xlabel("lookahead depth")
        ax.set_xticks(depths)
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("success (Pass@1)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"{stem}_depth.png"), dpi=110)
    plt.close(fig)

    # router ablation: success per target depth for every router (bars: mean; ticks: each seed)
    keys = ["root@1", "d1@1"] + [f"subtree@{d}" for d in depths]
    fig, ax = plt.subplots(figsize=(1.6 * len(keys) + 2, 3.4))
    width = 0.8 / len(js)
    for n, j in enumerate(js):
        xs = [i + (n - (len(js) - 1) / 2) * width for i in range(len(keys))]
        vals = [[r["routing"][k][f"pass@1_j{j}"] for r in results] for k in keys]
        ax.bar(xs, [statistics.mean(v) for v in vals], width, label=f"j = {j}")
        for x, v in zip(xs, vals):
            ax.plot([x] * len(v), v, "k_", ms=6)
    ax.axhline(1 / N_ARMS, color="red", ls=":", lw=0.8, label="chance (1/4)")
    ax.set_xticks(range(len(keys)), ["root", "d1"] + [f"subtree\ndepth {d}" for d in depths])
    ax.set_ylabel("success (Pass@1)")
    ax.set_title("router ablation (base model frozen)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"{stem}_routers.png"), dpi=110)
    plt.close(fig)

    plot_learning_curves({k: [r["curves"][k] for r in results] for k in ["rlvr", "soft", "lbr router", "lbr joint"]},
                         os.path.join(out_dir, f"{stem}_curves.png"))


def main() -> None:
    ap = ArgumentParser(description="The synthetic planning experiment (make synthetic).")
    ap.add_argument("--quick", action="store_true", help="toy sizes, one seed, about a minute")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (quick: 0)")
    ap.add_argument("--jobs", type=int, default=0, help="parallel seed processes (default: one per seed)")
    ap.add_argument("--out", default="out/planning", help="checkpoints and run directories (cached)")
    ap.add_argument("--results", default="results", help="where the table, JSON and plots go")
    ap.add_argument("--report-only", action="store_true", help="rewrite the table and plots from the saved JSON")
    args = ap.parse_args()
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    sizes = QUICK if args.quick else FULL
    out_root = os.path.join(args.out, "quick") if args.quick else args.out
    stem = "synthetic_quick" if args.quick else "synthetic"
    check_int("--jobs", args.jobs, 0, "0: one process per seed")
    check_out_dir(args.results, "--results")
    check_out_dir(args.out, "--out")
    if args.report_only:
        check_in_file(os.path.join(args.results, f"{stem}.json"), "--report-only reads", "run without --report-only first")
    results, seconds = run_seeds(run_seed, seeds, sizes, out_root, os.path.join(args.results, f"{stem}.json"),
                                 args.jobs, args.report_only)
    seeds = [r["seed"] for r in results]
    cmd = "python -m experiments.synthetic" + (" --quick" if args.quick else "") + f" --seeds {' '.join(map(str, seeds))}"
    md = report(results, sizes, cmd, seconds, stem)
    if args.quick:  # under the title, where a reader of the file looks first
        title, rest = md.split("\n", 1)
        md = f"{title}\n\n{QUICK_NOTE}\n{rest}"
    plots(results, args.results, stem)
    with open(os.path.join(args.results, f"{stem}.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {args.results}/{stem}.md ({seconds / 60:.1f} min)")
    if args.quick:  # and again at the end, where a reader of the console looks
        print(QUICK_NOTE)


if __name__ == "__main__":
    run(main)
