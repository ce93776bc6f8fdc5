"""
A slow, independent reference of the LBR process, for the enumeration tests.

It shares nothing with decode.py's batched slot machinery: nodes are Python tuples, the tree
is "the descendants of the current root" computed by walking parent pointers, every hidden
state and next-token distribution comes from a plain causal forward of the node's whole
root-to-node sequence, and the sibling probabilities are written out again. It enumerates
*every* trajectory of a tiny setting with its probability (optionally differentiable), and
converts them into a TreeTrajectory batch so likelihood.py can be checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from decode import LBRConfig, TreeTrajectory
from model import Transformer
from router import Router, RouterInput
from tree import TreeShape


@dataclass(frozen=True)
class RefState:
    tokens: tuple[int, ...]  # prompt tokens, then nodes in birth order
    parent: tuple[int, ...]
    birth: tuple[int, ...]  # -1 for prompt tokens
    committed: tuple[int, ...]  # committed node indices
    choices: tuple[int, ...]

    def children(self, u: int) -> list[int]:
        return [n for n, p in enumerate(self.parent) if p == u]

    def path(self, u: int) -> tuple[int, ...]:
        seq = []
        while u >= 0:
            seq.append(self.tokens[u])
            u = self.parent[u]
        return tuple(reversed(seq))

    def born(self, tok: int, parent: int, step: int) -> "RefState":
        return RefState(self.tokens + (tok,), self.parent + (parent,), self.birth + (step,), self.committed, self.choices)


@dataclass
class Leaf:
    state: RefState
    logp: Tensor  # log P(τ) by the reference (a scalar; differentiable if enumerated with grad)


def levels(state: RefState, top: int, n_levels: int) -> list[list[int]]:
    """Nodes below `top` level by level (top itself is level 0), children in birth order."""
    out = [[top]]
    for _ in range(n_levels - 1):
        out.append([c for u in out[-1] for c in state.children(u)])
    return out


def enumerate_lbr(model: Transformer, router: Router, prompt: list[int], cfg: LBRConfig, eos: int) -> list[Leaf]:
    """Every trajectory of LBR on `prompt` with its log-probability (autograd follows if enabled)."""
    widths, D, K = cfg.widths, len(cfg.widths), cfg.widths[0]
    cache: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}
    subtree_depth = TreeShape.from_widths(widths).subtree_depth

    def out(seq: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """(log p(· | seq) at temperature T, hidden state after seq) by a plain causal forward."""
        if seq not in cache:
            logits, h = model(torch.tensor([seq]))
            cache[seq] = ((logits[0, -1] / cfg.temperature).log_softmax(-1), h[0, -1])
        return cache[seq]

    def next_missing(st: RefState, root: int) -> tuple[int, int] | None:
        """The first node (level order) below depth D that lacks children, and its depth."""
        for d, nodes in enumerate(levels(st, root, D)):
            for u in nodes:
                if st.tokens[u] != eos and len(st.children(u)) < widths[d]:
                    return u, d
        return None

    leaves: list[Leaf] = []

    def step(st: RefState, logp: Tensor) -> None:
        t = len(st.committed)
        root = st.committed[-1] if st.committed else len(prompt) - 1
        missing = next_missing(st, root)
        if missing is not None:  # grow one node: enumerate its token
            u, _ = missing
            lp = out(st.path(u))[0]
            sibs = [st.tokens[s] for s in st.children(u)]
            for tok in range(model.cfg.vocab_size):
                if cfg.sampler == "iid":
                    q = lp[tok]
                elif tok in sibs:
                    continue
                else:  # without replacement: renormalise over the tokens no earlier sibling took
                    q = lp[tok] - torch.log(1 - sum(lp[s].exp() for s in sibs)) if sibs else lp[tok]
                step(st.born(tok, u, t), logp + q)
            return
        # route over the root's children; each one's subtree is all its descendants
        cands = st.children(root)
        assert len(cands) == K
        Ms = len(subtree_depth)
        sub_h = torch.zeros(K, Ms, model.cfg.n_embd)
        sub_mask = torch.zeros(K, Ms, dtype=torch.bool)
        for k, c in enumerate(cands):
            slot = 0  # level d of the subtree fills the slots of depth d (the router needs each node's depth)
            for d, lvl in enumerate(levels(st, c, D)):
                n_slots = int((subtree_depth == d).sum())
                for j, u in enumerate(lvl):
                    sub_h[k, slot + j] = out(st.path(u))[1]
                    sub_mask[k, slot + j] = True
                slot += n_slots
        root_lp, root_h = out(st.path(root))
        cand_tok = torch.tensor([st.tokens[c] for c in cands])
        x = RouterInput(sub_hidden=sub_h, sub_mask=sub_mask, sub_depth=subtree_depth, root_hidden=root_h,
                        cand_emb=model.embed_tokens(cand_tok), cand_logp=root_lp[cand_tok])
        logpi = (router(x) / cfg.router_temperature).log_softmax(-1)
        for i, c in enumerate(cands):
            nxt = RefState(st.tokens, st.parent, st.birth, st.committed + (c,), st.choices + (i,))
            if st.tokens[c] == eos or len(nxt.committed) == cfg.max_new_tokens:
                leaves.append(Leaf(nxt, logp + logpi[i]))
            else:
                step(nxt, logp + logpi[i])

    n = len(prompt)
    step(RefState(tuple(prompt), tuple(range(-1, n - 1)), (-1,) * n, (), ()), torch.zeros(()))
    return leaves


def to_trajectory(leaves: list[Leaf], prompt_len: int, cfg: LBRConfig, eos: int) -> TreeTrajectory:
    """Pack reference trajectories into the decoder's record format (recorded log-probs left 0)."""
    B = len(leaves)
    M = max(len(lf.state.tokens) for lf in leaves)
    S = max(len(lf.state.committed) for lf in leaves)
    tokens = torch.zeros(B, M, dtype=torch.long)
    parent = torch.full((B, M), -1)
    birth = torch.full((B, M), -1)
    choice = torch.zeros(B, S, dtype=torch.long)
    completion = torch.zeros(B, S, dtype=torch.long)
    for b, lf in enumerate(leaves):
        st, m, s = lf.state, len(lf.state.tokens), len(lf.state.committed)
        tokens[b, :m], parent[b, :m], birth[b, :m] = torch.tensor(st.tokens), torch.tensor(st.parent), torch.tensor(st.birth)
        choice[b, :s] = torch.tensor(st.choices)
        completion[b, :s] = torch.tensor([st.tokens[c] for c in st.committed])
    return TreeTrajectory(cfg=cfg, stop_ids=(eos,), prompt_len=torch.full((B,), prompt_len), tokens=tokens, parent=parent,
                          birth_step=birth, logq=torch.zeros(B, M),
                          n_nodes=torch.tensor([len(lf.state.tokens) for lf in leaves]), choice=choice,
                          router_logp=torch.zeros(B, S, cfg.widths[0]), completion=completion,
                          length=torch.tensor([len(lf.state.committed) for lf in leaves]))
