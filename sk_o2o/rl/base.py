"""What every RL policy estimator shares: data in, normalisation, buffer, training loop.

A subclass names its algorithm core (``_make_core``) and how one gradient step is
taken (``_update``); everything between the user's arrays and the core's batches
lives here, once.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.utils import RegressorTags
from sklearn.utils.validation import check_is_fitted, validate_data

from sk_o2o._base import (
    TorchEstimator,
    autograd_on,
    check_int,
    find_stack_level,
    progress_bar,
    resolve_device,
    torch_seed_context,
)
from sk_o2o.data.buffer import Batch, TransitionBuffer
from sk_o2o.data.normalization import (
    ActionScaler,
    ObservationScaler,
    check_actions_in_bounds,
    fit_action_scaler,
    fit_observation_scaler,
    reward_scale,
)
from sk_o2o.data.transitions import (
    DatasetLike,
    Transitions,
    as_transitions,
    check_finite,
    check_float_array,
    is_dataset,
    to_numpy,
    warn_if_next_observations_do_not_follow,
)
from sk_o2o.rl._torch_utils import second_thread

if TYPE_CHECKING:  # pragma: no cover
    import gymnasium
    from typing_extensions import Self

__all__ = ["BaseRLPolicy"]


class _LossLog:
    """Averages per-step losses into one ``history_`` record every ``interval``;
    advances ``bar`` by each step and shows the last record's losses.

    ``pending`` continues the steps a previous log left unrecorded (see
    :meth:`pending`), so that a loop of small ``partial_fit`` calls writes one
    record per ``interval`` steps, not one per call.
    """

    def __init__(
        self,
        estimator,
        phase: str,
        interval: int,
        bar,
        pending: dict | None = None,
        *,
        advance_bar: bool = True,
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.estimator, self.phase, self.bar = estimator, phase, bar
        self.interval = max(1, interval)
        # fit_online's bar counts environment steps, not gradient steps
        self.advance_bar = advance_bar
        self.extra = extra  # more fields of each record, e.g. the env step
        self.postfix: dict[str, str] = {}
        pending = pending or {"sums": {}, "counts": {}, "steps": 0}
        self.sums: dict[str, Any] = dict(pending["sums"])
        # some losses are not computed every step
        self.counts: dict[str, int] = dict(pending["counts"])
        self.steps = int(pending["steps"])

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for key, value in losses.items():  # tensors: no device sync until flush
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1
        self.steps += 1
        if self.bar is not None and self.advance_bar:  # every step, not only
            self.bar.update(1)  # when losses are logged
        if self.steps >= self.interval:  # >=: log_interval may have been lowered
            self.flush()

    def flush(self) -> None:
        if self.steps == 0:
            return
        record = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        extra = self.extra() if self.extra is not None else {}
        self.estimator.history_.append(
            {"step": self.estimator.n_updates_, "phase": self.phase, **extra, **record}
        )
        self.show(**record)
        self.sums, self.counts, self.steps = {}, {}, 0

    def show(self, **values: float) -> None:
        """Put ``values`` (losses, an evaluation's return) on the progress bar."""
        if self.bar is not None:
            self.postfix.update({k: f"{v:.3g}" for k, v in values.items()})
            self.bar.set_postfix(self.postfix)

    def pending(self) -> dict[str, Any] | None:
        """The unrecorded steps' sums as plain numbers (for pickles and JSON)."""
        if self.steps == 0:
            return None
        sums = {k: float(v) for k, v in self.sums.items()}
        return {"sums": sums, "counts": dict(self.counts), "steps": self.steps}


_PREDICT_CHUNK = 65_536
_INDEX_CHUNK = 1_000  # gradient steps whose batch indices are drawn at once
# fit_online's evaluation episodes are seeded seed + this, apart from training's
ONLINE_EVAL_SEED_OFFSET = 10_000


class BaseRLPolicy(TorchEstimator):
    """Base class of the offline(-to-online) RL policy estimators.

    For developers: a subclass sets its parameters in ``__init__``, builds its
    algorithm core in ``_make_core(obs_dim, act_dim, device)`` (networks and
    optimisers, an ``nn.Module`` with an ``actor``, a ``critic`` and a
    ``config`` dataclass), names the core and config classes in
    ``_core_class()`` (for :func:`sk_o2o.load`) and takes one gradient step in
    ``_update(batch, phase)``. Everything between the user's data and the
    core's batches is implemented here: validation, normalisation, the device
    buffer, the training loops (``fit``, ``partial_fit``, ``fit_online``),
    prediction, scoring, rollback on errors and persistence. The developer
    guide describes the contract.

    Fitted attributes common to all subclasses: ``core_`` (networks and
    optimisers), ``buffer_`` (device-resident training transitions),
    ``observation_scaler_``, ``action_scaler_``, ``reward_scale_``,
    ``actions_1d_``, ``n_features_in_`` (and ``feature_names_in_``),
    ``action_dim_``, ``n_updates_``, ``n_env_steps_``, ``history_``,
    ``device_`` and ``generator_``; :class:`~sk_o2o.IQLPolicy` describes them.
    """

    _device_attributes: ClassVar[tuple[str, ...]] = ("core_", "buffer_")

    # Parameters read at every step, or only by fit: set_params may change them
    # between partial_fit calls. Every other parameter shaped the fitted model
    # (networks, losses, optimisers, normalisation), so changing it needs a fit.
    _LIVE_PARAMS: ClassVar[frozenset[str]] = frozenset(
        {
            "beta",
            "batch_size",
            "n_steps",
            "log_interval",
            "verbose",
            "random_state",
            "device",
            "actor_lr_schedule",
            "policy_freq",
            "policy_noise",
            "exploration_noise",
            "balance_update_interval",
        }
    )

    # With metadata routing enabled, the transitions' arrays reach fit without
    # set_fit_request calls: an RL policy cannot be fitted without them.
    __metadata_request__fit = {
        "rewards": True,
        "next_observations": True,
        "terminals": True,
        "timeouts": True,
    }
    __metadata_request__partial_fit = __metadata_request__fit

    # Fitted attributes added during 0.1.0.dev0, with the value a pickle from
    # before them stands for (None: no parameter check, nothing pending).
    _LATER_ATTRIBUTES: ClassVar[dict[str, Any]] = {
        "n_env_steps_": 0,
        "_fitted_params": None,
        "_partial_fit_log": None,
        "_behaviour_cloning": False,
    }
    # Set by fit or a first partial_fit on X and y alone (no rewards): every row a
    # zero-reward terminal transition. TD3+BC then leaves out its Q term, whose
    # weight β / mean|Q| would amplify the critic's noise around Q = 0.
    _behaviour_cloning: bool = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "core_" in state:
            state = {**self._LATER_ATTRIBUTES, **state}
        super().__setstate__(state)

    # ------------------------------------------------------------------ to override
    def _make_core(self, obs_dim: int, act_dim: int, device: torch.device):
        raise NotImplementedError

    def _update(self, batch: Batch, phase: str) -> dict[str, torch.Tensor]:
        """One gradient step; ``phase`` is ``"offline"`` (``fit``),
        ``"partial_fit"`` or ``"online"`` (``fit_online``)."""
        raise NotImplementedError

    def _core_class(self):
        raise NotImplementedError

    def _actor_lr_schedule(self, n_steps: int, phase: str) -> Callable | None:
        """``step -> actor learning rate`` for this training phase, or ``None``."""
        return None

    # ------------------------------------------------------------------ sklearn API
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        tags.regressor_tags = RegressorTags(poor_score=True)
        tags.target_tags.required = True
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags

    @autograd_on
    def fit(
        self,
        X: DatasetLike,
        y: ArrayLike | None = None,
        *,
        rewards: ArrayLike | None = None,
        next_observations: ArrayLike | None = None,
        terminals: ArrayLike | None = None,
        timeouts: ArrayLike | None = None,
    ) -> Self:
        """Train from scratch on offline transitions.

        Parameters
        ----------
        X : array-like of shape (n_transitions, obs_dim), or a dataset
            Observations; or a whole dataset: a mapping with D4RL keys
            (``observations``, ``actions``, ``rewards``, ``next_observations``,
            ``terminals``, optional ``timeouts``), a d3rlpy ``MDPDataset`` or
            ``ReplayBuffer``, or a path to an ``.npz``/``.hdf5`` file with those
            keys. Torch tensors are accepted wherever arrays are.
        y : array-like of shape (n_transitions, act_dim) or (n_transitions,)
            Actions taken. Required when ``X`` holds observations; must be
            omitted (None) when ``X`` is a whole dataset, which holds them, as
            must ``rewards``, ``next_observations``, ``terminals`` and
            ``timeouts`` (a ValueError names what was given).
        rewards : array-like of shape (n_transitions,)
            Reward of each transition.
        next_observations : array-like of shape (n_transitions, obs_dim)
            The state each transition led to (for a transition cut by a time
            limit, the true next state, not the next episode's first).
        terminals : array-like of shape (n_transitions,)
            1 where the episode ended in a terminal state (no bootstrapping).
        timeouts : array-like of shape (n_transitions,), optional
            1 where the episode was cut by a time limit.

        Returns
        -------
        self : object
            The fitted estimator.

        Notes
        -----
        If ``rewards``, ``next_observations``, ``terminals`` and ``timeouts``
        are all omitted (with observations as ``X``), every transition is
        treated as a terminal one-step episode with zero reward, and the policy
        is fitted by behaviour cloning of ``y`` (a warning says so): IQL's
        advantages are zero, TD3+BC leaves out its Q term. ``partial_fit`` may
        then go on without them too. Omitting only some of them is a ValueError.

        An error or an interrupt (Ctrl-C) during ``fit`` leaves the estimator as
        it was before the call, fitted or not: ``fit`` is all or nothing, unlike
        skorch, which keeps a model interrupted mid-training. Gradient steps of
        :meth:`partial_fit` and :meth:`fit_online` are kept when interrupted.
        """
        with self._restore_on_error():
            self._validate_params()
            data = self._validated_transitions(
                X, y, rewards, next_observations, terminals, timeouts, reset=True
            )
            self._initialise(data)
            self._train(self.n_steps, phase="offline")
        return self

    @autograd_on
    def partial_fit(
        self,
        X: DatasetLike,
        y: ArrayLike | None = None,
        *,
        rewards: ArrayLike | None = None,
        next_observations: ArrayLike | None = None,
        terminals: ArrayLike | None = None,
        timeouts: ArrayLike | None = None,
        n_updates: int | None = None,
    ) -> Self:
        """Add transitions to the buffer and take gradient steps on the whole buffer.

        This is the online path, and it extends scikit-learn's ``partial_fit``:
        the new transitions join the ones already seen (the buffer keeps the
        offline data), and ``n_updates`` batches are drawn uniformly from the
        whole buffer. On an unfitted estimator the normalisation and action bounds
        are fitted on these transitions. Normalisation fitted by :meth:`fit` is
        kept as it is, so the policy sees new data exactly as it saw the old.

        Parameters
        ----------
        X : array-like of shape (n_transitions, obs_dim), mapping or path
            Observations, or a whole dataset, as in :meth:`fit`.
        y : array-like of shape (n_transitions, act_dim), optional
            As in :meth:`fit`.
        rewards : array-like of shape (n_transitions,), optional
            As in :meth:`fit`.
        next_observations : array-like of shape (n_transitions, obs_dim), optional
            As in :meth:`fit`.
        terminals : array-like of shape (n_transitions,), optional
            As in :meth:`fit`.
        timeouts : array-like of shape (n_transitions,), optional
            As in :meth:`fit`.
        n_updates : int, optional
            Gradient steps to take; default one per new transition.

        Returns
        -------
        self : object
            The estimator, trained ``n_updates`` more steps.

        Notes
        -----
        Parameters and data are validated before anything changes: invalid ones
        raise and leave the estimator as it was. The gradient steps then train in
        place, so an error or an interrupt during them keeps the new transitions
        and the steps already taken, as with scikit-learn's own ``partial_fit``.
        """
        with self._restore_on_error():
            first_call = not hasattr(self, "core_")
            self._validate_params()  # set_params may have changed them since fit
            if not first_call:
                self._check_params_unchanged_since_fit("partial_fit")
            data = self._validated_transitions(
                X, y, rewards, next_observations, terminals, timeouts, reset=first_call
            )
            if n_updates is None:
                n_updates = len(data)
            n_updates = check_int(n_updates, "n_updates", 0)
            if first_call:
                self._warn_about_a_first_partial_fit(len(data))
                self._initialise(data)
            else:
                scaler = self.action_scaler_
                hint = (
                    " They were taken from the actions of the first fit or "
                    "partial_fit call; pass action_bounds=env.action_space (or the "
                    "true action range) to accept every valid action."
                    if self.action_bounds is None
                    else ""
                )
                check_actions_in_bounds(
                    data.actions,
                    scaler.low,
                    scaler.high,
                    "the fitted action bounds",
                    hint,
                )
                if n_updates and not len(self.__dict__.get("buffer_", ())):
                    self._warn_of_an_empty_buffer(
                        "partial_fit", f"these {len(data)} transitions alone"
                    )
                self._append(data)
        self._train(int(n_updates), phase="partial_fit")
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Deterministic actions (the policy's mean), in the units of ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, obs_dim)
            Observations.

        Returns
        -------
        actions : ndarray of shape (n_samples, act_dim) or (n_samples,)
            One action per observation, inside the action bounds; of shape
            (n_samples,) if the estimator was fitted with one-dimensional ``y``.
        """
        obs = self._observations_tensor(X)
        with torch.no_grad():
            normalised = torch.cat(
                [self._policy_mode(o) for o in obs.split(_PREDICT_CHUNK)]
            )
        return self._actions_out(normalised)

    def sample_action(self, X: ArrayLike) -> np.ndarray:
        """Actions sampled from the stochastic policy (exploration).

        Draws from the estimator's own generator, seeded by ``random_state``,
        so the same seed gives the same draws; each call advances it.

        Parameters
        ----------
        X : array-like of shape (n_samples, obs_dim)
            Observations.

        Returns
        -------
        actions : ndarray of shape (n_samples, act_dim) or (n_samples,)
            In the units of ``y``, inside the action bounds.
        """
        obs = self._observations_tensor(X)
        with torch.no_grad():
            noise = torch.randn(
                (len(obs), self.action_dim_),
                generator=self.generator_,
                dtype=torch.float32,
            )
            sampled = self._policy_mode(obs) + self._exploration_std() * noise.to(
                self.device_
            )
        return self._actions_out(sampled)

    def predict_value(self, X: ArrayLike, y: ArrayLike) -> np.ndarray:
        """Q(s, a) of the given state-action pairs, in the units of the rewards.

        The minimum over the critics, divided by the reward scale used in training.
        Unlike ``fit`` and ``partial_fit``, actions outside the fitted action
        bounds are accepted (held-out data may step a little beyond bounds taken
        from the training actions, and the offline scorers evaluate them); the
        critics extrapolate there.

        Parameters
        ----------
        X : array-like of shape (n_samples, obs_dim)
            Observations s.
        y : array-like of shape (n_samples, act_dim) or (n_samples,)
            Actions a, in the units of the training ``y``.

        Returns
        -------
        values : ndarray of shape (n_samples,)
            min_k Q_k(s, a) of each pair, in reward units.
        """
        obs = self._observations_tensor(X)
        actions = np.asarray(to_numpy(y), dtype=np.float32)
        if actions.ndim not in (1, 2):
            raise ValueError(
                f"y must be 1-D or 2-D (n_samples, act_dim), got shape {actions.shape}."
            )
        if len(actions) != len(obs):
            raise ValueError(
                f"y has {len(actions)} actions but X has {len(obs)} observations."
            )
        actions = actions.reshape(len(obs), -1)
        self._check_action_dim(actions)
        check_finite(actions, "y")
        act = self._to_device(self.action_scaler_.transform(actions))
        return self._q_values(obs, act)

    def score(
        self,
        X: ArrayLike,
        y: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> float:
        """Mean estimated value Q(s, π(s)) of the policy's own actions on ``X``.

        Higher is better. An offline estimate from the learned critics: for
        model selection by return in the real environment, use
        :func:`sk_o2o.metrics.make_env_return_scorer`. ``y`` is ignored.

        Parameters
        ----------
        X : array-like of shape (n_samples, obs_dim)
            Observations: the states to evaluate the policy in.
        y : object, default=None
            Ignored; present for scikit-learn's ``score(X, y)`` signature.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the states in the mean; ``None`` weighs
            them equally.

        Returns
        -------
        score : float
            The (weighted) mean of min_k Q_k(s, π(s)), in reward units.
        """
        obs = self._observations_tensor(X)
        weights = None
        if sample_weight is not None:
            weights = check_float_array(sample_weight, "sample_weight", ndim=1)
            if len(weights) != len(obs):
                raise ValueError(
                    f"sample_weight has {len(weights)} entries but X has {len(obs)}."
                )
            if (weights < 0).any() or not weights.sum() > 0:
                raise ValueError(
                    "sample_weight must be non-negative with a positive sum."
                )
        with torch.no_grad():
            actions = self._policy_mode(obs)
        return float(np.average(self._q_values(obs, actions), weights=weights))

    # ------------------------------------------------------------------ internals
    def _snapshot_in_place_state(self) -> Callable[[], None] | None:
        # partial_fit appends to the buffer in place: a failure while appending
        # (e.g. out of device memory) must not leave half the rows behind
        buffer = self.__dict__.get("buffer_")
        if buffer is None:
            return None
        size = len(buffer)

        def restore() -> None:
            buffer.size = size

        return restore

    def _validated_transitions(
        self, X, y, rewards, next_observations, terminals, timeouts, *, reset: bool
    ) -> Transitions:
        X = to_numpy(X)
        columns = getattr(X, "columns", None)
        next_columns = getattr(next_observations, "columns", None)
        if columns is not None and next_columns is not None:
            if list(columns) != list(next_columns):
                raise ValueError(
                    f"next_observations has columns {list(next_columns)!r}, but X "
                    f"has {list(columns)!r}: they must name the same features, in "
                    "the same order."
                )
        cloning = False  # X and y alone: behaviour cloning
        if not is_dataset(X):
            X = validate_data(
                self, X, reset=reset, dtype=np.float32, ensure_all_finite=False
            )
            rl_args = (rewards, next_observations, terminals)
            if all(a is None for a in rl_args) and timeouts is None:
                if y is None:
                    raise ValueError(
                        f"{type(self).__name__} requires y to be passed, but the "
                        "target y is None: y holds the actions taken in X."
                    )
                if not reset and not self._behaviour_cloning:
                    raise ValueError(
                        "partial_fit got no rewards, next_observations or "
                        f"terminals, but this {type(self).__name__} was fitted on "
                        "transitions with them: pass them too. (Rows without them "
                        "would be zero-reward terminal transitions, wrong values "
                        "for its critics; only a policy fitted on X and y alone "
                        "continues on X and y alone.)"
                    )
                warnings.warn(
                    f"{'fit' if reset else 'partial_fit'} got no rewards, "
                    "next_observations or terminals: every transition is a terminal "
                    "one-step episode with zero reward, so the policy is fitted by "
                    "behaviour cloning of y.",
                    UserWarning,
                    stacklevel=find_stack_level(),
                )
                n = len(X)
                rewards, next_observations, terminals = np.zeros(n), X, np.ones(n)
                cloning = True
        if reset:
            self._behaviour_cloning = cloning
        elif self._behaviour_cloning and not cloning:
            self._rewards_arrive()
        data = as_transitions(
            X,
            y,
            rewards=rewards,
            next_observations=next_observations,
            terminals=terminals,
            timeouts=timeouts,
        )
        obs_dim = data.observations.shape[1]
        if reset and is_dataset(X):  # validate_data has set them for arrays
            self.n_features_in_ = obs_dim
            self.__dict__.pop("feature_names_in_", None)
        elif not reset and obs_dim != self.n_features_in_:
            raise ValueError(
                f"X has {obs_dim} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        if not reset:
            self._check_action_dim(data.actions)
        if reset:
            self.actions_1d_ = data.actions_1d
        warn_if_next_observations_do_not_follow(
            data.observations,
            data.next_observations,
            data.terminals,
            data.timeouts,
            # the reward scale is computed (from episodes) by fit only
            order_matters=reset and self._reward_scaling() == "returns",
        )
        return data

    def _reward_scaling(self) -> str:
        """``reward_scaling`` as fit applies it (FamO2O resolves its per-base default)."""
        return self.reward_scaling

    def _resolved_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with any ``None`` that stands for a default filled in."""
        return params

    def _unused_params(self) -> frozenset[str]:
        """Parameters this configuration never reads (FamO2O's IQL ones on TD3+BC)."""
        return frozenset()

    def _warn_about_a_first_partial_fit(self, n: int) -> None:
        """What a first partial_fit fixes from its batch alone, and how to avoid it."""
        fixed = [
            what
            for what, applies in (
                ("the action bounds", self.action_bounds is None),
                ("the observation normalisation", self.normalize_observations),
                ("the reward scale", self._reward_scaling() != "none"),
            )
            if applies
        ]
        if not fixed:
            return
        listed = ", ".join(fixed[:-1]) + (" and " if len(fixed) > 1 else "") + fixed[-1]
        warnings.warn(
            f"partial_fit on an unfitted {type(self).__name__} fits {listed} on "
            f"these {n} transitions and keeps them for every later call"
            + (
                " (actions outside the bounds are refused then)"
                if self.action_bounds is None
                else ""
            )
            + ". Fit on offline data first, or "
            "pass action_bounds (e.g. env.action_space), "
            "normalize_observations=False and reward_scaling='none'.",
            UserWarning,
            stacklevel=find_stack_level(),
        )

    def _check_params_unchanged_since_fit(self, method: str) -> None:
        """Refuse to go on training a model whose shaping parameters were changed.

        ``partial_fit`` and ``fit_online`` continue the fitted networks and
        optimisers: a new ``gamma`` or ``hidden_sizes`` set since ``fit`` would
        otherwise be silently ignored.
        """
        fitted = self._fitted_params
        if fitted is None:  # pickled by a version that did not record them
            return
        params = self.get_params(deep=False)
        # compared as fit applied them: None and the default it stands for agree
        now, then = self._resolved_params(params), self._resolved_params(fitted)
        changed = [
            # the values as given, or as resolved where only the defaults differ
            f"{name}={then[name]!r} to {now[name]!r}"
            if _same_param(value, fitted[name])
            else f"{name}={fitted[name]!r} to {value!r}"
            for name, value in params.items()
            if name in fitted
            and name not in self._unused_params()
            and not _same_param(now[name], then[name])
        ]
        if changed:
            raise ValueError(
                f"{method} continues the fitted model, but set_params changed "
                f"{', '.join(changed)} since fit, and the fitted networks, "
                "optimisers or normalisation were built with the old value. Call "
                "fit to train with the new value, or set it back."
            )

    def _check_action_dim(self, actions: np.ndarray) -> None:
        if actions.shape[1] != self.action_dim_:
            raise ValueError(
                f"y has {actions.shape[1]} action dimensions, but the policy was "
                f"fitted with {self.action_dim_}."
            )

    def _initialise(self, data: Transitions) -> None:
        device = resolve_device(self.device)
        self.observation_scaler_ = fit_observation_scaler(
            data.observations, self.normalize_observations
        )
        self.action_scaler_ = fit_action_scaler(data.actions, self.action_bounds)
        self.reward_scale_ = reward_scale(
            data.rewards,
            data.terminals,
            data.timeouts,
            self._reward_scaling(),
            observations=data.observations,
            next_observations=data.next_observations,
        )
        with torch_seed_context(self._seed_generator()):
            self.core_ = self._make_core(
                data.observations.shape[1], data.actions.shape[1], device
            )
        self.action_dim_ = data.actions.shape[1]
        self.device_ = device
        self.buffer_ = TransitionBuffer(
            self.n_features_in_, self.action_dim_, device, capacity=len(data)
        )
        self.n_updates_ = 0
        self.n_env_steps_ = 0
        # What the check of partial_fit and fit_online compares (live ones never)
        self._fitted_params = copy.deepcopy(
            {
                name: value
                for name, value in self.get_params(deep=False).items()
                if name not in self._LIVE_PARAMS
            }
        )
        self.history_: list[dict[str, Any]] = []
        self._partial_fit_log: dict[str, Any] | None = None
        self._append(data)

    def _warn_of_an_empty_buffer(self, method: str, trains_on: str) -> None:
        """``method`` is about to train on an empty buffer (e.g. after load)."""
        warnings.warn(
            f"this {type(self).__name__} has no training data in its buffer "
            "(sk_o2o.load does not save the buffer; behaviour cloning's rows leave "
            f"it when rewards arrive), so {method} trains on {trains_on}. Add the "
            "offline data first with partial_fit(..., n_updates=0), or resume from "
            "a pickle, which keeps the buffer.",
            UserWarning,
            stacklevel=find_stack_level(),
        )

    def _rewards_arrive(self) -> None:
        """Transitions with rewards join a policy fitted by behaviour cloning.

        Its buffer holds only cloning's zero-reward terminal rows, wrong values
        for the critics among real transitions: they are dropped, and the policy
        goes on from its weights. (A failed partial_fit restores both.)
        """
        if hasattr(self, "buffer_"):
            self.buffer_.size = 0
        self._behaviour_cloning = False

    def _append(self, data: Transitions) -> None:
        if not hasattr(self, "buffer_"):  # e.g. after sk_o2o.load
            self.buffer_ = TransitionBuffer(
                self.n_features_in_, self.action_dim_, self.device_, len(data)
            )
        # Raw float32 rows are copied to the device once and normalised there in
        # place: no normalised copies of the dataset are made on the host.
        start = len(self.buffer_)
        self.buffer_.append(
            observations=data.observations,
            actions=data.actions,
            rewards=data.rewards,
            next_observations=data.next_observations,
            dones=data.terminals,
        )
        rows = self.buffer_.rows(start)
        self.observation_scaler_.transform_(rows["observations"])
        self.observation_scaler_.transform_(rows["next_observations"])
        self.action_scaler_.transform_(rows["actions"])
        rows["rewards"].mul_(self.reward_scale_)

    def _train(self, n_steps: int, *, phase: str) -> None:
        """``n_steps`` gradient steps on uniformly sampled batches of the buffer."""
        if n_steps == 0:
            return
        self.core_.train()
        with (
            self._training_threads(),
            progress_bar(  # fit's bar stays; a loop of partial_fit calls' do not
                n_steps,
                verbose=self.verbose,
                desc=type(self).__name__,
                leave=phase == "offline",
            ) as bar,
        ):
            # partial_fit's records span calls: one per log_interval steps
            spans_calls = phase == "partial_fit"
            log = _LossLog(
                self,
                phase,
                self.log_interval if spans_calls else min(self.log_interval, n_steps),
                bar,
                self._pop_partial_fit_log() if spans_calls else None,
            )
            schedule = self._actor_lr_schedule(n_steps, phase)
            done = 0
            try:
                while done < n_steps:
                    chunk = min(_INDEX_CHUNK, n_steps - done)
                    for i, step_indices in enumerate(self._batch_indices(chunk)):
                        if schedule is not None:
                            self.core_.set_actor_lr(schedule(done + i))
                        log.add(self._gradient_step(step_indices, phase))
                    done += chunk
            finally:  # partial_fit keeps the steps it took, even when interrupted
                if spans_calls:
                    self._partial_fit_log = log.pending()
            if not spans_calls:
                log.flush()
            if schedule is not None:  # later phases train at the constant rate
                self.core_.set_actor_lr(self.actor_lr)

    @contextlib.contextmanager
    def _training_threads(self) -> Iterator[None]:
        """Cores that can split a step in two halves get a second CPU thread."""
        halves_on = getattr(self.core_, "halves_on", None)
        if halves_on is None:
            yield
            return
        with second_thread(self.device_) as worker, halves_on(worker):
            yield

    def _pop_partial_fit_log(self) -> dict[str, Any] | None:
        pending, self._partial_fit_log = self._partial_fit_log, None
        return pending

    def _flush_partial_fit_log(self) -> None:
        """Record the partial_fit steps not yet averaged into a record."""
        _LossLog(self, "partial_fit", 1, None, self._pop_partial_fit_log()).flush()

    def _batch_indices(self, n_steps: int) -> torch.Tensor:
        # Drawn on a CPU generator so the same seed gives the same batches on every
        # device, and for many steps at once so the device copy is rare.
        indices = torch.randint(
            len(self.buffer_), (n_steps, self.batch_size), generator=self.generator_
        )
        return indices.to(self.device_)

    def _gradient_step(self, indices: torch.Tensor, phase: str):
        losses = self._update(self.buffer_.sample(indices), phase)
        self.n_updates_ += 1
        return losses

    @autograd_on
    def fit_online(
        self,
        env: str | gymnasium.Env,
        n_steps: int,
        *,
        n_updates_per_step: int = 1,
        eval_interval: int | None = None,
        n_eval_episodes: int = 5,
        eval_env: str | gymnasium.Env | None = None,
        seed: int | None = None,
    ) -> Self:
        """Fine-tune by interacting with a gymnasium environment.

        Each environment step acts with :meth:`sample_action` (clipped to the
        environment's action space, which must be a ``Box``), stores the
        transition with the executed action in the buffer (which keeps the
        offline data: both are sampled uniformly; after :func:`sk_o2o.load`,
        which does not save the buffer, it holds only what later calls add) and
        takes
        ``n_updates_per_step`` gradient steps in the ``"online"`` phase. The
        estimator must be fitted first (offline, with :meth:`fit`, or with
        :meth:`partial_fit`).

        Parameters
        ----------
        env : str or gymnasium.Env
            Environment id or instance; its observations must match ``X``.
        n_steps : int
            Environment steps.
        n_updates_per_step : int, default=1
            Gradient steps on the buffer after each environment step (0 only
            collects).
        eval_interval : int, optional
            Every ``eval_interval`` environment steps, and once before the first
            step, the deterministic policy is evaluated on ``eval_env`` for
            ``n_eval_episodes`` episodes. ``None`` disables evaluation.
        n_eval_episodes : int, default=5
            Episodes per evaluation.
        eval_env : str or gymnasium.Env, optional
            The environment of the evaluations. By default a second copy of
            ``env`` made from its spec (``gymnasium.make(env.spec)``: its id,
            keyword arguments, time limit and recreatable wrappers); pass one
            where ``env`` cannot be recreated that way. Only with
            ``eval_interval``.
        seed : int, optional
            Seed of the environment's first reset (later episodes continue its
            generator) and, plus 10,000, of the evaluation episodes. ``None``
            draws one from the estimator's generator, which ``random_state``
            seeds: the run is reproducible, and successive calls see new
            episodes instead of replaying the same ones.

        Returns
        -------
        self : object
            The estimator, fine-tuned on ``n_steps`` environment steps.

        Notes
        -----
        ``history_`` gains the averaged losses (``phase="online"``), one
        record per finished episode (``phase="online_episode"``, with
        ``episode_return``) and one per evaluation (``phase="online_eval"``,
        with ``eval_return``), each with ``env_step``: the environment steps
        taken by every ``fit_online`` call since :meth:`fit`
        (``n_env_steps_``), so a second call continues the first one's curve.
        Each call starts with a reset: the episode still running when a call
        ends is cut there (its transitions stay in the buffer, bootstrapped from
        their next observations, but it gets no ``online_episode`` record). An
        interrupted call (Ctrl-C) keeps the steps it took.
        """
        from sk_o2o.rl.online import _check_env_fits, _opened, copy_env

        check_is_fitted(self)
        self._check_params_unchanged_since_fit("fit_online")
        n_steps = check_int(n_steps, "n_steps", 0)
        n_updates_per_step = check_int(n_updates_per_step, "n_updates_per_step", 0)
        n_eval_episodes = check_int(n_eval_episodes, "n_eval_episodes", 1)
        if eval_interval is not None:
            eval_interval = check_int(eval_interval, "eval_interval", 1)
        # Checked before the first step: gymnasium would refuse a bad seed only
        # at the first reset.
        if seed is not None:
            seed = check_int(seed, "seed", 0)
        if eval_env is not None and eval_interval is None:
            raise ValueError(
                "eval_env is given but eval_interval is None, so it would never be "
                "used; pass eval_interval too."
            )
        if eval_env is not None and eval_env is env and not isinstance(env, str):
            raise ValueError(
                "eval_env is env: each evaluation would reset the environment in "
                "the middle of a training episode. Pass another instance, or leave "
                "eval_env=None for a copy of env."
            )
        if n_steps and n_updates_per_step and self._behaviour_cloning:
            warnings.warn(
                f"this {type(self).__name__} was fitted by behaviour cloning (X and "
                "y without rewards): its buffer's zero-reward terminal rows are "
                "dropped as the environment's transitions arrive, so fit_online "
                "trains on its own transitions alone, its first batches drawn "
                "from one or two of them. Add offline transitions with rewards "
                "first with partial_fit(..., n_updates=0).",
                UserWarning,
                stacklevel=find_stack_level(),
            )
        elif (
            n_steps and n_updates_per_step and not len(self.__dict__.get("buffer_", ()))
        ):
            self._warn_of_an_empty_buffer(
                "fit_online",
                "its own transitions alone, its first batches drawn from one or "
                "two of them",
            )
        with contextlib.ExitStack() as opened:
            # Environments made here (from an id, or the evaluation copy) are
            # closed here; the caller's own are left open.
            env = opened.enter_context(_opened(env))
            if eval_interval is None:
                eval_env = None
            elif eval_env is not None:
                eval_env = opened.enter_context(_opened(eval_env))
                _check_env_fits(self, eval_env, "eval_env")  # before any step
            else:
                eval_env = copy_env(env)
                opened.callback(eval_env.close)
            self._interact(
                env,
                eval_env,
                n_steps,
                n_updates_per_step,
                eval_interval,
                n_eval_episodes,
                seed,
            )
        return self

    def _interact(
        self,
        env,
        eval_env,
        n_steps: int,
        n_updates_per_step: int,
        eval_interval: int | None,
        n_eval_episodes: int,
        seed: int | None,
    ) -> None:
        """The loop of :meth:`fit_online`, on environments it has opened."""
        space = self._checked_action_space(env)
        if self.action_bounds is None and n_steps:
            self._warn_if_bounds_narrower_than(space)
        with (
            self._training_threads(),
            progress_bar(
                n_steps, verbose=self.verbose, desc="online", leave=True
            ) as bar,
        ):
            log = _LossLog(
                self,
                "online",
                self.log_interval,
                bar,
                advance_bar=False,
                extra=lambda: {"env_step": self.n_env_steps_},
            )
            seed, act, convert, obs = self._start_online(
                env, space, seed, eval_env, n_eval_episodes, log
            )
            episode_return = 0.0
            self.core_.train()
            for t in range(1, n_steps + 1):
                # Clipped to the env's action space, as in evaluate_policy; the
                # buffer stores the action the env executed.
                action = convert(act(obs))
                next_obs, reward, terminated, truncated, _ = env.step(action)
                next_obs = np.asarray(next_obs, np.float32)[None]
                if self._behaviour_cloning:
                    self._rewards_arrive()
                self._append(
                    Transitions(
                        obs,
                        np.asarray(action, np.float32).reshape(1, -1),
                        np.asarray([reward], np.float32),
                        next_obs,
                        np.asarray([terminated], np.float32),
                        np.asarray([truncated], np.float32),
                    )
                )
                self.n_env_steps_ += 1
                for step_indices in self._batch_indices(n_updates_per_step):
                    log.add(self._gradient_step(step_indices, "online"))
                episode_return += float(reward)
                obs = next_obs
                if terminated or truncated:
                    self.history_.append(
                        {
                            "step": self.n_updates_,
                            "phase": "online_episode",
                            "env_step": self.n_env_steps_,
                            "episode_return": episode_return,
                        }
                    )
                    obs = np.asarray(env.reset()[0], np.float32)[None]
                    episode_return = 0.0
                if eval_env is not None and t % eval_interval == 0:
                    self._evaluate_online(eval_env, n_eval_episodes, seed, log)
                    self.core_.train()
                bar.update(1)
            log.flush()

    def _start_online(
        self,
        env,
        space,
        seed: int | None,
        eval_env,
        n_eval_episodes: int,
        log: _LossLog,
    ) -> tuple[int, Callable, Callable, np.ndarray]:
        """Seed, acting functions and first observation of a ``fit_online`` call.

        Also records what ``partial_fit`` left pending and evaluates the policy
        the call starts from. Until the first step, a failure (a bad env, a
        failing reset or evaluation) leaves the estimator as it was.
        """
        from sk_o2o.rl.online import _action_converter, _as_act_fn

        with self._restore_on_error():
            if seed is None:
                seed = self._draw_seed()
            act = _as_act_fn(self, space, seed, stochastic=True)
            convert = _action_converter(space)
            obs, _ = env.reset(seed=seed)
            if np.shape(obs) != (self.n_features_in_,):
                raise ValueError(
                    f"env observations have shape {np.shape(obs)}, but the "
                    f"policy was fitted on {self.n_features_in_} features."
                )
            # partial_fit steps not yet averaged into a record get theirs now
            self._flush_partial_fit_log()
            last = [
                (h["env_step"], h["step"])
                for h in self.history_
                if h["phase"] == "online_eval"
            ][-1:]
            if eval_env is not None and last != [(self.n_env_steps_, self.n_updates_)]:
                # the policy the online phase starts from
                self._evaluate_online(eval_env, n_eval_episodes, seed, log)
        # The observation as the policy and the buffer take it
        return seed, act, convert, np.asarray(obs, np.float32)[None]

    def _evaluate_online(
        self, eval_env, n_episodes: int, seed: int, log: _LossLog
    ) -> None:
        """One ``online_eval`` record: the deterministic policy's mean return."""
        from sk_o2o.rl.online import evaluate_policy

        returns = evaluate_policy(
            self, eval_env, n_episodes=n_episodes, seed=seed + ONLINE_EVAL_SEED_OFFSET
        )
        mean_return = float(np.mean(returns))
        self.history_.append(
            {
                "step": self.n_updates_,
                "phase": "online_eval",
                "env_step": self.n_env_steps_,
                "eval_return": mean_return,
            }
        )
        log.show(eval_return=mean_return)

    def _checked_action_space(self, env):
        import gymnasium

        from sk_o2o.rl.online import _check_env_fits

        space = env.action_space
        if not isinstance(space, gymnasium.spaces.Box):
            raise ValueError(
                f"env must have a continuous (Box) action space, got {space}."
            )
        _check_env_fits(self, env)  # the sizes evaluate_policy checks too
        return space

    def _warn_if_bounds_narrower_than(self, space) -> None:
        """Bounds taken from the data's actions can cut off part of ``space``.

        The policy never acts outside its bounds, so fine-tuning would never
        explore the rest of the environment's range; 1 % of a dimension's range
        is allowed for data that only came close to its ends.
        """
        low, high = self.action_scaler_.low, self.action_scaler_.high
        env_low = np.asarray(space.low, dtype=np.float64).reshape(-1)
        env_high = np.asarray(space.high, dtype=np.float64).reshape(-1)
        # per side: a Box may be unbounded on one side of a dimension only
        margin = 0.01 * np.where(
            np.isfinite(env_high - env_low), env_high - env_low, np.abs(high - low)
        )
        cut = np.flatnonzero(
            (np.isfinite(env_low) & (low - env_low > margin))
            | (np.isfinite(env_high) & (env_high - high > margin))
        )
        if len(cut):
            warnings.warn(
                "the action bounds were taken from the data's actions "
                f"(low={np.round(low, 3).tolist()}, high={np.round(high, 3).tolist()}) "
                "and leave out part of env's action space "
                f"(low={env_low.tolist()}, high={env_high.tolist()}; dimensions "
                f"{cut.tolist()}): the policy acts only inside them, online too. "
                "Fit with action_bounds=env.action_space to use the whole range.",
                UserWarning,
                stacklevel=find_stack_level(),
            )

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, dtype=torch.float32).to(self.device_)

    def _observations_tensor(self, X) -> torch.Tensor:
        check_is_fitted(self)
        X = validate_data(
            self, to_numpy(X), reset=False, dtype=np.float32, ensure_all_finite=False
        )
        check_finite(X, "X")
        # Far outside the data the networks would overflow to NaN; 1e4 standard
        # deviations is beyond any state seen in training.
        normalised = np.clip(self.observation_scaler_.transform(X), -1e4, 1e4)
        return self._to_device(normalised)

    def _exploration_std(self) -> torch.Tensor:
        """Standard deviation of :meth:`sample_action`'s noise, ([-1, 1] units)."""
        return self.core_.actor.std()

    def _policy_mode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.core_.actor.mode(obs)

    def _q_values(self, obs: torch.Tensor, actions: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            q = torch.cat(
                [
                    self.core_.critic(o, a).min(0).values
                    for o, a in zip(
                        obs.split(_PREDICT_CHUNK),
                        actions.split(_PREDICT_CHUNK),
                        strict=True,
                    )
                ]
            )
        return q.cpu().numpy().astype(np.float64) / self.reward_scale_

    def _actions_out(self, normalised: torch.Tensor) -> np.ndarray:
        actions = self.action_scaler_.inverse_transform(
            normalised.cpu().numpy().astype(np.float64)
        )
        return actions[:, 0] if self.actions_1d_ else actions

    # ------------------------------------------------------------------ persistence
    def _get_state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"core.{k}": v for k, v in self.core_.state_dict().items()}
        tensors.update(
            {
                "observation_mean": torch.from_numpy(self.observation_scaler_.mean),
                "observation_std": torch.from_numpy(self.observation_scaler_.std),
                "action_low": torch.from_numpy(self.action_scaler_.low),
                "action_high": torch.from_numpy(self.action_scaler_.high),
            }
        )
        return tensors

    def _get_json_state(self) -> dict[str, Any]:
        return {
            "core_config": asdict(self.core_.config),
            "action_dim_": self.action_dim_,
            "actions_1d_": bool(self.actions_1d_),
            "reward_scale_": self.reward_scale_,
            "n_updates_": self.n_updates_,
            "n_env_steps_": self.n_env_steps_,
            "fitted_params": self._fitted_params,
            "partial_fit_log": self._partial_fit_log,
            "behaviour_cloning": self._behaviour_cloning,
        }

    def _set_state(self, state, tensors) -> None:
        device = resolve_device(self.device, fallback_to_cpu=True)
        config = dict(state["core_config"])
        core_cls, config_cls = self._core_class()
        core = core_cls(config_cls(**config), device)
        core.load_state_dict(
            {k[5:]: v for k, v in tensors.items() if k.startswith("core.")}
        )
        self.core_ = core
        self.observation_scaler_ = ObservationScaler(
            tensors["observation_mean"].numpy(), tensors["observation_std"].numpy()
        )
        self.action_scaler_ = ActionScaler(
            tensors["action_low"].numpy(), tensors["action_high"].numpy()
        )
        for key in ("action_dim_", "actions_1d_", "n_updates_"):
            setattr(self, key, state[key])
        self.reward_scale_ = float(state["reward_scale_"])
        self._fitted_params = state.get("fitted_params")
        self.n_env_steps_ = int(state.get("n_env_steps_", 0))
        self._partial_fit_log = state.get("partial_fit_log")
        self._behaviour_cloning = bool(state.get("behaviour_cloning", False))
        self.device_ = device


def _same_param(a: Any, b: Any) -> bool:
    """Whether two values of a parameter are the same, as saved and loaded.

    Arrays, tuples and lists compare by value; a gymnasium Box as its bounds
    (the safe format stores it so); a torch device as its name.
    """
    a, b = _plain_param(a), _plain_param(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(_same_param, a, b))
    return bool(a == b)


def _plain_param(value: Any) -> Any:
    if hasattr(value, "low") and hasattr(value, "high"):  # a gymnasium Box
        return [np.asarray(value.low).tolist(), np.asarray(value.high).tolist()]
    if isinstance(value, (np.ndarray, np.generic, torch.Tensor)):
        return np.asarray(to_numpy(value)).tolist()
    if isinstance(value, torch.device):
        return str(value)
    return value
