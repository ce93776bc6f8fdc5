"""
RL from verifiable rewards for every decoding method: GRPO on `cot`, `soft` or `lbr` rollouts,
Pass@k evaluation, metrics and resumable checkpoints.

One loop for every method (docs/DESIGN.md §6): for each prompt draw G rollouts, reward 0/1 from the
task's verifier (0 for a rollout cut off at max_new_tokens), advantage = reward - group mean
(optionally / group std), and minimise

    L = -(1/B) Σ_rollouts Σ_factors min(r_f A, clip(r_f, 1-ε, 1+ε) A),   r_f = exp(log p_f - log p_f^old)

over the factors of log P(τ) (likelihood.factors: the tokens of a sequence; the K draws of
every soft step; the node births and router choices of an LBR tree). On the first epoch r_f = 1, so the gradient is exactly the
likelihood-ratio gradient -(1/B) Σ A ∇ log P(τ), normalised by the batch, not by each rollout's
length. More epochs per batch (PPO, with the dual clip c A for A < 0), a KL penalty to the
initial model and DAPO's overlong filtering (truncated rollouts out of the loss) are options. Base
model and router are trained jointly; --freeze-model / --freeze-router train one of them.

Run (a pre-trained base model is made with sft.py, or by `make synthetic`):
    python rlvr.py --task planning --base out/planning/base_s0.pt --method lbr --widths 4,1,1 \\
        --sampler distinct --out out/rl/lbr_s0
    python rlvr.py --task planning --base out/planning/base_s0.pt --method cot --out out/rl/cot_s0
    python rlvr.py --task planning --base out/planning/base_s0.pt --method lbr --eval-only --out ...
    torchrun --nproc_per_node=2 rlvr.py --task planning --base ... --method lbr --out ...   # several GPUs/processes
    python rlvr.py --model DIR --data train.jsonl --eval-data test.jsonl --method lbr --widths 4,1 \\
        --sampler iid --out out/qwen_lbr   # a local Llama/Qwen checkpoint on GSM8K- or MATH-style data
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
from dataclasses import asdict, dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from pretrained.chat import ChatTemplate
from pretrained.checkpoint import load_pretrained, load_pt, save_pt, stop_ids
from tools.cli import ArgumentParser, check_device, check_float, check_in_file, check_int, check_out_dir, run
from decode import CotConfig, DecodeConfig, LBRConfig, SoftConfig, Trajectory, TreeTrajectory, generate, truncated
from evaluate import dist_rank_world, evaluate, rewards_of
from likelihood import Factors, factors
from model import Transformer, autocast, pick_device
from router import Router, RouterConfig
from tree import TreeShape
from sft import load_sft_model
from tasks import get_task
from tasks.common import Seeds, make_examples
from tasks.word_problems import DEFAULT_INSTRUCTION, WordProblemTask, load_problems
from pretrained.tokenizer import BPETokenizer


class NonFiniteLoss(ValueError):
    """The RL loss became NaN or inf: the weights are ruined (a learning rate too high for the
    configuration). A ValueError (the CLI prints one line); the study catches it by this name."""


@dataclass
class RLConfig:
    steps: int = 80  # policy updates
    prompts_per_step: int = 16  # distinct prompts per update
    group_size: int = 8  # rollouts per prompt (G)
    model_lr: float = 1e-4  # Adam learning rate of the base model
    router_lr: float = 1e-2  # Adam learning rate of the router
    normalize_std: bool = False  # divide advantages by the group's reward std
    overlong_filter: bool = False  # DAPO's overlong filtering: rollouts cut off at max_new_tokens leave the loss
    epochs: int = 1  # passes over each batch (1: the plain likelihood-ratio gradient; >1: PPO)
    clip_eps: float = 0.2  # PPO clip range of each factor's ratio (matters when epochs > 1)
    dual_clip: float = 3.0  # c of dual-clip PPO: a factor's loss is at most c |A| when A < 0 (matters when epochs > 1)
    kl_coef: float = 0.0  # weight of KL(current || initial model) over the model's factors (k3 estimator)
    router_entropy_coef: float = 0.0  # lbr: β of an entropy bonus, - β Σ_t H(π_φ(· | tree_t)) per rollout in the loss
    factor_norm: bool = False  # divide the loss by the method's factors per committed token (factors_per_token)
    freeze_model: bool = False  # train the router only
    freeze_router: bool = False  # train the model only
    grad_clip: float = 1.0  # max gradient norm
    seed: int = 0  # prompts and sampling of every step derive from (seed, step)
    save_every: int = 10  # steps between checkpoints (and at the end)
    shards: int = 0  # rollout slices per step, each with its own generator (0: one per process; see train_rl)

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step", "epochs", "save_every"):
            check_int(name, getattr(self, name), 1)
        check_int("group_size", self.group_size, 2, "GRPO compares the rollouts of one prompt with each other")
        check_int("shards", self.shards, 0)
        if self.shards and self.prompts_per_step % self.shards:
            raise ValueError(f"shards={self.shards} must divide prompts_per_step={self.prompts_per_step}")
        for name in ("model_lr", "router_lr", "clip_eps", "grad_clip"):
            check_float(name, getattr(self, name))
        check_float("dual_clip", self.dual_clip, 1.0, hint="the bound c |A| of a factor's loss for A < 0 needs c > 1")
        check_float("kl_coef", self.kl_coef, strict=False)
        check_float("router_entropy_coef", self.router_entropy_coef, strict=False)


def new_router(cfg: RouterConfig, n_embd: int, max_depth: int, seed: int) -> Router:
    """A fresh router (on the CPU) whose initial weights depend on `seed` alone: the same run gives
    the same numbers whatever drew from the global RNG before (a base model just trained or loaded
    from a cache), and the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Router(cfg, n_embd, max_depth)


def make_optimizer(groups: list[dict]) -> torch.optim.Optimizer:
    """AdamW over the parameter groups (model, router), each with its own learning rate.
    (tests/test_ddp.py swaps in SGD: Adam's first step divides each gradient by its own magnitude,
    so a parameter whose true gradient is zero takes a full-size step made of rounding noise.)"""
    return torch.optim.AdamW(groups, betas=(0.9, 0.99), weight_decay=0.0)


# ---------------------------------------------------------------------------------------------
# several processes (torchrun): each takes a share of the prompts; gradients and counts are summed


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


def init_distributed(device: str = "auto") -> torch.device:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on CUDA, gloo on CPU) and
    return this process's device; otherwise `device` ('auto': autodetected). An explicit
    `--device cpu` under torchrun still joins the group (gloo), else every process is rank 0."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return pick_device(device)
    cuda = torch.cuda.is_available() and device != "cpu"
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# the pieces of one update


def grpo_advantages(rewards: Tensor, normalize_std: bool) -> Tensor:
    """rewards (P, G), G rollouts of each of P prompts -> advantages (P*G,): each reward minus the
    mean of its group, optionally divided by the group's standard deviation (+1e-6); GRPO, Shao et
    al. 2024, "DeepSeekMath", §4.1.2 (outcome supervision).

    The group mean is the baseline, so a group needs G >= 2 rollouts: a group of one is its own
    baseline (advantage 0 whatever the reward: nothing is learned) and its std is undefined (NaN),
    hence refused (ValueError), as are empty and non-finite rewards. A group whose rewards are all
    equal expresses no preference: its advantages are exactly 0 for any float value (the mean of
    eight 0.7s is not exactly 0.7 in floating point, and dividing that rounding error by a std of
    ~0 would turn it into a full-size advantage). So does a group whose rewards differ by no more
    than that rounding: the float mean of G rewards is off by up to (G - 1) u Σ|r| / G < G eps max|r|
    (u = eps / 2, recursive summation), so a spread max - min within G eps max|r| cannot be told
    from rounding (with normalize_std, rewards 100, 100 + 1 ulp, 100, 100 + 1 ulp would get the
    advantages 0, 1.06, 0, 1.06).
    """
    if rewards.dim() != 2 or rewards.numel() == 0:
        raise ValueError(f"rewards must be a non-empty (prompts, group size) matrix, got shape {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ValueError(f"group size {rewards.shape[1]}: GRPO needs >= 2 rollouts per prompt (the group mean is "
                         "the baseline); raise group_size")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards must be finite numbers; the verifier returned NaN or inf")
    G, eps = rewards.shape[1], torch.finfo(rewards.dtype).eps
    spread = rewards.amax(1, keepdim=True) - rewards.amin(1, keepdim=True)
    tie = spread <= G * eps * rewards.abs().amax(1, keepdim=True)  # (P, 1) no preference within the group
    adv = torch.where(tie, 0.0, rewards - rewards.mean(1, keepdim=True))
    if normalize_std:
        adv = torch.where(tie, 0.0, adv / (rewards.std(1, keepdim=True) + 1e-6))
    return adv.flatten()


def policy_loss(new: Factors, old_logp: Tensor, adv: Tensor, clip_eps: float, n_rollouts: int | None = None,
                dual_clip: float = 3.0) -> Tensor:
    """PPO-clipped likelihood-ratio loss over every factor, normalised by the number of rollouts
    B of the whole step (`n_rollouts`; default: these rollouts; a constant, never a length).

    With old_logp = new.logp.detach() (the first epoch) every ratio is 1 and the gradient is
    -(1/B) Σ_b A_b ∇ log P(τ_b).

    Dual clip (dual-clip PPO: Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep
    Reinforcement Learning"; verl's clip_ratio_c, 3 by default): for A < 0 the PPO term
    min(r A, clip(r) A) is r A for r >= 1 - ε and falls without bound as the ratio r grows (A = -1,
    log r = 8: a loss of e^8 = 2981 for one factor), so it is bounded below by c A: the factor's loss
    is at most c |A|, and a factor past r = c gets no gradient. At r = 1 (the first epoch) nothing
    changes.
    """
    ratio = torch.exp(new.logp - old_logp)
    a = adv[:, None]
    objective = torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    objective = torch.where(a < 0, torch.maximum(objective, dual_clip * a), objective)
    return -(objective * new.mask).sum() / (n_rollouts or len(adv))


def factors_per_token(dec: DecodeConfig) -> int:
    """The number of factors of log P(τ) per committed token, a constant of the method's shape:
    `cot` 1 (the token), `soft` K (its draws), `lbr` the nodes born at a step plus the router's choice.
    After the first step an LBR step keeps the committed candidate's subtree (it becomes the new
    local tree minus one level) and refills the rest: widths (4, 1) give 9 - 2 = 7 births + 1.
    (Ends of sequences and EOS leaves give a little fewer.) RLConfig.factor_norm divides the loss by it:
    a constant, so the gradient stays an unbiased estimate, of the objective divided by it."""
    if isinstance(dec, LBRConfig):
        shape = TreeShape.from_widths(dec.widths)
        return shape.n_slots - shape.subtree.shape[1] + 1
    if isinstance(dec, SoftConfig):
        return dec.k
    return 1


def kl_penalty(new: Factors, ref_logp: Tensor, n_rollouts: int | None = None) -> Tensor:
    """k3 estimate of KL(current || reference) summed over the model's sampled factors, per rollout:
    e^d - d - 1 with d = log p_ref - log p (Schulman 2020, "Approximating KL divergence").

    d is clamped to [-20, 20] first, as verl (trainer/ppo/core_algos.py, kl_penalty 'low_var_kl') and
    OpenRLHF (models/utils.py, compute_approx_kl 'k3') do: e^d overflows float32 at d = 89 (a factor the
    current model all but ruled out), and an infinite loss and gradient would end the run. A
    clamped factor contributes e^20 - 21 (or 19 + e^-20) and no gradient."""
    d = (ref_logp - new.logp).clamp(-20.0, 20.0)
    k3 = torch.exp(d) - d - 1
    return (k3 * (new.mask & new.of_model)).sum() / (n_rollouts or new.logp.shape[0])


# ---------------------------------------------------------------------------------------------
# the loop: collect rollouts -> advantages -> update, with checkpoints


@dataclass
class RolloutBatch:
    """One shard of an RL step: its rollouts and what the update needs of them."""
    traj: Trajectory  # G rollouts of each of the shard's prompts, prompt after prompt
    rewards: Tensor  # (n,) 0/1 reward of each rollout
    truncated: Tensor  # (n,) bool: cut off at max_new_tokens without a stop id (reward 0; decode.truncated)
    adv: Tensor  # (n,) GRPO advantage of each rollout
    ref_logp: Tensor | None  # (n, F) its factors under the reference model (KL penalty); None without one


def trainable_groups(model: Transformer, router: Router | None, dec: DecodeConfig, cfg: RLConfig) -> list[dict]:
    """The optimiser's parameter groups (model, router), each with its learning rate; freezes the
    rest (requires_grad False: --freeze-model, --freeze-router, the router of a method without one).
    Raises ValueError when nothing is left to train."""
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
    return groups


def check_shards(cfg: RLConfig, world: int) -> int:
    """The number of rollout shards per step (cfg.shards, or one per process); ValueError unless
    every process takes the same number of whole shards of whole prompts."""
    shards = cfg.shards or world
    if shards % world or cfg.prompts_per_step % shards:
        raise ValueError(f"shards={shards} must be a multiple of the {world} processes and divide "
                         f"prompts_per_step={cfg.prompts_per_step}; set --shards")
    return shards


def save_checkpoint(path: str, step: int, history: list[dict], cfg: RLConfig, dec: DecodeConfig, model: Transformer,
                    router: Router | None, opt: torch.optim.Optimizer, ref_model: Transformer | None) -> None:
    """Everything a resumed run needs (rl.pt), written via a temporary file: a kill never leaves a
    half-written checkpoint."""
    state = {"rl_config": asdict(cfg), "decoding": asdict(dec), "decoding_kind": type(dec).__name__,
             "model_config": asdict(model.cfg), "model": model.state_dict(),
             "router_config": asdict(router.cfg) if router is not None else None,
             "router": router.state_dict() if router is not None else None, "optimizer": opt.state_dict(),
             "ref_model": ref_model.state_dict() if ref_model is not None else None,
             "step": step, "history": history}
    save_pt(state, path)


def resume(path: str, cfg: RLConfig, dec: DecodeConfig, model: Transformer, router: Router | None,
           opt: torch.optim.Optimizer, ref_model: Transformer | None) -> tuple[int, list[dict]]:
    """(steps done, their metrics): 0 and [] without a checkpoint at `path`; else its state is loaded
    into model, router, optimiser and reference model. Raises ValueError for a file that is not an
    RL checkpoint, was made with other settings (more --steps continues a run; any other change is
    a different run) or has trained more steps than cfg.steps."""
    if not os.path.exists(path):
        return 0, []
    try:
        ckpt = load_pt(path, "RL checkpoint")
    except ValueError as e:
        raise ValueError(f"{e}; delete it or choose another --out to start the run anew") from None
    if "rl_config" not in ckpt:
        raise ValueError(f"{path} is not an RL checkpoint of rlvr.py; delete it or choose another --out")
    # fields added since the checkpoint was written take their defaults (which keep the old behaviour;
    # dual_clip bounds only factors whose ratio passed c = 3, which epochs = 1 never has)
    saved = {**asdict(RLConfig()), **ckpt["rl_config"], "steps": cfg.steps}
    router_now = asdict(router.cfg) if router is not None else None
    if saved != asdict(cfg) or ckpt["decoding"] != asdict(dec) or ckpt.get("router_config") != router_now:
        diff = [f"{k} {saved.get(k)} there, {v} now" for k, v in asdict(cfg).items() if saved.get(k) != v]
        diff += [f"{k} {ckpt['decoding'].get(k)} there, {v} now" for k, v in asdict(dec).items()
                 if ckpt["decoding"].get(k) != v]
        if ckpt.get("router_config") != router_now:
            diff.append(f"router {ckpt.get('router_config')} there, {router_now} now")
        raise ValueError(f"{path} was made with other settings ({'; '.join(diff) or 'another method'}); "
                         "delete it or choose another --out")
    if ckpt["step"] > cfg.steps:  # fewer steps would return (and evaluate) the longer run's model
        raise ValueError(f"{path} has already trained {ckpt['step']} steps, more than steps={cfg.steps}: "
                         f"give --steps {ckpt['step']} (or more) or choose another --out")
    from pretrained.checkpoint import check_state_fits
    check_state_fits(ckpt["model"], model, f"{path} was trained from a model of another shape than the --base "
                     "(or --model) given now", "give the one this run started from, or choose another --out")
    model.load_state_dict(ckpt["model"])
    if router is not None and ckpt["router"] is not None:
        router.load_state_dict(ckpt["router"])
    opt.load_state_dict(ckpt["optimizer"])
    if ref_model is not None:
        ref_model.load_state_dict(ckpt["ref_model"])
    return ckpt["step"], ckpt["history"]


def collect_rollouts(model: Transformer, router: Router | None, task, dec: DecodeConfig, cfg: RLConfig, step: int,
                     shards: int, ref_model: Transformer | None) -> list[RolloutBatch]:
    """This process's shards of step `step`: G rollouts of each prompt, their rewards and advantages.

    The step's P prompts come in `shards` slices of P/shards prompts, each sampled with its own
    generator (Seeds.train_step(step, shard)); this process takes every world-th slice. So the
    rollouts, hence the update, do not depend on the number of processes (tests/test_ddp.py).
    """
    device = model.embed_tokens.weight.device
    rank, world = dist_rank_world()
    P, G = cfg.prompts_per_step, cfg.group_size
    seeds = Seeds(cfg.seed)
    examples = make_examples(task, P, seed=seeds.train_step(step), split="rl")
    model.eval()
    batches = []
    for s in range(rank, shards, world):
        part = examples[s * P // shards: (s + 1) * P // shards]
        g = torch.Generator(device).manual_seed(seeds.train_step(step, shard=s))
        traj = generate(model, router, [e.prompt for e in part for _ in range(G)], dec, task.stop_ids, g)
        rewards = rewards_of(task, part, traj, G).to(device)  # 0 for a truncated rollout
        adv = grpo_advantages(rewards.view(len(part), G).float(), cfg.normalize_std)
        ref_logp = None
        if ref_model is not None:
            with torch.no_grad(), autocast(device):
                ref_logp = factors(ref_model, router, traj).logp
        batches.append(RolloutBatch(traj, rewards, truncated(traj, task.stop_ids), adv, ref_logp))
    return batches


def grad_norm(params: list[Tensor]) -> float:
    """L2 norm of the gradients of `params` (0 for none)."""
    norms = [p.grad.norm() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def update(model: Transformer, router: Router | None, opt: torch.optim.Optimizer, params: list[Tensor],
           batches: list[RolloutBatch], cfg: RLConfig) -> dict[str, float]:
    """cfg.epochs optimiser steps on the step's rollouts: each replays every factor of log P(τ)
    under the current parameters, backpropagates the clipped loss (+ KL, - entropy bonus), sums the
    gradients of all processes, clips their norm and steps. Returns the first epoch's loss (summed
    over processes) and the L2 norms of the model's and the router's gradients before clipping
    ("grad_norm_model", "grad_norm_router"; the router's is 0 without one)."""
    device = model.embed_tokens.weight.device
    # the loss's constant normaliser: the rollouts of the whole step (times the factors per token)
    dec = getattr(batches[0].traj, "cfg", CotConfig())  # a cot record keeps only its temperature
    norm = cfg.prompts_per_step * cfg.group_size * (factors_per_token(dec) if cfg.factor_norm else 1)
    old, out = [None] * len(batches), {}
    router_params = {id(p) for p in router.parameters()} if router is not None else set()
    for epoch in range(cfg.epochs):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for i, b in enumerate(batches):
            with autocast(device):  # bf16 matmuls on CUDA; log-probs and the loss stay fp32
                new = factors(model, router, b.traj)
            if cfg.overlong_filter:
                # DAPO's overlong filtering (Yu et al. 2025, §3.4): a truncated rollout leaves every term of
                # the loss; its reward 0 still enters its group's baseline, and `norm` stays the constant
                new = new.keep_rows(~b.truncated)
            old[i] = new.logp.detach() if old[i] is None else old[i]  # the sampling policy's, fixed at epoch 1
            loss = policy_loss(new, old[i], b.adv, cfg.clip_eps, n_rollouts=norm, dual_clip=cfg.dual_clip)
            if b.ref_logp is not None:
                loss = loss + cfg.kl_coef * kl_penalty(new, b.ref_logp, n_rollouts=norm)
            if cfg.router_entropy_coef:
                loss = loss - cfg.router_entropy_coef * new.router_entropy.sum() / norm
            loss.backward()  # gradients of the slices add up to the gradient of the whole step
            total += loss.item()
        all_reduce_grads(params)
        if epoch == 0:
            out = {"loss": all_reduce_sum(total, device),
                   "grad_norm_model": grad_norm([p for p in params if id(p) not in router_params]),
                   "grad_norm_router": grad_norm([p for p in params if id(p) in router_params])}
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
    return out


def router_entropy(traj: Trajectory) -> tuple[float, int]:
    """(sum of H(π_φ(· | tree_t)) in nats over the steps taken, number of those steps) of the router
    distributions an LBR decoder sampled from (recorded in the trajectory); (0, 0) for other methods."""
    if not isinstance(traj, TreeTrajectory):
        return 0.0, 0
    taken = torch.arange(traj.choice.shape[1], device=traj.choice.device) < traj.length[:, None]  # (B, S)
    h = -(traj.router_logp.exp() * traj.router_logp).nan_to_num().sum(-1)  # (B, S, K) -> (B, S); 0·log 0 = 0
    return float(h[taken].sum()), int(taken.sum())


def step_metrics(step: int, batches: list[RolloutBatch], upd: dict[str, float], cfg: RLConfig, t0: float,
                 device: torch.device) -> dict:
    """The metrics row of step `step` (0-based) over all processes' rollouts: mean reward, the fraction
    truncated (cut off at max_new_tokens), loss, gradient norms (`update`), forward tokens per committed
    token, mean length, mean model factors per rollout, and for lbr the mean entropy of the router per
    step (nats; log K is uniform)."""
    n_rollouts = cfg.prompts_per_step * cfg.group_size
    ent = [router_entropy(b.traj) for b in batches]
    sums = all_reduce_sum([sum(float(b.rewards.float().sum()) for b in batches),
                           sum(float(b.truncated.sum()) for b in batches),
                           sum(float(b.traj.forward_tokens().sum()) for b in batches),
                           sum(float(b.traj.length.sum()) for b in batches),
                           sum(float(b.traj.model_factors().sum()) for b in batches),
                           sum(e[0] for e in ent), sum(e[1] for e in ent)], device)
    reward_sum, cut_sum, fwd_sum, len_sum, factor_sum, ent_sum, ent_steps = sums
    row = {"step": step + 1, "reward": reward_sum / n_rollouts, "truncated": cut_sum / n_rollouts, **upd,
           "fwd_per_token": fwd_sum / max(len_sum, 1), "length": len_sum / n_rollouts,
           "model_factors": factor_sum / n_rollouts, "seconds": time.time() - t0}
    if ent_steps:
        row["router_entropy"] = ent_sum / ent_steps
    return row


def write_metrics(path: str, rows: list[dict], append: bool = False) -> None:
    """metrics.jsonl, one JSON row per step: `rows` appended, or (append False) exactly `rows`,
    replacing the file at once (a killed run may have written steps its checkpoint lacks)."""
    if append:
        with open(path, "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        return
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(path + ".tmp", path)


def train_rl(model: Transformer, router: Router | None, task, dec: DecodeConfig, cfg: RLConfig,
             out_dir: str, quiet: bool = False) -> list[dict]:
    """Run (or resume) RL; returns the per-step metrics. Writes out_dir/{metrics.jsonl, rl.pt, rollouts.pt}
    (rollouts.pt: the rollouts of the step last checkpointed, which `python decode.py --rollouts` draws).
    Under torchrun every process calls it; only rank 0 writes."""
    device = model.embed_tokens.weight.device
    rank, world = dist_rank_world()
    groups = trainable_groups(model, router, dec, cfg)
    params = [p for grp in groups for p in grp["params"]]
    opt = make_optimizer(groups)
    ref_model = copy.deepcopy(model).requires_grad_(False) if cfg.kl_coef > 0 else None
    os.makedirs(out_dir, exist_ok=True)
    ckpt_path, metrics_path = os.path.join(out_dir, "rl.pt"), os.path.join(out_dir, "metrics.jsonl")
    start, history = resume(ckpt_path, cfg, dec, model, router, opt, ref_model)
    if rank == 0:
        write_metrics(metrics_path, history)  # exactly the checkpoint's steps
    shards = check_shards(cfg, world)
    bar = tqdm(range(start, cfg.steps), desc=f"rl {type(dec).__name__[:-6].lower()}", initial=start, total=cfg.steps,
               disable=quiet or rank > 0)
    for step in bar:
        t0 = time.time()
        batches = collect_rollouts(model, router, task, dec, cfg, step, shards, ref_model)  # rollouts, advantages
        upd = update(model, router, opt, params, batches, cfg)
        loss = upd["loss"]
        if not math.isfinite(loss):  # NaN/inf: the weights are ruined; say so instead of training on
            raise NonFiniteLoss(f"step {step + 1}: the loss is {loss} (not finite): lower --model-lr / "
                                "--router-lr / --router-entropy-coef or raise the temperatures, and start a new --out")
        row = step_metrics(step, batches, upd, cfg, t0, device)
        history.append(row)
        bar.set_postfix(reward=f"{row['reward']:.3f}")
        if rank > 0:
            continue
        write_metrics(metrics_path, [row], append=True)
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            save_checkpoint(ckpt_path, step + 1, history, cfg, dec, model, router, opt, ref_model)
            # with the checkpoint, this step's rollouts (rank 0's first slice), for `python decode.py --rollouts`
            save_pt({"step": step + 1, "task": task.name, "vocab_size": model.cfg.vocab_size,
                     "trajectory": batches[0].traj, "rewards": batches[0].rewards}, os.path.join(out_dir, "rollouts.pt"))
    return history


# ---------------------------------------------------------------------------------------------
# command line


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
    with the checkpoint's chat template (ChatML without one), --system, --instruction and
    --(no-)thinking, stopped by the checkpoint's stop ids (checkpoint.stop_ids, and ChatML's
    <|im_end|> with the fallback; the id that closes a chat turn first). Everything is checked
    (one prompt rendered) before the model loads; a ValueError says what is wrong."""
    problems = load_problems(args.data, args.strict_data, quiet)
    eval_problems = load_problems(args.eval_data, args.strict_data, quiet) if args.eval_data else None
    template = ChatTemplate.from_dir(args.model)
    switches = {}
    if args.thinking is not None:
        if not template.uses("enable_thinking"):
            raise ValueError(f"--{'' if args.thinking else 'no-'}thinking: the chat template of {args.model} has no "
                             "enable_thinking switch (Qwen3's); drop the flag")
        switches["enable_thinking"] = args.thinking
    tok = BPETokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    stops = stop_ids(args.model)  # has checked that the tokenizer's EOS, if any, is a token
    if template.source is None and "<|im_end|>" in tok.added:  # the ChatML fallback closes a turn with it
        turn_end = tok.token_id("<|im_end|>")
        stops.add(turn_end)
    else:  # a template closes a turn with the tokenizer's EOS
        eos = template.special_tokens.get("eos_token")
        turn_end = tok.token_id(eos) if eos is not None else None
    task = WordProblemTask(problems, tok, sorted(stops, key=lambda i: (i != turn_end, i)), template, args.system,
                           DEFAULT_INSTRUCTION if args.instruction is None else args.instruction, switches,
                           max_answer_len=args.max_new_tokens or 512, eval_problems=eval_problems)
    task.prompt_text(task.eval_problems[0])  # a template that refuses the conversation (e.g. a system turn) fails now
    return task


def main() -> None:
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
    import experiments.math as math_experiment
    math_experiment.add_args(ap)
    args = ap.parse_args()

    # every argument that needs no file is checked before any work (the configs check their own fields)
    check_device(args.device)
    cfg = RLConfig(**{k: getattr(args, k) for k in asdict(RLConfig())})
    check_int("--eval-size", args.eval_size, 1)
    check_int("--eval-samples", args.eval_samples, 1)
    if args.max_new_tokens is not None:
        check_int("--max-new-tokens", args.max_new_tokens, 1)
    if args.method is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("the math experiment runs its seeds in local processes; under torchrun give --method")
        if args.task != "math":
            raise ValueError("give --method cot|soft|lbr (the planning experiment is `make synthetic`)")
        # the experiment's settings are its own (experiments.math.MathSizes, chosen by `make ablations`):
        # a flag of one run would be ignored, so it is refused
        run_flags = {a.dest: a.option_strings[0] for a in ap._actions if a.option_strings and a.dest not in
                     {"help", "task", "out", "quick", "seeds", "jobs", "results", "report_only"}}
        given = [flag for dest, flag in run_flags.items() if getattr(args, dest) != ap.get_default(dest)]
        if given:
            raise ValueError(f"{', '.join(given)}: settings of one run, which the math experiment (--task math "
                             "without --method) does not take; add --method cot|soft|lbr --base ... for one run")
        math_experiment.run(args.quick, args.seeds, args.out or "out/math", args.results, args.jobs, args.report_only)
        return
    if (args.base is None) == (args.model is None) or args.out is None:
        raise ValueError("--method needs --out RUN_DIR and one of --base CHECKPOINT (from sft.py) or --model DIR")
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


if __name__ == "__main__":
    run(main)
