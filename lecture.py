"""
Keeps LECTURE.md honest: every `<!-- run: CMD -->` marker there is followed by a ```text block
holding CMD's output. This script re-runs each command and compares.

    python lecture.py           # check: exit 1 and show a diff if an output has drifted
    python lecture.py --write   # regenerate the blocks in place from the commands' real output
"""

from __future__ import annotations

import argparse
import difflib
import re
import shlex
import subprocess
import sys
from pathlib import Path

BLOCK = re.compile(r"<!-- run: (?P<cmd>.+?) -->\n```text\n(?P<out>.*?)```\n", re.S)
ROOT = Path(__file__).resolve().parent


def run(cmd: str) -> str:
    """A command's stdout, run from the repository root with this Python."""
    args = shlex.split(cmd)
    if args[0] != "python":
        raise ValueError(f"LECTURE.md commands must start with 'python': {cmd!r}")
    done = subprocess.run([sys.executable] + args[1:], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def check(path: Path, write: bool) -> list[str]:
    """Commands whose output differs from the block (rewritten in place if `write`)."""
    text = path.read_text(encoding="utf-8")
    drifted, pieces, last = [], [], 0
    for m in BLOCK.finditer(text):
        out = run(m.group("cmd"))
        if not out.endswith("\n"):
            out += "\n"
        if out != m.group("out"):
            drifted.append(m.group("cmd"))
            if not write:
                sys.stdout.writelines(difflib.unified_diff(m.group("out").splitlines(True), out.splitlines(True),
                                                           "LECTURE.md", m.group("cmd")))
        pieces += [text[last: m.start("out")], out]
        last = m.end("out")
    if write:
        path.write_text("".join(pieces) + text[last:], encoding="utf-8")
    return drifted


def main() -> None:
    ap = argparse.ArgumentParser(description="Check (or regenerate) the command outputs shown in LECTURE.md.")
    ap.add_argument("--write", action="store_true", help="rewrite the outputs in place")
    ap.add_argument("--file", default=str(ROOT / "LECTURE.md"))
    args = ap.parse_args()
    drifted = check(Path(args.file), args.write)
    if args.write:
        print(f"regenerated; {len(drifted)} block(s) changed: {drifted}")
    elif drifted:
        sys.exit(f"{len(drifted)} output(s) in {args.file} no longer match their command: {drifted} "
                 "(run `python lecture.py --write` and review the text around them)")
    else:
        print("every command's output matches LECTURE.md")


if __name__ == "__main__":
    main()
