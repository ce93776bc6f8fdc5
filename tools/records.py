"""
Checks of recorded LBR trajectories that come from outside the decoder (a saved rollouts.pt, a
test's hand-made record): `check_tree_record` refuses, naming the broken invariant, any record
that no decoder could produce, so that the replay (likelihood.tree_logprob, which trusts its
input) never scores one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from decode import TreeTrajectory, is_stop
from likelihood import step_roots
from tree import ancestor_mask, children_table


def _refuse(checks: list[tuple[str, Tensor]]) -> None:
    """ValueError naming the first broken invariant; each check is (what, (B,) bool: row breaks it).
    One device sync for all of them."""
    broken = torch.stack([rows for _, rows in checks]).any(1).tolist()
    for (what, rows), bad in zip(checks, broken):
        if bad:
            raise ValueError(f"not a record any LBR decoder could produce (row {int(rows.nonzero()[0, 0])}): {what}")


def check_tree_record(traj: TreeTrajectory, vocab_size: int) -> None:
    """ValueError unless the record has the structure decode_lbr gives every trajectory (cheap,
    vectorised; run where a record comes from disk, since likelihood.tree_logprob trusts its input):
    the prompt is a chain of unborn nodes; every other node has a parent recorded before it, and
    nodes are recorded in birth order at steps 0..length-1; a sampled EOS (any of the record's
    stop ids) has no children (the last prompt token may be EOS: the root always branches); no
    node has more than w1 children, nor (distinct sampler) two children with the same token; EOS
    is committed at the last step only; padding past n_nodes was never born. Parent pointers that only point backwards also
    rule out cycles, which the ancestor walk of `ancestor_mask` would never leave."""
    B, M = traj.tokens.shape
    S, K = traj.choice.shape[1], traj.cfg.widths[0]
    shapes = {"parent": (traj.parent.shape, (B, M)), "birth_step": (traj.birth_step.shape, (B, M)),
              "logq": (traj.logq.shape, (B, M)), "completion": (traj.completion.shape, (B, S)),
              "router_logp": (traj.router_logp.shape, (B, S, K)), "prompt_len": (traj.prompt_len.shape, (B,)),
              "n_nodes": (traj.n_nodes.shape, (B,)), "length": (traj.length.shape, (B,))}
    for name, (got, want) in shapes.items():
        if tuple(got) != want:
            raise ValueError(f"a TreeTrajectory with tokens of shape {(B, M)} and choice of shape {(B, S)} needs "
                             f"{name} of shape {want}, got {tuple(got)}")
    device = traj.tokens.device
    idx, t = torch.arange(M, device=device), torch.arange(S, device=device)
    plen, length = traj.prompt_len[:, None], traj.length[:, None]
    real = idx < traj.n_nodes[:, None]
    born = real & (idx >= plen)
    par, birth, tok = traj.parent, traj.birth_step, traj.tokens
    n_kids = torch.zeros(B, M + 1, dtype=torch.long, device=device).scatter_add_(
        1, torch.where(born, par.clamp(0, M - 1), M), torch.ones_like(par))[:, :M]  # (B, M) children per node
    prev_birth = torch.cat([torch.full_like(birth[:, :1], -1), birth[:, :-1]], 1)
    taken = t < length
    _refuse([
        (f"prompt_len must lie in 1..n_nodes <= {M}", (traj.prompt_len < 1) | (traj.prompt_len > traj.n_nodes)
         | (traj.n_nodes > M)),
        (f"length must lie in 1..{S}", (traj.length < 1) | (traj.length > S)),
        (f"token ids must lie in [0, {vocab_size})", (real & ((tok < 0) | (tok >= vocab_size))).any(1)),
        ("the prompt must be a chain (parent = the previous token) of unborn nodes (birth_step -1)",
         (real & ~born & ((par != idx - 1) | (birth != -1))).any(1)),
        ("every node after the prompt needs a parent recorded before it", (born & ((par < 0) | (par >= idx))).any(1)),
        ("nodes must be recorded in birth order, born at steps 0..length-1",
         (born & ((birth < prev_birth) | (birth < 0) | (birth >= length))).any(1)),
        ("padding past n_nodes must have birth_step -1", (~real & (birth != -1)).any(1)),
        ("a sampled EOS node has children", (born & is_stop(tok, traj.stop_ids) & (n_kids > 0)).any(1)),
        (f"a node has more than w1 = {K} children", (n_kids > K).any(1)),
        (f"router choices must lie in 0..{K - 1}", (taken & ((traj.choice < 0) | (traj.choice >= K))).any(1)),
        ("EOS committed before the last step", (taken & (t < length - 1) & is_stop(traj.completion, traj.stop_ids)).any(1)),
    ])
    if traj.cfg.sampler == "distinct":  # (the sibling table needs the checks above)
        kids = children_table(torch.where(born, par, -1), K)  # (B, M, K)
        kid_tok = tok.gather(1, kids.clamp(min=0).flatten(1)).view(B, M, K)
        both = (kids[..., :, None] >= 0) & (kids[..., None, :] >= 0) & ~torch.eye(K, dtype=torch.bool, device=device)
        _refuse([("the distinct sampler gave two siblings the same token",
                  (both & (kid_tok[..., :, None] == kid_tok[..., None, :])).flatten(1).any(1))])
    # the trunk: the router's choices must reach the committed tokens, and every node must be born
    # inside the local tree of its step (depth 1..D below that step's root)
    parent = torch.where(real, par, -1)
    anc, depth = ancestor_mask(parent)  # (B, M, M), (B, M)
    roots, committed = step_roots(traj, children_table(parent, K))
    birth_root = roots.gather(1, birth.clamp(0, S - 1))  # (B, M) the root of each node's birth step
    below = depth - depth.gather(1, birth_root)
    D = len(traj.cfg.widths)
    _refuse([("a router choice names a candidate that was never born", (taken & (committed < 0)).any(1)),
             ("the completion is not the tokens the router choices commit",
              (taken & (tok.gather(1, committed.clamp(min=0)) != traj.completion)).any(1)),
             (f"a node was born outside the local tree (depth 1..{D} below its step's root)",
              (born & ~(anc.gather(2, birth_root[..., None]).squeeze(2) & (below >= 1) & (below <= D))).any(1))])
