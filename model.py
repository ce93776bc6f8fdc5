"""
The language model p_θ: a decoder-only transformer written from scratch.

Llama / Qwen2 / Qwen3 family: RoPE (optionally Llama 3.1's frequency scaling), RMSNorm, SwiGLU,
grouped-query attention, optional q/k/v biases (Qwen2) and per-head q/k RMSNorm (Qwen3), tied
embeddings; module names follow the Hugging Face layout so checkpoints map by name. The tiny GPT
of the synthetic experiments is a small config of the same code. What LBR needs of it: explicit
position ids (a tree node sits at (committed length - 1) + its depth), an explicit boolean attention
mask (a node attends to its ancestors only), a KV cache written at explicit slots (the decoder moves
them on commit and shift), and the final hidden states (the router reads them).

Run `python model.py` to print the tiny config, its parameter count and a forward's shapes.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ModelConfig:
    vocab_size: int = 64  # number of token ids (V)
    n_layer: int = 3  # transformer blocks
    n_head: int = 4  # query heads
    n_kv_head: int = 2  # key/value heads; n_head must be a multiple (GQA; equal = plain MHA)
    n_embd: int = 128  # model width (C)
    intermediate_size: int = 384  # hidden width of the SwiGLU MLP
    max_seq_len: int = 512  # context the decoders enforce (RoPE itself has no hard limit)
    rope_theta: float = 10000.0  # RoPE base
    norm_eps: float = 1e-5  # RMSNorm epsilon
    qkv_bias: bool = False  # biases on the q/k/v projections (Qwen2 has them)
    tie_embeddings: bool = True  # the LM head reuses the token embedding matrix
    final_norm: bool = True  # RMSNorm before the LM head (Llama/Qwen2 have it; see `tiny` for why it may go)
    head_dim: int | None = None  # width of one attention head; None: n_embd // n_head (Qwen3 sets its own)
    qk_norm: bool = False  # RMSNorm over each query and key head before RoPE (Qwen3)
    rope_type: str = "default"  # "default": plain RoPE; "llama3": Llama 3.1+ frequency scaling (the 4 fields below)
    rope_factor: float = 1.0  # llama3: the long wavelengths are stretched by this factor
    rope_low_freq_factor: float = 1.0  # llama3: wavelengths above rope_original_max_len / this are stretched fully
    rope_high_freq_factor: float = 4.0  # llama3: wavelengths below rope_original_max_len / this are kept
    rope_original_max_len: int = 8192  # llama3: the context length the model was pre-trained at

    def __post_init__(self) -> None:
        if self.head_dim is None:
            if self.n_embd % self.n_head != 0:
                raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head} (or give head_dim)")
            self.head_dim = self.n_embd // self.n_head
        if self.n_head % self.n_kv_head != 0:
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}")
        if self.head_dim <= 0 or self.head_dim % 2 != 0:
            raise ValueError(f"head_dim={self.head_dim} must be even and positive for RoPE; "
                             "change n_embd, n_head or head_dim")
        assert self.rope_type in ("default", "llama3"), self.rope_type  # the loader refuses the others by name

    @classmethod
    def tiny(cls, vocab_size: int, n_layer: int = 2, n_embd: int = 64, max_seq_len: int = 512) -> "ModelConfig":
        """The small GPT of the synthetic experiments (~0.1M parameters at the defaults). Untied head and
        no final norm: on the tasks' content-addressed lookups, small models with a final norm sat on
        the loss plateau for thousands of steps, this variant learned them within ~1.5k."""
        return cls(vocab_size=vocab_size, n_layer=n_layer, n_head=4, n_kv_head=4, n_embd=n_embd,
                   intermediate_size=3 * n_embd, max_seq_len=max_seq_len, tie_embeddings=False, final_norm=False)


def autocast(device: torch.device):
    """The one dtype policy: bf16 matmuls on CUDA, fp32 elsewhere; logits and losses always fp32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # normalise in fp32, scale in the input dtype (the order Llama/Qwen2 use)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_frequencies(cfg: ModelConfig, device: torch.device) -> Tensor:
    """The rotary frequencies ω_i = theta^(-2i/d), i < d/2 (d = head_dim), radians per position, (d/2,) fp32.

    rope_type="llama3" rescales them as Llama 3.1+ were trained (Meta's `apply_scaling`): with
    wavelength λ = 2π/ω and L the pre-training context, λ < L/high is kept, λ > L/low is divided by
    `factor` (position interpolation), and in between the two mix with weight s = (L/λ - low)/(high - low)."""
    d = cfg.head_dim
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)
    if cfg.rope_type == "default":
        return inv_freq
    L, factor = cfg.rope_original_max_len, cfg.rope_factor
    low, high = cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    s = (L / wavelen - low) / (high - low)
    smoothed = (1 - s) * inv_freq / factor + s * inv_freq
    scaled = torch.where(wavelen > L / low, inv_freq / factor, smoothed)
    return torch.where(wavelen < L / high, inv_freq, scaled)


def rope_cos_sin(pos: Tensor, inv_freq: Tensor) -> tuple[Tensor, Tensor]:
    """cos, sin of the rotary angles pos * ω_i, each (B, T, head_dim), fp32."""
    angles = pos.float()[..., None] * inv_freq  # (B, T, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (B, T, head_dim): the "rotate half" layout
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, hd) by the angles of its positions: x*cos + rotate_half(x)*sin."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)  # broadcast over heads
    return x * cos + rotated * sin


class KVCache:
    """Keys and values of every layer in one tensor (2, n_layer, B, n_kv_head, n_slots, head_dim).

    A slot is just storage: the model writes a token's k/v at the slot the caller names, and a
    query reads the slots its mask allows. One tensor, so that the decoder can move slots of
    every layer at once (LBR's commit and shift are one gather each).
    """

    def __init__(self, cfg: ModelConfig, batch: int, n_slots: int, device: torch.device,
                 dtype: torch.dtype):
        self.kv = torch.zeros(2, cfg.n_layer, batch, cfg.n_kv_head, n_slots, cfg.head_dim,
                              device=device, dtype=dtype)

    @property
    def n_slots(self) -> int:
        return self.kv.shape[4]

    def copy_slot(self, src: Tensor, dst: Tensor) -> None:
        """Row b's slot dst[b] takes the keys/values of its slot src[b], in every layer; src, dst (B,).
        (LBR's commit: the chosen candidate's k/v join the trunk, copied, never recomputed.)"""
        rows = torch.arange(self.kv.shape[2], device=self.kv.device)
        self.kv[:, :, rows, :, dst] = self.kv[:, :, rows, :, src]

    def gather_slots(self, src: Tensor) -> None:
        """Slots 0..N-1 of row b take the keys/values of its slots src[b] (B, N), all read before any
        is written. (LBR's shift: the tree region is moved by the same map as the tree itself.)"""
        kv = self.kv[:, :, :, :, : src.shape[1]]  # (2, L, B, Hkv, N, hd)
        self.kv[:, :, :, :, : src.shape[1]] = kv.gather(4, src[None, None, :, None, :, None].expand_as(kv))


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_head * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm:  # Qwen3 (QK-norm): bounds the attention logits q·k whatever the scale of x
            self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
                cache: tuple[Tensor, Tensor] | None, slots: Tensor | None) -> Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim)  # (B, T, H, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, Hkv, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim)
        if self.qk_norm:  # over each head's own vector, before the rotation
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H or Hkv, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            # write the new keys/values at their slots, then read the first S slots (S = mask width)
            cache_k, cache_v = cache  # (B, Hkv, n_slots, hd)
            where = slots[:, None, :, None].expand(B, self.n_kv_head, T, self.head_dim)
            cache_k.scatter_(2, where, k.to(cache_k.dtype))
            cache_v.scatter_(2, where, v.to(cache_v.dtype))
            S = mask.shape[-1]
            k, v = cache_k[:, :, :S].to(q.dtype), cache_v[:, :, :S].to(q.dtype)
        if mask is None:  # plain causal over the T new tokens
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None].to(q.dtype), enable_gqa=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, cache, slots) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, slots)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps) if cfg.final_norm else nn.Identity()
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        if cfg.tie_embeddings:  # one matrix for both: scaled as a head, so that logits start O(1)
            self.lm_head.weight = self.embed_tokens.weight
            nn.init.normal_(self.embed_tokens.weight, std=cfg.n_embd ** -0.5)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Fan-in init: every linear map starts with O(1) outputs for O(1) inputs, so attention
        logits start O(1) instead of near 0 (a std of 0.02 at small widths left them flat and
        slowed learning a lot); embeddings are N(0, 1)."""
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=m.in_features ** -0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=1.0)

    def hidden(self, idx: Tensor, pos: Tensor | None = None, mask: Tensor | None = None,
               cache: KVCache | None = None, slots: Tensor | None = None) -> Tensor:
        """Final hidden states (after the last norm), (B, T, C).

        idx   (B, T) token ids, or (B, T, C) input embeddings (the soft-token baseline feeds
              mixtures of token embeddings).
        pos   (B, T) position ids; default 0..T-1.
        mask  (B, T, S) bool, mask[b, t, s]: query t may attend key s. Without a cache the keys
              are the T new tokens (S = T); with a cache they are the cache's first S slots,
              after the new tokens were written. Default (no cache only): causal.
        cache a KVCache; the new tokens' keys/values are written at `slots` (B, T).
        """
        B, T = idx.shape[:2]
        if pos is None:
            pos = torch.arange(T, device=idx.device).expand(B, T)
        if cache is not None and (mask is None or slots is None):
            raise ValueError("a forward through the KV cache needs an explicit mask and slots")
        cos, sin = rope_cos_sin(pos, rope_frequencies(self.cfg, idx.device))
        x = self.embed_tokens(idx) if idx.dim() == 2 else idx  # (B, T, C)
        if mask is not None:  # boolean -> additive once, not once per layer inside attention
            mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill_(~mask, float("-inf"))
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else (cache.kv[0, i], cache.kv[1, i])
            x = layer(x, cos, sin, mask, layer_cache, slots)
        return self.norm(x)

    def head(self, h: Tensor) -> Tensor:
        """Logits in fp32 from hidden states (..., C) -> (..., V)."""
        return F.linear(h.float(), self.lm_head.weight.float())

    def forward(self, idx: Tensor, pos: Tensor | None = None, mask: Tensor | None = None,
                cache: KVCache | None = None, slots: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(logits (B, T, V) fp32, hidden (B, T, C)); arguments as in `hidden`."""
        h = self.hidden(idx, pos, mask, cache, slots)
        return self.head(h), h

    def new_cache(self, batch: int, n_slots: int) -> KVCache:
        p = self.embed_tokens.weight
        dtype = torch.bfloat16 if p.device.type == "cuda" else p.dtype
        return KVCache(self.cfg, batch, n_slots, p.device, dtype)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def main() -> None:
    from tools.cli import ArgumentParser  # the command line's helper; the model itself needs none
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


if __name__ == "__main__":
    from tools.cli import run
    run(main)
