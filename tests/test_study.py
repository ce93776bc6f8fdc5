"""The study's instruments (experiments/ablations.py, rlvr.py's diagnostics): the factor normalisation, the
entropy bonus, the gradient norms, the paired bootstrap, the validation problems and run names."""

import copy
import math

import pytest
import torch

from experiments import ablations
from decode import CotConfig, LBRConfig, decode_lbr
from soft import SoftConfig
from evaluate import pass_at_k
from helpers import assert_close_to_scale, random_router, tiny_model
from likelihood import tree_logprob
from experiments.math import RunSpec
from rlvr import RLConfig, collect_rollouts, factors_per_token, trainable_groups, update
from tools.runs import router_entropy
from tasks import get_task
from tasks.common import Seeds, make_examples
from tree import TreeShape

from test_rlvr import AnswerTokenTask


@pytest.mark.parametrize("widths", [(2, 1), (4, 1), (8, 1), (2, 2), (4, 2), (4, 1, 1), (3, 2, 2)])
def test_factors_per_token_is_what_a_decoded_step_adds(widths):
    """A step after the first bears n_slots - |committed subtree| nodes (the committed candidate's
    subtree is kept, shifted up one level) and the router makes one choice; the first step bears
    the whole tree. Counted on decoded trees (no EOS in the vocabulary's reach: stop id unused)."""
    model = tiny_model(vocab=6)
    router = random_router(model, len(widths))
    cfg = LBRConfig(widths=widths, max_new_tokens=5)
    traj = decode_lbr(model, router, [[1, 2, 3]] * 4, cfg, stop_ids=99, generator=torch.Generator().manual_seed(0))
    births = torch.stack([(traj.birth_step == t).sum(1) for t in range(5)], 1)  # (B, steps)
    assert (births[:, 0] == TreeShape.from_widths(widths).n_slots - 1).all()
    assert (births[:, 1:] + 1 == factors_per_token(cfg)).all()
    assert factors_per_token(CotConfig()) == 1 and factors_per_token(SoftConfig(k=3)) == 3


def _batches(dec, router, group_size=8):
    model = tiny_model(vocab=4)
    cfg = RLConfig(steps=1, prompts_per_step=2, group_size=group_size, grad_clip=1e9)
    return model, collect_rollouts(model, router, AnswerTokenTask(), dec, cfg, 0, 1, None), cfg


def _grads(model, router, batches, cfg):
    """Gradients after one `update` with plain SGD at lr 0 (the parameters stay, the gradients are kept)."""
    groups = [{**g, "lr": 0.0} for g in trainable_groups(model, router, getattr(batches[0].traj, "cfg", CotConfig()), cfg)]
    params = [p for g in groups for p in g["params"]]
    out = update(model, router, torch.optim.SGD(groups), params, batches, cfg)
    return out, [p.grad.clone() for p in params]


@pytest.mark.parametrize("dec", [CotConfig(max_new_tokens=1), SoftConfig(k=3, max_new_tokens=1),
                                 LBRConfig(widths=(2, 1), max_new_tokens=2)])
def test_factor_norm_divides_the_gradient_by_a_constant_and_norms_are_reported(dec):
    """The normalised loss is the loss / factors_per_token: every gradient (model and router) is
    the unnormalised one divided by that constant (an unbiased estimate of the scaled objective),
    and `update` reports the L2 norms of the model's and the router's gradients before clipping."""
    router = random_router(tiny_model(vocab=4), 2) if isinstance(dec, LBRConfig) else None
    model, batches, cfg = _batches(dec, router)
    r2 = copy.deepcopy(router)
    out1, g1 = _grads(model, router, batches, cfg)
    out2, g2 = _grads(model, r2, batches, RLConfig(**{**cfg.__dict__, "factor_norm": True}))
    c = factors_per_token(dec)
    for a, b in zip(g1, g2):
        assert_close_to_scale(b * c, a, 1e-5)
    n_model = len(list(model.parameters()))
    assert math.isclose(out1["grad_norm_model"], float(torch.linalg.vector_norm(torch.stack([g.norm() for g in g1[:n_model]]))),
                        rel_tol=1e-5)
    assert math.isclose(out2["grad_norm_model"] * c, out1["grad_norm_model"], rel_tol=1e-5)
    if router is None:
        assert out1["grad_norm_router"] == 0.0
    else:
        assert out1["grad_norm_router"] > 0 and math.isclose(out2["grad_norm_router"] * c, out1["grad_norm_router"],
                                                            rel_tol=1e-5)


def test_router_entropy_replayed_equals_the_sampled_distributions_and_the_bonus_raises_it():
    """The entropy the loss's bonus differentiates (likelihood.LogProbFactors.router_entropy) is that of
    the router distributions the decoder sampled from (the record), which the metrics report; a
    step with the bonus alone (every advantage 0: one prompt whose rewards all tie) raises it."""
    model = tiny_model(vocab=6)
    router = random_router(model, 2, std=5.0)
    cfg = LBRConfig(widths=(3, 1), max_new_tokens=4)
    traj = decode_lbr(model, router, [[1, 2]] * 5, cfg, stop_ids=5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        replay = tree_logprob(model, router, traj)
    taken = torch.arange(traj.choice.shape[1]) < traj.length[:, None]
    recorded = -(traj.router_logp.exp() * traj.router_logp).nan_to_num().sum(-1)
    assert_close_to_scale(replay.router_entropy[taken], recorded[taken], 1e-4)
    assert (replay.router_entropy[~taken] == 0).all()
    total, steps = router_entropy(traj)
    assert steps == int(taken.sum()) and math.isclose(total, float(recorded[taken].sum()), rel_tol=1e-5)

    class Tie(AnswerTokenTask):  # every rollout gets the same reward (cut off or not): no preference, advantage 0
        def reward(self, example, completion):
            return 0.0
    rl = RLConfig(steps=1, prompts_per_step=1, group_size=8, router_entropy_coef=1.0, router_lr=1e-3,
                  freeze_model=True)
    dec = LBRConfig(widths=(3, 1), max_new_tokens=1)
    batches = collect_rollouts(model, router, Tie(), dec, rl, 0, 1, None)
    assert (batches[0].adv == 0).all()
    before = tree_logprob(model, router, batches[0].traj).router_entropy.sum().item()
    groups = trainable_groups(model, router, dec, rl)
    update(model, router, torch.optim.SGD(groups), [p for g in groups for p in g["params"]], batches, rl)
    assert tree_logprob(model, router, batches[0].traj).router_entropy.sum().item() > before


def test_paired_bootstrap_known_answers():
    """Equal methods: 0 and a [0, 0] interval; A always right where B never is: +1 exactly; and the
    point estimate is the mean over seeds and problems of the Pass@k differences."""
    def ev(counts, n=4):
        return {"n": n, "correct": counts}
    a = [ev([4, 0, 2]), ev([1, 1, 3])]
    assert ablations.paired_bootstrap(a, a, 2, 500) == (0.0, 0.0, 0.0)
    assert ablations.paired_bootstrap([ev([4, 4])], [ev([0, 0])], 1, 500) == (1.0, 1.0, 1.0)
    b = [ev([0, 0, 2]), ev([1, 0, 3])]
    mean, lo, hi = ablations.paired_bootstrap(a, b, 1, 2000)
    expected = sum(pass_at_k(4, x, 1) - pass_at_k(4, y, 1) for ea, eb in zip(a, b)
                   for x, y in zip(ea["correct"], eb["correct"])) / 6
    assert math.isclose(mean, expected, rel_tol=1e-12) and lo <= mean <= hi and lo >= 0  # A never worse


def test_validation_problems_are_not_the_test_problems():
    """Every choice is made on validation problems: a seed stream of their own, whose problems are
    (up to the rare coincidence of a small task) not the test problems of the same seed."""
    task = get_task("math")
    for seed in (0, 1):
        s = Seeds(seed)
        assert len({s.validation_examples, s.experiment_eval_examples, s.eval_examples}) == 3
        val = {tuple(e.prompt) for e in make_examples(task, 64, seed=s.validation_examples, split="eval")}
        test = {tuple(e.prompt) for e in make_examples(task, 150, seed=s.experiment_eval_examples, split="eval")}
        assert len(val & test) <= 2


def test_run_names_tell_every_configuration_of_the_study_apart():
    """Run directories are named by RunSpec.name: two configurations must never share one (the
    second would resume the first's checkpoint), and the chosen ones are found again by stage C."""
    base = RunSpec("lbr")
    sizes = ablations.FULL
    specs = [RunSpec(m, model_lr=lr) for m in ("rlvr", "soft", "lbr") for lr in sizes.lrs]
    specs += [RunSpec("lbr", factor_norm=True), RunSpec("lbr", sampler="distinct"), RunSpec("lbr", router="root"),
              RunSpec("lbr", router="d1"), RunSpec("lbr", router_temperature=2.0), RunSpec("rlvr", group_size_mult=7)]
    specs += [RunSpec("lbr", router_entropy_coef=b) for b in sizes.entropy_coefs]
    specs += [RunSpec("lbr", widths=w) for w in sizes.widths]
    names = [s.name for s in specs]
    assert len(set(names)) == len(set(specs)) and base.name == "lbr_lr0.0001"
    assert RunSpec("lbr", widths=(4, 1, 1)).name == "lbr_lr0.0001_widths4-1-1"


@pytest.mark.parametrize("content,match", [
    ("[1, 2]", "not a saved report"), ("not json", "not a saved report"), ("{}", "does not hold what the report needs"),
    ('{"quick": true}', "made with --quick"),
])
def test_report_only_refuses_a_saved_file_it_cannot_report_from(tmp_path, content, match):
    """A missing field, another JSON, or a quick run's file read as the full study's: one ValueError
    that names the file (the CLI prints it as one line, exit 2); nothing is written."""
    (tmp_path / "ablations.json").write_text(content)
    with pytest.raises(ValueError, match=match):
        ablations.run(False, str(tmp_path / "out"), str(tmp_path / "pl"), str(tmp_path), report_only=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ablations.json"]


def test_the_math_experiment_refuses_flags_of_one_run(monkeypatch, tmp_path):
    """`rlvr.py --task math` (the experiment) used to ignore --steps, --model-lr, --base... silently."""
    import sys
    import rlvr
    monkeypatch.setattr(sys, "argv", ["rlvr.py", "--task", "math", "--steps", "1", "--router-entropy-coef", "0.1",
                                      "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--steps, --router-entropy-coef: settings of one run"):
        rlvr.main()
    assert not any(tmp_path.iterdir())
