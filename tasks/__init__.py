"""Tasks: one file per task (generator, prompt format, verifier, health checks), what they share
(tasks/common.py), and the math-answer checker their rewards use (tasks/answers.py)."""

from __future__ import annotations


def get_task(name: str, **overrides):
    """A task by name, with config fields overridden by keyword (e.g. get_task('planning', arm_len=5)).
    Each task's file is imported when it is asked for: importing this package (which every
    `from tasks.common import ...` does) then loads no task, nor their tokenizers."""
    if name == "planning":
        from tasks.planning import PlanningConfig, PlanningTask
        return PlanningTask(PlanningConfig(**overrides))
    if name == "math":
        from tasks.math import MathConfig, MathTask
        return MathTask(MathConfig(**overrides))
    raise ValueError(f"unknown task {name!r}: choose 'planning' or 'math'")
