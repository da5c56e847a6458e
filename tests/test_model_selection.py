"""GridSearchCV, Pipeline and the scorers on the shipped Pendulum data."""

from __future__ import annotations

import warnings

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from sk_o2o import IQLPolicy
from sk_o2o.data.transitions import episode_ids
from sk_o2o.datasets import load_dataset, normalized_score
from sk_o2o.metrics import (
    initial_state_value_scorer,
    make_env_return_scorer,
    td_error_scorer,
)

FAST = {"n_steps": 30, "hidden_sizes": (32, 32), "device": "cpu", "random_state": 0}


@pytest.fixture(scope="module")
def pendulum():
    data = load_dataset("pendulum-medium-replay-v0")
    X, y = data.observations, data.actions
    params = {
        "rewards": data.rewards,
        "next_observations": data.next_observations,
        "terminals": data.terminals,
        "timeouts": data.timeouts,
    }
    return X, y, params, data.episode_ids


def test_grid_search_over_beta_with_group_kfold(pendulum):
    pytest.importorskip("gymnasium")
    X, y, params, groups = pendulum
    scorer = make_env_return_scorer("Pendulum-v1", n_episodes=2)
    search = GridSearchCV(
        IQLPolicy(**FAST), {"beta": [0.5, 3.0]}, cv=GroupKFold(2), scoring=scorer
    )
    search.fit(X, y, groups=groups, **params)
    assert search.cv_results_["param_beta"].tolist() == [0.5, 3.0]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_params_["beta"] in (0.5, 3.0)
    assert search.best_estimator_.n_updates_ == FAST["n_steps"]
    assert search.predict(X[:5]).shape == (5, 1)


def test_default_score_is_the_policy_value_estimate(pendulum):
    X, y, params, _ = pendulum
    search = GridSearchCV(IQLPolicy(**FAST), {"expectile": [0.6, 0.8]}, cv=2)
    search.fit(X, y, **params)
    policy = search.best_estimator_
    assert search.score(X) == pytest.approx(policy.score(X))
    # score is the critics' estimate of the policy's own actions, mean Q(s, π(s))
    own_value = policy.predict_value(X, policy.predict(X)).mean()
    assert policy.score(X) == pytest.approx(own_value, rel=1e-5)


def test_default_score_takes_sample_weight_as_scikit_learn_does(pendulum):
    X, y, params, _ = pendulum
    policy = IQLPolicy(**FAST).fit(X, y, **params)
    values = policy.predict_value(X[:3], policy.predict(X[:3]))
    assert policy.score(X[:3], sample_weight=np.ones(3)) == pytest.approx(
        policy.score(X[:3])
    )
    assert policy.score(X[:3], sample_weight=[0.0, 2.0, 0.0]) == pytest.approx(
        values[1], rel=1e-5
    )
    for bad in ([1.0, 1.0], [1.0, -1.0, 1.0], [0.0, 0.0, 0.0], [1.0, np.nan, 1.0]):
        with pytest.raises(ValueError, match="sample_weight"):
            policy.score(X[:3], sample_weight=bad)
    # Pipeline.score hands sample_weight on (as None) when routing is enabled
    pipe = make_pipeline(FunctionTransformer(), IQLPolicy(**FAST))
    pipe.fit(X, y, **{f"iqlpolicy__{k}": v for k, v in params.items()})
    with sklearn.config_context(enable_metadata_routing=True):
        assert pipe.score(X) == pytest.approx(pipe[-1].score(X))


def test_offline_scorers_receive_metadata_through_routing(pendulum):
    X, y, params, groups = pendulum
    with sklearn.config_context(enable_metadata_routing=True):
        results = cross_validate(
            IQLPolicy(**FAST),
            X,
            y,
            cv=GroupKFold(2),
            scoring={"td": td_error_scorer, "v0": initial_state_value_scorer},
            params={**params, "groups": groups},
        )
    assert (results["test_td"] < 0).all()  # negated squared TD error
    assert np.isfinite(results["test_v0"]).all()


def test_offline_scorer_without_routing_explains_what_to_do(pendulum):
    X, y, params, _ = pendulum
    policy = IQLPolicy(**FAST).fit(X, y, **params)
    with pytest.raises(ValueError, match="enable_metadata_routing"):
        td_error_scorer(policy, X, y)
    score = td_error_scorer(policy, X, y, **params)
    assert score < 0
    # The TD target uses the γ the critics were trained with.
    policy.set_params(gamma=0.5)
    assert td_error_scorer(policy, X, y, **params) == score


def _with_angle(obs):
    """Pendulum features plus the angle itself (a stateless feature map)."""
    return np.column_stack([obs, np.arctan2(obs[:, 1], obs[:, 0])])


def test_pipeline_matches_the_estimator_on_transformed_features(pendulum):
    X, y, params, _ = pendulum
    features = FunctionTransformer(_with_angle)
    pipe = make_pipeline(features, IQLPolicy(**FAST))
    # Next observations must go through the same map: Pipeline passes fit
    # parameters to the final step untouched.
    step_params = {f"iqlpolicy__{k}": v for k, v in params.items()}
    step_params["iqlpolicy__next_observations"] = _with_angle(
        params["next_observations"]
    )
    pipe.fit(X, y, **step_params)
    direct = IQLPolicy(**FAST).fit(
        _with_angle(X),
        y,
        **{**params, "next_observations": _with_angle(params["next_observations"])},
    )
    np.testing.assert_array_equal(
        pipe.predict(X[:20]), direct.predict(_with_angle(X[:20]))
    )
    assert pipe[-1].n_features_in_ == 4
    # the scorers see through the Pipeline, taking next observations as fit did
    mapped = {**params, "next_observations": _with_angle(params["next_observations"])}
    assert td_error_scorer(pipe, X, y, **mapped) == pytest.approx(
        td_error_scorer(direct, _with_angle(X), y, **mapped)
    )
    with pytest.raises(ValueError, match="next_observations has 3 features"):
        td_error_scorer(pipe, X, y, **params)  # unmapped: refused, not mis-scored
    alone = make_pipeline(IQLPolicy(**FAST)).fit(
        X, y, **{f"iqlpolicy__{k}": v for k, v in params.items()}
    )
    assert np.isfinite(td_error_scorer(alone, X, y, **params))


def test_a_scaler_step_before_the_policy_is_flagged(pendulum):
    X, y, params, _ = pendulum
    pipe = make_pipeline(StandardScaler(), IQLPolicy(**FAST))
    step_params = {f"iqlpolicy__{k}": v for k, v in params.items()}
    with pytest.warns(UserWarning, match="a Pipeline transforms X but passes"):
        pipe.fit(X, y, **step_params)


def test_offline_scorers_check_feature_names(pendulum):
    pd = pytest.importorskip("pandas")
    X, y, params, _ = pendulum
    names = ["cos", "sin", "velocity"]
    frame = pd.DataFrame(X, columns=names)
    policy = IQLPolicy(**FAST).fit(frame, y, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names"
        score = td_error_scorer(policy, frame, y, **params)
    assert np.isfinite(score)
    with pytest.raises(ValueError, match="feature names"):
        td_error_scorer(policy, frame[names[::-1]], y, **params)


@pytest.mark.parametrize(("seed", "error"), [(-1, ValueError), (2.9, TypeError)])
def test_env_return_scorer_checks_its_seed(seed, error):
    with pytest.raises(error, match="seed"):
        make_env_return_scorer("Pendulum-v1", seed=seed)


def test_offline_scorers_compute_their_formulas(make_transitions):
    # terminals, rewards far from 0 and an unscaled γ = 0.9, so that a scorer
    # ignoring terminals, using another γ or other states would score otherwise
    data = make_transitions(n=60)
    data["rewards"] = data["rewards"] + 2.0
    policy = IQLPolicy(
        n_steps=100,
        hidden_sizes=(16,),
        gamma=0.9,
        reward_scaling="none",
        random_state=0,
    ).fit(data)
    X, y, next_X = data["observations"], data["actions"], data["next_observations"]
    params = {
        k: data[k] for k in ("rewards", "next_observations", "terminals", "timeouts")
    }
    next_q = policy.predict_value(next_X, policy.predict(next_X))
    target = data["rewards"] + 0.9 * (1 - data["terminals"]) * next_q
    td_error = np.mean((policy.predict_value(X, y) - target) ** 2)
    assert td_error_scorer(policy, X, y, **params) == pytest.approx(-td_error, rel=1e-5)
    ids = episode_ids(data["terminals"], data["timeouts"])
    starts = X[np.r_[True, ids[1:] != ids[:-1]]]
    assert len(starts) == 6  # episodes of 10 steps
    value = policy.predict_value(starts, policy.predict(starts)).mean()
    score = initial_state_value_scorer(policy, X, y, **params)
    assert score == pytest.approx(value, rel=1e-5)


def test_env_return_scorer_normalises_with_the_reference_returns(pendulum):
    pytest.importorskip("gymnasium")
    X, y, params, _ = pendulum
    policy = IQLPolicy(**FAST).fit(X, y, **params)
    raw = make_env_return_scorer("Pendulum-v1", n_episodes=1)(policy, X, y)
    scorer = make_env_return_scorer(
        "Pendulum-v1", n_episodes=1, reference_returns=(-1500.0, -150.0)
    )
    expected = normalized_score(raw, -1500.0, -150.0)
    assert expected == pytest.approx(100 * (raw + 1500.0) / 1350.0)
    assert scorer(policy, X, y) == pytest.approx(expected)


def test_threaded_grid_search_equals_the_sequential_one(pendulum):
    """joblib's threading backend fits and scores in threads of one process: the
    fits share torch's global generator and the scorer its env instance."""
    gymnasium = pytest.importorskip("gymnasium")
    X, y, params, groups = pendulum
    env = gymnasium.make("Pendulum-v1")
    scorer = make_env_return_scorer(env, n_episodes=2)

    def searched(n_jobs):
        search = GridSearchCV(
            IQLPolicy(**FAST),
            {"beta": [0.5, 3.0, 10.0]},
            cv=GroupKFold(2),
            scoring=scorer,
            n_jobs=n_jobs,
        )
        with joblib.parallel_backend("threading"):
            return search.fit(X, y, groups=groups, **params)

    sequential, threaded = searched(1), searched(3)
    np.testing.assert_array_equal(
        threaded.cv_results_["split0_test_score"],
        sequential.cv_results_["split0_test_score"],
    )
    np.testing.assert_array_equal(
        threaded.cv_results_["mean_test_score"],
        sequential.cv_results_["mean_test_score"],
    )
    np.testing.assert_array_equal(
        threaded.best_estimator_.predict(X), sequential.best_estimator_.predict(X)
    )
