"""The data layer: converters, episode ids, the device buffer and the normalisers."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import warns_at_test_line
from sk_o2o.data import D4RL_KEYS, TransitionBuffer, Transitions, as_transitions
from sk_o2o.data.normalization import (
    ActionScaler,
    fit_action_scaler,
    fit_observation_scaler,
    reward_scale,
)
from sk_o2o.data.transitions import episode_ids
from sk_o2o.datasets import load_dataset


def _assert_same(t: Transitions, data: dict[str, np.ndarray]) -> None:
    for key in D4RL_KEYS:
        got = getattr(t, key)
        if key not in data:
            assert got is None
            continue
        assert got.dtype == np.float32, key
        np.testing.assert_array_equal(got, data[key], err_msg=key)


# --------------------------------------------------------------------- converters
def test_from_arrays(make_transitions, fit_kwargs):
    data = make_transitions(n=30, obs_dim=4, act_dim=2)
    t = as_transitions(data["observations"], data["actions"], **fit_kwargs(data))
    assert len(t) == 30
    _assert_same(t, data)
    assert set(t.as_dict()) == set(D4RL_KEYS)


def test_from_arrays_without_timeouts(make_transitions, fit_kwargs):
    data = make_transitions(n=20, timeouts=False)
    t = as_transitions(data["observations"], data["actions"], **fit_kwargs(data))
    assert t.timeouts is None
    assert "timeouts" not in t.as_dict()
    _assert_same(t, data)


def test_from_arrays_casts_float64_and_bool_flags(make_transitions):
    data = make_transitions(n=20)
    t = as_transitions(
        data["observations"].astype(np.float64),
        data["actions"].astype(np.float64),
        rewards=data["rewards"].astype(np.float64).tolist(),
        next_observations=data["next_observations"].astype(np.float64),
        terminals=data["terminals"].astype(bool),
        timeouts=data["timeouts"].astype(np.int64),
    )
    _assert_same(t, data)


def test_from_mapping(make_transitions):
    data = make_transitions(n=25, obs_dim=2, act_dim=3)
    _assert_same(as_transitions(data), data)


def test_from_mapping_ignores_extra_keys(make_transitions):
    data = make_transitions(n=10)
    t = as_transitions({**data, "infos/qpos": np.zeros((10, 7))})
    _assert_same(t, data)


def test_from_npz(tmp_path, make_transitions):
    data = make_transitions(n=30, obs_dim=3, act_dim=1)
    path = tmp_path / "data.npz"
    np.savez(path, **data, extra=np.arange(3))
    _assert_same(as_transitions(path), data)
    _assert_same(as_transitions(str(path)), data)
    upper = tmp_path / "DATA.NPZ"  # the suffix in any case
    path.rename(upper)
    _assert_same(as_transitions(upper), data)


@pytest.mark.parametrize("suffix", [".hdf5", ".h5"])
def test_from_hdf5(tmp_path, make_transitions, suffix):
    h5py = pytest.importorskip("h5py")
    data = make_transitions(n=30, obs_dim=3, act_dim=2)
    path = tmp_path / f"data{suffix}"
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            f.create_dataset(key, data=value)
        f.create_dataset("infos/qpos", data=np.zeros((30, 2)))
    _assert_same(as_transitions(path), data)


def test_from_d3rlpy_mdp_dataset():
    d3rlpy = pytest.importorskip("d3rlpy")
    n = 12
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    rew = np.arange(n, dtype=np.float32)
    terminals = np.zeros(n, dtype=np.float32)
    timeouts = np.zeros(n, dtype=np.float32)
    # Episodes: steps 0-3 (terminal), 4-7 (time limit), 8-11 (terminal).
    terminals[[3, 11]] = 1.0
    timeouts[7] = 1.0
    dataset = d3rlpy.dataset.MDPDataset(obs, act, rew, terminals, timeouts=timeouts)

    t = as_transitions(dataset)

    # The timed-out last step (index 7) has no next observation and is dropped;
    # the terminal last steps (3 and 11) are kept.
    kept = np.array([0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11])
    assert len(t) == len(kept)
    np.testing.assert_array_equal(t.observations, obs[kept])
    np.testing.assert_array_equal(t.actions, act[kept])
    np.testing.assert_array_equal(t.rewards, rew[kept])
    # next_observations follow the original sequence inside episodes.
    inside = [0, 1, 2, 4, 5, 6, 8, 9, 10]
    positions = [int(np.flatnonzero(kept == i)[0]) for i in inside]
    np.testing.assert_array_equal(
        t.next_observations[positions], obs[np.add(inside, 1)]
    )
    # Terminal flags at the kept terminal steps, the timeout moved to the last
    # kept step of the timed-out episode (step 6, whose next observation exists).
    np.testing.assert_array_equal(np.flatnonzero(t.terminals), [3, 10])
    np.testing.assert_array_equal(np.flatnonzero(t.timeouts), [6])
    np.testing.assert_array_equal(t.next_observations[6], obs[7])


def test_a_discrete_d3rlpy_dataset_is_refused():
    d3rlpy = pytest.importorskip("d3rlpy")
    rng = np.random.default_rng(0)
    terminals = np.zeros(20)
    terminals[[9, 19]] = 1.0
    dataset = d3rlpy.dataset.MDPDataset(
        rng.normal(size=(20, 3)).astype(np.float32),
        rng.integers(0, 3, 20),  # d3rlpy takes integer actions as discrete
        rng.normal(size=20),
        terminals,
    )
    with pytest.raises(ValueError, match="discrete actions"):
        as_transitions(dataset)


def test_a_dataset_s_errors_name_its_keys(make_transitions, tmp_path):
    data = make_transitions(n=20)
    bad = {**data, "actions": data["actions"].copy()}
    bad["actions"][9, 0] = np.nan
    with pytest.raises(ValueError, match=r"^actions contains NaN.*index 9"):
        as_transitions(bad)
    with pytest.raises(ValueError, match="actions has 19 entries but observations"):
        as_transitions({**data, "actions": data["actions"][:19]})
    with pytest.raises(ValueError, match=r"observations must be 2-dimensional"):
        as_transitions({**data, "observations": data["observations"][:, :, None]})
    with pytest.raises(ValueError, match=r"X must be 2-dimensional"):
        as_transitions(
            data["observations"][:, :, None],
            data["actions"],
            **{k: data[k] for k in ("rewards", "next_observations", "terminals")},
        )
    # D4RL's raw files have no next_observations: say how to build them
    without = {k: v for k, v in data.items() if k != "next_observations"}
    with pytest.raises(ValueError, match=r"d4rl\.qlearning_dataset"):
        as_transitions(without)
    with pytest.raises(ValueError, match=r"use sk_o2o\.datasets\.load_dataset"):
        as_transitions("pendulum-medium-v0")
    with pytest.raises(ValueError, match=r"does not exist\.$"):
        as_transitions(tmp_path / "missing.npz")


def test_next_observations_shifted_across_time_limits_are_flagged():
    from sk_o2o.data.transitions import warn_if_next_observations_do_not_follow

    data = load_dataset("pendulum-medium-replay-v0")
    args = (data.observations, data.next_observations, data.terminals)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_next_observations_do_not_follow(*args, data.timeouts)
    # the naive construction from D4RL's arrays: s' of a timed-out row is the
    # next episode's first state
    shifted = np.vstack([data.observations[1:], data.observations[-1:]])
    with warns_at_test_line(r"equals X\[i \+ 1\] at 17 of the 17"):
        warn_if_next_observations_do_not_follow(
            data.observations, shifted, data.terminals, data.timeouts
        )


def test_shuffled_transitions_are_flagged_only_where_order_matters():
    from sk_o2o import IQLPolicy, TD3BCPolicy

    data = load_dataset("pendulum-medium-replay-v0")
    rows = np.random.default_rng(0).permutation(len(data.rewards))[:2000]
    shuffled = {key: data[key][rows] for key in D4RL_KEYS}
    fast = {"n_steps": 1, "batch_size": 8, "hidden_sizes": (8,)}
    # Order does not matter without returns-based reward scaling: no warning
    # (before: "in different spaces ... or not in episode order").
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TD3BCPolicy(**fast).fit(shuffled)
        IQLPolicy(reward_scaling="standard", **fast).fit(shuffled)
    with warns_at_test_line("are rows of X elsewhere: the transitions are shuffled"):
        fitted = IQLPolicy(**fast).fit(shuffled)  # reward_scaling="returns"
    # ... as where rows were dropped: 30 % of them, in order
    kept = np.sort(rows[: len(data.rewards) * 3 // 10])
    subsample = {key: data[key][kept] for key in D4RL_KEYS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TD3BCPolicy(**fast).fit(subsample)
        # partial_fit keeps the fitted reward scale: order does not matter there
        fitted.partial_fit(shuffled, n_updates=1)
    with warns_at_test_line("are rows of X elsewhere: the transitions are shuffled"):
        IQLPolicy(**fast).fit(subsample)
    # next observations in another space than X: flagged whatever the scaling
    moved = {**shuffled, "next_observations": 2.0 * shuffled["next_observations"]}
    with warns_at_test_line("practically never a row of X"):
        TD3BCPolicy(**fast).fit(moved)


def test_one_dimensional_y_becomes_column(make_transitions, fit_kwargs):
    data = make_transitions(n=15, act_dim=1)
    t = as_transitions(data["observations"], data["actions"][:, 0], **fit_kwargs(data))
    assert t.actions.shape == (15, 1)
    np.testing.assert_array_equal(t.actions, data["actions"])


@pytest.mark.parametrize("source", ["arrays", "mapping", "npz"])
def test_one_dimensional_actions_give_one_dimensional_predictions(
    make_transitions, make_policy, fit_kwargs, tmp_path, source
):
    """Whatever the source of the data, predict answers in the shape of its actions."""
    data = make_transitions(n=30, act_dim=1)
    flat = {**data, "actions": data["actions"][:, 0]}
    if source == "arrays":
        policy = make_policy().fit(
            data["observations"], flat["actions"], **fit_kwargs(data)
        )
    elif source == "mapping":
        policy = make_policy().fit(flat)
    else:
        np.savez(tmp_path / "flat.npz", **flat)
        policy = make_policy().fit(tmp_path / "flat.npz")
    assert policy.actions_1d_
    assert policy.predict(data["observations"][:4]).shape == (4,)
    assert make_policy().fit(data).predict(data["observations"][:4]).shape == (4, 1)


def test_one_transition_takes_scalars_as_env_step_returns_them(make_transitions):
    data = make_transitions(n=1)
    t = as_transitions(
        data["observations"],
        data["actions"],
        rewards=np.float32(-1.5),
        next_observations=data["next_observations"],
        terminals=False,
        timeouts=True,
    )
    assert t.rewards.tolist() == [-1.5]
    assert t.terminals.tolist() == [0.0] and t.timeouts.tolist() == [1.0]
    with pytest.raises(ValueError, match=r"^rewards has 1 entries but X has 2"):
        two = make_transitions(n=2)
        as_transitions(
            two["observations"],
            two["actions"],
            rewards=0.0,
            next_observations=two["next_observations"],
            terminals=two["terminals"],
        )


def test_column_rewards_become_one_dimensional(make_transitions, fit_kwargs):
    data = make_transitions(n=15)
    kwargs = {**fit_kwargs(data), "rewards": data["rewards"][:, None]}
    t = as_transitions(data["observations"], data["actions"], **kwargs)
    assert t.rewards.shape == (15,)


def test_torch_tensors_accepted(make_transitions):
    data = make_transitions(n=20)
    tensors = {k: torch.from_numpy(v) for k, v in data.items()}
    t = as_transitions(
        tensors["observations"],
        tensors["actions"],
        rewards=tensors["rewards"],
        next_observations=tensors["next_observations"],
        terminals=tensors["terminals"],
        timeouts=tensors["timeouts"],
    )
    _assert_same(t, data)
    _assert_same(as_transitions(tensors), data)


def test_tensor_requiring_grad_accepted(make_transitions, fit_kwargs):
    data = make_transitions(n=10)
    X = torch.from_numpy(data["observations"]).requires_grad_(True)
    t = as_transitions(X, data["actions"], **fit_kwargs(data))
    np.testing.assert_array_equal(t.observations, data["observations"])


def test_bfloat16_tensors_accepted(make_transitions, fit_kwargs):
    data = make_transitions(n=10)
    X = torch.from_numpy(data["observations"]).bfloat16()
    t = as_transitions(X, data["actions"], **fit_kwargs(data))
    np.testing.assert_array_equal(t.observations, X.float().numpy())


def test_reversed_and_read_only_arrays_fit_like_copies(
    make_transitions, fit_kwargs, make_policy
):
    """Negative strides (X[::-1]) and read-only arrays (pandas) reach the buffer."""
    import warnings

    data = make_transitions(n=20, obs_dim=3, act_dim=2)
    # the same rows in the same order, seen through negative strides
    flipped = {k: v[::-1].copy()[::-1] for k, v in data.items()}
    assert all(v.strides[0] < 0 for v in flipped.values())
    read_only = {k: v.copy() for k, v in data.items()}
    for v in read_only.values():
        v.setflags(write=False)
    copies = {k: v.copy() for k, v in data.items()}
    reference = make_policy().fit(
        copies["observations"], copies["actions"], **fit_kwargs(copies)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about non-writable arrays
        for arrays in (flipped, read_only):
            policy = make_policy().fit(
                arrays["observations"], arrays["actions"], **fit_kwargs(arrays)
            )
            np.testing.assert_array_equal(
                policy.predict(data["observations"]),
                reference.predict(data["observations"]),
            )


# --------------------------------------------------------------------- episode ids
@settings(max_examples=25, deadline=None)
@given(
    flags=st.integers(1, 60).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.int8, n, elements=st.integers(0, 1)),
            st.one_of(st.none(), hnp.arrays(np.int8, n, elements=st.integers(0, 1))),
        )
    )
)
def test_episode_ids_property(flags):
    terminals, timeouts = flags
    ids = episode_ids(terminals, timeouts)
    ends = terminals.astype(bool)
    if timeouts is not None:
        ends |= timeouts.astype(bool)
    assert ids.shape == terminals.shape
    assert ids[0] == 0
    steps = np.diff(ids)
    assert np.all(steps >= 0)
    # The id increments exactly after each end flag, and nowhere else.
    np.testing.assert_array_equal(steps, ends[:-1].astype(np.int64))


def test_episode_ids_example():
    terminals = np.array([0, 1, 0, 0, 0, 0, 1])
    timeouts = np.array([0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(
        episode_ids(terminals, timeouts), [0, 0, 1, 1, 2, 2, 2]
    )
    np.testing.assert_array_equal(episode_ids(terminals, None), [0, 0, 1, 1, 1, 1, 1])


# --------------------------------------------------------------------- buffer
def _rows(rng, n, obs_dim=3, act_dim=2):
    return {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.normal(size=(n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "dones": rng.integers(0, 2, size=n).astype(np.float32),
    }


def _contents(buffer: TransitionBuffer) -> dict[str, np.ndarray]:
    batch = buffer.sample(torch.arange(len(buffer)))
    return {k: v.numpy() for k, v in batch._asdict().items()}


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=8),
    capacity=st.integers(1, 16),
    seed=st.integers(0, 2**16),
)
def test_buffer_append_growth_keeps_contents(sizes, capacity, seed):
    rng = np.random.default_rng(seed)
    buffer = TransitionBuffer(3, 2, torch.device("cpu"), capacity=capacity)
    chunks = [_rows(rng, n) for n in sizes]
    for i, chunk in enumerate(chunks):
        buffer.append(**chunk)
        assert len(buffer) == sum(sizes[: i + 1])
        assert buffer.capacity >= len(buffer)
    got = _contents(buffer)
    for key in got:
        np.testing.assert_array_equal(
            got[key], np.concatenate([c[key] for c in chunks]), err_msg=key
        )


def test_buffer_accepts_tensors_and_float64():
    rng = np.random.default_rng(0)
    rows = _rows(rng, 5)
    buffer = TransitionBuffer(3, 2, torch.device("cpu"))
    buffer.append(
        **{k: torch.from_numpy(v.astype(np.float64)) for k, v in rows.items()}
    )
    for key, value in _contents(buffer).items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, rows[key])


def test_buffer_sample_returns_indexed_rows():
    rng = np.random.default_rng(1)
    rows = _rows(rng, 20)
    buffer = TransitionBuffer(3, 2, torch.device("cpu"), capacity=4)
    buffer.append(**rows)
    indices = torch.tensor([19, 0, 7, 7, 3])
    batch = buffer.sample(indices)
    assert batch._fields == (
        "observations",
        "actions",
        "rewards",
        "next_observations",
        "dones",
    )
    for key, value in batch._asdict().items():
        assert value.device.type == "cpu"
        np.testing.assert_array_equal(value.numpy(), rows[key][indices.numpy()])


def test_buffer_pickle_round_trip():
    rng = np.random.default_rng(2)
    rows = _rows(rng, 13)
    buffer = TransitionBuffer(3, 2, torch.device("cpu"), capacity=100)
    buffer.append(**rows)
    copy = pickle.loads(pickle.dumps(buffer))
    assert len(copy) == 13
    assert (copy.obs_dim, copy.act_dim) == (3, 2)
    for key, value in _contents(copy).items():
        np.testing.assert_array_equal(value, rows[key])
    # The copy keeps working: appending grows it.
    more = _rows(rng, 4)
    copy.append(**more)
    assert len(copy) == 17
    np.testing.assert_array_equal(_contents(copy)["rewards"][13:], more["rewards"])
    assert len(buffer) == 13


# --------------------------------------------------------------------- normalisers
bounds_strategy = st.integers(1, 4).flatmap(
    lambda dim: st.tuples(
        hnp.arrays(np.float64, dim, elements=st.floats(-100, 100)),
        hnp.arrays(np.float64, dim, elements=st.floats(0.01, 100)),
    )
)


@settings(max_examples=25, deadline=None)
@given(bounds=bounds_strategy, seed=st.integers(0, 2**16))
def test_action_scaler_round_trip(bounds, seed):
    low, width = bounds
    high = low + width
    rng = np.random.default_rng(seed)
    actions = rng.uniform(low, high, size=(20, len(low))).astype(np.float32)
    actions = np.clip(actions, low.astype(np.float32), high.astype(np.float32))
    scaler = fit_action_scaler(actions, (low, high))
    scaled = scaler.transform(actions)
    assert scaled.dtype == np.float32
    assert np.all(scaled >= -1.0 - 1e-4) and np.all(scaled <= 1.0 + 1e-4)
    back = scaler.inverse_transform(scaled)
    tolerance = 1e-5 * (1.0 + np.abs(low) + np.abs(high))
    assert np.all(np.abs(back - actions) <= tolerance)


@settings(max_examples=25, deadline=None)
@given(
    bounds=bounds_strategy,
    values=hnp.arrays(
        np.float32,
        (7, 4),
        elements=st.floats(allow_nan=False, allow_infinity=True, width=32),
    ),
)
def test_action_scaler_inverse_always_inside_bounds(bounds, values):
    low, width = bounds
    high = low + width
    scaler = fit_action_scaler(np.asarray([low], dtype=np.float32), (low, high))
    out = scaler.inverse_transform(values[:, : len(low)])
    assert out.shape == (7, len(low))
    assert np.all(out >= scaler.low) and np.all(out <= scaler.high)


def test_action_scaler_from_data_and_flat_dimension():
    actions = np.array([[0.0, 2.0], [1.0, 2.0], [0.5, 2.0]], dtype=np.float32)
    scaler = fit_action_scaler(actions, None)
    np.testing.assert_array_equal(scaler.low, [0.0, 1.0])
    np.testing.assert_array_equal(scaler.high, [1.0, 3.0])
    np.testing.assert_allclose(scaler.transform(actions)[:, 0], [-1.0, 1.0, 0.0])
    np.testing.assert_allclose(scaler.transform(actions)[:, 1], 0.0)


def test_action_scaler_scalar_bounds_and_box():
    actions = np.zeros((3, 2), dtype=np.float32)
    scaler = fit_action_scaler(actions, (-2.0, 4.0))
    np.testing.assert_array_equal(scaler.low, [-2.0, -2.0])
    np.testing.assert_array_equal(scaler.high, [4.0, 4.0])

    class Box:  # duck-typed gymnasium Box
        low = np.array([-1.0, 0.0])
        high = np.array([1.0, 5.0])

    box = fit_action_scaler(actions, Box())
    np.testing.assert_array_equal(box.low, [-1.0, 0.0])
    np.testing.assert_array_equal(box.high, [1.0, 5.0])


def test_action_scaler_dataclass_inverse_clips():
    scaler = ActionScaler(np.array([0.0], np.float32), np.array([10.0], np.float32))
    out = scaler.inverse_transform(np.array([[-5.0], [0.0], [5.0]], np.float32))
    np.testing.assert_allclose(out[:, 0], [0.0, 5.0, 10.0])


def _episodes():
    # Three episodes: returns 3, -1 and 10 (the last cut by a time limit).
    rewards = np.array([1.0, 2.0, -1.0, 4.0, 6.0], dtype=np.float32)
    terminals = np.array([0, 1, 1, 0, 0], dtype=np.float32)
    timeouts = np.array([0, 0, 0, 0, 1], dtype=np.float32)
    return rewards, terminals, timeouts


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 8), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_jumps_in_observations_find_the_episode_ends(lengths, seed):
    """Without any flag, episodes laid end to end are told apart by their states."""
    rng = np.random.default_rng(seed)
    obs, next_obs, ends = [], [], []
    for n in lengths:
        states = rng.normal(size=(n + 1, 2)).astype(np.float32)
        obs.append(states[:-1])
        next_obs.append(states[1:])
        ends.append(np.r_[np.zeros(n - 1), 1.0])
    obs, next_obs, ends = map(np.concatenate, (obs, next_obs, ends))
    found = episode_ids(
        np.zeros(len(ends)), observations=obs, next_observations=next_obs
    )
    np.testing.assert_array_equal(found, episode_ids(ends))


def test_episode_ids_leave_the_callers_flags_alone():
    terminals = np.zeros(4, dtype=bool)
    obs = np.array([[0.0], [1.0], [5.0], [6.0]])
    episode_ids(terminals, observations=obs, next_observations=obs + 1)
    assert not terminals.any()


def test_reward_scale_none():
    assert reward_scale(*_episodes(), "none") == 1.0


def test_reward_scale_standard():
    rewards, terminals, timeouts = _episodes()
    expected = 1.0 / float(rewards.std())
    assert reward_scale(rewards, terminals, timeouts, "standard") == pytest.approx(
        expected
    )
    constant = np.full(5, 3.0, dtype=np.float32)
    assert reward_scale(constant, terminals, timeouts, "standard") == 1.0


def test_reward_scale_returns():
    rewards, terminals, timeouts = _episodes()
    assert reward_scale(rewards, terminals, timeouts, "returns") == pytest.approx(
        1000.0 / (10.0 - (-1.0))
    )
    # Without the timeouts the last two episodes merge: returns 3 and 9.
    no_timeouts = np.array([0, 1, 0, 0, 0], dtype=np.float32)
    assert reward_scale(rewards, no_timeouts, None, "returns") == pytest.approx(
        1000.0 / (9.0 - 3.0)
    )
    # The observations find the episode end that the missing flag hid.
    obs = np.arange(5, dtype=np.float32)[:, None]
    next_obs = obs + 1
    next_obs[2] = 9.0  # transition 2 ends an episode: 3 does not follow from it
    found = reward_scale(
        rewards,
        no_timeouts,
        None,
        "returns",
        observations=obs,
        next_observations=next_obs,
    )
    assert found == pytest.approx(1000.0 / (10.0 - (-1.0)))
    # A single episode, or equal returns, leaves rewards as they are.
    with warns_at_test_line("one episode"):
        assert reward_scale(rewards, np.zeros(5), None, "returns") == 1.0
    equal = np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32)
    assert reward_scale(equal, np.ones(4), None, "returns") == 1.0


def test_reward_scale_returns_warns_about_shuffled_rows():
    from sklearn.model_selection import GroupKFold, KFold

    data = load_dataset("pendulum-medium-replay-v0")

    def scale(rows, timeouts=data.timeouts):
        return reward_scale(
            data.rewards[rows],
            data.terminals[rows],
            None if timeouts is None else timeouts[rows],
            "returns",
            observations=data.observations[rows],
            next_observations=data.next_observations[rows],
        )

    rows = np.arange(len(data.rewards))
    whole = scale(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # whole episodes: the same scale, with or without the time-limit flags
        assert scale(rows, timeouts=None) == pytest.approx(whole)
        train, _ = next(GroupKFold(3).split(rows, groups=data.episode_ids))
        scale(train)
    train, _ = next(KFold(3, shuffle=True, random_state=0).split(rows))
    with warns_at_test_line("fragments"):
        assert scale(train) > 3 * whole  # short fragments: a smaller spread
    # 20 folds drop one row in 20: with time limits flagged, still unexplained
    train, _ = next(KFold(20, shuffle=True, random_state=0).split(rows))
    with warns_at_test_line("fragments"):
        scale(train)
    # Short episodes whose ends are flagged are no fragments.
    n = 1000
    flags = np.arange(n) % 5 == 4
    obs = np.random.default_rng(0).normal(size=(n, 2))
    next_obs = np.roll(obs, -1, axis=0)
    next_obs[flags] += 10.0  # the step after an end starts a new episode
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reward_scale(
            np.arange(n, dtype=np.float32),
            np.zeros(n),
            flags,
            "returns",
            observations=obs,
            next_observations=next_obs,
        )


def test_observation_scaler_standardises():
    rng = np.random.default_rng(0)
    obs = (rng.normal(size=(200, 3)) * [1.0, 10.0, 0.1] + [5.0, -3.0, 0.0]).astype(
        np.float32
    )
    scaler = fit_observation_scaler(obs, True)
    z = scaler.transform(obs)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-4)


def test_observation_scaler_disabled_is_identity():
    obs = np.arange(12, dtype=np.float32).reshape(4, 3)
    scaler = fit_observation_scaler(obs, False)
    np.testing.assert_array_equal(scaler.transform(obs), obs)


@pytest.mark.parametrize("value", [0.0, 1.0, -77.0, 1234.5, 0.1, 3e4])
def test_observation_scaler_constant_features(value):
    rng = np.random.default_rng(0)
    obs = np.column_stack([rng.normal(size=100), np.full(100, value)]).astype(
        np.float32
    )
    scaler = fit_observation_scaler(obs, True)
    assert scaler.std[1] == 1.0
    z = scaler.transform(obs)
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(z[:, 1], 0.0, atol=1e-6)
    # A unit change of the constant feature stays a unit change.
    shifted = obs.copy()
    shifted[:, 1] += 1.0
    np.testing.assert_allclose(scaler.transform(shifted)[:, 1], 1.0, atol=1e-3)


def test_observation_scaler_constant_large_feature():
    obs = np.full((1000, 1), 1000000.3, dtype=np.float32)
    scaler = fit_observation_scaler(obs, True)
    assert scaler.std[0] == 1.0
    np.testing.assert_allclose(scaler.transform(obs), 0.0, atol=1e-6)
