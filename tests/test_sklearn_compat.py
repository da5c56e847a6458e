"""scikit-learn's own estimator checks, run on every public estimator."""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from sk_o2o import FamO2OPolicy, IQLPolicy, TD3BCPolicy

# Each entry says why the check cannot pass for an RL policy.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


def _small(estimator):
    return estimator.set_params(
        n_steps=20, batch_size=16, hidden_sizes=(16,), device="cpu", random_state=0
    )


@pytest.mark.filterwarnings("ignore:fit got no rewards:UserWarning")
@parametrize_with_checks(
    [
        _small(IQLPolicy()),
        _small(FamO2OPolicy()),
        _small(FamO2OPolicy(algo="td3bc")),
        _small(TD3BCPolicy()),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
