"""What every RL policy estimator shares: data in, normalisation, buffer, training loop.

A subclass names its algorithm core (``_make_core``) and how one gradient step is
taken (``_update``); everything between the user's arrays and the core's batches
lives here, once.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.utils._tags import RegressorTags
from sklearn.utils.validation import check_is_fitted, validate_data

from sk_o2o._base import (
    TorchEstimator,
    progress_bar,
    resolve_device,
    seed_from_random_state,
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
    Transitions,
    as_transitions,
    check_finite,
    is_dataset,
    to_numpy,
)

__all__ = ["BaseRLPolicy"]

_PREDICT_CHUNK = 65_536
_INDEX_CHUNK = 1_000  # gradient steps whose batch indices are drawn at once


class BaseRLPolicy(TorchEstimator):
    """Base class of the offline(-to-online) RL policy estimators.

    Fitted attributes common to all subclasses: ``core_`` (networks and
    optimisers), ``buffer_`` (device-resident training transitions),
    ``observation_scaler_``, ``action_scaler_``, ``reward_scale_``,
    ``n_features_in_``, ``action_dim_``, ``n_updates_``, ``history_`` and
    ``device_``.
    """

    _device_attributes: ClassVar[tuple[str, ...]] = ("core_", "buffer_")

    # With metadata routing enabled, the transitions' arrays reach fit without
    # set_fit_request calls: an RL policy cannot be fitted without them.
    __metadata_request__fit = {
        "rewards": True,
        "next_observations": True,
        "terminals": True,
        "timeouts": True,
    }
    __metadata_request__partial_fit = __metadata_request__fit

    # ------------------------------------------------------------------ to override
    def _make_core(self, obs_dim: int, act_dim: int, device: torch.device):
        raise NotImplementedError

    def _update(self, batch: Batch, phase: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _core_class(self):
        raise NotImplementedError

    # ------------------------------------------------------------------ sklearn API
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        tags.regressor_tags = RegressorTags(poor_score=True)
        tags.target_tags.required = True
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags

    def fit(
        self,
        X,
        y=None,
        *,
        rewards=None,
        next_observations=None,
        terminals=None,
        timeouts=None,
    ):
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
            Actions taken.
        rewards : array-like of shape (n_transitions,)
        next_observations : array-like of shape (n_transitions, obs_dim)
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
        If ``rewards``, ``next_observations`` and ``terminals`` are all omitted,
        every transition is treated as a terminal one-step episode with zero
        reward: all advantages are zero and the policy is fitted by behaviour
        cloning of ``y`` (a warning says so).
        """
        with self._restore_on_error():
            self._validate_params()
            data = self._validated_transitions(
                X, y, rewards, next_observations, terminals, timeouts, reset=True
            )
            self._initialise(data)
            self._train(self.n_steps, phase="offline")
        return self

    def partial_fit(
        self,
        X,
        y=None,
        *,
        rewards=None,
        next_observations=None,
        terminals=None,
        timeouts=None,
        n_updates: int | None = None,
    ):
        """Add transitions to the buffer and take gradient steps on the whole buffer.

        This is the online path, and it extends scikit-learn's ``partial_fit``:
        the new transitions join the ones already seen (the buffer keeps the
        offline data), and ``n_updates`` batches are drawn uniformly from the
        whole buffer. On an unfitted estimator the normalisation and action bounds
        are fitted on these transitions. Normalisation fitted by :meth:`fit` is
        kept as it is, so the policy sees new data exactly as it saw the old.

        Parameters
        ----------
        X, y, rewards, next_observations, terminals, timeouts
            As in :meth:`fit`.
        n_updates : int, optional
            Gradient steps to take; default one per new transition.

        Returns
        -------
        self : object
        """
        with self._restore_on_error():
            first_call = not hasattr(self, "core_")
            if first_call:
                self._validate_params()
            data = self._validated_transitions(
                X, y, rewards, next_observations, terminals, timeouts, reset=first_call
            )
            if n_updates is None:
                n_updates = len(data)
            if isinstance(n_updates, bool) or not isinstance(
                n_updates, (int, np.integer)
            ):
                raise TypeError(f"n_updates must be an int, got {n_updates!r}.")
            if n_updates < 0:
                raise ValueError(f"n_updates must be >= 0, got {n_updates}.")
            if first_call:
                self._initialise(data)
            else:
                scaler = self.action_scaler_
                check_actions_in_bounds(
                    data.actions, scaler.low, scaler.high, "the fitted action bounds"
                )
                self._append(data)
        self._train(int(n_updates), phase="partial_fit")
        return self

    def predict(self, X) -> np.ndarray:
        """Deterministic actions (the policy's mean), in the units of ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, obs_dim)

        Returns
        -------
        actions : ndarray of shape (n_samples, act_dim), or (n_samples,) if the
            estimator was fitted with one-dimensional ``y``
        """
        obs = self._observations_tensor(X)
        with torch.no_grad():
            normalised = torch.cat(
                [self._policy_mode(o) for o in obs.split(_PREDICT_CHUNK)]
            )
        return self._actions_out(normalised)

    def sample_action(self, X) -> np.ndarray:
        """Actions sampled from the stochastic policy (exploration).

        Draws from the estimator's own generator, seeded by ``random_state``.
        """
        obs = self._observations_tensor(X)
        with torch.no_grad():
            noise_free = self._policy_mode(obs)
            std = self.core_.actor.log_std.clamp(-5.0, 2.0).exp()
            noise = torch.randn(noise_free.shape, generator=self.generator_)
            sampled = noise_free + std * noise.to(noise_free.device)
        return self._actions_out(sampled)

    def predict_value(self, X, y) -> np.ndarray:
        """Q(s, a) of the given state-action pairs, in the units of the rewards.

        The minimum over the critics, divided by the reward scale used in training.

        Parameters
        ----------
        X : array-like of shape (n_samples, obs_dim)
        y : array-like of shape (n_samples, act_dim) or (n_samples,)

        Returns
        -------
        values : ndarray of shape (n_samples,)
        """
        obs = self._observations_tensor(X)
        actions = np.asarray(to_numpy(y), dtype=np.float32)
        if len(actions) != len(obs):
            raise ValueError(
                f"y has {len(actions)} actions but X has {len(obs)} observations."
            )
        actions = actions.reshape(len(obs), -1)
        if actions.shape[1] != self.action_dim_:
            raise ValueError(
                f"y has {actions.shape[1]} action dimensions, but the policy was "
                f"fitted with {self.action_dim_}."
            )
        check_finite(actions, "y")
        act = self._to_device(self.action_scaler_.transform(actions))
        return self._q_values(obs, act)

    def score(self, X, y=None) -> float:
        """Mean estimated value Q(s, π(s)) of the policy's own actions on ``X``.

        Higher is better. An offline estimate from the learned critics: for
        model selection by return in the real environment, use
        :func:`sk_o2o.metrics.make_env_return_scorer`. ``y`` is ignored.

        Parameters
        ----------
        X : array-like of shape (n_samples, obs_dim)
        y : ignored

        Returns
        -------
        score : float
        """
        obs = self._observations_tensor(X)
        with torch.no_grad():
            actions = self._policy_mode(obs)
        return float(self._q_values(obs, actions).mean())

    # ------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _restore_on_error(self) -> Iterator[None]:
        """A failed fit leaves a previously fitted estimator exactly as it was."""
        saved = self.__dict__.copy()
        try:
            yield
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _validated_transitions(
        self, X, y, rewards, next_observations, terminals, timeouts, *, reset: bool
    ) -> Transitions:
        X = to_numpy(X)
        if isinstance(X, np.ndarray) or not is_dataset(X):
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
                warnings.warn(
                    "fit got no rewards, next_observations or terminals: every "
                    "transition is a terminal one-step episode with zero reward, so "
                    "the policy is fitted by behaviour cloning of y.",
                    UserWarning,
                    stacklevel=3,
                )
                n = len(X)
                rewards, next_observations, terminals = np.zeros(n), X, np.ones(n)
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
        if not reset and data.actions.shape[1] != self.action_dim_:
            raise ValueError(
                f"y has {data.actions.shape[1]} action dimensions, but the policy "
                f"was fitted with {self.action_dim_}."
            )
        if reset:
            self.actions_1d_ = y is not None and np.asarray(to_numpy(y)).ndim == 1
        return data

    def _initialise(self, data: Transitions) -> None:
        device = resolve_device(self.device)
        self.observation_scaler_ = fit_observation_scaler(
            data.observations, self.normalize_observations
        )
        self.action_scaler_ = fit_action_scaler(data.actions, self.action_bounds)
        self.reward_scale_ = reward_scale(
            data.rewards, data.terminals, data.timeouts, self.reward_scaling
        )
        seed = seed_from_random_state(self.random_state)
        with torch_seed_context(seed):
            self.core_ = self._make_core(
                data.observations.shape[1], data.actions.shape[1], device
            )
        self.generator_ = torch.Generator().manual_seed(seed)
        self.action_dim_ = data.actions.shape[1]
        self.device_ = device
        self.buffer_ = TransitionBuffer(
            self.n_features_in_, self.action_dim_, device, capacity=len(data)
        )
        self.n_updates_ = 0
        self.history_: list[dict[str, Any]] = []
        self._append(data)

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
        size, device = len(self.buffer_), self.device_
        log_interval = max(1, min(self.log_interval, n_steps))
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}  # some losses are not computed every step
        since_log = 0
        self.core_.train()
        with progress_bar(
            n_steps, verbose=self.verbose, desc=type(self).__name__
        ) as bar:
            done = 0
            while done < n_steps:
                chunk = min(_INDEX_CHUNK, n_steps - done)
                # Indices come from a CPU generator so the same seed gives the same
                # batches on every device.
                indices = torch.randint(
                    size, (chunk, self.batch_size), generator=self.generator_
                ).to(device)
                for step_indices in indices:
                    losses = self._update(self.buffer_.sample(step_indices), phase)
                    for key, value in losses.items():
                        sums[key] = sums[key] + value if key in sums else value
                        counts[key] = counts.get(key, 0) + 1
                    since_log += 1
                    self.n_updates_ += 1
                    done += 1
                    if since_log == log_interval or done == n_steps:
                        record = {k: float(v) / counts[k] for k, v in sums.items()}
                        self.history_.append(
                            {"step": self.n_updates_, "phase": phase, **record}
                        )
                        bar.set_postfix({k: f"{v:.3g}" for k, v in record.items()})
                        bar.update(since_log)
                        sums, counts, since_log = {}, {}, 0

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
                "generator_state": self.generator_.get_state(),
            }
        )
        return tensors

    def _get_json_state(self) -> dict[str, Any]:
        state = {
            "core_config": asdict(self.core_.config),
            "n_features_in_": self.n_features_in_,
            "action_dim_": self.action_dim_,
            "actions_1d_": bool(self.actions_1d_),
            "reward_scale_": self.reward_scale_,
            "n_updates_": self.n_updates_,
            "history_": self.history_,
        }
        if hasattr(self, "feature_names_in_"):
            state["feature_names_in_"] = list(self.feature_names_in_)
        return state

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
        self.generator_ = torch.Generator()
        self.generator_.set_state(tensors["generator_state"])
        for key in ("n_features_in_", "action_dim_", "actions_1d_", "n_updates_"):
            setattr(self, key, state[key])
        self.reward_scale_ = float(state["reward_scale_"])
        self.history_ = list(state["history_"])
        if "feature_names_in_" in state:
            self.feature_names_in_ = np.asarray(
                state["feature_names_in_"], dtype=object
            )
        self.device_ = device
