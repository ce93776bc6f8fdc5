"""
Devices and several processes (torchrun): which device a command runs on, this process's rank,
and the sums over processes that make a step on N processes the step of one (each process takes a
share of the prompts; gradients and counts are summed).

    torchrun --nproc_per_node=2 rlvr.py --task planning --base ... --method lbr --out ...
"""

from __future__ import annotations

import os

import torch
from torch import Tensor


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA if present, then Apple MPS, else CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
