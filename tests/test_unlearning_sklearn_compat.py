"""scikit-learn's estimator checks on every unlearner."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from sk_o2o.unlearning import (
    FAMRUnlearner,
    FinetuneUnlearner,
    NegGradUnlearner,
    RandomLabelUnlearner,
    RetrainUnlearner,
    SSDUnlearner,
    make_classifier_net,
)

# Each entry says why the check cannot pass.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


def _small(cls, **params):
    net = make_classifier_net(max_epochs=20, lr=1e-2, batch_size=32)
    return cls(estimator=net, device="cpu", random_state=0, **params)


@parametrize_with_checks(
    [
        _small(FAMRUnlearner),
        _small(RetrainUnlearner),
        _small(FinetuneUnlearner),
        _small(NegGradUnlearner),
        _small(RandomLabelUnlearner),
        _small(SSDUnlearner),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible_unlearner(estimator, check):
    check(estimator)
