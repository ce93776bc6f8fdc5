"""The generated arithmetic word problems (tasks/arithmetic.py): known answers, disjoint and
reproducible splits, and the answer checker reading the model's usual answer formats."""

import re

import pytest

from tasks.answers import equivalent, extract_answer
from tasks.arithmetic import LEVELS, splits


@pytest.mark.parametrize("level", LEVELS)
def test_gold_is_the_arithmetic_of_the_question_and_splits_are_disjoint(level):
    sizes = {"train": 64, "validation": 16, "test": 16}
    a = splits(level, 3, sizes)
    assert a == splits(level, 3, sizes) and a != splits(level, 4, sizes)  # the seed fixes the problems
    questions = [p.question for ps in a.values() for p in ps]
    assert len(questions) == len(set(questions)) == sum(sizes.values())
    for p in (p for ps in a.values() for p in ps):
        x = [int(v) for v in re.findall(r"\d+", p.question)]
        expected = x[0] + x[1] - (x[2] if level == 4 else 0)
        assert int(p.gold) == expected > 0 and p.level == f"Level {level}"


def test_too_many_problems_for_a_level_are_refused():
    with pytest.raises(ValueError, match="too few distinct"):
        splits(1, 0, {"train": 1000})
    with pytest.raises(ValueError, match="level"):
        splits(9, 0, {"train": 1})


@pytest.mark.parametrize("completion,right", [("59 + 63 = 122", True), ("122", True), ("The answer is 122.", True),
                                              ("59 + 63 = 121", False), ("one hundred twenty-two", False)])
def test_the_checker_reads_the_answers_a_small_model_writes(completion, right):
    assert equivalent("122", extract_answer(completion)) is right
