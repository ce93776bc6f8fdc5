"""
What every task shares: the `Example` record, the teacher-forcing batch builder, `Seeds` (how
every random stream of a run, examples and sampling generators, derives from the run's one seed),
and `WordTokenizer`, the fixed word vocabulary of the synthetic tasks (every node label, operator
and special symbol is one token; built from the task's word list, so the ids are deterministic).

A task (tasks/planning.py, tasks/math.py) is a class with:
    name, tokenizer, max_answer_len
    eos_id                                           the EOS id its answers end with
    stop_ids: tuple[int, ...]                        the ids that end a rollout (the decoders' stop set;
                                                     (eos_id,) for the toy tasks, several for real models)
    sample(rng: random.Random, split) -> Example     one prompt/answer pair ('train' or 'eval')
    reward(example, completion: list[int]) -> float 0/1 verifiable reward of a completion
    health(model, examples, greedy) -> dict         the task's health checks of a pre-trained model;
                                                     greedy: a greedy decoder (evaluate.greedy_completions)
                                                     passed in by the caller, so tasks import no decoder
    difficulty(example) -> str                       the label results are broken down by ('j2', 'ops3')
so that sft.py and rlvr.py treat tasks alike.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Example:
    prompt: list[int]  # token ids of the question
    answer: list[int]  # token ids of the reference answer, ending with EOS
    info: dict = field(default_factory=dict)  # task-specific facts (target depth, number of operations, ...)
    loss_mask: list[bool] | None = None  # which answer tokens supervised training learns (None: all)


@dataclass(frozen=True)
class Seeds:
    """The seed of every random stream of a run, derived from its one seed (`--seed`): the same
    command draws the same examples and samples the same tokens, however the work is split.

        train_step(step)            seed * 1_000_003 + step   the examples of training step `step`
                                                              (sft.py's batches, rlvr.py's prompts)
        train_step(step, shard=s)   ... + s * 1_000_000_007   the sampling generator of rollout shard s
        eval_examples               10_000 + seed             the evaluation problems (split 'eval') of
                                                              sft.py's health checks and rlvr.py
        experiment_eval_examples    20_000 + seed             the experiments' evaluation problems: others
                                                              than those their base model's health used
        validation_examples         30_000 + seed             the problems every choice of experiments/ablations.py is
                                                              made on (learning rates, widths, ...), never
                                                              the test problems (experiment_eval_examples)
        eval_sampling(rank)         seed + 7919 * rank        the evaluation sampler of process `rank`

    The multipliers keep the streams apart: 1_000_003 is a prime above any step count, so
    (seed, step) -> seed * 1_000_003 + step is one-to-one for step < 1_000_003; 1_000_000_007 is a
    prime above every such value with seed < 999, so no shard's generator repeats another shard's
    or another step's. (Shard 0's number equals the step's examples' number, but one seeds
    random.Random through make_examples' "task:split:seed" string and the other a torch.Generator:
    different streams.) The evaluation problems are a stream of their own already (split 'eval');
    the offsets 10_000 and 20_000 are kept because the results in results/ were made with them.
    7919 (the 1000th prime) gives each process of a torchrun evaluation its own sampler; a single
    process samples with the run's seed itself.
    """
    seed: int  # the run's --seed

    def train_step(self, step: int, shard: int = 0) -> int:
        return self.seed * 1_000_003 + step + shard * 1_000_000_007

    @property
    def eval_examples(self) -> int:
        return 10_000 + self.seed

    @property
    def experiment_eval_examples(self) -> int:
        return 20_000 + self.seed

    @property
    def validation_examples(self) -> int:
        return 30_000 + self.seed

    def eval_sampling(self, rank: int = 0) -> int:
        return self.seed + 7919 * rank


def make_examples(task, n: int, seed: int, split: str) -> list[Example]:
    """n examples from a generator seeded by (seed, split): the same call gives the same list."""
    rng = random.Random(f"{task.name}:{split}:{seed}")
    return [task.sample(rng, split) for _ in range(n)]


def pack(examples: list[Example], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded prompt+answer sequences for teacher forcing.

    Returns seq (B, T), the positions that predict a supervised answer token (B, T) bool
    (position i predicts seq[i + 1]; see Example.loss_mask), and prompt lengths (B,).
    """
    T = max(len(e.prompt) + len(e.answer) for e in examples)
    seq = torch.zeros(len(examples), T, dtype=torch.long)
    predicts_answer = torch.zeros(len(examples), T, dtype=torch.bool)
    for b, e in enumerate(examples):
        P, A = len(e.prompt), len(e.answer)
        seq[b, : P + A] = torch.tensor(e.prompt + e.answer)
        predicts_answer[b, P - 1 : P + A - 1] = torch.tensor(e.loss_mask if e.loss_mask is not None else [True] * A)
    plen = torch.tensor([len(e.prompt) for e in examples])
    return seq.to(device), predicts_answer.to(device), plen.to(device)


def teacher_forced_logits(model, examples: list[Example]) -> tuple[Tensor, Tensor, Tensor]:
    """log p over the answer positions: logp (B, A, V), targets (B, A), mask (B, A), A = longest answer."""
    device = model.embed_tokens.weight.device
    seq, _, plen = pack(examples, device)
    A = max(len(e.answer) for e in examples)
    h = model.hidden(seq)
    idx = (plen[:, None] - 1 + torch.arange(A, device=device)).clamp(max=seq.shape[1] - 1)  # (B, A)
    logp = model.head(h.gather(1, idx[..., None].expand(-1, -1, h.shape[-1]))).log_softmax(-1)
    targets = seq.gather(1, (idx + 1).clamp(max=seq.shape[1] - 1))
    mask = torch.arange(A, device=device) < torch.tensor([len(e.answer) for e in examples], device=device)[:, None]
    return logp, torch.where(mask, targets, 0), mask


class WordTokenizer:
    """Whitespace-separated words <-> ids, over a fixed list of words."""

    def __init__(self, words: list[str], eos: str = "<eos>"):
        if len(set(words)) != len(words):
            raise ValueError("the vocabulary has duplicate words")
        if eos not in words:
            raise ValueError(f"the vocabulary must contain the end-of-sequence word {eos!r}")
        if any(w == "" or any(c.isspace() for c in w) for w in words):
            raise ValueError("vocabulary words must be non-empty and contain no whitespace")
        self.itos = list(words)
        self.stoi = {w: i for i, w in enumerate(words)}
        self.eos_id = self.stoi[eos]

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[w] for w in text.split()]
        except KeyError as e:
            raise ValueError(f"word {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: list[int]) -> str:
        return " ".join(self.itos[i] for i in ids)
