"""The math task: generator invariants, the verifier on hand-written completions, and the GSM8K
loader and answer checker on the real files."""

import json
import os
import random

import pytest

from tasks.common import make_examples
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


@pytest.mark.parametrize("split", ["train", "rl", "eval"])
def test_generator_invariants(split):
    task = MathTask()
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
        assert task.reward(ex, ex.answer) == 1.0 and task.lines_correct(ex.answer)
        assert len(ex.answer) <= task.max_answer_len
        for ln in lines:
            assert value[ln[0]] == int(ln[6])


def test_deterministic_per_seed():
    task = MathTask()
    a = make_examples(task, 20, seed=3, split="rl")
    b = make_examples(task, 20, seed=3, split="rl")
    c = make_examples(task, 20, seed=4, split="rl")
    assert [e.prompt for e in a] == [e.prompt for e in b] and [e.prompt for e in a] != [e.prompt for e in c]


def test_verifier_hand_written():
    task = MathTask(MathConfig(verify_lines=True))
    ex = task.sample(random.Random(0), "eval")
    r = ex.info["result"]
    enc = task.tokenizer.encode
    assert task.reward(ex, ex.answer) == 1.0
    assert task.reward(ex, enc(f"# {r} <eos>")) == 0.0  # no working: fails the line check ...
    assert MathTask().reward(ex, enc(f"# {r} <eos>")) == 1.0  # ... which is off by default
    assert task.reward(ex, enc(f"# {(r + 1) % 11} <eos>")) == 0.0  # wrong value
    assert task.reward(ex, enc(f"# {r}")) == 0.0  # never finished
    assert MathTask().reward(ex, enc(f"# {(r + 1) % 11} # {r} <eos>")) == 1.0  # the last '#' counts
    assert MathTask().reward(ex, enc(f"# {r} # {(r + 1) % 11} <eos>")) == 0.0
    assert task.reward(ex, enc("<eos>")) == 0.0
    assert task.reward(ex, []) == 0.0
    assert not task.lines_correct(enc(f"a = 2 * 3 = 7 ; # {r} <eos>"))  # 6 != 7
    assert task.lines_correct(enc(f"a = 2 * 3 = 6 ; b = 6 - 9 = 8 ; # {r} <eos>"))  # (6 - 9) mod 11 = 8
    assert not task.lines_correct(enc(f"a = 2 3 = 6 ; # {r} <eos>"))  # malformed


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
