"""
RL from verifiable rewards for every decoding method: GRPO on `cot`, `soft` or `lbr` rollouts,
Pass@k evaluation, metrics and resumable checkpoints.

One loop for every method (DESIGN §3): for each prompt draw G rollouts, reward 0/1 from the
task's verifier, advantage = reward - group mean (optionally / group std), and minimise

    L = -(1/B) Σ_rollouts Σ_factors min(r_f A, clip(r_f, 1-ε, 1+ε) A),   r_f = exp(log p_f - log p_f^old)

over the factors of log P(τ) (likelihood.factors: the tokens of a sequence; the K draws of
every soft step; the node births and router choices of an LBR tree). On the first epoch r_f = 1, so the gradient is exactly the
likelihood-ratio gradient -(1/B) Σ A ∇ log P(τ), normalised by the batch, not by each rollout's
length. More epochs per batch (PPO) and a KL penalty to the initial model are options. Base
model and router are trained jointly; --freeze-model / --freeze-router train one of them.

Run (a pre-trained base model is made with sft.py, or by `make synthetic`):
    python rlvr.py --task planning --base out/planning/base_s0.pt --method lbr --widths 4,1,1 \\
        --sampler distinct --out out/rl/lbr_s0
    python rlvr.py --task planning --base out/planning/base_s0.pt --method cot --out out/rl/cot_s0
    python rlvr.py --task planning --base out/planning/base_s0.pt --method lbr --eval-only --out ...
    torchrun --nproc_per_node=2 rlvr.py --task planning --base ... --method lbr --out ...   # several GPUs/processes
    python rlvr.py --model DIR --data train.jsonl --eval-data test.jsonl --method lbr --widths 4,1 \\
        --sampler iid --out out/qwen_lbr   # a local Llama/Qwen2 checkpoint on GSM8K-format data
    python rlvr.py --task math              # the math experiment: pre-train, rlvr/soft/lbr, results/math.md
    python rlvr.py --task math --quick      # the same at toy size, about a minute
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from decode import CotConfig, DecodeConfig, LBRConfig, SoftConfig, Trajectory, generate
from likelihood import Factors, factors
from model import Transformer, autocast, pick_device
from router import Router, RouterConfig
from sft import load_sft_model
from tasks import get_task
from tasks.common import Example, make_examples


@dataclass
class RLConfig:
    steps: int = 80  # policy updates
    prompts_per_step: int = 16  # distinct prompts per update
    group_size: int = 8  # rollouts per prompt (G)
    model_lr: float = 1e-4  # Adam learning rate of the base model
    router_lr: float = 1e-2  # Adam learning rate of the router
    normalize_std: bool = False  # divide advantages by the group's reward std
    epochs: int = 1  # passes over each batch (1: the plain likelihood-ratio gradient; >1: PPO)
    clip_eps: float = 0.2  # PPO clip range of each factor's ratio (matters when epochs > 1)
    kl_coef: float = 0.0  # weight of KL(current || initial model) over the model's factors (k3 estimator)
    freeze_model: bool = False  # train the router only
    freeze_router: bool = False  # train the model only
    grad_clip: float = 1.0  # max gradient norm
    seed: int = 0  # prompts and sampling of every step derive from (seed, step)
    save_every: int = 10  # steps between checkpoints (and at the end)
    shards: int = 0  # rollout slices per step, each with its own generator (0: one per process; see train_rl)


# ---------------------------------------------------------------------------------------------
# several processes (torchrun): each takes a share of the prompts; gradients and counts are summed


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def all_reduce_grads(params: list[Tensor]) -> None:
    """Sum every gradient over the processes: each computed its slices' share of a loss that is
    normalised by the whole step's rollout count, so the sum is the whole step's gradient."""
    if dist_rank_world()[1] == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)


def all_reduce_sum(x, device: torch.device):
    """A float (or list of floats) summed over the processes."""
    if dist_rank_world()[1] == 1:
        return x
    t = torch.tensor(x if isinstance(x, list) else [x], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist() if isinstance(x, list) else float(t[0])


def init_distributed() -> torch.device:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on CUDA, gloo on CPU) and
    return this process's device; otherwise the autodetected device."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return pick_device()
    cuda = torch.cuda.is_available()
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# the pieces of one update


def grpo_advantages(rewards: Tensor, normalize_std: bool) -> Tensor:
    """rewards (P, G) -> advantages (P*G,): reward minus its group's mean (optionally / std)."""
    adv = rewards - rewards.mean(1, keepdim=True)
    if normalize_std:
        adv = adv / (rewards.std(1, keepdim=True) + 1e-6)
    return adv.flatten()


def policy_loss(new: Factors, old_logp: Tensor, adv: Tensor, clip_eps: float, n_rollouts: int | None = None) -> Tensor:
    """PPO-clipped likelihood-ratio loss over every factor, normalised by the number of rollouts
    B of the whole step (`n_rollouts`; default: these rollouts; a constant, never a length).

    With old_logp = new.logp.detach() (the first epoch) every ratio is 1 and the gradient is
    -(1/B) Σ_b A_b ∇ log P(τ_b).
    """
    ratio = torch.exp(new.logp - old_logp)
    a = adv[:, None]
    objective = torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    return -(objective * new.mask).sum() / (n_rollouts or len(adv))


def kl_penalty(new: Factors, ref_logp: Tensor, n_rollouts: int | None = None) -> Tensor:
    """k3 estimate of KL(current || reference) summed over the model's sampled factors, per rollout."""
    d = ref_logp - new.logp
    k3 = torch.exp(d) - d - 1
    return (k3 * (new.mask & new.of_model)).sum() / (n_rollouts or new.logp.shape[0])


def rewards_of(task, examples: list[Example], traj: Trajectory, repeat: int) -> Tensor:
    """0/1 reward of every rollout; rollout i answers examples[i // repeat]."""
    comp, length = traj.completion.tolist(), traj.length.tolist()
    return torch.tensor([task.reward(examples[i // repeat], comp[i][: length[i]]) for i in range(len(comp))])


# ---------------------------------------------------------------------------------------------
# evaluation


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"Pass@{k} needs at least {k} samples per problem, got {n}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@torch.no_grad()
def evaluate(model: Transformer, router: Router | None, task, dec: DecodeConfig, examples: list[Example],
             n: int, ks: tuple[int, ...], seed: int, chunk: int = 1024) -> dict:
    """Pass@k (unbiased, n samples per problem) overall and per difficulty (task.difficulty),
    majority vote of the first k samples, and forward tokens per committed token."""
    device = model.embed_tokens.weight.device
    rank, world = dist_rank_world()
    lo, hi = rank * len(examples) // world, (rank + 1) * len(examples) // world  # this process's problems
    g = torch.Generator(device).manual_seed(seed + 7919 * rank)
    prompts = [e.prompt for e in examples[lo:hi] for _ in range(n)]
    chunk = max(n, chunk // n * n)  # whole problems per chunk
    correct, completions, fwd, committed = [], [], 0, 0
    for a in range(0, len(prompts), chunk):
        traj = generate(model, router, prompts[a: a + chunk], dec, task.eos_id, g)
        part = examples[lo + a // n: lo + (a + chunk) // n]
        correct += rewards_of(task, part, traj, n).tolist()
        completions += [tuple(c[:m]) for c, m in zip(traj.completion.tolist(), traj.length.tolist())]
        fwd += int(traj.forward_tokens().sum())
        committed += int(traj.length.sum())
    if world > 1:  # every process gets every problem's outcomes, in problem order
        parts = [None] * world
        torch.distributed.all_gather_object(parts, (correct, completions, fwd, committed))
        correct = [x for p in parts for x in p[0]]
        completions = [x for p in parts for x in p[1]]
        fwd, committed = sum(p[2] for p in parts), sum(p[3] for p in parts)
    c = torch.tensor(correct).view(len(examples), n)
    ks = tuple(k for k in ks if k <= n)
    count = [int(ci) for ci in c.sum(1).tolist()]  # correct samples per problem
    out = {f"pass@{k}": sum(pass_at_k(n, ci, k) for ci in count) / len(examples) for k in ks}
    for m in ks:  # majority vote over the first m samples of each problem (ties: the first seen)
        votes = [Counter(completions[i * n: i * n + m]).most_common(1)[0][0] for i in range(len(examples))]
        out[f"majority@{m}"] = sum(task.reward(e, list(v)) for e, v in zip(examples, votes)) / len(examples)
    out["fwd_per_token"] = fwd / max(committed, 1)
    labels = [task.difficulty(e) for e in examples]
    for d in sorted(set(labels)):  # Pass@k per difficulty (planning: target depth j2; math: ops3)
        sel = [ci for ci, lab in zip(count, labels) if lab == d]
        for k in ks:
            out[f"pass@{k}_{d}"] = sum(pass_at_k(n, ci, k) for ci in sel) / len(sel)
    return out


# ---------------------------------------------------------------------------------------------
# the loop


def train_rl(model: Transformer, router: Router | None, task, dec: DecodeConfig, cfg: RLConfig,
             out_dir: str, quiet: bool = False) -> list[dict]:
    """Run (or resume) RL; returns the per-step metrics. Writes out_dir/{metrics.jsonl, rl.pt, rollouts.pt}
    (rollouts.pt: the rollouts of the step last checkpointed, which `python decode.py --rollouts` draws)."""
    device = model.embed_tokens.weight.device
    is_tree = isinstance(dec, LBRConfig)
    groups = []
    if not cfg.freeze_model:
        groups.append({"params": list(model.parameters()), "lr": cfg.model_lr})
    if is_tree and not cfg.freeze_router:
        groups.append({"params": list(router.parameters()), "lr": cfg.router_lr})
    if not groups:
        raise ValueError("nothing to train: unfreeze the model or (for lbr) the router")
    for p in model.parameters():
        p.requires_grad_(not cfg.freeze_model)
    if router is not None:
        for p in router.parameters():
            p.requires_grad_(is_tree and not cfg.freeze_router)
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.99), weight_decay=0.0)
    ref_model = copy.deepcopy(model).requires_grad_(False) if cfg.kl_coef > 0 else None

    os.makedirs(out_dir, exist_ok=True)
    ckpt_path, metrics_path = os.path.join(out_dir, "rl.pt"), os.path.join(out_dir, "metrics.jsonl")
    start, history = 0, []
    if os.path.exists(ckpt_path):
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        # fields added since the checkpoint was written take their defaults (which keep the old behaviour)
        saved = {**asdict(RLConfig()), **ckpt["rl_config"], "steps": cfg.steps}
        same = saved == asdict(cfg) and ckpt["decoding"] == asdict(dec)
        if not same:  # more --steps continues a run; any other change is a different run
            raise ValueError(f"{ckpt_path} was made with other settings; delete it or choose another --out")
        model.load_state_dict(ckpt["model"])
        if router is not None and ckpt["router"] is not None:
            router.load_state_dict(ckpt["router"])
        opt.load_state_dict(ckpt["optimizer"])
        if ref_model is not None:
            ref_model.load_state_dict(ckpt["ref_model"])
        start, history = ckpt["step"], ckpt["history"]

    def save(step: int) -> None:
        state = {"rl_config": asdict(cfg), "decoding": asdict(dec), "decoding_kind": type(dec).__name__,
                 "model_config": asdict(model.cfg), "model": model.state_dict(),
                 "router_config": asdict(router.cfg) if router is not None else None,
                 "router": router.state_dict() if router is not None else None, "optimizer": opt.state_dict(),
                 "ref_model": ref_model.state_dict() if ref_model is not None else None,
                 "step": step, "history": history}
        torch.save(state, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    P, G = cfg.prompts_per_step, cfg.group_size
    rank, world = dist_rank_world()
    shards = cfg.shards or world
    if shards % world or P % shards:
        raise ValueError(f"shards={shards} must be a multiple of the {world} processes and divide "
                         f"prompts_per_step={P}; set --shards")
    params = [p for grp in groups for p in grp["params"]]
    bar = tqdm(range(start, cfg.steps), desc=f"rl {type(dec).__name__[:-6].lower()}", initial=start, total=cfg.steps,
               disable=quiet or rank > 0)
    for step in bar:
        t0 = time.time()
        examples = make_examples(task, P, seed=cfg.seed * 1_000_003 + step, split="rl")
        # the step's rollouts come in `shards` slices of P/shards prompts, each sampled with its
        # own generator; this process takes every world-th slice. The rollouts, hence the update,
        # do not depend on the number of processes (tests/test_ddp.py).
        model.eval()
        batches = []
        for s in range(rank, shards, world):
            part = examples[s * P // shards: (s + 1) * P // shards]
            g = torch.Generator(device).manual_seed(cfg.seed * 1_000_003 + step + s * 1_000_000_007)
            traj = generate(model, router, [e.prompt for e in part for _ in range(G)], dec, task.eos_id, g)
            rewards = rewards_of(task, part, traj, G).to(device)
            adv = grpo_advantages(rewards.view(len(part), G).float(), cfg.normalize_std)
            ref_logp = None
            if ref_model is not None:
                with torch.no_grad(), autocast(device):
                    ref_logp = factors(ref_model, router, traj).logp
            batches.append((traj, rewards, adv, ref_logp))
        old, losses = [None] * len(batches), []
        for _ in range(cfg.epochs):
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for i, (traj, _, adv, ref_logp) in enumerate(batches):
                with autocast(device):  # bf16 matmuls on CUDA; log-probs and the loss stay fp32
                    new = factors(model, router, traj)
                old[i] = new.logp.detach() if old[i] is None else old[i]
                loss = policy_loss(new, old[i], adv, cfg.clip_eps, n_rollouts=P * G)
                if ref_logp is not None:
                    loss = loss + cfg.kl_coef * kl_penalty(new, ref_logp, n_rollouts=P * G)
                loss.backward()  # gradients of the slices add up to the gradient of the whole step
                total += loss.item()
            all_reduce_grads(params)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            losses.append(all_reduce_sum(total, device))
        reward_sum, fwd_sum, len_sum = all_reduce_sum([sum(float(b[1].float().sum()) for b in batches),
                                                       sum(float(b[0].forward_tokens().sum()) for b in batches),
                                                       sum(float(b[0].length.sum()) for b in batches)], device)
        row = {"step": step + 1, "reward": reward_sum / (P * G), "loss": losses[0],
               "fwd_per_token": fwd_sum / max(len_sum, 1), "length": len_sum / (P * G), "seconds": time.time() - t0}
        history.append(row)
        if rank == 0:  # only rank 0 writes
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        bar.set_postfix(reward=f"{row['reward']:.3f}")
        if rank == 0 and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
            save(step + 1)
            # with the checkpoint, this step's rollouts (rank 0's first slice), for `python decode.py --rollouts`
            torch.save({"step": step + 1, "trajectory": batches[0][0], "rewards": batches[0][1]},
                       os.path.join(out_dir, "rollouts.pt"))
    return history


# ---------------------------------------------------------------------------------------------
# command line


def decoding_from_args(args, task) -> DecodeConfig:
    if args.method == "lbr":
        return LBRConfig(widths=args.widths, sampler=args.sampler, temperature=args.temperature,
                         router_temperature=args.router_temperature, greedy_router=args.greedy_router,
                         max_new_tokens=args.max_new_tokens)
    if args.method == "soft":
        end = task.tokenizer.stoi.get(args.soft_until, -1) if args.soft_until else -1
        if args.soft_until and end < 0:
            raise ValueError(f"--soft-until {args.soft_until!r} is not a word of the {task.name} vocabulary")
        return SoftConfig(k=args.soft_k, weighting=args.soft_weighting, temperature=args.temperature,
                          discrete_after=end, max_new_tokens=args.max_new_tokens)
    return CotConfig(temperature=args.temperature, greedy=args.greedy, max_new_tokens=args.max_new_tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description="GRPO on cot, soft or LBR rollouts, with Pass@k evaluation. "
                                 "`--task math` without --method runs the whole math experiment.")
    g = ap.add_argument_group("task and model")
    g.add_argument("--task", default="planning", choices=["planning", "math"])
    g.add_argument("--base", help="pre-trained base model checkpoint (sft.py); needed with --method")
    g.add_argument("--model", help="a local Llama/Qwen2 checkpoint directory (config.json, *.safetensors, "
                   "tokenizer.json) instead of --base")
    g.add_argument("--data", help="GSM8K-format JSONL to train on (with --model)")
    g.add_argument("--eval-data", help="GSM8K-format JSONL to evaluate on (default: --data)")
    g.add_argument("--strict-data", action="store_true", help="reject a malformed JSONL line instead of skipping it")
    g.add_argument("--out", help="run directory: metrics.jsonl, rl.pt (resumed), eval.json "
                   "(math experiment: checkpoints, default out/math)")
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
    g.add_argument("--soft-until", default="", help="soft: word after which decoding is discrete (math: '#')")
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
    import math_experiment
    math_experiment.add_args(ap)
    args = ap.parse_args()

    if args.method is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("the math experiment runs its seeds in local processes; under torchrun give --method")
        if args.task != "math":
            raise ValueError("give --method cot|soft|lbr (the planning experiment is `make synthetic`)")
        math_experiment.run(args.quick, args.seeds, args.out or "out/math", args.results, args.jobs, args.report_only)
        return
    if (args.base is None) == (args.model is None) or args.out is None:
        raise ValueError("--method needs --out RUN_DIR and one of --base CHECKPOINT (from sft.py) or --model DIR")
    if args.data and not args.model:
        raise ValueError("--data needs --model DIR (a pretrained model with its tokenizer.json)")
    device = init_distributed() if args.device == "auto" else pick_device(args.device)
    rank = dist_rank_world()[0]
    if args.model:
        from checkpoint import load_pretrained
        from tasks.math import GSM8KTask, load_gsm8k
        from tokenizer import BPETokenizer
        if not args.data:
            raise ValueError("--model needs --data FILE.jsonl (GSM8K format) to train and evaluate on")
        tok = BPETokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
        task = GSM8KTask(load_gsm8k(args.data, args.strict_data), tok, max_answer_len=args.max_new_tokens or 512,
                         eval_items=load_gsm8k(args.eval_data, args.strict_data) if args.eval_data else None)
        model = load_pretrained(args.model, device)
    else:
        task = get_task(args.task)
        model = load_sft_model(args.base, device)
    args.max_new_tokens = args.max_new_tokens or task.max_answer_len
    dec = decoding_from_args(args, task)
    router = None
    if args.method == "lbr":
        router = Router(RouterConfig(features=args.router), model.cfg.n_embd, len(dec.widths)).to(device)
    cfg = RLConfig(**{k: getattr(args, k) for k in asdict(RLConfig())})
    if not args.eval_only:
        train_rl(model, router, task, dec, cfg, args.out)
    elif os.path.exists(os.path.join(args.out, "rl.pt")):
        ckpt = torch.load(os.path.join(args.out, "rl.pt"), map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        if router is not None:
            router.load_state_dict(ckpt["router"])
    examples = make_examples(task, args.eval_size, seed=10_000 + args.seed, split="eval")
    result = evaluate(model.eval(), router, task, dec, examples, args.eval_samples, (1, args.eval_samples), args.seed)
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "eval.json"), "w") as f:
            json.dump(result, f, indent=1)
        print(json.dumps(result, indent=1))
    if dist_rank_world()[1] > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
