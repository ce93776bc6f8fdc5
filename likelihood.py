"""
Log-probabilities of recorded trajectories under the *current* parameters, with gradients.

    cot:  log P(y) = Σ_t log p_θ(y_t | x, y_<t)
    lbr:  log P(τ) = Σ_{nodes n born in τ} log q(n) + Σ_{steps t} log π_φ(i_t | tree_t)   (docs/DESIGN.md §3)

A tree trajectory is replayed with one forward over its union tree (prompt, committed trunk, every
pruned subtree; ancestor mask, position = depth), which reproduces every hidden state and logit the
decoder saw (docs/DESIGN.md §3.4); a bookkeeping error shows up as a replayed log P(τ) that differs
from the recorded one (tests/test_decode.py).

Run `python likelihood.py` to compare recorded and replayed log P(τ) of a few tiny LBR rollouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from decode import SequenceTrajectory, TreeTrajectory
from model import Transformer
from router import Router, RouterInput
from tree import TreeShape, ancestor_mask, birth_logq, children_table, subtree_members


@dataclass
class LogProbFactors:
    """The factors of log P(τ) for a batch of rollouts of any method, under the current parameters:

        log P(τ) = Σ model factors + Σ router factors

    A model factor is log p_θ of a sampled token (`cot`, each draw of `soft`) or log q(n) of a node
    born (`lbr`); a router factor is log π_φ(i_t | tree_t) of a step (`lbr` only). RL reads them as
    one flat list per rollout (`logp`, `mask`, `is_model_factor`: PPO ratios and KL per factor)."""
    model_logp: Tensor  # (B, F) model factors: cot (B, T) tokens, soft (B, T*K) draws, lbr (B, M) nodes; 0 where masked
    model_mask: Tensor  # (B, F) bool: the entry is a factor (a committed token, a draw that happened, a node born)
    router_logpi: Tensor  # (B, S) log π_φ(i_t | tree_t) of every step taken, 0 past the end; (B, 0) without a router
    router_mask: Tensor  # (B, S) bool: step t was taken
    router_entropy: Tensor  # (B, S) entropy H(π_φ(· | tree_t)) in nats of every step taken, 0 past the end (not a factor)

    @staticmethod
    def without_router(logp: Tensor, mask: Tensor) -> "LogProbFactors":
        """The factors of a method without a router (`cot`, `soft`): logp, mask (B, F)."""
        no_router = logp.new_zeros(logp.shape[0], 0)
        return LogProbFactors(logp, mask, no_router, no_router.bool(), no_router)

    @property
    def total(self) -> Tensor:
        """(B,) log P(τ)."""
        return self.model_logp.sum(1) + self.router_logpi.sum(1)

    @property
    def logp(self) -> Tensor:
        """(B, F + S) every factor, model factors first; 0 where `mask` is False."""
        return torch.cat([self.model_logp, self.router_logpi], 1)

    @property
    def mask(self) -> Tensor:
        """(B, F + S) bool: the entry of `logp` is a factor of this rollout."""
        return torch.cat([self.model_mask, self.router_mask], 1)

    @property
    def is_model_factor(self) -> Tensor:
        """(B, F + S) bool: the entry of `logp` is a factor of p_θ (else a router choice)."""
        return torch.cat([torch.ones_like(self.model_mask), torch.zeros_like(self.router_mask)], 1)

    def keep_rows(self, keep: Tensor) -> "LogProbFactors":
        """The factors of the rollouts where `keep` (B,) bool is True; the others have none (all
        masked, 0 log-probability and entropy), so no loss term reads them."""
        k = keep[:, None]
        return LogProbFactors(torch.where(k, self.model_logp, 0.0), self.model_mask & k,
                       torch.where(k, self.router_logpi, 0.0), self.router_mask & k,
                       torch.where(k, self.router_entropy, 0.0))


def sequence_logprob(model: Transformer, traj: SequenceTrajectory) -> Tensor:
    """(B, T) log p_θ of each committed token at the recorded temperature; 0 past `length`."""
    B, P = traj.prompt.shape
    T = traj.completion.shape[1]
    device = traj.prompt.device
    # row b is prompt[b, :P_b] followed by its completion; positions past the end are never read
    seq = torch.cat([traj.prompt, torch.zeros(B, T, dtype=torch.long, device=device)], 1)
    t = torch.arange(T, device=device)
    seq.scatter_(1, traj.prompt_len[:, None] + t, traj.completion)
    h = model.hidden(seq)  # (B, P+T, C) causal
    h_pred = h.gather(1, (traj.prompt_len[:, None] + t - 1)[..., None].expand(-1, -1, h.shape[-1]))  # (B, T, C)
    logp = (model.head(h_pred) / traj.temperature).log_softmax(-1)
    tok_logp = logp.gather(2, traj.completion[..., None]).squeeze(2)
    return torch.where(t < traj.length[:, None], tok_logp, 0.0)


def step_roots(traj: TreeTrajectory, children: Tensor) -> tuple[Tensor, Tensor]:
    """Each step's root and the node it commits, rebuilt from the record: the root of step 0 is the
    last prompt token, the root of step t+1 the candidate committed at step t (the choice-th child of
    the root). Returns roots (B, S) and committed (B, S) node indices (-1 where no such child)."""
    B, S, K = *traj.choice.shape, children.shape[-1]
    rows = torch.arange(B, device=traj.tokens.device)
    root, roots, committed = traj.prompt_len - 1, [], []
    for t in range(S):
        roots.append(root)
        root = children[rows, root.clamp(min=0), traj.choice[:, t].clamp(0, K - 1)]
        committed.append(root)
    return torch.stack(roots, 1).clamp(min=0), torch.stack(committed, 1)


def tree_logprob(model: Transformer, router: Router, traj: TreeTrajectory) -> LogProbFactors:
    """Replay a batch of LBR trajectories with one forward pass over each union tree: the model
    factors are log q(n) of every node (B, M), in record order (0 for prompt tokens and padding),
    the router factors log π_φ(i_t | tree_t) of every step (B, S).

    The record is trusted: one from the decoder is well formed by construction; one read from disk
    is checked where it is read (tools/records.check_tree_record)."""
    cfg = traj.cfg
    B, M = traj.tokens.shape
    S, K = traj.choice.shape[1], cfg.widths[0]
    device = traj.tokens.device
    node_idx = torch.arange(M, device=device)
    parent = torch.where(node_idx < traj.n_nodes[:, None], traj.parent, -1)  # padding: isolated nodes
    anc, depth = ancestor_mask(parent)  # (B, M, M), (B, M)
    children = children_table(parent, K)  # (B, M, K) children in birth order
    roots, _ = step_roots(traj, children)  # (B, S)
    born = traj.birth_step >= 0

    # one forward over the union tree
    logits, hidden = model(traj.tokens, depth, anc)  # (B, M, V) fp32, (B, M, C)
    logp = (logits / cfg.temperature).log_softmax(-1)
    logp_flat = logp.reshape(B * M, -1)
    row0 = (torch.arange(B, device=device) * M)[:, None]  # flat index of node 0 of each row

    # Σ_n log q(n): each node's token and its siblings' tokens under the parent's distribution
    par = parent.clamp(min=0)
    sibs = children.gather(1, par[..., None].expand(-1, -1, K))  # (B, M, K) all children of my parent
    sib_before = (sibs >= 0) & (sibs < node_idx[:, None])  # born before me (index order = birth order)
    par_rows = (row0 + par)[..., None]  # (B, M, 1)
    lp = logp_flat[par_rows.squeeze(-1), traj.tokens]  # (B, M)
    sib_lp = logp_flat[par_rows, traj.tokens.gather(1, sibs.clamp(min=0).reshape(B, -1)).reshape(B, M, K)]
    node_logq = torch.where(born, birth_logq(lp, sib_lp, sib_before, cfg.sampler), 0.0)

    # the router's view of each step: the candidates are the root's children (rebuilt above)
    cand = children.gather(1, roots[..., None].expand(-1, -1, K))  # (B, S, K)
    steps = torch.arange(S, device=device).expand(B, S)
    members = subtree_members(children, traj.birth_step, cand, steps, cfg.widths)  # (B, S, K, Ms)

    # Σ_t log π(i_t | tree_t)
    C = hidden.shape[-1]
    hidden_flat = hidden.reshape(B * M, C)
    cand_tok = traj.tokens.gather(1, cand.clamp(min=0).reshape(B, -1)).reshape(B, S, K)
    x = RouterInput(
        sub_hidden=hidden_flat[row0[..., None, None] + members.clamp(min=0)],  # (B, S, K, Ms, C)
        sub_mask=members >= 0,
        sub_depth=TreeShape.from_widths(cfg.widths).subtree_depth.to(device),  # same layout as the decoder's
        root_hidden=hidden_flat[row0 + roots],  # (B, S, C)
        cand_emb=model.embed_tokens(cand_tok),
        cand_logp=logp_flat[(row0 + roots)[..., None], cand_tok])  # (B, S, K)
    return LogProbFactors(node_logq, born, *router_factors(router, x, traj))


def router_factors(router: Router, x: RouterInput, traj: TreeTrajectory) -> tuple[Tensor, Tensor, Tensor]:
    """The router's factors of a trajectory from its inputs x (B, S, ...): log π_φ(i_t | tree_t) (B, S),
    the steps taken (B, S) bool, and the entropy of π_φ(· | tree_t) in nats (B, S); 0 past `length`."""
    taken = torch.arange(traj.choice.shape[1], device=traj.choice.device) < traj.length[:, None]
    logpi = (router(x).float() / traj.cfg.router_temperature).log_softmax(-1)  # (B, S, K)
    router_logpi = torch.where(taken, logpi.gather(2, traj.choice.clamp(0, logpi.shape[-1] - 1)[..., None]).squeeze(2), 0.0)
    entropy = torch.where(taken, -(logpi.exp() * logpi).sum(-1), 0.0)  # for an entropy bonus (rlvr.py)
    return router_logpi, taken, entropy


def frozen_model_logprob(router: Router, traj: TreeTrajectory) -> LogProbFactors:
    """tree_logprob's factors when the model has not changed since decoding (router-only RL), from
    the record alone: the model factors are the recorded log q(n), the router's are computed from
    the recorded inputs (traj.router_input). Both depend on no trained parameter, so values and
    gradients are tree_logprob's (up to float rounding) without forwarding the union tree."""
    assert traj.router_input is not None, "decode with keep_router_input=True"
    return LogProbFactors(traj.logq, traj.birth_step >= 0, *router_factors(router, traj.router_input, traj))


def main() -> None:
    from tools.cli import ArgumentParser  # the command line's helper; the likelihood itself needs none
    from decode import LBRConfig, decode_lbr
    from model import ModelConfig
    from router import RouterConfig
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


if __name__ == "__main__":
    from tools.cli import run
    run(main)
