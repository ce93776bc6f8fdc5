r"""Math word problems (tasks/word_problems.py): the GSM8K- and MATH-style loader (format detection,
malformed lines by number, the real GSM8K files when /work/shared/data/gsm8k is there), the reward
read up to the first stop token, the majority vote over normalised answers (evaluate.py), and
`rlvr.py --model DIR --data FILE` end to end on a tiny Qwen3 checkpoint saved by `transformers`
with a chat template in tokenizer_config.json and two stop ids in generation_config.json."""

import json
import os
import subprocess
import sys
import types

import pytest
import torch

import evaluate
from tasks.answers import equivalent, extract_answer, normalize
from pretrained.chat import ChatTemplate, conversation
from tasks.word_problems import DEFAULT_INSTRUCTION, Problem, WordProblemTask, load_problems, parse_problem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GSM8K = "/work/shared/data/gsm8k"
SYSTEM = r"Reason step by step and put the final answer in \boxed{}."

MATH_ROWS = [
    {"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?", "answer": "\\frac{3}{4}", "level": "Level 2",
     "subject": "Algebra", "unique_id": "test/algebra/1.json"},
    {"problem": "How many degrees are in a right angle?", "solution": "A right angle is $\\boxed{90^\\circ}$.",
     "level": "Level 1", "type": "Geometry"},  # MATH's own files: "type" is the subject, no id
    {"problem": "Solve $x^2 = 4$ for $x > 0$.", "solution": "Then $x = \\boxed{\\sqrt{4}}$, so 2.", "answer": 2,
     "level": 1, "subject": "Algebra", "id": 17},  # "answer" wins over the solution's box; MATH-500's int level
    {"problem": "Write $\\frac{6}{8}$ in lowest terms.", "solution": "It is $\\boxed{\\frac{3}{4}}$.",
     "level": "Level 2", "subject": "Prealgebra"},
]


def _write(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


# ------------------------------------------------------------------------------------ loading


def test_math_style_loader_both_variants(tmp_path, capsys):
    path = _write(tmp_path / "math.jsonl", MATH_ROWS)
    problems = load_problems(path)
    assert [p.gold for p in problems] == ["\\frac{3}{4}", "90^\\circ", "2", "\\frac{3}{4}"]  # nested braces kept
    assert [p.id for p in problems] == ["test/algebra/1.json", "math.jsonl:2", "17", "math.jsonl:4"]
    assert [p.level for p in problems] == ["Level 2", "Level 1", "Level 1", "Level 2"]  # MATH-500's 1 is Level 1
    assert [p.subject for p in problems] == ["Algebra", "Geometry", "Algebra", "Prealgebra"]
    assert {p.format for p in problems} == {"MATH"} and problems[0].solution is None
    assert capsys.readouterr().out.strip() == f"read 4 problems from {path} (MATH format, with level and subject)"


def test_malformed_lines_are_reported_by_number(tmp_path, capsys):
    rows = [MATH_ROWS[0],
            {"problem": "no answer anywhere"},  # 2: neither answer nor solution
            {"problem": "boxless", "solution": "the answer is 5"},  # 3: a solution without \boxed
            "{not json",  # 4
            {"query": "neither format", "answer": "#### 3"},  # 5
            "",  # blank lines are skipped silently
            {"question": "q", "answer": "2\n#### 2"},  # 7: GSM8K style in the same file
            {"problem": "empty answer", "answer": "  "},  # 8
            {"problem": "unclosed", "solution": "so \\boxed{\\frac{1}{2}"},  # 9: an unclosed box is no answer
            {"problem": "bad level", "answer": "1", "level": [1]},  # 10
            [1, 2],  # 11
            '{"problem": "not a number", "answer": NaN}']  # 12 (Python's json reads NaN)
    path = _write(tmp_path / "mixed.jsonl", rows)
    problems = load_problems(path)
    assert [p.line for p in problems] == [1, 7] and [p.format for p in problems] == ["MATH", "GSM8K"]
    captured = capsys.readouterr()
    assert captured.out.strip() == (f"read 2 problems from {path} (mixed format: 1 GSM8K, 1 MATH, with level and "
                                    "subject; skipped 9 malformed lines)")
    err = captured.err.splitlines()
    assert [line.split(":")[1] for line in err] == ["2", "3", "4", "5", "8", "9", "10", "11", "12"]
    assert 'needs an "answer", or a "solution" with a \\boxed' in err[0] and "no \\boxed" in err[1]
    with pytest.raises(ValueError, match=r"mixed\.jsonl:2: malformed line: a MATH-style line needs"):
        load_problems(path, strict=True)


def test_a_file_without_any_problem_is_refused(tmp_path, capsys):
    path = _write(tmp_path / "bad.jsonl", [{"problem": "no answer"}, {"problem": "x", "solution": "none"}])
    with pytest.raises(ValueError, match=r"no problem could be read; the first malformed line: .*bad\.jsonl:1:"):
        load_problems(path)
    assert capsys.readouterr().err == ""  # one line in all: the error
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="the file is empty"):
        load_problems(str(tmp_path / "empty.jsonl"))


def test_gsm8k_malformed_lines_and_non_utf8(tmp_path, capsys):
    rows = [{"question": "q1", "answer": "1 + 1 = 2\n#### 2"}, "{not json", {"question": "q3"}, "",
            {"question": "q5", "answer": "no final line"}, {"question": "q6", "answer": "#### twelve"},
            {"question": "q7", "answer": "#### -1,000"}]
    path = _write(tmp_path / "bad.jsonl", rows)
    problems = load_problems(path, quiet=True)
    assert [p.line for p in problems] == [1, 7] and [normalize(p.gold) for p in problems] == ["2", "-1000"]
    captured = capsys.readouterr()
    assert captured.out == "" and [line.split(":")[1] for line in captured.err.splitlines()] == ["2", "3", "5", "6"]
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"question": "q", "answer": "#### 1"}\n' + '{"question": "café", "answer": "#### 2"}\n'
                       .encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.jsonl:2: not UTF-8 .*iconv"):
        load_problems(str(latin1))
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(MATH_ROWS[0]).encode() + b"\n")
    assert len(load_problems(str(bom), quiet=True)) == 1  # a leading byte-order mark is not an error


@pytest.mark.skipif(not os.path.isdir(GSM8K), reason="the shared GSM8K files are not next to this checkout")
@pytest.mark.parametrize("name,n", [("test.jsonl", 1319), ("train.jsonl", 7473)])
def test_real_gsm8k_files_parse_and_check_against_themselves(name, n, capsys):
    problems = load_problems(os.path.join(GSM8K, name), strict=True)
    assert capsys.readouterr().out.strip() == f"read {n} problems from {GSM8K}/{name} (GSM8K format)"
    assert len(problems) == n and {p.format for p in problems} == {"GSM8K"}
    for p in problems:
        assert equivalent(p.gold, extract_answer(p.solution))  # the reference solution checks against itself
        assert equivalent(p.gold, extract_answer(f"So the answer is {p.gold}."))
        assert not equivalent(p.gold, extract_answer(f"#### {p.gold}1"))


# ------------------------------------------------------------------------------------ the task


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A byte-level BPE trained by `tokenizers`, laid out like Qwen's (ids of <|endoftext|> and <|im_end|>)."""
    from test_tokenizer import _train

    from pretrained.tokenizer import BPETokenizer
    _, path = _train(tmp_path_factory.mktemp("tok"), "qwen2")
    return BPETokenizer.from_file(str(path))


def _task(tokenizer, problems, **kw) -> WordProblemTask:
    stops = [tokenizer.token_id("<|im_end|>"), tokenizer.token_id("<|endoftext|>")]
    return WordProblemTask(problems, tokenizer, stops, **kw)


@pytest.mark.parametrize("completion,gold,match", [
    ("She pays 3 * 4 = 12 dollars.\n#### 12", "12", True),
    ("#### $1,200.00", "1200", True),
    ("The loss is -5 dollars, so the answer is -5.0", "-5", True),
    ("It takes 45% of 100, so 45%.", "45", True),
    ("He had 10 apples and ate 3. The answer is 7.", "7", True),
    ("The answer is $9{,}500.", "9500", True),
    ("So $x = \\boxed{\\frac{1}{2}}$.", "0.5", True),
    ("#### 18 eggs, not 20", "18", True),  # the number the #### line starts with, not the last one
    ("18 then #### 20", "18", False),
    ("The answer is 7.5", "7", False),
    ("The answer is 70", "7", False),
    ("no number at all", "3", False),
    ("#### ", "3", False),
])
def test_reward_on_hand_written_completions(tokenizer, completion, gold, match):
    p = Problem(id="x", question="q", gold=gold, solution=None, line=1, format="MATH")
    task = _task(tokenizer, [p])
    assert task.reward(task.example(p), tokenizer.encode(completion)) == float(match)


def test_reward_reads_up_to_the_first_stop_token(tokenizer, tmp_path):
    """gold 5, completion `#### 5` <|endoftext|> `#### 7`: the model's answer is 5 (reward 1), whichever
    of the two stop ids comes first; ids the tokenizer does not know are no text."""
    p5, p7 = (Problem(id=g, question="q", gold=g, solution=None, line=1, format="MATH") for g in ("5", "7"))
    task = _task(tokenizer, [p5, p7])
    assert task.stop_ids == (tokenizer.token_id("<|im_end|>"), tokenizer.token_id("<|endoftext|>"))
    assert task.eos_id == task.stop_ids[0]
    for stop in task.stop_ids:
        completion = tokenizer.encode("#### 5") + [stop] + tokenizer.encode("#### 7")
        assert task.reward(task.example(p5), completion) == 1.0
        assert task.reward(task.example(p7), completion) == 0.0
        assert task.answer_key(task.example(p5), completion) == "5"
    padded = tokenizer.encode("#### ") + [tokenizer.vocab_size + 10] + tokenizer.encode("5")
    assert task.reward(task.example(p5), padded) == 1.0
    assert task.answer_key(task.example(p5), tokenizer.encode("no answer here")) is None


@pytest.mark.parametrize("level,label", [("Level 3", "Level 3"), (3, "Level 3"), ("3", "Level 3"),
                                         ("level 03", "Level 3"), ("Level ?", "Level ?"), ("hard", "hard")])
def test_numbered_levels_are_one_label(level, label):
    """MATH writes "Level 3", MATH-500 writes 3: by_level used to keep them apart."""
    assert parse_problem({"problem": "q", "answer": "1", "level": level}, "f.jsonl", 1).level == label


def test_a_cut_off_completion_is_no_answer(tokenizer, monkeypatch):
    """The completion of the issue, cut off at max_new_tokens: its last number is the gold 7, and it
    used to score 1 and vote for 7. Cut off (no stop id): reward 0, no vote, counted as truncated;
    the same text finished by <|im_end|> is an answer."""
    p = Problem(id="p", question="q", gold="7", solution=None, line=1, format="GSM8K")
    task = _task(tokenizer, [p])
    text = "3 + 4 = 7. Step 2: multiply by 2 to get 14, then subtract the 7 we"
    completions = [tokenizer.encode(text), tokenizer.encode(text) + [tokenizer.token_id("<|im_end|>")]]
    assert [task.reward(task.example(p), c) for c in completions] == [1.0, 1.0]  # the text alone says 7

    def fake_generate(model, router, prompts, dec, stops, g):
        T = max(map(len, completions))
        return types.SimpleNamespace(completion=torch.tensor([c + [0] * (T - len(c)) for c in completions]),
                                     length=torch.tensor([len(c) for c in completions]),
                                     forward_tokens=lambda: torch.tensor([len(c) - 1 for c in completions]))

    monkeypatch.setattr(evaluate, "generate", fake_generate)
    model = types.SimpleNamespace(embed_tokens=types.SimpleNamespace(weight=torch.zeros(1)))
    samples = []
    out = evaluate.evaluate(model, None, task, None, task.eval_examples(1), 2, (1, 2), seed=0, samples=samples)
    assert [(s["truncated"], s["correct"], s["key"], s["answer"]) for s in samples] == [
        (True, 0.0, None, "7"), (False, 1.0, "7", "7")]
    assert out["truncated"] == 0.5 and out["pass@1"] == 0.5 and out["majority@2"] == 1.0


def test_prompt_is_the_chat_template_with_system_instruction_and_switch(tokenizer):
    from test_chat import QWEN3_STYLE
    template = ChatTemplate(QWEN3_STYLE, {"eos_token": "<|im_end|>"})
    p = Problem(id="x", question="What is 2 + 3?", gold="5", solution=None, line=1, format="MATH")
    task = _task(tokenizer, [p], template=template, system=SYSTEM, switches={"enable_thinking": False})
    want = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?\n\n{DEFAULT_INSTRUCTION}"
            "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert task.prompt_text(p) == want
    ex = task.example(p)
    assert tokenizer.decode(ex.prompt) == want and ex.answer[-1] == tokenizer.token_id("<|im_end|>")
    assert tokenizer.decode(ex.answer) == "The final answer is $\\boxed{5}$.<|im_end|>"
    bare = _task(tokenizer, [p], instruction="")  # no template: ChatML; no system prompt
    assert bare.prompt_text(p) == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"


# ------------------------------------------------------------------------------- majority vote


@pytest.mark.parametrize("keys,correct,score", [
    (["6", "5", "5"], [0, 1, 1], 1.0),  # the case of the issue: 5 wins 2 to 1
    (["5", "6", "6"], [1, 0, 0], 0.0),
    (["6", "5"], [0, 1], 0.5),  # a tie: the expected score of a random tie-break, not the first sample's
    (["5", "6"], [1, 0], 0.5),
    (["6", "7", "5"], [0, 0, 1], 1 / 3),
    ([None, None, "5"], [0, 0, 1], 1.0),  # samples without an answer do not vote
    ([None, None], [0, 0], 0.0),
    (["5"], [1], 1.0),
])
def test_majority_vote_rule(keys, correct, score):
    assert evaluate.majority_vote(keys, [float(c) for c in correct]) == pytest.approx(score)


def test_evaluate_votes_over_extracted_answers(tokenizer, monkeypatch):
    """Samples answering 6, 5, 5 (three different texts) with gold 5: majority@3 = 1; the vote keys
    are the normalised answers, and every sample is recorded."""
    probs = [Problem(id="p0", question="q0", gold="5", solution=None, line=1, format="MATH", level="Level 1",
                     subject="Algebra"),
             Problem(id="p1", question="q1", gold="\\frac{1}{2}", solution=None, line=2, format="MATH",
                     level="Level 10", subject="Algebra")]
    task = _task(tokenizer, probs)
    im_end = tokenizer.token_id("<|im_end|>")
    texts = ["The answer is \\boxed{6}.", "First 3, then 2 more: #### 5", "So she has $5$ in all. The answer is 5.",
             "0.5", "1/2", "\\boxed{\\dfrac{1}{2}}"]
    completions = [tokenizer.encode(t) + [im_end] for t in texts]

    def fake_generate(model, router, prompts, dec, stops, g):
        assert len(prompts) == len(completions)
        T = max(map(len, completions))
        return types.SimpleNamespace(completion=torch.tensor([c + [0] * (T - len(c)) for c in completions]),
                                     length=torch.tensor([len(c) for c in completions]),
                                     forward_tokens=lambda: torch.tensor([len(c) - 1 for c in completions]))

    monkeypatch.setattr(evaluate, "generate", fake_generate)
    model = types.SimpleNamespace(embed_tokens=types.SimpleNamespace(weight=torch.zeros(1)))
    samples = []
    out = evaluate.evaluate(model, None, task, None, task.eval_examples(2), 3, (1, 3), seed=0, samples=samples)
    assert out["majority@3"] == 1.0 and out["majority@1"] == 0.5  # problem 0's first sample says 6
    assert out["pass@1"] == pytest.approx((2 / 3 + 1) / 2) and out["pass@3"] == 1.0
    assert list(out["by_level"]) == ["Level 1", "Level 10"]  # natural order
    assert out["by_level"]["Level 1"] == {"problems": 1, "pass@1": pytest.approx(2 / 3), "pass@3": 1.0,
                                          "majority@1": 0.0, "majority@3": 1.0}
    assert out["by_subject"]["Algebra"]["problems"] == 2
    assert [(s["problem"], s["sample"], s["id"], s["answer"], s["key"], s["correct"]) for s in samples] == [
        (0, 0, "p0", "6", "6", 0.0), (0, 1, "p0", "5", "5", 1.0), (0, 2, "p0", "5", "5", 1.0),
        (1, 0, "p1", "0.5", "1/2", 1.0), (1, 1, "p1", "1/2", "1/2", 1.0), (1, 2, "p1", "\\dfrac{1}{2}", "1/2", 1.0)]
    assert samples[0]["completion"] == texts[0] and samples[0]["prompt"] == task.prompt_text(probs[0])


# --------------------------------------------------------------------- rlvr.py --model end to end


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    """A tiny random Qwen3 saved by transformers, with a byte-level BPE tokenizer.json trained by
    `tokenizers`, a Qwen3-style chat template in tokenizer_config.json (eos_token <|im_end|>) and
    two stop ids in generation_config.json ([<|im_end|>, <|endoftext|>], as Qwen3's)."""
    transformers = pytest.importorskip("transformers")
    from test_chat import QWEN3_STYLE
    from test_tokenizer import _train
    tmp = tmp_path_factory.mktemp("qwen3")
    tok, tok_path = _train(tmp, "qwen2")
    stops = [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]
    cfg = transformers.Qwen3Config(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=48,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                                   max_position_embeddings=1024, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(cfg)
    model.generation_config = transformers.GenerationConfig(eos_token_id=stops)
    directory = tmp / "model"
    model.save_pretrained(str(directory))
    (directory / "tokenizer.json").write_text(tok_path.read_text())
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": QWEN3_STYLE}))
    assert json.loads((directory / "generation_config.json").read_text())["eos_token_id"] == stops
    return directory


def _rlvr(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "rlvr.py", *args, "--device", "cpu"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_rlvr_eval_only_on_math_data_writes_samples_and_breakdown(qwen3_dir, tmp_path):
    data = _write(tmp_path / "math.jsonl", MATH_ROWS)
    out = tmp_path / "run"
    run = _rlvr(["--model", str(qwen3_dir), "--data", data, "--method", "cot", "--eval-only", "--eval-size", "4",
                 "--eval-samples", "3", "--max-new-tokens", "8", "--system", SYSTEM, "--no-thinking",
                 "--out", str(out)])
    assert f"read 4 problems from {data} (MATH format, with level and subject)" in run.stdout
    result = json.loads((out / "eval.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * 3
    assert [s["id"] for s in samples[::3]] == ["test/algebra/1.json", "math.jsonl:2", "17", "math.jsonl:4"]
    template = ChatTemplate.from_dir(str(qwen3_dir))
    for s, row in zip(samples[::3], MATH_ROWS):
        assert s["prompt"] == template.render(conversation(f"{row['problem']}\n\n{DEFAULT_INSTRUCTION}", SYSTEM),
                                              enable_thinking=False)
        assert s["prompt"].startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>")
        assert s["prompt"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # --no-thinking
    for s in samples:  # each sample's fields agree with each other; a cut-off one is no answer (reward 0, no vote)
        assert s["answer"] == extract_answer(s["completion"])
        assert s["correct"] == float(equivalent(s["gold"], s["answer"]) and not s["truncated"])
        key = (normalize(s["answer"]) or None) if s["answer"] is not None else None
        assert s["key"] == (None if s["truncated"] else key)
    # eval.json is what the samples say
    correct = [s["correct"] for s in samples]
    assert result["pass@1"] == pytest.approx(sum(correct) / len(correct))
    votes = [evaluate.majority_vote([s["key"] for s in samples[i: i + 3]], correct[i: i + 3]) for i in (0, 3, 6, 9)]
    assert result["majority@3"] == pytest.approx(sum(votes) / 4)
    assert result["truncated"] == pytest.approx(sum(s["truncated"] for s in samples) / len(samples))
    # MATH-500's level 1 and MATH's "Level 1" are one group (they used to be "1" and "Level 1")
    assert {k: v["problems"] for k, v in result["by_level"].items()} == {"Level 1": 2, "Level 2": 2}
    assert {k: v["problems"] for k, v in result["by_subject"].items()} == {"Algebra": 2, "Geometry": 1,
                                                                           "Prealgebra": 1}
    assert result["by_level"]["Level 2"]["pass@1"] == pytest.approx((sum(correct[0:3]) + sum(correct[9:12])) / 6)


def test_rlvr_trains_a_qwen3_checkpoint_on_gsm8k_data(qwen3_dir, tmp_path):
    """A couple of LBR RL steps on GSM8K-style data, evaluated on MATH-style data; and the task the
    CLI builds: the template's turn end first among the stop ids."""
    import rlvr
    from tools import rl_cli
    data = _write(tmp_path / "train.jsonl", [{"question": q, "answer": f"{a}\n#### {a}"}
                                             for q, a in [("What is 2 + 3?", "5"), ("What is 7 * 8?", "56")]])
    evals = _write(tmp_path / "math.jsonl", MATH_ROWS)
    out = tmp_path / "run"
    _rlvr(["--model", str(qwen3_dir), "--data", data, "--eval-data", evals, "--method", "lbr", "--widths", "2,1",
           "--sampler", "iid", "--steps", "2", "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "6",
           "--eval-size", "2", "--eval-samples", "2", "--out", str(out)])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(0 <= m["reward"] <= 1 for m in metrics)
    assert (out / "rl.pt").exists() and len((out / "samples.jsonl").read_text().splitlines()) == 2 * 2
    result = json.loads((out / "eval.json").read_text())
    assert result["fwd_per_token"] > 1 and set(result["by_level"]) == {"Level 1", "Level 2"}

    args = types.SimpleNamespace(data=data, eval_data=None, strict_data=False, model=str(qwen3_dir), system=None,
                                 instruction=None, thinking=True, max_new_tokens=None)
    task = rl_cli.word_problem_task(args, quiet=True)
    tok = task.tokenizer
    assert task.stop_ids == (tok.token_id("<|im_end|>"), tok.token_id("<|endoftext|>"))
    assert "<think>" not in task.prompt_text(task.problems[0])  # thinking on: no empty think block
    # soft decoding turns discrete after a token of the checkpoint's vocabulary, e.g. Qwen3's </think>
    soft = types.SimpleNamespace(method="soft", soft_k=2, soft_weighting="prob", temperature=1.0, max_new_tokens=8,
                                 soft_until="</think>")
    assert rl_cli.decoding_from_args(soft, task).discrete_after == tok.token_id("</think>")
    soft.soft_until = "#### 5"
    with pytest.raises(ValueError, match="is not one token"):
        rl_cli.decoding_from_args(soft, task)
