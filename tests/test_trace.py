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
