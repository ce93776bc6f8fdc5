"""The planning task: generator invariants, verifier, drills, health checks on a hand-made model."""

import random

import pytest

from tasks.common import make_examples, pack
from tasks.planning import PlanningConfig, PlanningTask


def parse(task, ex):
    words = task.tokenizer.decode(ex.prompt).split()
    cut = words.index("/")
    edges = [(int(words[i]), int(words[i + 1])) for i in range(0, cut, 3)]
    assert all(words[i + 2] == "," for i in range(0, cut, 3))
    return edges, words[cut + 1:]


@pytest.mark.parametrize("cfg", [PlanningConfig(), PlanningConfig(n_arms=3, arm_len=5, n_labels=30),
                                 PlanningConfig(hubs=1, n_labels=40)])
def test_generator_invariants(cfg):
    task = PlanningTask(cfg)
    rng = random.Random(0)
    for _ in range(200):
        ex = task.sample(rng, "eval")
        assert all(0 <= t < task.tokenizer.vocab_size for t in ex.prompt + ex.answer)
        edges, question = parse(task, ex)
        nodes = {u for e in edges for u in e}
        assert len(edges) == (cfg.hubs + 1) * cfg.n_arms * cfg.arm_len and len(nodes) == len(edges) + 1  # a tree
        assert question[-2] == "=" and int(question[-1]) == ex.info["start"]
        succ = {}
        for u, v in edges:
            succ.setdefault(u, []).append(v)
        answer = task.tokenizer.decode(ex.answer).split()
        assert answer[-1] == "<eos>"
        path = [ex.info["start"]] + [int(w) for w in answer[:-1] if w != "*"]
        assert all(b in succ.get(a, []) for a, b in zip(path, path[1:]))  # every step follows an edge
        target, goals = path[-1], [int(w) for w in question[:-2]]
        assert goals[-1] == target and len(goals) == cfg.hubs + 1
        assert target in succ  # the target is never a leaf when evaluating
        assert 1 <= ex.info["depth"] <= cfg.arm_len - 1 and ex.info["depth"] in cfg.eval_depths
        marks = [i for i, w in enumerate(answer) if w == "*"]
        assert [int(answer[i - 1]) for i in marks] == goals[:-1]  # each hub is marked when reached


def test_training_depths_include_leaves_and_generation_is_deterministic():
    task = PlanningTask(PlanningConfig(drill_frac=0.0))
    depths = {ex.info["depth"] for ex in make_examples(task, 300, seed=1, split="train")}
    assert depths == {1, 2, 3, 4}
    a, b = make_examples(task, 20, seed=5, split="eval"), make_examples(task, 20, seed=5, split="eval")
    assert [(e.prompt, e.answer) for e in a] == [(e.prompt, e.answer) for e in b]
    assert [e.prompt for e in make_examples(task, 20, seed=6, split="eval")] != [e.prompt for e in a]


def test_drills_are_lookups_with_loss_on_the_successors():
    task = PlanningTask(PlanningConfig(drill_frac=1.0))
    for ex in make_examples(task, 50, seed=0, split="train"):
        edges, question = parse(task, ex)
        assert question == []  # the prompt ends at '/': no target, nothing to plan
        words = task.tokenizer.decode(ex.answer).split()
        assert words[-1] == "<eos>" and len(words) == 9
        assert all((int(words[i]), int(words[i + 1])) in edges for i in range(0, 8, 2))
        assert ex.loss_mask == [False, True] * 4 + [True]
    seq, predicts, plen = pack(make_examples(task, 4, seed=0, split="train"))
    assert int(predicts.sum()) == 4 * 5  # 4 successors + <eos> per drill


def test_verifier_hand_written_cases():
    task = PlanningTask(PlanningConfig())
    ex = task.sample(random.Random(3), "eval")
    assert task.reward(ex, ex.answer) == 1.0
    assert task.reward(ex, ex.answer[:-1]) == 0.0  # no <eos>
    assert task.reward(ex, ex.answer + [task.eos_id]) == 0.0  # anything after <eos>
    wrong = list(ex.answer)
    wrong[0] = next(c for c in task.first_token_children(ex) if c != ex.answer[0])
    assert task.reward(ex, wrong) == 0.0  # another arm
    assert task.reward(ex, []) == 0.0


@pytest.mark.parametrize("bad", [dict(n_arms=1), dict(arm_len=1), dict(n_labels=10), dict(eval_depths=(4,), arm_len=3)])
def test_bad_config_raises(bad):
    with pytest.raises(ValueError):
        PlanningConfig(**bad)
