"""The unlearners: FAMR and the baselines it is compared with, one API for all."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, Literal

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from sk_o2o.unlearning import baselines
from sk_o2o.unlearning.base import (
    _COMMON_CONSTRAINTS,
    BaseUnlearner,
    UnlearningData,
    _skorch_history,
)
from sk_o2o.unlearning.famr import famr_unlearn

__all__ = [
    "FAMRUnlearner",
    "FinetuneUnlearner",
    "NegGradUnlearner",
    "RandomLabelUnlearner",
    "RetrainUnlearner",
    "SSDUnlearner",
]

_POSITIVE = Interval(Real, 0, None, closed="neither")
_COUNT = Interval(Integral, 1, None, closed="left")
# anchor_strength="auto": λ for whole classes and for samples, from the benchmark
# (benchmarks/README.md). A retrained model still predicts forgotten samples of
# the classes it keeps much as before, so sample forgetting needs a far stronger
# anchor than class forgetting, whose uniform target is what retraining reaches.
AUTO_ANCHOR_STRENGTH = {"classes": 0.3, "samples": 10.0}


class FAMRUnlearner(BaseUnlearner):
    """Forget with an anchored uniform-prediction loss (FAMR).

    Unlearning minimises the KL divergence from a uniform prediction to the
    model's on the forget set, plus an ℓ2 anchor to the trained weights θ₀:
    F(θ) + (λ/2)‖θ − θ₀‖² (Sanga, Singh and Dubey, 2025; our reconstruction of
    the objective, see the user guide). Only the forget set is used. When whole
    classes are forgotten the uniform target covers the remaining classes, so
    the forgotten ones end with no probability, as after retraining.

    Parameters
    ----------
    estimator : skorch.NeuralNetClassifier, FrozenEstimator, torch.nn.Module or None, default=None
        The classifier. A skorch net is cloned and fitted as configured (its
        ``device`` is replaced by this estimator's); a trained skorch net
        wrapped in :class:`sklearn.frozen.FrozenEstimator` is copied as it is,
        to unlearn from a model trained elsewhere; a bare module returning
        logits is wrapped by :func:`~sk_o2o.unlearning.make_classifier_net`;
        ``None`` is that net around a 100-unit
        :class:`~sk_o2o.unlearning.MLPClassifierModule`.
    anchor_strength : float or "auto", default="auto"
        λ: larger keeps the model closer to θ₀ (and forgets less). The distance
        moved is at most about ‖∇F(θ₀)‖/λ, recorded as ``distance_bound``.
        ``"auto"`` uses 0.3 in :meth:`unlearn_classes` and 10 in :meth:`unlearn`
        (forgetting samples of classes the model keeps, whose retrained
        predictions stay close to the original ones); each record holds the λ
        used.
    forget_target : {"uniform", "renormalized"}, default="uniform"
        What the forget set's predictions are pulled towards. ``"uniform"``:
        the uniform distribution over the classes that remain (the paper's
        objective). ``"renormalized"``, for :meth:`unlearn_classes` only: the
        trained model's own prediction with the forgotten classes taken out
        and the rest rescaled to sum to one, which is what a model retrained
        without those classes predicts if it learns the same posterior. It
        keeps the decision boundaries between the remaining classes where they
        were, so retain accuracy stays near retraining's where the uniform
        target costs several points (benchmarks/README.md). Not our paper's
        objective but an extension of it.
    solver : {"lbfgs", "adam"}, default="lbfgs"
        ``"lbfgs"``: L-BFGS with a line search on the whole forget set (the
        objective is deterministic and smooth; it converges in tens of
        iterations). ``"adam"``: Adam with the anchor as an exact proximal step,
        for forget sets too large for full-batch steps (with ``batch_size``).
    n_steps : int, default=100
        The most iterations (L-BFGS) or steps (Adam).
    tol : float or None, default=1e-2
        Stop early once the largest coordinate of the objective's gradient
        ∇F(θ) + λ(θ − θ₀) has fallen to ``tol`` times its value at θ₀ (Adam:
        on the step's forget samples). None always takes ``n_steps``. Below
        about 1e-2, float32 round-off can keep the gradient from falling
        further, and L-BFGS then spends its last line searches in vain.
    lr : float, default=1e-2
        Adam's step size (``solver="adam"`` only; 100 steps of 1e-2 get near the
        anchored optimum on the benchmark's MLPs, 1e-3 stops short of it).
    batch_size : int or None, default=None
        Forget samples per Adam step (``solver="adam"`` only); None uses the
        whole forget set each step.
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batch order and the unlearning's own sampling.
    verbose : int, default=0
        Progress bar during unlearning.

    Attributes
    ----------
    estimator_ : skorch.NeuralNetClassifier
        The trained (and, after ``unlearn``, edited) classifier.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Number of features seen by ``fit``.
    feature_names_in_ : ndarray of str
        Feature names, when ``X`` had string column names.
    history_ : list of dict
        skorch's training history of the net, one record per epoch, without
        skorch's per-batch records: ``epoch``, ``train_loss``,
        ``train_loss_best``, ``train_batch_count`` and ``dur`` with the
        built-in net (a net with a validation split adds skorch's ``valid_*``
        entries).
    unlearning_history_ : list of dict
        One record per ``unlearn``/``unlearn_classes`` call: ``method``,
        ``n_forget``, ``classes`` (the forgotten classes, or None), the
        method's own figures and ``time_s``. FAMR's records add
        ``anchor_strength`` (the λ used), ``solver``,
        ``n_steps`` (the iterations taken), ``n_evaluations`` (passes over the
        forget set), ``converged`` (stopped before ``n_steps``),
        ``stationarity`` (the final gradient relative to the one at θ₀),
        ``forget_loss_initial``, ``forget_loss`` (F before and after),
        ``forget_loss_curve``, ``parameter_distance`` (‖θ − θ₀‖) and
        ``distance_bound``.
    device_ : torch.device
        Where the net lives.
    generator_ : torch.Generator
        Seeded from ``random_state`` by ``fit`` (or the first ``partial_fit``);
        draws the seeds of training and the unlearning's own random numbers,
        continuing across calls.

    See Also
    --------
    RetrainUnlearner : the gold standard FAMR approximates.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sk_o2o.unlearning import FAMRUnlearner
    >>> X, y = load_digits(return_X_y=True)
    >>> X = StandardScaler().fit_transform(X)
    >>> model = FAMRUnlearner(random_state=0).fit(X, y)
    >>> float((model.predict(X[y == 3]) == 3).mean()) > 0.9
    True
    >>> model = model.unlearn_classes([3], X, y)
    >>> float((model.predict(X[y == 3]) == 3).mean()) < 0.1
    True
    >>> float((model.predict(X[y != 3]) == y[y != 3]).mean()) > 0.95
    True
    >>> record = model.unlearning_history_[-1]
    >>> record["parameter_distance"] <= record["distance_bound"]
    True
    """

    _parameter_constraints = {
        **_COMMON_CONSTRAINTS,
        "anchor_strength": [
            Interval(Real, 0, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "forget_target": [StrOptions({"uniform", "renormalized"})],
        "solver": [StrOptions({"lbfgs", "adam"})],
        "n_steps": [Interval(Integral, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "lr": [_POSITIVE],
        "batch_size": [_COUNT, None],
    }

    def __init__(
        self,
        estimator=None,
        *,
        anchor_strength: float | Literal["auto"] = "auto",
        forget_target: Literal["uniform", "renormalized"] = "uniform",
        solver: Literal["lbfgs", "adam"] = "lbfgs",
        n_steps: int = 100,
        tol: float | None = 1e-2,
        lr: float = 1e-2,
        batch_size: int | None = None,
        device: str | torch.device = "auto",
        random_state=None,
        verbose: int = 0,
    ):
        self.estimator = estimator
        self.anchor_strength = anchor_strength
        self.forget_target = forget_target
        self.solver = solver
        self.n_steps = n_steps
        self.tol = tol
        self.lr = lr
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _unlearn(self, data: UnlearningData) -> dict[str, Any]:
        if self.solver == "lbfgs" and self.batch_size is not None:
            raise ValueError(
                f"batch_size={self.batch_size!r} needs solver='adam': L-BFGS "
                "steps on the whole forget set (use batch_size=None)."
            )
        if self.forget_target == "renormalized" and data.classes is None:
            # famr_unlearn refuses it when every class is kept; after an earlier
            # unlearn_classes call some are not, but the target would still be
            # the model's own prediction on these samples: nothing forgotten.
            raise ValueError(
                "forget_target='renormalized' needs forgotten classes: use it with "
                "unlearn_classes, not unlearn. Classes forgotten by an earlier "
                "call do not count: on these samples its target would be the "
                "model's own prediction."
            )
        anchor_strength = self.anchor_strength
        if anchor_strength == "auto":
            kind = "samples" if data.classes is None else "classes"
            anchor_strength = AUTO_ANCHOR_STRENGTH[kind]
        anchor_strength = float(anchor_strength)
        with self._progress(self.n_steps) as bar:
            record = famr_unlearn(
                self.estimator_.module_,
                self._module_log_probs(),
                self._tensor(data.X_forget),
                keep=self._tensor(data.keep, torch.bool),
                forget_target=self.forget_target,
                anchor_strength=anchor_strength,
                solver=self.solver,
                lr=float(self.lr),
                n_steps=int(self.n_steps),
                batch_size=self.batch_size,
                generator=self.generator_,
                tol=None if self.tol is None else float(self.tol),
                progress=bar,
            )
        return {"anchor_strength": anchor_strength, **record}


class RetrainUnlearner(BaseUnlearner):
    """Unlearning by retraining from scratch on the retain set: the gold standard.

    ``unlearn`` fits a fresh copy of the classifier, with the same recipe as
    ``fit``, on ``X_retain, y_retain`` (``unlearn_classes``: the rows of the other
    classes). Its forget, retain and test accuracies and its membership-inference
    score are what the other methods aim for.

    Parameters
    ----------
    estimator : skorch.NeuralNetClassifier, FrozenEstimator, torch.nn.Module or None, default=None
        The classifier. A skorch net is cloned and fitted as configured (its
        ``device`` is replaced by this estimator's); a trained skorch net
        wrapped in :class:`sklearn.frozen.FrozenEstimator` is copied as it is,
        to unlearn from a model trained elsewhere; a bare module returning
        logits is wrapped by :func:`~sk_o2o.unlearning.make_classifier_net`;
        ``None`` is that net around a 100-unit
        :class:`~sk_o2o.unlearning.MLPClassifierModule`.
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batch order and the unlearning's own sampling.
    verbose : int, default=0
        Unused: retraining is the skorch net's own ``fit`` (its ``verbose``
        prints the epochs). Kept for the same signature as the other unlearners.

    Attributes
    ----------
    estimator_ : skorch.NeuralNetClassifier
        The trained (and, after ``unlearn``, edited) classifier.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Number of features seen by ``fit``.
    feature_names_in_ : ndarray of str
        Feature names, when ``X`` had string column names.
    history_ : list of dict
        skorch's training history of the net, one record per epoch, without
        skorch's per-batch records: ``epoch``, ``train_loss``,
        ``train_loss_best``, ``train_batch_count`` and ``dur`` with the
        built-in net (a net with a validation split adds skorch's ``valid_*``
        entries). After ``unlearn``, the history of the retraining.
    unlearning_history_ : list of dict
        One record per ``unlearn``/``unlearn_classes`` call: ``method``,
        ``n_forget``, ``classes`` (the forgotten classes, or None), the
        method's own figures and ``time_s``. Its records add
        ``n_retain`` (the rows retrained on).
    device_ : torch.device
        Where the net lives.
    generator_ : torch.Generator
        Seeded from ``random_state`` by ``fit`` (or the first ``partial_fit``);
        draws the seeds of training and the unlearning's own random numbers,
        continuing across calls.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sk_o2o.unlearning import RetrainUnlearner
    >>> X, y = load_digits(return_X_y=True)
    >>> model = RetrainUnlearner(random_state=0).fit(X / 16.0, y)
    >>> model = model.unlearn_classes([3], X / 16.0, y)
    >>> int((model.predict(X[y == 3] / 16.0) == 3).sum())
    0
    """

    _needs_retain = True

    def __init__(self, estimator=None, *, device="auto", random_state=None, verbose=0):
        self.estimator = estimator
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _unlearn(self, data: UnlearningData) -> dict[str, Any]:
        seed = self._draw_seed()
        # Classes absent from the retain set keep their output units: the
        # classifier still has classes_, it just never learns to predict them.
        self.estimator_ = self._fitted_net(data.X_retain, data.y_retain, seed)
        self.history_ = _skorch_history(self.estimator_)  # the history of the model now
        return {"n_retain": len(data.X_retain)}


class FinetuneUnlearner(BaseUnlearner):
    """Unlearning by fine-tuning on the retain set only.

    The forget set is never shown again; whatever the model forgets comes from
    further training on the rest (catastrophic interference).

    Parameters
    ----------
    estimator : skorch.NeuralNetClassifier, FrozenEstimator, torch.nn.Module or None, default=None
        The classifier. A skorch net is cloned and fitted as configured (its
        ``device`` is replaced by this estimator's); a trained skorch net
        wrapped in :class:`sklearn.frozen.FrozenEstimator` is copied as it is,
        to unlearn from a model trained elsewhere; a bare module returning
        logits is wrapped by :func:`~sk_o2o.unlearning.make_classifier_net`;
        ``None`` is that net around a 100-unit
        :class:`~sk_o2o.unlearning.MLPClassifierModule`.
    n_epochs : int, default=2
        Passes over the retain set.
    lr : float, default=1e-3
        Adam's learning rate.
    batch_size : int, default=64
        Retain samples per Adam step.
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batch order and the unlearning's own sampling.
    verbose : int, default=0
        Progress bar during unlearning.

    Attributes
    ----------
    estimator_ : skorch.NeuralNetClassifier
        The trained (and, after ``unlearn``, edited) classifier.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Number of features seen by ``fit``.
    feature_names_in_ : ndarray of str
        Feature names, when ``X`` had string column names.
    history_ : list of dict
        skorch's training history of the net, one record per epoch, without
        skorch's per-batch records: ``epoch``, ``train_loss``,
        ``train_loss_best``, ``train_batch_count`` and ``dur`` with the
        built-in net (a net with a validation split adds skorch's ``valid_*``
        entries).
    unlearning_history_ : list of dict
        One record per ``unlearn``/``unlearn_classes`` call: ``method``,
        ``n_forget``, ``classes`` (the forgotten classes, or None), the
        method's own figures and ``time_s``. Its records add
        ``retain_loss`` (the last batch's cross-entropy).
    device_ : torch.device
        Where the net lives.
    generator_ : torch.Generator
        Seeded from ``random_state`` by ``fit`` (or the first ``partial_fit``);
        draws the seeds of training and the unlearning's own random numbers,
        continuing across calls.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sk_o2o.unlearning import FinetuneUnlearner, mia_features
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16.0
    >>> model = FinetuneUnlearner(random_state=0).fit(X, y)
    >>> def forgotten_loss(model):
    ...     return mia_features(model, X[y == 3], y[y == 3], feature="loss").mean()
    >>> before = forgotten_loss(model)
    >>> model = model.unlearn_classes([3], X, y)
    >>> # fine-tuning on the other digits raises the loss on the forgotten one
    >>> bool(forgotten_loss(model) > before)
    True
    """

    _needs_retain = True
    _parameter_constraints = {
        **_COMMON_CONSTRAINTS,
        "n_epochs": [_COUNT],
        "lr": [_POSITIVE],
        "batch_size": [_COUNT],
    }

    def __init__(
        self,
        estimator=None,
        *,
        n_epochs: int = 2,
        lr: float = 1e-3,
        batch_size: int = 64,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.estimator = estimator
        self.n_epochs = n_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _unlearn(self, data: UnlearningData) -> dict[str, Any]:
        with self._progress(None) as bar:
            return baselines.finetune(
                self.estimator_.module_,
                self._module_log_probs(),
                self._tensor(data.X_retain),
                self._tensor(data.y_retain, torch.long),
                n_epochs=self.n_epochs,
                lr=self.lr,
                batch_size=self.batch_size,
                generator=self.generator_,
                progress=bar,
            )


class NegGradUnlearner(BaseUnlearner):
    """Unlearning by gradient ascent on the forget set (NegGrad, NegGrad+).

    Minimises α·CE(retain) − (1 − α)·CE(forget), α = ``retain_weight``:
    α = 0 is NegGrad (forget set only); α > 0 is NegGrad+ (Kurmanji et al.,
    2023), which needs the retain set.

    Parameters
    ----------
    estimator : skorch.NeuralNetClassifier, FrozenEstimator, torch.nn.Module or None, default=None
        The classifier. A skorch net is cloned and fitted as configured (its
        ``device`` is replaced by this estimator's); a trained skorch net
        wrapped in :class:`sklearn.frozen.FrozenEstimator` is copied as it is,
        to unlearn from a model trained elsewhere; a bare module returning
        logits is wrapped by :func:`~sk_o2o.unlearning.make_classifier_net`;
        ``None`` is that net around a 100-unit
        :class:`~sk_o2o.unlearning.MLPClassifierModule`.
    retain_weight : float in [0, 1), default=0.0
        α, the weight of the retain term.
    n_epochs : int, default=5
        Passes over the forget set.
    lr : float, default=1e-4
        Adam's learning rate (ascent diverges quickly: keep it small).
    batch_size : int, default=64
        Forget samples per Adam step (NegGrad+ adds as many retain samples).
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batch order and the unlearning's own sampling.
    verbose : int, default=0
        Progress bar during unlearning.

    Attributes
    ----------
    estimator_ : skorch.NeuralNetClassifier
        The trained (and, after ``unlearn``, edited) classifier.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Number of features seen by ``fit``.
    feature_names_in_ : ndarray of str
        Feature names, when ``X`` had string column names.
    history_ : list of dict
        skorch's training history of the net, one record per epoch, without
        skorch's per-batch records: ``epoch``, ``train_loss``,
        ``train_loss_best``, ``train_batch_count`` and ``dur`` with the
        built-in net (a net with a validation split adds skorch's ``valid_*``
        entries).
    unlearning_history_ : list of dict
        One record per ``unlearn``/``unlearn_classes`` call: ``method``,
        ``n_forget``, ``classes`` (the forgotten classes, or None), the
        method's own figures and ``time_s``. Its records add
        ``loss`` (the last step's loss).
    device_ : torch.device
        Where the net lives.
    generator_ : torch.Generator
        Seeded from ``random_state`` by ``fit`` (or the first ``partial_fit``);
        draws the seeds of training and the unlearning's own random numbers,
        continuing across calls.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sk_o2o.unlearning import NegGradUnlearner, mia_features
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16.0
    >>> model = NegGradUnlearner(random_state=0).fit(X, y)
    >>> def forgotten_loss(model):
    ...     return mia_features(model, X[y == 3], y[y == 3], feature="loss").mean()
    >>> before = forgotten_loss(model)
    >>> model = model.unlearn_classes([3], X, y)
    >>> # gradient ascent raises the loss on the forgotten digit
    >>> bool(forgotten_loss(model) > before)
    True
    """

    _needs_forget_labels = True
    _parameter_constraints = {
        **_COMMON_CONSTRAINTS,
        "retain_weight": [Interval(Real, 0, 1, closed="left")],
        "n_epochs": [_COUNT],
        "lr": [_POSITIVE],
        "batch_size": [_COUNT],
    }

    def __init__(
        self,
        estimator=None,
        *,
        retain_weight: float = 0.0,
        n_epochs: int = 5,
        lr: float = 1e-4,
        batch_size: int = 64,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.estimator = estimator
        self.retain_weight = retain_weight
        self.n_epochs = n_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _unlearn(self, data: UnlearningData) -> dict[str, Any]:
        if self.retain_weight > 0 and data.X_retain is None:
            raise ValueError(
                "NegGrad+ (retain_weight > 0) needs X_retain and y_retain."
            )
        with self._progress(None) as bar:
            return baselines.neggrad(
                self.estimator_.module_,
                self._module_log_probs(),
                self._tensor(data.X_forget),
                self._tensor(data.y_forget, torch.long),
                self._tensor(data.X_retain),
                self._tensor(data.y_retain, torch.long),
                retain_weight=float(self.retain_weight),
                n_epochs=self.n_epochs,
                lr=self.lr,
                batch_size=self.batch_size,
                generator=self.generator_,
                progress=bar,
            )


class RandomLabelUnlearner(BaseUnlearner):
    """Unlearning by fine-tuning on the forget set with random wrong labels.

    Each forget sample gets a label drawn once among the other classes (among
    the remaining classes when whole classes are forgotten), so ``unlearn``
    needs ``y_forget``. With a retain set, every forget batch is paired with a
    retain batch.

    Parameters
    ----------
    estimator : skorch.NeuralNetClassifier, FrozenEstimator, torch.nn.Module or None, default=None
        The classifier. A skorch net is cloned and fitted as configured (its
        ``device`` is replaced by this estimator's); a trained skorch net
        wrapped in :class:`sklearn.frozen.FrozenEstimator` is copied as it is,
        to unlearn from a model trained elsewhere; a bare module returning
        logits is wrapped by :func:`~sk_o2o.unlearning.make_classifier_net`;
        ``None`` is that net around a 100-unit
        :class:`~sk_o2o.unlearning.MLPClassifierModule`.
    n_epochs : int, default=5
        Passes over the forget set.
    lr : float, default=1e-3
        Adam's learning rate.
    batch_size : int, default=64
        Forget samples per Adam step (plus as many retain samples, when a
        retain set is given).
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batch order and the unlearning's own sampling.
    verbose : int, default=0
        Progress bar during unlearning.

    Attributes
    ----------
    estimator_ : skorch.NeuralNetClassifier
        The trained (and, after ``unlearn``, edited) classifier.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Number of features seen by ``fit``.
    feature_names_in_ : ndarray of str
        Feature names, when ``X`` had string column names.
    history_ : list of dict
        skorch's training history of the net, one record per epoch, without
        skorch's per-batch records: ``epoch``, ``train_loss``,
        ``train_loss_best``, ``train_batch_count`` and ``dur`` with the
        built-in net (a net with a validation split adds skorch's ``valid_*``
        entries).
    unlearning_history_ : list of dict
        One record per ``unlearn``/``unlearn_classes`` call: ``method``,
        ``n_forget``, ``classes`` (the forgotten classes, or None), the
        method's own figures and ``time_s``. Its records add
        ``loss`` (the last step's loss).
    device_ : torch.device
        Where the net lives.
    generator_ : torch.Generator
        Seeded from ``random_state`` by ``fit`` (or the first ``partial_fit``);
        draws the seeds of training and the unlearning's own random numbers,
        continuing across calls.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sk_o2o.unlearning import RandomLabelUnlearner, mia_features
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16.0
    >>> model = RandomLabelUnlearner(random_state=0).fit(X, y)
    >>> def forgotten_loss(model):
    ...     return mia_features(model, X[y == 3], y[y == 3], feature="loss").mean()
    >>> before = forgotten_loss(model)
    >>> model = model.unlearn_classes([3], X, y)
    >>> # training on wrong labels raises the loss on the forgotten digit
    >>> bool(forgotten_loss(model) > before)
    True
    """

    _parameter_constraints = {
        **_COMMON_CONSTRAINTS,
        "n_epochs": [_COUNT],
        "lr": [_POSITIVE],
        "batch_size": [_COUNT],
    }
    # "other classes" needs the true ones: drawn without them, about 1/K of the
    # forget rows would be trained on their own label.
    _needs_forget_labels = True

    def __init__(
        self,
        estimator=None,
        *,
        n_epochs: int = 5,
        lr: float = 1e-3,
        batch_size: int = 64,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.estimator = estimator
        self.n_epochs = n_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _unlearn(self, data: UnlearningData) -> dict[str, Any]:
        with self._progress(None) as bar:
            return baselines.random_label(
                self.estimator_.module_,
                self._module_log_probs(),
                self._tensor(data.X_forget),
                self._tensor(data.y_forget, torch.long),
                torch.as_tensor(data.keep),
                self._tensor(data.X_retain),
                self._tensor(data.y_retain, torch.long),
                n_epochs=self.n_epochs,
                lr=self.lr,
                batch_size=self.batch_size,
                generator=self.generator_,
                progress=bar,
            )


class SSDUnlearner(BaseUnlearner):
    """Selective Synaptic Dampening (Foster et al., 2024).

    Diagonal Fisher importances are computed on all the data (retain and
    forget) and on the forget set; parameters with imp_f > α·imp_D are scaled
    by min(λ·imp_D/imp_f, 1). No gradient step is taken.

    Parameters
    ----------
    estimator : skorch.NeuralNetClassifier, FrozenEstimator, torch.nn.Module or None, default=None
        The classifier. A skorch net is cloned and fitted as configured (its
        ``device`` is replaced by this estimator's); a trained skorch net
        wrapped in :class:`sklearn.frozen.FrozenEstimator` is copied as it is,
        to unlearn from a model trained elsewhere; a bare module returning
        logits is wrapped by :func:`~sk_o2o.unlearning.make_classifier_net`;
        ``None`` is that net around a 100-unit
        :class:`~sk_o2o.unlearning.MLPClassifierModule`.
    selection_weight : float, default=10.0
        α: how much more important to the forget set a parameter must be.
    dampening_constant : float, default=1.0
        λ of the scaling.
    batch_size : int, default=64
        Batch size of the importance estimates.
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batch order and the unlearning's own sampling.
    verbose : int, default=0
        Unused: SSD is two passes over the data and one edit of the weights.
        Kept for the same signature as the other unlearners.

    Attributes
    ----------
    estimator_ : skorch.NeuralNetClassifier
        The trained (and, after ``unlearn``, edited) classifier.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Number of features seen by ``fit``.
    feature_names_in_ : ndarray of str
        Feature names, when ``X`` had string column names.
    history_ : list of dict
        skorch's training history of the net, one record per epoch, without
        skorch's per-batch records: ``epoch``, ``train_loss``,
        ``train_loss_best``, ``train_batch_count`` and ``dur`` with the
        built-in net (a net with a validation split adds skorch's ``valid_*``
        entries).
    unlearning_history_ : list of dict
        One record per ``unlearn``/``unlearn_classes`` call: ``method``,
        ``n_forget``, ``classes`` (the forgotten classes, or None), the
        method's own figures and ``time_s``. Its records add
        ``n_dampened`` (the parameters dampened).
    device_ : torch.device
        Where the net lives.
    generator_ : torch.Generator
        Seeded from ``random_state`` by ``fit`` (or the first ``partial_fit``);
        draws the seeds of training and the unlearning's own random numbers,
        continuing across calls.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sk_o2o.unlearning import SSDUnlearner, mia_features
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X / 16.0
    >>> model = SSDUnlearner(selection_weight=1.0, random_state=0).fit(X, y)
    >>> def forgotten_loss(model):
    ...     return mia_features(model, X[y == 3], y[y == 3], feature="loss").mean()
    >>> before = forgotten_loss(model)
    >>> model = model.unlearn_classes([3], X, y)
    >>> # dampening raises the loss on the forgotten digit
    >>> bool(forgotten_loss(model) > before)
    True
    """

    _needs_forget_labels = True
    _needs_retain = True
    _parameter_constraints = {
        **_COMMON_CONSTRAINTS,
        "selection_weight": [_POSITIVE],
        "dampening_constant": [_POSITIVE],
        "batch_size": [_COUNT],
    }

    def __init__(
        self,
        estimator=None,
        *,
        selection_weight: float = 10.0,
        dampening_constant: float = 1.0,
        batch_size: int = 64,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.estimator = estimator
        self.selection_weight = selection_weight
        self.dampening_constant = dampening_constant
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _unlearn(self, data: UnlearningData) -> dict[str, Any]:
        X_all = np.concatenate([data.X_retain, data.X_forget])
        y_all = np.concatenate([data.y_retain, data.y_forget])
        # The importances average squared batch gradients, and a batch of one
        # class inflates them: rows are shuffled (seeded), not taken in the
        # caller's order, which is often sorted by class (Foster et al.'s
        # loaders do not shuffle, but their data come in random order).
        forget = torch.randperm(len(data.y_forget), generator=self.generator_).numpy()
        every = torch.randperm(len(y_all), generator=self.generator_).numpy()
        return baselines.ssd(
            self.estimator_.module_,
            self._module_log_probs(),
            self._tensor(data.X_forget[forget]),
            self._tensor(data.y_forget[forget], torch.long),
            self._tensor(X_all[every]),
            self._tensor(y_all[every], torch.long),
            selection_weight=float(self.selection_weight),
            dampening_constant=float(self.dampening_constant),
            batch_size=self.batch_size,
        )
