"""LECTURE.md shows real output: every command in it still prints exactly what the text shows."""

from pathlib import Path

from lecture import check


def test_lecture_outputs_match_their_commands():
    assert check(Path(__file__).resolve().parent.parent / "LECTURE.md", write=False) == []
