"""Same seed, same numbers: every random draw, weight initialisation included, comes from the
run's seed, so two runs of the same command agree bit for bit on one machine, and an experiment
gives the same numbers whether its base model was just trained or loaded from the out/ cache.

Between the runs the global RNG is moved on (as it differs between two processes: torch seeds it
at random on start-up), so anything that still drew from it would show up here."""

import json
import os
import shutil
import sys

import pytest
import torch

from experiments import math as math_experiment
import rlvr
from experiments import synthetic
from pretrained.checkpoint import load_pt
from experiments.common import run_seeds
from model import ModelConfig
from rlvr import RLConfig, new_router
from router import RouterConfig
from sft import SFTConfig, train_sft
from tasks import get_task


@pytest.fixture(scope="module")
def planning_base(tmp_path_factory) -> str:
    """A (barely) pre-trained tiny planning model, as `sft.py --task planning` writes it."""
    task = get_task("planning")
    path = str(tmp_path_factory.mktemp("base") / "base.pt")
    train_sft(task, ModelConfig.tiny(task.tokenizer.vocab_size, n_layer=1, n_embd=16, max_seq_len=128),
              SFTConfig(steps=2, batch_size=4, eval_every=2, eval_size=4), path, torch.device("cpu"), quiet=True)
    return path


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_two_lbr_runs_with_the_same_seed_are_identical(planning_base, tmp_path, monkeypatch):
    """`python rlvr.py --method lbr ...` twice: the same metrics, evaluation and weights."""
    runs = []
    for name in ("a", "b"):
        torch.rand(1000)  # the global RNG differs between the two runs
        out = tmp_path / name
        monkeypatch.setattr(sys, "argv", ["rlvr.py", "--task", "planning", "--base", planning_base, "--method", "lbr",
                                          "--widths", "2,1", "--steps", "2", "--prompts-per-step", "2",
                                          "--group-size", "2", "--eval-size", "4", "--eval-samples", "2",
                                          "--seed", "3", "--out", str(out)])
        rlvr.main()
        with open(out / "metrics.jsonl") as f:
            metrics = without_seconds([json.loads(line) for line in f])
        with open(out / "eval.json") as f:
            evaluation = json.load(f)
        ckpt = load_pt(str(out / "rl.pt"), "RL checkpoint")
        runs.append((metrics, evaluation, ckpt["model"], ckpt["router"]))
    (m1, e1, model1, router1), (m2, e2, model2, router2) = runs
    assert len(m1) == 2 and m1 == m2 and e1 == e2
    assert model1.keys() == model2.keys() and all(torch.equal(model1[k], model2[k]) for k in model1)
    assert router1.keys() == router2.keys() and all(torch.equal(router1[k], router2[k]) for k in router1)


def test_a_fresh_router_depends_on_its_seed_alone():
    cfg = RouterConfig(width=8)
    state = torch.get_rng_state()
    a = new_router(cfg, 16, 2, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was
    torch.rand(100)
    b, c = new_router(cfg, 16, 2, seed=5), new_router(cfg, 16, 2, seed=6)
    pa, pb, pc = (list(r.parameters()) for r in (a, b, c))
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    assert any(not torch.equal(x, z) for x, z in zip(pa, pc))


TINY_SFT = SFTConfig(steps=3, batch_size=4, eval_every=3, eval_size=4)
TINY_RL = RLConfig(steps=1, prompts_per_step=2, group_size=2)
EXPERIMENTS = {
    "math": (math_experiment, math_experiment.MathSizes(sft=TINY_SFT, rl=TINY_RL, n_layer=1, n_embd=16, eval_size=2,
                                                         samples=2)),
    "synthetic": (synthetic, synthetic.Sizes(sft=TINY_SFT, rl=TINY_RL, eval_size=2, lbr_samples=2, cot_samples=2,
                                             max_depth=2)),
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_after_cached_pretraining_equals_one_right_after_training(name, tmp_path):
    """run_seed pre-trains (out/base_s0.pt) then runs every method; run again with the RL runs
    deleted and the base model cached, it gives exactly the same numbers."""
    module, sizes = EXPERIMENTS[name]
    fresh = module.run_seed(0, sizes, str(tmp_path))
    shutil.rmtree(tmp_path / "rl")  # keep only the cached base model
    assert os.path.exists(tmp_path / "base_s0.pt")
    torch.rand(1000)
    cached = module.run_seed(0, sizes, str(tmp_path))
    for r in (fresh, cached):
        del r["seconds"], r["experiment_seconds"]
    assert fresh == cached


def test_a_seed_given_twice_is_refused(tmp_path):
    with pytest.raises(ValueError, match="each seed once"):
        run_seeds(math_experiment.run_seed, [0, 0], EXPERIMENTS["math"][1], str(tmp_path), str(tmp_path / "r.json"))
    assert not os.listdir(tmp_path)  # refused before any work
