"""RL: Pass@k, the GRPO loss's sign and normalisation, one update raising E[R], resume = no interruption."""

import itertools

import pytest
import torch

from decode import CotConfig, LBRConfig, SoftConfig
from helpers import tiny_model
from likelihood import Factors
from rlvr import RLConfig, evaluate, grpo_advantages, pass_at_k, policy_loss, train_rl
from router import Router, RouterConfig
from tasks.common import Example


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
    assert torch.allclose(grpo_advantages(r, True)[:4], torch.tensor([1.0, -1.0, -1.0, 1.0]) * 0.5 / r[0].std(), atol=1e-5)


def test_policy_loss_sign_and_normalisation():
    """The first-epoch gradient is -(1/B) Σ A ∇log P: a per-rollout constant, not divided by length."""
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv = torch.tensor([1.0, -1.0])
    loss = policy_loss(Factors(logp * mask, mask, mask), (logp * mask).detach(), adv, clip_eps=0.2)
    loss.backward()
    assert logp.grad.tolist() == [[-0.5, -0.5, 0.0], [0.5, 0.0, 0.0]]
    # PPO clipping: a factor whose ratio already exceeds 1+ε gets no more push when A > 0
    new = torch.tensor([[0.0, -2.0]], requires_grad=True)
    m = torch.ones(1, 2, dtype=torch.bool)
    policy_loss(Factors(new, m, m), torch.tensor([[-1.0, -2.0]]), torch.tensor([1.0]), clip_eps=0.2).backward()
    assert new.grad[0, 0] == 0 and new.grad[0, 1] < 0


class OneTokenTask:
    """Answer with a single token; reward 1 for token 2. E[R] = p(2 | prompt) exactly."""
    name, eos_id, max_answer_len = "one-token", 3, 1

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
