"""Helpers around the algorithm: command-line checks (cli.py), the HTML/text trace viewer
(trace_view.py) and the checker that keeps LECTURE.md's quoted code and output current (lecture.py)."""
