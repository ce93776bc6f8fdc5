"""Several processes: one RL step on 2 ranks (gloo, CPU) gives the same parameters as one
process on the whole batch, and evaluation gathers every problem."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from decode import LBRConfig
from helpers import tiny_model
from rlvr import RLConfig, evaluate, train_rl
from router import Router, RouterConfig
from test_rlvr import OneTokenTask


class TwoTokenTask(OneTokenTask):
    """Reward 1 for the answer `2 1`: rollouts of a few tokens, so that trees grow and get pruned."""
    max_answer_len = 3

    def reward(self, example, completion):
        return float(completion[:2] == [2, 1])


def run_step(out_dir: str):
    model = tiny_model(vocab=4)
    router = Router(RouterConfig(width=8), model.cfg.n_embd, 2)
    torch.nn.init.normal_(router.mlp_out.weight, std=0.5)
    cfg = RLConfig(steps=1, prompts_per_step=4, group_size=4, shards=2, epochs=2, kl_coef=0.1, model_lr=1e-2,
                   router_lr=1e-2)
    hist = train_rl(model, router, TwoTokenTask(), LBRConfig(widths=(2, 1), max_new_tokens=3), cfg, out_dir, quiet=True)
    return [p.detach().clone() for p in list(model.parameters()) + list(router.parameters())], hist


def _worker(rank: int, port: int, out_dir: str, result_path: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    params, hist = run_step(out_dir)
    task = TwoTokenTask()
    ev = evaluate(tiny_model(vocab=4), None, task, __import__("decode").CotConfig(max_new_tokens=3),
                  [task.sample(None)] * 5, 4, (1, 4), seed=0)
    if rank == 0:
        torch.save({"params": params, "hist": hist, "eval": ev}, result_path)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_ranks_equal_one_process(tmp_path):
    single, hist1 = run_step(str(tmp_path / "single"))
    result = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(free_port(), str(tmp_path / "ddp"), result), nprocs=2, join=True)
    ddp = torch.load(result)
    assert len(single) == len(ddp["params"])
    for a, b in zip(single, ddp["params"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert abs(hist1[0]["reward"] - ddp["hist"][0]["reward"]) < 1e-9  # counts gathered over both ranks
    assert set(ddp["eval"]) >= {"pass@1", "pass@4"} and 0 <= ddp["eval"]["pass@1"] <= 1
    assert os.path.exists(tmp_path / "ddp" / "rl.pt")  # rank 0 wrote the checkpoint
