"""The soft-token baseline: K = 1 is exactly cot, the replay equals the record, the recorded
probabilities match an independent uncached implementation and sum to 1 over all trajectories."""

import itertools
import math

import pytest
import torch

from decode import CotConfig, decode_cot
from soft import SoftConfig, decode_soft
from helpers import LOGP_TOL, tiny_model
from rlvr import trajectory_logprob
from soft import soft_logprob

EOS = 5
PROMPTS = [[0, 1, 2], [3], [4, 4, 1, 0, 2, 3, 1], [2, 0]]


def test_k1_is_cot():
    """Same generator seed: the same tokens and the same log-probs, bit for bit."""
    model = tiny_model(vocab=6)
    cot = decode_cot(model, PROMPTS, CotConfig(temperature=0.8, max_new_tokens=12), EOS, torch.Generator().manual_seed(3))
    soft = decode_soft(model, PROMPTS, SoftConfig(k=1, temperature=0.8, max_new_tokens=12), EOS,
                       torch.Generator().manual_seed(3))
    assert torch.equal(soft.completion, cot.completion) and torch.equal(soft.length, cot.length)
    assert torch.equal(soft.logp[..., 0], cot.logp)


@pytest.mark.parametrize("k,weighting,discrete_after", [(2, "prob", -1), (4, "prob", 2), (3, "mean", -1), (4, "mean", 1)])
def test_replay_equals_recorded(k, weighting, discrete_after):
    model = tiny_model(vocab=6)
    cfg = SoftConfig(k=k, weighting=weighting, temperature=1.1, discrete_after=discrete_after, max_new_tokens=14)
    traj = decode_soft(model, PROMPTS, cfg, EOS, torch.Generator().manual_seed(0))
    assert traj.length.min() >= 1
    with torch.no_grad():
        replay = soft_logprob(model, traj)
    torch.testing.assert_close(replay, traj.logp, **LOGP_TOL)
    torch.testing.assert_close(trajectory_logprob(model, None, traj).total, traj.recorded_logprob(), **LOGP_TOL)
    assert torch.allclose(traj.weights.sum(2)[traj.active[..., 0]], torch.tensor(1.0))
    if discrete_after >= 0:  # after committing the delimiter a row draws one token per step
        for b in range(len(PROMPTS)):
            hits = (traj.completion[b, : int(traj.length[b])] == discrete_after).nonzero()
            if len(hits):
                assert not traj.active[b, int(hits[0]) + 1:, 1:].any()
                assert traj.active[b, : int(hits[0]) + 1, :].all()


def reference_logprob(model, prompt, draws, weighting, T):
    """log P of a soft trajectory by plain uncached forwards over explicit input embeddings."""
    E = model.embed_tokens.weight
    x = E[torch.tensor(prompt)]  # (P, C)
    total = 0.0
    for step in draws:
        logp = (model(x[None])[0][0, -1] / T).log_softmax(-1)
        lp = logp[torch.tensor(step)]
        total += float(lp.sum())
        w = lp.exp() / lp.exp().sum() if weighting == "prob" else torch.full((len(step),), 1 / len(step))
        x = torch.cat([x, (w[:, None] * E[torch.tensor(step)]).sum(0, keepdim=True)])
    return total


@pytest.mark.parametrize("weighting", ["prob", "mean"])
def test_recorded_matches_reference_and_sums_to_one(weighting):
    """Vocabulary 3 (EOS = 2), K = 2, horizon 2: every trajectory is a sequence of ordered draw
    pairs, stopping when slot 0 is EOS. The decoder's record matches the reference on sampled
    rollouts, and the reference probabilities of all trajectories sum to 1."""
    model = tiny_model(vocab=3, seed=4)
    eos, prompt, T = 2, [0, 1], 0.9
    with torch.no_grad():
        total = 0.0
        pairs = list(itertools.product(range(3), repeat=2))
        for first in pairs:
            if first[0] == eos:
                total += math.exp(reference_logprob(model, prompt, [first], weighting, T))
                continue
            for second in pairs:
                total += math.exp(reference_logprob(model, prompt, [first, second], weighting, T))
        assert abs(total - 1.0) < 1e-5
        traj = decode_soft(model, [prompt] * 16, SoftConfig(k=2, weighting=weighting, temperature=T, max_new_tokens=2),
                           eos, torch.Generator().manual_seed(1))
        for b in range(16):
            draws = traj.tokens[b, : int(traj.length[b])].tolist()
            ref = reference_logprob(model, prompt, draws, weighting, T)
            assert abs(ref - float(traj.recorded_logprob()[b])) < 1e-4


def test_bad_config():
    with pytest.raises(ValueError, match="k=0: must be an integer >= 1"):
        SoftConfig(k=0)
    with pytest.raises(ValueError, match="weighting"):
        SoftConfig(weighting="max")
