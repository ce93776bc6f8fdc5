"""
GRPO for every decoding method (docs/DESIGN.md §6): rollouts -> advantages -> loss -> update, in a
resumable train loop. For each prompt draw G rollouts (`cot`, `soft` or `lbr`), reward 0/1 from the
task's verifier (0 for a rollout cut off at max_new_tokens), advantage = reward - group mean
(optionally / group std), and minimise

    L = -(1/B) Σ_rollouts Σ_factors min(r_f A, clip(r_f, 1-ε, 1+ε) A),   r_f = exp(log p_f - log p_f^old)

over the factors of log P(τ) (`trajectory_logprob`: a sequence's tokens; a soft step's K draws; an
LBR tree's node births and router choices). On the first epoch r_f = 1 and the gradient is exactly
the likelihood-ratio gradient -(1/B) Σ A ∇ log P(τ). Options: PPO epochs with dual clip, a KL
penalty to the initial model, DAPO's overlong filtering, --freeze-model / --freeze-router.

    python rlvr.py --task planning --base out/planning/base_s0.pt --method lbr --widths 4,1,1 --out out/rl/lbr
    python rlvr.py --task math [--quick]      # the math experiment -> results/math.md
    python rlvr.py --help                     # every option (the command line is tools/rl_cli.py)
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from decode import CotConfig, LBRConfig, TreeTrajectory
from evaluate import DecodeConfig, Trajectory, generate, rewards_of, truncated
from likelihood import LogProbFactors, frozen_model_logprob, sequence_logprob, tree_logprob
from model import Transformer, autocast
from pretrained.checkpoint import save_pt
from router import Router, RouterConfig
from soft import SoftConfig, SoftTrajectory, soft_logprob
from tasks.common import Seeds, make_examples
from tools.cli import run
from tools.distributed import all_reduce_grads, all_reduce_sum, dist_rank_world
from tools.runs import resume, save_checkpoint, step_metrics, write_metrics
from tree import TreeShape


class NonFiniteLoss(ValueError):
    """The RL loss became NaN or inf: the weights are ruined (a learning rate too high for the
    configuration). A ValueError (the CLI prints one line); experiments/ablations.py catches it by this name."""


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
    model_layers: int = 0  # train only the model's last N blocks (0: all of it)
    freeze_router: bool = False  # train the model only
    grad_clip: float = 1.0  # max gradient norm
    seed: int = 0  # prompts and sampling of every step derive from (seed, step)
    save_every: int = 10  # steps between checkpoints (and at the end)
    shards: int = 0  # rollout slices per step, each with its own generator (0: one per process; see train_rl)


def trajectory_logprob(model: Transformer, router: Router | None, traj: Trajectory) -> LogProbFactors:
    """Every factor of log P(τ) under the current parameters, for the trajectory of any method: the
    one function that picks between the replays (likelihood.py, soft.py)."""
    if isinstance(traj, TreeTrajectory):
        if traj.router_input is not None and not any(p.requires_grad for p in model.parameters()):
            return frozen_model_logprob(router, traj)  # router-only RL: the recorded features, no model forward
        return tree_logprob(model, router, traj)
    if isinstance(traj, SoftTrajectory):
        logp, mask = soft_logprob(model, traj).flatten(1), traj.active.flatten(1)
    else:
        logp = sequence_logprob(model, traj)
        mask = torch.arange(logp.shape[1], device=logp.device) < traj.length[:, None]
    return LogProbFactors.without_router(logp, mask)


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
# the pieces of one update


def grpo_advantages(rewards: Tensor, normalize_std: bool) -> Tensor:
    """rewards (P, G), G rollouts of each of P prompts -> advantages (P*G,): each reward minus its
    group's mean, optionally / (group std + 1e-6); GRPO (Shao et al. 2024, "DeepSeekMath", §4.1.2).
    ValueError for G < 2 (a group of one is its own baseline), empty or non-finite rewards.

    A group whose rewards are equal up to rounding gets advantages exactly 0: the float mean of G
    rewards is off by up to (G - 1) u Σ|r| / G < G eps max|r| (recursive summation, u = eps / 2),
    and dividing that error by a std of ~0 would make it a full-size advantage."""
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


def policy_loss(new: LogProbFactors, old_logp: Tensor, adv: Tensor, clip_eps: float, n_rollouts: int | None = None,
                dual_clip: float = 3.0) -> Tensor:
    """PPO-clipped likelihood-ratio loss over every factor (the module's L), normalised by the number
    of rollouts B of the whole step (`n_rollouts`; default: these rollouts; a constant, never a length).
    Dual clip (Ye et al. 2020; verl's clip_ratio_c = 3): for A < 0 the PPO term is r A for r >= 1 - ε,
    unbounded as r grows, so it is bounded below by c A (a factor past r = c gets no gradient).
    """
    ratio = torch.exp(new.logp - old_logp)
    a = adv[:, None]
    objective = torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    objective = torch.where(a < 0, torch.maximum(objective, dual_clip * a), objective)
    return -(objective * new.mask).sum() / (n_rollouts or len(adv))


def factors_per_token(dec: DecodeConfig) -> int:
    """Factors of log P(τ) per committed token, a constant of the method (RLConfig.factor_norm divides
    the loss by it): `cot` 1, `soft` K, `lbr` the nodes a step refills (all but the kept subtree:
    widths (4, 1) give 9 - 2 = 7) + the router's choice."""
    if isinstance(dec, LBRConfig):
        shape = TreeShape.from_widths(dec.widths)
        return shape.n_slots - shape.subtree.shape[1] + 1
    if isinstance(dec, SoftConfig):
        return dec.k
    return 1


def kl_penalty(new: LogProbFactors, ref_logp: Tensor, n_rollouts: int | None = None) -> Tensor:
    """k3 estimate of KL(current || reference) summed over the model's sampled factors, per rollout:
    e^d - d - 1 with d = log p_ref - log p (Schulman 2020, "Approximating KL divergence"), d clamped to
    [-20, 20] as verl's 'low_var_kl' and OpenRLHF's 'k3' (e^d overflows float32 at d = 89)."""
    d = (ref_logp - new.logp).clamp(-20.0, 20.0)
    k3 = torch.exp(d) - d - 1
    return (k3 * (new.mask & new.is_model_factor)).sum() / (n_rollouts or new.logp.shape[0])


# ---------------------------------------------------------------------------------------------
# the loop: collect rollouts -> advantages -> update, with checkpoints


@dataclass
class RolloutBatch:
    """One shard of an RL step: its rollouts and what the update needs of them."""
    traj: Trajectory  # G rollouts of each of the shard's prompts, prompt after prompt
    rewards: Tensor  # (n,) 0/1 reward of each rollout
    truncated: Tensor  # (n,) bool: cut off at max_new_tokens without a stop id (reward 0; evaluate.truncated)
    adv: Tensor  # (n,) GRPO advantage of each rollout
    ref_logp: Tensor | None  # (n, F) its factors under the reference model (KL penalty); None without one


def trainable_groups(model: Transformer, router: Router | None, dec: DecodeConfig, cfg: RLConfig) -> list[dict]:
    """The optimiser's parameter groups (model, router), each with its learning rate; freezes the
    rest (requires_grad False: --freeze-model, the blocks before the last --model-layers, --freeze-router,
    the router of a method without one).
    Raises ValueError when nothing is left to train."""
    train_router = isinstance(dec, LBRConfig) and not cfg.freeze_router
    if cfg.model_layers > len(model.layers):
        raise ValueError(f"model_layers={cfg.model_layers}: the model has {len(model.layers)} blocks")
    model.requires_grad_(not cfg.freeze_model and not cfg.model_layers)
    if cfg.model_layers and not cfg.freeze_model:
        model.layers[-cfg.model_layers:].requires_grad_(True)
    if router is not None:
        router.requires_grad_(train_router)
    trained = [p for p in model.parameters() if p.requires_grad]
    groups = ([{"params": trained, "lr": cfg.model_lr}] if trained else []) + \
             ([{"params": list(router.parameters()), "lr": cfg.router_lr}] if train_router else [])
    if not groups:
        raise ValueError("nothing to train: unfreeze the model or (for lbr) the router")
    return groups


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
        traj = generate(model, router, [e.prompt for e in part for _ in range(G)], dec, task.stop_ids, g,
                        keep_router_input=cfg.freeze_model)  # a frozen model's features: the replay reads them
        rewards = rewards_of(task, part, traj, G).to(device)  # 0 for a truncated rollout
        adv = grpo_advantages(rewards.view(len(part), G).float(), cfg.normalize_std)
        ref_logp = None
        if ref_model is not None:
            with torch.no_grad(), autocast(device):
                ref_logp = trajectory_logprob(ref_model, router, traj).logp
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
                new = trajectory_logprob(model, router, b.traj)
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


def train_rl(model: Transformer, router: Router | None, task, dec: DecodeConfig, cfg: RLConfig,
             out_dir: str, quiet: bool = False) -> list[dict]:
    """Run (or resume) RL; returns the per-step metrics. Writes out_dir/{metrics.jsonl, rl.pt, rollouts.pt}
    (rollouts.pt: the rollouts of the step last checkpointed, which `python -m tools.trace_view --rollouts` draws).
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
    shards = cfg.shards or world  # rollout slices per step; every process takes as many whole ones
    if shards % world or cfg.prompts_per_step % shards:
        raise ValueError(f"shards={shards} must be a multiple of the {world} processes and divide "
                         f"prompts_per_step={cfg.prompts_per_step}; set --shards")
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
            # with the checkpoint, this step's rollouts (rank 0's first slice), for `python -m tools.trace_view --rollouts`
            save_pt({"step": step + 1, "task": task.name, "vocab_size": model.cfg.vocab_size,
                     "trajectory": batches[0].traj, "rewards": batches[0].rewards}, os.path.join(out_dir, "rollouts.pt"))
    return history


# ---------------------------------------------------------------------------------------------
# command line


def main() -> None:
    """`python rlvr.py ...`: the command line, in tools/rl_cli.py (argument checks, real-checkpoint
    set-up, run provenance), imported here, at the entry point, because it sits above GRPO."""
    from tools.rl_cli import main as cli_main
    cli_main()


if __name__ == "__main__":
    run(main)
