"""The trace viewer: rebuilt from the record, the HTML parses and shows every committed token and
every router probability of the trajectory; the page has a legend, readable node text, the step in
its URL (`#step=3`, checked under node when it is installed) and, when given, the verdict."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
import torch

from decode import CotConfig, LBRConfig, decode_cot, decode_lbr
from soft import SoftConfig, decode_soft
from helpers import random_router, tiny_model
from tools.trace_render import NodeView, StepView, render_html, render_text
from tools.trace_view import steps_of

EOS = 5
ITOS = "abcde<".__getitem__


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.stack, self.svgs = [], [], 0

    def handle_starttag(self, tag, attrs):
        self.svgs += tag == "svg"
        if tag not in ("br", "meta", "rect", "line"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in ("rect", "line"):
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Collect:
    p = Collect()
    p.feed(page)
    p.close()
    assert p.stack == [], f"unclosed tags {p.stack}"
    return p


@pytest.mark.parametrize("widths,sampler", [((3, 2), "iid"), ((3, 1, 1), "distinct")])
def test_lbr_trace(widths, sampler):
    model = tiny_model(vocab=6)
    router = random_router(model, len(widths))
    traj = decode_lbr(model, router, [[0, 1, 2], [3]], LBRConfig(widths=widths, sampler=sampler, max_new_tokens=6),
                      EOS, torch.Generator().manual_seed(2))
    for row in range(2):
        prompt, steps = steps_of(traj, row)
        assert len(steps) == int(traj.length[row])
        assert [s.committed_token for s in steps] == traj.completion[row, : int(traj.length[row])].tolist()
        page = parse(render_html(prompt, steps, ITOS))
        text = " ".join(page.text)
        assert page.svgs == len(steps)
        for t, s in enumerate(steps):
            assert f"commit {ITOS(s.committed_token)}" in text.replace("  ", " ")
            for p in traj.router_logp[row, t].exp().tolist():  # every router probability of the record
                assert f"{p:.3f}" in text
            # each step's tree: the root's children are the candidates, their log q as recorded
            cands = [nv for nv in s.nodes if nv.depth == 1]
            assert len(cands) == widths[0] and all(nv.parent == s.root for nv in cands)
            assert all(abs(nv.logq - float(traj.logq[row, nv.node])) < 1e-6 for nv in s.nodes)
        assert "commit" in render_text(prompt, steps, ITOS)


def test_cot_trace():
    model = tiny_model(vocab=6)
    traj = decode_cot(model, [[0, 1, 2]], CotConfig(max_new_tokens=8), EOS, torch.Generator().manual_seed(0))
    prompt, steps = steps_of(traj, 0)
    assert [s.committed_token for s in steps] == traj.completion[0, : int(traj.length[0])].tolist()
    text = " ".join(parse(render_html(prompt, steps, ITOS)).text)
    assert all(f"commit {ITOS(s.committed_token)}" in text.replace("  ", " ") for s in steps)
    assert "1.000" in text  # one candidate per step, π = 1


def test_soft_trace():
    """A soft rollout: each step shows its draws (K in the soft span, one after `discrete_after`)
    with their recorded log p and mixing weights, draw 0 committed, nothing marked pruned."""
    model = tiny_model(vocab=6)
    cfg = SoftConfig(k=3, max_new_tokens=8, discrete_after=3)
    traj = decode_soft(model, [[0, 1, 2], [4]], cfg, EOS, torch.Generator().manual_seed(0))
    for row in range(2):
        prompt, steps = steps_of(traj, row)
        n = int(traj.length[row])
        assert len(steps) == n and [s.committed_token for s in steps] == traj.completion[row, :n].tolist()
        page = parse(render_html(prompt, steps, ITOS))
        text = " ".join(page.text)
        assert page.svgs == n and "A soft rollout" in text and "pruned (faded)" not in text
        for t, s in enumerate(steps):
            drawn = int(traj.active[row, t].sum())
            assert [nv.token for nv in s.nodes] == traj.tokens[row, t, :drawn].tolist()
            assert [nv.logq for nv in s.nodes] == pytest.approx(traj.logp[row, t, :drawn].tolist())
            assert s.probs == pytest.approx(traj.weights[row, t, :drawn].tolist()) and s.choice == 0
            assert all(f"{w:.3f}" in text for w in s.probs)
        assert "a soft rollout" in render_text(prompt, steps, ITOS)
    assert {len(s.nodes) for r in range(2) for s in steps_of(traj, r)[1]} == {1, 3}  # the span and after it


def test_trace_of_saved_rl_rollouts(tmp_path):
    """An RL run saves its latest rollouts; `python -m tools.trace_view --rollouts` draws one as HTML."""
    import sys
    from pathlib import Path

    from pretrained.checkpoint import load_pt
    from decode import TreeTrajectory
    from rlvr import RLConfig, train_rl
    from router import Router, RouterConfig
    from test_ddp import TwoTokenTask
    model = tiny_model(vocab=4)
    router = Router(RouterConfig(width=8), model.cfg.n_embd, 2)
    train_rl(model, router, TwoTokenTask(), LBRConfig(widths=(2, 1), max_new_tokens=3),
             RLConfig(steps=2, prompts_per_step=2, group_size=3), str(tmp_path), quiet=True)
    saved = load_pt(str(tmp_path / "rollouts.pt"), "rollouts", kinds=(TreeTrajectory, LBRConfig))
    assert saved["step"] == 2 and len(saved["trajectory"].length) == 6 and saved["task"] == "one-token"
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "t.html"
    run = subprocess.run([sys.executable, "-m", "tools.trace_view", "--rollouts", str(tmp_path / "rollouts.pt"), "--row", "4",
                          "--trace", str(out)], cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    traj = saved["trajectory"]
    text = " ".join(parse(out.read_text()).text)
    for t in range(int(traj.length[4])):
        for p in traj.router_logp[4, t].exp().tolist():
            assert f"{p:.3f}" in text


def test_trace_of_saved_soft_rollouts(tmp_path, monkeypatch, capsys):
    """`python -m tools.trace_view --rollouts` of a `rlvr.py --method soft` run used to fail on its record;
    it draws the soft steps."""
    import sys

    from tools import trace_view
    from rlvr import RLConfig, train_rl
    from test_ddp import TwoTokenTask
    train_rl(tiny_model(vocab=4), None, TwoTokenTask(), SoftConfig(k=2, max_new_tokens=3),
             RLConfig(steps=1, prompts_per_step=2, group_size=2), str(tmp_path), quiet=True)
    out = tmp_path / "t.html"
    monkeypatch.setattr(sys, "argv", ["trace_view.py", "--rollouts", str(tmp_path / "rollouts.pt"), "--row", "1",
                                      "--trace", str(out)])
    trace_view.main()
    assert "a soft rollout" in capsys.readouterr().out
    assert "A soft rollout" in " ".join(parse(out.read_text()).text)


# ---------------------------------------------------------------------------------------------
# the page a reader opens: legend, readable text, the step in the URL, the verdict


def _chain_steps(n: int) -> list[StepView]:
    """n steps of a one-candidate tree (what a cot rollout draws), committing tokens 0, 1, 2, ..."""
    return [StepView(t, t + 2, t + 1, [NodeView(t + 3, t + 2, 1, t % 5, -0.5, t, 0)], [1.0], 0, t % 5)
            for t in range(n)]


def test_page_has_a_legend_and_readable_node_text():
    page = render_html([0, 1], _chain_steps(3), ITOS)
    text = " ".join(parse(page).text)
    assert "How to read a step" in text
    for term in ("root", "candidates", "committed", "pruned", "π", "router", "log q", "born step"):
        assert term in text, term
    sizes = [int(x) for svg in re.findall(r"<svg.*?</svg>", page, re.S) for x in re.findall(r'font-size="(\d+)"', svg)]
    assert sizes and min(sizes) >= 13  # was 10-11 px: too small to read the tokens


@pytest.mark.parametrize("verdict,shown", [(True, "correct"), (False, "wrong"), ("reward 1 (step 7)", "reward 1 (step 7)"),
                                           ("<b>x</b>", "<b>x</b>")])
def test_page_shows_the_verdict_of_the_committed_answer(verdict, shown):
    text = " ".join(" ".join(parse(render_html([0], _chain_steps(2), ITOS, verdict=verdict)).text).split())
    assert f"committed answer: {shown}" in text  # a string is shown as text (escaped), not as markup
    assert "committed answer" not in " ".join(parse(render_html([0], _chain_steps(2), ITOS)).text)


def _script(page: str) -> str:
    return re.search(r"<script>(.*?)</script>", page, re.S).group(1)


def test_page_reads_and_writes_the_step_in_the_url():
    """A static check that always runs: the script reads `#step=N` at load and on hashchange, and
    writes the shown step back (the behaviour itself: the next test, under node)."""
    js = _script(render_html([0], _chain_steps(4), ITOS))
    assert "location.hash" in js and "#step=" in js and "'hashchange'" in js and "location.replace(" in js


# the page's script under node, with the few DOM objects it touches replaced by stand-ins
NODE_HARNESS = """
const panels = Array.from({length: __N__}, () => ({className: 'step'}));
const handlers = {};
global.document = {querySelectorAll: () => panels, getElementById: () => ({textContent: ''}),
                   addEventListener: (type, f) => { handlers['document ' + type] = f; }};
global.window = {addEventListener: (type, f) => { handlers['window ' + type] = f; }};
global.location = {hash: __HASH__, replace(url) { this.hash = url; }};
eval(__SCRIPT__);
const shown = () => panels.flatMap((p, k) => p.className === 'step on' ? [k] : []);
const out = {opened: [shown(), location.hash]};
go(1);
out.forward = [shown(), location.hash];
handlers['document keydown']({key: 'ArrowLeft'});
out.back = [shown(), location.hash];
location.hash = '#step=0';  // a link followed, or the address edited
handlers['window hashchange']();
out.linked = [shown(), location.hash];
console.log(JSON.stringify(out));
"""


@pytest.mark.parametrize("hash_,opened", [("#step=2", 2), ("", 0), ("#step=99", 4), ("#nonsense", 0)])
def test_step_in_the_url_under_node(hash_, opened, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    n = 5
    js = (NODE_HARNESS.replace("__N__", str(n)).replace("__HASH__", json.dumps(hash_))
          .replace("__SCRIPT__", json.dumps(_script(render_html([0], _chain_steps(n), ITOS)))))
    (tmp_path / "page.js").write_text(js)
    run = subprocess.run([node, str(tmp_path / "page.js")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    forward = min(opened + 1, n - 1)
    assert out["opened"] == [[opened], f"#step={opened}"]  # the step of the URL (clamped), and the URL says so
    assert out["forward"] == [[forward], f"#step={forward}"]  # stepping updates the URL
    assert out["back"] == [[forward - 1], f"#step={forward - 1}"]
    assert out["linked"] == [[0], "#step=0"]
