"""
The demos behind `python model.py`, `python tree.py WIDTHS`, `python router.py` and
`python likelihood.py` (LECTURE.md shows their output): each prints what its file computes, on a
tiny random model with fixed seeds.
"""

from __future__ import annotations

import math

import torch

from decode import LBRConfig, decode_lbr
from likelihood import tree_logprob
from model import ModelConfig, Transformer
from router import FEATURES, Router, RouterConfig
from tools.cli import ArgumentParser, check_fits
from tree import TreeShape, full_tree_slots, parse_widths


def shape_bytes(widths: tuple[int, ...]) -> int:
    """The bytes of TreeShape.from_widths(widths)'s tables, from the widths alone: with N slots,
    the (N, N) bool ancestor mask plus int64 parent, depth, sib (N each), children and shift
    (N x w1 each), subtree (w1 x Ms) and subtree_depth (Ms)."""
    n = full_tree_slots(widths)
    ms = (n - 1) // widths[0]  # a candidate's subtree: the slots below the root, shared equally
    return n * n + 8 * (3 * n + 2 * n * widths[0] + widths[0] * ms + ms)


def model_demo() -> None:
    """`python model.py`."""
    ArgumentParser(description="Print the tiny model's config, its parameter count, the shapes of one forward "
                   "and its next-token entropy at initialisation (fixed seeds).").parse_args()
    cfg = ModelConfig.tiny(vocab_size=64)
    torch.manual_seed(0)  # weight init, so that the printout is reproducible (LECTURE.md shows it)
    model = Transformer(cfg)
    print(cfg)
    print(f"parameters: {model.num_params() / 1e6:.2f}M")
    idx = torch.randint(0, cfg.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    logits, h = model(idx)
    print(f"idx {tuple(idx.shape)} -> logits {tuple(logits.shape)} {logits.dtype}, hidden {tuple(h.shape)}")
    print(f"mean next-token entropy at init: {-(logits.log_softmax(-1).exp() * logits.log_softmax(-1)).sum(-1).mean():.3f}"
          f" nats (uniform: {math.log(cfg.vocab_size):.3f})")


def tree_demo() -> None:
    """`python tree.py`."""
    ap = ArgumentParser(description="Print the slot layout and the shift map of a local tree shape "
                        "(slot, depth, parent, sibling index; shift[i, j] = the old slot that new slot j "
                        "holds after committing candidate i, -1 = empty).")
    ap.add_argument("widths", nargs="?", default="4,2", help="non-increasing widths per level, e.g. 4,2 or 3,1,1 "
                    "(default 4,2)")
    widths = parse_widths(ap.parse_args().widths)
    check_fits(f"widths {','.join(map(str, widths))}, a tree of {full_tree_slots(widths)} slots,",
               shape_bytes(widths), hint="give smaller widths such as 4,2 or 3,1,1")
    print(TreeShape.from_widths(widths).layout())


def router_demo() -> None:
    """`python router.py`."""
    ArgumentParser(description="Print a router's parameter count for each feature set (root, d1, subtree) "
                   "at n_embd = 128, lookahead depth 4.").parse_args()
    for features in FEATURES:
        router = Router(RouterConfig(features=features), n_embd=128, max_depth=4)
        print(f"{features:8s} {sum(p.numel() for p in router.parameters()):6d} parameters")


def likelihood_demo() -> None:
    """`python likelihood.py`."""
    ArgumentParser(description="Decode two LBR rollouts on a tiny random model (fixed seeds) and print, per "
                   "rollout, the log P(tau) recorded while decoding and the one replayed by tree_logprob: "
                   "they agree when the replay rebuilds what the decoder saw.").parse_args()
    torch.manual_seed(0)  # weight init only
    model = Transformer(ModelConfig(vocab_size=8, n_layer=2, n_head=2, n_kv_head=1, n_embd=32,
                                    intermediate_size=64, max_seq_len=64)).eval()
    router = Router(RouterConfig(), 32, 2)
    torch.nn.init.normal_(router.mlp_out.weight, std=0.5)
    cfg = LBRConfig(widths=(3, 2), max_new_tokens=12)
    traj = decode_lbr(model, router, [[1, 2, 3], [4, 5]], cfg, stop_ids=7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        replay = tree_logprob(model, router, traj)
    for b in range(2):
        print(f"row {b}: {int(traj.length[b])} tokens, {int(traj.n_nodes[b] - traj.prompt_len[b])} nodes born; "
              f"recorded log P = {float(traj.recorded_logprob()[b]):.5f}, replayed = {float(replay.total[b]):.5f}")
