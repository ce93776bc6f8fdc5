"""
The LBR router π_φ: scores each depth-1 subtree of the local tree from hidden states.

    π_φ(i | tree) = softmax_i(score_i / T_r)

Feature sets (DESIGN §1, and the ablation of the synthetic experiment):
  root     the root's hidden state + candidate i's token embedding + log p(candidate i):
           everything the model knew *before* reading the candidate (no lookahead at all);
  d1       candidate i's own post-candidate hidden state (lookahead of one token);
  subtree  the post-node hidden states of every node of candidate i's subtree (default).

One mechanism for all three: each candidate comes as a small set of feature vectors (one
vector for `root` and `d1`, the subtree's nodes for `subtree`); every vector is projected, gets
an embedding of its depth below the candidate, and the set is pooled by one learned attention
query; an MLP maps the pooled vector to the score. The MLP's last layer starts at zero, so a
fresh router is uniform over the candidates (with iid siblings, LBR then commits tokens with
exactly the base model's distribution).

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
        self.cfg = cfg
        d_in = 2 * n_embd + 1 if cfg.features == "root" else n_embd
        self.proj = nn.Linear(d_in, cfg.width)
        self.depth_emb = nn.Embedding(max_depth, cfg.width)
        self.pool_query = nn.Linear(cfg.width, 1, bias=False)
        self.mlp_in = nn.Linear(cfg.width, cfg.width)
        self.mlp_out = nn.Linear(cfg.width, 1)
        nn.init.zeros_(self.mlp_out.weight)  # fresh router = uniform over the candidates
        nn.init.zeros_(self.mlp_out.bias)

    def features(self, x: RouterInput) -> tuple[Tensor, Tensor, Tensor]:
        """The set of feature vectors per candidate: (..., K, m, d_in), mask (..., K, m), depth (m,)."""
        C = x.root_hidden.shape[-1]
        if self.cfg.features == "subtree":
            return F.rms_norm(x.sub_hidden.float(), (C,)), x.sub_mask, x.sub_depth
        one = x.sub_mask[..., :1]
        if self.cfg.features == "d1":
            return F.rms_norm(x.sub_hidden[..., :1, :].float(), (C,)), one, x.sub_depth[:1]
        root = F.rms_norm(x.root_hidden.float(), (C,))[..., None, :].expand_as(x.cand_emb)
        emb = F.rms_norm(x.cand_emb.float(), (C,))
        vec = torch.cat([root, emb, x.cand_logp[..., None].float()], dim=-1)  # (..., K, 2C+1)
        return vec[..., None, :], one, x.sub_depth[:1]

    def forward(self, x: RouterInput) -> Tensor:
        """Scores (..., K), fp32."""
        vec, mask, depth = self.features(x)
        mask = mask | (torch.arange(mask.shape[-1], device=mask.device) == 0)  # the candidate itself is always there
        z = F.gelu(self.proj(vec) + self.depth_emb(depth))  # (..., K, m, R)
        a = self.pool_query(z).squeeze(-1).masked_fill(~mask, float("-inf")).softmax(-1)  # (..., K, m)
        pooled = (a[..., None] * z).sum(-2)  # (..., K, R)
        return self.mlp_out(F.gelu(self.mlp_in(pooled))).squeeze(-1)


def main() -> None:
    for features in FEATURES:
        router = Router(RouterConfig(features=features), n_embd=128, max_depth=4)
        print(f"{features:8s} {sum(p.numel() for p in router.parameters()):6d} parameters")


if __name__ == "__main__":
    main()
