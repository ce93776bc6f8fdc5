"""The math task: generator invariants, the verifier on hand-written completions, and the GSM8K
loader and answer checker on the real files."""

import json
import os

import pytest

from tasks.common import Example, make_examples
from tasks.math import (MathConfig, MathTask, apply_op, extract_answer, load_gsm8k, normalize_number,
                        same_number)

GSM8K = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "gsm8k")


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
    short = MathTask(MathConfig(restate=False))  # DESIGN §6.2's original lines
    assert score("k = 5 * 3 = 4 ;  g = 4 + 7 = 0 ; # 0 <eos>", short) == 1.0
    assert score("k = 5 * 3 = 4 ;  g = 4 + 7 = 0 ; # 0 <eos>") == 0.0  # not the restating format


def test_config_errors():
    with pytest.raises(ValueError, match="n_vars"):
        MathConfig(n_vars=8, eval_ops=(5,))
    with pytest.raises(ValueError, match="ops"):
        MathConfig(ops="/")


# ---------------------------------------------------------------------------------------------
# GSM8K


@pytest.mark.parametrize("text,expected", [("1,200", "1200"), ("$1,200.00", "1200"), ("-3.50", "-3.5"), ("45%", "45"),
                                           ("7.", "7"), ("12.0", "12"), (".5", "0.5"), ("-0", "0"), ("abc", None),
                                           ("", None), ("1.2.3", None)])
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


@pytest.mark.parametrize("completion,gold,match", [
    ("She pays 3 * 4 = 12 dollars.\n#### 12", "12", True),
    ("#### $1,200.00", "1200", True),
    ("#### 1,200", "1200", True),
    ("The loss is -5 dollars, so the answer is -5.0", "-5", True),
    ("It takes 45% of 100, so 45%.", "45", True),
    ("He had 10 apples and ate 3. The answer is 7.", "7", True),
    ("#### 18 eggs, not 20", "18", True),  # the number right after ####, not the last one
    ("18 then #### 20", "18", False),
    ("The answer is 7.5", "7", False),
    ("The answer is 70", "7", False),
    ("no number at all", "3", False),
    ("#### ", "3", False),
])
def test_extract_and_compare(completion, gold, match):
    assert same_number(extract_answer(completion), gold) is match


@pytest.mark.skipif(not os.path.isdir(GSM8K), reason="the shared GSM8K files are not next to this checkout")
@pytest.mark.parametrize("name,n", [("test.jsonl", 1319), ("train.jsonl", 7473)])
def test_real_gsm8k_gold_answers_check_against_themselves(name, n):
    items = load_gsm8k(os.path.join(GSM8K, name), strict=True)
    assert len(items) == n
    for it in items:
        assert same_number(extract_answer(it.answer), it.gold)  # the reference solution checks against itself
        assert same_number(extract_answer(f"So the answer is {it.gold}."), it.gold)
        assert not same_number(extract_answer(f"#### {it.gold}1"), it.gold)


def test_loader_reports_malformed_lines(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    rows = [json.dumps({"question": "q1", "answer": "1 + 1 = 2\n#### 2"}),
            "{not json",
            json.dumps({"question": "q3"}),
            "",
            json.dumps({"question": "q5", "answer": "no final line"}),
            json.dumps({"question": "q6", "answer": "#### twelve"}),
            json.dumps({"question": "q7", "answer": "#### -1,000"})]
    path.write_text("\n".join(rows) + "\n")
    items = load_gsm8k(str(path))
    assert [it.line for it in items] == [1, 7] and [it.gold for it in items] == ["2", "-1000"]
    err = capsys.readouterr().err
    for line in (2, 3, 5, 6):
        assert f"bad.jsonl:{line}:" in err
    with pytest.raises(ValueError, match="bad.jsonl:2:"):
        load_gsm8k(str(path), strict=True)
