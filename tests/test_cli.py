"""Every command line, given bad input, ends with ONE line on stderr and exit status 2: no traceback,
nothing overwritten, and (where it matters) before any work.

Each row is `python SCRIPT ARGS` run from the repository root as a user would, in a process of its
own. A fresh interpreter costs ~2 s of CPU (importing torch) and there are ~70 rows, so the rows
are forked from one "zygote" process that has imported the project once and done nothing else:
each child runs the script file as __main__ with its own argv (runpy.run_path, the code path of
`python SCRIPT`), with its own stdout, stderr and exit status. `test_zygote_equals_interpreter`
checks a few rows against a real `python SCRIPT ARGS`. The checkpoints the rows need (a planning
base model, finished RL runs of planning and math, broken files) are made once, at toy size.
The same zygote runs `--help` of every runnable file (found by its `if __name__ == "__main__":`):
usage on stdout, exit status 0, nothing else done.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import pytest
import torch

from decode import CotConfig
from model import ModelConfig, Transformer
from rlvr import RLConfig, train_rl
from sft import SFTConfig, load_sft_model, train_sft
from tasks import get_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (id, script, arguments, regex the message must match or None). {name} is a fixture file (see `files`).
# Every output path is in the fixture's directory, so that a row that fails to refuse writes nothing else.
BASE = ["--task", "planning", "--base", "{base}", "--out", "{tmp}/run"]
ROWS = [
    # rlvr.py: numbers that used to crash mid-run or train to NaN (and exit 0)
    ("rl-steps-0", "rlvr.py", BASE + ["--method", "cot", "--steps", "0"], r"steps=0"),
    ("rl-eval-samples-0", "rlvr.py", BASE + ["--method", "cot", "--eval-samples", "0"], r"eval-samples"),
    ("rl-eval-size-0", "rlvr.py", BASE + ["--method", "cot", "--eval-size", "0"], r"eval-size"),
    ("rl-save-every-0", "rlvr.py", BASE + ["--method", "cot", "--save-every", "0"], r"save_every"),
    ("rl-epochs-0", "rlvr.py", BASE + ["--method", "cot", "--epochs", "0"], r"epochs"),
    ("rl-group-size-0", "rlvr.py", BASE + ["--method", "cot", "--group-size", "0"], r"group_size"),
    ("rl-group-size-1-std", "rlvr.py", BASE + ["--method", "cot", "--group-size", "1", "--normalize-std"],
     r"group_size=1"),
    ("rl-prompts-0", "rlvr.py", BASE + ["--method", "cot", "--prompts-per-step", "0"], r"prompts_per_step"),
    ("rl-temperature-nan", "rlvr.py", BASE + ["--method", "cot", "--temperature", "nan"], r"temperature=nan"),
    ("rl-temperature-inf", "rlvr.py", BASE + ["--method", "lbr", "--temperature", "inf"], r"temperature=inf"),
    ("rl-temperature-0", "rlvr.py", BASE + ["--method", "soft", "--temperature", "0"], r"temperature=0"),
    ("rl-router-temperature-nan", "rlvr.py", BASE + ["--method", "lbr", "--router-temperature", "nan"],
     r"router_temperature=nan"),
    ("rl-model-lr-nan", "rlvr.py", BASE + ["--method", "cot", "--model-lr", "nan"], r"model_lr=nan"),
    ("rl-router-lr-0", "rlvr.py", BASE + ["--method", "lbr", "--router-lr", "0"], r"router_lr"),
    ("rl-entropy-bonus-without-router", "rlvr.py", BASE + ["--method", "cot", "--router-entropy-coef", "0.1"],
     r"only --method lbr has a router"),
    ("rl-widths-huge", "rlvr.py", BASE + ["--method", "lbr", "--widths", "1000,1000"], r"over 1024 nodes"),
    ("rl-widths-increasing", "rlvr.py", BASE + ["--method", "lbr", "--widths", "2,3"], r"non-increasing"),
    ("rl-max-new-tokens-0", "rlvr.py", BASE + ["--method", "cot", "--max-new-tokens", "0"], r"max-new-tokens"),
    ("rl-soft-k-0", "rlvr.py", BASE + ["--method", "soft", "--soft-k", "0"], r"k=0"),
    ("rl-soft-until-unknown", "rlvr.py", BASE + ["--method", "soft", "--soft-until", "#"], r"not one token"),
    ("rl-shards", "rlvr.py", BASE + ["--method", "cot", "--shards", "3"], r"shards"),
    ("rl-device", "rlvr.py", BASE + ["--method", "cot", "--device", "gpu0"], r"--device"),
    ("rl-device-meta", "rlvr.py", BASE + ["--method", "cot", "--device", "meta"], r"--device meta: .*no data"),
    ("rl-steps-not-int", "rlvr.py", BASE + ["--method", "cot", "--steps", "ten"], r"invalid int"),
    ("rl-method-unknown", "rlvr.py", BASE + ["--method", "beam"], r"invalid choice"),
    ("rl-no-out", "rlvr.py", ["--method", "cot", "--base", "{base}"], r"--out"),
    ("rl-out-is-file", "rlvr.py", ["--method", "cot", "--base", "{base}", "--out", "{file}"], r"is a file"),
    # a finished 2-step run re-run with fewer steps used to evaluate the 2-step model silently
    ("rl-fewer-steps", "rlvr.py", ["--task", "planning", "--base", "{base}", "--out", "{planning_run}", "--method",
                                   "cot", "--steps", "1", "--prompts-per-step", "1", "--group-size", "2"],
     r"already trained 2 steps"),
    # the same run resumed from a base of another width used to end in load_state_dict's traceback
    ("rl-resume-other-base-shape", "rlvr.py", ["--task", "planning", "--base", "{base32}", "--out", "{planning_run}",
                                               "--method", "cot", "--steps", "2", "--prompts-per-step", "1",
                                               "--group-size", "2"],
     r"another shape .*'embed_tokens\.weight': shape \(\d+, 16\) there, shape \(\d+, 32\) in the model now"),
    # the math experiment: arguments checked before pre-training, not after
    ("math-results-is-file", "rlvr.py", ["--task", "math", "--results", "{file}", "--out", "{tmp}/m"], r"--results"),
    ("math-report-only-no-json", "rlvr.py", ["--task", "math", "--report-only", "--results", "{tmp}/empty", "--out",
                                             "{tmp}/m"],
     r"no such file"),
    ("math-jobs-negative", "rlvr.py", ["--task", "math", "--jobs", "-1", "--out", "{tmp}/m"], r"--jobs"),
    ("math-exp-out-is-file", "-m experiments.math", ["--out", "{file}", "--results", "{tmp}/r"], r"--out"),
    ("ablations-out-is-file", "-m experiments.ablations", ["--out", "{file}", "--results", "{tmp}/r"], r"--out"),
    ("ablations-planning-out-is-file", "-m experiments.ablations", ["--planning-out", "{file}", "--out", "{tmp}/m", "--results",
                                                        "{tmp}/r"], r"--planning-out"),
    ("ablations-report-only-no-json", "-m experiments.ablations", ["--report-only", "--results", "{tmp}/empty", "--out",
                                                       "{tmp}/m"], r"no such file"),
    ("synthetic-results-is-file", "-m experiments.synthetic", ["--results", "{file}", "--out", "{tmp}/p"], r"--results"),
    ("synthetic-jobs-negative", "-m experiments.synthetic", ["--jobs", "-2", "--out", "{tmp}/p", "--results", "{tmp}/r"],
     r"--jobs"),
    # files that cannot be loaded
    ("rl-base-missing", "rlvr.py", ["--method", "cot", "--base", "{tmp}/nothing.pt", "--out", "{tmp}/run"], None),
    ("rl-base-directory", "rlvr.py", ["--method", "cot", "--base", "{tmp}", "--out", "{tmp}/run"], None),
    ("rl-base-empty", "rlvr.py", ["--method", "cot", "--base", "{empty}", "--out", "{tmp}/run"], None),
    ("rl-base-garbage", "rlvr.py", ["--method", "cot", "--base", "{garbage}", "--out", "{tmp}/run"], None),
    ("rl-base-truncated", "rlvr.py", ["--method", "cot", "--base", "{truncated}", "--out", "{tmp}/run"], None),
    ("rl-base-is-rl-checkpoint", "rlvr.py", ["--method", "cot", "--base", "{planning_run}/rl.pt", "--out",
                                             "{tmp}/run"], None),
    ("rl-planning-base-math-task", "rlvr.py", ["--task", "math", "--method", "cot", "--base", "{base}", "--out",
                                               "{tmp}/run"], None),
    ("rl-model-without-config", "rlvr.py", ["--method", "cot", "--model", "{tmp}/empty", "--data", "{gsm8k}",
                                            "--out", "{tmp}/run"], r"config\.json"),
    ("rl-data-latin1", "rlvr.py", ["--method", "cot", "--model", "{fake_model}", "--data", "{latin1}", "--out",
                                   "{tmp}/run"], r":2: not UTF-8.*iconv"),
    ("rl-data-missing", "rlvr.py", ["--method", "cot", "--model", "{fake_model}", "--data", "{tmp}/no.jsonl",
                                    "--out", "{tmp}/run"], r"no such file"),
    ("rl-data-without-model", "rlvr.py", BASE + ["--method", "cot", "--data", "{gsm8k}"], r"--data needs --model"),
    # a MATH-style line with neither an answer nor a \boxed{} solution: no problem to train on
    ("rl-data-math-no-answer", "rlvr.py", ["--method", "cot", "--model", "{fake_model}", "--data", "{math_bad}",
                                           "--out", "{tmp}/run"],
     r"no problem could be read; the first malformed line: .*math_bad\.jsonl:1: .*\\boxed"),
    ("rl-data-math-no-answer-strict", "rlvr.py", ["--method", "cot", "--model", "{fake_model}", "--data",
                                                  "{math_bad}", "--strict-data", "--out", "{tmp}/run"],
     r"math_bad\.jsonl:1: malformed line: .*--strict-data"),
    # chat-prompt flags belong to --model; a template without Qwen3's switch cannot take --thinking
    ("rl-system-with-base", "rlvr.py", BASE + ["--method", "cot", "--system", "Reason step by step."], r"--system"),
    ("rl-instruction-with-base", "rlvr.py", BASE + ["--method", "cot", "--instruction", ""], r"--instruction"),
    ("rl-no-thinking-with-base", "rlvr.py", BASE + ["--method", "cot", "--no-thinking"], r"thinking"),
    ("rl-thinking-without-switch", "rlvr.py", ["--method", "cot", "--model", "{fake_model}", "--data", "{gsm8k}",
                                               "--thinking", "--out", "{tmp}/run"], r"no enable_thinking switch"),
    # sft.py
    ("sft-steps-0", "sft.py", ["--out", "{tmp}/b.pt", "--steps", "0"], r"steps=0"),
    ("sft-eval-every-0", "sft.py", ["--out", "{tmp}/b.pt", "--eval-every", "0"], r"eval_every"),
    ("sft-batch-size-0", "sft.py", ["--out", "{tmp}/b.pt", "--batch-size", "0"], r"batch_size"),
    ("sft-lr-nan", "sft.py", ["--out", "{tmp}/b.pt", "--lr", "nan"], r"lr=nan"),
    ("sft-warmup-negative", "sft.py", ["--out", "{tmp}/b.pt", "--warmup", "-1"], r"warmup"),
    ("sft-out-directory", "sft.py", ["--out", "{tmp}"], r"is a directory"),
    ("sft-out-under-file", "sft.py", ["--out", "{file}/b.pt"], r"is a file"),
    ("sft-out-is-rl-checkpoint", "sft.py", ["--out", "{planning_run}/rl.pt", "--steps", "1"], None),
    ("sft-drill-frac", "sft.py", ["--out", "{tmp}/b.pt", "--drill-frac", "1.5"], r"drill-frac"),
    ("sft-n-embd-0", "sft.py", ["--out", "{tmp}/b.pt", "--n-embd", "0"], r"n-embd"),
    # sizes and devices that used to end in an allocator's or a kernel's traceback
    ("sft-n-embd-huge", "sft.py", ["--out", "{tmp}/b.pt", "--n-embd", "100000"],
     r"260,009,400,000 parameters.* needs at least 4\.2 TB of memory, but .* is available on cpu; .*--n-embd"),
    ("sft-device-meta", "sft.py", ["--out", "{tmp}/b.pt", "--device", "meta"], r"--device meta: .*no data"),
    ("sft-device-unsupported", "sft.py", ["--out", "{tmp}/b.pt", "--device", "xla"], r"xla devices are not supported"),
    # decode.py
    ("decode-steps-0", "decode.py", ["--steps", "0"], r"steps"),
    # the demo decoded without evaluate.generate's check: distinct siblings past the vocabulary gave log P > 0
    ("decode-distinct-past-vocabulary", "decode.py", ["--sampler", "distinct", "--widths", "30,2"], r"vocabulary"),
    ("decode-widths-huge", "decode.py", ["--widths", "1000,1000"], r"over 1024 nodes"),
    ("decode-row-negative", "-m tools.trace_view", ["--rollouts", "{math_run}/rollouts.pt", "--row", "-1"], r"--row"),
    ("decode-row-too-big", "-m tools.trace_view", ["--rollouts", "{math_run}/rollouts.pt", "--row", "99"], r"--row 99"),
    # math rollouts printed in the planning vocabulary used to show the wrong words
    ("decode-rollouts-other-task", "-m tools.trace_view", ["--rollouts", "{math_run}/rollouts.pt", "--task", "planning"],
     r"math task"),
    ("decode-rollouts-missing", "-m tools.trace_view", ["--rollouts", "{tmp}/nothing.pt"], None),
    ("decode-rollouts-garbage", "-m tools.trace_view", ["--rollouts", "{garbage}"], None),
    ("decode-base-without-task", "-m tools.trace_view", ["--base", "{base}"], r"--task"),
    ("decode-planning-base-math-task", "-m tools.trace_view", ["--task", "math", "--base", "{base}"], None),
    ("decode-trace-directory", "decode.py", ["--trace", "{tmp}"], r"is a directory"),
    # pretrained/checkpoint.py, experiments/bench.py, experiments/gpu_check.py
    ("checkpoint-no-config", "-m pretrained.checkpoint", ["{tmp}/empty"], r"config\.json"),
    ("checkpoint-missing-dir", "-m pretrained.checkpoint", ["{tmp}/nothing"], r"no such directory"),
    ("checkpoint-bad-ids", "-m pretrained.checkpoint", ["{fake_model}", "--ids", "a,b"], r"--ids"),
    ("checkpoint-prompt-and-ids", "-m pretrained.checkpoint", ["{fake_model}", "--prompt", "hi", "--ids", "1"],
     r"not allowed with"),
    ("checkpoint-prompt-without-tokenizer", "-m pretrained.checkpoint", ["{config_only}", "--prompt", "hi"],
     r"--prompt needs .*tokenizer\.json"),
    # tree.py: any argument that was not a widths list used to crash (--help included)
    ("tree-widths-increasing", "tree.py", ["2,3"], r"non-increasing"),
    ("tree-widths-not-int", "tree.py", ["a,b"], r"comma-separated integers"),
    ("tree-widths-huge", "tree.py", ["1000,1000"], r"over 1024 nodes"),
    # converting into a folder of other files deleted them all (and `.` the working directory)
    ("gguf-into-a-folder-of-files", "-m pretrained.gguf", ["{tmp}/none.gguf", "{tmp}"], r"no checkpoint"),
    ("gguf-into-the-working-directory", "-m pretrained.gguf", ["{tmp}/none.gguf", "."], r"working directory"),
    ("arithmetic-n-0", "-m tasks.arithmetic", ["-n", "0"], r"-n 0"),
    ("real-study-no-model", "-m experiments.real_study", ["--model", "{tmp}/none.gguf", "--out", "{tmp}/o",
                                                          "--results", "{tmp}/r"], r"none.gguf"),
    ("real-study-gpu-without-data", "-m experiments.real_study", ["--gpu", "--out", "{tmp}/o", "--results", "{tmp}/r"],
     r"--gpu needs --data"),
    ("real-study-report-without-run", "-m experiments.real_study", ["--report-only", "--results", "{tmp}/r"],
     r"run without --report-only"),
    ("bench-tokens-0", "-m experiments.bench", ["--tokens", "0", "--out", "{tmp}/bench.md"], r"tokens"),
    ("bench-out-directory", "-m experiments.bench", ["--out", "{tmp}"], r"is a directory"),
    ("bench-too-long", "-m experiments.bench", ["--tokens", "600", "--out", "{tmp}/bench.md"], r"context"),
    ("gpu-check-device", "-m experiments.gpu_check", ["--device", "tpu9"], r"--device"),
    ("bench-real-out-directory", "-m experiments.bench", ["--real", "--out", "{tmp}"], r"is a directory"),
    # experiments/real.py: inputs refused before the model loads, nothing written
    ("real-gsm8k-missing", "-m experiments.real", ["--gsm8k", "{tmp}/no.jsonl", "--out", "{tmp}/real",
                                                   "--results-dir", "{tmp}/results"], r"--gsm8k .*no such file"),
    ("real-model-neither-gguf-nor-dir", "-m experiments.real", ["--model", "{file}", "--out", "{tmp}/real",
                                                                "--results-dir", "{tmp}/results"],
     r"neither a \.gguf file nor a checkpoint directory"),
    ("real-model-gguf-missing", "-m experiments.real", ["--model", "{tmp}/no.gguf", "--out", "{tmp}/real",
                                                        "--results-dir", "{tmp}/results"], r"no such file"),
    # --model FILE.gguf that is no GGUF file, or a GGUF file cut short
    ("rl-model-gguf-garbage", "rlvr.py", ["--method", "cot", "--model", "{garbage_gguf}", "--data", "{gsm8k}",
                                          "--out", "{tmp}/run"], r"garbage\.gguf: not a readable GGUF file"),
    ("rl-model-gguf-truncated", "rlvr.py", ["--method", "cot", "--model", "{truncated_gguf}", "--data", "{gsm8k}",
                                            "--out", "{tmp}/run"], r"truncated\.gguf: not a readable GGUF file"),
]


def _runnable_files() -> list[str]:
    """Every file with a main, as a user runs it: `x.py`, or `-m pkg.x` for a module of a package
    (its absolute imports need the repository root on the path, which `-m` gives)."""
    out = []
    for d in ["", "tasks", "tests"]:
        for name in sorted(n for n in os.listdir(os.path.join(ROOT, d)) if n.endswith(".py")):
            with open(os.path.join(ROOT, d, name), encoding="utf-8") as f:
                if not re.search(r'^if __name__ == "__main__":', f.read(), re.M):
                    continue
            in_package = d and os.path.exists(os.path.join(ROOT, d, "__init__.py"))
            out.append(f"-m {d}.{name[:-3]}" if in_package else os.path.join(d, name))
    return out


# Runnable files that do not answer --help yet: given --help they do their work instead, so they are not run.
# `--help` of every other runnable file: usage on stdout, exit status 0, nothing else done or printed
HELP = _runnable_files()


def _digest(root: str) -> dict[str, str]:
    """Every file below `root` with the hash of its bytes (to check that nothing was overwritten)."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.relpath(os.path.join(d, n), root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """The files the rows name: tiny but real checkpoints and run directories, and broken files."""
    tmp = tmp_path_factory.mktemp("cli")
    planning, math = get_task("planning"), get_task("math")
    f = {"tmp": str(tmp), "base": str(tmp / "base.pt"), "file": str(tmp / "a_file"), "empty": str(tmp / "empty.pt"),
         "garbage": str(tmp / "garbage.pt"), "truncated": str(tmp / "truncated.pt"),
         "planning_run": str(tmp / "planning_run"), "math_run": str(tmp / "math_run"),
         "fake_model": str(tmp / "fake_model"), "latin1": str(tmp / "latin1.jsonl"), "gsm8k": str(tmp / "gsm8k.jsonl"),
         "math_bad": str(tmp / "math_bad.jsonl"), "config_only": str(tmp / "config_only"),
         "base32": str(tmp / "base32.pt"), "garbage_gguf": str(tmp / "garbage.gguf"),
         "truncated_gguf": str(tmp / "truncated.gguf")}
    for path, width in ((f["base"], 16), (f["base32"], 32)):
        cfg = ModelConfig.tiny(planning.tokenizer.vocab_size, n_layer=1, n_embd=width, max_seq_len=256)
        train_sft(planning, cfg, SFTConfig(steps=1, batch_size=2, eval_every=1, eval_size=2), path,
                  torch.device("cpu"), quiet=True)
    # a finished 2-step planning run with the settings of the `rl-fewer-steps` row (cot at the task's length)
    train_rl(load_sft_model(f["base"]), None, planning, CotConfig(max_new_tokens=planning.max_answer_len),
             RLConfig(steps=2, prompts_per_step=1, group_size=2), f["planning_run"], quiet=True)
    torch.manual_seed(0)
    math_model = Transformer(ModelConfig.tiny(math.tokenizer.vocab_size, n_layer=1, n_embd=16, max_seq_len=256))
    train_rl(math_model, None, math, CotConfig(max_new_tokens=8), RLConfig(steps=1, prompts_per_step=1, group_size=2),
             f["math_run"], quiet=True)
    (tmp / "a_file").write_text("not a directory\n")
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "garbage.pt").write_bytes(bytes(range(256)) * 8)
    with open(f["base"], "rb") as src:
        data = src.read()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp / "garbage.gguf").write_bytes(bytes(range(256)) * 8)
    _write_truncated_gguf(f["truncated_gguf"])
    (tmp / "empty").mkdir()
    os.makedirs(f["fake_model"])
    for name in ("config.json", "tokenizer.json"):  # enough to get past the directory check
        (tmp / "fake_model" / name).write_text("{}")
    os.makedirs(f["config_only"])  # a checkpoint directory without a tokenizer
    (tmp / "config_only" / "config.json").write_text("{}")
    line = json.dumps({"question": "What is 1 + 2?", "answer": "1 + 2 = 3\n#### 3"}) + "\n"
    (tmp / "gsm8k.jsonl").write_text(line)
    (tmp / "math_bad.jsonl").write_text(json.dumps({"problem": "What is 1 + 1?", "solution": "It is two."}) + "\n")
    (tmp / "latin1.jsonl").write_bytes(line.encode() + '{"question": "Combien coûte un café?", "answer": "#### 2"}\n'
                                       .encode("latin-1"))
    return f


def _write_truncated_gguf(path: str) -> None:
    """A GGUF file (header, metadata, one tensor) cut off in the middle of its tensor data."""
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(path + ".whole", "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((64, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(path + ".whole", "rb") as src:
        data = src.read()
    os.remove(path + ".whole")
    with open(path, "wb") as dst:
        dst.write(data[: len(data) // 2])


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
SCRIPTS = sorted({r[1] for r in ROWS} | set(HELP))


def _module(script: str) -> str:
    """'rlvr.py' -> 'rlvr', '-m tasks.math' -> 'tasks.math', 'tests/x.py' -> 'x'."""
    return script[3:] if script.startswith("-m ") else os.path.basename(script)[:-3]


def _zygote() -> None:
    """Import every script's module, then for each job on stdin ([name, script, argv]) fork a child that
    runs the script as __main__ with that argv; print {name: [status, stdout, stderr]} as JSON.
    Nothing here runs a torch op before forking (a fork after OpenMP threads exist is unsafe)."""
    for script in SCRIPTS:
        __import__(_module(script))
    jobs, out = json.load(sys.stdin), {}
    for name, script, argv in jobs:
        with tempfile.TemporaryFile() as o, tempfile.TemporaryFile() as e:
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:  # the child: `python script argv`, from here on
                os.setpgid(0, 0)  # its own process group, so that whatever it starts can be ended with it
                os.dup2(o.fileno(), 1)
                os.dup2(e.fileno(), 2)
                signal.alarm(60)  # a row that starts working instead of refusing dies, not the suite
                sys.argv, code = [script] + argv, 0
                try:
                    if script.startswith("-m "):  # `python -m pkg.mod`: sys.argv[0] becomes the file's path
                        sys.modules.pop(_module(script))  # as in a fresh interpreter (runpy warns otherwise)
                        runpy.run_module(_module(script), run_name="__main__", alter_sys=True)
                    else:
                        runpy.run_path(script, run_name="__main__")
                except SystemExit as x:  # what the interpreter does with it
                    if x.code is None or isinstance(x.code, int):
                        code = x.code or 0
                    else:
                        print(x.code, file=sys.stderr)
                        code = 1
                except BaseException:
                    traceback.print_exc()
                    code = 1
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            try:
                os.killpg(pid, signal.SIGKILL)  # processes the row left behind (e.g. an experiment's workers)
            except ProcessLookupError:
                pass
            o.seek(0)
            e.seek(0)
            out[name] = [status, o.read().decode(errors="replace"), e.read().decode(errors="replace")]
    json.dump(out, sys.stdout)


def _run_rows(rows, files) -> dict[str, subprocess.CompletedProcess]:
    jobs = [[name, script, [a.format(**files) for a in args]] for name, script, args, _ in rows]
    code = (f"import sys; sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]; "
            "import test_cli; test_cli._zygote()")
    res = subprocess.run([sys.executable, "-c", code], input=json.dumps(jobs), cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    done = json.loads(res.stdout)
    return {name: subprocess.CompletedProcess(script, *done[name]) for name, script, _ in jobs}


@pytest.fixture(scope="module")
def outcomes(files, request) -> dict:
    """Run the rows selected in this session; check that no file changed."""
    wanted = {item.callspec.params["row"][0] for item in request.session.items
              if item.module.__name__ == __name__ and hasattr(item, "callspec") and "row" in item.callspec.params}
    before = _digest(files["tmp"])
    out = _run_rows([r for r in ROWS if r[0] in wanted], files)
    after = _digest(files["tmp"])
    out["__changed__"] = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return out


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_gives_one_line_and_status_2(row, outcomes):
    name, script, args, match = row
    res = outcomes[name]
    shown = f"{script} {' '.join(args)}\nstdout: {res.stdout[-2000:]}\nstderr: {res.stderr[-4000:]}"
    assert "Traceback" not in res.stderr + res.stdout, shown
    assert res.returncode == 2, shown
    lines = res.stderr.strip().splitlines()
    prog = script.split(".")[-1] + ".py" if script.startswith("-m ") else script  # argparse's prog: the file's name
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), shown
    if match:
        assert re.search(match, lines[0]), shown


def test_nothing_was_overwritten(outcomes):
    """No row changed, added or removed a file of the fixture (checkpoints, runs, rollouts)."""
    assert outcomes["__changed__"] == []


@pytest.mark.parametrize("name", ["rl-temperature-nan", "decode-rollouts-other-task", "sft-out-directory"])
def test_zygote_equals_interpreter(name, files, outcomes):
    """A forked row gives what a real `python SCRIPT ARGS` gives: the same status and the same stderr."""
    row = next(r for r in ROWS if r[0] == name)
    real = subprocess.run([sys.executable, *row[1].split()] + [a.format(**files) for a in row[2]], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    forked = outcomes[name] if name in outcomes else _run_rows([row], files)[name]
    assert (real.returncode, real.stderr) == (forked.returncode, forked.stderr)


# ---------------------------------------------------------------------------------------------
# --help of every runnable file, and what `pretrained/checkpoint.py DIR` prints


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess]:
    """`SCRIPT --help` of every file of HELP, forked like the rows (no fixture files needed)."""
    return _run_rows([(script, script, ["--help"], None) for script in HELP], {})


@pytest.mark.parametrize("script", HELP)
def test_help(script, helps):
    res = helps[script]
    shown = f"{script} --help\nstdout: {res.stdout[-2000:]}\nstderr: {res.stderr[-4000:]}"
    assert "Traceback" not in res.stdout + res.stderr, shown
    assert res.returncode == 0 and res.stderr == "", shown
    assert res.stdout.startswith("usage: ") and "-h, --help" in res.stdout, shown  # the usage, nothing run before


@pytest.mark.parametrize("script", ["-m tasks.planning", "tree.py"])
def test_help_zygote_equals_interpreter(script, helps):
    """A forked `--help` (run_module for `-m`) prints what a real interpreter prints."""
    real = subprocess.run([sys.executable, *script.split(), "--help"], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert (real.returncode, real.stdout, real.stderr) == (helps[script].returncode, helps[script].stdout,
                                                           helps[script].stderr)


def test_checkpoint_prints_text_with_its_tokenizer(tmp_path, monkeypatch, capsys):
    """`pretrained/checkpoint.py DIR --prompt TEXT` on a tiny Qwen2 saved by transformers with a tokenizer.json
    trained by `tokenizers`: the printed text is the decoding of the printed ids (by the reference),
    and the prompt's text is the prompt given."""
    transformers = pytest.importorskip("transformers")
    from pretrained.checkpoint import main as checkpoint_main
    from test_tokenizer import _train
    ref, tok_path = _train(tmp_path, "qwen2")
    model_dir = tmp_path / "model"
    cfg = transformers.Qwen2Config(vocab_size=ref.get_vocab_size(), hidden_size=32, intermediate_size=48,
                                   num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(cfg).save_pretrained(str(model_dir))
    (model_dir / "tokenizer.json").write_text(tok_path.read_text())
    monkeypatch.setattr(sys, "argv", ["-m pretrained.checkpoint", str(model_dir), "--prompt", "The quick fox", "--tokens", "5"])
    checkpoint_main()
    out = capsys.readouterr().out
    ids = re.search(r"^greedy: (\[.*?\]) -> (\[.*?\])$", out, re.M)
    text = re.search(r"^text: (.*) -> (.*)$", out, re.M)
    assert ids and text, out
    prompt, continuation = json.loads(ids.group(1)), json.loads(ids.group(2))
    assert len(continuation) == 5 and prompt == ref.encode("The quick fox").ids
    assert ast.literal_eval(text.group(1)) == "The quick fox"  # printed with repr: a str literal
    assert ast.literal_eval(text.group(2)) == ref.decode(continuation, skip_special_tokens=False)


@pytest.mark.parametrize("module,stem", [("experiments.synthetic", "synthetic"), ("experiments.math", "math"),
                                         ("experiments.ablations", "ablations")])
def test_report_only_rewrites_the_committed_report_and_quick_mode_says_what_it_checks(module, stem, tmp_path,
                                                                                      monkeypatch, capsys):
    """`--report-only` turns results/STEM.json back into results/STEM.md byte for byte (the report
    format of the full runs is fixed); with --quick the same numbers come with the note, under the
    title of the file and at the end of the console, that quick mode checks the pipeline only."""
    mod = importlib.import_module(module)
    with open(os.path.join(ROOT, "results", f"{stem}.json"), encoding="utf-8") as f:
        saved = json.load(f)
    shutil.copy(os.path.join(ROOT, "results", f"{stem}.json"), tmp_path / f"{stem}.json")
    with open(tmp_path / f"{stem}_quick.json", "w", encoding="utf-8") as f:  # the same numbers, as if made with --quick
        json.dump(saved | ({"quick": True} if "quick" in saved else {}), f)
    for quick in (False, True):
        monkeypatch.setattr(sys, "argv", [mod.__file__, "--report-only", "--results", str(tmp_path),
                                          "--out", str(tmp_path / "out")] + ["--quick"] * quick)
        mod.main()
    with open(os.path.join(ROOT, "results", f"{stem}.md"), encoding="utf-8") as f:
        assert (tmp_path / f"{stem}.md").read_text(encoding="utf-8") == f.read()
    quick = (tmp_path / f"{stem}_quick.md").read_text(encoding="utf-8").split("\n")
    assert quick[2] == mod.QUICK_NOTE and "pipeline, not the numbers" in mod.QUICK_NOTE
    assert capsys.readouterr().out.rstrip("\n").split("\n")[-1] == mod.QUICK_NOTE


def test_sft_says_pass_or_fail_per_health_check(tmp_path, monkeypatch, capsys):
    """The gate at its thresholds (>= 0.99; <= 2/n_arms for j >= 2; j = 1 not gated), and
    `sft.py` printing each check's verdict and the overall one after training."""
    from sft import health_checks, main as sft_main
    healthy = {"tf_acc_rest": 0.99, "first_is_child": 1.0, "p_child": 0.1, "first_acc": 0.6, "chance": 0.25,
               "first_acc_j1": 1.0, "first_acc_j2": 0.5, "first_acc_j3": 0.25}
    assert [(c.key, c.passed) for c in health_checks(healthy)] == [
        ("tf_acc_rest", True), ("first_is_child", True), ("first_acc_j2", True), ("first_acc_j3", True)]
    for key, value in [("tf_acc_rest", 0.989), ("first_is_child", 0.98), ("first_acc_j2", 0.51), ("first_acc_j3", 0.6)]:
        assert [c.key for c in health_checks({**healthy, key: value}) if not c.passed] == [key]
    assert health_checks({"tf_acc": 0.9, "greedy_acc": 0.5, "greedy_acc_ops1": 0.9}) == []  # math: no gate
    monkeypatch.setattr(sys, "argv", ["sft.py", "--out", str(tmp_path / "b.pt"), "--steps", "1", "--batch-size", "2",
                                      "--eval-size", "8", "--n-layer", "1", "--n-embd", "16"])
    sft_main()  # one step: a model that fails the checks
    out = capsys.readouterr().out
    assert re.search(r"^  FAIL  tf_acc_rest = [\d.]+, want >= 0\.99: ", out, re.M), out
    assert re.search(r"^healthy: NO", out, re.M), out


def test_sizes_refused_up_front_are_the_real_sizes():
    """The bytes the size checks compare with the free memory are those the objects take: sft's
    lower bound = weights + gradients + AdamW's two moments after a real step."""
    from sft import make_optimizer, training_bytes
    cfg = ModelConfig.tiny(40, n_layer=2, n_embd=16, max_seq_len=64)
    torch.manual_seed(0)
    model = Transformer(cfg)
    opt = make_optimizer(model, 1e-3, 0.1)
    model(torch.tensor([[1, 2, 3]]))[0].sum().backward()
    opt.step()
    tensors = [t for p in model.parameters() for t in (p, p.grad, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"])]
    assert training_bytes(cfg) == sum(t.nelement() * t.element_size() for t in tensors)
