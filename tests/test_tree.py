"""The local tree: slot layout, shift map, union-tree helpers, and the two sibling samplers."""

import itertools
import math

import pytest
import torch

from helpers import chi2_pvalue
from tree import (LocalTree, TreeShape, ancestor_mask, birth_logq, children_table, parse_widths,
                  sample_categorical, subtree_members)


def slot_paths(shape: TreeShape) -> list[tuple[int, ...]]:
    """Each slot's path of sibling indices from the root, rebuilt from parent and sib."""
    paths = []
    for j in range(shape.n_slots):
        p = int(shape.parent[j])
        paths.append(() if p < 0 else paths[p] + (int(shape.sib[j]),))
    return paths


@pytest.mark.parametrize("widths", [(1,), (2, 1), (2, 2), (4, 2), (3, 1, 1), (3, 3, 2)])
def test_shape_tables(widths):
    shape = TreeShape.from_widths(widths)
    paths = slot_paths(shape)
    assert shape.n_slots == 1 + sum(math.prod(widths[: d + 1]) for d in range(len(widths)))
    assert sorted(paths, key=lambda p: (len(p), p)) == paths  # level order
    assert all(all(c < widths[k] for k, c in enumerate(p)) for p in paths)
    for j, p in enumerate(paths):
        # ancestors are exactly the prefixes of the path
        assert {paths[k] for k in shape.anc[j].nonzero().flatten().tolist()} == {p[:d] for d in range(len(p) + 1)}
        for i in range(widths[0]):
            # committing candidate i: new slot j holds the old node (i, *p) if that node exists
            src = int(shape.shift[i, j])
            old = (i,) + p
            assert (src >= 0) == (len(old) <= len(widths) and all(c < widths[k] for k, c in enumerate(old)))
            if src >= 0:
                assert paths[src] == old
    for i in range(widths[0]):
        assert [paths[j] for j in shape.subtree[i].tolist()] == [p for p in paths if p[:1] == (i,)]
    assert shape.subtree_depth.tolist() == [len(paths[j]) - 1 for j in shape.subtree[0].tolist()]


@pytest.mark.parametrize("bad", ["", "0", "2,3", "a,b", (), (2, -1), "1,2,1"])
def test_invalid_widths_raise(bad):
    with pytest.raises(ValueError, match="widths"):
        parse_widths(bad)


def test_distinct_width_larger_than_vocab_raises():
    from decode import LBRConfig
    from evaluate import generate
    from helpers import tiny_model
    from router import Router, RouterConfig
    model = tiny_model(vocab=4)
    router = Router(RouterConfig(width=8), model.cfg.n_embd, 2)
    with pytest.raises(ValueError, match="vocabulary"):
        generate(model, router, [[0, 1]], LBRConfig(widths=(5, 1), sampler="distinct", max_new_tokens=1), 3,
                 torch.Generator().manual_seed(0))
    generate(model, router, [[0, 1]], LBRConfig(widths=(5, 1), max_new_tokens=1), 3,
             torch.Generator().manual_seed(0))  # iid may repeat tokens: fine
    with pytest.raises(ValueError, match="sampler"):
        LBRConfig(sampler="beam")


def test_union_tree_helpers():
    #        0 - 1 - 2            prompt chain 0,1,2; nodes 3,4 children of 2; 5 child of 3;
    #                 \\ 3 - 5     6 child of 2 born later; 7 padding
    #                 \\ 4
    #                 \\ 6
    parent = torch.tensor([[-1, 0, 1, 2, 2, 3, 2, -1]])
    anc, depth = ancestor_mask(parent)
    assert depth.tolist() == [[0, 1, 2, 3, 3, 4, 3, 0]]
    assert anc[0, 5].nonzero().flatten().tolist() == [0, 1, 2, 3, 5]
    assert anc[0, 7].nonzero().flatten().tolist() == [7]  # padding sees only itself
    children = children_table(parent, 3)
    assert children[0, 2].tolist() == [3, 4, 6]
    assert children[0, 3].tolist() == [5, -1, -1]
    assert children[0, 7].tolist() == [-1, -1, -1]
    birth = torch.tensor([[-1, -1, -1, 0, 0, 0, 1, -1]])
    # widths (3, 1): at step 0 node 3's subtree is {3, 5}; node 6 was not born yet
    members = subtree_members(children, birth, torch.tensor([[[3, 4, 6]]]), torch.tensor([[0]]), (3, 1))
    assert members[0, 0].tolist() == [[3, 5], [4, -1], [-1, -1]]
    members = subtree_members(children, birth, torch.tensor([[[3, 4, 6]]]), torch.tensor([[1]]), (3, 1))
    assert members[0, 0].tolist() == [[3, 5], [4, -1], [6, -1]]


def test_sample_categorical_distribution():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    draws = sample_categorical(p.log().expand(20000, 4), torch.Generator().manual_seed(0))
    assert chi2_pvalue(torch.bincount(draws, minlength=4), p) > 1e-3


def test_distinct_sibling_probabilities_sum_to_one():
    """Σ over every ordered tuple of m distinct children of Π q = 1, for every m up to V."""
    logp = torch.tensor([0.4, 0.3, 0.2, 0.07, 0.03]).log()
    V = len(logp)
    for m in range(1, V + 1):
        total = 0.0
        for toks in itertools.permutations(range(V), m):
            lq = 0.0
            for k, t in enumerate(toks):
                sib = torch.tensor(toks[:k] + (0,) * (V - k))
                before = torch.arange(V) < k
                lq += float(birth_logq(logp[t], logp[sib], before, "distinct"))
            total += math.exp(lq)
        assert abs(total - 1) < 1e-5, (m, total)


def test_local_tree_distinct_sampler_draws_ordered_pairs_exactly():
    """Growing two children of the root with the distinct sampler: ordered pairs ~ p(a) p(b)/(1-p(a))."""
    p = torch.tensor([0.45, 0.3, 0.15, 0.1])
    shape = TreeShape.from_widths((2,))
    B = 20000
    tree = LocalTree.start(shape, torch.zeros(B, dtype=torch.long), torch.zeros(B, 3), torch.zeros(B, dtype=torch.long))
    need = tree.missing(torch.ones(B, dtype=torch.bool), stop_ids=torch.tensor([99]))
    cols = need.any(0).nonzero().squeeze(1)
    assert cols.tolist() == [1, 2]
    tok, logq = tree.sample_children(need, cols, p.log().expand(B, 2, 4), "distinct", torch.Generator().manual_seed(0))
    assert (tok[:, 0] != tok[:, 1]).all()
    exact = p[:, None] * p[None, :] / (1 - p[:, None])
    exact.fill_diagonal_(0)
    counts = torch.bincount(tok[:, 0] * 4 + tok[:, 1], minlength=16)
    assert chi2_pvalue(counts[exact.flatten() > 0], exact.flatten()[exact.flatten() > 0]) > 1e-3
    torch.testing.assert_close(logq.sum(1), exact[tok[:, 0], tok[:, 1]].log())
