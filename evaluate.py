"""
Evaluation of a decoding method on a task's problems: unbiased Pass@k, majority vote (over the
samples' answers, `answer_key`; the rule is `majority_vote`'s), and the forward tokens each
committed token cost (docs/DESIGN.md §6.5); optionally every sample, for a reader to inspect. Both experiments (experiments/synthetic.py,
experiments/math.py) and rlvr.py evaluate with `evaluate`; the rewards of RL rollouts come from the
same `rewards_of`, so training and evaluation read a completion the same way.

Under torchrun every process decodes its share of the problems and all of them get the whole
result. There is no command of its own: `python rlvr.py ... --eval-only` evaluates a run.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Callable

import torch
from torch import Tensor

from decode import CotConfig, LBRConfig, SequenceTrajectory, StopIds, TreeTrajectory, decode_cot, decode_lbr, is_stop, stop_tuple
from model import Transformer
from router import Router
from soft import SoftConfig, SoftTrajectory, decode_soft
from tasks.common import Example, Seeds
from tools.distributed import dist_rank_world


DecodeConfig = CotConfig | SoftConfig | LBRConfig  # what a method decodes with
Trajectory = SequenceTrajectory | SoftTrajectory | TreeTrajectory  # what it records



def generate(model: Transformer, router: Router | None, prompts: list[list[int]], cfg: DecodeConfig,
             stop_ids: StopIds, generator: torch.Generator, keep_router_input: bool = False) -> Trajectory:
    """The decoding loop the config asks for (the one function that picks between the decoders); a row ends at
    its first committed stop id (see stop_tuple) or after cfg.max_new_tokens tokens."""
    if isinstance(cfg, LBRConfig):
        if router is None:
            raise ValueError("LBR decoding needs a router")
        if cfg.sampler == "distinct" and max(cfg.widths) > model.cfg.vocab_size:
            raise ValueError(f"the distinct sampler draws siblings without replacement, so no width may exceed the "
                             f"vocabulary ({model.cfg.vocab_size}); got widths {cfg.widths}: lower them or use --sampler iid")
        if getattr(router, "max_depth", len(cfg.widths)) < len(cfg.widths):  # a router without max_depth reads any depth
            raise ValueError(f"the router reads trees of depth <= {router.max_depth}, the widths {cfg.widths} have "
                             f"depth {len(cfg.widths)}: build Router(..., max_depth={len(cfg.widths)})")
        return decode_lbr(model, router, prompts, cfg, stop_ids, generator, keep_router_input)
    if isinstance(cfg, SoftConfig):
        return decode_soft(model, prompts, cfg, stop_ids, generator)
    return decode_cot(model, prompts, cfg, stop_ids, generator)


GreedyDecoder = Callable[[Transformer, list[list[int]], StopIds, int], list[list[int]]]  # what tasks' health takes


def greedy_completions(model: Transformer, prompts: list[list[int]], stop_ids: StopIds,
                       max_new_tokens: int) -> list[list[int]]:
    """Greedy (argmax) `cot` completion of every prompt: its committed tokens, the stop id included
    when one was committed. A GreedyDecoder: the tasks' health checks receive it from their caller
    (sft.py, the experiments) rather than importing a decoder, so a task stays data and a verifier."""
    g = torch.Generator(model.embed_tokens.weight.device).manual_seed(0)  # argmax draws nothing from it
    traj = decode_cot(model, prompts, CotConfig(greedy=True, max_new_tokens=max_new_tokens), stop_ids, g)
    return [c[:m] for c, m in zip(traj.completion.tolist(), traj.length.tolist())]


def truncated(traj, stop_ids: StopIds) -> Tensor:
    """(B,) bool, for the trajectory of any method: the rollout was cut off at max_new_tokens without
    committing a stop id, so its text is not a finished answer. Every decoder ends a row at its first stop id or after
    max_new_tokens tokens, so a row is truncated exactly when its last committed token is no stop id."""
    last = traj.completion.gather(1, (traj.length - 1).clamp(min=0)[:, None]).squeeze(1)
    return ~is_stop(last, stop_tuple(stop_ids))


def rewards_of(task, examples: list[Example], traj: Trajectory, repeat: int) -> Tensor:
    """0/1 reward of every rollout; rollout i answers examples[i // repeat]. A rollout cut off at
    max_new_tokens (`truncated`: no stop id) is not an answer and gets 0 whatever its text holds: a
    cut "... = 7. Step 2: multiply by 2 to get 14, then subtract the 7 we" has the last number 7.
    (The synthetic tasks' verifiers already give 0 to a completion that does not end with <eos>.)"""
    comp, length = traj.completion.tolist(), traj.length.tolist()
    cut = truncated(traj, task.stop_ids).tolist()
    return torch.tensor([0.0 if cut[i] else task.reward(examples[i // repeat], comp[i][: length[i]])
                         for i in range(len(comp))])


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k)
    (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1)."""
    if k > n:
        raise ValueError(f"Pass@{k} needs at least {k} samples per problem, got {n}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def answer_key(task, example: Example, completion: list[int], cut: bool = False) -> str | None:
    """The vote of one sample in a majority vote: the task's `answer_key` when it has one (word
    problems: the normalised final answer, so that `9{,}500` and `9500` vote together; None when
    the completion has no answer or was cut off (`cut`, see `truncated`): its reward is 0, so
    voting with the finished samples of the same answer would mix rewards 0 and 1 under one key),
    else the completion's token ids (the synthetic tasks, whose whole completion is checked: a cut
    one never ends with <eos>, so its key is no finished completion's, and it votes as the wrong
    answer it is)."""
    if hasattr(task, "answer_key"):
        return None if cut else task.answer_key(example, list(completion))
    return " ".join(map(str, completion))


def majority_vote(keys: list[str | None], correct: list[float]) -> float:
    """The score of a majority vote over one problem's samples: keys[j] is sample j's answer
    (`answer_key`; None: no answer, so no vote) and correct[j] its reward.

    The most frequent answer wins and scores the reward of its samples (their mean: samples with
    one answer agree). A tie between t answers scores the mean over the t of them: the expected
    score of breaking the tie uniformly at random, so no sample's position decides. No vote at
    all scores 0. Answers that are equivalent but spelled differently (`\\sqrt{8}`, `2\\sqrt{2}`)
    have different keys and split their votes (answers.normalize)."""
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    tied = [k for k, c in votes.items() if c == top]
    score = {k: sum(r for kj, r in zip(keys, correct) if kj == k) / votes[k] for k in tied}
    return sum(score.values()) / len(tied)


@torch.no_grad()
def evaluate(model: Transformer, router: Router | None, task, dec: DecodeConfig, examples: list[Example],
             n: int, ks: tuple[int, ...], seed: int, chunk: int = 1024, samples: list | None = None) -> dict:
    """Pass@k (unbiased, n samples per problem) overall and per difficulty (task.difficulty),
    majority@k (`majority_vote` over the first k samples' `answer_key`s), and forward tokens per
    committed token (out["committed"]: how many were committed in all). A task with `groups(example) -> {name: label}` (word problems: level,
    subject) also gets out["by_NAME"] = {label: {"problems", "pass@k", "majority@k"}}.
    out["n"] is n, out["correct"] the number of correct samples of each problem, in order, and
    out["truncated"] the fraction of samples cut off at max_new_tokens (`truncated`; reward 0).
    Raises ValueError for a k above n (Pass@k needs k samples per problem).

    samples: if a list is given, one dict per sample is appended to it, problem after problem:
    {"problem": index in `examples`, "sample": j, what task.record(example, completion) says (word
    problems: id, question, prompt, completion text, extracted answer; otherwise the decoded
    prompt and completion), "key": its vote, "correct": its reward, "truncated": whether it was cut off}."""
    for k in ks:
        if k > n:
            raise ValueError(f"Pass@{k} and majority@{k} need {k} samples per problem, but n={n}: raise n "
                             f"(--eval-samples) to {k} or drop k={k}")
    device = model.embed_tokens.weight.device
    rank, world = dist_rank_world()
    lo, hi = rank * len(examples) // world, (rank + 1) * len(examples) // world  # this process's problems
    g = torch.Generator(device).manual_seed(Seeds(seed).eval_sampling(rank))
    prompts = [e.prompt for e in examples[lo:hi] for _ in range(n)]
    chunk = max(n, chunk // n * n)  # whole problems per chunk
    correct, cuts, keys, records, fwd, committed = [], [], [], [], 0, 0
    for a in range(0, len(prompts), chunk):
        traj = generate(model, router, prompts[a: a + chunk], dec, task.stop_ids, g)
        part = examples[lo + a // n: lo + (a + chunk) // n]
        rewards = rewards_of(task, part, traj, n).tolist()
        cut = truncated(traj, task.stop_ids).tolist()
        completions = [c[:m] for c, m in zip(traj.completion.tolist(), traj.length.tolist())]
        keys += [answer_key(task, part[i // n], c, cut[i]) for i, c in enumerate(completions)]
        if samples is not None:
            records += [{"problem": lo + (a + i) // n, "sample": (a + i) % n, **_record(task, part[i // n], c),
                         "key": keys[a + i], "correct": rewards[i], "truncated": cut[i]}
                        for i, c in enumerate(completions)]
        correct += rewards
        cuts += cut
        fwd += int(traj.forward_tokens().sum())
        committed += int(traj.length.sum())
    if world > 1:  # every process gets every problem's outcomes, in problem order
        parts = [None] * world
        torch.distributed.all_gather_object(parts, (correct, cuts, keys, records, fwd, committed))
        correct, cuts, keys, records = ([x for p in parts for x in p[i]] for i in range(4))
        fwd, committed = sum(p[4] for p in parts), sum(p[5] for p in parts)
    if samples is not None:
        samples += records
    count = [int(ci) for ci in torch.tensor(correct).view(len(examples), n).sum(1).tolist()]  # correct per problem
    votes = {m: [majority_vote(keys[i * n: i * n + m], correct[i * n: i * n + m]) for i in range(len(examples))]
             for m in ks}

    def summary(sel: list[int]) -> dict[str, float]:  # Pass@k and majority@k over the problems `sel`
        return ({f"pass@{k}": sum(pass_at_k(n, count[i], k) for i in sel) / len(sel) for k in ks}
                | {f"majority@{m}": sum(votes[m][i] for i in sel) / len(sel) for m in ks})

    out = summary(list(range(len(examples))))
    out["fwd_per_token"] = fwd / max(committed, 1)
    out["committed"] = committed  # tokens committed by all samples (experiments/real.py: seconds per token)
    out["n"], out["correct"] = n, count  # per problem: for a paired bootstrap, or Pass@k at other k
    out["truncated"] = sum(cuts) / len(cuts)
    labels = [task.difficulty(e) for e in examples]
    for d in sorted(set(labels)):  # Pass@k per difficulty (planning: target depth j2; math: ops3)
        sel = [ci for ci, lab in zip(count, labels) if lab == d]
        for k in ks:
            out[f"pass@{k}_{d}"] = sum(pass_at_k(n, ci, k) for ci in sel) / len(sel)
    if hasattr(task, "groups"):  # word problems: by level, by subject
        groups: dict[str, dict[str, list[int]]] = {}
        for i, e in enumerate(examples):
            for name, label in task.groups(e).items():
                groups.setdefault(name, {}).setdefault(label, []).append(i)
        for name, by_label in sorted(groups.items()):
            out[f"by_{name}"] = {label: {"problems": len(sel), **summary(sel)}
                                 for label, sel in sorted(by_label.items(), key=lambda kv: _natural(kv[0]))}
    return out


def _record(task, example: Example, completion: list[int]) -> dict:
    """What samples.jsonl says about one sample besides its vote and reward (see `evaluate`)."""
    if hasattr(task, "record"):
        return task.record(example, completion)
    return {"prompt": task.tokenizer.decode(example.prompt), "completion": task.tokenizer.decode(completion)}


def _natural(label: str) -> list:
    """Sort key that orders 'Level 2' before 'Level 10'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label)]
