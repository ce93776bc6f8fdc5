"""
The files of an RL run directory (--out): rl.pt (everything a resumed run needs, written
atomically; `resume` refuses one made with other settings, naming each difference) and
metrics.jsonl (one row per step, exactly the checkpoint's steps after a resume; `step_metrics`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

import torch

from decode import TreeTrajectory
from pretrained.checkpoint import check_state_fits, load_pt, save_pt
from tools.distributed import all_reduce_sum


def save_checkpoint(path: str, step: int, history: list[dict], cfg, dec, model: torch.nn.Module,
                    router: torch.nn.Module | None, opt: torch.optim.Optimizer, ref_model: torch.nn.Module | None) -> None:
    """Everything a resumed run needs (rl.pt), written via a temporary file: a kill never leaves a
    half-written checkpoint."""
    state = {"rl_config": asdict(cfg), "decoding": asdict(dec), "decoding_kind": type(dec).__name__,
             "model_config": asdict(model.cfg), "model": model.state_dict(),
             "router_config": asdict(router.cfg) if router is not None else None,
             "router": router.state_dict() if router is not None else None, "optimizer": opt.state_dict(),
             "ref_model": ref_model.state_dict() if ref_model is not None else None,
             "step": step, "history": history}
    save_pt(state, path)


def resume(path: str, cfg, dec, model: torch.nn.Module, router: torch.nn.Module | None,
           opt: torch.optim.Optimizer, ref_model: torch.nn.Module | None) -> tuple[int, list[dict]]:
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
    saved = {**asdict(type(cfg)()), **ckpt["rl_config"], "steps": cfg.steps}
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
    check_state_fits(ckpt["model"], model, f"{path} was trained from a model of another shape than the --base "
                     "(or --model) given now", "give the one this run started from, or choose another --out")
    model.load_state_dict(ckpt["model"])
    if router is not None and ckpt["router"] is not None:
        router.load_state_dict(ckpt["router"])
    opt.load_state_dict(ckpt["optimizer"])
    if ref_model is not None:
        ref_model.load_state_dict(ckpt["ref_model"])
    return ckpt["step"], ckpt["history"]


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


def router_entropy(traj) -> tuple[float, int]:
    """(sum of H(π_φ(· | tree_t)) in nats over the steps taken, number of those steps) of the router
    distributions an LBR decoder sampled from (recorded in the trajectory); (0, 0) for other methods."""
    if not isinstance(traj, TreeTrajectory):
        return 0.0, 0
    taken = torch.arange(traj.choice.shape[1], device=traj.choice.device) < traj.length[:, None]  # (B, S)
    h = -(traj.router_logp.exp() * traj.router_logp).nan_to_num().sum(-1)  # (B, S, K) -> (B, S); 0·log 0 = 0
    return float(h[taken].sum()), int(taken.sum())


def step_metrics(step: int, batches: list, upd: dict[str, float], cfg, t0: float,
                 device: torch.device) -> dict:
    """The metrics row of step `step` (0-based) over all processes' rollouts: mean reward, the fraction
    truncated (cut off at max_new_tokens), loss, gradient norms (`update`), forward tokens per committed
    token, mean length, mean model factors per rollout, for lbr the mean entropy of the router per
    step (nats; log K is uniform) and, for router-only RL, the MB of router inputs kept per process."""
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
    kept = [vars(x).values() for b in batches if (x := getattr(b.traj, "router_input", None)) is not None]
    if kept:  # the memory the frozen-model replay reads instead of forwarding the union trees
        row["router_input_mb"] = sum(t.nelement() * t.element_size() for ts in kept for t in ts) / 2 ** 20
    return row
