"""
Decoding loops: `cot` (token-by-token sampling, or greedy) and `lbr` (Local Branch Routing: grow ->
route -> commit -> prune/shift), batched over prompts of different lengths, with a KV cache. Each
returns the committed tokens and a typed record of everything sampled: what likelihood.py replays
to recompute log P(τ). A row ends at the first stop id it commits (one EOS id or several); in LBR a
sampled node whose token is a stop id gets no children. The KV cache of an LBR batch has three
regions per row, [tree slots | scratch | trunk] (docs/DESIGN.md §4, LECTURE.md §3).

Run `python decode.py` to see an LBR rollout of a tiny random model step by step, and
`python decode.py --help` for its options (`--widths 3,1,1`, `--trace out/trace.html`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor

from model import Transformer, autocast
from router import Router, RouterInput
from tree import SAMPLERS, LocalTree, TreeShape, parse_widths, sample_categorical

MIN_TEMPERATURE = 1e-4  # lowest accepted: a logit gap of 0.01 is 100 nats there; lower ones overflow to inf - inf = NaN


@dataclass
class CotConfig:
    temperature: float = 1.0  # T of p_θ (ignored for the choice when greedy; the record keeps log p at T)
    greedy: bool = False  # argmax instead of sampling
    max_new_tokens: int = 64  # generation stops after this many tokens (or at EOS)

    def __post_init__(self) -> None:
        check_decoding(self.temperature, self.max_new_tokens)


@dataclass
class LBRConfig:
    widths: tuple[int, ...] = (4, 2)  # children per node at depth 1..D ('4,2': 4 candidates, 2 continuations each)
    sampler: str = "iid"  # sibling sampler: 'iid' or 'distinct' (without replacement)
    temperature: float = 1.0  # T of p_θ for every node of the tree
    router_temperature: float = 1.0  # T_r: π_φ = softmax(score / T_r)
    greedy_router: bool = False  # commit the router's argmax instead of sampling (evaluation only)
    max_new_tokens: int = 64  # tokens committed at most (stops earlier at EOS)

    def __post_init__(self) -> None:
        self.widths = parse_widths(self.widths)
        check_decoding(self.temperature, self.max_new_tokens)
        check_temperature("router_temperature", self.router_temperature, "greedy_router for an argmax router")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r}: choose one of {SAMPLERS}")


def check_temperature(name: str, value, greedy: str) -> None:
    """ValueError unless `value` is a finite number >= MIN_TEMPERATURE (NaN compares False with
    everything, so it is refused by name); `greedy` names the argmax alternative."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < MIN_TEMPERATURE:
        raise ValueError(f"{name}={value!r}: must be a finite number >= {MIN_TEMPERATURE} (lower ones underflow; "
                         f"use {greedy})")


def check_decoding(temperature: float, max_new_tokens: int) -> None:
    """The invariants every decoding config shares: a usable temperature, at least one new token."""
    check_temperature("temperature", temperature, "greedy decoding for T -> 0")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: must be an integer >= 1")


StopIds = int | Iterable[int]  # the ids that end a rollout: one EOS id, or several (a model may end a turn with any)


def stop_tuple(stop_ids: StopIds) -> tuple[int, ...]:
    """The stop ids as a tuple of ints: an int is a one-element tuple; () never stops. A chat model
    may end a turn with any of several (Qwen2.5-Instruct: `<|im_end|>`, `<|endoftext|>`); every
    decoder treats each as EOS. Raises ValueError for anything that is not an int or ints."""
    ids = (stop_ids,) if isinstance(stop_ids, int) else stop_ids
    ids = tuple(ids) if isinstance(ids, (tuple, list, set, frozenset, range)) else (ids,)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"stop ids must be token ids (ints), got {stop_ids!r}")
    return ids


def is_stop(tok: Tensor, stop_ids: tuple[int, ...]) -> Tensor:
    """Bool tensor of tok's shape: the token is one of the stop ids."""
    return torch.isin(tok, torch.tensor(stop_ids, dtype=tok.dtype, device=tok.device))


@dataclass
class SequenceTrajectory:
    """A batch of `cot` rollouts: the committed tokens are everything that was sampled."""
    temperature: float  # T the tokens were sampled at
    prompt: Tensor  # (B, P) prompts, right-padded with 0
    prompt_len: Tensor  # (B,)
    completion: Tensor  # (B, T) committed tokens, 0 past `length`
    length: Tensor  # (B,) committed tokens (EOS included when it was committed)
    logp: Tensor  # (B, T) log p_θ(token | prefix) recorded while sampling, 0 past `length`

    def recorded_logprob(self) -> Tensor:
        return self.logp.sum(1)

    def forward_tokens(self) -> Tensor:
        """Model forward tokens spent after the prompt, per row: each committed token but the last."""
        return (self.length - 1).clamp(min=0)

    def model_factors(self) -> Tensor:
        """Model factors of log P(τ) per row (a count): one per committed token."""
        return self.length


@dataclass
class TreeTrajectory:
    """A batch of LBR rollouts: every node ever born and every router decision. Nodes are indexed
    per row, the prompt tokens first (a chain), then the nodes in birth order: the union tree of
    docs/DESIGN.md §3.4, from whose `parent` and `birth_step` likelihood.py derives each step's root,
    candidates and subtrees."""
    cfg: LBRConfig  # how it was sampled (widths, sampler, temperatures); the replay uses the same
    stop_ids: tuple[int, ...]  # the ids that ended a branch (a sampled one has no children) and the rollout
    prompt_len: Tensor  # (B,)
    tokens: Tensor  # (B, M) token of every node
    parent: Tensor  # (B, M) index of the parent node; -1 for the first prompt token and padding
    birth_step: Tensor  # (B, M) step at which the node was sampled; -1 for prompt tokens and padding
    logq: Tensor  # (B, M) log q(n) recorded at birth; 0 for prompt tokens and padding
    n_nodes: Tensor  # (B,) prompt tokens + nodes born
    choice: Tensor  # (B, S) router choice i_t: index of the committed candidate among the root's children
    router_logp: Tensor  # (B, S, K) log π_φ(· | tree_t) over the candidates, recorded; 0 past `length`
    completion: Tensor  # (B, S) committed tokens, 0 past `length`
    length: Tensor  # (B,) steps taken = tokens committed
    router_input: RouterInput | None = None  # (B, S, ...) what the router read at each step, when kept
    # (decode_lbr(keep_router_input=True)): a frozen model's features, replayed without the model

    def recorded_logprob(self) -> Tensor:
        """log P(τ) as the decoder saw it: Σ log q(n) + Σ_t log π(i_t | tree_t)."""
        logpi = self.router_logp.gather(2, self.choice[..., None]).squeeze(2)
        return self.logq.sum(1) + logpi.sum(1)

    def forward_tokens(self) -> Tensor:
        """Model forward tokens spent after the prompt, per row: every node born is forwarded once."""
        return self.n_nodes - self.prompt_len

    model_factors = forward_tokens  # model factors of log P(τ) per row: one log q(n) per node born


# ---------------------------------------------------------------------------------------------


def prefill(model: Transformer, prompts: list[list[int]], reserve: int, max_new: int,
             lookahead: int) -> tuple:
    """Forward the right-padded prompts into a fresh cache whose trunk starts at slot `reserve`: returns
    cache, prompt (B, P), prompt_len (B,), the last prompt token's logits (B, V) and hidden state (B, C)."""
    cfg, device = model.cfg, model.embed_tokens.weight.device
    if len(prompts) == 0 or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (start it with a BOS token)")
    P = max(len(p) for p in prompts)
    if P + max_new + lookahead > cfg.max_seq_len:
        raise ValueError(f"a prompt of {P} tokens + max_new_tokens={max_new} + lookahead depth {lookahead} "
                         f"exceeds the model's context of {cfg.max_seq_len} tokens: shorten the prompt or "
                         "lower max_new_tokens")
    if any(not 0 <= t < cfg.vocab_size for p in prompts for t in p):
        raise ValueError(f"prompt token ids must lie in [0, {cfg.vocab_size}); check the tokenizer")
    B = len(prompts)
    prompt = torch.zeros(B, P, dtype=torch.long)
    for b, p in enumerate(prompts):
        prompt[b, : len(p)] = torch.tensor(p)
    prompt = prompt.to(device)
    plen = torch.tensor([len(p) for p in prompts], device=device)
    cache = model.new_cache(B, reserve + P + max_new)
    ar = torch.arange(P, device=device)
    causal = ar[None, :] <= ar[:, None]  # (P, P); padding positions are never read by real tokens
    mask = torch.cat([torch.zeros(P, reserve, dtype=torch.bool, device=device), causal], 1).expand(B, P, reserve + P)
    h = model.hidden(prompt, ar.expand(B, P), mask, cache, (reserve + ar).expand(B, P))
    h_last = h[torch.arange(B, device=device), plen - 1]  # (B, C)
    return cache, prompt, plen, model.head(h_last), h_last


@torch.no_grad()
def decode_cot(model: Transformer, prompts: list[list[int]], cfg: CotConfig, stop_ids: StopIds,
               generator: torch.Generator) -> SequenceTrajectory:
    """Token-by-token sampling with a KV cache (the trunk is the whole cache). A row ends at its
    first stop id (committed, as EOS) or after cfg.max_new_tokens tokens."""
    stop_ids = stop_tuple(stop_ids)
    with autocast(model.embed_tokens.weight.device):
        T = cfg.max_new_tokens
        cache, prompt, plen, logits, _ = prefill(model, prompts, 0, T, 0)
        B, device = len(prompts), prompt.device
        out = torch.zeros(B, T, dtype=torch.long, device=device)
        out_logp = torch.zeros(B, T, device=device)
        length = plen.clone()  # tokens in the cache = position of the next token
        n_gen = torch.zeros_like(plen)
        active = torch.ones(B, dtype=torch.bool, device=device)
        for t in range(T):
            logp = (logits / cfg.temperature).log_softmax(-1)  # (B, V)
            tok = logp.argmax(-1) if cfg.greedy else sample_categorical(logp, generator)
            out[:, t] = torch.where(active, tok, 0)
            out_logp[:, t] = torch.where(active, logp.gather(1, tok[:, None]).squeeze(1), 0.0)
            n_gen += active
            active &= ~is_stop(tok, stop_ids) & (n_gen < T)
            if not active.any():
                break
            # forward the new token at its position (= its slot); finished rows write past their end
            n_keys = int(length.max()) + 1
            mask = (torch.arange(n_keys, device=device) <= length[:, None])[:, None, :]  # (B, 1, n_keys)
            logits, _ = model(tok[:, None], length[:, None], mask, cache, length[:, None])
            logits = logits[:, 0]
            length += active
        L = int(n_gen.max())
        return SequenceTrajectory(cfg.temperature, prompt, plen, out[:, :L], n_gen, out_logp[:, :L])


class _TreeRecord:
    """The TreeTrajectory being written: the prompt chain, then every node in birth order, and per
    step the router's choice and probabilities. Column `spill` (past the last node a row can have)
    swallows the writes of slots a row does not need, so every write is one batched scatter."""

    def __init__(self, prompt: Tensor, plen: Tensor, steps: int, shape: TreeShape, keep_router_input: bool):
        B, P = prompt.shape
        device = prompt.device
        self.spill = P + steps * (shape.n_slots - 1)  # prompt + at most n_slots - 1 new nodes a step
        self.tokens = torch.zeros(B, self.spill + 1, dtype=torch.long, device=device)
        self.parent = torch.full_like(self.tokens, -1)
        self.birth_step = torch.full_like(self.tokens, -1)
        self.logq = torch.zeros(B, self.spill + 1, device=device)
        ar = torch.arange(P, device=device)
        self.tokens[:, :P] = prompt
        self.parent[:, :P] = torch.where(ar < plen[:, None], ar - 1, -1)
        self.n_nodes = plen.clone()
        self.choice = torch.zeros(B, steps, dtype=torch.long, device=device)
        self.router_logp = torch.zeros(B, steps, shape.widths[0], device=device)  # (B, S, K)
        self.completion = torch.zeros(B, steps, dtype=torch.long, device=device)
        self.router_inputs: list[RouterInput] | None = [] if keep_router_input else None

    def add_nodes(self, born: Tensor, tok: Tensor, parent: Tensor, logq: Tensor, step: int) -> Tensor:
        """Record the nodes born (B, n) bool with their tokens, parents' indices and log q; returns
        each one's record index (B, n) (meaningless where not born)."""
        node = self.n_nodes[:, None] + born.cumsum(1) - 1
        dst = torch.where(born, node, self.spill)
        self.tokens.scatter_(1, dst, tok)
        self.parent.scatter_(1, dst, parent)
        self.birth_step.scatter_(1, dst, torch.full_like(dst, step))
        self.logq.scatter_(1, dst, logq.float())
        self.n_nodes += born.sum(1)
        return node

    def add_step(self, step: int, active: Tensor, choice: Tensor, logpi: Tensor, tok: Tensor, x: RouterInput) -> None:
        if self.router_inputs is not None:
            self.router_inputs.append(x)
        self.choice[:, step] = torch.where(active, choice, 0)
        self.router_logp[:, step] = torch.where(active[:, None], logpi, 0.0)
        self.completion[:, step] = torch.where(active, tok, 0)

    def trajectory(self, cfg: LBRConfig, stop_ids: tuple[int, ...], plen: Tensor, n_gen: Tensor) -> TreeTrajectory:
        M, S = int(self.n_nodes.max()), int(n_gen.max())
        xs = self.router_inputs
        x = None if xs is None else RouterInput(**{f: xs[0].sub_depth if f == "sub_depth" else  # (Ms,) for all
                                                   torch.stack([getattr(xi, f) for xi in xs[:S]], 1) for f in vars(xs[0])})
        return TreeTrajectory(cfg=cfg, stop_ids=stop_ids, prompt_len=plen, tokens=self.tokens[:, :M],
                              parent=self.parent[:, :M], birth_step=self.birth_step[:, :M], logq=self.logq[:, :M],
                              n_nodes=self.n_nodes, choice=self.choice[:, :S], router_logp=self.router_logp[:, :S],
                              completion=self.completion[:, :S], length=n_gen, router_input=x)


def _node_mask(tree_anc: Tensor, slots: Tensor, trunk_len: Tensor) -> Tensor:
    """(B, n, keys) attention of new nodes at `slots` (n,): their tree ancestors, never the scratch
    slot, and the row's committed trunk (the cache layout [tree | scratch | trunk])."""
    B, n = len(trunk_len), len(slots)
    trunk = torch.arange(int(trunk_len.max()), device=slots.device) < trunk_len[:, None]  # (B, n_trunk)
    return torch.cat([tree_anc[slots].expand(B, -1, -1), torch.zeros(B, n, 1, dtype=torch.bool, device=slots.device),
                      trunk[:, None, :].expand(-1, n, -1)], dim=2)


def _grow(model: Transformer, tree: LocalTree, record: _TreeRecord, cache, cfg: LBRConfig, step: int,
          active: Tensor, trunk_len: Tensor, stops: Tensor, generator: torch.Generator) -> None:
    """Fill the local tree: wave by wave, sample every missing child whose parent has been forwarded,
    record it, and forward the new nodes (written to the cache at their slots) for their hidden states."""
    shape = tree.shape
    cand, scratch = shape.subtree[:, 0], shape.n_slots
    tree_anc = shape.anc.clone()
    tree_anc[:, 0] = False  # the root's keys/values live in the trunk, not in tree slot 0
    while True:
        missing = tree.missing(active, stops)  # (B, N)
        # the root is a committed token, so it always has children, even when it is EOS (a prompt may
        # end with one; `cot` samples there too): only a *sampled* EOS ends a branch
        missing[:, cand] |= active[:, None] & ~tree.alive[:, cand]
        slots = missing.any(0).nonzero().squeeze(1)  # (n,) slots some row needs
        if len(slots) == 0:
            return
        parent_logp = (model.head(tree.hidden[:, shape.parent[slots]]) / cfg.temperature).log_softmax(-1)  # (B, n, V)
        tok, logq = tree.sample_children(missing, slots, parent_logp, cfg.sampler, generator)  # (B, n)
        born = missing[:, slots]
        node = record.add_nodes(born, tok, tree.node[:, shape.parent[slots]], logq, step)
        # a node at depth d sits at position (root position + d) and sees the trunk and its ancestors
        pos = (trunk_len - 1)[:, None] + shape.depth[slots]
        h = model.hidden(tok, pos, _node_mask(tree_anc, slots, trunk_len), cache, torch.where(born, slots, scratch))
        tree.add(missing, slots, tok, h, node)


def _route(model: Transformer, router: Router, tree: LocalTree, cfg: LBRConfig,
           generator: torch.Generator) -> tuple[Tensor, Tensor, RouterInput]:
    """Score the depth-1 subtrees and draw the candidate to commit: (choice (B,), log π (B, K), the router's input)."""
    shape = tree.shape
    cand_tok = tree.tok[:, shape.subtree[:, 0]]  # (B, K)
    root_logp = (model.head(tree.hidden[:, 0]) / cfg.temperature).log_softmax(-1)  # (B, V)
    x = RouterInput(sub_hidden=tree.hidden[:, shape.subtree], sub_mask=tree.alive[:, shape.subtree],
                    sub_depth=shape.subtree_depth, root_hidden=tree.hidden[:, 0],
                    cand_emb=model.embed_tokens(cand_tok), cand_logp=root_logp.gather(1, cand_tok))
    logpi = (router(x).float() / cfg.router_temperature).log_softmax(-1)  # (B, K)
    return (logpi.argmax(-1) if cfg.greedy_router else sample_categorical(logpi, generator)), logpi, x


@torch.no_grad()
def decode_lbr(model: Transformer, router: Router, prompts: list[list[int]], cfg: LBRConfig, stop_ids: StopIds,
               generator: torch.Generator, keep_router_input: bool = False) -> TreeTrajectory:
    """LBR decoding: at every step grow the local tree, route, commit, prune and shift. A sampled
    node whose token is a stop id gets no children; a row ends when it commits one, or after
    cfg.max_new_tokens tokens. The caller checks that the router reads trees this deep and that
    the sampler suits the vocabulary (evaluate.generate). keep_router_input: record what the router
    read at every step (TreeTrajectory.router_input), for router-only RL on a frozen model."""
    stop_ids = stop_tuple(stop_ids)
    device = model.embed_tokens.weight.device
    shape = TreeShape.from_widths(cfg.widths).to(device)
    scratch, trunk_start = shape.n_slots, shape.n_slots + 1  # cache layout: [tree slots | scratch | trunk]
    with autocast(device):
        cache, prompt, plen, _, h = prefill(model, prompts, trunk_start, cfg.max_new_tokens, len(cfg.widths))
        rows = torch.arange(len(prompts), device=device)
        record = _TreeRecord(prompt, plen, cfg.max_new_tokens, shape, keep_router_input)
        tree = LocalTree.start(shape, prompt[rows, plen - 1], h, plen - 1)
        stops = torch.tensor(stop_ids, dtype=torch.long, device=device)
        trunk_len = plen.clone()  # trunk tokens (the root is the last one)
        n_gen = torch.zeros_like(plen)
        active = torch.ones(len(prompts), dtype=torch.bool, device=device)
        for t in range(cfg.max_new_tokens):
            _grow(model, tree, record, cache, cfg, t, active, trunk_len, stops, generator)
            choice, logpi, x = _route(model, router, tree, cfg, generator)
            # commit: the chosen node joins the trunk; its keys/values are copied, not recomputed
            chosen = shape.subtree[:, 0][choice]  # (B,) slot
            tok = tree.tok[rows, chosen]
            record.add_step(t, active, choice, logpi, tok, x)
            cache.copy_slot(chosen, torch.where(active, trunk_start + trunk_len, scratch))
            trunk_len += active
            n_gen += active
            active &= ~is_stop(tok, stop_ids) & (n_gen < cfg.max_new_tokens)
            if not active.any():
                break
            # prune + shift: the chosen subtree becomes the tree; move the cache's tree region alike
            cache.gather_slots(tree.commit(choice).clamp(min=0))  # (B, N) source slot of each slot
        return record.trajectory(cfg, stop_ids, plen, n_gen)


if __name__ == "__main__":
    # `python decode.py [--trace FILE]`: a tiny rollout step by step; the view imports no decoder, it is handed this one
    import sys
    from tools.cli import run
    from tools.trace_render import demo
    run(lambda: demo(sys.modules[__name__]))
