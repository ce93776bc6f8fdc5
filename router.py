"""
The LBR router π_φ: scores each depth-1 subtree of the local tree from hidden states.

    π_φ(i | tree) = softmax_i(score_i / T_r)

Feature sets (docs/DESIGN.md §2.3, and the ablation of the synthetic experiment, §8.1), nested so that the
ablation measures exactly what the lookahead adds:
  root     the root's hidden state + candidate i's token embedding + log p(candidate i):
           everything known *before* reading the candidate (no lookahead at all);
  d1       root + candidate i's own post-candidate hidden state (a lookahead of one token);
  subtree  root + the post-node hidden states of every node of candidate i's subtree (default).

One mechanism for all three: the root information is one vector per candidate; the lookahead nodes
(none for `root`) are projected, embedded with their depth and pooled by one learned query; an MLP
maps the sum to the score. Its last layer starts at zero: a fresh router is uniform (with iid
siblings, LBR then commits tokens with exactly the base model's distribution).

Run `python router.py` to print a router's parameter count per feature set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

FEATURES = ("root", "d1", "subtree")


@dataclass
class RouterConfig:
    features: str = "subtree"  # what the router reads: 'root', 'd1' or 'subtree'
    width: int = 64  # router width R (projection, pooling and MLP)

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise ValueError(f"router features {self.features!r}: choose one of {FEATURES}")


@dataclass
class RouterInput:
    """What the router may read about the K candidates of each step (leading dims `...`)."""
    sub_hidden: Tensor  # (..., K, Ms, C) hidden states of each candidate's subtree nodes, level order
    sub_mask: Tensor  # (..., K, Ms) bool: that subtree slot holds a node (slot 0, the candidate, always)
    sub_depth: Tensor  # (Ms,) depth of each subtree slot below the candidate
    root_hidden: Tensor  # (..., C) hidden state of the root (the last committed token)
    cand_emb: Tensor  # (..., K, C) input embeddings of the candidate tokens
    cand_logp: Tensor  # (..., K) log p_θ(candidate | root) at the sampling temperature


class Router(nn.Module):
    def __init__(self, cfg: RouterConfig, n_embd: int, max_depth: int):
        super().__init__()
        self.cfg, self.max_depth = cfg, max_depth  # the deepest tree it can read (widths of at most this length)
        self.root_proj = nn.Linear(2 * n_embd + 1, cfg.width)
        self.node_proj = nn.Linear(n_embd, cfg.width)
        self.depth_emb = nn.Embedding(max_depth, cfg.width)
        self.pool_query = nn.Linear(cfg.width, 1, bias=False)
        self.mlp_in = nn.Linear(cfg.width, cfg.width)
        self.mlp_out = nn.Linear(cfg.width, 1)
        nn.init.zeros_(self.mlp_out.weight)  # fresh router = uniform over the candidates
        nn.init.zeros_(self.mlp_out.bias)

    def forward(self, x: RouterInput) -> Tensor:
        """Scores (..., K), fp32."""
        C = x.root_hidden.shape[-1]
        root = F.rms_norm(x.root_hidden.float(), (C,))[..., None, :].expand(x.cand_emb.shape)
        z = self.root_proj(torch.cat([root, F.rms_norm(x.cand_emb.float(), (C,)), x.cand_logp[..., None].float()], -1))
        if self.cfg.features != "root":
            m = 1 if self.cfg.features == "d1" else x.sub_mask.shape[-1]  # lookahead nodes read
            nodes = F.gelu(self.node_proj(F.rms_norm(x.sub_hidden[..., :m, :].float(), (C,))) + self.depth_emb(x.sub_depth[:m]))
            mask = x.sub_mask[..., :m] | (torch.arange(m, device=z.device) == 0)  # the candidate itself is always there
            a = self.pool_query(nodes).squeeze(-1).masked_fill(~mask, float("-inf")).softmax(-1)  # (..., K, m)
            z = z + (a[..., None] * nodes).sum(-2)
        return self.mlp_out(F.gelu(self.mlp_in(F.gelu(z)))).squeeze(-1)


def main() -> None:
    from tools.cli import ArgumentParser  # the command line's helper; the router itself needs none
    ArgumentParser(description="Print a router's parameter count for each feature set (root, d1, subtree) "
                   "at n_embd = 128, lookahead depth 4.").parse_args()
    for features in FEATURES:
        router = Router(RouterConfig(features=features), n_embd=128, max_depth=4)
        print(f"{features:8s} {sum(p.numel() for p in router.parameters()):6d} parameters")


if __name__ == "__main__":
    from tools.cli import run
    run(main)
