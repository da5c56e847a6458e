"""Bad input is refused with an error that names the argument (and the bad row)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from sk_o2o.data import as_transitions

N = 20


@pytest.fixture(scope="module")
def data(make_transitions):
    return make_transitions(n=N, obs_dim=3, act_dim=2, seed=3)


def _arrays(data):
    return {
        "X": data["observations"].copy(),
        "y": data["actions"].copy(),
        "rewards": data["rewards"].copy(),
        "next_observations": data["next_observations"].copy(),
        "terminals": data["terminals"].copy(),
        "timeouts": data["timeouts"].copy(),
    }


def _call(func, arrays):
    arrays = dict(arrays)
    return func(arrays.pop("X"), arrays.pop("y"), **arrays)


# --------------------------------------------------------------------- NaN and inf
@pytest.mark.parametrize("name", ["X", "y", "rewards", "next_observations", "timeouts"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["as_transitions", "fit"])
def test_non_finite_values_are_refused(data, make_policy, name, bad, where):
    arrays = _arrays(data)
    index = 7
    value = arrays[name]
    if value.ndim == 2:
        value[index, -1] = bad
    else:
        value[index] = bad
    value[index + 3] = bad  # the message names the first bad index only
    func = as_transitions if where == "as_transitions" else make_policy().fit
    with pytest.raises(ValueError, match=rf"^{name} contains NaN.*index {index}\b"):
        _call(func, arrays)


def test_non_finite_terminals_are_refused(data):
    arrays = _arrays(data)
    arrays["terminals"][4] = np.nan
    with pytest.raises(ValueError, match=r"terminals.*index 4\b"):
        _call(as_transitions, arrays)


# --------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "name", ["rewards", "next_observations", "terminals", "timeouts"]
)
def test_mismatched_lengths(data, make_policy, name):
    arrays = _arrays(data)
    arrays[name] = arrays[name][:-1]
    with pytest.raises(ValueError, match=rf"^{name} has {N - 1} entries.*X has {N}"):
        _call(as_transitions, arrays)
    with pytest.raises(ValueError, match=rf"^{name} has {N - 1} entries"):
        _call(make_policy().fit, arrays)


def test_mismatched_y_length_names_y(data):
    arrays = _arrays(data)
    arrays["y"] = arrays["y"][:-1]
    with pytest.raises(ValueError, match=rf"^y has {N - 1} entries but X has {N}"):
        _call(as_transitions, arrays)


def test_next_observations_feature_count(data, make_policy):
    arrays = _arrays(data)
    arrays["next_observations"] = arrays["next_observations"][:, :2]
    with pytest.raises(ValueError, match=r"^next_observations has 2 features.*X has 3"):
        _call(as_transitions, arrays)
    with pytest.raises(ValueError, match=r"^next_observations has 2 features"):
        _call(make_policy().fit, arrays)


def test_two_dimensional_rewards_are_refused(data):
    arrays = _arrays(data)
    arrays["rewards"] = np.column_stack([arrays["rewards"], arrays["rewards"]])
    with pytest.raises(ValueError, match=r"^rewards must be one-dimensional"):
        _call(as_transitions, arrays)


@pytest.mark.parametrize("name", ["terminals", "timeouts"])
@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0])
def test_flags_must_be_binary(data, make_policy, name, bad):
    arrays = _arrays(data)
    arrays[name][5] = bad
    with pytest.raises(ValueError, match=rf"^{name} must hold 0/1.*index 5 is"):
        _call(as_transitions, arrays)
    with pytest.raises(ValueError, match=rf"^{name} must hold 0/1"):
        _call(make_policy().fit, arrays)


@pytest.mark.parametrize("missing", ["rewards", "next_observations", "terminals"])
def test_partial_rl_arguments_are_refused(data, make_policy, missing):
    arrays = _arrays(data)
    arrays[missing] = None
    with pytest.raises(ValueError, match=rf"the transitions need {missing}"):
        _call(as_transitions, arrays)
    with pytest.raises(ValueError, match=rf"the transitions need {missing}"):
        _call(make_policy().fit, arrays)


def test_observations_without_y_are_refused(data, make_policy):
    with pytest.raises(ValueError, match=r"requires y\b.*y is None"):
        make_policy().fit(data["observations"])


# --------------------------------------------------------------------- datasets
@pytest.mark.parametrize(
    "extra",
    [
        {"y": np.zeros(N)},
        {"rewards": np.zeros(N)},
        {"terminals": np.zeros(N)},
        {"timeouts": np.zeros(N)},
    ],
)
def test_dataset_plus_arrays_is_refused(data, make_policy, extra):
    (name,) = extra
    with pytest.raises(ValueError, match=rf"whole dataset, so {name} must not"):
        as_transitions(data, **extra)
    policy = make_policy()
    with pytest.raises(ValueError, match=rf"whole dataset, so {name} must not"):
        policy.fit(data, **extra)
    assert not hasattr(policy, "core_")


def test_dataset_path_plus_y_is_refused(tmp_path, data, make_policy):
    path = tmp_path / "data.npz"
    np.savez(path, **data)
    with pytest.raises(ValueError, match="whole dataset, so y must not"):
        make_policy().fit(path, data["actions"])


@pytest.mark.parametrize("missing", ["actions", "rewards", "next_observations"])
def test_mapping_missing_keys(data, make_policy, missing):
    incomplete = {k: v for k, v in data.items() if k != missing}
    with pytest.raises(ValueError, match=rf"lacks the D4RL key\(s\) \['{missing}'\]"):
        as_transitions(incomplete)
    with pytest.raises(ValueError, match=missing):
        make_policy().fit(incomplete)


def test_npz_missing_keys(tmp_path, data):
    path = tmp_path / "data.npz"
    np.savez(path, **{k: v for k, v in data.items() if k != "terminals"})
    with pytest.raises(ValueError, match=r"lacks the D4RL key\(s\) \['terminals'\]"):
        as_transitions(path)


def test_non_existing_path(tmp_path, make_policy):
    path = tmp_path / "nowhere.npz"
    with pytest.raises(ValueError, match=r"nowhere\.npz.*does not exist"):
        as_transitions(path)
    with pytest.raises(ValueError, match=r"nowhere\.npz.*does not exist"):
        make_policy().fit(str(path))


@pytest.mark.parametrize("suffix", [".csv", ".pkl", ""])
def test_wrong_extension(tmp_path, make_policy, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_text("observations\n")
    with pytest.raises(ValueError, match=r"must end in \.npz, \.hdf5 or \.h5"):
        as_transitions(path)
    with pytest.raises(ValueError, match=r"must end in \.npz"):
        make_policy().fit(path)


# --------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("beta", -1.0),
        ("reward_scaling", "bogus"),
        ("expectile", 1.5),
        ("expectile", 0.0),
        ("n_steps", -1),
        ("batch_size", 0),
        ("gamma", 1.5),
        ("tau", 0.0),
        ("actor_lr", 0.0),
        ("log_interval", 0),
        ("normalize_observations", "yes"),
    ],
)
def test_invalid_parameters(data, make_policy, fit_kwargs, param, value):
    policy = make_policy(**{param: value})
    with pytest.raises(ValueError, match=rf"'{param}' parameter"):
        policy.fit(data["observations"], data["actions"], **fit_kwargs(data))
    assert not hasattr(policy, "core_")
    with pytest.raises(ValueError, match=rf"'{param}' parameter"):
        make_policy(**{param: value}).partial_fit(
            data["observations"], data["actions"], **fit_kwargs(data)
        )


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x"])
def test_unknown_device(data, make_policy, fit_kwargs, device):
    policy = make_policy(device=device)
    with pytest.raises(ValueError, match=rf"device='{device}'"):
        policy.fit(data["observations"], data["actions"], **fit_kwargs(data))
    assert not hasattr(policy, "core_")


def test_device_of_wrong_type(data, make_policy, fit_kwargs):
    with pytest.raises((TypeError, ValueError), match="device"):
        make_policy(device=0).fit(
            data["observations"], data["actions"], **fit_kwargs(data)
        )


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_missing_cuda_device(data, make_policy, fit_kwargs, device):
    import torch

    if torch.cuda.is_available() and device != "cuda:3":
        pytest.skip("this machine has a CUDA device")
    if torch.cuda.device_count() > 3:
        pytest.skip("this machine has 4+ CUDA devices")
    with pytest.raises(ValueError, match=rf"device='{device}' was requested"):
        make_policy(device=device).fit(
            data["observations"], data["actions"], **fit_kwargs(data)
        )


@pytest.mark.parametrize("hidden", [(), (16.5,), (True, 8), (8, 0), ("8",)])
def test_bad_hidden_sizes(data, make_policy, fit_kwargs, hidden):
    with pytest.raises(ValueError, match="hidden_sizes"):
        make_policy(hidden_sizes=hidden).fit(
            data["observations"], data["actions"], **fit_kwargs(data)
        )
    # numpy integers are ints
    make_policy(hidden_sizes=np.array([4, 4])).fit(
        data["observations"], data["actions"], **fit_kwargs(data)
    )


# --------------------------------------------------------------------- fitted state
@pytest.mark.parametrize("method", ["predict", "sample_action", "score"])
def test_not_fitted(data, make_policy, method):
    with pytest.raises(NotFittedError):
        getattr(make_policy(), method)(data["observations"])


def test_predict_value_not_fitted(data, make_policy):
    with pytest.raises(NotFittedError):
        make_policy().predict_value(data["observations"], data["actions"])


def test_save_not_fitted(tmp_path, make_policy):
    with pytest.raises(NotFittedError):
        make_policy().save(tmp_path / "model.safetensors")


@pytest.mark.parametrize("method", ["predict", "sample_action", "score"])
def test_predict_with_wrong_feature_count(fitted_policy, method):
    with pytest.raises(ValueError, match=r"X has 4 features.*expecting 3"):
        getattr(fitted_policy, method)(np.zeros((5, 4)))


@pytest.mark.parametrize("method", ["predict", "sample_action"])
def test_predict_with_non_finite_X(fitted_policy, method):
    X = np.zeros((6, 3))
    X[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"^X contains NaN.*index 4\b"):
        getattr(fitted_policy, method)(X)


def test_predict_value_checks_y(fitted_policy):
    X = np.zeros((6, 3))
    with pytest.raises(ValueError, match=r"^y has 3 action dimensions.*fitted with 2"):
        fitted_policy.predict_value(X, np.zeros((6, 3)))
    y = np.zeros((6, 2))
    y[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"^y contains NaN.*index 2\b"):
        fitted_policy.predict_value(X, y)


@pytest.mark.parametrize("y", [1.0, np.zeros((6, 2, 1))])
def test_predict_value_refuses_y_of_other_ranks(fitted_policy, y):
    with pytest.raises(ValueError, match=r"^y must be 1-D or 2-D"):
        fitted_policy.predict_value(np.zeros((6, 3)), y)


def test_next_observations_columns_must_match_X(data, make_policy):
    pd = pytest.importorskip("pandas")
    arrays = _arrays(data)
    arrays["X"] = pd.DataFrame(arrays["X"], columns=["a", "b", "c"])
    arrays["next_observations"] = pd.DataFrame(
        arrays["next_observations"], columns=["a", "b", "c"]
    )[["c", "b", "a"]]
    with pytest.raises(ValueError, match=r"^next_observations has columns"):
        _call(make_policy().fit, arrays)


def test_predict_value_length_mismatch_names_y(fitted_policy):
    with pytest.raises(ValueError, match=r"^y has 7 actions but X has 6"):
        fitted_policy.predict_value(np.zeros((6, 3)), np.zeros((7, 2)))


def test_partial_fit_different_action_dimension(fitted_policy, make_transitions):
    policy = copy.deepcopy(fitted_policy)
    new = make_transitions(n=10, obs_dim=3, act_dim=3, seed=1)
    before = policy.predict(new["observations"])
    with pytest.raises(ValueError, match=r"^y has 3 action dimensions.*fitted with 2"):
        policy.partial_fit(
            new["observations"],
            new["actions"],
            rewards=new["rewards"],
            next_observations=new["next_observations"],
            terminals=new["terminals"],
        )
    assert len(policy.buffer_) == len(fitted_policy.buffer_)
    np.testing.assert_array_equal(policy.predict(new["observations"]), before)


def test_partial_fit_different_feature_count(fitted_policy, make_transitions):
    policy = copy.deepcopy(fitted_policy)
    new = make_transitions(n=10, obs_dim=4, act_dim=2, seed=1)
    with pytest.raises(ValueError, match=r"X has 4 features.*expecting 3"):
        policy.partial_fit(new)
    assert len(policy.buffer_) == len(fitted_policy.buffer_)


@pytest.mark.parametrize("n_updates", [-1, 1.5, "3", True])
def test_partial_fit_invalid_n_updates(fitted_policy, transitions, n_updates):
    policy = copy.deepcopy(fitted_policy)
    with pytest.raises((TypeError, ValueError), match="n_updates"):
        policy.partial_fit(transitions, n_updates=n_updates)
    assert len(policy.buffer_) == len(fitted_policy.buffer_)
    assert policy.n_updates_ == fitted_policy.n_updates_


# --------------------------------------------------------------------- action bounds
def test_actions_outside_given_bounds(data, make_policy, fit_kwargs):
    actions = data["actions"].copy()
    actions[6, 1] = 1.5
    actions[9, 0] = -3.0
    with pytest.raises(ValueError, match=r"^y holds actions outside.*index 6\b"):
        make_policy(action_bounds=(-1.0, 1.0)).fit(
            data["observations"], actions, **fit_kwargs(data)
        )


def test_partial_fit_actions_outside_fitted_bounds(fitted_policy, transitions):
    policy = copy.deepcopy(fitted_policy)
    new = {k: v[:8].copy() for k, v in transitions.items()}
    new["actions"][3] = policy.action_scaler_.high + 1.0
    with pytest.raises(ValueError, match=r"^y holds actions outside.*index 3\b") as e:
        policy.partial_fit(new)
    assert len(policy.buffer_) == len(fitted_policy.buffer_)
    # Bounds taken from the data: the message says how to widen them.
    assert "action_bounds=env.action_space" in str(e.value)


@pytest.mark.parametrize(
    "bounds",
    [
        (1.0, -1.0),
        (0.0, 0.0),
        (-np.inf, 1.0),
        "box",
        (1.0,),
        (np.zeros(3), np.ones(3)),  # the data have 2 action dimensions
        ("a", "b"),
    ],
)
def test_malformed_action_bounds(data, make_policy, fit_kwargs, bounds):
    with pytest.raises(ValueError, match="action_bounds"):
        make_policy(action_bounds=bounds).fit(
            data["observations"], data["actions"], **fit_kwargs(data)
        )


def test_infinite_action_bounds_name_the_dimension(data, make_policy, fit_kwargs):
    bounds = ([-1.0, -np.inf], [1.0, 1.0])  # the data have 2 action dimensions
    with pytest.raises(ValueError, match="first infinite at dimension 1"):
        make_policy(action_bounds=bounds).fit(
            data["observations"], data["actions"], **fit_kwargs(data)
        )


# --------------------------------------------------------------------- failed fit
def _snapshot(policy, X):
    return {
        "predict": policy.predict(X),
        "keys": set(vars(policy)),
        "n_updates_": policy.n_updates_,
        "history_": copy.deepcopy(policy.history_),
        "buffer": len(policy.buffer_),
        "n_features_in_": policy.n_features_in_,
        "params": policy.get_params(),
    }


def _assert_unchanged(policy, X, snapshot):
    after = _snapshot(policy, X)
    np.testing.assert_array_equal(after.pop("predict"), snapshot["predict"])
    assert after == {k: v for k, v in snapshot.items() if k != "predict"}


def _nan_data(data):
    arrays = _arrays(data)
    arrays["rewards"][3] = np.nan
    return arrays


def test_failed_fit_leaves_fitted_estimator_unchanged(fitted_policy, data):
    policy = copy.deepcopy(fitted_policy)
    X = data["observations"]
    snapshot = _snapshot(policy, X)
    # Different feature count: validate_data resets n_features_in_ before failing.
    bad = _nan_data(data)
    bad["X"] = np.column_stack([bad["X"], bad["X"]])
    bad["next_observations"] = np.column_stack(
        [bad["next_observations"], bad["next_observations"]]
    )
    with pytest.raises(ValueError, match="rewards contains NaN"):
        _call(policy.fit, bad)
    _assert_unchanged(policy, X, snapshot)
    with pytest.raises(ValueError, match="rewards contains NaN"):
        _call(policy.fit, _nan_data(data))
    _assert_unchanged(policy, X, snapshot)


@pytest.mark.filterwarnings("ignore:next_observations")  # X shifted, not them
def test_failed_fit_after_initialisation_restores(fitted_policy, data, fit_kwargs):
    # hidden_sizes=() fails in _make_core, after the scalers have been refitted.
    policy = copy.deepcopy(fitted_policy)
    X = data["observations"]
    snapshot = _snapshot(policy, X)
    policy.set_params(hidden_sizes=())
    snapshot["params"]["hidden_sizes"] = ()
    shifted = data["observations"] * 10.0 + 5.0
    with pytest.raises(ValueError, match="hidden_sizes"):
        policy.fit(shifted, data["actions"] * 0.5, **fit_kwargs(data))
    _assert_unchanged(policy, X, snapshot)


@pytest.mark.parametrize(
    ("params", "make_data", "match"),
    [
        ({}, _nan_data, "rewards contains NaN"),
        # parameters set since fit are validated on every partial_fit call
        ({"beta": float("nan")}, _arrays, "beta"),
    ],
)
def test_failed_partial_fit_leaves_fitted_estimator_unchanged(
    fitted_policy, data, params, make_data, match
):
    policy = copy.deepcopy(fitted_policy).set_params(**params)
    X = data["observations"]
    snapshot = _snapshot(policy, X)
    with pytest.raises(ValueError, match=match):
        _call(policy.partial_fit, make_data(data))
    _assert_unchanged(policy, X, snapshot)


def test_failed_first_fit_leaves_estimator_unfitted(data, make_policy):
    policy = make_policy()
    keys = set(vars(policy))
    with pytest.raises(ValueError, match="rewards contains NaN"):
        _call(policy.fit, _nan_data(data))
    assert set(vars(policy)) == keys
    with pytest.raises(NotFittedError):
        policy.predict(data["observations"])


# --------------------------------------------------------------------------- float parameters
def _float_parameters():
    from numbers import Real

    from sklearn.utils._param_validation import Interval

    import sk_o2o.unlearning as unlearning
    from sk_o2o import FamO2OPolicy, IQLPolicy, TD3BCPolicy

    estimators = [IQLPolicy, TD3BCPolicy, FamO2OPolicy]
    estimators += [getattr(unlearning, name) for name in unlearning.__all__]
    for cls in estimators:
        for name, constraints in getattr(cls, "_parameter_constraints", {}).items():
            if any(
                c is Real or (isinstance(c, Interval) and c.type is Real)
                for c in constraints
            ):
                yield pytest.param(cls, name, id=f"{cls.__name__}-{name}")


@pytest.mark.parametrize(("cls", "name"), list(_float_parameters()))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_parameters_refuse_nan_and_infinity(cls, name, bad, data):
    # target_entropy=nan once fitted a FamO2OPolicy whose actions were all NaN.
    from sk_o2o.unlearning import BaseUnlearner

    X, y = data["observations"], data["actions"]
    if issubclass(cls, BaseUnlearner):
        estimator = cls(**{name: bad})
    else:  # should the parameter pass, a short fit
        estimator = cls(**{name: bad, "n_steps": 2, "batch_size": 8})
    with pytest.raises(ValueError, match=f"'{name}' parameter"):
        if issubclass(cls, BaseUnlearner):
            estimator.fit(X, (y[:, 0] > 0).astype(int))
        else:
            estimator.fit(data)
