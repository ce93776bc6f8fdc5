"""The transformer: tree attention equals plain forwards of every path; the KV cache equals no cache;
the same for the Qwen3 (q/k norm, own head_dim) and Llama 3 (RoPE scaling) variants."""

import pytest
import torch

from helpers import assert_close_to_scale, tiny_model
from model import ModelConfig, Transformer
from tree import ancestor_mask


def random_tree(n_prompt: int, n_nodes: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A prompt chain with random nodes hanging off it (each node's parent comes before it)."""
    g = torch.Generator().manual_seed(seed)
    parent = list(range(-1, n_prompt - 1))
    for n in range(n_prompt, n_prompt + n_nodes):
        parent.append(int(torch.randint(n_prompt - 1, n, (1,), generator=g)))
    tokens = torch.randint(0, vocab, (len(parent),), generator=g)
    return tokens, torch.tensor(parent)


def path_of(parent: torch.Tensor, n: int) -> list[int]:
    path = []
    while n >= 0:
        path.append(n)
        n = int(parent[n])
    return path[::-1]


@pytest.mark.parametrize("kw", [dict(), dict(n_kv_head=1, qkv_bias=True), dict(n_kv_head=4, tie=False)])
def test_tree_forward_equals_path_forwards(kw):
    model = tiny_model(vocab=11, **kw)
    trees = [random_tree(4, 14, 11, seed=0), random_tree(2, 16, 11, seed=1)]
    tokens = torch.stack([t for t, _ in trees])
    parent = torch.stack([p for _, p in trees])
    anc, depth = ancestor_mask(parent)
    with torch.no_grad():
        logits, hidden = model(tokens, depth, anc)
        for b in range(2):
            for n in range(tokens.shape[1]):
                path = path_of(parent[b], n)
                assert int(depth[b, n]) == len(path) - 1
                ref_logits, ref_hidden = model(tokens[b, path][None])  # plain causal forward of the path
                assert_close_to_scale(logits[b, n], ref_logits[0, -1], 1e-5)
                assert_close_to_scale(hidden[b, n], ref_hidden[0, -1], 1e-5)


def test_cached_forward_equals_uncached():
    """Feeding a sequence through the cache in chunks, at scattered slots, gives the full forward."""
    model = tiny_model(vocab=13)
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, 13, (3, 12), generator=g)
    with torch.no_grad():
        ref_logits, ref_hidden = model(seq)
        cache = model.new_cache(3, 20)
        slot_of = torch.randperm(20, generator=g)[:12]  # token i lives at slot slot_of[i]
        got = []
        for a, b in [(0, 5), (5, 6), (6, 12)]:
            mask = torch.zeros(b - a, 20, dtype=torch.bool)
            for i in range(a, b):
                mask[i - a, slot_of[: i + 1]] = True
            pos = torch.arange(a, b).expand(3, -1)
            logits, hidden = model(seq[:, a:b], pos, mask.expand(3, -1, -1), cache, slot_of[a:b].expand(3, -1))
            got.append((logits, hidden))
    assert_close_to_scale(torch.cat([l for l, _ in got], 1), ref_logits, 1e-5)
    assert_close_to_scale(torch.cat([h for _, h in got], 1), ref_hidden, 1e-5)


def test_positions_are_relative():
    """RoPE sees only relative positions: a uniform shift changes nothing, a stretched one does
    (so a node given the wrong depth would be caught)."""
    model = tiny_model(vocab=7)
    seq = torch.tensor([[1, 2, 3, 4]])
    pos = torch.arange(4)[None]
    with torch.no_grad():
        a, _ = model(seq, pos)
        shifted, _ = model(seq, pos + 3)
        stretched, _ = model(seq, 2 * pos)
    assert_close_to_scale(a, shifted, 1e-5)
    assert (a - stretched).abs().max() > 1e-3


@pytest.mark.parametrize("kw", [dict(n_embd=30, n_head=4), dict(n_head=4, n_kv_head=3), dict(n_embd=12, n_head=4)])
def test_bad_config_raises(kw):
    base = dict(vocab_size=5, n_layer=1, n_head=2, n_kv_head=1, n_embd=16, intermediate_size=8)
    with pytest.raises(ValueError):
        ModelConfig(**{**base, **kw})


NEW_ARCHS = {"qwen3": dict(head_dim=12, qk_norm=True),  # head_dim 12 != 32 / 4
             "llama3": dict(rope_type="llama3", rope_theta=500.0, rope_factor=8.0, rope_original_max_len=8)}


@pytest.mark.parametrize("arch", NEW_ARCHS)
def test_new_architectures_keep_tree_cache_and_shift_equivalences(arch):
    """What LBR relies on holds for them too: a tree forward = each path's causal forward, a chunked
    cached forward = the full one, and (RoPE scaling only rescales frequencies) a uniform position
    shift changes nothing."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=11, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, intermediate_size=64,
                                    **NEW_ARCHS[arch])).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # ones at init: make the per-head norms' weights matter
                p.normal_(1.0, 0.5)
    tokens, parent = random_tree(4, 14, 11, seed=0)
    anc, depth = ancestor_mask(parent[None])
    seq = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, _ = model(tokens[None], depth, anc)
        for n in range(len(tokens)):
            path = path_of(parent, n)
            assert_close_to_scale(logits[0, n], model(tokens[path][None])[0][0, -1], 1e-5)
        ref, _ = model(seq)
        cache, got = model.new_cache(2, 12), []
        for a, b in [(0, 5), (5, 12)]:
            mask = (torch.arange(12)[None, :] <= torch.arange(a, b)[:, None]).expand(2, -1, -1)
            pos = torch.arange(a, b).expand(2, -1)
            got.append(model(seq[:, a:b], pos, mask, cache, pos)[0])
        assert_close_to_scale(torch.cat(got, 1), ref, 1e-5)
        pos = torch.arange(12).expand(2, -1)
        assert_close_to_scale(model(seq, pos + 40)[0], ref, 1e-4)  # past the original context 8
