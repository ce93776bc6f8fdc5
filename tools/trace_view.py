"""
The trace command: an LBR (or cot) rollout step by step, of the tiny random model (as `python
decode.py`), of a task example under a pre-trained model and optionally a trained run, or a
rollout an RL run saved; printed, and with --trace written as an HTML page (the views:
tools/trace_render.py).

    python -m tools.trace_view --task planning --base out/my_base.pt --run out/my_lbr --trace out/trained.html
    python -m tools.trace_view --task planning --rollouts out/my_lbr/rollouts.pt --row 0 --trace out/rollout.html
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Callable

import torch

import decode
from pretrained.checkpoint import load_pt
from tools.cli import ArgumentParser, check_int, run
from decode import CotConfig, LBRConfig, SequenceTrajectory, TreeTrajectory
from evaluate import DecodeConfig, generate
from soft import SoftConfig, SoftTrajectory
from model import Transformer
from router import Router, RouterConfig, RouterInput
from sft import load_sft_model
from tasks import get_task
from tools.records import check_tree_record
from tools.trace_render import (StepView, add_demo_args, check_demo_args, render_html, render_text, sequence_steps,
                                show, soft_steps, tiny_itos, tiny_model, tree_steps, write_page)
from tree import parse_widths


def steps_of(traj: TreeTrajectory | SequenceTrajectory | SoftTrajectory,
             row: int = 0) -> tuple[list[int], list[StepView]]:
    if isinstance(traj, TreeTrajectory):
        return tree_steps(traj, row)
    return soft_steps(traj, row) if isinstance(traj, SoftTrajectory) else sequence_steps(traj, row)


@dataclass
class TraceSetup:
    """What one traced rollout is decoded from."""
    model: Transformer
    router: Router
    dec: DecodeConfig
    prompt: list[int]
    stop_ids: tuple[int, ...]
    itos: Callable[[int], str]  # token id -> text
    title: str  # of the HTML page
    verdict: Callable[[list[int]], bool] | None = None  # committed tokens -> correct? (task examples)


def tiny_setup(args) -> TraceSetup:
    """The tiny random model of `python decode.py` (trace_render.tiny_model) on the prompt `a b c`."""
    model, router, eos = tiny_model(args.seed, len(parse_widths(args.widths)))
    dec = CotConfig(max_new_tokens=args.steps) if args.cot else LBRConfig(
        widths=args.widths, sampler=args.sampler, max_new_tokens=args.steps)
    return TraceSetup(model, router, dec, [0, 1, 2], (eos,), tiny_itos, "tiny random model")


def task_setup(args) -> TraceSetup:
    """One evaluation example of --task (drawn with --seed), the --base model, and either a fresh
    router seeded by --seed or the trained model, router and decoding config of the --run."""
    if not args.base:
        raise ValueError("--task needs --base CHECKPOINT (and optionally --run RUN_DIR)")
    task = get_task(args.task)
    model = load_sft_model(args.base, task=task)
    example = task.sample(random.Random(args.seed), "eval")
    T = task.max_answer_len
    dec = CotConfig(max_new_tokens=T) if args.cot else LBRConfig(widths=args.widths, sampler=args.sampler,
                                                                 max_new_tokens=T)
    with torch.random.fork_rng(devices=[]):  # a fresh router's init from the seed alone
        torch.manual_seed(args.seed)
        router = Router(RouterConfig(), model.cfg.n_embd, len(parse_widths(args.widths)))
    if args.run:
        path = args.run if os.path.isfile(args.run) else os.path.join(args.run, "rl.pt")
        if os.path.isdir(args.run) and not os.path.exists(path):
            raise ValueError(f"--run {args.run} holds no rl.pt: give the --out directory of an rlvr.py run")
        ckpt = load_pt(path, "--run checkpoint")
        if "rl_config" not in ckpt:
            raise ValueError(f"--run {path} is not an RL checkpoint (rlvr.py's rl.pt)")
        try:
            model.load_state_dict(ckpt["model"])
            if ckpt["decoding_kind"] == "LBRConfig" and not args.cot:
                dec = LBRConfig(**ckpt["decoding"])
                router = Router(RouterConfig(**ckpt["router_config"]), model.cfg.n_embd, len(dec.widths))
                router.load_state_dict(ckpt["router"])
        except RuntimeError as e:  # tensor shapes that do not fit
            raise ValueError(f"--run {path} was trained from another base model than --base {args.base} "
                             f"({str(e).splitlines()[0]})") from None
    return TraceSetup(model, router, dec, example.prompt, task.stop_ids, task.tokenizer.itos.__getitem__,
                      f"{args.task} example (seed {args.seed}); answer: {task.tokenizer.decode(example.answer)}",
                      verdict=lambda completion: task.reward(example, completion) == 1.0)


def show_saved_rollout(args) -> None:
    """Print (and with --trace write) rollout --row of a rollouts.pt that rlvr.py saved."""
    saved = load_pt(args.rollouts, "--rollouts file", kinds=(SequenceTrajectory, SoftTrajectory, TreeTrajectory,
                                                             CotConfig, SoftConfig, LBRConfig, RouterInput))
    if not {"trajectory", "rewards", "step"} <= set(saved):
        raise ValueError(f"--rollouts {args.rollouts} is not a rollouts.pt written by rlvr.py")
    traj = saved["trajectory"]
    task_of = saved.get("task"), saved.get("vocab_size")  # printed in another vocabulary, the words are wrong
    if args.task and task_of != (args.task, get_task(args.task).tokenizer.vocab_size):
        raise ValueError(f"--rollouts {args.rollouts} holds rollouts of the {task_of[0] or 'unrecorded'} task "
                         f"({task_of[1] or 'unknown'} tokens), not of --task {args.task}: give "
                         f"{'--task ' + task_of[0] if task_of[0] else 'no --task'} (token ids without one)")
    if not 0 <= args.row < len(traj.length):
        raise ValueError(f"--row {args.row}: the file holds rollouts 0..{len(traj.length) - 1}")
    if isinstance(traj, TreeTrajectory):  # a file can hold anything: the views trust a well-formed record
        try:
            check_tree_record(traj, task_of[1] or int(traj.tokens.max()) + 1)
        except ValueError as e:
            raise ValueError(f"--rollouts {args.rollouts}: {e}") from None
    itos = get_task(args.task).tokenizer.itos.__getitem__ if args.task else str
    prompt_tokens, steps = steps_of(traj, args.row)
    print(render_text(prompt_tokens, steps, itos))
    print(f"reward {float(saved['rewards'][args.row]):.0f} (RL step {saved['step']})")
    if args.trace:
        write_page(args.trace, render_html(prompt_tokens, steps, itos, f"{args.rollouts}, rollout {args.row} "
                                           f"(RL step {saved['step']}, reward {float(saved['rewards'][args.row]):.0f})",
                                           verdict=float(saved["rewards"][args.row]) == 1.0))


def parse_args():
    ap = ArgumentParser(description="Trace LBR (or cot) decoding step by step.")
    add_demo_args(ap)
    g = ap.add_argument_group("a task example and a trained model instead of the tiny random one")
    g.add_argument("--task", choices=["planning", "math"], help="trace one evaluation example of this task")
    g.add_argument("--base", help="pre-trained base model checkpoint (sft.py)")
    g.add_argument("--run", help="an RL run directory (rlvr.py --out): its trained model, router and decoding config")
    g.add_argument("--rollouts", help="draw a saved rollout instead (RUN_DIR/rollouts.pt: the latest RL step's); "
                   "--task names the vocabulary")
    g.add_argument("--row", type=int, default=0, help="which saved rollout to draw")
    args = ap.parse_args()
    # every argument that needs no file is checked before any work
    check_demo_args(args, decode)
    check_int("--row", args.row, 0)
    if args.rollouts and (args.base or args.run):
        raise ValueError("--rollouts draws a saved rollout: it takes --task (the vocabulary), not --base or --run")
    if (args.base or args.run) and not args.task:
        raise ValueError("--base and --run need --task planning|math (the task whose example is traced)")
    return args


def main() -> None:
    """Decode one rollout and print its steps (with --trace, also write them as an HTML page)."""
    args = parse_args()
    if args.rollouts:
        show_saved_rollout(args)
        return
    g = torch.Generator().manual_seed(args.seed)
    s = task_setup(args) if args.task else tiny_setup(args)
    traj = generate(s.model, s.router, [s.prompt], s.dec, s.stop_ids, g)
    completion = traj.completion[0, :int(traj.length[0])].tolist()
    show(traj, steps_of, s.itos, s.title, args.trace, s.verdict(completion) if s.verdict else None)


if __name__ == "__main__":
    run(main)
