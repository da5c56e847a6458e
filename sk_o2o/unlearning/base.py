"""What every unlearner shares: the wrapped classifier, validation, records.

An unlearner is a scikit-learn classifier around a :class:`skorch.NeuralNetClassifier`:
``fit`` trains a clone of it, ``predict``/``predict_proba`` use it, and ``unlearn``
/ ``unlearn_classes`` validate the forget (and retain) data, run the subclass's
method on the trained module in place and append a record to
``unlearning_history_``. Subclasses implement ``_unlearn`` only.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import ClassifierMixin, clone
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils import column_or_1d
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data
from skorch import NeuralNetClassifier
from torch import nn

from sk_o2o._base import (
    TorchEstimator,
    autograd_on,
    find_stack_level,
    progress_bar,
    resolve_device,
    torch_seed_context,
)
from sk_o2o.data.transitions import check_finite, to_numpy
from sk_o2o.unlearning.networks import (
    MLPClassifierModule,
    log_probabilities,
    make_classifier_net,
)

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Self

__all__ = ["BaseUnlearner", "UnlearningData", "unlearn_pipeline"]

_COMMON_CONSTRAINTS: dict[str, list] = {
    **TorchEstimator._parameter_constraints,
    "estimator": [None, NeuralNetClassifier, FrozenEstimator, nn.Module],
}


@dataclass(frozen=True)
class UnlearningData:
    """Validated unlearning inputs: float32 rows and encoded labels (0..K−1).

    ``keep`` is a boolean mask over the classes still to be predicted: all of them
    when samples are forgotten, all but the forgotten ones when whole classes are.
    """

    X_forget: np.ndarray
    y_forget: np.ndarray | None
    X_retain: np.ndarray | None
    y_retain: np.ndarray | None
    keep: np.ndarray
    classes: list | None = None  # the forgotten classes, in the user's labels


class BaseUnlearner(ClassifierMixin, TorchEstimator):
    """Base class of the unlearners: a torch classifier that can forget.

    For developers: a subclass sets its parameters in ``__init__`` (``estimator``,
    its own, then ``device``, ``random_state`` and ``verbose``), declares what
    its method needs (``_needs_forget_labels``, ``_needs_retain``) and
    implements ``_unlearn(data)``, which edits ``self.estimator_.module_`` in
    place and returns the method's own figures for the record. Fitting,
    prediction, validation of the forget and retain sets, the records, rollback
    on errors and persistence are implemented here.

    Fitted attributes common to all subclasses: ``estimator_`` (the trained
    :class:`skorch.NeuralNetClassifier`), ``classes_``, ``n_features_in_``
    (and ``feature_names_in_`` after a DataFrame), ``history_`` (the training
    epochs), ``unlearning_history_`` (one record per ``unlearn`` call),
    ``device_`` and ``generator_`` (the torch generator seeded by
    ``random_state``).
    """

    _parameter_constraints: ClassVar[dict] = _COMMON_CONSTRAINTS
    # What a method needs besides the forget rows; checked before anything runs.
    _needs_forget_labels: ClassVar[bool] = False
    _needs_retain: ClassVar[bool] = False

    # ------------------------------------------------------------------ to override
    def _unlearn(self, data: UnlearningData) -> dict[str, Any]:
        raise NotImplementedError

    # ------------------------------------------------------------------ sklearn API
    def set_params(self, **params: Any) -> Self:
        """Set parameters, as any scikit-learn estimator; see ``get_params``.

        Parameters
        ----------
        **params : dict
            Parameter names and their new values; ``estimator__<name>`` sets a
            parameter of the wrapped net.

        Returns
        -------
        self : object
            This estimator.

        Raises
        ------
        ValueError
            For an ``estimator__<name>`` while ``estimator`` is None: the
            built-in net is only made by ``fit``.
        """
        nested = sorted(key for key in params if key.startswith("estimator__"))
        if nested and params.get("estimator", self.estimator) is None:
            raise ValueError(
                f"{nested[0]} sets a parameter of estimator, which is None (the "
                "built-in net, made when fit runs). Pass the same net as "
                "estimator=make_classifier_net() to tune its parameters."
            )
        return super().set_params(**params)

    @autograd_on
    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Train a clone of ``estimator`` (or the built-in MLP) on ``X, y``.

        With ``estimator=FrozenEstimator(net)``, ``net`` is an already trained
        skorch classifier: it is copied, not trained, and ``X, y`` (its training
        data, or a sample of it) only set ``n_features_in_`` and are checked
        against its classes. Unlearning then edits the copy.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training samples.
        y : array-like of shape (n_samples,)
            Class labels (any hashable values).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        with self._restore_on_error():
            self._validate_params()
            X, y = validate_data(self, to_numpy(X), to_numpy(y), dtype=np.float32)
            X = _writable(X)
            check_classification_targets(y)
            seed = self._seed_generator()
            if isinstance(self.estimator, FrozenEstimator):
                self.estimator_ = self._trained_copy(X)
                unknown = _not_among(y, self.classes_)
                if unknown:
                    raise ValueError(
                        f"y holds labels {unknown[:5]!r} that the frozen net was "
                        f"not trained on (its classes_: {self.classes_.tolist()!r})."
                    )
            else:
                classes, y_encoded = np.unique(y, return_inverse=True)
                if len(classes) < 2:
                    raise ValueError(
                        f"y holds 1 class ({classes.tolist()[0]!r}); a classifier "
                        "needs at least two."
                    )
                self.classes_ = classes
                self.device_ = resolve_device(self.device)
                self.estimator_ = self._fitted_net(X, y_encoded, seed)
            self.history_ = _skorch_history(self.estimator_)
            self.unlearning_history_: list[dict[str, Any]] = []
        return self

    @autograd_on
    def partial_fit(
        self, X: ArrayLike, y: ArrayLike, classes: ArrayLike | None = None
    ) -> Self:
        """One more epoch of training on ``X, y`` (the first call initialises).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training samples.
        y : array-like of shape (n_samples,)
            Their class labels, among ``classes_``.
        classes : array-like, optional
            All the classes; required on the first call, as in scikit-learn.

        Returns
        -------
        self : object
            The estimator, trained one more epoch.
        """
        with self._restore_on_error():
            first_call = not hasattr(self, "estimator_")
            if first_call:
                self._validate_params()
                if classes is None:
                    raise ValueError(
                        "classes must be passed on the first call to partial_fit."
                    )
            X, y = validate_data(
                self, to_numpy(X), to_numpy(y), dtype=np.float32, reset=first_call
            )
            X = _writable(X)
            if first_call:
                seed = self._seed_generator()
                if isinstance(self.estimator, FrozenEstimator):
                    self.estimator_ = self._trained_copy(X)
                else:
                    self.classes_ = np.unique(column_or_1d(to_numpy(classes)))
                    if len(self.classes_) < 2:
                        raise ValueError("classes must hold at least two classes.")
                    self.device_ = resolve_device(self.device)
                    with torch_seed_context(seed):
                        self.estimator_ = self._new_net().initialize()
                    self._check_outputs(self.estimator_, X, "the module", "the")
                self.history_ = []
                self.unlearning_history_ = []
            elif classes is not None:
                given = np.unique(column_or_1d(to_numpy(classes)))
                if _not_among(given, self.classes_) or len(given) != len(self.classes_):
                    raise ValueError(
                        f"classes={given.tolist()!r} is not the same as on the first "
                        f"call, {self.classes_.tolist()!r}."
                    )  # as scikit-learn's partial_fit says
            given_now = (
                first_call
                and classes is not None
                and not isinstance(self.estimator, FrozenEstimator)
            )
            y_encoded = self._encode(
                y,
                "y",
                among=f"classes={self.classes_.tolist()!r}"
                if given_now
                else f"classes_ {self.classes_.tolist()!r}",
            )
            forgotten = ~self._kept_classes()[y_encoded]
            relearned = self.classes_[np.unique(y_encoded[forgotten])].tolist()
            if relearned:
                warnings.warn(
                    f"y holds samples of classes {relearned!r}, forgotten by an "
                    "earlier unlearn_classes call: this epoch teaches them again, "
                    "while later unlearning calls still treat them as forgotten.",
                    UserWarning,
                    stacklevel=find_stack_level(),
                )
            seed = self._draw_seed()
            n_epochs = len(self.estimator_.history)
            with torch_seed_context(seed):
                self.estimator_.partial_fit(X, y_encoded, epochs=1)
            _check_converged(self.estimator_, since=n_epochs)
            self.history_ = _skorch_history(self.estimator_)
        return self

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to classify.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probability of each class (float64, rows summing to one).
        """
        check_is_fitted(self)
        X = _writable(validate_data(self, to_numpy(X), reset=False, dtype=np.float32))
        with torch.no_grad():
            output = _forward(self.estimator_, X)
            log_probs = log_probabilities(self.estimator_, output)
        return torch.softmax(log_probs.double(), dim=-1).numpy()

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples to classify.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Predicted labels, among ``classes_``.
        """
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    @autograd_on
    def unlearn(
        self,
        X_forget: ArrayLike,
        y_forget: ArrayLike | None = None,
        *,
        X_retain: ArrayLike | None = None,
        y_retain: ArrayLike | None = None,
    ) -> Self:
        """Forget the samples ``X_forget`` (and their labels ``y_forget``).

        Parameters
        ----------
        X_forget : array-like of shape (n_forget, n_features)
            The samples to forget, usually rows of the training data.
        y_forget : array-like of shape (n_forget,), optional
            Their labels; needed by the methods that use them.
        X_retain, y_retain : array-like, optional
            Training data to keep, for the methods that use it; FAMR does not.
            Rows of classes forgotten by an earlier :meth:`unlearn_classes` call
            are left out: those classes stay forgotten.

        Returns
        -------
        self : object
            The estimator, its model edited; ``unlearning_history_`` has a new
            record.
        """
        check_is_fitted(self)
        X_f = self._check_rows(X_forget, "X_forget")
        y_f = None
        if y_forget is not None:
            y_f = self._encode(
                self._check_labels(y_forget, X_f, "y_forget"), "y_forget"
            )
        keep = self._kept_classes()
        X_r, y_r = self._retain(X_retain, y_retain)
        if y_r is not None and not keep.all():
            # Classes stay forgotten: retain rows of a class forgotten earlier
            # would teach it again to the methods that train on them.
            still = keep[y_r]
            if not still.any() and self._needs_retain:
                raise ValueError(
                    "X_retain, y_retain hold only rows of classes forgotten by an "
                    "earlier unlearn_classes call; those are left out, and nothing "
                    "remains."
                )
            X_r, y_r = (X_r[still], y_r[still]) if still.any() else (None, None)
        return self._run(UnlearningData(X_f, y_f, X_r, y_r, keep=keep))

    @autograd_on
    def unlearn_classes(self, classes: ArrayLike, X: ArrayLike, y: ArrayLike) -> Self:
        """Forget whole classes.

        The rows of ``X`` labelled with one of ``classes`` are the forget set, the
        rows of the classes that remain the retain set (for the methods that use
        one; rows of classes forgotten by an earlier call are in neither). Pass the
        training data, or, for FAMR, just the samples of those classes. Where a
        method aims at a uniform or random prediction, it uses the classes that
        remain: a model retrained without a class never predicts it.

        Parameters
        ----------
        classes : label or array-like of labels
            Classes to forget, among ``classes_``; not all of them.
        X : array-like of shape (n_samples, n_features)
            Samples: the rows of ``classes`` are the forget set, the others
            the retain set.
        y : array-like of shape (n_samples,)
            Their labels.

        Returns
        -------
        self : object
            The estimator, its model edited; ``unlearning_history_`` has a new
            record.
        """
        check_is_fitted(self)
        forgotten = np.unique(column_or_1d(np.atleast_1d(to_numpy(classes))))
        if not len(forgotten):
            raise ValueError("classes is empty: name at least one class to forget.")
        unknown = _not_among(forgotten, self.classes_)
        if unknown:
            raise ValueError(
                f"classes holds {unknown!r}, not among the fitted "
                f"classes_ {self.classes_.tolist()!r}."
            )
        forgotten = self.classes_[np.searchsorted(self.classes_, forgotten)]
        kept = self._kept_classes()
        again = _not_among(forgotten, self.classes_[kept])
        if again:
            warnings.warn(
                f"classes {again!r} were forgotten by an earlier call; forgetting "
                "them again moves the weights further.",
                UserWarning,
                stacklevel=find_stack_level(),
            )
        keep = kept & ~np.isin(self.classes_, forgotten)
        if not keep.any():
            raise ValueError(
                "classes names every class not yet forgotten: nothing would remain."
            )
        X = self._check_rows(X, "X")
        y = self._check_labels(y, X, "y")
        y_encoded = self._encode(y, "y")
        in_forget = np.isin(y, forgotten)
        if not in_forget.any():
            raise ValueError(
                f"X, y hold no sample of the classes {forgotten.tolist()!r}."
            )
        # the other rows, without those of classes forgotten earlier
        retained = np.isin(y_encoded, np.flatnonzero(keep))
        data = UnlearningData(
            X[in_forget],
            y_encoded[in_forget],
            X[retained] if retained.any() else None,
            y_encoded[retained] if retained.any() else None,
            keep=keep,
            classes=forgotten.tolist(),
        )
        return self._run(data)

    # ------------------------------------------------------------------ internals
    def _snapshot_in_place_state(self) -> Callable[[], None] | None:
        # unlearning edits the trained module's weights in place, partial_fit
        # also skorch's optimiser state and epoch history
        if not hasattr(self, "estimator_"):
            return None
        net = self.estimator_
        module = net.module_
        weights = copy.deepcopy(module.state_dict())
        optimizer = getattr(net, "optimizer_", None)
        optimizer_state = (
            copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
        )
        n_epochs = len(net.history)

        def restore() -> None:
            module.load_state_dict(weights)
            if optimizer_state is not None:
                optimizer.load_state_dict(optimizer_state)
            del net.history[n_epochs:]

        return restore

    def _run(self, data: UnlearningData):
        self._validate_params()  # parameters set since fit, used only here
        missing = []
        if self._needs_forget_labels and data.y_forget is None:
            missing.append("y_forget")
        if self._needs_retain and data.X_retain is None:
            missing.append("X_retain and y_retain")
        if missing and data.classes is not None:  # unlearn_classes
            raise ValueError(
                f"{type(self).__name__} trains on the rows of the classes that "
                "remain, and X, y hold none: pass the training data."
            )
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs {' and '.join(missing)}; pass them "
                "(or use unlearn_classes with the training data)."
            )
        with self._restore_on_error():
            start = time.perf_counter()
            record = self._unlearn(data)
            record = {
                "method": type(self).__name__,
                "n_forget": len(data.X_forget),
                "classes": data.classes,
                **record,
                "time_s": time.perf_counter() - start,
            }
            self.unlearning_history_ = [*self.unlearning_history_, record]
        return self

    def _trained_copy(self, X: np.ndarray) -> NeuralNetClassifier:
        """A copy of the net inside ``FrozenEstimator``, which must be trained.

        Sets ``classes_`` and ``device_`` from it: it stays on its own device.
        One row of ``X`` goes through it, so that data of the wrong width fail
        here and not at the first ``predict``.
        """
        net = self.estimator.estimator
        if not isinstance(net, NeuralNetClassifier) or not net.initialized_:
            raise ValueError(
                "estimator=FrozenEstimator(net) needs a trained skorch "
                f"NeuralNetClassifier; got an untrained {type(net).__name__}."
            )
        device = torch.device(net.device)
        requested = _indexed(resolve_device(self.device))
        if self.device != "auto" and requested != _indexed(device):
            raise ValueError(
                f"device={self.device!r}, but the frozen net lives on {device}; "
                "use device='auto' or move the net."
            )
        self.classes_ = np.asarray(net.classes_)
        self.device_ = device
        net = copy.deepcopy(net)  # the user's own net is never run here
        self._check_outputs(net, X, "the frozen net", "its")
        return net

    def _check_outputs(self, net: NeuralNetClassifier, X: np.ndarray, what, whose):
        """Run a few rows of ``X`` through ``net``: refuse what cannot train.

        Catches, before any training, data of the wrong width, a module with
        one output too few or too many for the classes (training would fail on
        a label past the last output, or predict_proba would have extra
        columns), and a module whose outputs the criterion misreads.
        """
        try:
            with torch.no_grad():
                output = _forward(net, X[:8])
        except RuntimeError as error:
            if "shape" not in str(error) and "size" not in str(error):
                raise
            raise ValueError(
                f"X has {X.shape[1]} features, and {what} cannot take them: {error}"
            ) from None
        if output.ndim != 2 or output.shape[-1] != len(self.classes_):
            raise ValueError(
                f"{what} gives outputs of shape {tuple(output.shape[1:])} per row "
                f"for {whose} {len(self.classes_)} classes; it must give one "
                "output per class."
            )
        non_negative = bool((output >= 0).all())
        sums_to_one = torch.allclose(
            output.sum(-1), torch.ones((), dtype=output.dtype), atol=1e-4
        )
        if isinstance(net.criterion_, nn.NLLLoss) and not non_negative:
            raise ValueError(
                f"{what} has criterion NLLLoss, with which skorch reads the "
                "module's outputs as probabilities (it takes their log), but "
                "they are negative (logits or log-probabilities?): end the "
                "module with a softmax, or use criterion=nn.CrossEntropyLoss."
            )
        if not isinstance(net.criterion_, nn.NLLLoss) and non_negative and sums_to_one:
            warnings.warn(
                f"{what}'s outputs look like probabilities (non-negative, rows "
                f"summing to 1), but its criterion {type(net.criterion_).__name__} "
                "reads them as logits and applies a softmax again, which flattens "
                "predict_proba and weakens training and unlearning. Remove the "
                "module's final softmax, or use criterion=nn.NLLLoss.",
                UserWarning,
                stacklevel=find_stack_level(),
            )

    def _new_net(self) -> NeuralNetClassifier:
        """An unfitted net for this data, on ``device_``, built from ``estimator``."""
        estimator = self.estimator
        if isinstance(estimator, FrozenEstimator):
            estimator = estimator.estimator  # retraining: its recipe, from scratch
        if estimator is None:
            net = make_classifier_net()
        elif isinstance(estimator, nn.Module):
            net = make_classifier_net(module=copy.deepcopy(estimator))
        else:
            net = clone(estimator)
        if net.module is MLPClassifierModule:  # sized from the data
            net.set_params(
                module__n_features=self.n_features_in_,
                module__n_classes=len(self.classes_),
            )
        return net.set_params(device=str(self.device_))

    def _fitted_net(self, X: np.ndarray, y_encoded: np.ndarray, seed: int):
        with torch_seed_context(seed):  # initial weights and batch order
            net = self._new_net()
            if isinstance(self.estimator, FrozenEstimator) and isinstance(
                net.module, nn.Module
            ):  # retraining a net built around a module instance: skorch trained
                # that instance in place, so its copy holds the trained weights
                _reset_parameters(net.module)
            # net.fit, with the outputs checked between initialisation and
            # training (the check draws nothing from torch's generator)
            net.initialize()
            self._check_outputs(net, X, "the module", "the")
            net.partial_fit(X, y_encoded)
        _check_converged(net)
        return net

    def _module_log_probs(self):
        net = self.estimator_
        return lambda X: log_probabilities(net, net.module_(X))

    def _tensor(self, array: np.ndarray | None, dtype=torch.float32):
        if array is None:
            return None
        return torch.as_tensor(array, dtype=dtype, device=self.device_)

    def _progress(self, total: int):
        return progress_bar(total, verbose=self.verbose, desc=type(self).__name__)

    def _kept_classes(self) -> np.ndarray:
        """Mask over ``classes_``: False for a class an earlier call forgot.

        Read from ``unlearning_history_`` (saved with the model), so that a later
        call's uniform or random target never brings a forgotten class back.
        """
        forgotten = [
            label
            for record in self.unlearning_history_
            for label in (record["classes"] or [])
        ]
        return ~np.isin(self.classes_, np.asarray(forgotten, dtype=self.classes_.dtype))

    def _check_rows(self, X, name: str) -> np.ndarray:
        X = to_numpy(X)
        rows = check_array(
            X,
            dtype=np.float32,
            ensure_all_finite=False,
            ensure_min_samples=0,
            input_name=name,
        )
        if len(rows) == 0:
            raise ValueError(
                f"{name} is empty"
                + (": there is nothing to forget." if name != "X_retain" else ".")
            )
        if rows.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{name} has {rows.shape[1]} features, but {type(self).__name__} "
                f"was fitted with {self.n_features_in_}."
            )
        # The same column-name check as predict: reordered columns are refused.
        try:
            validate_data(self, X, reset=False, skip_check_array=True)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        check_finite(rows, name)
        return _writable(rows)

    @staticmethod
    def _check_labels(y, X: np.ndarray, name: str) -> np.ndarray:
        y = column_or_1d(to_numpy(y))
        if len(y) != len(X):
            raise ValueError(f"{name} has {len(y)} labels for {len(X)} rows.")
        return y

    def _encode(self, y: np.ndarray, name: str, among: str | None = None) -> np.ndarray:
        """``y`` as indices into ``classes_``; unknown labels are a ValueError
        naming ``name`` (and ``among``, what they were checked against)."""
        y = column_or_1d(y)
        unknown = _not_among(y, self.classes_)
        if unknown and among is not None:
            raise ValueError(
                f"{name} holds classes {unknown[:5]!r} that are not among {among}."
            )
        if unknown:
            raise ValueError(f"{name} holds classes not seen in fit: {unknown[:5]!r}.")
        return np.searchsorted(self.classes_, y)

    def _retain(self, X_retain, y_retain):
        if X_retain is None and y_retain is None:
            return None, None
        if X_retain is None or y_retain is None:
            raise ValueError("X_retain and y_retain must be passed together.")
        X_r = self._check_rows(X_retain, "X_retain")
        y_r = self._check_labels(y_retain, X_r, "y_retain")
        return X_r, self._encode(y_r, "y_retain")

    # ------------------------------------------------------------------ persistence
    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if hasattr(self, "estimator_"):  # skorch fell back to the CPU if need be
            self.device_ = torch.device(self.estimator_.device)

    def _get_state_tensors(self) -> dict[str, torch.Tensor]:
        state = self.estimator_.module_.state_dict()
        return {f"module.{k}": v for k, v in state.items()}

    def _get_json_state(self) -> dict[str, Any]:
        return {
            "classes_": self.classes_.tolist(),
            "classes_dtype": self.classes_.dtype.str,
            "unlearning_history_": self.unlearning_history_,
        }

    def _set_state(self, state, tensors) -> None:
        self.classes_ = np.asarray(state["classes_"], dtype=state["classes_dtype"])
        self.device_ = resolve_device(self.device, fallback_to_cpu=True)
        net = self._new_net().initialize()
        net.module_.load_state_dict(
            {k[7:]: v for k, v in tensors.items() if k.startswith("module.")}
        )
        self.estimator_ = net
        self.unlearning_history_ = list(state["unlearning_history_"])


def _not_among(labels: np.ndarray, classes: np.ndarray) -> list:
    """The distinct ``labels`` that are not among ``classes``.

    Compared as Python values: numpy's ``isin``/``setdiff1d`` compare a string
    label with integer classes as strings, so ``"3"`` would pass for class ``3``.
    """
    known = set(classes.tolist())
    return [label for label in np.unique(labels).tolist() if label not in known]


def _check_converged(net: NeuralNetClassifier, since: int = 0) -> None:
    """Refuse a training run whose loss became NaN or infinite.

    Only the epochs from ``since`` on are this run's (a frozen net's or an
    earlier call's are not). The weights are then meaningless; the caller's
    rollback restores the estimator as it was.
    """
    losses = np.asarray(
        [epoch.get("train_loss", 0.0) for epoch in net.history[since:]],
        dtype=np.float64,
    )
    bad = np.flatnonzero(~np.isfinite(losses))
    if len(bad):
        raise ValueError(
            f"training diverged: train_loss is {losses[bad[0]]} at epoch "
            f"{since + bad[0] + 1}. Lower the net's lr, or check that the module's "
            "outputs are what its criterion expects (logits for "
            "CrossEntropyLoss, probabilities for NLLLoss)."
        )


def _reset_parameters(module: nn.Module) -> None:
    """Draw new weights for every layer of ``module``, in place.

    Raises ``ValueError`` where a layer holds parameters but has no
    ``reset_parameters`` method to draw them with.
    """
    stuck = []
    for name, layer in module.named_modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
        elif any(True for _ in layer.parameters(recurse=False)):
            stuck.append(name or type(layer).__name__)
    if stuck:
        raise ValueError(
            "retraining needs fresh weights, but the frozen net's module was "
            f"passed as an instance and its layers {stuck!r} have no "
            "reset_parameters(); build the net with the module class "
            "(NeuralNetClassifier(MyModule, module__...=...)) instead."
        )


def _indexed(device: torch.device) -> torch.device:
    """``cuda`` as the ``cuda:N`` it stands for, so that the two compare equal."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _skorch_history(net: NeuralNetClassifier) -> list[dict[str, Any]]:
    """skorch's history as plain dicts, without the per-batch records."""
    return [{k: v for k, v in epoch.items() if k != "batches"} for epoch in net.history]


def unlearn_pipeline(
    pipeline: Pipeline,
    X: ArrayLike,
    y: ArrayLike | None = None,
    *,
    classes: ArrayLike | None = None,
    X_retain: ArrayLike | None = None,
    y_retain: ArrayLike | None = None,
) -> Pipeline:
    """Unlearn with the last step of a fitted :class:`~sklearn.pipeline.Pipeline`.

    The data go through the preceding steps' ``transform`` (fitted, unchanged)
    before reaching the unlearner, exactly as at predict time.

    Parameters
    ----------
    pipeline : Pipeline
        Fitted, ending in an unlearner.
    X, y : array-like
        The forget set (``unlearn(X, y)``) or, with ``classes``, the data whose
        rows of those classes are forgotten (``unlearn_classes(classes, X, y)``).
    classes : label or array-like, optional
        Classes to forget (``unlearn_classes``); ``None`` forgets the samples
        ``X`` (``unlearn``).
    X_retain, y_retain : array-like, optional
        Retain data for ``unlearn``, transformed the same way.

    Returns
    -------
    pipeline : Pipeline
        The same pipeline, its last step having forgotten.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sk_o2o.unlearning import FAMRUnlearner, unlearn_pipeline
    >>> X, y = load_digits(return_X_y=True)
    >>> pipe = make_pipeline(StandardScaler(), FAMRUnlearner(random_state=0))
    >>> pipe = pipe.fit(X, y)
    >>> pipe = unlearn_pipeline(pipe, X, y, classes=[3])
    >>> float((pipe.predict(X[y == 3]) == 3).mean()) < 0.1
    True
    """
    if not isinstance(pipeline, Pipeline):
        raise TypeError(
            f"pipeline must be a Pipeline, got {type(pipeline).__name__}; call "
            "an unlearner's own unlearn or unlearn_classes directly."
        )
    if not isinstance(pipeline[-1], BaseUnlearner):
        raise TypeError(
            "pipeline must end in an unlearner (FAMRUnlearner, ...), not in "
            f"{type(pipeline[-1]).__name__}."
        )
    check_is_fitted(pipeline)
    head, unlearner = pipeline[:-1], pipeline[-1]

    def transform(data):
        if data is None or len(head) == 0:  # an empty Pipeline has no transform
            return data
        return head.transform(data)

    if classes is not None:
        if y is None:
            raise ValueError("unlearning classes needs y, the labels of X.")
        unlearner.unlearn_classes(classes, transform(X), y)
    else:
        unlearner.unlearn(
            transform(X), y, X_retain=transform(X_retain), y_retain=y_retain
        )
    return pipeline


def _forward(net: NeuralNetClassifier, X: np.ndarray) -> torch.Tensor:
    """``net.forward(X, training=False, device="cpu")`` without torch's global
    generator: skorch's DataLoader draws a base seed from it for every iterator,
    which would change the caller's random stream and, under the lock that
    guards it, make predictions wait for seeded fits in other threads."""
    batch_size = net.get_params_for("iterator_valid").get("batch_size", net.batch_size)
    dataset = net.get_dataset(X)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=len(dataset) if batch_size == -1 else batch_size,
        generator=torch.Generator(),  # private: shuffle=False draws only its seed
    )
    outputs = [net.evaluation_step(batch, training=False) for batch in loader]
    return torch.cat([output.to("cpu") for output in outputs])


def _writable(X: np.ndarray) -> np.ndarray:
    """``X``, copied if read-only (a float32 DataFrame's values under pandas 3).

    Torch warns on every read-only array it wraps, and skorch wraps each batch.
    """
    return np.require(X, requirements="W")
