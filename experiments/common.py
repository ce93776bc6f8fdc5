"""
What the experiments share: seeds run in parallel processes (one CPU thread each), results saved
as JSON (cached per run, re-read by `--report-only`), the provenance line at the top of every
table, mean ± spread cells, the paired bootstrap, and the learning-curve plot.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from typing import Callable, Iterator

import torch

from tools.cli import read_json_object


def run_seeds(run_seed: Callable[..., dict], seeds: list[int], sizes, out_root: str, json_path: str,
              jobs: int = 0, report_only: bool = False, extra: dict | None = None) -> tuple[list[dict], float]:
    """(per-seed results, wall seconds): `run_seed(seed, sizes, out_root)` for every seed in parallel
    processes, saved to `json_path` (with the fields of `extra`); with `report_only`, read back from
    `json_path` instead.
    Raises ValueError for a seed given twice (two processes would write the same run directories)."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {' '.join(map(str, seeds))}: give each seed once (a repeated seed would run "
                         "two processes into the same directories)")
    if report_only:
        saved = load_saved(json_path)
        with malformed(json_path):
            return list(saved["results"]), float(saved["seconds"])
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=jobs or len(seeds), initializer=torch.set_num_threads, initargs=(1,)) as pool:
        results = list(pool.map(run_seed, seeds, [sizes] * len(seeds), [out_root] * len(seeds)))
    seconds = time.time() - t0
    os.makedirs(os.path.dirname(json_path) or ".", exist_ok=True)
    with open(json_path, "w") as f:
        json.dump({"seconds": seconds, "sizes": asdict(sizes), "results": results, **(extra or {})}, f, indent=1)
    return results, seconds


def load_saved(path: str, quick: bool | None = None) -> dict:
    """The JSON an experiment saved, for --report-only. Raises ValueError naming the file when it
    cannot be read as a JSON object, or (quick given) was made in the other mode: a quick run's
    numbers must not be reported as the full run's."""
    try:
        saved = read_json_object(path)
    except ValueError as e:
        raise ValueError(f"not a saved report: {e}; run without --report-only to make it") from None
    if quick is not None and saved.get("quick", quick) != quick:
        raise ValueError(f"{path} was made {'with' if saved['quick'] else 'without'} --quick; give the same mode "
                         "to --report-only, or run without it")
    return saved


@contextmanager
def malformed(path: str) -> Iterator[None]:
    """Turns what a saved report with missing or ill-typed fields raises into one ValueError
    naming the file (for --report-only, which reads a file a person may have edited)."""
    try:
        yield
    except (KeyError, TypeError, IndexError, AttributeError, ZeroDivisionError, ValueError,
            statistics.StatisticsError) as e:
        raise ValueError(f"{path} does not hold what the report needs ({type(e).__name__}: {e}); run without "
                         "--report-only to make it again") from None


def provenance(cmd: str, results: list[dict], seconds: float) -> str:
    """Where a table comes from: the command, the seeds, the machine and the time it took."""
    pre = ", ".join(f"{r['pretrain_seconds'] / 60:.1f}" for r in results)
    rest = ", ".join(f"{r['experiment_seconds'] / 60:.1f}" for r in results)
    return (f"Regenerate: `{cmd}`. Seeds {[r['seed'] for r in results]}; cells are mean ± standard deviation over "
            f"seeds. Wall time of this run {seconds / 60:.1f} min on {os.cpu_count()} CPU cores ({platform.machine()}), "
            f"torch {torch.__version__}. Per seed (seeds in parallel, one thread each): pre-training {pre} min "
            f"(cached in out/ once done), everything after it {rest} min.")


def mean_std(values: list[float]) -> str:
    """'mean ± sample standard deviation' of a metric over seeds (just the value for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def plot_learning_curves(curves: dict[str, list[list[float]]], path: str) -> None:
    """Batch reward against RL step per method (mean and min-max band over seeds) -> PNG.
    curves[method] holds one reward list per seed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, runs in curves.items():
        steps = range(min(map(len, runs)))
        ax.plot([i + 1 for i in steps], [statistics.mean(c[i] for c in runs) for i in steps], label=name)
        ax.fill_between([i + 1 for i in steps], [min(c[i] for c in runs) for i in steps],
                        [max(c[i] for c in runs) for i in steps], alpha=0.2)
    ax.set_xlabel("RL step")
    ax.set_ylabel("mean reward of the batch")
    ax.set_title("learning curves (mean, min-max over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cached_json(path: str, compute: Callable[[], dict], required: tuple[str, ...] = ()) -> dict:
    """The JSON object at `path` when it exists, else `compute()`, written there atomically first
    (a killed run leaves no half-written result; the next run computes it again). Raises
    ValueError naming the file when it is not a JSON object with the `required` keys."""
    if os.path.exists(path):
        try:
            saved = read_json_object(path)
            missing = [k for k in required if k not in saved]
        except ValueError as e:
            missing = [str(e)]
        if missing:
            raise ValueError(f"{path}: not a result this run wrote (missing {missing[0]}); delete it to compute it again")
        return saved
    out = compute()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(path + ".tmp", path)
    return out


def bootstrap_interval(d: torch.Tensor, resamples: int, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5th, 97.5th percentile) of the mean of d, (S, P) paired differences of seed s on
    problem p. Each resample draws the seeds with replacement, then the problems of each drawn seed
    with replacement (a two-level bootstrap: seeds and problems both vary; Efron & Tibshirani 1993)."""
    d = d.to(torch.float64)
    S, P = d.shape
    g = torch.Generator().manual_seed(seed)
    seeds = torch.randint(S, (resamples, S), generator=g)
    probs = torch.randint(P, (resamples, S, P), generator=g)
    stats = d[seeds[..., None], probs].mean((1, 2))  # (resamples,)
    lo, hi = torch.quantile(stats, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return float(d.mean()), lo, hi


NO_EOS = 10**6  # an id the model never emits: every rollout runs to the length limit


def median_times(fns: list, repeats: int) -> list[float]:
    """Median wall time of each function; the runs are interleaved (a, b, a, b, ...) so that a
    slow spell of a shared machine hits every function alike and the ratios stay fair."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns if repeats > 1 else []:
        fn()  # warm-up (skipped for single long runs)
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def seed_logger(seed: int) -> Callable[[str], None]:
    return lambda msg: print(f"[seed {seed}] {msg}", flush=True)
