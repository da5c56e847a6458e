"""Scorers for model selection of RL policies with ``GridSearchCV``.

- :func:`make_env_return_scorer`: the mean return of the deterministic policy in a
  gymnasium environment, optionally D4RL-normalised. Needs no metadata.
- :data:`td_error_scorer` and :data:`initial_state_value_scorer`: offline scores
  on held-out transitions. They need ``rewards``/``next_observations``/
  ``terminals``/``timeouts`` and receive them through scikit-learn's metadata
  routing (``sklearn.set_config(enable_metadata_routing=True)``); they request
  them by default, and so do the estimators' ``fit``.

All scorers follow scikit-learn's convention: greater is better.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
import weakref
from typing import TYPE_CHECKING

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils.metadata_routing import UNUSED, _MetadataRequester
from sklearn.utils.validation import validate_data

from sk_o2o._base import check_int
from sk_o2o.data.transitions import as_transitions, episode_ids

if TYPE_CHECKING:  # pragma: no cover
    import gymnasium

__all__ = [
    "EnvReturnScorer",
    "InitialStateValueScorer",
    "TDErrorScorer",
    "initial_state_value_scorer",
    "make_env_return_scorer",
    "td_error_scorer",
]


# An environment instance steps one episode at a time: scorers called from
# threads (joblib's threading backend) on the same instance take turns, each
# instance with its own lock. An id gives each call its own environment.
_ENV_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ENV_LOCKS_GUARD = threading.Lock()


def _env_lock(env) -> threading.Lock:
    with _ENV_LOCKS_GUARD:
        return _ENV_LOCKS.setdefault(env, threading.Lock())


def _new_locks_in_forked_child() -> None:
    # Locks held by a parent's thread would stay held in a forked child.
    global _ENV_LOCKS, _ENV_LOCKS_GUARD
    _ENV_LOCKS, _ENV_LOCKS_GUARD = weakref.WeakKeyDictionary(), threading.Lock()


os.register_at_fork(after_in_child=_new_locks_in_forked_child)


class EnvReturnScorer:
    """Mean episode return of ``estimator.predict`` in an environment.

    Use :func:`make_env_return_scorer` to build one: it checks the arguments.
    The scorer is called as scikit-learn calls scorers,
    ``scorer(estimator, X=None, y=None)``: it runs ``n_episodes`` episodes of
    the fitted ``estimator`` (anything with ``predict``, e.g. a policy or a
    Pipeline ending in one) with deterministic actions and returns their mean
    return, a float; ``X`` and ``y`` are ignored.

    Parameters
    ----------
    env : str or gymnasium.Env
        Environment id or instance.
    n_episodes : int
        Evaluation episodes, reset with seeds ``seed, seed + 1, ...``.
    seed : int
        Seed of the first evaluation episode's reset.
    reference_returns : (float, float) or None
        ``(random_return, expert_return)``: the score is then D4RL-normalised,
        ``100 * (R - random) / (expert - random)``. ``None`` scores the raw return.
    """

    def __init__(self, env, n_episodes: int, seed: int, reference_returns):
        self.env = env
        self.n_episodes = n_episodes
        self.seed = seed
        self.reference_returns = reference_returns

    def __call__(self, estimator, X=None, y=None) -> float:
        from sk_o2o.datasets import normalized_score
        from sk_o2o.rl.online import evaluate_policy

        shared = not isinstance(self.env, str)
        with _env_lock(self.env) if shared else contextlib.nullcontext():
            returns = evaluate_policy(
                estimator, self.env, n_episodes=self.n_episodes, seed=self.seed
            )
        score = float(np.mean(returns))
        if self.reference_returns is not None:
            score = normalized_score(score, *self.reference_returns)
        return score

    def __repr__(self) -> str:
        return (
            f"make_env_return_scorer({self.env!r}, n_episodes={self.n_episodes}, "
            f"seed={self.seed}, reference_returns={self.reference_returns!r})"
        )


def make_env_return_scorer(
    env: str | gymnasium.Env,
    *,
    n_episodes: int = 5,
    seed: int = 0,
    reference_returns: tuple[float, float] | None = None,
) -> EnvReturnScorer:
    """A scorer returning the policy's mean return in ``env``.

    Parameters
    ----------
    env : str or gymnasium.Env
        Environment id (e.g. ``"Pendulum-v1"``) or instance.
    n_episodes : int, default=5
        Evaluation episodes, reset with seeds ``seed, seed + 1, ...``.
    seed : int, default=0
        Seed of the first episode's reset; the same seed scores every candidate
        on the same episodes.
    reference_returns : (random_return, expert_return), optional
        If given, the score is D4RL-normalised:
        ``100 * (R - random) / (expert - random)``.

    Returns
    -------
    scorer : EnvReturnScorer
        Callable as ``scorer(estimator, X, y)``; ``X`` and ``y`` are ignored.

    Examples
    --------
    >>> from sk_o2o.metrics import make_env_return_scorer
    >>> scorer = make_env_return_scorer("Pendulum-v1", n_episodes=2)
    >>> scorer  # doctest: +ELLIPSIS
    make_env_return_scorer('Pendulum-v1', n_episodes=2, ...)
    """
    n_episodes = check_int(n_episodes, "n_episodes", 1)
    seed = check_int(seed, "seed", 0)
    if reference_returns is not None:
        low, high = (float(v) for v in reference_returns)
        if not high > low:
            raise ValueError(
                "reference_returns must be (random_return, expert_return) with "
                f"expert > random, got {reference_returns!r}."
            )
        reference_returns = (low, high)
    return EnvReturnScorer(env, n_episodes, seed, reference_returns)


def _policy_and_features(estimator, X):
    """The final estimator, and X through a Pipeline's earlier steps.

    ``next_observations`` are not transformed: ``Pipeline.fit`` hands them to the
    policy as they are, so they must already be in the policy's input space, and
    the scorer takes them as ``fit`` did.
    """
    if isinstance(estimator, Pipeline):
        if len(estimator) > 1:  # an empty Pipeline has no transform
            X = estimator[:-1].transform(X)
        estimator = estimator[-1]
    return estimator, X


class _OfflineScorer(_MetadataRequester):
    # The transitions' other arrays are requested by default, so routing works
    # without set_score_request calls; the estimator argument is not metadata.
    __metadata_request__score = {
        "estimator": UNUSED,
        "rewards": True,
        "next_observations": True,
        "terminals": True,
        "timeouts": True,
    }

    def score(
        self,
        estimator,
        X,
        y=None,
        *,
        rewards=None,
        next_observations=None,
        terminals=None,
        timeouts=None,
    ) -> float:
        """Score a policy on held-out transitions (greater is better).

        The scorer is also called this way, as scikit-learn calls scorers:
        ``scorer(estimator, X, y, rewards=..., next_observations=...,
        terminals=..., timeouts=...)``. With metadata routing enabled
        (``sklearn.set_config(enable_metadata_routing=True)``), ``GridSearchCV``
        and ``cross_validate`` pass the held-out part of the arrays given to
        their ``fit`` / ``params``: the scorer requests them by default.

        Parameters
        ----------
        estimator : estimator
            A fitted policy, or a :class:`~sklearn.pipeline.Pipeline` ending in
            one: ``X`` then goes through the earlier steps' ``transform``, and
            ``next_observations`` are taken as they are, as ``Pipeline.fit``
            passes them to the policy.
        X : array-like of shape (n_transitions, obs_dim)
            Observations of the held-out transitions.
        y : array-like of shape (n_transitions, act_dim) or (n_transitions,)
            Their actions. Required: the default ``None`` only follows
            scikit-learn's scorer signature, and raises a ValueError.
        rewards : array-like of shape (n_transitions,)
            Their rewards. Required, as ``next_observations`` and ``terminals``:
            ``None`` raises a ValueError that explains metadata routing.
        next_observations : array-like of shape (n_transitions, obs_dim)
            The states the transitions led to.
        terminals : array-like of shape (n_transitions,)
            1 where the episode ended in a terminal state.
        timeouts : array-like of shape (n_transitions,), optional
            1 where a time limit cut the episode.

        Returns
        -------
        score : float
            :class:`TDErrorScorer`: the negative mean squared TD error;
            :class:`InitialStateValueScorer`: the mean value of the episodes'
            first states.
        """
        if rewards is None or next_observations is None or terminals is None:
            raise ValueError(
                f"{type(self).__name__} needs rewards, next_observations and "
                "terminals of the held-out transitions: enable metadata routing "
                "with sklearn.set_config(enable_metadata_routing=True) and pass "
                "them to GridSearchCV.fit / cross_validate(params=...)."
            )
        policy, X = _policy_and_features(estimator, X)
        if hasattr(X, "columns"):  # checked here: as_transitions drops the names
            validate_data(policy, X, reset=False, skip_check_array=True)
        data = as_transitions(
            X,
            y,
            rewards=rewards,
            next_observations=next_observations,
            terminals=terminals,
            timeouts=timeouts,
        )
        with warnings.catch_warnings():  # the names were checked above
            warnings.filterwarnings("ignore", "X does not have valid feature names")
            return self._score(policy, data)

    __call__ = score

    def _score(self, policy, data) -> float:
        raise NotImplementedError


class TDErrorScorer(_OfflineScorer):
    """Negative mean squared TD error of the critic on held-out transitions.

    ``Q(s, a) − r − γ(1 − d) Q(s', π(s'))``, as d3rlpy's ``TDErrorEvaluator``:
    how well the critic explains unseen data (lower error, higher score).

    Examples
    --------
    >>> from sk_o2o import IQLPolicy
    >>> from sk_o2o.datasets import load_dataset
    >>> from sk_o2o.metrics import td_error_scorer
    >>> data = load_dataset("pendulum-medium-replay-v0")
    >>> policy = IQLPolicy(n_steps=100, hidden_sizes=(32, 32), random_state=0)
    >>> policy = policy.fit(data)
    >>> # held-out transitions in practice (GridSearchCV routes them to the scorer)
    >>> score = td_error_scorer(
    ...     policy, data.observations, data.actions, rewards=data.rewards,
    ...     next_observations=data.next_observations, terminals=data.terminals,
    ...     timeouts=data.timeouts)
    >>> score <= 0.0
    True
    """

    def _score(self, policy, data) -> float:
        q = policy.predict_value(data.observations, data.actions)
        next_q = policy.predict_value(
            data.next_observations, policy.predict(data.next_observations)
        )
        gamma = policy.core_.config.gamma  # the critics' own, whatever set_params says
        target = data.rewards + gamma * (1.0 - data.terminals) * next_q
        return -float(np.mean((q - target) ** 2))


class InitialStateValueScorer(_OfflineScorer):
    """Mean estimated value Q(s₀, π(s₀)) over the episodes' first states.

    Episode starts are found from ``terminals``/``timeouts`` and from jumps
    between ``next_observations`` and the following observations (held-out folds
    from ``GroupKFold`` over episodes keep episodes whole and in order).

    Examples
    --------
    >>> import numpy as np
    >>> from sk_o2o import IQLPolicy
    >>> from sk_o2o.datasets import load_dataset
    >>> from sk_o2o.metrics import initial_state_value_scorer
    >>> data = load_dataset("pendulum-medium-replay-v0")
    >>> policy = IQLPolicy(n_steps=100, hidden_sizes=(32, 32), random_state=0)
    >>> policy = policy.fit(data)
    >>> # held-out transitions in practice (GridSearchCV routes them to the scorer)
    >>> score = initial_state_value_scorer(
    ...     policy, data.observations, data.actions, rewards=data.rewards,
    ...     next_observations=data.next_observations, terminals=data.terminals,
    ...     timeouts=data.timeouts)
    >>> bool(np.isfinite(score))
    True
    """

    def _score(self, policy, data) -> float:
        ids = episode_ids(
            data.terminals,
            data.timeouts,
            observations=data.observations,
            next_observations=data.next_observations,
        )
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        s0 = data.observations[starts]
        return float(np.mean(policy.predict_value(s0, policy.predict(s0))))


td_error_scorer = TDErrorScorer()
"""A :class:`TDErrorScorer`, for ``scoring=`` in ``GridSearchCV`` or
``cross_validate``; called as described in :meth:`TDErrorScorer.score`."""

initial_state_value_scorer = InitialStateValueScorer()
"""An :class:`InitialStateValueScorer`, for ``scoring=`` in ``GridSearchCV`` or
``cross_validate``; called as described in :meth:`InitialStateValueScorer.score`."""
