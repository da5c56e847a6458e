"""Pickle, joblib and the safe safetensors format keep a model exactly."""

from __future__ import annotations

import copy
import io
import json
import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch

import sk_o2o
from conftest import warns_at_test_line
from sk_o2o import IQLPolicy


def _pickle(policy):
    return pickle.loads(pickle.dumps(policy))


def _joblib(policy):
    buffer = io.BytesIO()
    joblib.dump(policy, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


def _assert_same_model(a, b, data):
    X, y = data["observations"], data["actions"]
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(a.predict_value(X, y), b.predict_value(X, y))
    assert a.score(X) == b.score(X)
    assert a.n_features_in_ == b.n_features_in_
    assert a.action_dim_ == b.action_dim_
    assert a.n_updates_ == b.n_updates_
    assert a.history_ == b.history_
    assert a.reward_scale_ == b.reward_scale_


@pytest.fixture
def policy(fitted_policy):
    """A private copy of the shared fitted policy."""
    return copy.deepcopy(fitted_policy)


# --------------------------------------------------------------------- pickle/joblib
@pytest.mark.parametrize("round_trip", [_pickle, _joblib], ids=["pickle", "joblib"])
def test_round_trip_keeps_the_model(policy, transitions, round_trip):
    loaded = round_trip(policy)
    assert type(loaded) is IQLPolicy
    assert loaded.get_params() == policy.get_params()
    _assert_same_model(policy, loaded, transitions)
    assert len(loaded.buffer_) == len(policy.buffer_)
    assert loaded.device_ == torch.device("cpu")
    for a, b in zip(
        loaded.buffer_.sample(torch.arange(len(policy.buffer_))),
        policy.buffer_.sample(torch.arange(len(policy.buffer_))),
        strict=True,
    ):
        assert torch.equal(a, b)


@pytest.mark.parametrize("round_trip", [_pickle, _joblib], ids=["pickle", "joblib"])
def test_round_trip_continues_training_identically(policy, transitions, round_trip):
    loaded = round_trip(policy)
    new = {k: v[:12] for k, v in transitions.items()}
    policy.partial_fit(new, n_updates=6)
    loaded.partial_fit(new, n_updates=6)
    _assert_same_model(policy, loaded, transitions)
    # The generator state travels too: sampled actions match.
    X = transitions["observations"]
    np.testing.assert_array_equal(policy.sample_action(X), loaded.sample_action(X))
    # And the optimiser state: a fresh optimiser would have trained differently.
    fresh = round_trip(policy)
    fresh.core_.optimizer = torch.optim.Adam(
        [
            {"params": g["params"], "lr": g["lr"]}
            for g in fresh.core_.optimizer.param_groups
        ],
        fused=True,
    )
    policy.partial_fit(new, n_updates=6)
    fresh.partial_fit(new, n_updates=6)
    assert not np.array_equal(policy.predict(X), fresh.predict(X))


def test_pickle_of_unfitted_estimator(make_policy):
    policy = make_policy(beta=1.5)
    loaded = _pickle(policy)
    assert loaded.get_params() == policy.get_params()
    assert not hasattr(loaded, "core_")


def test_pickle_keeps_one_dimensional_actions(make_policy, transitions, fit_kwargs):
    policy = make_policy().fit(
        transitions["observations"],
        transitions["actions"][:, 0],
        **fit_kwargs(transitions),
    )
    loaded = _pickle(policy)
    X = transitions["observations"]
    assert loaded.predict(X).shape == (40,)
    np.testing.assert_array_equal(loaded.predict(X), policy.predict(X))


# --------------------------------------------------------------------- safetensors
def test_save_load_keeps_the_model(policy, transitions, tmp_path):
    path = tmp_path / "model.safetensors"
    policy.save(path)
    loaded = sk_o2o.load(path)
    assert type(loaded) is IQLPolicy
    _assert_same_model(policy, loaded, transitions)
    X = transitions["observations"]
    np.testing.assert_array_equal(loaded.sample_action(X), policy.sample_action(X))
    assert loaded.device_ == torch.device("cpu")
    assert not hasattr(loaded, "buffer_")  # not saved, by design
    # str paths work too.
    again = sk_o2o.load(str(path))
    np.testing.assert_array_equal(again.predict(X), policy.predict(X))


def test_save_to_a_missing_folder_names_the_path(policy, tmp_path):
    path = tmp_path / "missing" / "model.safetensors"
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors'.*does not exist"):
        policy.save(path)


def test_save_load_keeps_params(policy, tmp_path):
    policy.set_params(beta=1.25, expectile=0.8, gamma=0.95, action_bounds=None)
    path = tmp_path / "model.safetensors"
    policy.save(path)
    assert sk_o2o.load(path).get_params() == policy.get_params()


def test_save_load_with_given_action_bounds(make_policy, transitions, tmp_path):
    low, high = np.array([-2.0, -1.0]), np.array([2.0, 3.0])
    policy = make_policy(action_bounds=(low, high)).fit(transitions)
    path = tmp_path / "model.safetensors"
    policy.save(path)
    loaded = sk_o2o.load(path)
    np.testing.assert_array_equal(loaded.action_scaler_.low, low)
    np.testing.assert_array_equal(loaded.action_scaler_.high, high)
    _assert_same_model(policy, loaded, transitions)


def test_save_load_keeps_array_params(make_policy, transitions, tmp_path):
    # Arrays come back as arrays of the same dtype, not as lists.
    hidden = np.array([8, 8], dtype=np.int32)
    bounds = (np.array([-2.0, -1.0], np.float32), np.array([2.0, 3.0], np.float32))
    policy = make_policy(hidden_sizes=hidden, action_bounds=bounds).fit(transitions)
    path = tmp_path / "model.safetensors"
    policy.save(path)
    loaded = sk_o2o.load(path)
    for got, want in [
        (loaded.hidden_sizes, hidden),
        *zip(loaded.action_bounds, bounds, strict=True),
    ]:
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert isinstance(loaded.action_bounds, tuple)
    _assert_same_model(policy, loaded, transitions)


def test_saved_file_is_safetensors(policy, tmp_path):
    from safetensors import safe_open

    path = tmp_path / "model.safetensors"
    policy.save(path)
    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = f.metadata()
        keys = set(f.keys())
        mean = f.get_tensor("observation_mean")
    header = json.loads(metadata["sk_o2o"])
    assert header["class"] == "IQLPolicy"
    assert header["format_version"] == 1
    assert header["params"]["beta"] == policy.beta
    assert header["state"]["n_updates_"] == policy.n_updates_
    assert header["state"]["history_"] == policy.history_
    assert any(k.startswith("core.actor.") for k in keys)
    np.testing.assert_array_equal(mean.numpy(), policy.observation_scaler_.mean)
    # No pickle inside: the file starts with the safetensors header length.
    raw = path.read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{"
    json.loads(raw[8 : 8 + header_length])


def _write(path, tensors, header=None):
    from safetensors.torch import save_file

    metadata = None if header is None else {"sk_o2o": json.dumps(header)}
    save_file(tensors, str(path), metadata=metadata)


def _saved(policy, tmp_path):
    """The header and tensors of ``policy``'s saved file."""
    from safetensors import safe_open

    path = tmp_path / "model.safetensors"
    policy.save(path)
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return json.loads(f.metadata()["sk_o2o"]), {
            k: f.get_tensor(k) for k in f.keys()
        }


def test_load_refuses_foreign_class(policy, tmp_path):
    header, tensors = _saved(policy, tmp_path)
    for name in ("os.system", "BaseEstimator", "TorchEstimator", "print"):
        evil = tmp_path / "evil.safetensors"
        _write(evil, tensors, {**header, "class": name})
        with pytest.raises(ValueError, match=rf"unknown estimator class '{name}'"):
            sk_o2o.load(evil)


def test_load_refuses_foreign_safetensors(tmp_path):
    path = tmp_path / "weights.safetensors"
    _write(path, {"weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="is not an sk_o2o model file"):
        sk_o2o.load(path)


def test_load_refuses_unknown_format_version(policy, tmp_path):
    header, tensors = _saved(policy, tmp_path)
    future = tmp_path / "future.safetensors"
    _write(future, tensors, {**header, "format_version": 99})
    with pytest.raises(ValueError, match="unsupported sk_o2o model format 99"):
        sk_o2o.load(future)


def test_load_refuses_weights_of_another_version(policy, tmp_path):
    # e.g. a FamO2O file from before π_b's log-std became one number
    header, tensors = _saved(policy, tmp_path)
    assert header["sk_o2o_version"] == sk_o2o.__version__
    name = next(k for k in tensors if k.startswith("core."))
    tensors[name + "_renamed"] = tensors.pop(name)
    old = tmp_path / "old.safetensors"
    _write(old, tensors, {k: v for k, v in header.items() if k != "sk_o2o_version"})
    with pytest.raises(ValueError, match=r"do not fit IQLPolicy.*an earlier version"):
        sk_o2o.load(old)


def _without(mapping, key):
    return {k: v for k, v in mapping.items() if k != key}


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (lambda h: "not json", "damaged sk_o2o header"),
        (lambda h: [1, 2], "damaged sk_o2o header"),
        (lambda h: _without(h, "params"), "damaged sk_o2o header"),
        (lambda h: {**h, "params": {**h["params"], "foo": 1}}, "do not fit IQLPolicy"),
        (
            lambda h: {**h, "params": {**h["params"], "beta": "rm -rf"}},
            "'beta' parameter",
        ),
        (
            lambda h: {**h, "state": _without(h["state"], "n_features_in_")},
            "damaged fitted state.*n_features_in_",
        ),
        (lambda h: _without(h, "state"), "damaged fitted state"),
        (
            lambda h: {**h, "params": {**h["params"], "n_steps": None}},
            r"parameters in .*damaged.safetensors' are invalid.*n_steps",
        ),
        (
            lambda h: {**h, "params": {**h["params"], "device": {"__device__": "x"}}},
            "damaged sk_o2o header",
        ),
        (
            lambda h: {
                **h,
                "params": {**h["params"], "hidden_sizes": {"__tuple__": 3}},
            },
            "damaged sk_o2o header",
        ),
    ],
)
def test_load_refuses_a_damaged_header_with_a_value_error(
    policy, tmp_path, tamper, match
):
    header, tensors = _saved(policy, tmp_path)
    path = tmp_path / "damaged.safetensors"
    from safetensors.torch import save_file

    raw = tamper(header)
    save_file(
        tensors,
        str(path),
        metadata={"sk_o2o": raw if isinstance(raw, str) else json.dumps(raw)},
    )
    with pytest.raises(ValueError, match=match):
        sk_o2o.load(path)


def test_load_refuses_a_deeply_nested_header(policy, tmp_path):
    _, tensors = _saved(policy, tmp_path)
    path = tmp_path / "deep.safetensors"
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"sk_o2o": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(ValueError, match="damaged sk_o2o header"):
        sk_o2o.load(path)


def test_load_refuses_a_pickle(policy, tmp_path):
    path = tmp_path / "model.safetensors"
    with open(path, "wb") as f:
        pickle.dump(policy, f)
    with pytest.raises(ValueError, match=r"model.safetensors' is not a safetensors"):
        sk_o2o.load(path)


@pytest.mark.filterwarnings("ignore:this .* has no training data in its buffer")
def test_partial_fit_after_load(policy, transitions, tmp_path):
    path = tmp_path / "model.safetensors"
    policy.save(path)
    loaded = sk_o2o.load(path)
    X = transitions["observations"]
    before = loaded.predict(X)
    updates = loaded.n_updates_
    new = {k: v[:9] for k, v in transitions.items()}
    loaded.partial_fit(new, n_updates=5)  # log_interval: one record
    assert len(loaded.buffer_) == 9  # the buffer starts with the new transitions
    assert loaded.n_updates_ == updates + 5
    assert loaded.history_[-1] == {**loaded.history_[-1], "phase": "partial_fit"}
    assert not np.array_equal(loaded.predict(X), before)
    # Normalisation and bounds are the saved ones.
    np.testing.assert_array_equal(
        loaded.observation_scaler_.mean, policy.observation_scaler_.mean
    )
    np.testing.assert_array_equal(
        loaded.action_scaler_.high, policy.action_scaler_.high
    )


@pytest.mark.filterwarnings("ignore:this .* has no training data in its buffer")
@pytest.mark.parametrize("round_trip", ["save", "pickle"])
def test_a_loaded_model_remembers_the_parameters_it_was_fitted_with(
    make_policy, transitions, tmp_path, round_trip
):
    import gymnasium

    box = gymnasium.spaces.Box(-2.0, 2.0, (2,))
    policy = make_policy(action_bounds=box, device=torch.device("cpu"))
    policy.fit(transitions)
    policy.set_params(gamma=0.5)  # changed after fit, then saved
    if round_trip == "save":
        policy.save(tmp_path / "model.safetensors")
        loaded = sk_o2o.load(tmp_path / "model.safetensors")
    else:
        loaded = _pickle(policy)
    new = {k: v[:9] for k, v in transitions.items()}
    with pytest.raises(ValueError, match=r"changed gamma=0\.99 to 0\.5"):
        loaded.partial_fit(new, n_updates=1)
    # The Box and the torch device come back as themselves.
    assert loaded.action_bounds == box and loaded.device == torch.device("cpu")
    loaded.set_params(gamma=0.99).partial_fit(new, n_updates=1)


def test_a_pickle_from_before_the_parameter_check_trains_and_saves(
    policy, transitions, tmp_path
):
    for name in ("n_env_steps_", "_fitted_params", "_partial_fit_log"):
        del policy.__dict__[name]  # as pickled by a version without them
    old = _pickle(policy)
    assert old.n_env_steps_ == 0 and old._partial_fit_log is None
    new = {k: v[:9] for k, v in transitions.items()}
    old.set_params(gamma=0.5).partial_fit(new, n_updates=1)  # nothing to compare
    old.save(tmp_path / "model.safetensors")
    assert sk_o2o.load(tmp_path / "model.safetensors").n_updates_ == old.n_updates_


def test_save_refuses_unstorable_params(policy, tmp_path):
    policy = copy.deepcopy(policy).set_params(random_state=np.random.RandomState(0))
    with pytest.raises(TypeError, match=r"params\['random_state'\] \(a RandomState\)"):
        policy.save(tmp_path / "model.safetensors")
    assert not (tmp_path / "model.safetensors").exists()


# --------------------------------------------------------------------- devices
def test_cuda_pickle_loads_on_cpu(policy, transitions):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    X = transitions["observations"]
    expected = policy.predict(X)
    policy.device = "cuda"  # as if it had been trained on a GPU
    payload = pickle.dumps(policy)
    with warns_at_test_line(r"device='cuda'.*on the CPU"):
        loaded = pickle.loads(payload)
    assert loaded.device_ == torch.device("cpu")
    assert loaded.device == "cuda"
    np.testing.assert_array_equal(loaded.predict(X), expected)
    assert next(loaded.core_.parameters()).device.type == "cpu"
    assert loaded.buffer_.device.type == "cpu"
    # It keeps training on the CPU.
    loaded.partial_fit({k: v[:5] for k, v in transitions.items()}, n_updates=2)
    assert loaded.n_updates_ == policy.n_updates_ + 2


def test_cuda_joblib_loads_on_cpu(policy, transitions):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    policy.device = "cuda:1"
    with pytest.warns(UserWarning, match="on the CPU"):
        loaded = _joblib(policy)
    X = transitions["observations"]
    np.testing.assert_array_equal(loaded.predict(X), policy.predict(X))


def test_cuda_save_loads_on_cpu(policy, transitions, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    X = transitions["observations"]
    policy.device = "cuda"
    path = tmp_path / "model.safetensors"
    policy.save(path)
    with warns_at_test_line(r"device='cuda'.*on the CPU"):
        loaded = sk_o2o.load(path)
    assert loaded.device_ == torch.device("cpu")
    np.testing.assert_array_equal(loaded.predict(X), policy.predict(X))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        overridden = sk_o2o.load(path, device="cpu")
    assert overridden.device == "cpu"
    assert overridden.device_ == torch.device("cpu")
    np.testing.assert_array_equal(overridden.predict(X), policy.predict(X))
    # With the override the model can be refitted on this machine.
    overridden.fit(transitions)
    assert overridden.n_updates_ == overridden.n_steps
