"""Small shared helpers for the tests: tiny random models and a chi-square test."""

from __future__ import annotations

import torch
from torch import Tensor

from model import ModelConfig, Transformer
from router import Router, RouterConfig


def tiny_model(vocab: int = 6, seed: int = 0, n_layer: int = 2, n_embd: int = 32, n_head: int = 4,
               n_kv_head: int = 2, qkv_bias: bool = False, tie: bool = True, max_seq_len: int = 128) -> Transformer:
    """A random tiny model (fan-in init: next-token distributions clearly non-uniform, not degenerate)."""
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(vocab_size=vocab, n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head,
                                    n_embd=n_embd, intermediate_size=2 * n_embd, max_seq_len=max_seq_len,
                                    qkv_bias=qkv_bias, tie_embeddings=tie))
    with torch.no_grad():
        if qkv_bias:  # biases start at zero; make them matter
            for layer in model.layers:
                layer.self_attn.q_proj.bias.normal_(0, 0.5)
                layer.self_attn.k_proj.bias.normal_(0, 0.5)
    return model.eval()


def random_router(model: Transformer, depth: int, features: str = "subtree", seed: int = 1, std: float = 1.0) -> Router:
    """A router whose (normally zero) last layer is random: non-uniform, and every weight gets gradient."""
    torch.manual_seed(seed)
    router = Router(RouterConfig(features=features, width=16), model.cfg.n_embd, depth)
    torch.nn.init.normal_(router.mlp_out.weight, std=std)
    torch.nn.init.normal_(router.mlp_out.bias, std=std)
    return router


def chi2_pvalue(counts: Tensor, probs: Tensor, min_expected: float = 5.0) -> float:
    """Pearson chi-square goodness of fit of `counts` to `probs`; cells with small expected counts
    are pooled into one. Returns the p-value (regularised upper incomplete gamma)."""
    counts, probs = counts.double().flatten(), probs.double().flatten()
    n = counts.sum()
    expected = probs / probs.sum() * n
    small = expected < min_expected
    if small.any():
        counts = torch.cat([counts[~small], counts[small].sum()[None]])
        expected = torch.cat([expected[~small], expected[small].sum()[None]])
    stat = ((counts - expected) ** 2 / expected).sum()
    df = len(counts) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat / 2))


# Tolerances for comparing the same quantity computed by two different float32 routes (a tree vs
# plain forwards, a replay vs the record, a gradient two ways). Rounding error grows with the
# magnitudes summed, so a bound is relative to the scale of the whole tensor, never a fixed atol
# near 1e-7: an entry near zero of a gradient whose largest entry is 1 can be off by ~10 ulps of 1
# (cancellation) on another CPU's summation order. Every real bug these tests exist for (a missing
# factor of 2, a dropped log-probability term, a wrong mask or position) moves a value by O(its scale).

# log P(tau) totals are sums of up to a few hundred log-factors of magnitude ~1 nat; float32 sums of
# n terms are off by ~n * eps * sum|terms| at worst (measured: 3e-5 at |log P| = 160). 1e-5 relative
# (~80 ulps) plus 1e-4 absolute still catches any dropped factor: the smallest |log q| of a sampled
# token of the tiny test models is ~1e-2.
LOGP_TOL = dict(atol=1e-4, rtol=1e-5)


def assert_close_to_scale(got: Tensor, want: Tensor, rel: float) -> None:
    """Every entry of `got` within `rel` x max|want| of `want` (see the note above: rounding of a
    sum scales with its largest terms, so entries near zero get the tensor's tolerance, not their own)."""
    scale = float(want.detach().abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=0, atol=rel * max(scale, torch.finfo(torch.float32).tiny))
