"""How well a model forgot: accuracies on the three sets and membership inference.

Work with any fitted classifier that has ``predict_proba`` and ``classes_`` (an
unlearner, or a Pipeline ending in one).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state
from sklearn.utils.validation import column_or_1d

from sk_o2o.data.transitions import to_numpy

__all__ = ["evaluate_unlearning", "membership_inference_score", "mia_features"]

_FEATURES = ("entropy", "loss")


def mia_features(
    estimator: Any,
    X: ArrayLike,
    y: ArrayLike | None = None,
    *,
    feature: str = "entropy",
) -> np.ndarray:
    """The per-sample signal a membership-inference attacker sees.

    Parameters
    ----------
    estimator : estimator
        A fitted classifier with ``predict_proba`` and ``classes_``.
    X : array-like of shape (n_samples, n_features)
        The samples.
    y : array-like of shape (n_samples,), optional
        Labels, needed for ``feature="loss"``.
    feature : {"entropy", "loss"}, default="entropy"
        Entropy of the predicted distribution, or cross-entropy of the label.

    Returns
    -------
    values : ndarray of shape (n_samples,)
        The feature of each sample (natural logarithms).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sk_o2o.unlearning import mia_features
    >>> X, y = load_digits(return_X_y=True)
    >>> model = LogisticRegression(max_iter=1000).fit(X[:1000] / 16, y[:1000])
    >>> seen = mia_features(model, X[:1000] / 16, y[:1000], feature="loss")
    >>> unseen = mia_features(model, X[1000:] / 16, y[1000:], feature="loss")
    >>> bool(seen.mean() < unseen.mean())  # what a membership attack exploits
    True
    """
    return _features(estimator, X, y, feature, ("X", "y"))


def _features(
    estimator: Any, X: ArrayLike, y: ArrayLike | None, feature: str, names: tuple
) -> np.ndarray:
    """:func:`mia_features`, its errors naming the caller's arguments ``names``."""
    if feature not in _FEATURES:
        raise ValueError(f"feature must be one of {_FEATURES}, got {feature!r}.")
    proba = np.clip(estimator.predict_proba(X), 1e-12, 1.0)
    if feature == "entropy":
        return -(proba * np.log(proba)).sum(axis=1)
    x_name, y_name = names
    if y is None:
        raise ValueError(f'feature="loss" needs the labels {y_name}.')
    y = column_or_1d(to_numpy(y))
    if len(y) != len(proba):
        raise ValueError(
            f"{y_name} has {len(y)} labels for {len(proba)} rows of {x_name}."
        )
    # A label outside classes_ has no predicted probability: searchsorted alone
    # would read another class's column, or index past the last one.
    column = {
        label: i for i, label in enumerate(np.asarray(estimator.classes_).tolist())
    }
    unknown = sorted({label for label in y.tolist() if label not in column}, key=str)
    if unknown:
        raise ValueError(
            f"{y_name} holds labels {unknown[:5]!r} that are not among the "
            f"estimator's classes_ {list(column)!r}."
        )
    index = np.array([column[label] for label in y.tolist()], dtype=np.intp)
    return -np.log(proba[np.arange(len(proba)), index])


def membership_inference_score(
    estimator: Any,
    X_retain: ArrayLike,
    y_retain: ArrayLike,
    X_test: ArrayLike,
    y_test: ArrayLike,
    X_forget: ArrayLike,
    y_forget: ArrayLike | None = None,
    *,
    feature: str = "entropy",
    random_state: int | np.random.RandomState | None = None,
) -> float:
    """Fraction of the forget set that a membership-inference attack calls members.

    A logistic regression learns, from one feature per sample (see
    :func:`mia_features`), to tell retain-set training samples (members) from
    test samples (non-members), on equally many of each; it is then applied to
    the forget set. A model that truly forgot scores like the model retrained
    without the forget set, not necessarily 0.

    Parameters
    ----------
    estimator : estimator
        A fitted classifier with ``predict_proba`` and ``classes_``.
    X_retain, y_retain : array-like
        Training samples the model kept.
    X_test, y_test : array-like
        Samples the model never saw.
    X_forget, y_forget : array-like
        The forgotten samples (labels needed for ``feature="loss"`` only).
    feature : {"entropy", "loss"}, default="entropy"
    random_state : int, RandomState instance or None, default=None
        Which members or non-members are dropped to balance the two.

    Returns
    -------
    score : float in [0, 1]
        The fraction of the forget set predicted to be members.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sk_o2o.unlearning import membership_inference_score
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16
    >>> model = LogisticRegression(max_iter=1000).fit(X[:1000], y[:1000])
    >>> def score(X_forget, y_forget):  # test rows: 1000-1299, never seen
    ...     return membership_inference_score(
    ...         model, X[:900], y[:900], X[1000:1300], y[1000:1300],
    ...         X_forget, y_forget, feature="loss", random_state=0)
    >>> seen, unseen = score(X[900:1000], y[900:1000]), score(X[1300:], y[1300:])
    >>> bool(seen > unseen)  # about 0.8 against 0.7: trained-on rows look like members
    True
    """
    rng = check_random_state(random_state)
    members = _features(
        estimator, X_retain, y_retain, feature, ("X_retain", "y_retain")
    )
    non_members = _features(estimator, X_test, y_test, feature, ("X_test", "y_test"))
    n = min(len(members), len(non_members))
    members = members[rng.permutation(len(members))[:n]]
    non_members = non_members[rng.permutation(len(non_members))[:n]]
    attacker = LogisticRegression().fit(
        np.concatenate([members, non_members])[:, None],
        np.r_[np.ones(n), np.zeros(n)],
    )
    forget = _features(estimator, X_forget, y_forget, feature, ("X_forget", "y_forget"))
    return float(attacker.predict(forget[:, None]).mean())


def evaluate_unlearning(
    estimator: Any,
    forget: tuple,
    retain: tuple,
    test: tuple,
    *,
    feature: str = "entropy",
    random_state: int | np.random.RandomState | None = 0,
) -> dict[str, Any]:
    """Forget, retain and test accuracy and the membership-inference score.

    Parameters
    ----------
    estimator : estimator
        A fitted classifier with ``predict_proba``, ``classes_`` and ``score``
        (an unlearner, or a Pipeline ending in one).
    forget, retain, test : (X, y) pairs
        The forgotten samples, the training samples kept, and samples the
        model never saw (the rows of the remaining classes, for class
        forgetting).
    feature : {"entropy", "loss"}, default="entropy"
        Signal of the membership-inference attack.
    random_state : int, RandomState instance or None, default=0
        Seeds the balancing of members and non-members in
        :func:`membership_inference_score`; fixed by default, so that models
        are compared on the same attack.

    Returns
    -------
    report : dict
        ``forget_accuracy``, ``retain_accuracy``, ``test_accuracy``, ``mia``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import train_test_split
    >>> from sk_o2o.unlearning import FAMRUnlearner, evaluate_unlearning
    >>> X, y = load_digits(return_X_y=True)
    >>> X_train, X_test, y_train, y_test = train_test_split(
    ...     X / 16.0, y, random_state=0)
    >>> model = FAMRUnlearner(random_state=0).fit(X_train, y_train)
    >>> forget = y_train == 3
    >>> model = model.unlearn_classes([3], X_train, y_train)
    >>> report = evaluate_unlearning(
    ...     model, (X_train[forget], y_train[forget]),
    ...     (X_train[~forget], y_train[~forget]), (X_test, y_test))
    >>> sorted(report)
    ['forget_accuracy', 'mia', 'retain_accuracy', 'test_accuracy']
    >>> report["forget_accuracy"] < 0.1
    True
    """
    for name, pair in (("forget", forget), ("retain", retain), ("test", test)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(
                f"{name} must be an (X, y) pair, got {type(pair).__name__}"
                + (f" of length {len(pair)}" if hasattr(pair, "__len__") else "")
                + "."
            )
    (X_f, y_f), (X_r, y_r), (X_t, y_t) = forget, retain, test
    return {
        "forget_accuracy": float(estimator.score(X_f, y_f)),
        "retain_accuracy": float(estimator.score(X_r, y_r)),
        "test_accuracy": float(estimator.score(X_t, y_t)),
        "mia": membership_inference_score(
            estimator,
            X_r,
            y_r,
            X_t,
            y_t,
            X_f,
            y_f,
            feature=feature,
            random_state=random_state,
        ),
    }
