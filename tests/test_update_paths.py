"""The fast update paths give the plain paths' results: fused Adam's fast step, and
the IQL/FamO2O step split over two CPU threads."""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pytest
import torch

from sk_o2o import FamO2OPolicy, IQLPolicy
from sk_o2o.rl._torch_utils import FusedAdam, second_thread
from sk_o2o.rl.algos.famo2o import FamO2OIQLCore
from sk_o2o.rl.algos.iql import IQLCore

SMALL = {"hidden_sizes": (16, 16), "batch_size": 16, "random_state": 0}


@contextlib.contextmanager
def torch_threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _params(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 3), (4,)]
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]


def test_fused_adam_fast_step_matches_torch_bit_for_bit():
    ours, theirs = _params(0), _params(0)

    def groups(ps):
        return [{"params": ps[:2], "lr": 1e-2}, {"params": ps[2:], "lr": 3e-3}]

    opt_ours = FusedAdam(groups(ours), fused=True)
    opt_theirs = torch.optim.Adam(groups(theirs), fused=True)
    gen = torch.Generator().manual_seed(1)
    for i in range(6):
        grads = [torch.randn(p.shape, generator=gen) for p in ours]
        for params in (ours, theirs):
            for p, g in zip(params, grads, strict=True):
                # from step 3 on, one parameter has no gradient: it is skipped
                p.grad = None if (i >= 3 and p is params[1]) else g.clone()
        opt_ours.step()
        opt_theirs.step()
        if i >= 3:
            opt_ours.zero_grad()
            opt_theirs.zero_grad()
    assert opt_ours.ready
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(ours, theirs, strict=True):
        sa, sb = opt_ours.state[a], opt_theirs.state[b]
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_fused_adam_step_groups_steps_only_those_groups():
    params = _params(0)
    opt = FusedAdam([{"params": params[:2]}, {"params": params[2:]}], fused=True)
    with pytest.raises(RuntimeError, match="step_groups needs"):
        opt.step_groups([0])
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    before = [p.detach().clone() for p in params]
    opt.step_groups([1])
    assert all(torch.equal(a, b) for a, b in zip(params[:2], before[:2], strict=True))
    assert not any(
        torch.equal(a, b) for a, b in zip(params[2:], before[2:], strict=True)
    )


def test_fused_adam_reloaded_state_is_used():
    params = _params(0)
    opt = FusedAdam([{"params": params}], fused=True)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    opt.step()
    assert opt.ready
    opt.load_state_dict(opt.state_dict())  # new moment tensors: collected again
    assert not opt.ready
    opt.step()
    assert opt.ready
    assert all(float(opt.state[p]["step"]) == 3 for p in params)


def test_fused_adam_fast_path_check_works_on_older_torch_param_groups():
    # torch 2.5 has no "decoupled_weight_decay" key in Adam's param groups; the
    # fast-path check must not need it (it raised KeyError in every fit on torch
    # 2.5). torch's own step here reads the key, so it goes only after that step.
    params = _params(0)
    opt = FusedAdam([{"params": params}], fused=True)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    for group in opt.param_groups:
        group.pop("decoupled_weight_decay", None)
    assert opt._fast_path_ok()


def test_second_thread_splits_and_restores_torch_threads():
    with torch_threads(3):
        with second_thread(torch.device("cpu")) as worker:
            assert worker is not None
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 3
    with torch_threads(1), second_thread(torch.device("cpu")) as worker:
        assert worker is None


@pytest.mark.parametrize(
    "estimator",
    [
        IQLPolicy,
        functools.partial(IQLPolicy, actor_lr_schedule="cosine"),
        FamO2OPolicy,
        functools.partial(FamO2OPolicy, advantage_weighting="batch_mean"),
    ],
    ids=["IQLPolicy", "IQLPolicy-cosine", "FamO2OPolicy", "FamO2OPolicy-batch_mean"],
)
def test_two_threads_give_the_one_thread_result(
    estimator, make_transitions, monkeypatch
):
    """Two threads split each step in halves (and FamO2O's balance steps); the
    networks end bit for bit where one thread leaves them, online phase included."""
    calls = {"halves": 0, "balance_halves": 0}

    def counting(name, method):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return method(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        IQLCore, "_update_in_halves", counting("halves", IQLCore._update_in_halves)
    )
    monkeypatch.setattr(
        FamO2OIQLCore,
        "_step_with_balance_in_halves",
        counting("balance_halves", FamO2OIQLCore._step_with_balance_in_halves),
    )
    data = make_transitions(n=120, obs_dim=3, act_dim=2, seed=3)
    X = data["observations"]
    params = {**SMALL, "n_steps": 12, "balance_update_interval": 2}
    is_famo2o = getattr(estimator, "func", estimator) is FamO2OPolicy
    if not is_famo2o:
        params.pop("balance_update_interval")
    predictions = []
    for n_threads in (1, 2):
        with torch_threads(n_threads):
            policy = estimator(**params).fit(data)
            policy.partial_fit({k: v[:30] for k, v in data.items()}, n_updates=5)
        predictions.append(policy.predict(X))
    np.testing.assert_array_equal(predictions[0], predictions[1])
    assert calls["halves"] > 0
    assert (calls["balance_halves"] > 0) == is_famo2o


def test_an_error_in_the_worker_half_reaches_fit(monkeypatch, make_transitions):
    def broken(self, *args):
        raise ValueError("boom in the value/actor half")

    monkeypatch.setattr(IQLCore, "_value_actor_half", broken)
    data = make_transitions(n=60)
    with torch_threads(2):
        with pytest.raises(RuntimeError, match="other half") as info:
            IQLPolicy(n_steps=5, **SMALL).fit(data)
        assert isinstance(info.value.__cause__, ValueError)
        assert torch.get_num_threads() == 2
