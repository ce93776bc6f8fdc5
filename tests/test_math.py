"""The math task (mod chain): generator invariants and the verifier on hand-written completions.
(GSM8K / MATH data and their answer checker: tests/test_word_problems.py.)"""

import pytest

from tasks.common import Example, make_examples
from tasks.math import MathConfig, MathTask, apply_op


def execute(task: MathTask, prompt_words: list[str]) -> dict[str, int]:
    """Evaluate the prompt's statements in any order (a fixed point), independently of the generator."""
    stmts = " ".join(prompt_words[: prompt_words.index("?")]).split(";")
    stmts = [s.split() for s in stmts if s.strip()]
    value: dict[str, int] = {}
    while len(value) < len(stmts):
        for s in stmts:
            if s[0] in value:
                continue
            if len(s) == 3:
                value[s[0]] = int(s[2])
            elif s[2] in value and s[4] in value:
                value[s[0]] = apply_op(value[s[2]], s[3], value[s[4]], task.cfg.p)
    return value


def test_drills():
    task = MathTask()
    examples = make_examples(task, 300, seed=0, split="train")
    drills = [e for e in examples if e.info.get("drill")]
    assert 0.2 < len(drills) / len(examples) < 0.4
    assert not any(e.info.get("drill") for e in make_examples(task, 100, seed=0, split="rl"))
    for ex in drills:
        words = task.tokenizer.decode(ex.prompt).split()
        assert words[-2:] == ["?", ";"]
        value = execute(task, words)
        answer = task.tokenizer.decode(ex.answer).split()
        assert len(answer) == 17 and answer[-1] == "<eos>" and len(ex.loss_mask) == len(ex.answer)
        for i in range(4):
            x, eq, v, semi = answer[4 * i: 4 * i + 4]
            assert eq == "=" and semi == ";" and value[x] == int(v) and f"{x} = {v} ;" in " ".join(words)
            assert ex.loss_mask[4 * i: 4 * i + 4] == [False, False, True, False]


@pytest.mark.parametrize("split", ["train", "rl", "eval"])
def test_generator_invariants(split):
    task = MathTask(MathConfig(drill_frac=0.0))
    ops = {"train": task.cfg.train_ops, "rl": task.cfg.rl_ops, "eval": task.cfg.eval_ops}[split]
    examples = make_examples(task, 200, seed=0, split=split)
    assert {e.info["ops"] for e in examples} == set(ops)  # every count appears
    for ex in examples:
        assert all(0 <= t < task.tokenizer.vocab_size for t in ex.prompt + ex.answer)
        words = task.tokenizer.decode(ex.prompt).split()
        value = execute(task, words)
        query = words[words.index("?") + 1]
        assert value[query] == ex.info["result"]
        names = [s.split()[0] for s in " ".join(words[: words.index("?")]).split(";") if s.strip()]
        assert len(names) == len(set(names))  # every variable is assigned once
        # the answer: one correct line per needed operation, each using values defined before it
        answer = task.tokenizer.decode(ex.answer).split()
        assert answer[-3:] == ["#", str(ex.info["result"]), "<eos>"]
        lines = [ln.split() for ln in " ".join(answer[:-3]).split(";") if ln.strip()]
        assert len(lines) == ex.info["ops"] and lines[-1][0] == query
        for ln in lines:  # the restated operation is the prompt's statement of that variable
            assert " ".join(ln[:5]) in " ".join(words)
        assert task.reward(ex, ex.answer) == 1.0 and task.lines_correct(ex, ex.answer)
        assert len(ex.answer) <= task.max_answer_len
        for ln in lines:
            assert value[ln[0]] == int(ln[-1]) and [value[ln[2]], value[ln[4]]] == [int(ln[6]), int(ln[8])]


def test_deterministic_per_seed():
    task = MathTask()
    a = make_examples(task, 20, seed=3, split="rl")
    b = make_examples(task, 20, seed=3, split="rl")
    c = make_examples(task, 20, seed=4, split="rl")
    assert [e.prompt for e in a] == [e.prompt for e in b] and [e.prompt for e in a] != [e.prompt for e in c]


def test_verifier_hand_written():
    task = MathTask()
    # a fixed problem: c = 5, f = 3, d = 7, k = c * f = 4, g = k + d = 0 (mod 11)
    prompt = "c = 5 ; k = c * f ; f = 3 ; d = 7 ; g = k + d ; ? g ;"
    ex = Example(prompt=task.tokenizer.encode(prompt), answer=[], info={
        "ops": 2, "result": 0, "values": {"c": 5, "f": 3, "d": 7, "k": 4, "g": 0},
        "defs": {"k": ("c", "*", "f"), "g": ("k", "+", "d")}})
    score = lambda text, t=task: t.reward(ex, t.tokenizer.encode(text))  # noqa: E731
    right = "k = c * f = 5 * 3 = 4 ; g = k + d = 4 + 7 = 0 ; # 0 <eos>"
    assert score(right) == 1.0
    assert score(right.replace("<eos>", "")) == 0.0  # never finished
    assert score(right.replace("# 0", "# 1")) == 0.0  # wrong final number
    assert score("# 0 <eos>") == 0.0  # a guess without working
    assert score("k = c * f = 5 * 3 = 4 ; g = k + d = 4 + 8 = 1 ; # 0 <eos>") == 0.0  # wrong operand value
    assert score("k = c * f = 5 * 3 = 5 ; g = k + d = 5 + 7 = 1 ; # 0 <eos>") == 0.0  # wrong arithmetic
    assert score("k = c + f = 5 + 3 = 8 ; g = k + d = 8 + 3 = 0 ; # 0 <eos>") == 0.0  # wrong operation
    assert score("g = k + d = 4 + 7 = 0 ; # 0 <eos>") == 0.0  # a needed line is missing
    assert score("k = c * f = 5 * 3 = 4 ; g = k + d = 4 + 7 = 0 ; # 0 <eos> ;") == 0.0  # text after <eos>
    loose = MathTask(MathConfig(verify_lines=False))  # the final number only: a guess can pass
    assert score("# 0 <eos>", loose) == 1.0 and score("# 3 # 0 <eos>", loose) == 1.0  # the last '#' counts
    assert score("# 0 # 3 <eos>", loose) == 0.0 and score("<eos>", loose) == 0.0
    assert loose.reward(ex, []) == 0.0
    short = MathTask(MathConfig(restate=False))  # the un-restated lines of docs/DESIGN.md §7.3
    assert score("k = 5 * 3 = 4 ;  g = 4 + 7 = 0 ; # 0 <eos>", short) == 1.0
    assert score("k = 5 * 3 = 4 ;  g = 4 + 7 = 0 ; # 0 <eos>") == 0.0  # not the restating format


def test_config_errors():
    with pytest.raises(ValueError, match="n_vars"):
        MathConfig(n_vars=8, eval_ops=(5,))
    with pytest.raises(ValueError, match="ops"):
        MathConfig(ops="/")
