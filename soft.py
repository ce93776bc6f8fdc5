"""
The soft-token baseline (Multiplex-style, docs/DESIGN.md §5.2): at each step draw K tokens iid
from p_θ, commit slot 0, and feed the mixture Σ_k w_k E[token_k] as the next input, with
w_k ∝ p(token_k) ('prob') or 1/K ('mean'). Its likelihood:

    log P = Σ_t Σ_k log p_θ(y_{t,k} | x, soft inputs < t)

The replay rebuilds the inputs from the recorded draws and mixing weights, so it is one causal
forward. With 'mean' weighting the weights are constants and the replay is exact for any θ. With
'prob' weighting they are p_θ_old of the draws, held fixed: log P is exact at the parameters that
sampled (every on-policy step), and the gradient treats the weights as part of the input rather
than differentiating through them (which would need T sequential forwards). K = 1 is `cot`.

    python rlvr.py --task math --base out/my_math.pt --method soft --soft-until '#' --out out/my_soft
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from decode import StopIds, check_decoding, is_stop, prefill, stop_tuple
from model import Transformer, autocast
from tree import sample_categorical


@dataclass
class SoftConfig:
    k: int = 4  # tokens drawn iid per step (K); K = 1 is exactly `cot`
    weighting: str = "prob"  # next input = 'prob': probability-weighted mean of the K embeddings; 'mean': plain mean
    temperature: float = 1.0  # T of p_θ
    discrete_after: int = -1  # token id that ends the soft span (e.g. math's '#'): later steps draw one token; -1: never
    max_new_tokens: int = 64  # generation stops after this many tokens (or at EOS)

    def __post_init__(self) -> None:
        check_decoding(self.temperature, self.max_new_tokens)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k={self.k!r}: must be an integer >= 1 (tokens drawn per soft step)")
        if isinstance(self.discrete_after, bool) or not isinstance(self.discrete_after, int) or self.discrete_after < -1:
            raise ValueError(f"discrete_after={self.discrete_after!r}: must be a token id, or -1 for never")
        if self.weighting not in ("prob", "mean"):
            raise ValueError(f"weighting={self.weighting!r}: choose 'prob' or 'mean'")


@dataclass
class SoftTrajectory:
    """A batch of soft-token rollouts: K tokens drawn per step, slot 0 committed, their mixture fed on."""
    cfg: SoftConfig  # how it was sampled
    prompt: Tensor  # (B, P) prompts, right-padded with 0
    prompt_len: Tensor  # (B,)
    tokens: Tensor  # (B, T, K) the K draws of every step; slot 0 is the committed token
    active: Tensor  # (B, T, K) bool: the draw happened (slot 0 always; slots 1.. inside the soft span)
    weights: Tensor  # (B, T, K) mixing weights of the next input (recorded; sum to 1 over K per step)
    logp: Tensor  # (B, T, K) log p_θ(draw | soft prefix) recorded while sampling, 0 where inactive
    completion: Tensor  # (B, T) committed tokens (= tokens[..., 0]), 0 past `length`
    length: Tensor  # (B,) committed tokens (EOS included when it was committed)

    def recorded_logprob(self) -> Tensor:
        return self.logp.sum((1, 2))

    def forward_tokens(self) -> Tensor:
        """One forward (of a K-token mixture) per committed token but the last, as for `cot`."""
        return (self.length - 1).clamp(min=0)

    def model_factors(self) -> Tensor:
        """LogProbFactors of log P(τ) from the model, per row: every draw that happened."""
        return self.active.sum((1, 2))


@torch.no_grad()
def decode_soft(model: Transformer, prompts: list[list[int]], cfg: SoftConfig, stop_ids: StopIds,
                generator: torch.Generator) -> SoftTrajectory:
    """The soft-token baseline (Multiplex-style, docs/DESIGN.md §5.2): at each step draw K tokens iid from
    p_θ, commit slot 0, and feed the mixture Σ_k w_k E[token_k] as the next input, with
    w_k ∝ p(token_k) ('prob') or 1/K ('mean'). log P of a step = Σ_k log p(token_k). After the
    row commits `discrete_after`, steps draw one token (plain `cot`). A row ends when its committed
    token (slot 0) is a stop id, or after cfg.max_new_tokens tokens."""
    stop_ids = stop_tuple(stop_ids)
    E = model.embed_tokens.weight
    with autocast(E.device):
        T, K = cfg.max_new_tokens, cfg.k
        cache, prompt, plen, logits, _ = prefill(model, prompts, 0, T, 0)
        B, device = len(prompts), prompt.device
        tokens = torch.zeros(B, T, K, dtype=torch.long, device=device)
        active = torch.zeros(B, T, K, dtype=torch.bool, device=device)
        weights = torch.zeros(B, T, K, device=device)
        rec_logp = torch.zeros(B, T, K, device=device)
        length = plen.clone()
        n_gen = torch.zeros_like(plen)
        running = torch.ones(B, dtype=torch.bool, device=device)
        soft = torch.ones(B, dtype=torch.bool, device=device)  # still inside the soft span
        slot = torch.arange(K, device=device)
        for t in range(T):
            logp = (logits / cfg.temperature).log_softmax(-1)  # (B, V)
            tok = sample_categorical(logp[:, None, :].expand(B, K, -1), generator)  # (B, K) iid; K = 1: as cot
            act = running[:, None] & ((slot == 0) | soft[:, None])  # (B, K)
            lp = logp.gather(1, tok)  # (B, K)
            w = torch.where(act, lp.exp() if cfg.weighting == "prob" else torch.ones_like(lp), 0.0)
            w = w / w.sum(1, keepdim=True).clamp(min=1e-30)
            tokens[:, t], active[:, t], weights[:, t] = torch.where(act, tok, 0), act, w
            rec_logp[:, t] = torch.where(act, lp, 0.0)
            n_gen += running
            soft &= tok[:, 0] != cfg.discrete_after
            running &= ~is_stop(tok[:, 0], stop_ids) & (n_gen < T)
            if not running.any():
                break
            x = (w[..., None] * E[tok].float()).sum(1, keepdim=True).to(E.dtype)  # (B, 1, C) the mixture
            n_keys = int(length.max()) + 1
            mask = (torch.arange(n_keys, device=device) <= length[:, None])[:, None, :]  # (B, 1, n_keys)
            logits, _ = model(x, length[:, None], mask, cache, length[:, None])
            logits = logits[:, 0]
            length += running
        L = int(n_gen.max())
        completion = torch.where(torch.arange(L, device=device) < n_gen[:, None], tokens[:, :L, 0], 0)
        return SoftTrajectory(cfg, prompt, plen, tokens[:, :L], active[:, :L], weights[:, :L], rec_logp[:, :L],
                              completion, n_gen)


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
