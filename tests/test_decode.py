"""Decoding: the records are exact (replay = recorded), LBR with a fresh router is the base model,
the KV cache is never recomputed, and bad input is refused with a ValueError."""

import itertools

import pytest
import torch

from decode import CotConfig, LBRConfig, decode_cot, decode_lbr
from helpers import chi2_pvalue, random_router, tiny_model
from likelihood import sequence_logprob, tree_logprob
from router import Router, RouterConfig
from tree import children_table

EOS = 5
PROMPTS = [[0, 1, 2], [3], [4, 4, 1, 0, 2, 3, 1], [2, 0]]  # different lengths in one batch


@pytest.mark.parametrize("temperature,greedy", [(1.0, False), (0.7, False), (1.3, True)])
def test_cot_replay_equals_recorded(temperature, greedy):
    """The uncached replay reproduces the cached decoder's log-probs: KV-cached decoding = uncached."""
    model = tiny_model(vocab=6)
    traj = decode_cot(model, PROMPTS, CotConfig(temperature=temperature, greedy=greedy, max_new_tokens=12), EOS,
                      torch.Generator().manual_seed(0))
    assert traj.length.min() >= 1
    with torch.no_grad():
        replay = sequence_logprob(model, traj)
    torch.testing.assert_close(replay, traj.logp, atol=1e-4, rtol=0)


def test_cot_greedy_equals_uncached_greedy():
    model = tiny_model(vocab=6)
    traj = decode_cot(model, PROMPTS, CotConfig(greedy=True, max_new_tokens=10), EOS, torch.Generator())
    with torch.no_grad():
        for b, p in enumerate(PROMPTS):
            seq = list(p)
            for _ in range(10):  # recompute the whole sequence at every step, no cache
                nxt = int(model(torch.tensor([seq]))[0][0, -1].argmax())
                seq.append(nxt)
                if nxt == EOS:
                    break
            assert traj.completion[b, : int(traj.length[b])].tolist() == seq[len(p):]


def trunk_from_record(traj, b):
    """The committed tokens, rebuilt from parent pointers and router choices only."""
    children = children_table(traj.parent[b : b + 1, : int(traj.n_nodes[b])], traj.cfg.widths[0])[0]
    node, out = int(traj.prompt_len[b]) - 1, []
    for t in range(int(traj.length[b])):
        node = int(children[node, int(traj.choice[b, t])])
        out.append(int(traj.tokens[b, node]))
    return out


@pytest.mark.parametrize("widths,sampler", [((1,), "iid"), ((2, 1), "iid"), ((2, 2), "distinct"), ((4, 2), "iid"),
                                            ((4, 2), "distinct"), ((3, 1, 1), "iid"), ((3, 1, 1), "distinct"),
                                            ((3, 3, 2), "iid")])
def test_lbr_replay_equals_recorded(widths, sampler):
    model = tiny_model(vocab=6)
    router = random_router(model, len(widths))
    cfg = LBRConfig(widths=widths, sampler=sampler, temperature=0.9, router_temperature=0.8, max_new_tokens=10)
    traj = decode_lbr(model, router, PROMPTS, cfg, EOS, torch.Generator().manual_seed(0))
    with torch.no_grad():
        replay = tree_logprob(model, router, traj)
    torch.testing.assert_close(replay.node_logq, traj.logq, atol=1e-4, rtol=0)
    recorded_pi = traj.router_logp.gather(2, traj.choice[..., None]).squeeze(2)
    torch.testing.assert_close(replay.router_logpi, recorded_pi, atol=1e-4, rtol=0)
    torch.testing.assert_close(replay.total, traj.recorded_logprob(), atol=1e-4, rtol=0)
    for b in range(len(PROMPTS)):
        n = int(traj.length[b])
        assert trunk_from_record(traj, b) == traj.completion[b, :n].tolist()
        assert (traj.completion[b, : n - 1] != EOS).all()
        assert n == 10 or int(traj.completion[b, n - 1]) == EOS


@pytest.mark.parametrize("features", ["root", "d1", "subtree"])
def test_lbr_replay_equals_recorded_for_every_router(features):
    model = tiny_model(vocab=6)
    router = random_router(model, 2, features=features)
    cfg = LBRConfig(widths=(3, 2), max_new_tokens=8)
    traj = decode_lbr(model, router, PROMPTS, cfg, EOS, torch.Generator().manual_seed(1))
    with torch.no_grad():
        replay = tree_logprob(model, router, traj)
    torch.testing.assert_close(replay.total, traj.recorded_logprob(), atol=1e-4, rtol=0)
    assert traj.router_logp[:, 0].exp().std(-1).min() > 1e-3  # the router really is non-uniform


def test_lbr_width_one_is_cot():
    """widths (1,): one candidate, π = 1, log P(τ) = Σ log p of the committed tokens."""
    model = tiny_model(vocab=6)
    traj = decode_lbr(model, random_router(model, 1), PROMPTS, LBRConfig(widths=(1,), max_new_tokens=9), EOS,
                      torch.Generator().manual_seed(0))
    cot = decode_cot(model, PROMPTS, CotConfig(max_new_tokens=9), EOS, torch.Generator())
    cot.completion, cot.length = traj.completion, traj.length  # score LBR's tokens as a sequence
    with torch.no_grad():
        seq = sequence_logprob(model, cot).sum(1)
    torch.testing.assert_close(traj.recorded_logprob(), seq, atol=1e-4, rtol=0)
    assert (traj.router_logp == 0).all()


def test_fresh_router_commits_base_model_distribution():
    """Uniform router + iid siblings: the committed tokens are distributed exactly as p_θ.

    Chi-square of the first three committed tokens (joint) against the base model's exact
    probabilities, for two tree shapes."""
    V, eos = 4, 3
    model = tiny_model(vocab=V)
    prompt = [0, 1]
    with torch.no_grad():  # exact P(y1 y2 y3) by enumeration; sequences stop at EOS
        exact = {}
        for seq in itertools.product(range(V), repeat=3):
            cut = next((i + 1 for i, t in enumerate(seq) if t == eos), 3)
            key = seq[:cut]
            if key in exact:
                continue
            logits, _ = model(torch.tensor([prompt + list(key)]))
            logp = logits[0].log_softmax(-1)
            exact[key] = float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(key)).exp())
    assert abs(sum(exact.values()) - 1) < 1e-5
    keys = sorted(exact)
    for widths in [(2, 2), (3, 1, 1)]:
        router = Router(RouterConfig(), model.cfg.n_embd, len(widths))  # fresh: last layer zero
        traj = decode_lbr(model, router, [prompt] * 6000, LBRConfig(widths=widths, max_new_tokens=3), eos,
                          torch.Generator().manual_seed(0))
        assert torch.allclose(traj.router_logp[:, 0], torch.full((1,), -torch.log(torch.tensor(float(widths[0])))))
        got = {}
        for row, n in zip(traj.completion.tolist(), traj.length.tolist()):
            got[tuple(row[:n])] = got.get(tuple(row[:n]), 0) + 1
        assert set(got) <= set(keys)
        p = chi2_pvalue(torch.tensor([got.get(k, 0) for k in keys]), torch.tensor([exact[k] for k in keys]))
        assert p > 1e-3, (widths, p)


def test_full_tree_grows_one_level_per_step():
    """A full K-ary tree (2, 2) forwards K^D = 4 new leaves per committed token, in one forward."""
    model = tiny_model(vocab=6)
    router = Router(RouterConfig(), model.cfg.n_embd, 2)
    calls = []
    hidden = model.hidden
    model.hidden = lambda *a, **k: (calls.append(a[0].shape), hidden(*a, **k))[1]
    traj = decode_lbr(model, router, [[0, 1]], LBRConfig(widths=(2, 2), max_new_tokens=6), eos_id=99,
                      generator=torch.Generator().manual_seed(0))
    assert int(traj.length[0]) == 6  # no EOS in this vocabulary: full length
    born = torch.bincount(traj.birth_step[0][traj.birth_step[0] >= 0])
    assert born.tolist() == [6, 4, 4, 4, 4, 4]  # step 0 grows the whole tree, then only the last level
    # the prompt, then step 0 in two waves (2 depth-1 nodes, 4 depth-2 nodes), then one wave per step
    assert calls == [(1, 2), (1, 2), (1, 4)] + [(1, 4)] * 5


@pytest.mark.parametrize("make", [
    lambda: LBRConfig(widths="2,3"),
    lambda: LBRConfig(widths=(0,)),
    lambda: LBRConfig(temperature=0.0),
    lambda: LBRConfig(router_temperature=-1.0),
    lambda: CotConfig(temperature=-0.5),
    lambda: CotConfig(max_new_tokens=0),
])
def test_bad_config_raises(make):
    with pytest.raises(ValueError):
        make()


def test_bad_input_raises():
    model = tiny_model(vocab=6, max_seq_len=16)
    router = Router(RouterConfig(), model.cfg.n_embd, 2)
    g = torch.Generator()
    with pytest.raises(ValueError, match="context"):
        decode_lbr(model, router, [[0] * 10], LBRConfig(widths=(2, 2), max_new_tokens=6), EOS, g)
    with pytest.raises(ValueError, match="context"):
        decode_cot(model, [[0] * 10], CotConfig(max_new_tokens=7), EOS, g)
    with pytest.raises(ValueError, match="vocabulary"):
        decode_lbr(model, router, [[0]], LBRConfig(widths=(7,), sampler="distinct", max_new_tokens=2), EOS, g)
    with pytest.raises(ValueError, match="at least one token"):
        decode_cot(model, [[]], CotConfig(max_new_tokens=4), EOS, g)
    with pytest.raises(ValueError, match="token ids"):
        decode_cot(model, [[9]], CotConfig(max_new_tokens=4), EOS, g)
    with pytest.raises(ValueError, match="max_depth=3"):
        decode_lbr(model, router, [[0]], LBRConfig(widths=(2, 1, 1), max_new_tokens=2), EOS, g)
