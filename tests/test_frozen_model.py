"""Router-only RL on a frozen model (likelihood.frozen_model_logprob): the router factors read from
the features recorded while decoding equal the one-forward replay's, values and gradients, and
rlvr uses the shortcut exactly when the model is frozen. (The same on the real SmolLM2 model:
tests/test_gguf.py.)"""

from __future__ import annotations

import pytest
import torch

from decode import LBRConfig
from evaluate import generate
from likelihood import frozen_model_logprob, tree_logprob
from rlvr import trajectory_logprob
from tests.helpers import LOGP_TOL, assert_close_to_scale, random_router, tiny_model


def check_frozen_equals_replay(model, router, traj) -> None:
    """Router log π, entropy and the gradient of Σ A log P(τ) w.r.t. the router: shortcut = replay;
    the model factors are the recorded log q (those of the replay up to rounding)."""
    adv = torch.linspace(-1, 1, traj.choice.shape[0])
    got = frozen_model_logprob(router, traj)
    params = list(router.parameters())
    grad = lambda f: torch.cat([torch.zeros(p.numel()) if g is None else g.flatten() for p, g in  # noqa: E731
                                zip(params, torch.autograd.grad((adv * f.total).sum(), params, allow_unused=True))])
    g_got = grad(got)
    want = tree_logprob(model, router, traj)
    g_want = grad(want)
    assert torch.equal(got.router_mask, want.router_mask) and torch.equal(got.model_mask, want.model_mask)
    assert_close_to_scale(got.router_logpi, want.router_logpi, 1e-5)
    assert_close_to_scale(got.router_entropy, want.router_entropy, 1e-5)
    torch.testing.assert_close(got.model_logp, want.model_logp.detach(), **LOGP_TOL)
    # one scale for all the router's gradients (a feature set leaves some of its parameters unused: 0)
    assert_close_to_scale(g_got, g_want, 1e-5)


@pytest.mark.parametrize("features", ["root", "d1", "subtree"])
@pytest.mark.parametrize("widths,sampler", [((3, 2), "iid"), ((2, 1, 1), "distinct"), ((4,), "iid")])
def test_recorded_features_give_the_replays_router_factors_and_gradients(features, widths, sampler):
    model = tiny_model(vocab=7).requires_grad_(False)
    router = random_router(model, len(widths), features)
    cfg = LBRConfig(widths=widths, sampler=sampler, max_new_tokens=10)
    traj = generate(model, router, [[1, 2, 3], [4], [5, 6]] * 2, cfg, 6, torch.Generator().manual_seed(3),
                    keep_router_input=True)
    assert traj.router_input.sub_hidden.shape[:3] == (6, traj.choice.shape[1], widths[0])
    check_frozen_equals_replay(model, router, traj)


def test_rlvr_takes_the_shortcut_only_for_a_frozen_model():
    model = tiny_model(vocab=7)
    router = random_router(model, 2)
    cfg = LBRConfig(widths=(2, 2), max_new_tokens=6)
    traj = generate(model, router, [[1, 2]] * 3, cfg, 6, torch.Generator().manual_seed(0), keep_router_input=True)
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    trajectory_logprob(model, router, traj)  # trainable model: the full replay
    assert len(calls) == 1
    model.requires_grad_(False)
    f = trajectory_logprob(model, router, traj)  # frozen: the recorded features, no forward
    assert len(calls) == 1 and torch.equal(f.model_logp, traj.logq)
    hook.remove()
    no_record = generate(model, router, [[1, 2]] * 3, cfg, 6, torch.Generator().manual_seed(0))
    assert no_record.router_input is None  # nothing kept unless asked
    torch.testing.assert_close(trajectory_logprob(model, router, no_record).total, f.total, **LOGP_TOL)
