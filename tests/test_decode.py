"""Decoding: the records are exact (replay = recorded), LBR with a fresh router is the base model,
the KV cache is never recomputed, and bad input is refused with a ValueError."""

import itertools

import pytest
import torch

from decode import CotConfig, LBRConfig, MIN_TEMPERATURE, decode_cot, decode_lbr
from evaluate import generate
from soft import SoftConfig
from helpers import LOGP_TOL, chi2_pvalue, random_router, tiny_model
from likelihood import sequence_logprob, tree_logprob
from router import Router, RouterConfig
from tools.records import check_tree_record
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
    torch.testing.assert_close(replay, traj.logp, **LOGP_TOL)


def test_cot_greedy_equals_uncached_greedy():
    """Every token cached greedy decoding commits is the argmax of the uncached forward of the
    whole sequence so far (up to rounding: a near-tie may break either way, depending on how the
    CPU sums), and decoding stops exactly at EOS or the length limit."""
    model = tiny_model(vocab=6)
    traj = decode_cot(model, PROMPTS, CotConfig(greedy=True, max_new_tokens=10), EOS, torch.Generator())
    with torch.no_grad():
        for b, p in enumerate(PROMPTS):
            done = traj.completion[b, : int(traj.length[b])].tolist()
            logits = model(torch.tensor([p + done]))[0][0, len(p) - 1: -1]  # (n, V): what each token was chosen from
            chosen = logits.gather(1, torch.tensor(done)[:, None]).squeeze(1)
            assert (chosen >= logits.max(1).values - 1e-4).all()
            assert EOS not in done[:-1] and (len(done) == 10 or done[-1] == EOS)


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
    torch.testing.assert_close(replay.model_logp, traj.logq, **LOGP_TOL)
    recorded_pi = traj.router_logp.gather(2, traj.choice[..., None]).squeeze(2)
    torch.testing.assert_close(replay.router_logpi, recorded_pi, **LOGP_TOL)
    torch.testing.assert_close(replay.total, traj.recorded_logprob(), **LOGP_TOL)
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
    torch.testing.assert_close(replay.total, traj.recorded_logprob(), **LOGP_TOL)
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
    torch.testing.assert_close(traj.recorded_logprob(), seq, **LOGP_TOL)
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
    traj = decode_lbr(model, router, [[0, 1]], LBRConfig(widths=(2, 2), max_new_tokens=6), stop_ids=99,
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
    lambda: CotConfig(temperature=float("nan")),  # NaN passed `temperature <= 0` and trained to NaN weights
    lambda: LBRConfig(temperature=float("inf")),
    lambda: LBRConfig(router_temperature=float("nan")),
    lambda: LBRConfig(widths=(1000, 1000)),  # a million-node tree: tried an 8 GB allocation
    lambda: LBRConfig(sampler="uniform"),
])
def test_bad_config_raises(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("make,flag", [
    (lambda: CotConfig(temperature=1e-45), "temperature"),  # passed the > 0 check and recorded NaN log-probs
    (lambda: SoftConfig(temperature=5e-5), "temperature"),
    (lambda: LBRConfig(router_temperature=1e-45), "router_temperature"),
])
def test_temperatures_that_underflow_are_refused_towards_greedy(make, flag):
    with pytest.raises(ValueError, match=rf"{flag}=.*>= 0.0001.*greedy"):
        make()


def test_the_lowest_temperature_records_finite_log_probs():
    """At T = 1e-45, logits / T overflowed to inf and log_softmax gave NaN; at T = MIN_TEMPERATURE = 1e-4
    the sampling is argmax in effect, and every recorded log-probability is finite (about 0 for the choice)."""
    model = tiny_model(vocab=6)
    traj = decode_cot(model, PROMPTS, CotConfig(temperature=MIN_TEMPERATURE, max_new_tokens=6), EOS,
                      torch.Generator().manual_seed(0))
    greedy = decode_cot(model, PROMPTS, CotConfig(greedy=True, max_new_tokens=6), EOS, torch.Generator())
    assert torch.isfinite(traj.logp).all() and torch.equal(traj.completion, greedy.completion)


def test_bad_input_raises():
    model = tiny_model(vocab=6, max_seq_len=16)
    router = Router(RouterConfig(), model.cfg.n_embd, 2)
    g = torch.Generator()
    with pytest.raises(ValueError, match="context"):
        decode_lbr(model, router, [[0] * 10], LBRConfig(widths=(2, 2), max_new_tokens=6), EOS, g)
    with pytest.raises(ValueError, match="context"):
        decode_cot(model, [[0] * 10], CotConfig(max_new_tokens=7), EOS, g)
    with pytest.raises(ValueError, match="vocabulary"):  # the caller's checks: evaluate.generate
        generate(model, router, [[0]], LBRConfig(widths=(7,), sampler="distinct", max_new_tokens=2), EOS, g)
    with pytest.raises(ValueError, match="at least one token"):
        decode_cot(model, [[]], CotConfig(max_new_tokens=4), EOS, g)
    with pytest.raises(ValueError, match="token ids"):
        decode_cot(model, [[9]], CotConfig(max_new_tokens=4), EOS, g)
    with pytest.raises(ValueError, match="max_depth=3"):
        generate(model, router, [[0]], LBRConfig(widths=(2, 1, 1), max_new_tokens=2), EOS, g)


def test_lbr_after_a_prompt_ending_in_eos_samples_like_cot():
    """A prompt may end with EOS. `cot` samples the next token there as anywhere; LBR used to grow no
    candidates under an EOS root and commit token 0, never sampled (its recorded log P then differed
    from the replay). Now the root branches as `cot` samples: every committed token is a node born
    in the tree, the first a child of the prompt's EOS, and the recorded log P is the replay's."""
    model = tiny_model(vocab=6)
    prompts = [[0, 1, EOS], [EOS], [2, EOS, EOS]]
    for widths in [(1,), (3, 2), (2, 1, 1)]:
        router = random_router(model, len(widths))
        traj = decode_lbr(model, router, prompts, LBRConfig(widths=widths, max_new_tokens=6), EOS,
                          torch.Generator().manual_seed(0))
        with torch.no_grad():
            replay = tree_logprob(model, router, traj)
        torch.testing.assert_close(replay.total, traj.recorded_logprob(), **LOGP_TOL)
        for b, p in enumerate(prompts):
            assert trunk_from_record(traj, b) == traj.completion[b, : int(traj.length[b])].tolist()
            first = children_table(traj.parent[b: b + 1], widths[0])[0, len(p) - 1, int(traj.choice[b, 0])]
            assert int(first) >= len(p) and int(traj.birth_step[b, first]) == 0
        if widths == (1,):  # one candidate: log P(τ) is the committed tokens' log p as a sequence, as for cot
            cot = decode_cot(model, prompts, CotConfig(max_new_tokens=6), EOS, torch.Generator())
            cot.completion, cot.length = traj.completion, traj.length
            with torch.no_grad():
                torch.testing.assert_close(traj.recorded_logprob(), sequence_logprob(model, cot).sum(1), **LOGP_TOL)


def _corrupt(traj, **fields):
    """A copy of a TreeTrajectory with some fields replaced (tensors cloned, so `traj` stays valid)."""
    out = dict(vars(traj))
    out.update({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in out.items()})
    out.update(fields)
    return type(traj)(**out)


def _eos_with_child(t):
    """The token of a born node that has a child becomes EOS."""
    born = t.birth_step[0] >= 0
    has_kids = torch.zeros_like(born)
    has_kids[t.parent[0][born]] = True
    n = int((born & has_kids).nonzero()[0, 0])
    tokens = t.tokens.clone()
    tokens[0, n] = EOS
    return _corrupt(t, tokens=tokens)


def _edit(field, fn):
    def corrupt(t):
        x = getattr(t, field).clone()
        fn(x, t)
        return _corrupt(t, **{field: x})
    return corrupt


def _last_born(t):
    return int(t.n_nodes[0]) - 1


@pytest.mark.parametrize("corrupt,match", [
    (_eos_with_child, "EOS node has children"),
    (_edit("parent", lambda x, t: x[0].__setitem__(_last_born(t), _last_born(t))), "parent recorded before it"),
    (_edit("birth_step", lambda x, t: x[0].__setitem__(int(t.prompt_len[0]), int(t.length[0]) - 1)), "birth order"),
    (_edit("birth_step", lambda x, t: x[0].__setitem__(_last_born(t), int(t.length[0]))), "birth order"),
    (_edit("parent", lambda x, t: x[0].__setitem__(_last_born(t), 0)), "outside the local tree"),
    (_edit("parent", lambda x, t: x[0].__setitem__(1, -1)), "prompt must be a chain"),
    (_edit("n_nodes", lambda x, t: x.__setitem__(0, x[0] - 1)), "padding past n_nodes"),
    (_edit("choice", lambda x, t: x.__setitem__((0, 0), 3)), "router choices"),
    (_edit("completion", lambda x, t: x.__setitem__((0, 0), (int(x[0, 0]) + 1) % EOS)), "completion is not"),
    (_edit("completion", lambda x, t: x.__setitem__((0, 0), EOS)), "EOS committed before the last step"),
    (_edit("tokens", lambda x, t: x.__setitem__((0, _last_born(t)), 6)), "token ids"),
    (_edit("length", lambda x, t: x.__setitem__(0, 0)), "length must lie"),
    (lambda t: _corrupt(t, logq=t.logq[:, :-1]), "logq of shape"),
])
def test_check_tree_record_refuses_records_no_decoder_produces(corrupt, match):
    """A record whose structure no decoder could produce is refused with a ValueError naming the broken
    invariant, instead of being scored (an EOS node with a child used to get a log P): the check runs
    where a record comes from disk (tools/records.py)."""
    model = tiny_model(vocab=6)
    router = random_router(model, 2)
    traj = decode_lbr(model, router, [[0, 1, 2], [3, 1]], LBRConfig(widths=(3, 2), max_new_tokens=6), EOS,
                      torch.Generator().manual_seed(5))
    assert int(traj.length[0]) >= 3  # the corruptions below need a few steps
    with torch.no_grad():
        check_tree_record(traj, model.cfg.vocab_size)  # the decoder's own record passes
        with pytest.raises(ValueError, match=match):
            check_tree_record(corrupt(traj), model.cfg.vocab_size)


def test_distinct_record_with_equal_siblings_is_refused():
    model = tiny_model(vocab=6)
    router = random_router(model, 1)
    traj = decode_lbr(model, router, [[0, 1]], LBRConfig(widths=(3,), sampler="distinct", max_new_tokens=2), EOS,
                      torch.Generator().manual_seed(0))
    p = int(traj.prompt_len[0])
    tokens = traj.tokens.clone()
    tokens[0, p + 1] = tokens[0, p]  # two candidates of step 0 with the same token
    completion = traj.completion.clone()
    completion[0, 0] = tokens[0, p + int(traj.choice[0, 0])]
    with torch.no_grad(), pytest.raises(ValueError, match="two siblings the same token"):
        check_tree_record(_corrupt(traj, tokens=tokens, completion=completion), model.cfg.vocab_size)


def test_kv_cache_copy_and_gather_move_whole_slots_per_row():
    """KVCache.copy_slot (LBR's commit) and gather_slots (the shift) move every layer's keys and
    values of a slot, row by row, exactly (checked against a loop over rows and slots)."""
    model = tiny_model(vocab=6)
    cache = model.new_cache(3, 9)
    cache.kv.copy_(torch.randn(cache.kv.shape, generator=torch.Generator().manual_seed(0)))
    before = cache.kv.clone()
    src, dst = torch.tensor([1, 4, 2]), torch.tensor([7, 8, 2])
    cache.copy_slot(src, dst)
    want = before.clone()
    for b in range(3):
        want[:, :, b, :, int(dst[b])] = before[:, :, b, :, int(src[b])]
    assert torch.equal(cache.kv, want)
    before = cache.kv.clone()
    shift = torch.tensor([[2, 0, 0, 1], [3, 3, 1, 0], [0, 1, 2, 3]])  # (B, N): slot j takes slot shift[b, j]
    cache.gather_slots(shift)
    for b in range(3):
        for j in range(4):
            want[:, :, b, :, j] = before[:, :, b, :, int(shift[b, j])]
    want[:, :, :, :, 4:] = before[:, :, :, :, 4:]  # slots past N are untouched
    assert torch.equal(cache.kv, want)
