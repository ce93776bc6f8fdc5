"""
Pictures of an LBR rollout, rebuilt from its record (decode.TreeTrajectory) alone: the views of
`python decode.py` and `python -m tools.trace_view`. This file imports no decoder (decode.py's
`__main__` hands it one, `demo`), so the algorithm's entry point imports nothing that imports it.

For every step t: the local tree tree_t (the descendants of step t's root born at a step <= t),
each node with its token, its birth log-probability log q and the step it was born at; the
router's probability of each depth-1 subtree; the committed candidate; the pruned subtrees; and
what survives the shift (the chosen subtree, which is the next step's tree before it regrows).
A `cot` rollout is drawn as a tree of one candidate per step, a `soft` one with its K draws per
step as the candidates and their mixing weights in place of the router's π.

Two renderings of the same steps: `render_text` (a terminal) and `render_html` (one
self-contained HTML file: inline SVG, a few lines of script to step forward and back; no network).
    python decode.py                       # LBR on a tiny random model, step by step
    python decode.py --trace trace.html    # the same steps as an HTML page
    python -m tools.trace_view --help      # also: a task example, a trained run, saved rollouts
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from types import ModuleType

import torch

from model import ModelConfig, Transformer
from router import Router, RouterConfig
from tools.cli import ArgumentParser, check_int, check_out_file
from tree import children_table, parse_widths, subtree_members


@dataclass
class NodeView:
    node: int  # index in the record
    parent: int  # index of the parent node (the root for candidates)
    depth: int  # 1 = candidate
    token: int
    logq: float  # log q(n) recorded at birth
    born: int  # the step it was born at
    branch: int  # which candidate's subtree it belongs to


@dataclass
class StepView:
    step: int
    root: int  # the node the tree hangs from (the last committed token)
    root_token: int
    nodes: list[NodeView]  # tree_t, level order within each subtree
    probs: list[float]  # π(i | tree_t) per candidate (soft: the mixing weight of each draw)
    choice: int  # the committed candidate
    committed_token: int
    soft: bool = False  # a soft-token step: the candidates are its K draws, all mixed into the next input


def tree_steps(traj, row: int = 0) -> tuple[list[int], list[StepView]]:
    """(prompt tokens, one StepView per committed token) of one rollout, from the record."""
    widths, K = traj.cfg.widths, traj.cfg.widths[0]
    n = int(traj.n_nodes[row])
    parent = traj.parent[row: row + 1, :n]
    children = children_table(parent, K)
    tok, born, logq = traj.tokens[row, :n].tolist(), traj.birth_step[row, :n].tolist(), traj.logq[row, :n].tolist()
    root = int(traj.prompt_len[row]) - 1
    prompt, steps = tok[: root + 1], []
    for t in range(int(traj.length[row])):
        cand = children[0, root, :K]
        members = subtree_members(children, traj.birth_step[row: row + 1, :n], cand.view(1, 1, K),
                                  torch.tensor([[t]]), widths)[0, 0]  # (K, Ms)
        nodes = []
        for k in range(K):
            for m in members[k].tolist():
                if m < 0:
                    continue
                d, a = 1, m
                while a != int(cand[k]):
                    a, d = int(parent[0, a]), d + 1
                nodes.append(NodeView(m, int(parent[0, m]), d, tok[m], logq[m], born[m], k))
        i = int(traj.choice[row, t])
        steps.append(StepView(t, root, tok[root], nodes, traj.router_logp[row, t].exp().tolist(), i, tok[int(cand[i])]))
        root = int(cand[i])
    return prompt, steps


def sequence_steps(traj, row: int = 0) -> tuple[list[int], list[StepView]]:
    """A `cot` rollout as the special case of a tree with one candidate (π = 1) and no lookahead."""
    P = int(traj.prompt_len[row])
    prompt, steps = traj.prompt[row, :P].tolist(), []
    root, root_tok = P - 1, prompt[-1]
    for t in range(int(traj.length[row])):
        tok = int(traj.completion[row, t])
        node = P + t
        steps.append(StepView(t, root, root_tok, [NodeView(node, root, 1, tok, float(traj.logp[row, t]), t, 0)],
                              [1.0], 0, tok))
        root, root_tok = node, tok
    return prompt, steps


def soft_steps(traj, row: int = 0) -> tuple[list[int], list[StepView]]:
    """A `soft` rollout: each step's draws (K inside the soft span, one after it) as one-level
    candidates with their recorded log p and mixing weights; slot 0 is committed. Nothing is
    pruned: the weighted mixture of the draws' embeddings is the next input."""
    P, K = int(traj.prompt_len[row]), traj.tokens.shape[-1]
    prompt, steps = traj.prompt[row, :P].tolist(), []
    root, root_tok = P - 1, prompt[-1]
    for t in range(int(traj.length[row])):
        drawn = [k for k in range(K) if bool(traj.active[row, t, k])]  # slot 0, and the others in the soft span
        nodes = [NodeView(P + t * K + k, root, 1, int(traj.tokens[row, t, k]), float(traj.logp[row, t, k]), t, i)
                 for i, k in enumerate(drawn)]
        tok = int(traj.tokens[row, t, 0])
        steps.append(StepView(t, root, root_tok, nodes, [float(traj.weights[row, t, k]) for k in drawn], 0, tok,
                              soft=True))
        root, root_tok = P + t * K, tok
    return prompt, steps


def render_text(prompt: list[int], steps: list[StepView], itos=str) -> str:
    lines = ["prompt: " + " ".join(itos(t) for t in prompt)]
    if any(s.soft for s in steps):
        lines.append(SOFT_NOTE_TEXT)
    for s in steps:
        lines.append(f"step {s.step}: root {itos(s.root_token)!r}")
        for nv in s.nodes:
            mark = "=>" if nv.branch == s.choice else "  "
            head = f"{mark} [{s.probs[nv.branch]:.2f}] " if nv.depth == 1 else " " * 10
            lines.append(f"  {head}{'  ' * (nv.depth - 1)}{itos(nv.token)!r:>6}  log q {nv.logq:+.2f}  (born step {nv.born})")
        lines.append(f"  commit {itos(s.committed_token)!r}")
    return "\n".join(lines)


# the fills of the tree's boxes, named as the legend names them
COLORS = {"root": "#dde7f7", "committed": "#9be29b", "kept": "#d6f5d6", "pruned": "#e4e4e4"}
LEGEND = f"""<details open class="legend"><summary>How to read a step</summary><ul>
<li><span class="sw" style="background:{COLORS['root']}"></span> <b>root</b>: the last committed token; the local
tree of this step hangs from it, read left to right (a column per depth).</li>
<li><b>candidates</b>: the root's children (the first column after the root), each with <b>π</b>, the router's
probability of committing it (also in the table below the tree).</li>
<li><span class="sw" style="background:{COLORS['committed']};border:3px solid #1a7f1a"></span> the <b>committed</b>
candidate (thick border) and <span class="sw" style="background:{COLORS['kept']}"></span> its subtree, which
survives the shift: it becomes the next step's tree, one level up.</li>
<li><span class="sw" style="background:{COLORS['pruned']};opacity:0.5"></span> <b>pruned</b> (faded): the other
candidates and their subtrees, dropped at the commit; their log q still counts in log P(τ).</li>
<li><b>log q</b>: the log-probability with which the sibling sampler drew the node (iid: log p of the token;
distinct: renormalised over the siblings not yet drawn). <b>born step t</b>: the step that drew it (an earlier
step: it was inherited through the shift).</li></ul></details>"""


SOFT_NOTE_TEXT = ("a soft rollout: each step's candidates are its draws, [w] the weight of each in the mixture "
                  "of embeddings fed as the next input; draw 0 is committed, the others are mixed in, not pruned")
SOFT_LEGEND = ("<p class=\"legend\"><b>A soft rollout</b>: a step's candidates are its draws (K in the soft span, "
               "one after it), each with <b>w</b>, its weight in the mixture of embeddings fed as the next input "
               "(in place of the router's π). Draw 0 is committed; the others are not pruned but mixed in.</p>")


def _svg(s: StepView, itos) -> str:
    """One step's tree as SVG: the root on the left, depth to the right, one row per leaf."""
    rows: dict[int, float] = {}
    kids: dict[int, list[NodeView]] = {}
    for nv in s.nodes:
        kids.setdefault(nv.parent, []).append(nv)

    def place(node: int, y: list[float]) -> float:  # leaves take the next row; parents sit at their children's mean
        ch = kids.get(node, [])
        if not ch:
            rows[node] = y[0]
            y[0] += 1
        else:
            rows[node] = sum(place(c.node, y) for c in ch) / len(ch)
        return rows[node]

    place(s.root, [0.0])
    n_rows = max(1, max(rows.values()) + 1)
    depth = max([nv.depth for nv in s.nodes], default=0)
    bw, bh, dx, dy = 196, 42, 226, 54  # box width and height, column and row pitch (px)
    W, H = dx * depth + bw + 40, int(dy * n_rows) + 20
    pos = {s.root: (20, 10 + dy * rows[s.root])}
    for nv in s.nodes:
        pos[nv.node] = (20 + dx * nv.depth, 10 + dy * rows[nv.node])
    out = [f'<svg width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">']
    for nv in s.nodes:
        (x0, y0), (x1, y1) = pos[nv.parent], pos[nv.node]
        out.append(f'<line x1="{x0 + bw}" y1="{y0 + bh // 2}" x2="{x1}" y2="{y1 + bh // 2}" stroke="#999"/>')
    # (node, token, second line, fill, border colour, border width, opacity): the classes of the legend
    boxes = [(s.root, itos(s.root_token), "root (last committed)", COLORS["root"], "#555", 1, 1)]
    for nv in s.nodes:
        kept, cand = nv.branch == s.choice, nv.depth == 1
        mixed = s.soft and not kept  # a soft step's other draws are mixed into the next input, not pruned
        fill = COLORS["committed" if cand else "kept"] if kept else COLORS["kept" if mixed else "pruned"]
        border = ("#1a7f1a" if kept else "#555", 3 if cand and kept else 2 if cand else 1)
        extra = f"log q {nv.logq:+.2f}  " + (f"{'w' if s.soft else 'π'} {s.probs[nv.branch]:.3f}" if cand
                                               else f"born step {nv.born}")
        boxes.append((nv.node, itos(nv.token), extra, fill, *border, 1 if kept or mixed else 0.5))
    for node, token, extra, fill, stroke, width, opacity in boxes:
        x, y = pos[node]
        shown = token if len(token) <= 16 else token[:15] + "…"  # the whole token is in the tooltip
        out.append(f'<g opacity="{opacity}"><title>{html.escape(token)}</title>'
                   f'<rect x="{x}" y="{y}" width="{bw}" height="{bh}" rx="5" fill="{fill}" stroke="{stroke}" '
                   f'stroke-width="{width}"/><text x="{x + 7}" y="{y + 17}" font-size="15" font-weight="bold">'
                   f'{html.escape(shown)}</text><text x="{x + 7}" y="{y + 34}" font-size="13" fill="#222">'
                   f'{html.escape(extra)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def render_html(prompt: list[int], steps: list[StepView], itos=str, title: str = "LBR trace",
                verdict: bool | str | None = None) -> str:
    """A self-contained page: a legend, then one panel per step (tree, router probabilities, commit),
    shown one at a time. The step shown is in the URL (`trace.html#step=3` opens step 3, and
    stepping updates it), so a step can be linked. `verdict`: whether the committed answer is
    correct (True / False, e.g. a task's reward), or a line of text; shown under the title."""
    panels = []
    for s in steps:
        row_class = lambda k: "chosen" if k == s.choice else "" if s.soft else "pruned"  # noqa: E731
        probs = "".join(f'<tr class="{row_class(k)}"><td>{"draw" if s.soft else "candidate"} {k}</td>'
                        f'<td>{html.escape(itos(next((nv.token for nv in s.nodes if nv.branch == k and nv.depth == 1), -1)))}</td>'
                        f'<td class="p">{p:.3f}</td></tr>' for k, p in enumerate(s.probs))
        survivors = [nv for nv in s.nodes if nv.branch == s.choice and nv.depth > 1]
        shift = (" ".join(html.escape(itos(nv.token)) for nv in survivors) or ("nothing: the rollout ends here" if s is steps[-1] else "nothing (the tree regrows from scratch)"))
        after = ("the next input is the w-weighted mixture of the draws' embeddings" if s.soft else
                 f"the other subtrees are pruned (faded); surviving the shift (now one level up): {shift}")
        panels.append(
            f'<section class="step" id="step{s.step}"><h2>step {s.step}: root <code>{html.escape(itos(s.root_token))}</code></h2>'
            f'{_svg(s, itos)}<table><tr><th>{"draw" if s.soft else "subtree"}</th><th>token</th>'
            f'<th>{"mixing weight w" if s.soft else "router π"}</th></tr>{probs}</table>'
            f'<p>commit <b class="commit">{html.escape(itos(s.committed_token))}</b>; {after}</p></section>')
    committed = " ".join(html.escape(itos(s.committed_token)) for s in steps)
    verdict_line = ""
    if verdict is not None:
        text, cls = (("correct", "ok") if verdict else ("wrong", "bad")) if isinstance(verdict, bool) else (verdict, "")
        verdict_line = f'<p class="verdict {cls}">committed answer: <b>{html.escape(text)}</b></p>\n'
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;font-size:16px;margin:20px}} .step{{display:none}} .step.on{{display:block}}
table{{border-collapse:collapse;margin:8px 0}} td,th{{border:1px solid #ccc;padding:2px 8px}}
tr.chosen{{background:{COLORS['committed']}}} tr.pruned{{color:#888}} code{{background:#eee;padding:1px 4px}}
.legend{{font-size:14px;max-width:60em;background:#fafafa;border:1px solid #ddd;padding:4px 10px}}
.sw{{display:inline-block;width:1.4em;height:0.9em;border:1px solid #555;vertical-align:middle}}
.verdict{{font-size:18px}} .verdict.ok b{{color:#1a7f1a}} .verdict.bad b{{color:#b00020}}</style></head>
<body><h1>{html.escape(title)}</h1>
{verdict_line}<p>prompt: <code>{html.escape(" ".join(itos(t) for t in prompt))}</code></p>
<p>committed: <code>{committed}</code></p>
{LEGEND}{SOFT_LEGEND if any(s.soft for s in steps) else ""}
<p><button onclick="go(-1)">&larr; back</button> <span id="pos"></span>
<button onclick="go(1)">forward &rarr;</button> (or the arrow keys; the address ends in #step=N, a link to
this step)</p>
{"".join(panels)}
<script>
var i = 0, n = {len(steps)};
function fromHash() {{  // '#step=3' -> 3, clamped to the steps there are; anything else -> 0
  var m = /^#step=(\\d+)$/.exec(location.hash);
  return m ? Math.min(n - 1, parseInt(m[1], 10)) : 0; }}
function show() {{
  document.querySelectorAll('.step').forEach(function (e, k) {{ e.className = 'step' + (k == i ? ' on' : ''); }});
  document.getElementById('pos').textContent = 'step ' + i + ' (steps 0 to ' + (n - 1) + ')';
  if (location.hash != '#step=' + i) location.replace('#step=' + i); }}  // replace: no history entry per step
function go(d) {{ i = Math.max(0, Math.min(n - 1, i + d)); show(); }}
document.addEventListener('keydown', function (e) {{ if (e.key == 'ArrowLeft') go(-1); if (e.key == 'ArrowRight') go(1); }});
window.addEventListener('hashchange', function () {{ i = fromHash(); show(); }});  // a link or an edited address
i = fromHash();
show();
</script>
</body></html>
"""


# ---------------------------------------------------------------------------------------------
# the command (`python decode.py`, which delegates here, or `python -m tools.trace_view`)


def write_page(path: str, page: str) -> None:
    """Write the HTML page, making its folder first (`out/` does not exist on a fresh clone)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {path}")


LETTERS = "abcdefghijk"  # the tiny model's vocabulary, then <eos>


def tiny_model(seed: int, depth: int) -> tuple[Transformer, Router, int]:
    """(model, router, eos id): a tiny random model over the letters a..k and <eos>, and a router of
    lookahead `depth` made non-uniform to make the trace interesting; weights from `seed` alone."""
    torch.manual_seed(seed)  # weight init only; sampling uses the explicit generator
    model = Transformer(ModelConfig(vocab_size=len(LETTERS) + 1, n_layer=2, n_head=2, n_kv_head=1, n_embd=32,
                                    intermediate_size=64, max_seq_len=64)).eval()
    router = Router(RouterConfig(), model.cfg.n_embd, depth)
    torch.nn.init.normal_(router.mlp_out.weight, std=0.5)
    return model, router, len(LETTERS)


def tiny_itos(t: int) -> str:
    return "<eos>" if t == len(LETTERS) else LETTERS[t]


def add_demo_args(ap: ArgumentParser) -> None:
    """The flags of the tiny-model trace (python decode.py; tools/trace_view.py adds its own)."""
    ap.add_argument("--widths", default="3,2", help="tree widths, e.g. 4,2 or 3,1,1 (default 3,2)")
    ap.add_argument("--sampler", default="iid", choices=["iid", "distinct"], help="sibling sampler (default iid)")
    ap.add_argument("--steps", type=int, default=4, help="tokens to commit at most (tiny random model; default 4)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the rollout (and of the tiny model's weights): "
                    "change it to see another rollout (default 1: a rollout of four steps)")
    ap.add_argument("--cot", action="store_true", help="trace plain token-by-token sampling instead")
    ap.add_argument("--trace", help="write the trace as a self-contained HTML page to this file")


def check_demo_args(args, decoding: ModuleType) -> None:
    """Every flag of add_demo_args checked before any work (decoding: the decode module)."""
    check_int("--steps", args.steps, 1)
    if not args.cot:
        widths = decoding.LBRConfig(widths=args.widths, sampler=args.sampler).widths  # refuses bad widths
        if args.sampler == "distinct" and max(widths) > len(LETTERS) + 1:  # the check evaluate.generate makes
            raise ValueError(f"--sampler distinct draws siblings without replacement: no width may exceed the tiny "
                             f"model's vocabulary ({len(LETTERS) + 1}); got --widths {args.widths}")
    if args.trace:
        check_out_file(args.trace, "--trace")


def show(traj, steps_of, itos, title: str, trace: str | None, verdict: bool | None = None) -> None:
    """Print rollout 0 of `traj` step by step, its log P(τ) and cost; with `trace`, write the page."""
    prompt_tokens, steps = steps_of(traj, 0)
    print(render_text(prompt_tokens, steps, itos))
    print(f"log P(τ) = {float(traj.recorded_logprob()[0]):.3f}: {int(traj.forward_tokens()[0])} forward tokens "
          f"for {int(traj.length[0])} committed tokens")
    if trace:
        write_page(trace, render_html(prompt_tokens, steps, itos, title, verdict=verdict))


def demo(decoding: ModuleType) -> None:
    """`python decode.py`: one LBR (or, --cot, cot) rollout of the tiny random model on the prompt
    `a b c`, step by step. `decoding` is the decode module, handed in by its `__main__`."""
    ap = ArgumentParser(description="Trace LBR (or cot) decoding of a tiny random model step by step "
                        "(a task example, a trained run or saved rollouts: python -m tools.trace_view --help).")
    add_demo_args(ap)
    args = ap.parse_args()
    check_demo_args(args, decoding)
    model, router, eos = tiny_model(args.seed, len(parse_widths(args.widths)))
    g = torch.Generator().manual_seed(args.seed)
    if args.cot:
        traj = decoding.decode_cot(model, [[0, 1, 2]], decoding.CotConfig(max_new_tokens=args.steps), eos, g)
    else:
        traj = decoding.decode_lbr(model, router, [[0, 1, 2]], decoding.LBRConfig(
            widths=args.widths, sampler=args.sampler, max_new_tokens=args.steps), eos, g)
    show(traj, sequence_steps if args.cot else tree_steps, tiny_itos, "tiny random model", args.trace)
