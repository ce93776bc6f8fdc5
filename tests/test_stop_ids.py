"""Stop-id sets: a model may end a turn with any of several ids (Qwen2.5-Instruct: <|im_end|> and
<|endoftext|>). Every decoder takes a set of stop ids; a rollout ends at the first one it commits,
and in LBR a sampled node whose token is any of them gets no children."""

import pytest
import torch

from decode import CotConfig, LBRConfig, decode_cot, decode_lbr, stop_tuple
from evaluate import greedy_completions
from soft import SoftConfig, decode_soft
from evaluate import generate
from helpers import LOGP_TOL, random_router, tiny_model
from likelihood import tree_logprob
from tools.records import check_tree_record
from rlvr import trajectory_logprob
from model import Transformer

V, STOPS, T = 6, (4, 5), 16
PROMPTS = [[0, 1, 2], [3], [1, 0, 2, 3, 1], [2, 0]] * 8  # 32 rows of different lengths


def biased_model(toward: int, bias: float = 2.5) -> Transformer:
    """A tiny random model whose logits get +bias on one id (e^2.5: about 12 times likelier)."""
    model = tiny_model(vocab=V)
    b = torch.zeros(V)
    b[toward] = bias
    model.head = lambda h: Transformer.head(model, h) + b  # forward() and the decoders all go through head
    return model


def decode(method: str, model: Transformer, stops, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if method == "cot":
        return decode_cot(model, PROMPTS, CotConfig(max_new_tokens=T), stops, g)
    if method == "soft":
        return decode_soft(model, PROMPTS, SoftConfig(k=3, max_new_tokens=T), stops, g)
    return decode_lbr(model, random_router(model, 2), PROMPTS, LBRConfig(widths=(3, 2), max_new_tokens=T), stops, g)


def ends(traj) -> list[list[int]]:
    return [c[:n] for c, n in zip(traj.completion.tolist(), traj.length.tolist())]


@pytest.mark.parametrize("method", ["cot", "soft", "lbr"])
@pytest.mark.parametrize("toward", STOPS)
def test_decoders_stop_at_each_id_of_the_set(method, toward):
    """Biased toward one stop id, most rows end at it; no row commits a token after either stop id,
    and a row ends before max_new_tokens only at a stop id."""
    traj = decode(method, biased_model(toward), STOPS)
    rows = ends(traj)
    for c in rows:
        assert not set(c[:-1]) & set(STOPS), c  # nothing after the first stop
        assert len(c) == T or c[-1] in STOPS, c
    last = [c[-1] for c in rows if c[-1] in STOPS]
    assert last.count(toward) > len(rows) // 2, (toward, last)


@pytest.mark.parametrize("method", ["cot", "soft", "lbr"])
def test_an_id_outside_the_set_does_not_stop(method):
    """With the set (5,), a row biased toward 4 commits 4 and goes on: the set, not one EOS, decides."""
    rows = ends(decode(method, biased_model(4), (5,)))
    assert any(4 in c[:-1] for c in rows)
    assert all(5 not in c[:-1] for c in rows)


def test_lbr_stop_nodes_of_either_id_have_no_children_and_replay_is_exact():
    """Every sampled node whose token is 4 or 5 is a leaf of the union tree (nodes with other tokens
    do have children), the record says which ids stopped it, and the one-forward replay gives the
    recorded log P(τ)."""
    model = tiny_model(vocab=V)
    traj = decode_lbr(model, random_router(model, 2), PROMPTS, LBRConfig(widths=(3, 2), max_new_tokens=T), STOPS,
                      torch.Generator().manual_seed(0))
    assert traj.stop_ids == STOPS
    stopped, branched = set(), set()
    for b in range(len(PROMPTS)):
        n, plen = int(traj.n_nodes[b]), int(traj.prompt_len[b])
        parents = set(traj.parent[b, plen:n].tolist())
        for i in range(plen, n):
            tok = int(traj.tokens[b, i])
            if tok in STOPS:
                assert i not in parents, (b, i, tok)
                stopped.add(tok)
            elif i in parents:
                branched.add(tok)
    assert stopped == set(STOPS) and branched  # both ids were sampled (and stayed leaves)
    with torch.no_grad():
        replay = tree_logprob(model, random_router(model, 2), traj)
    torch.testing.assert_close(replay.total, traj.recorded_logprob(), **LOGP_TOL)
    torch.testing.assert_close(trajectory_logprob(model, random_router(model, 2), traj).total, replay.total)


def test_record_check_reads_the_set():
    """A record decoded with the set (5,) has nodes with token 4 that have children: declared as
    decoded with (4, 5), no decoder could have produced it."""
    model = tiny_model(vocab=V)
    traj = decode_lbr(model, random_router(model, 2), PROMPTS, LBRConfig(widths=(3, 2), max_new_tokens=T), (5,),
                      torch.Generator().manual_seed(0))
    check_tree_record(traj, V)
    traj.stop_ids = (4, 5)
    with pytest.raises(ValueError, match="EOS"):
        check_tree_record(traj, V)


def test_generate_and_greedy_take_a_set_or_an_int():
    """An int is the one-element set; greedy_completions (what the tasks' health checks receive)
    returns each row up to and including its first stop id."""
    model = tiny_model(vocab=V)
    a = generate(model, None, PROMPTS, CotConfig(max_new_tokens=T), 5, torch.Generator().manual_seed(1))
    b = generate(model, None, PROMPTS, CotConfig(max_new_tokens=T), (5,), torch.Generator().manual_seed(1))
    assert torch.equal(a.completion, b.completion)
    for c in greedy_completions(biased_model(4), PROMPTS, STOPS, T):
        assert not set(c[:-1]) & set(STOPS) and (len(c) == T or c[-1] in STOPS)


@pytest.mark.parametrize("bad", ["5", [4, "5"], 4.0, True, None])
def test_stop_ids_must_be_ints(bad):
    with pytest.raises(ValueError, match="stop ids"):
        stop_tuple(bad)


def test_no_stop_id_runs_to_the_limit():
    assert stop_tuple(()) == () and stop_tuple([5, 4]) == (5, 4) and stop_tuple(7) == (7,)
    traj = decode_cot(biased_model(4), PROMPTS, CotConfig(max_new_tokens=5), (), torch.Generator().manual_seed(0))
    assert traj.length.tolist() == [5] * len(PROMPTS)
