"""
What every task shares: the `Example` record and the teacher-forcing batch builder.

A task (tasks/planning.py, tasks/math.py) is a class with:
    name, tokenizer, eos_id, max_answer_len
    sample(rng: random.Random, split) -> Example     one prompt/answer pair ('train' or 'eval')
    reward(example, completion: list[int]) -> float 0/1 verifiable reward of a completion
    health(model, examples) -> dict                 the task's health checks of a pre-trained model
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
