"""
Log-probabilities of recorded trajectories under the *current* parameters, with gradients.

`cot` (a plain sequence):
    log P(y) = Σ_t log p_θ(y_t | x, y_<t)

`soft` (K draws per step, their embedding mixture fed on; DESIGN §2):
    log P = Σ_t Σ_k log p_θ(y_{t,k} | x, soft inputs < t)
The inputs are rebuilt from the recorded draws and mixing weights, so the replay is one causal
forward. With 'mean' weighting the weights are constants and the replay is exact for any θ. With
'prob' weighting they are p_θ_old of the draws, held fixed: log P is exact at the parameters that
sampled (every on-policy step), and the gradient treats the weights as part of the input rather
than differentiating through them (which would need T sequential forwards).

`lbr` (a tree trajectory τ, DESIGN §1):
    log P(τ) = Σ_{nodes n born in τ} log q(n) + Σ_{steps t} log π_φ(i_t | tree_t)

The replay of a tree trajectory is one forward pass over the union tree (the prompt chain, the
committed trunk, every pruned subtree), with an ancestor attention mask and position = depth:
a node's hidden state depends only on its ancestors, so this reproduces every hidden state and
every logit the decoder saw. Everything else is derived from the recorded parent pointers and
birth steps: each step's root (the last committed node), its candidates (the root's children),
and tree_t (the root's descendants born at a step <= t). A bookkeeping error in the decoder
then shows up as a replayed log P(τ) that differs from the recorded one (tests/test_decode.py).

Run `python likelihood.py` to decode a few LBR rollouts on a tiny random model and compare the
recorded log P(τ) with the replayed one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from decode import LBRConfig, SequenceTrajectory, SoftTrajectory, Trajectory, TreeTrajectory, decode_lbr
from model import ModelConfig, Transformer
from router import Router, RouterConfig, RouterInput
from tree import TreeShape, ancestor_mask, birth_logq, children_table, subtree_members


@dataclass
class Factors:
    """log P(τ) as a flat list of factors per rollout (what RL needs: totals, PPO ratios, KL)."""
    logp: Tensor  # (B, F) log-probability of each sampled factor; 0 where `mask` is False
    mask: Tensor  # (B, F) bool: the entry is a factor of this rollout
    of_model: Tensor  # (B, F) bool: a factor of p_θ (a token / a node birth); else a router choice

    def total(self) -> Tensor:
        return self.logp.sum(1)


@dataclass
class TreeLogProb:
    """The factors of log P(τ) for a batch of trajectories."""
    node_logq: Tensor  # (B, M) log q(n) for every node born; 0 for prompt tokens and padding
    router_logpi: Tensor  # (B, S) log π_φ(i_t | tree_t) for every step taken; 0 past the end
    total: Tensor  # (B,) log P(τ) = Σ node_logq + Σ router_logpi


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


def soft_logprob(model: Transformer, traj: SoftTrajectory) -> Tensor:
    """(B, T, K) log p_θ of each draw of a soft trajectory; 0 where a draw did not happen."""
    B, P = traj.prompt.shape
    T = traj.tokens.shape[1]
    device = traj.prompt.device
    E = model.embed_tokens.weight
    # inputs: the prompt's embeddings, then at position P_b + t the mixture of step t's draws
    mix = (traj.weights[..., None] * E[traj.tokens]).sum(2)  # (B, T, C); the weights are recorded constants
    x = torch.cat([E[traj.prompt], torch.zeros(B, T, E.shape[1], device=device, dtype=E.dtype)], 1)
    t = torch.arange(T, device=device)
    x = x.scatter(1, (traj.prompt_len[:, None] + t)[..., None].expand(-1, -1, E.shape[1]), mix)
    h = model.hidden(x)  # (B, P+T, C) causal
    h_pred = h.gather(1, (traj.prompt_len[:, None] + t - 1)[..., None].expand(-1, -1, h.shape[-1]))  # (B, T, C)
    logp = (model.head(h_pred) / traj.cfg.temperature).log_softmax(-1)  # (B, T, V)
    return torch.where(traj.active, logp.gather(2, traj.tokens), 0.0)


def tree_logprob(model: Transformer, router: Router, traj: TreeTrajectory) -> TreeLogProb:
    """Replay a batch of LBR trajectories with one forward pass over each union tree."""
    cfg = traj.cfg
    B, M = traj.tokens.shape
    S, K = traj.choice.shape[1], cfg.widths[0]
    device = traj.tokens.device
    node_idx = torch.arange(M, device=device)
    parent = torch.where(node_idx < traj.n_nodes[:, None], traj.parent, -1)  # padding: isolated nodes

    # one forward over the union tree
    anc, depth = ancestor_mask(parent)  # (B, M, M), (B, M)
    logits, hidden = model(traj.tokens, depth, anc)  # (B, M, V) fp32, (B, M, C)
    logp = (logits / cfg.temperature).log_softmax(-1)
    logp_flat = logp.reshape(B * M, -1)
    row0 = (torch.arange(B, device=device) * M)[:, None]  # flat index of node 0 of each row

    # Σ_n log q(n): each node's token and its siblings' tokens under the parent's distribution
    children = children_table(parent, K)  # (B, M, K) children in birth order
    par = parent.clamp(min=0)
    sibs = children.gather(1, par[..., None].expand(-1, -1, K))  # (B, M, K) all children of my parent
    sib_before = (sibs >= 0) & (sibs < node_idx[:, None])  # born before me (index order = birth order)
    par_rows = (row0 + par)[..., None]  # (B, M, 1)
    lp = logp_flat[par_rows.squeeze(-1), traj.tokens]  # (B, M)
    sib_lp = logp_flat[par_rows, traj.tokens.gather(1, sibs.clamp(min=0).reshape(B, -1)).reshape(B, M, K)]
    born = traj.birth_step >= 0
    node_logq = torch.where(born, birth_logq(lp, sib_lp, sib_before, cfg.sampler), 0.0)

    # each step's root and candidates: the root of step 0 is the last prompt token, the root of
    # step t+1 is the candidate committed at step t; the candidates are the root's children
    root, roots = traj.prompt_len - 1, []
    for t in range(S):
        roots.append(root)
        root = children[torch.arange(B, device=device), root.clamp(min=0), traj.choice[:, t]]
    roots = torch.stack(roots, 1).clamp(min=0)  # (B, S)
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
    logpi = (router(x).float() / cfg.router_temperature).log_softmax(-1)  # (B, S, K)
    taken = steps < traj.length[:, None]
    router_logpi = torch.where(taken, logpi.gather(2, traj.choice[..., None]).squeeze(2), 0.0)
    return TreeLogProb(node_logq, router_logpi, node_logq.sum(1) + router_logpi.sum(1))


def factors(model: Transformer, router: Router | None, traj: Trajectory) -> Factors:
    """Every factor of log P(τ) under the current parameters, for either kind of trajectory."""
    if isinstance(traj, TreeTrajectory):
        out = tree_logprob(model, router, traj)
        born = traj.birth_step >= 0
        taken = torch.arange(traj.choice.shape[1], device=born.device) < traj.length[:, None]
        return Factors(torch.cat([out.node_logq, out.router_logpi], 1), torch.cat([born, taken], 1),
                       torch.cat([torch.ones_like(born), torch.zeros_like(taken)], 1))
    if isinstance(traj, SoftTrajectory):
        logp = soft_logprob(model, traj).flatten(1)
        return Factors(logp, traj.active.flatten(1), torch.ones_like(traj.active.flatten(1)))
    logp = sequence_logprob(model, traj)
    mask = torch.arange(logp.shape[1], device=logp.device) < traj.length[:, None]
    return Factors(logp, mask, torch.ones_like(mask))


def main() -> None:
    torch.manual_seed(0)  # weight init only
    model = Transformer(ModelConfig(vocab_size=8, n_layer=2, n_head=2, n_kv_head=1, n_embd=32,
                                    intermediate_size=64, max_seq_len=64)).eval()
    router = Router(RouterConfig(), 32, 2)
    torch.nn.init.normal_(router.mlp_out.weight, std=0.5)
    cfg = LBRConfig(widths=(3, 2), max_new_tokens=12)
    traj = decode_lbr(model, router, [[1, 2, 3], [4, 5]], cfg, eos_id=7, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        replay = tree_logprob(model, router, traj)
    for b in range(2):
        print(f"row {b}: {int(traj.length[b])} tokens, {int(traj.n_nodes[b] - traj.prompt_len[b])} nodes born; "
              f"recorded log P = {float(traj.recorded_logprob()[b]):.5f}, replayed = {float(replay.total[b]):.5f}")


if __name__ == "__main__":
    main()
