"""Several processes: one RL step on 2 ranks (gloo, CPU) makes the same update as one process on
the whole batch, and evaluation gathers every problem.

What the math fixes is the step's gradient, not Adam's output: Adam's first step divides each
gradient by its own magnitude, so a parameter whose true gradient is zero (its computed gradient
is rounding noise, different for a sum split over two processes) takes a full-size step of
arbitrary sign. Both sides therefore train with SGD (rlvr.make_optimizer swapped), where the
update is the learning rate times the gradient, both with one thread, and the updates are
compared with a tolerance relative to their size. Two PPO epochs and a KL term are in play, so
the second epoch's gradient (ratios != 1, KL != 0) is compared too."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import rlvr
from decode import CotConfig, LBRConfig
from helpers import tiny_model
from evaluate import evaluate
from rlvr import RLConfig, train_rl
from router import Router, RouterConfig
from test_rlvr import OneTokenTask


class TwoTokenTask(OneTokenTask):
    """Reward 1 for the answer `2 1`: rollouts of a few tokens, so that trees grow and get pruned."""
    max_answer_len = 3

    def reward(self, example, completion):
        return float(completion[:2] == [2, 1])


def sgd(groups: list[dict]) -> torch.optim.Optimizer:
    """Plain gradient steps with each group's learning rate: update = -lr x gradient."""
    return torch.optim.SGD(groups)


def run_step(out_dir: str) -> tuple[list[torch.Tensor], list[torch.Tensor], list[dict]]:
    """(parameters before, parameters after, metrics) of one RL step with SGD, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = tiny_model(vocab=4)
        router = Router(RouterConfig(width=8), model.cfg.n_embd, 2)
        torch.nn.init.normal_(router.mlp_out.weight, std=0.5)
        params = list(model.parameters()) + list(router.parameters())
        before = [p.detach().clone() for p in params]
        cfg = RLConfig(steps=1, prompts_per_step=4, group_size=4, shards=2, epochs=2, kl_coef=0.1, model_lr=1e-2,
                       router_lr=1e-2)
        hist = train_rl(model, router, TwoTokenTask(), LBRConfig(widths=(2, 1), max_new_tokens=3), cfg, out_dir,
                        quiet=True)
    finally:
        torch.set_num_threads(threads)
    return before, [p.detach().clone() for p in params], hist


def _worker(rank: int, port: int, out_dir: str, result_path: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    rlvr.make_optimizer = sgd  # a spawned process of its own: set here as the test sets it
    before, after, hist = run_step(out_dir)
    task = TwoTokenTask()
    ev = evaluate(tiny_model(vocab=4), None, task, CotConfig(max_new_tokens=3), [task.sample(None)] * 5, 4, (1, 4),
                  seed=0)
    if rank == 0:
        torch.save({"before": before, "after": after, "hist": hist, "eval": ev}, result_path)
    dist.barrier()  # both ranks are done before either tears down the process group
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_ranks_equal_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(rlvr, "make_optimizer", sgd)
    before, single, hist1 = run_step(str(tmp_path / "single"))
    result = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(free_port(), str(tmp_path / "ddp"), result), nprocs=2, join=True)
    ddp = torch.load(result, weights_only=True)
    assert len(single) == len(ddp["after"])
    for a, b in zip(before, ddp["before"]):
        assert torch.equal(a, b)  # the same start
    updates = [a - b for a, b in zip(single, before)]
    scale = max(float(u.abs().max()) for u in updates)
    assert scale > 1e-4  # the step moved the parameters
    for u, a, b in zip(updates, ddp["after"], ddp["before"]):
        # rounding differs with how the sums are split: ~1e-7 of the update; a wrong share of the
        # batch or a missing all-reduce is off by a factor
        torch.testing.assert_close(a - b, u, atol=1e-4 * scale, rtol=1e-3)
    assert abs(hist1[0]["reward"] - ddp["hist"][0]["reward"]) < 1e-9  # counts gathered over both ranks
    assert abs(hist1[0]["loss"] - ddp["hist"][0]["loss"]) < 1e-5 * max(1.0, abs(hist1[0]["loss"]))
    assert set(ddp["eval"]) >= {"pass@1", "pass@4"} and 0 <= ddp["eval"]["pass@1"] <= 1
    assert os.path.exists(tmp_path / "ddp" / "rl.pt")  # rank 0 wrote the checkpoint
