"""RL: Pass@k, the GRPO loss's sign and normalisation, one update raising E[R], resume = no interruption."""

import itertools
import json
import math
import os
import subprocess
import sys
import types

import pytest
import torch

import evaluate as evaluate_module
from pretrained.checkpoint import load_pt
from decode import CotConfig, LBRConfig, SequenceTrajectory
from evaluate import truncated
from soft import SoftConfig
from evaluate import evaluate, pass_at_k, rewards_of
from helpers import assert_close_to_scale, tiny_model
from likelihood import LogProbFactors
from rlvr import trajectory_logprob
from rlvr import (RLConfig, collect_rollouts, grpo_advantages, kl_penalty, policy_loss, train_rl, trainable_groups,
                  update)
from router import Router, RouterConfig
from tasks.common import Example, Seeds


@pytest.mark.parametrize("n", [1, 3, 6, 8])
def test_pass_at_k_equals_brute_force(n):
    for c in range(n + 1):
        outcomes = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(outcomes, k))
            assert abs(pass_at_k(n, c, k) - sum(max(s) for s in subsets) / len(subsets)) < 1e-12


def test_grpo_advantages():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert grpo_advantages(r, False).tolist() == [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]
    assert_close_to_scale(grpo_advantages(r, True)[:4], torch.tensor([1.0, -1.0, -1.0, 1.0]) * 0.5 / r[0].std(), 1e-5)


@pytest.mark.parametrize("value", [0.7, 0.1, 1 / 3, -2.9, 1e-8, 123.456])
@pytest.mark.parametrize("normalize_std", [False, True])
def test_equal_rewards_give_exactly_zero_advantage(value, normalize_std):
    """Eight equal non-dyadic rewards: their float32 mean is not exactly the value, and dividing that
    rounding error by a ~0 std used to give advantages of 0.056 (value 0.7). No preference: exactly 0,
    while the other group keeps its advantages."""
    r = torch.tensor([[value] * 8, [value] * 4 + [value + 1] * 4])
    adv = grpo_advantages(r, normalize_std)
    assert adv[:8].tolist() == [0.0] * 8
    expected = torch.tensor([-0.5] * 4 + [0.5] * 4) / (r[1].std() + 1e-6 if normalize_std else 1)
    torch.testing.assert_close(adv[8:], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("rewards,match", [
    (torch.tensor([[1.0], [0.0]]), "group size 1"),  # one rollout per prompt: no baseline, std NaN
    (torch.tensor([[1.0, float("nan")]]), "finite"),
    (torch.zeros(0, 4), "non-empty"),
])
def test_grpo_advantages_refuse_groups_without_a_baseline(rewards, match):
    for normalize_std in (False, True):
        with pytest.raises(ValueError, match=match):
            grpo_advantages(rewards, normalize_std)


@pytest.mark.parametrize("field,value", [("group_size", 1), ("group_size", 0), ("steps", 0), ("epochs", 0),
                                         ("save_every", 0), ("prompts_per_step", 0), ("model_lr", float("nan")),
                                         ("router_lr", 0.0), ("model_lr", float("inf")), ("clip_eps", -0.1),
                                         ("grad_clip", float("nan")), ("kl_coef", -1.0), ("shards", 3)])
def test_rl_config_refuses_bad_values(field, value):
    """Each of these used to train to NaN weights, divide by zero or crash mid-run (shards=3 does not
    divide the 16 prompts of a step)."""
    from tools.rl_cli import check_rl_config
    with pytest.raises(ValueError, match=field):
        check_rl_config(RLConfig(**{field: value}))


def test_policy_loss_sign_and_normalisation():
    """The first-epoch gradient is -(1/B) Σ A ∇log P: a per-rollout constant, not divided by length."""
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv = torch.tensor([1.0, -1.0])
    loss = policy_loss(LogProbFactors.without_router(logp * mask, mask), (logp * mask).detach(), adv, clip_eps=0.2)
    loss.backward()
    assert logp.grad.tolist() == [[-0.5, -0.5, 0.0], [0.5, 0.0, 0.0]]
    # PPO clipping: a factor whose ratio already exceeds 1+ε gets no more push when A > 0
    new = torch.tensor([[0.0, -2.0]], requires_grad=True)
    m = torch.ones(1, 2, dtype=torch.bool)
    policy_loss(LogProbFactors.without_router(new, m), torch.tensor([[-1.0, -2.0]]), torch.tensor([1.0]), clip_eps=0.2).backward()
    assert new.grad[0, 0] == 0 and new.grad[0, 1] < 0


class OneTokenTask:
    """Reward 1 for a completion that starts with token 2; 3 is the stop id, so a rollout that
    does not end with it is cut off (reward 0 whatever it says). test_ddp.TwoTokenTask builds on it."""
    name, eos_id, stop_ids, max_answer_len = "one-token", 3, (3,), 1

    def sample(self, rng, split="train"):
        return Example(prompt=[0, 1], answer=[2])

    def reward(self, example, completion):
        return float(completion[:1] == [2])

    def difficulty(self, example):
        return "easy"


class AnswerTokenTask(OneTokenTask):
    """One-token answers that end the rollout: 2 (reward 1) and 3 are stop ids, so a rollout of
    max_new_tokens=1 is finished when it says 2 or 3 and cut off (reward 0) when it says 0 or 1:
    E[R] = p(2 | prompt) exactly."""
    stop_ids = (2, 3)


@pytest.mark.parametrize("dec", [CotConfig(max_new_tokens=1), SoftConfig(k=3, max_new_tokens=1)])
def test_one_grpo_step_raises_expected_reward(tmp_path, dec):
    """E[R] = p(2 | prompt) for cot and for soft (slot 0 is the committed token; the other draws'
    terms are independent of the reward, so they add noise but no bias)."""
    model = tiny_model(vocab=4)
    with torch.no_grad():
        before = model(torch.tensor([[0, 1]]))[0][0, -1].softmax(-1)[2].item()
    cfg = RLConfig(steps=1, prompts_per_step=1, group_size=256, model_lr=3e-3)
    train_rl(model, None, AnswerTokenTask(), dec, cfg, str(tmp_path), quiet=True)
    with torch.no_grad():
        after = model(torch.tensor([[0, 1]]))[0][0, -1].softmax(-1)[2].item()
    assert after > before + 1e-3


def test_evaluate_reports_pass_at_k_by_difficulty():
    model = tiny_model(vocab=4)
    with torch.no_grad():
        p2 = model(torch.tensor([[0, 1]]))[0][0, -1].softmax(-1)[2].item()
    task = AnswerTokenTask()
    out = evaluate(model, None, task, CotConfig(max_new_tokens=1), [task.sample(None)] * 50, 40, (1, 4, 40), seed=0)
    assert set(out) >= {"pass@1", "pass@4", "pass@40", "majority@1", "majority@40", "fwd_per_token",
                        "pass@1_easy", "pass@40_easy"}
    assert out["pass@1"] == out["pass@1_easy"] and out["pass@1"] <= out["pass@4"] <= out["pass@40"]
    assert abs(out["pass@1"] - p2) < 4 * (p2 * (1 - p2) / 2000) ** 0.5  # 2000 samples of a Bernoulli(p2)


def test_lbr_step_trains_model_and_router_jointly(tmp_path):
    model = tiny_model(vocab=4)
    router = Router(RouterConfig(width=8), model.cfg.n_embd, 2)
    m0 = [p.detach().clone() for p in model.parameters()]
    r0 = [p.detach().clone() for p in router.parameters()]
    cfg = RLConfig(steps=2, prompts_per_step=2, group_size=8, router_lr=1e-2)
    hist = train_rl(model, router, AnswerTokenTask(), LBRConfig(widths=(2, 1), max_new_tokens=1), cfg, str(tmp_path),
                    quiet=True)
    # 2 candidates per tree, plus a continuation of each that is no stop id
    assert len(hist) == 2 and all(h["fwd_per_token"] >= 2 for h in hist) and any(h["fwd_per_token"] > 2 for h in hist)
    assert any((p - q).abs().max() > 0 for p, q in zip(model.parameters(), m0))
    assert any((p - q).abs().max() > 0 for p, q in zip(router.parameters(), r0))


def test_model_layers_trains_the_last_blocks_only(tmp_path):
    """--model-layers 1: one RL step moves the last block and nothing else of the model; more
    blocks than the model has is refused."""
    model = tiny_model(vocab=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    last = f"layers.{len(model.layers) - 1}."
    train_rl(model, None, AnswerTokenTask(), CotConfig(max_new_tokens=1),
             RLConfig(steps=1, prompts_per_step=1, group_size=64, model_lr=3e-3, model_layers=1), str(tmp_path), quiet=True)
    moved = {n for n, p in model.named_parameters() if (p - before[n]).abs().max() > 0}
    assert moved and all(n.startswith(last) for n in moved), moved
    from tools.rl_cli import check_rl_config
    with pytest.raises(ValueError, match="model_layers"):
        check_rl_config(RLConfig(model_layers=-1))
    with pytest.raises(ValueError, match="blocks"):
        trainable_groups(model, None, CotConfig(), RLConfig(model_layers=len(model.layers) + 1))


def test_resume_gives_the_same_next_step(tmp_path):
    """Two steps straight = one step, stop, resume for the second (optimizer state, KL reference and
    per-step seeds all come back), with PPO epochs and a KL term in play."""
    def run(out, steps):
        model = tiny_model(vocab=4)
        router = Router(RouterConfig(width=8), model.cfg.n_embd, 2)
        cfg = RLConfig(steps=steps, prompts_per_step=2, group_size=4, save_every=1, kl_coef=0.1, epochs=2)
        train_rl(model, router, AnswerTokenTask(), LBRConfig(widths=(2, 1), max_new_tokens=2), cfg, out, quiet=True)
        return list(model.parameters()) + list(router.parameters())
    straight = run(str(tmp_path / "a"), 2)
    run(str(tmp_path / "b"), 1)
    resumed = run(str(tmp_path / "b"), 2)
    assert all(torch.equal(p, q) for p, q in zip(straight, resumed))
    with pytest.raises(ValueError, match="other settings"):
        train_rl(tiny_model(vocab=4), None, AnswerTokenTask(), CotConfig(max_new_tokens=1), RLConfig(steps=3),
                 str(tmp_path / "b"), quiet=True)


def test_finished_run_refuses_fewer_steps(tmp_path):
    """A 2-step run re-run with steps=1 used to return (and the CLI evaluate) the 2-step model as if
    it were the 1-step one; it is refused, and nothing in the run directory changes."""
    task, dec = AnswerTokenTask(), CotConfig(max_new_tokens=1)
    train_rl(tiny_model(vocab=4), None, task, dec, RLConfig(steps=2, prompts_per_step=1, group_size=2), str(tmp_path),
             quiet=True)
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="already trained 2 steps"):
        train_rl(tiny_model(vocab=4), None, task, dec, RLConfig(steps=1, prompts_per_step=1, group_size=2),
                 str(tmp_path), quiet=True)
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before
    hist = train_rl(tiny_model(vocab=4), None, task, dec, RLConfig(steps=2, prompts_per_step=1, group_size=2),
                    str(tmp_path), quiet=True)  # the same steps: the finished run, nothing retrained
    assert len(hist) == 2


def test_seeds_are_the_numbers_results_were_made_with_and_never_collide():
    """Seeds replaced inline constants: the same numbers (the results in results/ depend on them),
    and no two (step, shard) streams of one run, nor of two runs' seeds, share a seed."""
    s = Seeds(3)
    assert (s.train_step(5), s.train_step(5, shard=2)) == (3 * 1_000_003 + 5, 3 * 1_000_003 + 5 + 2 * 1_000_000_007)
    assert (s.eval_examples, s.experiment_eval_examples, s.eval_sampling(0), s.eval_sampling(2)) == (
        10_003, 20_003, 3, 3 + 2 * 7919)
    seen = [Seeds(seed).train_step(step, shard) for seed in (0, 1, 2, 998) for step in (0, 1, 79, 1_000_002)
            for shard in range(4)]
    assert len(set(seen)) == len(seen)


def test_resume_refuses_another_router_and_stops_on_a_non_finite_loss(tmp_path):
    """A run resumed with other router features trained a subtree router as a `root` one, silently;
    a learning rate of 1e30 trained to NaN weights and exited 0."""
    import pytest as _pytest
    from decode import LBRConfig
    from helpers import tiny_model
    from router import RouterConfig
    from rlvr import new_router
    task = AnswerTokenTask()
    dec = LBRConfig(widths=(2, 1), max_new_tokens=task.max_answer_len)
    cfg = RLConfig(steps=1, prompts_per_step=2, group_size=2)
    model = tiny_model(vocab=4)
    train_rl(model, new_router(RouterConfig(features="subtree", width=8), model.cfg.n_embd, 2, 0), task, dec, cfg,
             str(tmp_path / "a"), quiet=True)
    with _pytest.raises(ValueError, match="router .*'subtree'.* there, .*'root'.* now"):
        train_rl(tiny_model(vocab=4), new_router(RouterConfig(features="root", width=8), model.cfg.n_embd, 2, 0),
                 task, dec, RLConfig(steps=2, prompts_per_step=2, group_size=2), str(tmp_path / "a"), quiet=True)
    with _pytest.raises(ValueError, match="not finite"):
        train_rl(tiny_model(vocab=4), new_router(RouterConfig(width=8), model.cfg.n_embd, 2, 0), task, dec,
                 RLConfig(steps=4, prompts_per_step=2, group_size=2, model_lr=1e30, router_lr=1e30),
                 str(tmp_path / "b"), quiet=True)


# ------------------------------------------------------------------------------------ truncated rollouts


def _fake_trajectory(completions: list[list[int]]):
    """What rewards_of, truncated and evaluate read of a trajectory: completions padded with 0, lengths."""
    T = max(map(len, completions))
    return types.SimpleNamespace(completion=torch.tensor([c + [0] * (T - len(c)) for c in completions]),
                                 length=torch.tensor([len(c) for c in completions]),
                                 forward_tokens=lambda: torch.tensor([len(c) - 1 for c in completions]))


def test_a_rollout_cut_off_at_max_new_tokens_gets_reward_zero():
    """OneTokenTask rewards a completion starting with 2; `2 1` ran into max_new_tokens = 2 without
    its stop id 3 and used to score 1. `3` and `2 3` are finished (a stop id ends them)."""
    task = OneTokenTask()
    traj = _fake_trajectory([[2, 3], [2, 1], [3], [1, 1]])
    assert truncated(traj, task.stop_ids).tolist() == [False, True, False, True]
    assert rewards_of(task, [task.sample(None)], traj, 4).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_evaluate_reports_the_truncated_fraction_and_refuses_k_above_n(monkeypatch):
    task = OneTokenTask()
    monkeypatch.setattr(evaluate_module, "generate", lambda *a: _fake_trajectory([[2, 3], [2, 1], [3], [1, 1]]))
    model = types.SimpleNamespace(embed_tokens=types.SimpleNamespace(weight=torch.zeros(1)))
    out = evaluate(model, None, task, None, [task.sample(None)], 4, (1, 4), seed=0)
    assert out["truncated"] == 0.5 and out["correct"] == [1] and out["pass@1"] == 0.25
    with pytest.raises(ValueError, match=r"Pass@32 .*n=16"):  # Pass@32 used to be dropped silently
        evaluate(model, None, task, None, [task.sample(None)], 16, (1, 32), seed=0)


def test_metrics_count_truncated_rollouts_and_overlong_filter_leaves_them_out_of_the_loss(tmp_path):
    """Token 3 (the stop id) is rewarded; any other one-token rollout is cut off (reward 0). The
    step's metrics row gives the fraction cut off. With overlong_filter the gradient is that of
    the finished rollouts alone: equal to the gradient with the cut-off rollouts' advantages set
    to 0 and their KL term made 0 (reference = current log-probability: k3 has zero gradient at 0)."""
    class StopIsRight(OneTokenTask):
        def reward(self, example, completion):
            return float(completion[:1] == [3])

    task, dec = StopIsRight(), CotConfig(max_new_tokens=1)
    hist = train_rl(tiny_model(vocab=4), None, task, dec, RLConfig(steps=1, prompts_per_step=2, group_size=8),
                    str(tmp_path), quiet=True)
    saved = load_pt(str(tmp_path / "rollouts.pt"), "rollouts", kinds=(SequenceTrajectory,))
    cut = saved["trajectory"].completion[:, 0] != 3
    assert 0 < cut.sum() < 16 and hist[0]["truncated"] == float(cut.float().mean())
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["truncated"] == hist[0]["truncated"]

    def grads(filtered: bool, zero_cut: bool):
        model = tiny_model(vocab=4)
        cfg = RLConfig(steps=1, prompts_per_step=2, group_size=8, kl_coef=0.5, overlong_filter=filtered, grad_clip=1e9)
        batches = collect_rollouts(model, None, task, dec, cfg, 0, 1, None)
        b = batches[0]
        with torch.no_grad():
            ref = trajectory_logprob(model, None, b.traj).logp - 0.3  # a reference the current model differs from
        assert b.truncated.any() and (b.adv[b.truncated] != 0).any()  # cut-off rollouts the loss would read
        if zero_cut:
            ref = torch.where(b.truncated[:, None], ref + 0.3, ref)
            b.adv = torch.where(b.truncated, 0.0, b.adv)
        b.ref_logp = ref
        groups = [{**g, "lr": 0.0} for g in trainable_groups(model, None, dec, cfg)]
        params = [p for g in groups for p in g["params"]]
        update(model, None, torch.optim.SGD(groups), params, batches, cfg)
        return torch.cat([p.grad.flatten() for p in params])

    filtered, reference, unfiltered = grads(True, False), grads(False, True), grads(False, False)
    assert_close_to_scale(filtered, reference, 1e-5)
    assert (filtered - unfiltered).abs().max() > 0.1 * unfiltered.abs().max()  # the cut-off rollouts did count


# ------------------------------------------------------------------------------------ bounded losses


def test_kl_penalty_clamps_the_log_ratio():
    """A log-ratio d = log p_ref - log p of +100 made e^d = inf: an infinite loss and gradient.
    Clamped to [-20, 20]: k3 = e^20 - 21 at +100 and e^-20 + 19 at -100, both without gradient;
    inside the range (d = 1) it is e - 2 with gradient -(e - 1) as before."""
    logp = torch.zeros(1, 3, requires_grad=True)
    new = LogProbFactors.without_router(logp, torch.ones(1, 3, dtype=torch.bool))
    loss = kl_penalty(new, torch.tensor([[100.0, -100.0, 1.0]]))
    loss.backward()
    expected = (math.exp(20) - 21) + (math.exp(-20) + 19) + (math.e - 2)
    assert math.isfinite(loss.item()) and math.isclose(loss.item(), expected, rel_tol=1e-6)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0, -(math.e - 1)]]), rtol=1e-6, atol=0)


def test_dual_clip_bounds_the_loss_of_a_negative_advantage():
    """A = -1 and log-ratios 8 and log 2: PPO's min(r A, clip(r) A) = r A is -2981 and -2, a loss of
    e^8 + 2 = 2983. The dual clip bounds each factor's loss by c |A| = 3: 3 + 2 = 5, the first
    factor (r > c) without gradient, the second (r = 2 < c) with gradient r = 2 as before. A > 0
    is untouched (its ratio is clipped at 1 + ε already)."""
    logp = torch.tensor([[8.0, math.log(2.0)]], requires_grad=True)
    new = LogProbFactors.without_router(logp, torch.ones(1, 2, dtype=torch.bool))
    old = torch.zeros(1, 2)
    unbounded = policy_loss(new, old, torch.tensor([-1.0]), clip_eps=0.2, dual_clip=1e30)
    assert math.isclose(unbounded.item(), math.exp(8) + 2, rel_tol=1e-6)
    loss = policy_loss(new, old, torch.tensor([-1.0]), clip_eps=0.2)  # c = 3 by default
    loss.backward()
    assert math.isclose(loss.item(), 5.0, rel_tol=1e-6)
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 2.0]]), rtol=1e-6, atol=0)
    assert math.isclose(policy_loss(new, old, torch.tensor([1.0]), clip_eps=0.2).item(), -2.4, rel_tol=1e-6)
    from tools.rl_cli import check_rl_config
    with pytest.raises(ValueError, match="dual_clip"):
        check_rl_config(RLConfig(dual_clip=1.0))


@pytest.mark.parametrize("normalize_std", [False, True])
def test_rewards_within_float_rounding_tie(normalize_std):
    """Rewards one ulp apart (100 and the next float32) are no preference: advantages exactly 0
    (normalised by their std of ~4e-6 they were 0, 1.06, 0, 1.06). 64 ulps apart is a preference
    (above G eps max|r| = 4 x 1.19e-7 x 100 = 4.8e-5): r - mean = ±32 ulps, exactly in float32."""
    ulp = torch.nextafter(torch.tensor(100.0), torch.tensor(200.0)) - 100.0
    one = torch.tensor([[100.0, 100.0 + ulp, 100.0, 100.0 + ulp]])
    assert grpo_advantages(one, normalize_std).tolist() == [0.0] * 4
    far = torch.tensor([[100.0, 100.0 + 64 * ulp, 100.0, 100.0 + 64 * ulp]])
    adv = grpo_advantages(far, normalize_std)
    expected = torch.tensor([-1.0, 1.0, -1.0, 1.0]) * 32 * ulp
    if normalize_std:
        expected = expected / (far.std() + 1e-6)
    assert_close_to_scale(adv, expected, 1e-5)


# ------------------------------------------------------------------------------------ the command line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("method,flag", [("cot", "--greedy"), ("lbr", "--greedy-router")])
def test_greedy_decoding_is_refused_for_training(tmp_path, method, flag):
    """An argmax choice has no sampling probability, so RL on it trains on a wrong likelihood; the
    flags used to be accepted without --eval-only. One line, exit 2, no traceback, nothing written."""
    out = tmp_path / "run"
    run = subprocess.run([sys.executable, "rlvr.py", "--task", "planning", "--base", str(tmp_path / "base.pt"),
                          "--method", method, flag, "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and f"{flag}:" in run.stderr and "--eval-only" in run.stderr
    assert not out.exists()
