"""
Pictures of an LBR rollout, rebuilt from its record (decode.TreeTrajectory) alone.

For every step t: the local tree tree_t (the descendants of step t's root born at a step <= t),
each node with its token, its birth log-probability log q and the step it was born at; the
router's probability of each depth-1 subtree; the committed candidate; the pruned subtrees; and
what survives the shift (the chosen subtree, which is the next step's tree before it regrows).

Two renderings of the same steps: `render_text` (a terminal) and `render_html` (one
self-contained HTML file: inline SVG, a few lines of script to step forward and back; no network).
`python decode.py --trace trace.html` writes one (see decode.py for the options).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch

from decode import SequenceTrajectory, TreeTrajectory
from tree import children_table, subtree_members


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
    probs: list[float]  # π(i | tree_t) per candidate
    choice: int  # the committed candidate
    committed_token: int


def tree_steps(traj: TreeTrajectory, row: int = 0) -> tuple[list[int], list[StepView]]:
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


def sequence_steps(traj: SequenceTrajectory, row: int = 0) -> tuple[list[int], list[StepView]]:
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


def steps_of(traj: TreeTrajectory | SequenceTrajectory, row: int = 0) -> tuple[list[int], list[StepView]]:
    # by field, not isinstance: `python decode.py` runs decode.py as __main__, whose classes are not decode's
    return tree_steps(traj, row) if hasattr(traj, "choice") else sequence_steps(traj, row)


def render_text(prompt: list[int], steps: list[StepView], itos=str) -> str:
    lines = ["prompt: " + " ".join(itos(t) for t in prompt)]
    for s in steps:
        lines.append(f"step {s.step}: root {itos(s.root_token)!r}")
        for nv in s.nodes:
            mark = "=>" if nv.branch == s.choice else "  "
            head = f"{mark} [{s.probs[nv.branch]:.2f}] " if nv.depth == 1 else " " * 10
            lines.append(f"  {head}{'  ' * (nv.depth - 1)}{itos(nv.token)!r:>6}  log q {nv.logq:+.2f}  (born step {nv.born})")
        lines.append(f"  commit {itos(s.committed_token)!r}")
    return "\n".join(lines)


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
    W, H, dx, dy = 170 * (depth + 1) + 40, int(46 * n_rows) + 20, 170, 46
    pos = {s.root: (20, 10 + dy * rows[s.root])}
    for nv in s.nodes:
        pos[nv.node] = (20 + dx * nv.depth, 10 + dy * rows[nv.node])
    out = [f'<svg width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">']
    for nv in s.nodes:
        (x0, y0), (x1, y1) = pos[nv.parent], pos[nv.node]
        out.append(f'<line x1="{x0 + 120}" y1="{y0 + 16}" x2="{x1}" y2="{y1 + 16}" stroke="#999"/>')
    boxes = [(s.root, itos(s.root_token), "root", "#dde7f7")]
    for nv in s.nodes:
        kept = nv.branch == s.choice
        color = ("#9be29b" if nv.depth == 1 else "#d6f5d6") if kept else "#eeeeee"
        label = f"{itos(nv.token)}  log q {nv.logq:+.2f}"
        extra = f"π {s.probs[nv.branch]:.3f}" if nv.depth == 1 else f"born step {nv.born}"
        boxes.append((nv.node, label, extra, color))
    for node, label, extra, color in boxes:
        x, y = pos[node]
        grey = color == "#eeeeee"
        out.append(f'<g opacity="{0.45 if grey else 1}"><rect x="{x}" y="{y}" width="120" height="32" rx="5" '
                   f'fill="{color}" stroke="#555"/><text x="{x + 6}" y="{y + 13}" font-size="11">{html.escape(label)}</text>'
                   f'<text x="{x + 6}" y="{y + 27}" font-size="10" fill="#333">{html.escape(extra)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def render_html(prompt: list[int], steps: list[StepView], itos=str, title: str = "LBR trace") -> str:
    """A self-contained page: one panel per step (tree, router probabilities, commit), shown one at a time."""
    panels = []
    for s in steps:
        probs = "".join(f'<tr class="{"chosen" if k == s.choice else "pruned"}"><td>candidate {k}</td>'
                        f'<td>{html.escape(itos(next((nv.token for nv in s.nodes if nv.branch == k and nv.depth == 1), -1)))}</td>'
                        f'<td class="p">{p:.3f}</td></tr>' for k, p in enumerate(s.probs))
        survivors = [nv for nv in s.nodes if nv.branch == s.choice and nv.depth > 1]
        shift = (" ".join(html.escape(itos(nv.token)) for nv in survivors) or "nothing (the tree regrows from scratch)")
        panels.append(
            f'<section class="step" id="step{s.step}"><h2>step {s.step}: root <code>{html.escape(itos(s.root_token))}</code></h2>'
            f'{_svg(s, itos)}<table><tr><th>subtree</th><th>token</th><th>router π</th></tr>{probs}</table>'
            f'<p>commit <b class="commit">{html.escape(itos(s.committed_token))}</b>; the other subtrees are pruned '
            f'(grey); surviving the shift (now one level up): {shift}</p></section>')
    committed = " ".join(html.escape(itos(s.committed_token)) for s in steps)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:20px}} .step{{display:none}} .step.on{{display:block}}
table{{border-collapse:collapse;margin:8px 0}} td,th{{border:1px solid #ccc;padding:2px 8px}}
tr.chosen{{background:#9be29b}} tr.pruned{{color:#888}} code{{background:#eee;padding:1px 4px}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>prompt: <code>{html.escape(" ".join(itos(t) for t in prompt))}</code></p>
<p>committed: <code>{committed}</code></p>
<p><button onclick="go(-1)">&larr; back</button> <span id="pos"></span>
<button onclick="go(1)">forward &rarr;</button> (or the arrow keys)</p>
{"".join(panels)}
<script>
var i = 0, n = {len(steps)};
function show() {{ document.querySelectorAll('.step').forEach(function (e, k) {{ e.className = 'step' + (k == i ? ' on' : ''); }});
  document.getElementById('pos').textContent = 'step ' + i + ' of ' + (n - 1); }}
function go(d) {{ i = Math.max(0, Math.min(n - 1, i + d)); show(); }}
document.addEventListener('keydown', function (e) {{ if (e.key == 'ArrowLeft') go(-1); if (e.key == 'ArrowRight') go(1); }});
show();
</script>
</body></html>
"""
