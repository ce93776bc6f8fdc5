"""
Math task "mod chain" (docs/DESIGN.md §7.3).

Mod chain: a shrunken, program-generated iGSM-style problem. Shuffled statements assign
constants or combine two variables; a query names one variable; all arithmetic is mod `p`:

    prompt:  c = 5 ; k = c * f ; f = 3 ; d = 7 ; y = k + d ; ? y ;
    answer:  k = c * f = 5 * 3 = 4 ; y = k + d = 4 + 7 = 0 ; # 0 <eos>

The answer has one line per *needed* operation, in dependency order: the operation restated by
name, then with its operands' values substituted, and its result; then `# result`. Restating
(`restate`, on by default; without it a line is `k = 5 * 3 = 4 ;`, docs/DESIGN.md §7.3) turns each operand value
into a one-hop lookup of the name just written; without it a value is a two-hop lookup (find
the statement of k, read the operand's name, find its value). Measured on the tiny model after
2.5k steps without restating: teacher-forced accuracy 100% on results (the arithmetic) but
44-70% on operand values, and greedy accuracy at chance from 2 operations on. Statements the query does not need are
distractors. The verifier checks the integer after the last `#` and, with `verify_lines` (the
default, see `reward`), re-executes every line of the working against the program. The number of operations is the difficulty: supervised
supervised pre-training, RL and evaluation each draw it from their own list (`train_ops`,
`rl_ops`, `eval_ops`).

Real math word problems (GSM8K, MATH) for pretrained models are tasks/word_problems.py.

Run `python -m tasks.math` to print a few examples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from tasks.common import Example, WordTokenizer, teacher_forced_logits

VAR_NAMES = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class MathConfig:
    p: int = 11  # modulus of every operation
    n_vars: int = 20  # variable names (the first n_vars lower-case letters)
    ops: str = "+-*"  # operators in use
    # Operations per problem. The first plan was RL on 3-5 (docs/DESIGN.md §7.3, §8.4); measured on the tiny model (2 layers,
    # d = 64, 2k steps), the strict Pass@32 (see `reward`) is 1.0 / 0.18 / 0.06 at 1 / 2 / 3
    # operations and 0 at 4 and 5: no reward to learn from there, so RL and evaluation use 1-3.
    train_ops: tuple[int, ...] = (1, 2, 3)  # for supervised pre-training
    rl_ops: tuple[int, ...] = (1, 2, 3)  # for RL
    eval_ops: tuple[int, ...] = (1, 2, 3)  # for evaluation (results are reported per value)
    distractors: int = 2  # statements the query does not need
    reuse: float = 0.3  # chance that an operation's second operand is an earlier variable, not a fresh constant
    shuffle: bool = True  # shuffle the statements (False: dependency order, an easier task)
    drill_frac: float = 0.3  # share of training examples that are value-lookup drills (see `_drill`)
    verify_lines: bool = True  # reward also re-executes every answer line (False: the final number only; see reward)
    restate: bool = True  # answer lines restate the operation by name first: `y = k + d = 4 + 7 = 0 ;`

    def __post_init__(self) -> None:
        self.train_ops, self.rl_ops, self.eval_ops = tuple(self.train_ops), tuple(self.rl_ops), tuple(self.eval_ops)
        if not 2 <= self.p <= 1000:
            raise ValueError(f"p={self.p}: the modulus must lie in 2..1000")
        if not self.ops or set(self.ops) - set("+-*"):
            raise ValueError(f"ops={self.ops!r}: choose a non-empty subset of '+-*'")
        if not 1 <= self.n_vars <= len(VAR_NAMES):
            raise ValueError(f"n_vars must lie in 1..{len(VAR_NAMES)}")
        if min(self.train_ops + self.rl_ops + self.eval_ops) < 1:
            raise ValueError("operation counts must be >= 1")
        # worst case: n ops, n + 1 constants, every distractor a fresh variable
        if 2 * max(self.train_ops + self.rl_ops + self.eval_ops) + 1 + self.distractors > self.n_vars:
            raise ValueError(f"n_vars={self.n_vars} is too small for {max(self.train_ops + self.rl_ops + self.eval_ops)} "
                             f"operations and {self.distractors} distractors: raise n_vars or lower the counts")

    @property
    def max_ops(self) -> int:
        return max(self.train_ops + self.rl_ops + self.eval_ops)


def apply_op(a: int, op: str, b: int, p: int) -> int:
    return (a + b) % p if op == "+" else (a - b) % p if op == "-" else (a * b) % p


class MathTask:
    name = "math"

    def __init__(self, cfg: MathConfig | None = None):
        self.cfg = cfg or MathConfig()
        words = list(VAR_NAMES[: self.cfg.n_vars]) + [str(i) for i in range(self.cfg.p)] + list(self.cfg.ops)
        self.tokenizer = WordTokenizer(words + ["=", ";", "?", "#", "<eos>"])
        self.eos_id = self.tokenizer.eos_id
        self.stop_ids = (self.eos_id,)  # the ids that end a rollout (tasks/common.py)
        self.hash_id = self.tokenizer.stoi["#"]  # ends the working: the soft baseline turns discrete after it

    @property
    def max_answer_len(self) -> int:
        per_line = 12 if self.cfg.restate else 8  # `v = x op z = a op b = r ;` or `v = a op b = r ;`
        return per_line * self.cfg.max_ops + 3  # then `# r <eos>`

    def difficulty(self, example: Example) -> str:
        """The label results are reported by: the number of operations, 'ops3'."""
        return f"ops{example.info['ops']}"

    def sample(self, rng: random.Random, split: str = "train") -> Example:
        """One problem; `split` picks the operation counts ('train', 'rl' or 'eval')."""
        c = self.cfg
        n = rng.choice({"train": c.train_ops, "rl": c.rl_ops}.get(split, c.eval_ops))
        names = rng.sample(VAR_NAMES[: c.n_vars], c.n_vars)  # a fresh name is names.pop()
        value: dict[str, int] = {}
        statements: list[tuple[str, ...]] = []  # (v, k) constants and (v, a, op, b) operations

        def constant() -> str:
            v = names.pop()
            value[v] = rng.randrange(c.p)
            statements.append((v, str(value[v])))
            return v

        lines, prev = [], None
        for i in range(n):
            # operation i reads operation i-1's result, so the query needs all n of them
            a = prev if prev is not None else constant()
            earlier = [v for v in value if v != a]
            b = rng.choice(earlier) if earlier and rng.random() < c.reuse else constant()
            if rng.random() < 0.5:
                a, b = b, a
            op, v = rng.choice(c.ops), names.pop()
            value[v] = apply_op(value[a], op, value[b], c.p)
            statements.append((v, a, op, b))
            named = f"{a} {op} {b} = " if c.restate else ""
            lines.append(f"{v} = {named}{value[a]} {op} {value[b]} = {value[v]} ;")
            prev = v
        needed = list(value)
        for _ in range(c.distractors):  # a fresh constant, or an operation nobody reads
            if rng.random() < 0.5:
                constant()
            else:
                a, b = rng.choice(needed), rng.choice(needed)
                op, v = rng.choice(c.ops), names.pop()
                value[v] = apply_op(value[a], op, value[b], c.p)
                statements.append((v, a, op, b))
        if c.shuffle:
            rng.shuffle(statements)
        prompt = " ".join(" ".join((s[0], "=") + s[1:]) + " ;" for s in statements)
        if split == "train" and rng.random() < c.drill_frac:
            return self._drill(rng, prompt, statements)
        prompt += f" ? {prev} ;"
        answer = " ".join(lines) + f" # {value[prev]} <eos>"
        return Example(prompt=self.tokenizer.encode(prompt), answer=self.tokenizer.encode(answer),
                       info={"ops": n, "result": value[prev], "values": value,
                             "defs": {st[0]: st[1:] for st in statements if len(st) == 4}})

    def _drill(self, rng: random.Random, prompt: str, statements: list[tuple[str, ...]]) -> Example:
        """A training-only lookup drill on the same statements: `... ? ;` -> `x1 = v1 ; ... x4 = v4 ; <eos>`
        for random constants x; only the values (and <eos>) are learned. It asks nothing about the
        query, so it teaches no solving, only the value lookup that every answer line needs (the
        step the tiny model learned last, or on some seeds not at all, without drills)."""
        consts = [st for st in statements if len(st) == 2]
        picks = [rng.choice(consts) for _ in range(4)]
        answer = " ".join(f"{x} = {v} ;" for x, v in picks) + " <eos>"
        return Example(prompt=self.tokenizer.encode(prompt + " ? ;"), answer=self.tokenizer.encode(answer),
                       info={"ops": 0, "drill": True}, loss_mask=[False, False, True, False] * 4 + [True])

    def final_value(self, completion: list[int]) -> int | None:
        """The integer after the last `#` (None if there is none)."""
        words = self.tokenizer.decode([t for t in completion if t != self.eos_id]).split()
        if "#" not in words:
            return None
        i = len(words) - 1 - words[::-1].index("#")
        return int(words[i + 1]) if i + 1 < len(words) and words[i + 1].isdigit() else None

    def lines_correct(self, example: Example, completion: list[int]) -> bool:
        """Re-execute the working: one line per needed operation, each naming a variable the
        program defines by an operation, restating that operation (with `restate`), with the
        operands' true values and the right result (mod p)."""
        words = self.tokenizer.decode(completion).split()
        working = words[: words.index("#")] if "#" in words else words
        lines = [ln.split() for ln in " ".join(working).split(";") if ln.strip()]
        if len(lines) != example.info["ops"]:
            return False
        value, defs = example.info["values"], example.info["defs"]
        for ln in lines:
            if len(ln) != (11 if self.cfg.restate else 7) or ln[1] != "=" or ln[0] not in defs:
                return False
            x, op, z = defs[ln[0]]
            if self.cfg.restate and ln[2:6] != [x, op, z, "="]:
                return False
            if ln[-5:] != [str(value[x]), op, str(value[z]), "=", str(value[ln[0]])]:
                return False
        return True

    def reward(self, example: Example, completion: list[int]) -> float:
        """1 if the completion ends with <eos>, the integer after its last `#` is the answer and
        (with `verify_lines`, the default) every line of the working re-executes correctly.

        Why re-execute by default: the answer is one of p = 11 numbers, so a guess is right 1 time
        in 11 and Pass@32 of pure guessing is 1 - (10/11)^32 = 0.95; checking the working removes
        that floor, so Pass@k measures solving, not guessing."""
        completion = list(completion)
        if not completion or completion[-1] != self.eos_id:
            return 0.0
        if self.final_value(completion) != example.info["result"]:
            return 0.0
        return float(not self.cfg.verify_lines or self.lines_correct(example, completion))

    @torch.no_grad()
    def health(self, model, examples: list[Example], greedy) -> dict[str, float]:
        """Health of a pre-trained model on `examples` (eval split); `greedy` is a greedy decoder
        (evaluate.greedy_completions: model, prompts, stop ids, max new tokens -> completions):
        tf_acc          teacher-forced argmax accuracy over the answer tokens;
        greedy_acc      greedy decoding gets the final answer right (reward 1);
        greedy_acc_opsN the same per number of operations N (want: well below 1 on the RL
                        difficulties, so that RL has room; docs/DESIGN.md §7.3)."""
        logp, targets, mask = teacher_forced_logits(model, examples)
        out = {"tf_acc": float((logp.argmax(-1) == targets)[mask].float().mean())}
        completions = greedy(model, [e.prompt for e in examples], self.stop_ids, self.max_answer_len)
        ok = torch.tensor([self.reward(e, c) for e, c in zip(examples, completions)])
        out["greedy_acc"] = float(ok.mean())
        for n in sorted({e.info["ops"] for e in examples}):
            sel = torch.tensor([e.info["ops"] == n for e in examples])
            out[f"greedy_acc_ops{n}"] = float(ok[sel].mean())
        return out


def main() -> None:
    from tools.cli import ArgumentParser  # the command line's helper; the task itself needs none
    ArgumentParser(prog="python -m tasks.math",
                   description="Print a few examples of the mod-chain math task (one per split: train, rl, "
                   "eval): prompt -> answer, in the task's words.").parse_args()
    task = MathTask()
    rng = random.Random(0)
    for split in ["train", "rl", "eval"]:
        ex = task.sample(rng, split)
        print(f"[{split}, {ex.info['ops']} ops] {task.tokenizer.decode(ex.prompt)}\n    -> {task.tokenizer.decode(ex.answer)}")


if __name__ == "__main__":
    from tools.cli import run
    run(main)
