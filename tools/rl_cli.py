"""
The command line of rlvr.py: its arguments and their checks, the task of a real checkpoint
(`--model DIR --data FILE`), the run directory's provenance (`source.json`), and one run: train
(or resume), evaluate, write eval.json and samples.jsonl. `python rlvr.py --task math` without
--method is the math experiment (experiments/math.py).

    python rlvr.py --task planning --base out/planning/base_s0.pt --method lbr --widths 4,1,1 --out out/rl/lbr_s0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

import torch

from decode import CotConfig, LBRConfig
from evaluate import DecodeConfig, evaluate
from model import Transformer
from pretrained.checkpoint import load_pretrained, load_pt
from rlvr import RLConfig, new_router, train_rl
from router import Router, RouterConfig
from sft import load_sft_model
from soft import SoftConfig
from tasks import get_task
from tasks.common import Seeds, make_examples
from tasks.word_problems import DEFAULT_INSTRUCTION, WordProblemTask, load_problems
from tools.cli import ArgumentParser, check_device, check_float, check_in_file, check_int, check_out_dir
from tools.distributed import dist_rank_world, init_distributed


def check_run_source(args) -> dict:
    """A run directory belongs to one starting model and one data set: `--out/source.json` records
    them (task, --base or --model, --data) when the run is made, and a later run into the same
    directory (resume, --eval-only) with other ones is refused: its rl.pt holds weights trained
    from the recorded model, so resuming or evaluating it would report them under other names."""
    source = {"task": "word_problems" if args.model else args.task,
              "base": os.path.abspath(args.base) if args.base else None,
              "model": os.path.abspath(args.model) if args.model else None,
              "data": os.path.abspath(args.data) if args.data else None}
    path = os.path.join(args.out, "source.json")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{path} is not valid JSON: delete it only if {args.out} was made from "
                             "these --base/--model/--data") from None
        diff = [f"--{k} {saved.get(k)} there, {v} now" for k, v in source.items() if saved.get(k) != v]
        if diff:
            raise ValueError(f"--out {args.out} was made from other inputs ({'; '.join(diff)}): choose another "
                             f"--out (if the files only moved, edit {path})")
    return source


def write_run_source(out: str, source: dict) -> None:
    """Record the inputs of a run whose rl.pt exists (after training, or the first --eval-only of
    an older run), for check_run_source."""
    path = os.path.join(out, "source.json")
    if os.path.exists(path) or not os.path.exists(os.path.join(out, "rl.pt")):
        return
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(source, f, indent=1)
    os.replace(path + ".tmp", path)


def load_run(path: str, model: Transformer, router: Router | None) -> None:
    """Load the model (and router) an RL checkpoint holds into `model` (and `router`).
    Raises ValueError for an unloadable file or one made with another model, method or router."""
    ckpt = load_pt(path, "RL checkpoint")
    if "rl_config" not in ckpt:
        raise ValueError(f"{path} is not an RL checkpoint of rlvr.py")
    if router is not None and ckpt.get("router") is None:
        method = str(ckpt.get("decoding_kind", "?")).removesuffix("Config").lower()
        raise ValueError(f"{path} is a {method} run, without a router: evaluate it with --method {method}")
    try:
        model.load_state_dict(ckpt["model"])
        if router is not None:
            router.load_state_dict(ckpt["router"])
    except RuntimeError as e:  # shapes that do not fit: another base model, --router or --widths
        raise ValueError(f"{path} was trained with another model or router ({str(e).splitlines()[0]}); give the "
                         "--base, --router and --widths of that run") from None


def decoding_from_args(args, task) -> DecodeConfig:
    if args.method == "lbr":
        return LBRConfig(widths=args.widths, sampler=args.sampler, temperature=args.temperature,
                         router_temperature=args.router_temperature, greedy_router=args.greedy_router,
                         max_new_tokens=args.max_new_tokens)
    if args.method == "soft":
        end = -1
        if args.soft_until:  # one token: a word of a toy task, or e.g. Qwen3's '</think>' with --model
            try:
                ids = task.tokenizer.encode(args.soft_until)
            except ValueError:  # a word outside a toy task's vocabulary
                ids = []
            if len(ids) != 1:
                raise ValueError(f"--soft-until {args.soft_until!r} is not one token of the {task.name} "
                                 "vocabulary")
            end = ids[0]
        return SoftConfig(k=args.soft_k, weighting=args.soft_weighting, temperature=args.temperature,
                          discrete_after=end, max_new_tokens=args.max_new_tokens)
    return CotConfig(temperature=args.temperature, greedy=args.greedy, max_new_tokens=args.max_new_tokens)


def word_problem_task(args, quiet: bool = False):
    """The task of `--model DIR --data FILE`: the problems of --data (and --eval-data), prompted
    with --system, --instruction and --(no-)thinking (WordProblemTask.from_checkpoint). Everything
    is checked (one prompt rendered) before the model loads; a ValueError says what is wrong."""
    problems = load_problems(args.data, args.strict_data, quiet)
    eval_problems = load_problems(args.eval_data, args.strict_data, quiet) if args.eval_data else None
    task = WordProblemTask.from_checkpoint(args.model, problems, eval_problems, args.system,
                                           DEFAULT_INSTRUCTION if args.instruction is None else args.instruction,
                                           args.thinking, max_answer_len=args.max_new_tokens or 512)
    return task


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(description="GRPO on cot, soft or LBR rollouts, with Pass@k evaluation. "
                                 "`--task math` without --method runs the whole math experiment.")
    g = ap.add_argument_group("task and model")
    g.add_argument("--task", default="planning", choices=["planning", "math"])
    g.add_argument("--base", help="pre-trained base model checkpoint (sft.py); needed with --method")
    g.add_argument("--model", help="a local Llama/Qwen2/Qwen3 checkpoint directory (config.json, *.safetensors, "
                   "tokenizer.json; its chat template and stop ids are used) instead of --base")
    g.add_argument("--data", help="GSM8K- or MATH-style JSONL to train on (with --model; tasks/word_problems.py)")
    g.add_argument("--eval-data", help="GSM8K- or MATH-style JSONL to evaluate on, in order (default: --data)")
    g.add_argument("--strict-data", action="store_true", help="reject a malformed JSONL line instead of skipping it")
    g.add_argument("--system", help="--model: the system prompt of every problem (default: the chat template's own)")
    g.add_argument("--instruction", help="--model: text after each problem in the user turn ('' for none; default: "
                   "Please reason step by step, and put your final answer within \\boxed{}.)")
    g.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=None,
                   help="--model: set the chat template's enable_thinking switch (Qwen3) on or off")
    g.add_argument("--out", help="run directory: metrics.jsonl, rl.pt (resumed), eval.json, samples.jsonl (every "
                   "evaluation sample) (math experiment: checkpoints, default out/math)")
    g.add_argument("--device", default="auto")
    g = ap.add_argument_group("decoding")
    g.add_argument("--method", choices=["cot", "soft", "lbr"], help="train and evaluate one method")
    g.add_argument("--widths", default="4,1,1", help="lbr tree widths")
    g.add_argument("--sampler", default="distinct", choices=["iid", "distinct"])
    g.add_argument("--router", default="subtree", choices=["root", "d1", "subtree"], help="router features")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--router-temperature", type=float, default=1.0)
    g.add_argument("--greedy", action="store_true", help="cot: argmax decoding (evaluation only)")
    g.add_argument("--greedy-router", action="store_true", help="lbr: argmax router (evaluation only)")
    g.add_argument("--soft-k", type=int, default=4, help="soft: tokens drawn per step")
    g.add_argument("--soft-weighting", default="prob", choices=["prob", "mean"], help="soft: embedding mixture")
    g.add_argument("--soft-until", default="",
                   help="soft: token after which decoding is discrete (math: '#'; Qwen3: '</think>')")
    g.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's longest answer")
    g = ap.add_argument_group("RL (GRPO)")
    for name, default in asdict(RLConfig()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            g.add_argument(flag, action="store_true")
        else:
            g.add_argument(flag, type=type(default), default=default)
    g = ap.add_argument_group("evaluation")
    g.add_argument("--eval-size", type=int, default=256, help="evaluation problems")
    g.add_argument("--eval-samples", type=int, default=8, help="samples per problem (n of Pass@k)")
    g.add_argument("--eval-only", action="store_true", help="evaluate --base (and the run's checkpoint, if any)")
    return ap


def is_math_experiment(argv: list[str]) -> bool:
    """`--task math` without `--method`: the math experiment, not one run."""
    tasks = [b for a, b in zip(argv, argv[1:]) if a == "--task"] + [a[7:] for a in argv if a.startswith("--task=")]
    return tasks[-1:] == ["math"] and not any(a == "--method" or a.startswith("--method=") for a in argv)


def check_rl_config(cfg: RLConfig) -> None:
    """ValueError naming the field of an RLConfig value that would train to NaN weights, divide by
    zero or crash mid-run (the command line's checks of --steps, --group-size, ...)."""
    for name in ("steps", "prompts_per_step", "epochs", "save_every"):
        check_int(name, getattr(cfg, name), 1)
    check_int("group_size", cfg.group_size, 2, "GRPO compares the rollouts of one prompt with each other")
    check_int("shards", cfg.shards, 0)
    check_int("model_layers", cfg.model_layers, 0)
    if cfg.shards and cfg.prompts_per_step % cfg.shards:
        raise ValueError(f"shards={cfg.shards} must divide prompts_per_step={cfg.prompts_per_step}")
    for name in ("model_lr", "router_lr", "clip_eps", "grad_clip"):
        check_float(name, getattr(cfg, name))
    check_float("dual_clip", cfg.dual_clip, 1.0, hint="the bound c |A| of a factor's loss for A < 0 needs c > 1")
    check_float("kl_coef", cfg.kl_coef, strict=False)
    check_float("router_entropy_coef", cfg.router_entropy_coef, strict=False)


def check_args(args) -> None:
    """Every argument that needs no file (and the files' existence), before any work; the configs
    check their own fields."""
    if args.method is None:
        raise ValueError("give --method cot|soft|lbr (the planning experiment is `make synthetic`; "
                         "`--task math` without --method is the math experiment)")
    check_device(args.device)
    check_rl_config(RLConfig(**{k: getattr(args, k) for k in asdict(RLConfig())}))
    check_int("--eval-size", args.eval_size, 1)
    check_int("--eval-samples", args.eval_samples, 1)
    if args.max_new_tokens is not None:
        check_int("--max-new-tokens", args.max_new_tokens, 1)
    if (args.base is None) == (args.model is None) or args.out is None:
        raise ValueError("--method needs --out RUN_DIR and exactly one of --base CHECKPOINT (from sft.py) or --model DIR")
    if args.data and not args.model:
        raise ValueError("--data needs --model DIR (a pretrained model with its tokenizer.json)")
    greedy = [flag for flag, on in (("--greedy", args.greedy), ("--greedy-router", args.greedy_router)) if on]
    if greedy and not args.eval_only:  # an argmax choice has no sampling probability for the RL gradient
        raise ValueError(f"{' and '.join(greedy)}: argmax decoding is for evaluation; add --eval-only, or drop "
                         f"{'them' if len(greedy) > 1 else 'it'} to train on sampled rollouts")
    if not args.model and (args.system, args.instruction, args.thinking) != (None, None, None):
        raise ValueError("--system, --instruction and --(no-)thinking shape the chat prompts of --model DIR; "
                         "a --base task has its own prompt format")
    check_out_dir(args.out, "--out")
    if args.model:
        if not args.data:
            raise ValueError("--model needs --data FILE.jsonl (GSM8K or MATH style) to train and evaluate on")
        from pretrained.gguf import checkpoint_dir  # a .gguf file: converted once into out/gguf/ (pretrained/gguf.py)
        args.model = checkpoint_dir(args.model)
        for name in ("config.json", "tokenizer.json"):
            if not os.path.isfile(os.path.join(args.model, name)):
                raise ValueError(f"--model {args.model}: no {name} there; give a Llama/Qwen checkpoint directory "
                                 "(config.json, *.safetensors, tokenizer.json)")
        for flag, path in (("--data", args.data), ("--eval-data", args.eval_data)):
            if path:
                check_in_file(path, flag)


def run_one(args) -> None:
    """Train (or resume) and evaluate one run; rank 0 writes eval.json and samples.jsonl into --out."""
    cfg = RLConfig(**{k: getattr(args, k) for k in asdict(RLConfig())})
    device = init_distributed(args.device)
    rank = dist_rank_world()[0]
    if args.model:
        task = word_problem_task(args, quiet=rank > 0)
    else:
        task = get_task(args.task)
    args.max_new_tokens = args.max_new_tokens or task.max_answer_len
    dec = decoding_from_args(args, task)  # temperatures, widths, ...: refused before the model loads
    if args.router_entropy_coef and args.method != "lbr":
        raise ValueError(f"--router-entropy-coef: only --method lbr has a router (this is --method {args.method})")
    if args.model:
        model = load_pretrained(args.model, device)
    else:
        model = load_sft_model(args.base, device, task)
    router = None
    if args.method == "lbr":
        router = new_router(RouterConfig(features=args.router), model.cfg.n_embd, len(dec.widths), args.seed).to(device)
    source = check_run_source(args)
    if not args.eval_only:
        train_rl(model, router, task, dec, cfg, args.out)
    elif os.path.exists(os.path.join(args.out, "rl.pt")):
        load_run(os.path.join(args.out, "rl.pt"), model, router)
    if rank == 0:
        write_run_source(args.out, source)
    if args.model:  # a benchmark: its first --eval-size problems, each once
        examples = task.eval_examples(args.eval_size)
    else:
        examples = make_examples(task, args.eval_size, seed=Seeds(args.seed).eval_examples, split="eval")
    samples = []
    result = evaluate(model.eval(), router, task, dec, examples, args.eval_samples, (1, args.eval_samples), args.seed,
                      samples=samples)
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "eval.json"), "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(args.out, "samples.jsonl"), "w") as f:  # every sample, to read the evaluation
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in samples)
        print(json.dumps(result, indent=1))
    if dist_rank_world()[1] > 1:
        torch.distributed.destroy_process_group()




def main() -> None:
    if is_math_experiment(sys.argv[1:]):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("the math experiment runs its seeds in local processes; under torchrun give --method")
        import experiments.math
        experiments.math.main()
        return
    args = build_parser().parse_args()
    check_args(args)
    run_one(args)
