"""
Keeps LECTURE.md honest: its command outputs, the numbers its prose quotes and its exercise
answers are all recomputed from the code (or from an experiment's saved results), so the text
cannot drift away from what the code does. Two kinds of markers in LECTURE.md:

    <!-- run: CMD -->                  followed by a ```text block holding CMD's exact stdout
    <!-- check: NAME --> ... <!-- /check -->
                                       every string that CHECKS[NAME]() returns must appear in the
                                       text between the markers (whitespace-insensitive); each
                                       check computes its strings by running the project's code

Every exercise answer (a <details> block) must sit inside a check region, and every check must
be used. The demonstrations the text shows are printed by this file too.

    python -m tools.lecture                        # check: exit 1 and list what drifted
    python -m tools.lecture --write                # regenerate the ```text blocks from the commands' output
    python -m tools.lecture demo losing-branches   # the exact-gradient table of LECTURE.md §7
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import json
import math
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- run: (?P<cmd>.+?) -->\n```text\n(?P<out>.*?)```\n", re.S)
REGION = re.compile(r"<!-- check: (?P<name>[\w-]+) -->(?P<body>.*?)<!-- /check -->", re.S)
DETAILS = re.compile(r"<details>.*?</details>", re.S)


@functools.lru_cache(maxsize=None)
def run(cmd: str) -> str:
    """A command's stdout, run from the repository root with this Python (each command once)."""
    args = shlex.split(cmd)
    if args[:4] == ["python", "-m", "tools.lecture", "demo"] and len(args) == 5 and args[4] in DEMOS:
        return DEMOS[args[4]]() + "\n"  # the same function the command prints, without a second interpreter
    if args[0] != "python":
        raise ValueError(f"LECTURE.md commands must start with 'python': {cmd!r}")
    done = subprocess.run([sys.executable] + args[1:], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def run_here(cmd: str) -> str:
    """The stdout of a quick `python -c CODE` or `python FILE ARGS...` command, run in this
    interpreter (no second start of torch): for the commands the exercises tell a student to run."""
    import io
    import runpy
    args = shlex.split(cmd)
    buf, argv = io.StringIO(), sys.argv
    try:
        with contextlib.redirect_stdout(buf):
            if args[:2] == ["python", "-c"]:
                exec(compile(args[2], "<command>", "exec"), {"__name__": "__main__"})
            elif args[0] == "python" and (args[1].endswith(".py") or args[1] == "-m"):
                sys.argv = args[1:] if args[1] != "-m" else args[2:]
                try:
                    if args[1] == "-m":
                        runpy.run_module(args[2], run_name="__main__", alter_sys=True)
                    else:
                        runpy.run_path(str(ROOT / args[1]), run_name="__main__")
                except SystemExit as e:  # --help exits 0
                    if e.code not in (None, 0):
                        raise RuntimeError(f"{cmd!r} exited with status {e.code}") from None
            else:
                raise ValueError(f"not a quick python command: {cmd!r}")
    finally:
        sys.argv = argv
    return buf.getvalue()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global RNG seeded for the weight init inside the block, and restored after it, so
    that running the checks changes nothing for whoever runs next (the test suite)."""
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def squash(text: str) -> str:
    """Whitespace-insensitive form: prose is re-wrapped freely, numbers and code are not."""
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# demonstrations


@functools.lru_cache(maxsize=None)
def losing_branches() -> dict:
    """Exact gradients of E[R] for LBR with widths (2,), one step, on a 3-token vocabulary.

    All 18 rollouts (2 iid candidates x 3 tokens each, 2 router choices) are enumerated and
    replayed by likelihood.tree_logprob, which gives each rollout's factors with gradients. Two
    single-rollout estimators of ∇_θ E[R] (no baseline, as in the identity of LECTURE.md §7):
      every sampled node   R ∇ log P(τ)                        (what rlvr.py uses, with a baseline)
      committed path only  R ∇ [log q(committed node) + log π(i)]
    For each: bias |E[g] - ∇E[R]| / |∇E[R]| and variance E|g - E[g]|² / |∇E[R]|², exactly.
    """
    import torch

    from decode import LBRConfig, TreeTrajectory
    from likelihood import tree_logprob
    from model import ModelConfig, Transformer
    from router import Router, RouterConfig

    V, EOS, PROMPT = 3, 2, [0, 1]
    with seeded(0):  # weight init of the tiny model
        model = Transformer(ModelConfig(vocab_size=V, n_layer=1, n_head=2, n_kv_head=1, n_embd=8, intermediate_size=16,
                                        max_seq_len=16)).eval()
    cfg = LBRConfig(widths=(2,), sampler="iid", max_new_tokens=1)
    rows = [(c0, c1, i) for c0 in range(V) for c1 in range(V) for i in range(2)]
    B = len(rows)
    tokens = torch.tensor([PROMPT + [c0, c1] for c0, c1, _ in rows])  # nodes 2, 3: the two candidates
    choice = torch.tensor([[i] for *_, i in rows])
    chosen = 2 + choice[:, 0]
    traj = TreeTrajectory(
        cfg=cfg, stop_ids=(EOS,), prompt_len=torch.full((B,), 2), tokens=tokens,
        parent=torch.tensor([[-1, 0, 1, 1]]).repeat(B, 1), birth_step=torch.tensor([[-1, -1, 0, 0]]).repeat(B, 1),
        logq=torch.zeros(B, 4), n_nodes=torch.full((B,), 4), choice=choice, router_logp=torch.zeros(B, 1, 2),
        completion=tokens[torch.arange(B), chosen][:, None], length=torch.ones(B, dtype=torch.long))
    R = (traj.completion[:, 0] == 0).float()  # reward: 'a' committed
    params = list(model.parameters())

    def grad(y: torch.Tensor) -> torch.Tensor:
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(y, params, retain_graph=True)])

    out = {"rows": []}
    for name in ("uniform (fresh)", "random last layer"):
        with seeded(1):  # router init (as tests/helpers.random_router)
            router = Router(RouterConfig(width=16), model.cfg.n_embd, 1)
            if name != "uniform (fresh)":
                torch.nn.init.normal_(router.mlp_out.weight, std=2.0)
                torch.nn.init.normal_(router.mlp_out.bias, std=2.0)
        f = tree_logprob(model, router, traj)
        P = f.total.detach().exp()
        assert abs(float(P.sum()) - 1) < 1e-5, "the enumeration must cover every rollout"
        expected_reward = (f.total.exp() * R).sum()
        exact = grad(expected_reward)
        committed_path = f.model_logp[torch.arange(B), chosen] + f.router_logpi.sum(1)
        row = {"router": name, "E[R]": float(expected_reward.detach())}
        for est, logp in (("every sampled node", f.total), ("committed path only", committed_path)):
            g = torch.stack([grad(R[r] * logp[r]) for r in range(B)])  # (B, n_params)
            mean = (P[:, None] * g).sum(0)
            row[est] = {"bias": float((mean - exact).norm() / exact.norm()),
                        "variance": float((P * ((g - mean) ** 2).sum(1)).sum() / exact.norm() ** 2)}
        out["rows"].append(row)
        if name != "uniform (fresh)":  # the router scores each candidate alone: π of a pair, in either order
            pi = f.router_logpi.detach().exp().view(V, V, 2)[..., 0]  # π(first | first = c0, second = c1)
            out["prefers"] = {"<eos> over a": float(pi[2, 0]), "a over b": float(pi[0, 1]),
                              "<eos> over b": float(pi[2, 1])}
    return out


def losing_branches_table() -> str:
    d = losing_branches()
    lines = ["widths (2,), iid siblings, one step; vocabulary {a, b, <eos>}, prompt 'a b'; reward 1 if 'a' is committed",
             "all 18 rollouts enumerated; estimates R ∇ log P of ∇E[R], gradients with respect to the model's θ",
             f"{'router':20s} {'E[R]':6s} {'estimator of ∇E[R]':22s} {'bias':6s} variance"]
    for row in d["rows"]:
        for k, est in enumerate(("every sampled node", "committed path only")):
            head = f"{row['router']:20s} {row['E[R]']:<6.3f}" if k == 0 else " " * 27
            lines.append(f"{head} {est:22s} {row[est]['bias']:<6.2f} {row[est]['variance']:.2f}")
    lines.append("bias = |E[estimate] - ∇E[R]| / |∇E[R]|, variance = E|estimate - E[estimate]|² / |∇E[R]|²")
    p = d["prefers"]
    lines.append(f"the random router picks <eos> over a with probability {p['<eos> over a']:.2f}, a over b with "
                 f"{p['a over b']:.2f}, <eos> over b with {p['<eos> over b']:.2f}")
    return "\n".join(lines)


DEMOS: dict[str, Callable[[], str]] = {"losing-branches": losing_branches_table}


# ---------------------------------------------------------------------------------------------
# checks: each returns the strings its LECTURE.md region must contain, computed from the code


def _shift(widths: str):
    from tree import TreeShape
    return TreeShape.from_widths(widths).shift.tolist()


def check_shift_2_2() -> list[str]:
    s = _shift("2,2")
    new_empty = [j for j in range(len(s[0])) if s[0][j] == -1]
    pruned = sorted(set(range(1, len(s[0]))) - set(s[0]))
    return [f"`shift[0, 0] = {s[0][0]}`", f"`shift[0, 1] = {s[0][1]}`", f"`shift[0, 2] = {s[0][2]}`",
            f"slots {s[0][1]} and {s[0][2]}", f"new slots {new_empty[0]} to {new_empty[-1]} are -1",
            f"slots {', '.join(map(str, pruned))}"]


def _source(module: str, needle: str) -> str:
    """The line of `module`.py that contains `needle`, stripped; an error says the code moved."""
    text = (ROOT / f"{module}.py").read_text(encoding="utf-8")
    hits = [ln.strip() for ln in text.splitlines() if needle in ln]
    if len(hits) != 1:
        raise LookupError(f"{module}.py has {len(hits)} lines containing {needle!r} (expected 1): the code LECTURE.md "
                          "quotes has changed; update the text")
    return hits[0]


def check_mask_root() -> list[str]:
    return [f"`{_source('decode', 'tree_anc[:, 0] = False')}`"]


def _growth(widths: tuple[int, ...], steps: int) -> tuple[int, int]:
    """(forward tokens, model forwards) of one LBR rollout of `steps` tokens without EOS, tiny random model."""
    import torch

    from decode import LBRConfig, decode_lbr
    from model import ModelConfig, Transformer
    from router import Router, RouterConfig
    with seeded(0):  # weight init
        model = Transformer(ModelConfig(vocab_size=8, n_layer=1, n_head=2, n_kv_head=1, n_embd=16, intermediate_size=32,
                                        max_seq_len=512)).eval()
        router = Router(RouterConfig(width=8), model.cfg.n_embd, len(widths))
    calls, hidden = [], model.hidden
    model.hidden = lambda *a, **k: (calls.append(1), hidden(*a, **k))[1]  # count forwards (the prefill is one)
    traj = decode_lbr(model, router, [[1, 2, 3] * 5 + [4]], LBRConfig(widths=widths, max_new_tokens=steps),
                      stop_ids=(), generator=torch.Generator().manual_seed(0))  # no stop id: never stops
    return int(traj.forward_tokens()[0]), len(calls) - 1


@functools.lru_cache(maxsize=None)
def steady_state(widths: tuple[int, ...]) -> tuple[int, int]:
    """(forward tokens, waves) per committed token after step 0: the difference of two rollout lengths."""
    (f3, w3), (f5, w5) = _growth(widths, 3), _growth(widths, 5)
    assert (f5 - f3) % 2 == 0 and (w5 - w3) % 2 == 0
    return (f5 - f3) // 2, (w5 - w3) // 2


def check_steady_state() -> list[str]:
    tokens, waves = steady_state((2, 2))
    return [f"`(2, 2)` forwards {tokens} new nodes per committed token in {waves} forward"]


def check_kv_layout() -> list[str]:
    from model import ModelConfig, Transformer
    # distinct sizes, so that each axis of the cache tensor can be named by its length
    cfg = ModelConfig(vocab_size=16, n_layer=3, n_head=10, n_kv_head=5, n_embd=40, intermediate_size=8)
    with seeded(0):
        kv = Transformer(cfg).new_cache(batch=7, n_slots=11).kv
    names = {2: "2", cfg.n_layer: "n_layer", 7: "B", cfg.n_kv_head: "n_kv_head", 11: "n_slots", cfg.head_dim: "head_dim"}
    assert len(names) == 6, "the probe sizes must be distinct"
    shape = [names[n] for n in kv.shape]
    return [f"`cache.kv` of shape `({', '.join(shape)})`", f"the slot axis is axis {shape.index('n_slots')}",
            f"`{_source('model', 'self.kv[:, :, rows, :, dst]')}`",
            f"`{_source('decode', 'cache.copy_slot(')}`", f"`{_source('decode', 'cache.gather_slots(')}`"]


TRACE_CMD = "python decode.py --widths 2,2 --steps 4 --seed 1"


def _parse_trace(text: str) -> list[list[tuple[str, str, int, bool, int]]]:
    """Per step of `python decode.py`'s text trace: (token, log q, born, is candidate, branch) per node."""
    steps, branch = [], -1
    for ln in text.splitlines():
        if re.match(r"step \d+: root", ln):
            steps.append([])
            continue
        m = re.match(r"\s*(=>)?\s*(\[[\d.]+\])?\s*('[^']*')\s+log q ([-+]\d+\.\d+)\s+\(born step (\d+)\)", ln)
        if m and steps:
            is_cand = m.group(2) is not None
            branch += is_cand
            steps[-1].append((m.group(3), m.group(4), int(m.group(5)), is_cand, branch if m.group(1) else -branch - 10))
    if not steps:
        raise ValueError(f"could not read the trace of {TRACE_CMD!r}: its format changed; update tools/lecture.py")
    return steps


def check_trace_2_2() -> list[str]:
    out = run(TRACE_CMD)
    steps = _parse_trace(out)
    born = [sum(1 for n in s if n[2] == t) for t, s in enumerate(steps)]
    # the first step-1 candidate born at step 0, and the step-0 candidate it hung under
    survivor = next(n for n in steps[1] if n[3] and n[2] == 0)
    committed0 = re.findall(r"commit ('[^']*')", out)[0]
    later = sorted(set(born[1:]))
    total = re.search(r"(\d+) forward tokens for (\d+) committed tokens", out)
    assert len(later) == 1, f"later steps grew {born[1:]} nodes"
    return [f"`{survivor[0]} log q {survivor[1]} (born step 0)`", f"under candidate `{committed0}`",
            f"Step 0 grew {born[0]} nodes", f"grew only the {later[0]} new leaves",
            f"{total.group(1)} forward tokens for {total.group(2)} committed tokens"]


def check_trace_page() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "trace.html"
        done = subprocess.run([sys.executable] + shlex.split(TRACE_CMD)[1:] + ["--trace", str(page)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not page.exists():
            raise RuntimeError(f"{TRACE_CMD} --trace failed:\n{done.stderr[-2000:]}")
        if done.stdout != run(TRACE_CMD) + f"wrote {page}\n":
            raise AssertionError(f"{TRACE_CMD} --trace no longer prints the same rollout and then 'wrote PATH'")
    import torch
    with torch.random.fork_rng(devices=[]):  # decode.py seeds the global RNG for its model's init
        default = run_here("python decode.py")
    if default == run(TRACE_CMD):
        raise AssertionError("`python decode.py` now traces the lecture's rollout: the text calls it a different one")
    return [f"`{TRACE_CMD} --trace out/trace.html` prints the text above, then `wrote out/trace.html`"]


def check_losing_branches() -> list[str]:
    d = losing_branches()
    (u, r) = d["rows"]
    full, path = "every sampled node", "committed path only"
    assert u[full]["bias"] < 0.005 and u[path]["bias"] < 0.005 and r[full]["bias"] < 0.005, "an unbiased estimator"
    assert r[path]["bias"] > 0.05 and u[full]["variance"] > u[path]["variance"]
    return [f"raises the variance, from {u[path]['variance']:.2f} to {u[full]['variance']:.2f}",
            f"(bias {r[path]['bias']:.2f})", f"picks `<eos>` over `a` with probability {d['prefers']['<eos> over a']:.2f}"]


def check_replay_numerics() -> list[str]:
    import torch

    from decode import LBRConfig, decode_lbr
    from likelihood import tree_logprob
    from model import ModelConfig, Transformer
    from router import Router, RouterConfig
    with seeded(0):  # the model and router of `python likelihood.py`
        model = Transformer(ModelConfig(vocab_size=8, n_layer=2, n_head=2, n_kv_head=1, n_embd=32, intermediate_size=64,
                                        max_seq_len=64)).eval()
        router = Router(RouterConfig(), 32, 2)
        torch.nn.init.normal_(router.mlp_out.weight, std=0.5)
    gap = {}
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        traj = decode_lbr(model, router, [[1, 2, 3], [4, 5]], LBRConfig(widths=(3, 2), max_new_tokens=12), stop_ids=7,
                          generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            gap[dtype] = float((tree_logprob(model, router, traj).total - traj.recorded_logprob()).abs().max())
    if not (gap[torch.float32] < 1e-4 and gap[torch.bfloat16] > 1e-3):
        raise AssertionError(f"recorded vs replayed: fp32 {gap[torch.float32]:.1e}, bf16 {gap[torch.bfloat16]:.1e}")
    return ["agree to better than 1e-4 in fp32", "differ by more than 1e-3 with the model in bf16"]


def check_replay_cost() -> list[str]:
    tokens, prompt = 128, 16
    fwd, _ = _growth((4, 2), tokens)  # _growth's prompt has 16 tokens
    M = prompt + fwd
    trunk = prompt + tokens
    return [f"`M = {M}` nodes", f"{M * M:,} entries per row", f"about {M * M / 1e6:.1f} MB as booleans",
            f"{4 * M * M / 1e6:.1f} MB as the additive fp32 mask", f"{round(M * M / trunk ** 2)} times",
            f"{trunk * trunk:,} of a causal forward of its {trunk} trunk tokens ({prompt} prompt + {tokens} generated)"]


def check_planning_example() -> list[str]:
    import random

    from tasks import get_task
    task = get_task("planning")
    ex = task.sample(random.Random(4), "eval")
    s, edges = ex.info["start"], ex.info["edges"]
    nxt = dict(edges)  # along an arm every node has one successor
    arms = []
    for u, v in edges:
        if u == s:
            arm = [s, v]
            while arm[-1] in nxt and sum(1 for a, _ in edges if a == arm[-1]) == 1:
                arm.append(nxt[arm[-1]])
            arms.append(" ".join(map(str, arm)))
    answer = task.tokenizer.decode(ex.answer)
    return [f"`{task.tokenizer.decode(ex.prompt)}`", f"`s = {s}`", ", ".join(f"`{a}`" for a in arms[:-1]),
            f"and `{arms[-1]}`", f"target `{answer.split()[-2]}`", f"`j = {ex.info['depth']}`", f"`{answer}`"]


def check_ex_shift() -> list[str]:
    from tree import TreeShape
    shape = TreeShape.from_widths("3,1")
    s = shape.shift.tolist()
    cand2 = int(shape.subtree[2, 0])
    child = int(shape.children[cand2, 0])
    rest_empty = all(v == -1 for v in s[2][2:])
    printed = run_here("python tree.py 3,1")  # the command the exercise names shows the same table
    assert f"{shape.n_slots} slots" in printed and rest_empty
    empty = [int(shape.depth[j]) for j in range(shape.n_slots) if s[2][j] == -1]  # local depths to regrow
    words = {1: "one", 2: "two", 3: "three", 4: "four"}
    return ["Check: `python tree.py 3,1`", f"{shape.n_slots} slots", f"Candidate 2 is slot {cand2}",
            f"its child is slot {child}", f"`shift[2, 0] = {s[2][0]}`", f"`shift[2, 1] = {s[2][1]}`",
            "`shift[2, j] = -1` for every other new slot", f"`shift[1, 2] = {s[1][2]}`",
            f"{words[empty.count(1)]} new candidates and {words[empty.count(2)]} depth-2 nodes"]


EX_DISTINCT_CMD = ("python -c \"import torch; from tree import birth_logq; lp=torch.tensor([0.5,0.3,0.2]).log(); "
                   "print(birth_logq(lp[1], lp[[1,0]], torch.tensor([False,False]), 'distinct').item(), "
                   "birth_logq(lp[0], lp[[1,0]], torch.tensor([True,False]), 'distinct').item())\"")


def check_ex_distinct() -> list[str]:
    first, second = (float(x) for x in run_here(EX_DISTINCT_CMD).split())
    assert abs(first - math.log(0.3)) < 1e-6 and abs(second - math.log(0.5 / 0.7)) < 1e-6
    return [f"Check: `{EX_DISTINCT_CMD}`", f"log 0.3 = {first:.3f}", f"log(0.5 / (1 - 0.3)) = {second:.3f}"]


def check_ex_fresh_router() -> list[str]:
    import torch

    from router import Router, RouterConfig, RouterInput
    K, Ms, C = 3, 3, 16
    scores = []
    for features in ("root", "d1", "subtree"):
        with seeded(0):
            router = Router(RouterConfig(features=features), C, 2)
        g = torch.Generator().manual_seed(0)
        x = RouterInput(sub_hidden=torch.randn(5, K, Ms, C, generator=g), sub_mask=torch.ones(5, K, Ms, dtype=torch.bool),
                        sub_depth=torch.tensor([0, 1, 1]), root_hidden=torch.randn(5, C, generator=g),
                        cand_emb=torch.randn(5, K, C, generator=g), cand_logp=torch.randn(5, K, generator=g))
        scores.append(router(x))
    assert all(bool((s == 0).all()) for s in scores), "a fresh router's scores are exactly 0"
    assert "def test_fresh_router" in (ROOT / "tests" / "test_decode.py").read_text(encoding="utf-8")
    return ["Check: `python -m pytest tests/test_decode.py -k fresh -q`", "scores are all 0", "π = 1/K"]


def check_ex_shape_cost() -> list[str]:
    (t411, w411), (t222, w222) = steady_state((4, 1, 1)), steady_state((2, 2, 2))
    return [f"`4,1,1`: {t411} forward tokens per committed token, in {w411} waves",
            f"`2,2,2`: {t222} forward tokens in {w222} wave"]


def check_ex_losing_branches() -> list[str]:
    d = losing_branches()
    u, r = d["rows"]
    return [f"(variance {u['committed path only']['variance']:.2f} instead of {u['every sampled node']['variance']:.2f})",
            f"bias {u['every sampled node']['bias']:.2f} for both",
            f"probability {d['prefers']['<eos> over a']:.2f}", f"is biased ({r['committed path only']['bias']:.2f})"]


EX_ADV_CMD = ("python -c \"import torch; from rlvr import grpo_advantages; r=torch.tensor([[1.,0,0,0]]); "
              "print(grpo_advantages(r, False), grpo_advantages(r, True))\"")


def check_ex_advantages() -> list[str]:
    import torch

    from rlvr import grpo_advantages
    fmt = lambda a: "(" + ", ".join(f"{v:g}" for v in a.tolist()) + ")"  # noqa: E731
    r = torch.tensor([[1.0, 0, 0, 0]])
    plain, std = grpo_advantages(r, False), grpo_advantages(r, True).round(decimals=4)
    same = grpo_advantages(torch.ones(1, 4), True)
    assert bool((same == 0).all()) and bool((grpo_advantages(torch.ones(1, 4), False) == 0).all())
    run_here(EX_ADV_CMD)  # the command the exercise names runs
    return [f"Check: `{EX_ADV_CMD}`", f"{fmt(plain)} without", f"deviation is {float(r.std()):g}",
            f"{fmt(std)} with `normalize_std`", "every advantage is 0"]


def check_ex_router_sees() -> list[str]:
    """The numbers come from results/synthetic.json, the run that wrote results/synthetic.md."""
    saved = json.loads((ROOT / "results" / "synthetic.json").read_text(encoding="utf-8"))
    mean = lambda key, metric: sum(r["routing"][key][metric] for r in saved["results"]) / len(saved["results"])  # noqa: E731
    table = (ROOT / "results" / "synthetic.md").read_text(encoding="utf-8")
    d1, sub3 = mean("d1@1", "pass@1_j3"), mean("subtree@3", "pass@1_j3")
    for row in ("| d1 | any | ", "| subtree | 3 | "):  # the table shows the same numbers
        line = next(ln for ln in table.splitlines() if ln.startswith(row))
        assert f"{d1 if 'd1' in row else sub3:.3f}" in line, line
    oracle1 = mean("oracle@1", "pass@1_j3")
    assert d1 < 0.25 and 0.2 < 1 - oracle1 < 0.3, "the answer says: below chance; the right arm missing in about a quarter"
    help_text = run_here("python rlvr.py --help")
    assert all(flag in help_text for flag in ("--router", "--freeze-model", "--widths", "--out"))
    return [f"`d1`: {d1:.3f}", f"`oracle` row at depth 1: {oracle1:.3f} at j = 3",
            f"lookahead depth 3: {sub3:.3f}", f"`oracle` row at depth 3, is {mean('oracle@3', 'pass@1_j3'):.3f}",
            "--router d1 --freeze-model", "writes `eval.json`"]


CHECKS: dict[str, Callable[[], list[str]]] = {
    "shift-2-2": check_shift_2_2, "mask-root": check_mask_root, "steady-state": check_steady_state,
    "kv-layout": check_kv_layout, "trace-2-2": check_trace_2_2, "trace-page": check_trace_page,
    "losing-branches": check_losing_branches, "replay-numerics": check_replay_numerics,
    "replay-cost": check_replay_cost, "planning-example": check_planning_example,
    "ex-shift": check_ex_shift, "ex-distinct": check_ex_distinct, "ex-fresh-router": check_ex_fresh_router,
    "ex-shape-cost": check_ex_shape_cost, "ex-losing-branches": check_ex_losing_branches,
    "ex-advantages": check_ex_advantages, "ex-router-sees": check_ex_router_sees,
}


# ---------------------------------------------------------------------------------------------


def check_runs(text: str) -> tuple[list[str], str]:
    """(problems, text with regenerated blocks): every run block against its command's output."""
    problems, pieces, last = [], [], 0
    for m in BLOCK.finditer(text):
        try:
            out = run(m.group("cmd"))
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
            problems.append(f"run {m.group('cmd')!r}: {e}")
            continue
        out += "" if out.endswith("\n") else "\n"
        if out != m.group("out"):
            diff = "".join(difflib.unified_diff(m.group("out").splitlines(True), out.splitlines(True), "LECTURE.md",
                                                m.group("cmd")))
            problems.append(f"run {m.group('cmd')!r}: the output no longer matches the block\n{diff}")
        pieces += [text[last: m.start("out")], out]
        last = m.end("out")
    return problems, "".join(pieces) + text[last:]


def check_regions(text: str, checks: dict[str, Callable[[], list[str]]]) -> list[str]:
    """Every check region against the strings its check computes; every check used; every answer checked."""
    problems, used = [], set()
    for m in REGION.finditer(text):
        name, body = m.group("name"), squash(m.group("body"))
        used.add(name)
        if name not in checks:
            problems.append(f"check {name!r}: no such check in tools/lecture.py")
            continue
        try:
            expected = checks[name]()
        except Exception as e:  # a check that cannot compute its answer is a finding, not a crash
            problems.append(f"check {name!r}: {type(e).__name__}: {e}")
            continue
        problems += [f"check {name!r}: the text should contain {s!r} (computed from the code)"
                     for s in expected if squash(s) not in body]
    problems += [f"check {name!r} is defined in tools/lecture.py but LECTURE.md has no region for it"
                 for name in checks if name not in used]
    outside = REGION.sub("", text)
    problems += [f"an exercise answer is not inside a check region: {squash(d.group())[:80]!r}"
                 for d in DETAILS.finditer(outside)]
    return problems


def check(path: Path, write: bool = False, checks: dict | None = None) -> list[str]:
    """Everything in `path` that no longer matches the code (empty: all good). With `write`, the
    command output blocks are regenerated in place first (their drift is then not a problem)."""
    text = path.read_text(encoding="utf-8")
    problems, new_text = check_runs(text)
    if write:
        path.write_text(new_text, encoding="utf-8")
        problems = [p for p in problems if "no longer matches" not in p]
    return problems + check_regions(new_text if write else text, CHECKS if checks is None else checks)


def main() -> None:
    ap = argparse.ArgumentParser(description="Check LECTURE.md against the code (or regenerate its command outputs, "
                                 "or print one of its demonstrations).")
    ap.add_argument("demo", nargs="*", help=f"'demo NAME' prints a demonstration: {', '.join(DEMOS)}")
    ap.add_argument("--write", action="store_true", help="regenerate the command outputs in place")
    ap.add_argument("--file", default=str(ROOT / "LECTURE.md"))
    args = ap.parse_args()
    if args.demo:
        if len(args.demo) != 2 or args.demo[0] != "demo" or args.demo[1] not in DEMOS:
            ap.error(f"usage: python -m tools.lecture demo NAME, NAME one of {', '.join(DEMOS)}")
        print(DEMOS[args.demo[1]]())
        return
    before = Path(args.file).read_text(encoding="utf-8") if args.write else ""
    problems = check(Path(args.file), args.write)
    if args.write:
        changed = [m.group("cmd") for m, n in zip(BLOCK.finditer(before), BLOCK.finditer(Path(args.file).read_text(
            encoding="utf-8"))) if m.group("out") != n.group("out")]
        print(f"regenerated {len(changed)} command output(s): {changed}; review the prose around them")
    for p in problems:
        print(p)
    if problems:
        sys.exit(f"{len(problems)} problem(s) in {args.file}: the text no longer matches the code "
                 "(`python -m tools.lecture --write` regenerates command outputs; fix the prose by hand)")
    print("LECTURE.md matches the code: every command output, quoted number and exercise answer")


if __name__ == "__main__":
    main()
