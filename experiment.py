"""
What the two experiments (synthetic.py, math_experiment.py) share: seeds run in parallel
processes (one CPU thread each), results saved as JSON and re-read by `--report-only`, the
provenance line at the top of every table, mean ± spread cells, and the learning-curve plot.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Callable

import torch


def run_seeds(run_seed: Callable[..., dict], seeds: list[int], sizes, out_root: str, json_path: str,
              jobs: int = 0, report_only: bool = False) -> tuple[list[dict], float]:
    """(per-seed results, wall seconds): `run_seed(seed, sizes, out_root)` for every seed in parallel
    processes, saved to `json_path`; with `report_only`, read back from `json_path` instead.
    Raises ValueError for a seed given twice (two processes would write the same run directories)."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {' '.join(map(str, seeds))}: give each seed once (a repeated seed would run "
                         "two processes into the same directories)")
    if report_only:
        with open(json_path) as f:
            saved = json.load(f)
        return saved["results"], saved["seconds"]
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=jobs or len(seeds), initializer=torch.set_num_threads, initargs=(1,)) as pool:
        results = list(pool.map(run_seed, seeds, [sizes] * len(seeds), [out_root] * len(seeds)))
    seconds = time.time() - t0
    os.makedirs(os.path.dirname(json_path) or ".", exist_ok=True)
    with open(json_path, "w") as f:
        json.dump({"seconds": seconds, "sizes": asdict(sizes), "results": results}, f, indent=1)
    return results, seconds


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


def seed_logger(seed: int) -> Callable[[str], None]:
    return lambda msg: print(f"[seed {seed}] {msg}", flush=True)
