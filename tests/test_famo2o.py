"""FamO2OPolicy: universal model, balance model, offline and online phases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.model_selection import GridSearchCV, GroupKFold

from conftest import warns_at_test_line
from sk_o2o import FamO2OPolicy
from sk_o2o.data.buffer import Batch
from sk_o2o.datasets import load_dataset
from sk_o2o.rl.algos.famo2o import (
    FamO2OIQLCore,
    FamO2OTD3BCCore,
    batch_mean_advantage_weights,
)
from sk_o2o.rl.algos.iql import actor_loss
from sk_o2o.rl.balance import BalanceModel, balance_code, temperature_loss

FAST = {"hidden_sizes": (32, 32), "device": "cpu", "random_state": 0}


@pytest.fixture(scope="module")
def data():
    return load_dataset("pendulum-medium-replay-v0")


@pytest.fixture(scope="module")
def trained(data):
    return FamO2OPolicy(n_steps=400, log_interval=100, **FAST).fit(data)


def test_balance_code_matches_the_reference_formula():
    beta = torch.tensor([1.0, 3.5])
    code = balance_code(beta)
    expected = []
    for b in beta.tolist():
        row = []
        for i in range(3):
            row += [np.sin(b / 10000 ** (2 * i / 6)), np.cos(b / 10000 ** (2 * i / 6))]
        expected.append(row)
    np.testing.assert_allclose(code.numpy(), expected, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    obs=hnp.arrays(np.float32, (8, 3), elements=st.floats(-1e3, 1e3, width=32)),
    noise=hnp.arrays(np.float32, (8,), elements=st.floats(-10, 10, width=32)),
    low=st.floats(0.0, 10.0),
    width=st.floats(0.1, 10.0),
)
def test_balance_model_stays_inside_its_range(obs, noise, low, width):
    torch.manual_seed(0)
    model = BalanceModel(3, (16,), (low, low + width))
    beta, log_prob = model.sample(torch.from_numpy(obs), torch.from_numpy(noise))
    assert ((beta >= low) & (beta <= low + width + 1e-5)).all()
    assert torch.isfinite(log_prob).all()
    mode = model.mode(torch.from_numpy(obs))
    assert ((mode >= low) & (mode <= low + width + 1e-5)).all()


def test_balance_model_is_a_tanh_gaussian_with_one_learned_std():
    # The authors' π_b: mean from the state, one state-independent log-std.
    torch.manual_seed(0)
    model = BalanceModel(3, (16,), (1.0, 5.0))
    assert model.log_std.shape == ()
    with torch.no_grad():
        model.log_std.fill_(-0.7)
    obs, noise = torch.randn(64, 3), torch.randn(64)
    beta, log_prob = model.sample(obs, noise)
    mean = model.net(obs).squeeze(-1)
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, torch.tensor(-0.7).exp()),
        [torch.distributions.TanhTransform()],
    )
    x = (beta - 1.0) / 2.0 - 1.0  # back to (-1, 1)
    np.testing.assert_allclose(
        log_prob.detach().numpy(),
        reference.log_prob(x).detach().numpy(),
        atol=1e-3,
    )
    np.testing.assert_allclose(
        model.mode(obs).detach().numpy(),
        (1.0 + (torch.tanh(mean) + 1.0) * 2.0).detach().numpy(),
        rtol=1e-6,
    )


@pytest.mark.parametrize("entropy_gap", [-1.0, 1.0])
def test_temperature_rises_while_the_entropy_is_below_its_target(entropy_gap):
    log_alpha = torch.tensor(0.3, requires_grad=True)
    target = -0.5
    log_prob = torch.full((16,), -(target + entropy_gap))  # H = target + gap
    loss = temperature_loss(log_alpha, log_prob, target)
    loss.backward()
    assert loss.item() == pytest.approx(np.exp(0.3) * entropy_gap, rel=1e-6)
    # gradient descent moves log α against the gap: up when H < H_target
    assert np.sign(-log_alpha.grad.item()) == -np.sign(entropy_gap)


def _action_bandit(n=512, seed=0, expert_half=False):
    """One-step episodes whose reward is the action: larger actions are better.

    Actions are uniform in [-1, 1]; with ``expert_half``, the states with
    ``X[:, 0] = 2`` hold the good action 0.8 only (the others, ``X[:, 0] = -2``,
    stay uniform). Returns ``X``, ``y``, the expert mask and ``fit``'s keywords.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    y = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
    expert = np.zeros(n, dtype=bool)
    if expert_half:
        expert = np.arange(n) % 2 == 0
        X[:, 0] = np.where(expert, 2.0, -2.0)
        y[expert] = 0.8
    fit_kwargs = {
        "rewards": y[:, 0].copy(),
        "next_observations": X,
        "terminals": np.ones(n),
    }
    return X, y, expert, fit_kwargs


BANDIT = {
    **FAST,
    "reward_scaling": "none",
    "action_bounds": (-1.0, 1.0),
    "batch_size": 64,
}


@pytest.mark.parametrize(
    ("algo", "balance_range", "params"),
    [
        ("iql", (1.0, 5.0), {"n_steps": 500}),
        ("td3bc", (0.1, 1.0), {"n_steps": 500, "actor_lr": 2e-3, "critic_lr": 2e-3}),
    ],
)
def test_larger_beta_improves_harder(algo, balance_range, params):
    """On the action bandit, the β = high member acts better (higher) than β = low.

    IQL: the weighted mean of uniform actions under exp(β·a) is coth β − 1/β,
    0.31 at β = 1 and 0.80 at β = 5. TD3+BC: −λ·Q + (π − a)² with λ = β/|Q| is
    minimal at π = √(β/2), 0.22 at β = 0.1 and 0.71 at β = 1. Measured over seeds
    0-4: 0.25-0.35 vs 0.55-0.66 (IQL) and 0.05-0.22 vs 0.70-0.79 (TD3+BC); the
    untrained members differ by at most 0.05.
    """
    X, y, _, fit_kwargs = _action_bandit()
    policy = FamO2OPolicy(
        algo=algo, balance_range=balance_range, **params, **BANDIT
    ).fit(X, y, **fit_kwargs)
    low, high = (policy.predict_with_balance(X, b).mean() for b in balance_range)
    assert high - low > 0.15, (low, high)


def test_balance_model_picks_larger_beta_where_the_data_leave_room_to_improve():
    """On data of mixed quality, β varies with the state in the right direction.

    Half the states hold the best action only (every member of the family acts
    alike there, so β changes nothing), half random actions (a larger β acts
    better). Measured over seeds 0-4 (800 steps): mean β 3.45-3.55 on the random
    states, 3.03-3.11 on the expert ones; untrained, the gap was −0.22..+0.19.
    """
    X, y, expert, fit_kwargs = _action_bandit(expert_half=True)
    policy = FamO2OPolicy(
        n_steps=800,
        balance_update_interval=1,
        balance_lr=3e-3,
        alpha_lr=3e-3,
        **BANDIT,
    ).fit(X, y, **fit_kwargs)
    beta = policy.predict_balance(X)
    assert ((beta >= 1.0) & (beta <= 5.0)).all()
    assert beta[~expert].mean() > beta[expert].mean() + 0.2, beta
    assert beta[~expert].mean() > 3.2  # moved up from the middle of the range


@settings(max_examples=25, deadline=None)
@given(
    advantage=hnp.arrays(np.float32, (12,), elements=st.floats(-5, 5, width=32)),
    beta=hnp.arrays(np.float32, (12,), elements=st.floats(0.5, 10, width=32)),
    log_prob=hnp.arrays(np.float32, (12,), elements=st.floats(-5, 5, width=32)),
)
def test_batch_mean_weights_give_the_authors_broadcast_loss(advantage, beta, log_prob):
    # The authors' loss: -mean over (i, j) of min(exp(β_i A_j), 100) · log π_j.
    matrix = np.minimum(np.exp(beta[:, None].astype(np.float64) * advantage[None]), 100)
    authors = -(matrix * log_prob[None]).mean()
    weights = batch_mean_advantage_weights(
        torch.from_numpy(advantage), torch.from_numpy(beta)
    )
    ours = actor_loss(torch.from_numpy(log_prob), weights)
    assert ours.item() == pytest.approx(authors, rel=1e-4, abs=1e-4)


def test_batch_mean_weighting_trains_the_members_alike(trained, data):
    # With every sample weighted alike at each β, the β code carries no signal.
    authors = FamO2OPolicy(
        n_steps=400, log_interval=100, advantage_weighting="batch_mean", **FAST
    ).fit(data)
    X = data.observations[:500]

    def spread(policy):
        low, high = (policy.predict_with_balance(X, b) for b in (1.0, 5.0))
        return np.abs(low - high).mean()

    assert spread(authors) < 0.5 * spread(trained)


def test_predict_balance_inside_range_and_actions_in_bounds(trained, data):
    X = np.concatenate([data.observations[:100], 1e6 * data.observations[:5]])
    beta = trained.predict_balance(X)
    assert beta.shape == (len(X),)
    assert ((beta >= 1.0) & (beta <= 5.0)).all()
    actions = trained.predict(X)
    assert actions.shape == (len(X), 1)
    assert ((actions >= -2.0) & (actions <= 2.0)).all()
    sampled = trained.sample_action(X)
    assert ((sampled >= -2.0) & (sampled <= 2.0)).all()


def test_history_records_balance_and_iql_losses(trained):
    keys = {"balance_loss", "alpha", "mean_beta", "value_loss", "actor_loss"}
    assert keys <= set(trained.history_[-1])
    assert all(1.0 <= h["mean_beta"] <= 5.0 for h in trained.history_)


def test_partial_fit_fine_tunes_with_the_balance_models_beta(trained, data):
    import copy

    policy = copy.deepcopy(trained).set_params(log_interval=30)
    before = policy.predict(data.observations[:50])
    n = 64
    policy.partial_fit(
        data.observations[:n],
        data.actions[:n],
        rewards=data.rewards[:n],
        next_observations=data.next_observations[:n],
        terminals=data.terminals[:n],
        n_updates=30,
    )
    assert len(policy.buffer_) == len(data.rewards) + n
    assert policy.history_[-1]["phase"] == "partial_fit"
    assert not np.array_equal(before, policy.predict(data.observations[:50]))


def test_same_seed_same_policy(data):
    a = FamO2OPolicy(n_steps=20, **FAST).fit(data)
    b = FamO2OPolicy(n_steps=20, **FAST).fit(data)
    np.testing.assert_array_equal(
        a.predict(data.observations), b.predict(data.observations)
    )
    np.testing.assert_array_equal(
        a.predict_balance(data.observations), b.predict_balance(data.observations)
    )


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"balance_range": (5.0, 1.0)}, "balance_range"),
        ({"balance_range": (1.0,)}, "balance_range"),
        ({"algo": "cql"}, "algo"),
        ({"balance_update_interval": 0}, "balance_update_interval"),
        ({"advantage_weighting": "mean"}, "advantage_weighting"),
        ({"algo": "td3bc", "advantage_weighting": "batch_mean"}, "advantage_weighting"),
    ],
)
def test_invalid_parameters_are_named(data, params, match):
    with pytest.raises((ValueError, TypeError), match=match):
        FamO2OPolicy(n_steps=1, **FAST, **params).fit(data)


def test_grid_search_over_balance_range_with_env_return(data):
    pytest.importorskip("gymnasium")
    from sk_o2o.metrics import make_env_return_scorer

    search = GridSearchCV(
        FamO2OPolicy(n_steps=20, **FAST),
        {"balance_range": [(1.0, 5.0), (2.0, 4.0)], "actor_lr": [3e-4, 1e-3]},
        cv=GroupKFold(2),
        scoring=make_env_return_scorer("Pendulum-v1", n_episodes=1),
    )
    search.fit(
        data.observations,
        data.actions,
        groups=data.episode_ids,
        rewards=data.rewards,
        next_observations=data.next_observations,
        terminals=data.terminals,
        timeouts=data.timeouts,
    )
    assert len(search.cv_results_["params"]) == 4
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_fit_online_interacts_stores_and_updates(data):
    pytest.importorskip("gymnasium")
    policy = FamO2OPolicy(n_steps=10, log_interval=20, **FAST).fit(data)
    n_before = len(policy.buffer_)
    policy.fit_online("Pendulum-v1", 210, eval_interval=100, n_eval_episodes=1)
    assert len(policy.buffer_) == n_before + 210
    assert policy.n_updates_ == 10 + 210
    phases = [h["phase"] for h in policy.history_]
    assert phases.count("online_eval") == 3  # at env steps 0, 100 and 200
    assert phases.count("online_episode") == 1  # Pendulum episodes are 200 steps
    episode = next(h for h in policy.history_ if h["phase"] == "online_episode")
    assert episode["env_step"] == 200 and np.isfinite(episode["episode_return"])


def test_fit_online_needs_a_fitted_policy_and_a_matching_env(data):
    pytest.importorskip("gymnasium")
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        FamO2OPolicy(**FAST).fit_online("Pendulum-v1", 5)
    policy = FamO2OPolicy(n_steps=2, **FAST).fit(data)
    with pytest.raises(ValueError, match="observations"):
        policy.fit_online("MountainCarContinuous-v0", 5)
    with pytest.raises(ValueError, match="n_steps"):
        policy.fit_online("Pendulum-v1", -1)


def test_td3bc_base_has_its_own_core_range_and_losses(data):
    policy = FamO2OPolicy(algo="td3bc", n_steps=200, log_interval=100, **FAST)
    policy.fit(data)
    assert type(policy.core_).__name__ == "FamO2OTD3BCCore"
    assert policy.core_.config.balance_range == (1.0, 4.0)
    beta = policy.predict_balance(data.observations)
    assert ((beta >= 1.0) & (beta <= 4.0)).all()
    assert {"critic_loss", "actor_loss", "balance_loss"} <= set(policy.history_[-1])
    explicit = FamO2OPolicy(algo="td3bc", balance_range=(2.0, 3.0), n_steps=5, **FAST)
    assert explicit.fit(data).core_.config.balance_range == (2.0, 3.0)


def test_each_base_defaults_to_its_fixed_beta_siblings_reward_scaling(data):
    from sk_o2o import IQLPolicy, TD3BCPolicy

    for algo, sibling in (("iql", IQLPolicy), ("td3bc", TD3BCPolicy)):
        famo2o = FamO2OPolicy(algo=algo, n_steps=1, **FAST).fit(data)
        fixed = sibling(n_steps=1, **FAST).fit(data)
        assert famo2o.reward_scale_ == fixed.reward_scale_, algo
    assert FamO2OPolicy(algo="td3bc", n_steps=1, **FAST).fit(data).reward_scale_ == 1
    explicit = FamO2OPolicy(algo="td3bc", reward_scaling="returns", n_steps=1, **FAST)
    assert (
        explicit.fit(data).reward_scale_ == IQLPolicy(n_steps=1).fit(data).reward_scale_
    )


def test_td3bc_base_ignores_the_iql_only_parameters_and_says_so(data):
    def a_step(policy):
        rows = slice(0, 20)
        policy.partial_fit(
            data.observations[rows],
            data.actions[rows],
            rewards=data.rewards[rows],
            next_observations=data.next_observations[rows],
            terminals=data.terminals[rows],
            n_updates=1,
        )

    with warns_at_test_line("expectile applies to algo='iql' only"):
        policy = FamO2OPolicy(algo="td3bc", expectile=0.9, n_steps=2, **FAST).fit(data)
    # they shaped nothing, so changing them later is no reason to refuse a step
    policy.set_params(expectile=0.8, value_lr=1e-2)
    a_step(policy)
    # files saved before this rule list expectile among the fitted parameters
    policy._fitted_params["expectile"] = 0.9
    a_step(policy.set_params(expectile=0.7))
    iql = FamO2OPolicy(n_steps=2, **FAST).fit(data).set_params(expectile=0.8)
    with pytest.raises(ValueError, match=r"expectile=0\.7 to 0\.8"):
        a_step(iql)


@pytest.mark.parametrize("threads", [1, 2])  # one step, or two halves
def test_online_steps_train_the_beta_the_balance_model_picks(
    make_transitions, monkeypatch, threads
):
    data = make_transitions(n=100)
    policy = FamO2OPolicy(n_steps=5, batch_size=16, **FAST).fit(data)
    monkeypatch.setattr(
        FamO2OIQLCore,
        "sample_balance",
        lambda self, observations, noise: torch.full((len(observations),), 4.25),
    )
    weighted_at = []
    actor_weights = FamO2OIQLCore.actor_weights

    def spy(self, advantage, beta):
        weighted_at.append(beta)
        return actor_weights(self, advantage, beta)

    monkeypatch.setattr(FamO2OIQLCore, "actor_weights", spy)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:  # partial_fit takes online steps: β ~ π_b, not uniform
        policy.partial_fit({k: v[:20] for k, v in data.items()}, n_updates=3)
    finally:
        torch.set_num_threads(previous)
    assert len(weighted_at) == 3
    assert all(torch.all(beta == 4.25) for beta in weighted_at)


def test_td3bc_base_conditions_the_target_actor_on_beta(make_transitions):
    policy = FamO2OPolicy(algo="td3bc", n_steps=1, batch_size=16, **FAST)
    core = policy.fit(make_transitions(n=50)).core_
    assert isinstance(core, FamO2OTD3BCCore)
    codes = []
    mode = core.target_actor.mode
    core.target_actor.mode = lambda obs, cond=None: (
        codes.append(cond),
        mode(obs, cond),
    )[1]
    gen = torch.Generator().manual_seed(0)
    batch = Batch(
        torch.randn(8, 3, generator=gen),
        torch.rand(8, 2, generator=gen) * 2 - 1,
        torch.randn(8, generator=gen),
        torch.randn(8, 3, generator=gen),
        torch.zeros(8),
    )
    beta = torch.full((8,), 2.0)
    core.update_universal(batch, beta, torch.zeros(8, 2), update_actor=False)
    torch.testing.assert_close(codes[0], balance_code(beta))


def test_td3bc_base_delays_the_actor_as_td3bc_policy_does(data):
    # TD3's actor delay of 2, counted as TD3BCPolicy and the authors count it:
    # the universal model's first step is the second update, not the first
    def actor_after(n_steps):
        policy = FamO2OPolicy(algo="td3bc", n_steps=n_steps, **FAST).fit(data)
        return torch.nn.utils.parameters_to_vector(policy.core_.actor.parameters())

    untrained = actor_after(0)
    assert torch.equal(actor_after(1), untrained)
    assert not torch.equal(actor_after(2), untrained)


@pytest.mark.parametrize(
    ("beta", "match"),
    [
        (float("nan"), "beta contains NaN"),
        (np.inf, "beta contains NaN"),
        ([1.0, 2.0], "one per row of X"),
        (np.ones((5, 1)), "one per row of X"),
        ("a", "beta must be numbers"),
    ],
)
def test_predict_with_balance_checks_beta(trained, data, beta, match):
    with pytest.raises(ValueError, match=match):
        trained.predict_with_balance(data.observations[:5], beta)


def test_predict_with_balance_takes_a_number_or_one_per_row(trained, data):
    X = data.observations[:5]
    one = trained.predict_with_balance(X, 2.0)
    np.testing.assert_array_equal(one, trained.predict_with_balance(X, np.full(5, 2.0)))
    np.testing.assert_array_equal(
        one, trained.predict_with_balance(X, torch.tensor(2.0))
    )


def test_errors_name_what_is_wrong(data):
    # found by a user's-eye review: messages that named the wrong thing
    policy = FamO2OPolicy(n_steps=2, hidden_sizes=(8,), random_state=0)
    policy.fit(data)
    policy.set_params(algo="td3bc")
    with pytest.raises(
        ValueError, match=r"balance_range=\(1\.0, 5\.0\) to \(1\.0, 4\.0\)"
    ):  # was "None to None": the defaults differ by algo
        policy.partial_fit(data, n_updates=1)
    policy.set_params(algo="iql")
    with pytest.raises(ValueError, match=r"^eval_env observations have shape \(2,\)"):
        policy.fit_online(
            "Pendulum-v1", 4, eval_interval=2, eval_env="MountainCarContinuous-v0"
        )
    assert policy.n_env_steps_ == 0
    with pytest.raises(ValueError, match="beta must be numbers, got None"):
        policy.predict_with_balance(data["observations"][:2], None)
