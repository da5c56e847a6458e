"""What holds for every fitted estimator, whatever (valid) data it was fitted on."""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import math
import multiprocessing
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

import sk_o2o
from conftest import default_dtype, seeded_fit_in_another_thread, warns_at_test_line
from sk_o2o import FamO2OPolicy, IQLPolicy, TD3BCPolicy
from sk_o2o.datasets import load_dataset

LOSSES = ("value_loss", "actor_loss", "critic_loss")


@st.composite
def problems(draw):
    """Random small datasets, action bounds and a 1-D or 2-D ``y``."""
    obs_dim = draw(st.integers(1, 5))
    act_dim = draw(st.integers(1, 3))
    n = draw(st.integers(20, 80))
    seed = draw(st.integers(0, 2**16))
    given_bounds = draw(st.booleans())
    low = np.array(
        draw(
            st.lists(st.floats(-50, 50, width=32), min_size=act_dim, max_size=act_dim)
        ),
        dtype=np.float32,
    )
    width = np.array(
        draw(
            st.lists(st.floats(0.125, 20, width=32), min_size=act_dim, max_size=act_dim)
        ),
        dtype=np.float32,
    )
    high = (low + width).astype(np.float32)
    one_d = act_dim == 1 and draw(st.booleans())
    return {
        "n": n,
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "seed": seed,
        "low": low,
        "high": high,
        "action_bounds": (low, high) if given_bounds else None,
        "one_d": one_d,
    }


def _fit_problem(problem, make_transitions, make_policy, fit_kwargs, **params):
    data = make_transitions(
        n=problem["n"],
        obs_dim=problem["obs_dim"],
        act_dim=problem["act_dim"],
        seed=problem["seed"],
        low=problem["low"],
        high=problem["high"],
    )
    y = data["actions"][:, 0] if problem["one_d"] else data["actions"]
    params = {"n_steps": 5, "action_bounds": problem["action_bounds"], **params}
    policy = make_policy(**params).fit(data["observations"], y, **fit_kwargs(data))
    return policy, data, y


def _bounds(problem, data):
    if problem["action_bounds"] is not None:
        return problem["low"], problem["high"]
    low, high = data["actions"].min(axis=0), data["actions"].max(axis=0)
    return low, high


def _assert_inside(actions, low, high):
    actions = np.asarray(actions).reshape(len(actions), -1)
    assert np.all(np.isfinite(actions))
    assert np.all(actions >= low), (actions.min(axis=0), low)
    assert np.all(actions <= high), (actions.max(axis=0), high)


def _far_inputs(rng, n, obs_dim):
    return np.concatenate(
        [
            rng.normal(size=(n, obs_dim)) * 1e6,
            np.full((2, obs_dim), 1e6),
            np.full((2, obs_dim), -1e6),
            np.zeros((1, obs_dim)),
        ]
    )


@settings(max_examples=20, deadline=None)
@given(problem=problems())
def test_predictions_have_the_shape_of_y_and_stay_in_bounds(
    problem, make_transitions, make_policy, fit_kwargs
):
    policy, data, y = _fit_problem(problem, make_transitions, make_policy, fit_kwargs)
    n, act_dim = problem["n"], problem["act_dim"]
    X = data["observations"]
    low, high = _bounds(problem, data)
    np.testing.assert_array_equal(policy.action_scaler_.low, low)
    np.testing.assert_array_equal(policy.action_scaler_.high, high)

    expected_shape = (n,) if problem["one_d"] else (n, act_dim)
    actions = policy.predict(X)
    assert actions.shape == expected_shape
    assert actions.dtype == np.float64
    _assert_inside(actions, low, high)
    sampled = policy.sample_action(X)
    assert sampled.shape == expected_shape
    _assert_inside(sampled, low, high)

    # Far out of distribution inputs still give actions inside the bounds.
    rng = np.random.default_rng(problem["seed"])
    far = _far_inputs(rng, 5, problem["obs_dim"])
    _assert_inside(policy.predict(far), low, high)
    _assert_inside(policy.sample_action(far), low, high)

    values = policy.predict_value(X, y)
    assert values.shape == (n,)
    assert np.all(np.isfinite(values))
    far_values = policy.predict_value(far, policy.predict(far))
    assert far_values.shape == (len(far),)
    assert np.all(np.isfinite(far_values))
    assert math.isfinite(policy.score(X))


@settings(max_examples=15, deadline=None)
@given(problem=problems(), data=st.data())
def test_predictions_in_bounds_for_any_finite_input(
    problem, data, make_transitions, make_policy, fit_kwargs
):
    from hypothesis.extra import numpy as hnp

    policy, train, _ = _fit_problem(problem, make_transitions, make_policy, fit_kwargs)
    X = data.draw(
        hnp.arrays(
            np.float64,
            (3, problem["obs_dim"]),
            elements=st.floats(-1e6, 1e6, allow_nan=False),
        )
    )
    low, high = _bounds(problem, train)
    _assert_inside(policy.predict(X), low, high)
    _assert_inside(policy.sample_action(X), low, high)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_predict_on_extreme_finite_input_stays_in_bounds(fitted_policy):
    big = float(np.finfo(np.float32).max)
    X = np.array([[big, big, big], [-big, -big, -big], [big, -big, 0.0]])
    _assert_inside(
        fitted_policy.predict(X),
        fitted_policy.action_scaler_.low,
        fitted_policy.action_scaler_.high,
    )


# --------------------------------------------------------------------- seeding
def test_same_random_state_same_predictions(transitions, make_policy):
    X = transitions["observations"]
    a = make_policy(random_state=7).fit(transitions)
    b = make_policy(random_state=7).fit(transitions)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(a.sample_action(X), b.sample_action(X))
    np.testing.assert_array_equal(
        a.predict_value(X, transitions["actions"]),
        b.predict_value(X, transitions["actions"]),
    )
    assert a.history_ == b.history_


def test_different_random_state_different_predictions(transitions, make_policy):
    X = transitions["observations"]
    a = make_policy(random_state=1).fit(transitions)
    b = make_policy(random_state=2).fit(transitions)
    assert not np.allclose(a.predict(X), b.predict(X))


def test_sample_action_noise_is_seeded_by_random_state(transitions, make_policy):
    X = transitions["observations"]
    a = make_policy(random_state=1, n_steps=0).fit(transitions)
    b = make_policy(random_state=2, n_steps=0).fit(transitions)
    b.core_.load_state_dict(a.core_.state_dict())  # same networks, other seed
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    first = a.sample_action(X)
    assert not np.array_equal(first, b.sample_action(X))
    # The generator advances: a second draw differs from the first.
    assert not np.array_equal(first, a.sample_action(X))


def test_random_state_does_not_touch_global_rng(transitions, make_policy):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_policy(random_state=5).fit(transitions)
    np.testing.assert_array_equal(torch.rand(3), expected)


def test_fits_in_threads_equal_the_same_fit_alone(transitions, make_policy):
    """joblib's threading backend fits in threads of one process: each fit seeds
    its networks from torch's process-wide generator, which two fits at once
    would reseed under each other."""
    X = transitions["observations"]
    expected = make_policy(random_state=0).fit(transitions).predict(X)
    torch.manual_seed(123)
    caller_state = torch.get_rng_state()
    for _ in range(3):
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            fits = [
                pool.submit(lambda: make_policy(random_state=0).fit(transitions))
                for _ in range(4)
            ]
            predictions = [fit.result().predict(X) for fit in fits]
        for prediction in predictions:
            np.testing.assert_array_equal(prediction, expected)
        assert torch.equal(torch.get_rng_state(), caller_state)


def _fit_in_child(data):
    torch.set_num_threads(1)  # libgomp's threads do not survive a fork
    IQLPolicy(hidden_sizes=(8,), n_steps=2, batch_size=8, device="cpu").fit(data)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_another_thread_fits_can_fit(transitions):
    """A process forked (multiprocessing's fork start method) while a thread of
    the parent held the seeding lock must not inherit it held."""
    with seeded_fit_in_another_thread():
        fork = multiprocessing.get_context("fork")
        with warnings.catch_warnings():  # fork in a multi-threaded process
            warnings.simplefilter("ignore", DeprecationWarning)
            child = fork.Process(target=_fit_in_child, args=(transitions,))
            child.start()
        child.join(60)
        hung = child.is_alive()
        if hung:
            child.kill()
    assert not hung
    assert child.exitcode == 0


@pytest.mark.parametrize(
    "mode", [torch.no_grad, torch.inference_mode, lambda: default_dtype(torch.float64)]
)
@pytest.mark.parametrize(
    "estimator",
    [
        IQLPolicy,
        TD3BCPolicy,
        FamO2OPolicy,
        functools.partial(FamO2OPolicy, algo="td3bc"),
    ],
    ids=["IQLPolicy", "TD3BCPolicy", "FamO2OPolicy", "FamO2OPolicy-td3bc"],
)
def test_training_under_the_callers_torch_modes(
    transitions, fit_kwargs, mode, estimator
):
    """fit inside evaluation code (``with torch.no_grad():``) still trains, and
    a float64 default dtype (``torch.set_default_dtype``) changes nothing."""
    X, y = transitions["observations"], transitions["actions"]
    new_rows = {k: v[:40] for k, v in fit_kwargs(transitions).items()}

    def trained():
        policy = estimator(
            hidden_sizes=(16, 16), n_steps=20, batch_size=16, device="cpu",
            random_state=0,
        )  # fmt: skip
        return policy.fit(transitions).partial_fit(X[:40], y[:40], **new_rows)

    expected = trained().predict(X)
    with mode():
        prediction = trained().predict(X)
    np.testing.assert_array_equal(prediction, expected)


@pytest.mark.parametrize(
    "mode", [torch.no_grad, torch.inference_mode, lambda: default_dtype(torch.float64)]
)
@pytest.mark.parametrize("estimator", [IQLPolicy, FamO2OPolicy])
def test_fine_tuning_online_under_the_callers_torch_modes(mode, estimator):
    pytest.importorskip("gymnasium")
    data = load_dataset("pendulum-medium-replay-v0")

    def fine_tuned():
        policy = estimator(
            hidden_sizes=(16, 16), n_steps=5, batch_size=16, device="cpu",
            random_state=0,
        )  # fmt: skip
        return policy.fit(data).fit_online("Pendulum-v1", 8, seed=0)

    expected = fine_tuned().predict(data.observations)
    with mode():
        prediction = fine_tuned().predict(data.observations)
    np.testing.assert_array_equal(prediction, expected)


def test_random_state_instance_is_accepted(transitions, make_policy):
    X = transitions["observations"]
    a = make_policy(random_state=np.random.RandomState(3)).fit(transitions)
    b = make_policy(random_state=np.random.RandomState(3)).fit(transitions)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


# --------------------------------------------------------------------- partial_fit
def _chunk(data, start, stop):
    return {k: v[start:stop] for k, v in data.items()}


def test_partial_fit_on_unfitted_estimator(transitions, make_policy):
    data = _chunk(transitions, 0, 20)
    with warns_at_test_line(
        "fits the action bounds, the observation "
        "normalisation and the reward scale on these 20 transitions",
    ):
        policy = make_policy().partial_fit(data)
    with warns_at_test_line("fits the reward scale on these"):
        make_policy(action_bounds=(-1, 1), normalize_observations=False).partial_fit(
            data
        )
    with warnings.catch_warnings():  # nothing fitted from the batch alone
        warnings.simplefilter("error")
        make_policy(
            action_bounds=(-1.0, 1.0),
            normalize_observations=False,
            reward_scaling="none",
        ).partial_fit(data)
    assert len(policy.buffer_) == 20
    assert policy.n_updates_ == 20  # one per new transition
    assert policy.n_features_in_ == 3
    assert policy.action_dim_ == 2
    assert {r["phase"] for r in policy.history_} == {"partial_fit"}
    assert policy.predict(data["observations"]).shape == (20, 2)


@pytest.mark.filterwarnings("ignore:partial_fit on an unfitted")
def test_partial_fit_with_arrays_on_unfitted_estimator(transitions, make_policy):
    policy = make_policy(action_bounds=(-1.0, 1.0)).partial_fit(
        transitions["observations"],
        transitions["actions"][:, 0],
        rewards=transitions["rewards"],
        next_observations=transitions["next_observations"],
        terminals=transitions["terminals"],
        n_updates=4,
    )
    assert policy.n_updates_ == 4
    assert policy.predict(transitions["observations"]).shape == (40,)


def test_the_buffer_holds_the_data_as_the_networks_see_it(
    make_transitions, make_policy
):
    data = make_transitions(n=60)
    for key in ("observations", "next_observations"):  # far from N(0, 1)
        data[key] = data[key] * 5.0 + 3.0
    data["rewards"] = data["rewards"] * 10.0
    policy = make_policy(n_steps=0, reward_scaling="standard").fit(data)
    rows = policy.buffer_.rows(0)
    assert policy.reward_scale_ != pytest.approx(1.0)
    for key in ("observations", "next_observations"):
        np.testing.assert_allclose(
            rows[key].numpy(),
            policy.observation_scaler_.transform(data[key]),
            rtol=1e-5,
        )
    # so within an episode, s' of one row is s of the next, as in the data
    inside = ~(data["terminals"] + data["timeouts"]).astype(bool)[:-1]
    np.testing.assert_array_equal(
        rows["next_observations"][:-1][inside], rows["observations"][1:][inside]
    )
    np.testing.assert_allclose(
        rows["actions"].numpy(),
        policy.action_scaler_.transform(data["actions"]),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        rows["rewards"].numpy(), data["rewards"] * policy.reward_scale_, rtol=1e-5
    )


def test_a_partial_fit_failing_while_it_appends_leaves_no_rows_behind(
    fitted_policy, transitions, monkeypatch
):
    policy = copy.deepcopy(fitted_policy)
    size, updates = len(policy.buffer_), policy.n_updates_
    X = transitions["observations"]
    before = policy.predict(X)

    def fail(self, rows):  # the rows are in the buffer, not yet normalised
        raise RuntimeError("out of memory")

    monkeypatch.setattr(type(policy.action_scaler_), "transform_", fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        policy.partial_fit(_chunk(transitions, 0, 10), n_updates=2)
    monkeypatch.undo()
    assert len(policy.buffer_) == size and policy.n_updates_ == updates
    np.testing.assert_array_equal(policy.predict(X), before)
    policy.partial_fit(_chunk(transitions, 0, 10), n_updates=0)  # still usable
    assert len(policy.buffer_) == size + 10


@pytest.mark.parametrize("n_updates", [None, 0, 3])
def test_partial_fit_on_fitted_estimator_adds_to_buffer(
    fitted_policy, transitions, n_updates
):
    policy = copy.deepcopy(fitted_policy)
    X = transitions["observations"]
    before = policy.predict(X)
    size, updates = len(policy.buffer_), policy.n_updates_
    new = _chunk(transitions, 5, 17)
    policy.partial_fit(new, n_updates=n_updates)
    assert len(policy.buffer_) == size + 12
    steps = 12 if n_updates is None else n_updates
    assert policy.n_updates_ == updates + steps
    # The new transitions are stored after the old ones, normalised.
    stored = policy.buffer_.sample(torch.arange(size, size + 12))
    np.testing.assert_allclose(
        stored.observations.numpy(),
        policy.observation_scaler_.transform(new["observations"]),
        rtol=1e-6,
    )
    np.testing.assert_array_equal(stored.dones.numpy(), new["terminals"])
    after = policy.predict(X)
    if steps:
        assert not np.array_equal(after, before)
        records = [h["step"] for h in policy.history_ if h["phase"] == "partial_fit"]
        assert records == list(range(updates + 5, updates + steps + 1, 5))
    else:
        np.testing.assert_array_equal(after, before)
    # Normalisation fitted by fit is kept as it was.
    np.testing.assert_array_equal(
        policy.observation_scaler_.mean, fitted_policy.observation_scaler_.mean
    )
    np.testing.assert_array_equal(
        policy.action_scaler_.low, fitted_policy.action_scaler_.low
    )
    assert policy.reward_scale_ == fitted_policy.reward_scale_


@pytest.mark.filterwarnings("ignore:this .* has no training data in its buffer")
def test_partial_fit_records_one_average_per_log_interval_across_calls(
    make_policy, make_transitions, tmp_path
):
    """A loop of one-step partial_fit calls, the online path, writes one history_
    record per log_interval steps (not one per call), kept through pickling and
    written out when fit_online starts."""
    import sk_o2o

    data = make_transitions(n=40, act_dim=1)
    every_step = make_policy(log_interval=1, action_bounds=(-2.0, 2.0)).fit(data)
    n_fit = len(every_step.history_)
    batched = copy.deepcopy(every_step).set_params(log_interval=5)
    for i in range(13):
        row = {k: v[i : i + 1] for k, v in data.items()}
        every_step.partial_fit(row)
        batched.partial_fit(row)
        if i == 6:
            batched = pickle.loads(pickle.dumps(batched))
        if i == 8:  # the safe format keeps no buffer: both go through it
            every_step.save(tmp_path / "every_step.safetensors")
            every_step = sk_o2o.load(tmp_path / "every_step.safetensors")
            batched.save(tmp_path / "batched.safetensors")
            batched = sk_o2o.load(tmp_path / "batched.safetensors")
    steps = every_step.history_[n_fit:]
    records = batched.history_[n_fit:]
    assert [r["step"] for r in records] == [15, 20]
    for record, five in zip(records, (steps[:5], steps[5:10]), strict=True):
        for key in LOSSES:
            assert record[key] == pytest.approx(np.mean([s[key] for s in five]))
    batched.fit_online("Pendulum-v1", 1)
    assert batched.history_[n_fit + 2]["phase"] == "partial_fit"
    assert batched.history_[n_fit + 2]["step"] == 23
    assert batched.history_[n_fit + 2]["critic_loss"] == pytest.approx(
        np.mean([s["critic_loss"] for s in steps[10:]])
    )


def test_partial_fit_does_not_touch_the_original(fitted_policy, transitions):
    # Guards the shared fixture: deepcopy must give independent state.
    X = transitions["observations"]
    before = fitted_policy.predict(X)
    copy.deepcopy(fitted_policy).partial_fit(transitions, n_updates=3)
    np.testing.assert_array_equal(fitted_policy.predict(X), before)


# --------------------------------------------------------------------- history
def test_history_records(transitions, make_policy):
    policy = make_policy(n_steps=12, log_interval=5).fit(transitions)
    assert [r["step"] for r in policy.history_] == [5, 10, 12]
    policy.partial_fit(_chunk(transitions, 0, 5))  # partial_fit's own intervals
    assert [r["step"] for r in policy.history_] == [5, 10, 12, 17]
    assert [r["phase"] for r in policy.history_] == ["offline"] * 3 + ["partial_fit"]
    for record in policy.history_:
        assert set(record) == {"step", "phase", *LOSSES}
        assert isinstance(record["step"], int)
        for key in LOSSES:
            assert isinstance(record[key], float)
            assert math.isfinite(record[key])
    assert policy.history_[-1]["step"] == policy.n_updates_


def test_progress_bar_advances_every_step_and_shows_the_losses(
    transitions, make_policy, monkeypatch
):
    import contextlib

    import sk_o2o.rl.base

    bars = []

    class Bar:
        def __init__(self, total):
            self.total, self.updates, self.postfixes = total, [], []
            bars.append(self)

        def update(self, n):
            self.updates.append(n)

        def set_postfix(self, postfix):
            self.postfixes.append(postfix)

    def progress_bar(total, **kwargs):
        Bar(total).leave = kwargs.get("leave", False)
        return contextlib.nullcontext(bars[-1])

    monkeypatch.setattr(sk_o2o.rl.base, "progress_bar", progress_bar)
    policy = make_policy(n_steps=12, log_interval=5).fit(transitions)
    # Not only when losses are logged (steps 5, 10, 12): a short fit moved the
    # bar once, at its end.
    assert bars[0].total == 12 and bars[0].updates == [1] * 12
    assert [set(p) for p in bars[0].postfixes] == [set(LOSSES)] * 3
    # fit's bar stays with its last losses; partial_fit's vanish (a loop of
    # calls would print one finished bar each)
    policy.partial_fit(transitions, n_updates=2)
    assert [bar.leave for bar in bars] == [True, False]


def test_n_steps_zero_fits_without_training(transitions, make_policy):
    policy = make_policy(n_steps=0).fit(transitions)
    assert policy.n_updates_ == 0
    assert policy.history_ == []
    assert len(policy.buffer_) == 40
    assert policy.predict(transitions["observations"]).shape == (40, 2)


# --------------------------------------------------------------------- sklearn API
def test_clone_is_unfitted_with_equal_params(fitted_policy):
    cloned = clone(fitted_policy)
    assert cloned.get_params() == fitted_policy.get_params()
    assert not hasattr(cloned, "core_")
    assert not hasattr(cloned, "n_updates_")
    assert not any(k.endswith("_") for k in vars(cloned))


def test_fit_twice_starts_from_scratch(transitions, make_transitions, make_policy):
    policy = make_policy(n_steps=7).fit(transitions)
    other = make_transitions(n=25, obs_dim=2, act_dim=1, seed=9)
    policy.fit(other)
    assert policy.n_updates_ == 7
    assert [r["step"] for r in policy.history_] == [5, 7]
    assert len(policy.buffer_) == 25
    assert policy.n_features_in_ == 2
    assert policy.action_dim_ == 1
    # Refitting gives exactly what a fresh estimator gives.
    fresh = make_policy(n_steps=7).fit(other)
    np.testing.assert_array_equal(
        policy.predict(other["observations"]), fresh.predict(other["observations"])
    )


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            lambda make_policy: make_policy(n_steps=150, batch_size=32, actor_lr=1e-2),
            id="IQLPolicy",
        ),
        # At their default β: TD3+BC's Q term, weighted by β / mean|Q| with
        # Q ≈ 0, is left out (before, it amplified the critic's noise: the
        # policy did worse than the mean action, 0.67-1.1 of its error).
        pytest.param(
            lambda make_policy: TD3BCPolicy(
                n_steps=1000, batch_size=32, hidden_sizes=(16, 16), random_state=0
            ),
            id="TD3BCPolicy",
        ),
        pytest.param(
            lambda make_policy: FamO2OPolicy(
                algo="td3bc",
                n_steps=1000,
                batch_size=32,
                hidden_sizes=(16, 16),
                random_state=0,
            ),
            id="FamO2OPolicy-td3bc",
        ),
    ],
)
def test_fit_without_rewards_warns_and_clones_behaviour(make_policy, build):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 2)).astype(np.float32)
    y = np.tanh(X @ np.array([[1.5], [-1.0]], dtype=np.float32))
    policy = build(make_policy)
    with warns_at_test_line("behaviour cloning"):
        policy.fit(X, y)
    # Every transition is a terminal one-step episode with zero reward.
    stored = policy.buffer_.sample(torch.arange(64))
    np.testing.assert_array_equal(stored.dones.numpy(), 1.0)
    np.testing.assert_array_equal(stored.rewards.numpy(), 0.0)
    # The policy imitates y: much better than predicting the mean action.
    mse = float(np.mean((policy.predict(X) - y) ** 2))
    baseline = float(np.mean((y - y.mean()) ** 2))
    assert mse < 0.25 * baseline, (mse, baseline)


@pytest.mark.filterwarnings("ignore:this .* has no training data in its buffer")
def test_partial_fit_without_rewards_continues_only_behaviour_cloning(
    transitions, make_policy, fit_kwargs, tmp_path
):
    X, y = transitions["observations"], transitions["actions"]
    fitted = make_policy(n_steps=2).fit(transitions)
    # Rows without rewards would be zero-reward terminal transitions among real
    # ones: refused, the estimator left as it was.
    size = len(fitted.buffer_)
    with pytest.raises(ValueError, match=r"partial_fit got no rewards.*fitted on"):
        fitted.partial_fit(X, y)
    assert len(fitted.buffer_) == size
    # A policy fitted on X and y alone continues on X and y alone, even loaded.
    with pytest.warns(UserWarning, match="^fit got no rewards"):
        cloned = make_policy(n_steps=2).fit(X, y)
    cloned.save(tmp_path / "cloned.safetensors")
    for policy in (cloned, sk_o2o.load(tmp_path / "cloned.safetensors")):
        with warns_at_test_line("^partial_fit got no rewards"):
            policy.partial_fit(X, y, n_updates=1)
    # Transitions with rewards end the cloning: its zero-reward terminal rows
    # leave the buffer, which then holds real transitions only.
    cloned.partial_fit(
        X[:10],
        y[:10],
        **fit_kwargs({k: v[:10] for k, v in transitions.items()}),
        n_updates=1,
    )
    assert len(cloned.buffer_) == 10
    np.testing.assert_array_equal(
        cloned.buffer_.sample(torch.arange(10)).rewards.numpy().ravel() != 0,
        transitions["rewards"][:10] != 0,
    )
    with pytest.raises(ValueError, match="partial_fit got no rewards"):
        cloned.partial_fit(X, y)


def test_behaviour_cloning_ends_when_the_environment_s_transitions_arrive():
    from sk_o2o.datasets import load_dataset

    data = load_dataset("pendulum-medium-replay-v0")
    X, y = data.observations[:64], data.actions[:64]
    with pytest.warns(UserWarning, match="behaviour cloning"):
        policy = TD3BCPolicy(n_steps=2, hidden_sizes=(8,), random_state=0).fit(X, y)
    # a fit_online that fails before any step changes nothing
    with (
        warnings.catch_warnings(),
        pytest.raises(ValueError, match="not an environment id"),
    ):
        warnings.simplefilter("ignore")
        policy.fit_online("NoSuchEnv-v0", 5)
    with pytest.warns(UserWarning, match="partial_fit got no rewards"):
        policy.partial_fit(X, y, n_updates=0)
    assert len(policy.buffer_) == 128
    with warns_at_test_line("fitted by behaviour cloning .* rows are dropped"):
        policy.fit_online("Pendulum-v1", 3)
    assert len(policy.buffer_) == 3
    assert not policy.buffer_.sample(torch.arange(3)).dones.numpy().all()


def test_fit_with_rewards_does_not_warn(transitions, make_policy, fit_kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_policy(n_steps=2).fit(
            transitions["observations"],
            transitions["actions"],
            **fit_kwargs(transitions),
        )


def test_torch_inputs_match_numpy(transitions, make_policy):
    X = transitions["observations"]
    from_numpy = make_policy().fit(transitions)
    from_torch = make_policy().fit(
        torch.from_numpy(X),
        torch.from_numpy(transitions["actions"]),
        rewards=torch.from_numpy(transitions["rewards"]),
        next_observations=torch.from_numpy(transitions["next_observations"]),
        terminals=torch.from_numpy(transitions["terminals"]).bool(),
        timeouts=torch.from_numpy(transitions["timeouts"]),
    )
    expected = from_numpy.predict(X)
    np.testing.assert_array_equal(from_torch.predict(X), expected)
    np.testing.assert_array_equal(from_numpy.predict(torch.from_numpy(X)), expected)
    np.testing.assert_array_equal(
        from_numpy.predict_value(
            torch.from_numpy(X), torch.from_numpy(transitions["actions"])
        ),
        from_numpy.predict_value(X, transitions["actions"]),
    )


def test_arrays_and_dataset_give_the_same_model(transitions, make_policy, fit_kwargs):
    X = transitions["observations"]
    a = make_policy().fit(transitions)
    b = make_policy().fit(X, transitions["actions"], **fit_kwargs(transitions))
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_dataframe_sets_feature_names(transitions, make_policy, fit_kwargs):
    pd = pytest.importorskip("pandas")
    columns = ["angle", "velocity", "torque"]
    X = pd.DataFrame(transitions["observations"], columns=columns)
    policy = make_policy().fit(X, transitions["actions"], **fit_kwargs(transitions))
    np.testing.assert_array_equal(policy.feature_names_in_, columns)
    with pytest.warns(UserWarning, match="feature names"):  # as in scikit-learn
        from_array = policy.predict(transitions["observations"])
    np.testing.assert_array_equal(policy.predict(X), from_array)
    # A dataset fit afterwards forgets the names.
    policy.fit(transitions)
    assert not hasattr(policy, "feature_names_in_")


# Another valid value for every parameter of the RL policies. A new parameter
# must be added here, and so be classified as live or as shaping the model.
OTHER_VALUES = {
    "action_bounds": (-3.0, 3.0),
    "actor_lr": 1e-2,
    "actor_lr_schedule": "cosine",
    "advantage_weighting": "batch_mean",
    "algo": "td3bc",
    "alpha_lr": 1e-2,
    "balance_lr": 1e-2,
    "balance_range": (1.5, 2.5),
    "balance_update_interval": 2,
    "batch_size": 8,
    "beta": 0.5,
    "critic_lr": 1e-2,
    "device": "auto",
    "expectile": 0.9,
    "exploration_noise": 0.3,
    "gamma": 0.5,
    "hidden_sizes": (8,),
    "log_interval": 2,
    "n_steps": 3,
    "noise_clip": 0.1,
    "normalize_observations": False,
    "policy_freq": 3,
    "policy_noise": 0.1,
    "random_state": 5,
    "reward_scaling": "standard",
    "target_entropy": -1.0,
    "tau": 0.01,
    "value_lr": 1e-2,
    "verbose": 1,
}


# Read step by step or by fit alone: set_params may change them after fit.
LIVE = {
    "beta",
    "batch_size",
    "n_steps",
    "log_interval",
    "verbose",
    "random_state",
    "device",
    "actor_lr_schedule",
    "policy_freq",
    "policy_noise",
    "exploration_noise",
    "balance_update_interval",
}


@pytest.mark.filterwarnings("ignore:next_observations")
@pytest.mark.parametrize("name", ["IQLPolicy", "TD3BCPolicy", "FamO2OPolicy"])
def test_partial_fit_refuses_parameters_that_shaped_the_fitted_model(
    name, make_policy, transitions, fit_kwargs
):
    """set_params of gamma, hidden_sizes, ... after fit: partial_fit and
    fit_online raise instead of going on with the old values; beta, batch_size
    and the other live parameters take effect."""
    import sk_o2o

    cls = getattr(sk_o2o, name)
    tiny = make_policy().get_params()
    policy = cls(**{k: v for k, v in tiny.items() if k in cls().get_params()})
    policy.fit(transitions)
    X = transitions["observations"]
    new = {
        k: v[:4]
        for k, v in {
            "X": X,
            "y": transitions["actions"],
            **fit_kwargs(transitions),
        }.items()
    }
    for param, original in policy.get_params().items():
        assert param in OTHER_VALUES, f"classify the new parameter {param!r}"
        other = {param: OTHER_VALUES[param]}
        changed = copy.deepcopy(policy).set_params(**other)
        n_before, predicted = changed.n_updates_, changed.predict(X)
        if param in LIVE:
            changed.partial_fit(**new, n_updates=2)
            assert changed.n_updates_ == n_before + 2
            continue
        match = f"set_params changed {param}="
        with pytest.raises(ValueError, match=match):
            changed.partial_fit(**new, n_updates=2)
        with pytest.raises(ValueError, match=match):
            changed.fit_online("Pendulum-v1", 2)
        assert changed.n_updates_ == n_before and len(changed.buffer_) == len(X)
        np.testing.assert_array_equal(changed.predict(X), predicted)
        # Set back, or refitted with the new value, it trains again.
        changed.set_params(**{param: original}).partial_fit(**new, n_updates=1)
        changed.set_params(**other).fit(transitions).partial_fit(**new, n_updates=1)


@pytest.mark.filterwarnings("ignore:this .* has no training data in its buffer")
@pytest.mark.parametrize(
    "params",
    [
        {"hidden_sizes": np.array([8, 8])},
        {"action_bounds": (np.array([-3.0, -3.0]), np.array([3.0, 3.0]))},
        {"action_bounds": (torch.tensor([-3.0, -3.0]), torch.tensor([3.0, 3.0]))},
        {"hidden_sizes": [8, 8], "random_state": np.random.RandomState(0)},
    ],
    ids=["array-hidden", "array-bounds", "tensor-bounds", "list-and-RandomState"],
)
def test_array_parameters_are_unchanged_for_partial_fit(
    params, make_policy, transitions, tmp_path
):
    import sk_o2o

    policy = make_policy(**params).fit(transitions)
    policy.partial_fit(transitions, n_updates=1)  # compared by value, no error
    # (a RandomState cannot be saved safely: the error says to set an int)
    policy.set_params(random_state=0).save(tmp_path / "policy.safetensors")
    sk_o2o.load(tmp_path / "policy.safetensors").partial_fit(transitions, n_updates=1)
    if "hidden_sizes" in params:
        with pytest.raises(ValueError, match="set_params changed hidden_sizes"):
            policy.set_params(hidden_sizes=(8, 9)).partial_fit(transitions)


def test_a_lowered_log_interval_takes_effect_at_once(make_policy, transitions):
    policy = make_policy(log_interval=10).fit(transitions)
    for i in range(5):
        policy.partial_fit(_chunk(transitions, i, i + 1))
    policy.set_params(log_interval=3)
    policy.partial_fit(_chunk(transitions, 5, 6))  # 6 steps pending: recorded
    records = [h["step"] for h in policy.history_ if h["phase"] == "partial_fit"]
    assert records == [policy.n_updates_]


def test_history_averages_each_loss_over_the_steps_that_computed_it(
    make_policy, transitions
):
    """Catches a bug (a loss computed every other step, e.g. TD3's delayed actor
    loss, averaged over all steps and so halved)."""
    calls = []

    def fake_update(batch, phase):
        calls.append(phase)
        losses = {"every": torch.tensor(1.0)}
        if len(calls) % 2 == 0:
            losses["other"] = torch.tensor(float(len(calls)))
        return losses

    policy = make_policy(n_steps=4, log_interval=4)
    policy._update = fake_update  # instance attribute: _gradient_step calls it
    policy.fit(transitions)
    (record,) = [h for h in policy.history_ if h["phase"] == "offline"]
    assert record["every"] == 1.0
    assert record["other"] == 3.0  # (2 + 4) / 2, not (2 + 4) / 4


def test_partial_fit_refuses_more_layers_and_a_new_box_high(
    fitted_policy, make_policy, transitions
):
    """Catches a bug (sequences compared over their common prefix only) and another
    (a gymnasium Box compared by its low bound only)."""
    gymnasium = pytest.importorskip("gymnasium")
    deeper = copy.deepcopy(fitted_policy).set_params(hidden_sizes=(16, 16, 16))
    with pytest.raises(ValueError, match="set_params changed hidden_sizes"):
        deeper.partial_fit(transitions, n_updates=1)
    box = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
    policy = make_policy(action_bounds=box).fit(transitions)
    policy.set_params(action_bounds=gymnasium.spaces.Box(-1.0, 3.0, (2,), np.float32))
    with pytest.raises(ValueError, match="set_params changed action_bounds"):
        policy.partial_fit(transitions, n_updates=1)


def test_partial_fit_accepts_the_value_a_none_default_stood_for(transitions):
    # FamO2O's None defaults depend on algo; naming the value they stood for
    # changes nothing, and was refused as a change.
    for algo, scaling, balance_range in (
        ("iql", "returns", (1.0, 5.0)),
        ("td3bc", "none", (1.0, 4.0)),
    ):
        policy = FamO2OPolicy(algo=algo, n_steps=2, hidden_sizes=(8,), device="cpu")
        policy.fit(transitions)
        policy.set_params(reward_scaling=scaling, balance_range=list(balance_range))
        policy.partial_fit(transitions, n_updates=1)
        policy.set_params(reward_scaling="standard")
        with pytest.raises(ValueError, match="changed reward_scaling=None to 'stan"):
            policy.partial_fit(transitions, n_updates=1)


def test_find_stack_level_stops_at_a_package_module_run_as_a_script():
    # python -m sk_o2o.datasets.builder: the module itself is the caller (not
    # runpy, above it); imported, the level counts every sk_o2o frame.
    import os

    from sk_o2o._base import find_stack_level

    script = os.path.join(os.path.dirname(sk_o2o.__file__), "datasets", "fake.py")
    code = compile("level = find_stack_level()", script, "exec")
    for name, expected in (("__main__", 1), ("sk_o2o.datasets.fake", 2)):
        scope = {"__name__": name, "find_stack_level": find_stack_level}
        exec(code, scope)
        assert scope["level"] == expected, name
