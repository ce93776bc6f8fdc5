r"""
Math word problems with a verifiable final answer, for a pretrained model with its own tokenizer
and chat template: GSM8K-style and MATH-style JSONL data (`python rlvr.py --model DIR --data FILE`).

Data (one JSON object a line; the format is detected line by line from the fields):
    GSM8K style  {"question": ..., "answer": "... reasoning ...\n#### 18"}
                 the gold answer is what follows the last `####` (it must be a number);
    MATH style   {"problem": ..., "answer": "\frac{3}{4}"}, or
                 {"problem": ..., "solution": "... so the answer is $\boxed{\frac{3}{4}}$."}
                 the gold answer is "answer" when present, else the last \boxed{...} of "solution".
Kept when present: an id ("id", "unique_id" or "problem_id"; else FILE:LINE), "level" (MATH:
"Level 5", MATH-500: 5; both read as "Level 5") and "subject" (MATH's original files call it
"type"), by which evaluations are broken down. A malformed line is refused (strict) or reported
with its number and skipped; a file that is not UTF-8 is refused whole (see `load_problems`).

Prompt: the checkpoint's chat template (chat.ChatTemplate; ChatML for a checkpoint without one)
renders [system prompt (if any), user: problem + "\n\n" + instruction]; the default instruction
is the one Qwen's math models are evaluated with. Qwen3's thinking switch is a template variable.

Reward: the completion is read up to its first stop token (any of `stop_ids`: a model may end a
turn with one of several ids, and what follows it is not the model's answer), decoded, and its
final answer (answers.extract_answer: the last \boxed{}, else `####`, else "the answer is", else
the last number) compared with the gold answer by answers.equivalent: 1 if equivalent, else 0.
Majority vote keys on answers.normalize of the extracted answer (`answer_key`). A rollout cut off
at max_new_tokens is no answer: reward 0 and no vote before its text is read (evaluate.py).

Run `python -m tasks.word_problems FILE.jsonl` to print the detected format and a few problems.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import sys
from dataclasses import dataclass

from tasks.answers import last_boxed, equivalent, extract_answer, normalize
from pretrained.chat import ChatTemplate, conversation
from pretrained.checkpoint import stop_ids
from pretrained.tokenizer import BPETokenizer
from tools.cli import ArgumentParser, check_in_file, run
from tasks.common import Example

DEFAULT_INSTRUCTION = r"Please reason step by step, and put your final answer within \boxed{}."
ID_FIELDS = ("id", "unique_id", "problem_id")  # the first present names the problem
_NUMBER_KEY = re.compile(r"-?\d+(/\d+)?")  # answers.normalize's key of a rational number: '9500', '-3/4'
_LEVEL = re.compile(r"\s*(?:level\s*)?(\d+)\s*", re.IGNORECASE)  # a numbered level: '3', 'Level 3', 'level 03'


@dataclass
class Problem:
    id: str  # the data's id, else FILE:LINE
    question: str  # the problem text the model is asked
    gold: str  # the reference final answer, as the data writes it (answers.equivalent compares it)
    solution: str | None  # the full reference solution, when the data has one
    line: int  # line number in the file (1-based)
    format: str  # "GSM8K" or "MATH": which layout the line has
    level: str | None = None  # difficulty label when the data has one ("Level 5"; see `_level`)
    subject: str | None = None  # subject label when the data has one ("Algebra")


def _text(row: dict, field: str, required: bool = True) -> str | None:
    """A string field of a row; a missing optional field is None; a wrong type is malformed."""
    value = row.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'the field "{field}" must be non-empty text')
    return value


def _label(row: dict, *fields: str) -> str | None:
    """A label (id, level, subject) from the first of `fields` present: text or an integer."""
    for field in fields:
        value = row.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f'the field "{field}" must be text or an integer, got {value!r}')
        return str(value)
    return None


def _level(row: dict) -> str | None:
    """The difficulty label: a numbered level in MATH's spelling, "Level N", whether the data writes
    "Level 3" (MATH) or 3 (MATH-500), so that one level is one group of an evaluation; any other
    label ("Level ?" in MATH) as written."""
    label = _label(row, "level")
    m = _LEVEL.fullmatch(label) if label is not None else None
    return f"Level {int(m.group(1))}" if m else label


def parse_problem(row: object, path: str, line: int) -> Problem:
    """One data line (a parsed JSON value) as a Problem; ValueError saying what is wrong otherwise."""
    if not isinstance(row, dict):
        raise ValueError("a line must hold a JSON object")
    if "problem" in row:  # MATH style
        question, solution = _text(row, "problem"), _text(row, "solution", required=False)
        if row.get("answer") is not None:
            answer = row["answer"]
            number = isinstance(answer, int) or isinstance(answer, float) and math.isfinite(answer)
            if isinstance(answer, bool) or not (number or isinstance(answer, str) and answer.strip()):
                raise ValueError(f'the field "answer" must be non-empty text or a finite number, got {answer!r}')
            gold = str(answer).strip()
        elif solution is not None:
            gold = last_boxed(solution)
            if not gold:
                raise ValueError('no "answer" field and no \\boxed{...} answer in "solution"')
        else:
            raise ValueError('a MATH-style line needs an "answer", or a "solution" with a \\boxed{...} answer')
        fmt = "MATH"
    elif "question" in row:  # GSM8K style
        question, solution = _text(row, "question"), _text(row, "answer")
        if "####" not in solution:
            raise ValueError('the answer has no "#### n" line')
        gold = solution.rsplit("####", 1)[1].strip().split("\n", 1)[0].strip()
        if not _NUMBER_KEY.fullmatch(normalize(gold)):
            raise ValueError(f"the text after #### is not a number: {gold!r}")
        fmt = "GSM8K"
    else:
        raise ValueError('needs "question" and "answer" (GSM8K style) or "problem" with "answer" or a '
                         '\\boxed{} "solution" (MATH style)')
    if not normalize(gold):
        raise ValueError(f"the gold answer {gold!r} is empty")
    return Problem(id=_label(row, *ID_FIELDS) or f"{os.path.basename(path)}:{line}", question=question, gold=gold,
                   solution=solution, line=line, format=fmt, level=_level(row),
                   subject=_label(row, "subject", "type"))


def describe(problems: list[Problem], path: str, skipped: int = 0) -> str:
    """The log line of a read file: 'read 7473 problems from X (GSM8K format)'."""
    counts = {f: sum(p.format == f for p in problems) for f in ("GSM8K", "MATH")}
    counts = {f: n for f, n in counts.items() if n}
    what = f"{next(iter(counts))} format" if len(counts) == 1 else \
        "mixed format: " + ", ".join(f"{n} {f}" for f, n in counts.items())
    labels = [label for label in ("level", "subject") if any(getattr(p, label) for p in problems)]
    what += f", with {' and '.join(labels)}" if labels else ""
    what += f"; skipped {skipped} malformed line{'s' * (skipped != 1)}" if skipped else ""
    return f"read {len(problems)} problem{'s' * (len(problems) != 1)} from {path} ({what})"


def load_problems(path: str, strict: bool = False, quiet: bool = False) -> list[Problem]:
    """Read a JSONL file of GSM8K- or MATH-style problems (formats in the module docstring).

    A malformed line (bad JSON, missing field, no gold answer) raises ValueError naming its line
    number if `strict`; else it is reported on stderr and skipped, nothing dropped silently; a file
    without a single usable problem raises ValueError naming its first malformed line. A file that
    is not UTF-8 (JSON's encoding, RFC 8259 §8.1) raises ValueError naming the first line that is
    not, strict or not: skipping those lines would drop exactly the problems with non-ASCII text.
    Unless `quiet`, prints one line to stdout: how many problems, in which format (`describe`).
    """
    problems, bad = [], []
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            try:
                raw = line.decode("utf-8-sig" if i == 1 else "utf-8")  # -sig: a leading BOM is no JSON
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{i}: not UTF-8 text (byte 0x{line[e.start]:02x} at column {e.start + 1}); "
                                 f"convert the file, e.g. `iconv -f latin1 -t utf-8 {path} > fixed.jsonl`") from None
            if not raw.strip():
                continue
            try:
                problems.append(parse_problem(json.loads(raw), path, i))  # json.JSONDecodeError is a ValueError
            except ValueError as e:
                msg = f"{path}:{i}: malformed line: {e}"
                if strict:
                    raise ValueError(msg + " (fix the line, or drop --strict-data to skip such lines)") from None
                bad.append(msg)
    if not problems:
        raise ValueError(f"{path}: no problem could be read" + (f"; the first malformed line: {bad[0]}" if bad else
                                                                 " (the file is empty)"))
    for msg in bad:
        print(f"skipped {msg}", file=sys.stderr)
    if not quiet:
        print(describe(problems, path, len(bad)))
    return problems


class WordProblemTask:
    """Word problems for a pretrained model with its own tokenizer (tokenizer.BPETokenizer) and
    chat template: the interface of tasks/common.py, plus what evaluate.py uses when a task has it:
    `answer_key` (the majority vote), `groups` (the breakdown by level / subject), `record`
    (samples.jsonl); and `eval_examples` (rlvr.py: a benchmark's problems, each once, in order)."""
    name = "word_problems"

    def __init__(self, problems: list[Problem], tokenizer, stop_ids, template: ChatTemplate | None = None,
                 system: str | None = None, instruction: str = DEFAULT_INSTRUCTION, switches: dict | None = None,
                 max_answer_len: int = 512, eval_problems: list[Problem] | None = None):
        """problems: to train on (sampled with replacement); eval_problems: to evaluate on, in order
        (default: problems). stop_ids: the ids that end a completion, the turn's end first (it
        closes the reference answers of `example`); template: the checkpoint's (default ChatML);
        system: the system prompt (None: the template's default); instruction: appended to each
        problem ('' for none); switches: extra template variables (e.g. enable_thinking=False)."""
        if not problems:
            raise ValueError("no problems to train on: check --data")
        self.stop_ids = tuple(dict.fromkeys(int(i) for i in stop_ids))  # (S,) in the caller's order
        if not self.stop_ids:
            raise ValueError("a task needs at least one stop id")
        self.eos_id = self.stop_ids[0]  # for code that knows a single EOS
        self.problems, self.eval_problems = problems, eval_problems or problems
        self.tokenizer, self.max_answer_len = tokenizer, max_answer_len
        self.template = template or ChatTemplate(None)
        self.system, self.instruction, self.switches = system, instruction, dict(switches or {})

    @classmethod
    def from_checkpoint(cls, directory: str, problems: list[Problem], eval_problems: list[Problem] | None = None,
                        system: str | None = None, instruction: str = DEFAULT_INSTRUCTION, thinking: bool | None = None,
                        max_answer_len: int = 512) -> "WordProblemTask":
        """The task of a checkpoint directory: its tokenizer.json, its chat template (ChatML without
        one) and its stop ids (checkpoint.stop_ids, and ChatML's <|im_end|> with the fallback; the id
        that closes a chat turn first). thinking: Qwen3's enable_thinking switch (None: the template's
        default). One prompt is rendered now, so a template that refuses the conversation (e.g. a
        system turn) fails here; a ValueError says what is wrong."""
        template = ChatTemplate.from_dir(directory)
        switches = {}
        if thinking is not None:
            if not template.uses("enable_thinking"):
                raise ValueError(f"--{'' if thinking else 'no-'}thinking: the chat template of {directory} has no "
                                 "enable_thinking switch (Qwen3's); drop the flag")
            switches["enable_thinking"] = thinking
        tok = BPETokenizer.from_file(os.path.join(directory, "tokenizer.json"))
        stops = stop_ids(directory)  # has checked that the tokenizer's EOS, if any, is a token
        if template.source is None and "<|im_end|>" in tok.added:  # the ChatML fallback closes a turn with it
            turn_end = tok.token_id("<|im_end|>")
            stops.add(turn_end)
        else:  # a template closes a turn with the tokenizer's EOS
            eos = template.special_tokens.get("eos_token")
            turn_end = tok.token_id(eos) if eos is not None else None
        task = cls(problems, tok, sorted(stops, key=lambda i: (i != turn_end, i)), template, system, instruction,
                   switches, max_answer_len, eval_problems)
        task.prompt_text(task.eval_problems[0])
        return task

    def prompt_text(self, problem: Problem) -> str:
        """The prompt as text: the chat template's rendering of [system, user turn], ready for the answer."""
        question = problem.question + (f"\n\n{self.instruction}" if self.instruction else "")
        return self.template.render(conversation(question, self.system), add_generation_prompt=True, **self.switches)

    def example(self, problem: Problem) -> Example:
        """A problem as token ids; the reference answer (for teacher forcing) is its solution, or
        a sentence with its boxed gold answer, then the turn's stop id."""
        answer = problem.solution or f"The final answer is $\\boxed{{{problem.gold}}}$."
        info = {"gold": problem.gold, "id": problem.id, "line": problem.line, "question": problem.question,
                "level": problem.level, "subject": problem.subject}
        return Example(prompt=self.tokenizer.encode(self.prompt_text(problem)),
                       answer=self.tokenizer.encode(answer) + [self.eos_id], info=info)

    def sample(self, rng: random.Random, split: str = "train") -> Example:
        return self.example(rng.choice(self.eval_problems if split == "eval" else self.problems))

    def eval_examples(self, n: int) -> list[Example]:
        """The first n evaluation problems, each once, in file order (a benchmark is a fixed set)."""
        return [self.example(p) for p in self.eval_problems[:n]]

    def difficulty(self, example: Example) -> str:
        """One label for all (evaluations break word problems down by `groups` instead)."""
        return "all"

    def groups(self, example: Example) -> dict[str, str]:
        """The labels evaluations are broken down by: {'level': ..., 'subject': ...}, those the data has."""
        return {k: example.info[k] for k in ("level", "subject") if example.info.get(k) is not None}

    def completion_text(self, completion: list[int]) -> str:
        """The text of a completion up to (not including) its first stop token. Special tokens are
        left out, and so are ids the tokenizer does not know (a model's vocabulary is often padded
        beyond its tokenizer's: Qwen2.5 has 151936 rows for 151665 tokens)."""
        ids = [int(t) for t in completion]
        stops = set(self.stop_ids)
        end = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        known = self.tokenizer.id_to_token
        return self.tokenizer.decode([t for t in ids[:end] if t in known], skip_special=True)

    def extracted(self, completion: list[int]) -> str | None:
        """The completion's final answer as written (answers.extract_answer), or None."""
        return extract_answer(self.completion_text(completion))

    def reward(self, example: Example, completion: list[int]) -> float:
        """1.0 if the final answer of the completion (read up to its first stop) is equivalent to
        the gold answer (answers.equivalent), else 0.0. (A rollout cut off at max_new_tokens gets
        0 before its text is read: evaluate.rewards_of.)"""
        return float(equivalent(example.info["gold"], self.extracted(completion)))

    def answer_key(self, example: Example, completion: list[int]) -> str | None:
        """The majority-vote key of a completion: the normalised final answer (answers.normalize),
        so that `9{,}500`, `9500` and `\\$9,500` vote together; None when there is no answer."""
        answer = self.extracted(completion)
        return (normalize(answer) or None) if answer is not None else None

    def record(self, example: Example, completion: list[int]) -> dict:
        """What an evaluation writes about one sample (rlvr.py --eval-only, samples.jsonl)."""
        return {"id": example.info["id"], "question": example.info["question"], "gold": example.info["gold"],
                "prompt": self.tokenizer.decode(example.prompt), "completion": self.completion_text(completion),
                "answer": self.extracted(completion)}

    def health(self, model, examples: list[Example], greedy=None) -> dict[str, float]:
        """No health checks: a pretrained model is not this project's to diagnose."""
        return {}


def main() -> None:
    ap = ArgumentParser(description="Read a GSM8K- or MATH-style JSONL file and print a few of its problems.")
    ap.add_argument("file")
    ap.add_argument("--strict", action="store_true", help="refuse a malformed line instead of skipping it")
    ap.add_argument("-n", type=int, default=3, help="problems to print")
    args = ap.parse_args()
    check_in_file(args.file, "file")
    for p in load_problems(args.file, args.strict)[: max(args.n, 0)]:
        labels = ", ".join(f"{k} {getattr(p, k)}" for k in ("level", "subject") if getattr(p, k))
        print(f"\n[{p.id}{', ' + labels if labels else ''}] {p.question}\n    gold: {p.gold}")


if __name__ == "__main__":
    run(main)
