"""Helpers around the algorithm: command-line checks (cli.py), rlvr.py's command line (rl_cli.py), devices
and torchrun (distributed.py), an RL run's files (runs.py), checks of records read from disk (records.py),  the trace viewer (trace_view.py) and the checker that keeps
LECTURE.md's quoted code and output current (lecture.py)."""
