"""The trace viewer: rebuilt from the record, the HTML parses and shows every committed token and
every router probability of the trajectory."""

from html.parser import HTMLParser

import pytest
import torch

from decode import CotConfig, LBRConfig, decode_cot, decode_lbr
from helpers import random_router, tiny_model
from trace_view import render_html, render_text, steps_of

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


def test_trace_of_saved_rl_rollouts(tmp_path):
    """An RL run saves its latest rollouts; `python decode.py --rollouts` draws one as HTML."""
    import subprocess
    import sys
    from pathlib import Path

    from rlvr import RLConfig, train_rl
    from router import Router, RouterConfig
    from test_ddp import TwoTokenTask
    model = tiny_model(vocab=4)
    router = Router(RouterConfig(width=8), model.cfg.n_embd, 2)
    train_rl(model, router, TwoTokenTask(), LBRConfig(widths=(2, 1), max_new_tokens=3),
             RLConfig(steps=2, prompts_per_step=2, group_size=3), str(tmp_path), quiet=True)
    saved = torch.load(tmp_path / "rollouts.pt", weights_only=False)
    assert saved["step"] == 2 and len(saved["trajectory"].length) == 6
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "t.html"
    run = subprocess.run([sys.executable, "decode.py", "--rollouts", str(tmp_path / "rollouts.pt"), "--row", "4",
                          "--trace", str(out)], cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    traj = saved["trajectory"]
    text = " ".join(parse(out.read_text()).text)
    for t in range(int(traj.length[4])):
        for p in traj.router_logp[4, t].exp().tolist():
            assert f"{p:.3f}" in text
