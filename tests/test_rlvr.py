"""RL: Pass@k, the GRPO loss's sign and normalisation, one update raising E[R], resume = no interruption."""

import itertools

import pytest
import torch

from decode import CotConfig, LBRConfig, SoftConfig
from evaluate import evaluate, pass_at_k
from helpers import assert_close_to_scale, tiny_model
from likelihood import Factors
from rlvr import RLConfig, grpo_advantages, policy_loss, train_rl
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
    with pytest.raises(ValueError, match=field):
        RLConfig(**{field: value})


def test_policy_loss_sign_and_normalisation():
    """The first-epoch gradient is -(1/B) Σ A ∇log P: a per-rollout constant, not divided by length."""
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv = torch.tensor([1.0, -1.0])
    loss = policy_loss(Factors.without_router(logp * mask, mask), (logp * mask).detach(), adv, clip_eps=0.2)
    loss.backward()
    assert logp.grad.tolist() == [[-0.5, -0.5, 0.0], [0.5, 0.0, 0.0]]
    # PPO clipping: a factor whose ratio already exceeds 1+ε gets no more push when A > 0
    new = torch.tensor([[0.0, -2.0]], requires_grad=True)
    m = torch.ones(1, 2, dtype=torch.bool)
    policy_loss(Factors.without_router(new, m), torch.tensor([[-1.0, -2.0]]), torch.tensor([1.0]), clip_eps=0.2).backward()
    assert new.grad[0, 0] == 0 and new.grad[0, 1] < 0


class OneTokenTask:
    """Answer with a single token; reward 1 for token 2. E[R] = p(2 | prompt) exactly."""
    name, eos_id, stop_ids, max_answer_len = "one-token", 3, (3,), 1

    def sample(self, rng, split="train"):
        return Example(prompt=[0, 1], answer=[2])

    def reward(self, example, completion):
        return float(completion[:1] == [2])

    def difficulty(self, example):
        return "easy"


@pytest.mark.parametrize("dec", [CotConfig(max_new_tokens=1), SoftConfig(k=3, max_new_tokens=1)])
def test_one_grpo_step_raises_expected_reward(tmp_path, dec):
    """E[R] = p(2 | prompt) for cot and for soft (slot 0 is the committed token; the other draws'
    terms are independent of the reward, so they add noise but no bias)."""
    model = tiny_model(vocab=4)
    with torch.no_grad():
        before = model(torch.tensor([[0, 1]]))[0][0, -1].softmax(-1)[2].item()
    cfg = RLConfig(steps=1, prompts_per_step=1, group_size=256, model_lr=3e-3)
    train_rl(model, None, OneTokenTask(), dec, cfg, str(tmp_path), quiet=True)
    with torch.no_grad():
        after = model(torch.tensor([[0, 1]]))[0][0, -1].softmax(-1)[2].item()
    assert after > before + 1e-3


def test_evaluate_reports_pass_at_k_by_difficulty():
    model = tiny_model(vocab=4)
    with torch.no_grad():
        p2 = model(torch.tensor([[0, 1]]))[0][0, -1].softmax(-1)[2].item()
    task = OneTokenTask()
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
    hist = train_rl(model, router, OneTokenTask(), LBRConfig(widths=(2, 1), max_new_tokens=1), cfg, str(tmp_path), quiet=True)
    assert len(hist) == 2 and all(h["fwd_per_token"] >= 3 for h in hist)  # 2 candidates + their continuations
    assert any((p - q).abs().max() > 0 for p, q in zip(model.parameters(), m0))
    assert any((p - q).abs().max() > 0 for p, q in zip(router.parameters(), r0))


def test_resume_gives_the_same_next_step(tmp_path):
    """Two steps straight = one step, stop, resume for the second (optimizer state, KL reference and
    per-step seeds all come back), with PPO epochs and a KL term in play."""
    def run(out, steps):
        model = tiny_model(vocab=4)
        router = Router(RouterConfig(width=8), model.cfg.n_embd, 2)
        cfg = RLConfig(steps=steps, prompts_per_step=2, group_size=4, save_every=1, kl_coef=0.1, epochs=2)
        train_rl(model, router, OneTokenTask(), LBRConfig(widths=(2, 1), max_new_tokens=2), cfg, out, quiet=True)
        return list(model.parameters()) + list(router.parameters())
    straight = run(str(tmp_path / "a"), 2)
    run(str(tmp_path / "b"), 1)
    resumed = run(str(tmp_path / "b"), 2)
    assert all(torch.equal(p, q) for p, q in zip(straight, resumed))
    with pytest.raises(ValueError, match="other settings"):
        train_rl(tiny_model(vocab=4), None, OneTokenTask(), CotConfig(max_new_tokens=1), RLConfig(steps=3),
                 str(tmp_path / "b"), quiet=True)


def test_finished_run_refuses_fewer_steps(tmp_path):
    """A 2-step run re-run with steps=1 used to return (and the CLI evaluate) the 2-step model as if
    it were the 1-step one; it is refused, and nothing in the run directory changes."""
    task, dec = OneTokenTask(), CotConfig(max_new_tokens=1)
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
    from helpers import assert_close_to_scale, tiny_model
    from router import RouterConfig
    from rlvr import new_router
    task = OneTokenTask()
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
