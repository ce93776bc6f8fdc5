"""LECTURE.md is right: every command output, every number its prose quotes and every exercise
answer is recomputed from the code by tools/lecture.py; and tools/lecture.py itself catches each kind of drift."""

from pathlib import Path

from tools import lecture

ROOT = Path(__file__).resolve().parent.parent


def test_lecture_matches_the_code():
    assert lecture.check(ROOT / "LECTURE.md") == []


def test_checker_reports_each_kind_of_drift(tmp_path):
    """A wrong command output, a wrong number in a checked region, an answer outside any region,
    an unknown check and an unused one are each reported; the file is not modified."""
    page = tmp_path / "LECTURE.md"
    text = ("<!-- run: python -c \"print(6 * 7)\" -->\n```text\n41\n```\n\n"
            "<!-- check: shift -->\nCommitting candidate 2 of widths 3,1: `shift[2, 1] = 5`.\n<!-- /check -->\n\n"
            "<!-- check: nonsense -->\nanything\n<!-- /check -->\n\n"
            "<details><summary>answer</summary>unchecked</details>\n")
    page.write_text(text)
    checks = {"shift": lambda: [f"`shift[2, 1] = {lecture._shift('3,1')[2][1]}`"], "unused": lambda: []}
    problems = lecture.check(page, checks=checks)
    assert len(problems) == 5, problems
    assert "print(6 * 7)" in problems[0] and "+42" in problems[0]  # the diff shows the real output
    assert "`shift[2, 1] = 6`" in problems[1]
    assert "'nonsense'" in problems[2] and "'unused'" in problems[3] and "unchecked" in problems[4]
    assert page.read_text() == text


def test_write_regenerates_outputs_and_keeps_the_rest(tmp_path):
    page = tmp_path / "LECTURE.md"
    page.write_text("intro\n<!-- run: python -c \"print(6 * 7)\" -->\n```text\n41\n```\noutro\n")
    assert lecture.check(page, write=True, checks={}) == []
    assert page.read_text() == "intro\n<!-- run: python -c \"print(6 * 7)\" -->\n```text\n42\n```\noutro\n"


def test_a_check_that_cannot_compute_is_reported(tmp_path):
    """A check whose code moved (here: a quoted source line that no longer exists) is a finding."""
    page = tmp_path / "LECTURE.md"
    page.write_text("<!-- check: quote -->\n`x = 1`\n<!-- /check -->\n")
    problems = lecture.check(page, checks={"quote": lambda: [lecture._source("decode", "no such line, anywhere")]})
    assert len(problems) == 1 and "LookupError" in problems[0] and "update the text" in problems[0]
