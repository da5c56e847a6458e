"""Post-hoc unlearning of torch classifiers: FAMR and its baselines.

Every unlearner is a scikit-learn classifier around a skorch net: ``fit`` trains
it, ``unlearn(X_forget)`` or ``unlearn_classes(classes, X, y)`` makes it forget,
and :func:`evaluate_unlearning` measures how well it did.
"""

from sk_o2o.unlearning.base import BaseUnlearner, unlearn_pipeline
from sk_o2o.unlearning.estimators import (
    FAMRUnlearner,
    FinetuneUnlearner,
    NegGradUnlearner,
    RandomLabelUnlearner,
    RetrainUnlearner,
    SSDUnlearner,
)
from sk_o2o.unlearning.metrics import (
    evaluate_unlearning,
    membership_inference_score,
    mia_features,
)
from sk_o2o.unlearning.networks import MLPClassifierModule, make_classifier_net

__all__ = [
    "BaseUnlearner",
    "FAMRUnlearner",
    "FinetuneUnlearner",
    "MLPClassifierModule",
    "NegGradUnlearner",
    "RandomLabelUnlearner",
    "RetrainUnlearner",
    "SSDUnlearner",
    "evaluate_unlearning",
    "make_classifier_net",
    "membership_inference_score",
    "mia_features",
    "unlearn_pipeline",
]
