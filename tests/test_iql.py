"""IQL: the losses' terms, values in reward units, the actor's cosine schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sk_o2o import FamO2OPolicy, IQLPolicy, TD3BCPolicy
from sk_o2o.rl.algos.iql import (
    IQLCore,
    advantage_weights,
    cosine_decay,
    critic_loss,
    expectile_loss,
)

SMALL = {"hidden_sizes": (16, 16), "batch_size": 16, "random_state": 0}


def test_expectile_loss_weighs_positive_residuals_by_tau():
    # V below Q̄ (diff > 0) is pushed up harder: the upper expectile
    assert expectile_loss(torch.tensor([2.0]), 0.9).item() == pytest.approx(3.6)
    assert expectile_loss(torch.tensor([-2.0]), 0.9).item() == pytest.approx(0.4)


def test_advantage_weights_are_capped_at_100():
    weights = advantage_weights(torch.tensor([10.0, 0.0, -1.0]), 3.0)
    np.testing.assert_allclose(weights.numpy(), [100.0, 1.0, np.exp(-3.0)], rtol=1e-6)


def test_critic_loss_does_not_bootstrap_through_terminals():
    q = torch.zeros(2, 2)  # two critics, two transitions; the first is terminal
    rewards, dones = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])
    next_value = torch.tensor([100.0, 10.0])
    # targets 1 and 1 + 0.5·10 = 6, summed over the two critics, averaged
    expected = (2 * 1.0**2 + 2 * 6.0**2) / 2
    loss = critic_loss(q, rewards, dones, next_value, gamma=0.5)
    assert loss.item() == pytest.approx(expected)


@pytest.mark.parametrize("estimator", [IQLPolicy, TD3BCPolicy])
@pytest.mark.parametrize("reward_scaling", ["none", "standard"])
def test_predict_value_is_in_the_rewards_units(estimator, reward_scaling):
    # one-step episodes (every transition terminal) whose reward is 3·action:
    # Q(s, a) is the reward itself, whatever scale the critics learn in
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 2)).astype(np.float32)
    y = rng.uniform(-1, 1, size=(256, 1)).astype(np.float32)
    rewards = 3.0 * y[:, 0]
    policy = estimator(
        n_steps=400,
        hidden_sizes=(32, 32),
        batch_size=64,
        reward_scaling=reward_scaling,
        random_state=0,
    ).fit(X, y, rewards=rewards, next_observations=X, terminals=np.ones(256))
    error = np.abs(policy.predict_value(X, y) - rewards).mean()
    assert error < 0.4, error  # rewards span ±3


@settings(max_examples=50, deadline=None)
@given(
    lr=st.floats(1e-6, 1.0),
    n_steps=st.integers(1, 10**6),
    fraction=st.floats(0.0, 1.0),
)
@example(lr=1.0, n_steps=10, fraction=0.5)  # the midpoint, which draws rarely hit
def test_cosine_decay_falls_from_lr_to_zero(lr, n_steps, fraction):
    step = int(fraction * n_steps)
    value = cosine_decay(lr, step, n_steps)
    assert cosine_decay(lr, 0, n_steps) == lr
    assert cosine_decay(lr, n_steps, n_steps) == pytest.approx(0.0, abs=1e-12)
    assert 0.0 <= value <= lr
    assert value >= cosine_decay(lr, min(step + 1, n_steps), n_steps)
    if 2 * step == n_steps:
        assert value == pytest.approx(lr / 2)


@pytest.mark.parametrize("estimator", [IQLPolicy, FamO2OPolicy])
def test_cosine_schedule_decays_the_actor_only_during_fit(
    estimator, make_transitions, monkeypatch
):
    data = make_transitions(n=100, obs_dim=3, act_dim=2, seed=1)
    X, y = data["observations"], data["actions"]
    applied = []
    set_actor_lr = IQLCore.set_actor_lr

    def spy(core, lr):
        applied.append(lr)
        set_actor_lr(core, lr)

    monkeypatch.setattr(IQLCore, "set_actor_lr", spy)
    constant = estimator(n_steps=40, **SMALL).fit(data)
    assert applied == []
    cosine = estimator(n_steps=40, actor_lr_schedule="cosine", **SMALL).fit(data)
    # one rate per step, then the constant rate again for later phases
    assert applied[:-1] == [cosine_decay(3e-4, k, 40) for k in range(40)]
    assert applied[-1] == 3e-4
    assert cosine.core_.optimizer.param_groups[IQLCore._ACTOR_GROUP]["lr"] == 3e-4
    # The critics never see the actor: same batches, same critics, other actor.
    np.testing.assert_array_equal(
        constant.predict_value(X, y), cosine.predict_value(X, y)
    )
    assert not np.array_equal(constant.predict(X), cosine.predict(X))
    applied.clear()
    cosine.partial_fit({k: v[:20] for k, v in data.items()}, n_updates=5)
    assert applied == []
    actor_group = cosine.core_.optimizer.param_groups[IQLCore._ACTOR_GROUP]
    assert math.isclose(actor_group["lr"], 3e-4)


def test_cosine_schedule_with_another_base_is_refused(make_transitions):
    data = make_transitions(n=50, obs_dim=3, act_dim=2, seed=1)
    with pytest.raises(ValueError, match="actor_lr_schedule"):
        FamO2OPolicy(algo="td3bc", actor_lr_schedule="cosine", n_steps=2).fit(data)
    with pytest.raises(ValueError, match="actor_lr_schedule"):
        IQLPolicy(actor_lr_schedule="linear", n_steps=2).fit(data)
