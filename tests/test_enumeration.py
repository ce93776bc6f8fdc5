"""Exactness by enumeration on a tiny model (vocabulary {a, b, EOS}, two committed tokens).

Every trajectory of LBR is enumerated by an independent slow reference (tests/lbr_reference.py).
- normalisation: the log P(τ) that likelihood.py replays sums to 1 over all of them, and equals
  the reference's probability trajectory by trajectory;
- unbiased gradient: Σ_τ P(τ) R(τ) ∇ log P(τ), with log P from likelihood.py, equals the exact
  gradient of E[R] = Σ_τ P(τ) R(τ) computed through the reference, for model and router jointly;
- the decoder samples from that distribution (chi-square on the committed sequences).
"""

import itertools

import pytest
import torch

from decode import CotConfig, LBRConfig, decode_cot, decode_lbr
from helpers import LOGP_TOL, chi2_pvalue, random_router, tiny_model
from lbr_reference import enumerate_lbr, to_trajectory
from likelihood import sequence_logprob, tree_logprob

V, EOS, PROMPT = 3, 2, [0, 1]
SETTINGS = [((2, 1), "iid"), ((2, 1), "distinct"), ((2, 2), "distinct"), ((2, 2), "iid")]


def tiny_setup(widths):
    model = tiny_model(vocab=V, n_layer=1, n_embd=8, n_head=2, n_kv_head=1)
    return model, random_router(model, len(widths), std=2.0)


def reward(completion: list[int]) -> float:
    """Any function of the committed tokens will do; this one is not symmetric in a/b."""
    return float(completion[:1] == [0]) + 0.5 * float(EOS in completion) - 0.25 * completion.count(1)


def replay_in_chunks(model, router, traj, chunk=4096):
    out = []
    for a in range(0, len(traj.length), chunk):
        sl = slice(a, a + chunk)
        part = type(traj)(**{k: (v[sl] if isinstance(v, torch.Tensor) else v) for k, v in vars(traj).items()})
        out.append(tree_logprob(model, router, part).total)
    return torch.cat(out)


@pytest.mark.parametrize("widths,sampler", SETTINGS)
def test_trajectory_probabilities_sum_to_one(widths, sampler):
    model, router = tiny_setup(widths)
    cfg = LBRConfig(widths=widths, sampler=sampler, temperature=0.8, router_temperature=1.5, max_new_tokens=2)
    with torch.no_grad():
        leaves = enumerate_lbr(model, router, PROMPT, cfg, EOS)
        logp = replay_in_chunks(model, router, to_trajectory(leaves, len(PROMPT), cfg, EOS))
    ref = torch.stack([lf.logp for lf in leaves])
    assert abs(float(logp.double().exp().sum()) - 1) < 1e-5
    torch.testing.assert_close(logp, ref, **LOGP_TOL)


@pytest.mark.parametrize("widths,sampler", SETTINGS[:3])
def test_likelihood_ratio_gradient_is_exact(widths, sampler):
    model, router = tiny_setup(widths)
    params = list(model.parameters()) + list(router.parameters())
    cfg = LBRConfig(widths=widths, sampler=sampler, max_new_tokens=2)
    leaves = enumerate_lbr(model, router, PROMPT, cfg, EOS)  # differentiable reference probabilities
    R = torch.tensor([reward([lf.state.tokens[c] for c in lf.state.committed]) for lf in leaves])
    expected_reward = (torch.stack([lf.logp for lf in leaves]).exp() * R).sum()
    exact = torch.autograd.grad(expected_reward, params)

    logp = tree_logprob(model, router, to_trajectory(leaves, len(PROMPT), cfg, EOS)).total
    surrogate = (logp.detach().exp() * R * logp).sum()  # Σ P R log P: its gradient is Σ P R ∇ log P
    estimate = torch.autograd.grad(surrogate, params)
    assert sum(float(g.abs().sum()) for g in exact[len(list(model.parameters())):]) > 1e-3  # router gets gradient
    # tolerance relative to the largest gradient entry of all parameters: some tensors' exact
    # gradients are ~1e-9 (zero up to rounding), where no per-tensor relative bound holds
    scale = max(float(g.abs().max()) for g in exact)
    for e, g in zip(estimate, exact):
        torch.testing.assert_close(e, g, atol=3e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("widths,sampler", SETTINGS[1:3])
def test_decoder_samples_the_enumerated_distribution(widths, sampler):
    model, router = tiny_setup(widths)
    cfg = LBRConfig(widths=widths, sampler=sampler, max_new_tokens=2)
    with torch.no_grad():
        leaves = enumerate_lbr(model, router, PROMPT, cfg, EOS)
    exact: dict[tuple, float] = {}
    for lf in leaves:
        key = tuple(lf.state.tokens[c] for c in lf.state.committed)
        exact[key] = exact.get(key, 0.0) + float(lf.logp.exp())
    traj = decode_lbr(model, router, [PROMPT] * 8000, cfg, EOS, torch.Generator().manual_seed(0))
    got: dict[tuple, int] = {}
    for row, n in zip(traj.completion.tolist(), traj.length.tolist()):
        got[tuple(row[:n])] = got.get(tuple(row[:n]), 0) + 1
    keys = sorted(exact)
    assert set(got) <= set(keys)
    assert chi2_pvalue(torch.tensor([got.get(k, 0) for k in keys]), torch.tensor([exact[k] for k in keys])) > 1e-3


def test_cot_sequence_probabilities_sum_to_one():
    model = tiny_model(vocab=V, n_layer=1, n_embd=8, n_head=2, n_kv_head=1)
    seqs = sorted({s[: s.index(EOS) + 1] if EOS in s else s for s in itertools.product(range(V), repeat=3)})
    traj = decode_cot(model, [PROMPT] * len(seqs), CotConfig(temperature=0.7, max_new_tokens=3), EOS, torch.Generator())
    traj.completion = torch.tensor([list(s) + [0] * (3 - len(s)) for s in seqs])
    traj.length = torch.tensor([len(s) for s in seqs])
    with torch.no_grad():
        total = sequence_logprob(model, traj).sum(1)
    assert abs(float(total.double().exp().sum()) - 1) < 1e-5
