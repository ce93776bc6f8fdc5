"""
Short arithmetic word problems with a number for an answer, generated from a seed in a few
difficulty levels: problems a small pretrained model (SmolLM2-135M-Instruct) solves some of the
time, so that RL and routing have something to learn (experiments/real.py, experiments/real_study.py).
They are `word_problems.Problem`s (format "GSM8K": the gold answer is a number), so the word-problem
task prompts them with the checkpoint's chat template and rewards them with the same checker.

    level 1   addition up to 20 + 20              "What is 13 + 5?"
    level 2   two-digit addition                  "What is 47 + 38?"
    level 3   one step, in words                  "Mia has 47 stickers and gets 38 more. How many ..."
    level 4   two steps, in words (+ then -)      "... gets 38 more, then gives 19 away. How many ..."

`splits` draws disjoint train / validation / test problems of a level for one seed (no question
text in two splits), so that every choice is made on problems the test never sees.

Run `python -m tasks.arithmetic` to print a few problems of each level.
"""

from __future__ import annotations

import random

from tasks.word_problems import Problem
from tools.cli import ArgumentParser, run

LEVELS = (1, 2, 3, 4)
NAMES = ("Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Ben")
ITEMS = ("apples", "stickers", "marbles", "books", "coins", "pencils", "cards", "shells")


def problem(level: int, rng: random.Random) -> tuple[str, int]:
    """(question, answer) of one problem of `level`, drawn from `rng`. Raises ValueError for an
    unknown level."""
    if level not in LEVELS:
        raise ValueError(f"level {level!r}: choose one of {LEVELS}")
    lo, hi = (1, 20) if level == 1 else (10, 99)
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    if level <= 2:
        return f"What is {a} + {b}?", a + b
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    if level == 3:
        return f"{name} has {a} {items} and gets {b} more. How many {items} does {name} have now?", a + b
    c = rng.randint(10, a + b - 1)  # the answer stays positive
    return (f"{name} has {a} {items}, gets {b} more, then gives {c} away. How many {items} does {name} have now?",
            a + b - c)


def splits(level: int, seed: int, sizes: dict[str, int]) -> dict[str, list[Problem]]:
    """{split: problems} for sizes like {"train": 256, "validation": 32, "test": 64}: distinct
    questions of `level`, none in two splits, all drawn from `seed` (the same call, the same problems).
    Raises ValueError when a level has too few distinct questions for the sizes asked."""
    rng, seen, out = random.Random(f"arithmetic:{level}:{seed}"), set(), {}
    for split, n in sizes.items():
        out[split] = []
        for _ in range(100 * n):
            if len(out[split]) == n:
                break
            question, answer = problem(level, rng)
            if question not in seen:
                seen.add(question)
                out[split].append(Problem(id=f"L{level}-s{seed}-{split}-{len(out[split])}", question=question,
                                          gold=str(answer), solution=None, line=0, format="GSM8K",
                                          level=f"Level {level}"))
        if len(out[split]) < n:
            raise ValueError(f"level {level} has too few distinct problems for {sizes}: ask for fewer")
    return out


def main() -> None:
    ap = ArgumentParser(description="Print a few generated arithmetic word problems of each level.")
    ap.add_argument("-n", type=int, default=2, help="problems per level")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not 1 <= args.n <= 100:
        raise ValueError(f"-n {args.n}: print between 1 and 100 problems per level")
    for level in LEVELS:
        for p in splits(level, args.seed, {"train": args.n})["train"]:
            print(f"[level {level}] {p.question}  ->  {p.gold}")


if __name__ == "__main__":
    run(main)
