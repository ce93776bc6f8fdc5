"""
Planning task "subgoal star" (docs/DESIGN.md §7.1): find the path from s to a target hidden inside one
arm of a star graph.

A start node s has `n_arms` arms of `arm_len` nodes each; node labels are drawn without reuse
from `n_labels` ids; the edges are listed as shuffled `u v` pairs.

    prompt:  u1 v1 , u2 v2 , ... / t = s
    answer:  a1 ... aj <eos>          the path from s (excluded) to t, the depth-j node of one arm

Why it tests LBR: under teacher forcing every answer token after the first is a one-edge lookup,
so a next-token model learns to follow edges but picks the first arm at chance (1/n_arms).
A lookahead of depth >= j reaches t inside the right arm, where the model wants <eos> next: the
post-candidate hidden states carry the routing evidence; a shallower lookahead carries none.
The target is never a leaf when evaluating (j <= arm_len - 1): a model also says <eos> at every
leaf, which would hide the signal. Training uses every j in 1..arm_len.

Hierarchical version (`hubs` = H > 0): the path passes through H hubs c1..cH, each an interior
node of an arm of the previous centre and the centre of `n_arms` new arms of its own; the
prompt lists them (`/ c1 ... cH t = s`) and the answer marks each one when reached:
`a1 .. c1 * b1 .. c2 * ... t <eos>`. Each hub is a fresh decision revealed <= arm_len tokens later.

Training mixes in lookup drills (`drill_frac`, see `_drill`): they teach edge-following fast and
carry no planning. Format choices, both measured to matter for how fast a small model learns to
follow edges (and neither tells it which arm to take): each pair ends with `,`, and the prompt
ends with s, so that the path reads `s a1 ... t` and every answer token, the first included, is
read right after the node it follows (a one-hop lookup, the same one the drills teach).

Run `python -m tasks.planning` to print a few examples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from tasks.common import Example, WordTokenizer, teacher_forced_logits


@dataclass
class PlanningConfig:
    n_arms: int = 4  # arms per centre (docs/DESIGN.md §7.1): the branching of the first decision
    arm_len: int = 4  # nodes per arm (L)
    n_labels: int = 40  # node labels drawn without reuse per graph (N)
    hubs: int = 0  # subgoal hubs on the path (H); 0 = the plain star
    train_depths: tuple[int, ...] = ()  # target depths j for training; () = 1..arm_len
    eval_depths: tuple[int, ...] = ()  # target depths j for evaluation; () = 1..arm_len-1 (never a leaf)
    drill_frac: float = 0.5  # share of training examples that are lookup drills (see `_drill`)

    def __post_init__(self) -> None:
        self.train_depths = tuple(self.train_depths) or tuple(range(1, self.arm_len + 1))
        self.eval_depths = tuple(self.eval_depths) or tuple(range(1, self.arm_len))
        if self.n_arms < 2 or self.arm_len < 2:
            raise ValueError("need n_arms >= 2 and arm_len >= 2 for a planning decision")
        needed = 1 + (self.hubs + 1) * self.n_arms * self.arm_len
        if self.n_labels < needed:
            raise ValueError(f"n_labels={self.n_labels} is too small: a graph uses {needed} distinct nodes")
        if any(not 1 <= j <= self.arm_len for j in self.train_depths + self.eval_depths):
            raise ValueError(f"target depths must lie in 1..arm_len={self.arm_len}")


class PlanningTask:
    name = "planning"

    def __init__(self, cfg: PlanningConfig | None = None):
        self.cfg = cfg or PlanningConfig()
        self.tokenizer = WordTokenizer([str(i) for i in range(self.cfg.n_labels)] + [",", "/", "=", "*", "<eos>"])
        self.eos_id = self.tokenizer.eos_id
        self.stop_ids = (self.eos_id,)  # the ids that end a rollout (tasks/common.py)
        self.hub_mark = self.tokenizer.stoi["*"]

    @property
    def max_answer_len(self) -> int:
        return (self.cfg.hubs + 1) * self.cfg.arm_len + self.cfg.hubs + 1

    def difficulty(self, example: Example) -> str:
        """The label results are reported by: the target depth, 'j2'."""
        return f"j{example.info['depth']}"

    def sample(self, rng: random.Random, split: str = "train") -> Example:
        """One graph and question. `split` picks the target depths (train: all; eval: interior)."""
        c = self.cfg
        depths = c.train_depths if split == "train" else c.eval_depths
        labels = rng.sample(range(c.n_labels), 1 + (c.hubs + 1) * c.n_arms * c.arm_len)
        centre, nxt = labels[0], 1
        start, goals, edges, answer = centre, [], [], []
        for level in range(c.hubs + 1):
            arms = []
            for _ in range(c.n_arms):
                arm = labels[nxt: nxt + c.arm_len]
                nxt += c.arm_len
                edges += [(centre, arm[0])] + list(zip(arm, arm[1:]))
                arms.append(arm)
            last = level == c.hubs
            j = rng.choice(depths) if last else rng.randint(1, c.arm_len - 1)  # hubs are interior nodes
            arm = arms[rng.randrange(c.n_arms)]
            answer += arm[:j] if last else arm[:j] + ["*"]
            centre = arm[j - 1]
            goals.append(centre)
        rng.shuffle(edges)
        words = [w for u, v in edges for w in (str(u), str(v), ",")] + ["/"]
        info = {"depth": j, "start": start, "edges": edges}
        if split == "train" and rng.random() < c.drill_frac:
            return self._drill(rng, words, edges, info)
        words += [str(g) for g in goals] + ["=", str(start)]
        return Example(prompt=self.tokenizer.encode(" ".join(words)),
                       answer=self.tokenizer.encode(" ".join(str(w) for w in answer) + " <eos>"), info=info)

    def _drill(self, rng: random.Random, words: list[str], edges: list[tuple[int, int]], info: dict) -> Example:
        """A training-only lookup drill on the same graph: `edges /` -> `x1 y1 x2 y2 x3 y3 x4 y4 <eos>`
        where each x is a random node with children and y a random child of it; only the y's (and
        <eos>) are learned. It holds no decision about the target, so it cannot teach the planning;
        it teaches edge-following (and, at a centre, "a child of it"), which the answers need but
        exercise only once or twice each. Measured: without drills the small model sat at the
        'copy t, then <eos>' plateau for 3k+ steps; with half the examples drills, lookups were
        learned within ~1k steps on every seed tried."""
        succ: dict[int, list[int]] = {}
        for u, v in edges:
            succ.setdefault(u, []).append(v)
        centres = [u for u, vs in succ.items() if len(vs) > 1]
        chain = [u for u, vs in succ.items() if len(vs) == 1]
        # half the queries at a centre: its several matching edges make it the harder lookup
        xs = [rng.choice(centres) if rng.random() < 0.5 else rng.choice(chain) for _ in range(4)]
        answer = [str(w) for x in xs for w in (x, rng.choice(succ[x]))] + ["<eos>"]
        return Example(prompt=self.tokenizer.encode(" ".join(words)), answer=self.tokenizer.encode(" ".join(answer)),
                       info=info, loss_mask=[i % 2 == 1 for i in range(8)] + [True])

    def reward(self, example: Example, completion: list[int]) -> float:
        """1 if the completion is exactly the path (ending with <eos>), else 0."""
        return float(list(completion) == example.answer)

    def first_token_children(self, example: Example) -> list[int]:
        """Token ids of the children of s: the valid first answer tokens."""
        s = example.info["start"]
        return [self.tokenizer.stoi[str(v)] for u, v in example.info["edges"] if u == s]

    @torch.no_grad()
    def health(self, model, examples: list[Example], greedy) -> dict[str, float]:
        """The health checks of docs/DESIGN.md §7.2, by teacher forcing on `examples` (evaluation depths;
        `greedy`, the greedy decoder every task's health receives, is not needed here):
        tf_acc_rest     argmax accuracy on the answer tokens after the first (want >= 0.99);
        first_is_child  the first answer token (argmax) is a child of s (want >= 0.99);
        p_child         probability mass of the first token on the children of s: how often a
                        sampled first token is a child (a diagnostic: it bounds how often the right
                        arm is among LBR's candidates);
        first_acc       argmax accuracy of the first token (want about 1/n_arms: the model cannot plan);
        first_acc_j     the same per target depth j (j = 1 is a one-edge check, which small models learn).
        """
        logp, targets, mask = teacher_forced_logits(model, examples)  # (B, A, V), (B, A), (B, A)
        pred = logp.argmax(-1)
        rest = mask.clone()
        rest[:, 0] = False
        first_ok = pred[:, 0] == targets[:, 0]
        children = [self.first_token_children(ex) for ex in examples]
        p_child = torch.stack([logp[b, 0, ch].exp().sum() for b, ch in enumerate(children)])
        is_child = torch.tensor([int(pred[b, 0]) in ch for b, ch in enumerate(children)])
        out = {"tf_acc_rest": float((pred == targets)[rest].float().mean()),
               "first_is_child": float(is_child.float().mean()),
               "p_child": float(p_child.mean()),
               "first_acc": float(first_ok.float().mean()),
               "chance": 1.0 / self.cfg.n_arms}
        for j in sorted({ex.info["depth"] for ex in examples}):
            sel = torch.tensor([ex.info["depth"] == j for ex in examples])
            out[f"first_acc_j{j}"] = float(first_ok[sel].float().mean())
        return out


def main() -> None:
    from tools.cli import ArgumentParser  # the command line's helper; the task itself needs none
    ArgumentParser(prog="python -m tasks.planning",
                   description="Print a few examples of the planning task (a training and an evaluation "
                   "example, and one with a hub): prompt -> answer, in the task's words.").parse_args()
    task = PlanningTask(PlanningConfig())
    rng = random.Random(0)
    for split in ["train", "eval"]:
        ex = task.sample(rng, split)
        print(f"[{split}] {task.tokenizer.decode(ex.prompt)}  ->  {task.tokenizer.decode(ex.answer)}")
    hub = PlanningTask(PlanningConfig(hubs=1, n_labels=40))
    ex = hub.sample(rng, "eval")
    print(f"[hubs=1] {hub.tokenizer.decode(ex.prompt)}  ->  {hub.tokenizer.decode(ex.answer)}")


if __name__ == "__main__":
    from tools.cli import run
    run(main)
