"""Roll policies out in Gymnasium environments.

A *policy* is anything that maps a 2-D array of observations ``(n, obs_dim)`` to a
2-D array of actions ``(n, act_dim)``: a fitted estimator with a ``predict`` method
(for instance :class:`sk_o2o.IQLPolicy` or a d3rlpy algorithm), or a plain callable.
:func:`collect_transitions` uses a ``sample_action`` method instead of ``predict``
where the policy has one, to explore with the stochastic policy.

The helpers step one environment, one observation at a time: the policy is called
on a batch of one observation, ``obs[None]`` in float32, and the returned action is
clipped to the action space before it is passed to ``env.step``. A policy fitted
on a DataFrame (one with ``feature_names_in_``) gets that batch as a DataFrame with
its column names.

Gymnasium is an optional dependency (the ``envs`` extra); it is imported when one of
these functions is first called.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from sk_o2o._base import check_int

if TYPE_CHECKING:  # pragma: no cover
    import gymnasium

__all__ = ["collect_transitions", "copy_env", "evaluate_policy", "make_env"]


def _import_gymnasium():
    try:
        import gymnasium
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "sk_o2o.rl.online needs gymnasium: pip install 'sk_o2o[envs]'"
        ) from exc
    return gymnasium


def make_env(env: str | gymnasium.Env, *, seed: int | None = None) -> gymnasium.Env:
    """Return a Gymnasium environment from an id or an existing environment.

    Parameters
    ----------
    env : str or gymnasium.Env
        A registered environment id such as ``"Pendulum-v1"`` (the environment
        is created with :func:`gymnasium.make`, time limit included), or an
        environment, which is returned as is.
    seed : int, default=None
        If given, seeds the action and observation spaces' random generators.
        Episodes are seeded through ``env.reset(seed=...)`` by
        :func:`evaluate_policy` and :func:`collect_transitions`.

    Returns
    -------
    env : gymnasium.Env
        The environment.

    Raises
    ------
    TypeError
        If ``env`` is neither a string nor a :class:`gymnasium.Env`.
    ValueError
        If ``env`` is a string that is not a registered environment id.

    Examples
    --------
    >>> from sk_o2o.rl.online import make_env
    >>> env = make_env("Pendulum-v1", seed=0)
    >>> env.observation_space.shape, env.action_space.shape
    ((3,), (1,))
    """
    gym = _import_gymnasium()
    if isinstance(env, str):
        try:
            made = gym.make(env)
        except gym.error.Error as exc:
            raise ValueError(
                f"env={env!r} is not an environment id that Gymnasium can make: {exc}"
            ) from exc
    elif isinstance(env, gym.Env):
        made = env
    else:
        raise TypeError(
            "env must be a Gymnasium environment id (str) or a gymnasium.Env, "
            f"got {type(env).__name__}."
        )
    if seed is not None:
        made.action_space.seed(int(seed))
        made.observation_space.seed(int(seed))
    return made


@contextlib.contextmanager
def _opened(env: str | gymnasium.Env) -> Iterator[gymnasium.Env]:
    """:func:`make_env`, closing the environment afterwards if it made it."""
    made = make_env(env)
    try:
        yield made
    finally:
        if made is not env:
            made.close()


def copy_env(env: gymnasium.Env) -> gymnasium.Env:
    """Return a second, independent copy of ``env``, made from its spec.

    ``gymnasium.make(env.spec)`` keeps what ``env`` was made with: its id,
    keyword arguments, time limit and the wrappers Gymnasium can recreate.

    Parameters
    ----------
    env : gymnasium.Env
        An environment made with :func:`gymnasium.make` (or :func:`make_env`).

    Returns
    -------
    env : gymnasium.Env
        A new environment; a stateful wrapper (e.g. ``NormalizeObservation``)
        starts afresh in it.

    Raises
    ------
    ValueError
        If ``env`` has no spec or a wrapper that cannot be recreated.

    Examples
    --------
    >>> import gymnasium
    >>> from sk_o2o.rl.online import copy_env
    >>> env = gymnasium.make("Pendulum-v1", max_episode_steps=50, g=2.0)
    >>> twin = copy_env(env)
    >>> twin.spec.max_episode_steps, twin.unwrapped.g
    (50, 2.0)
    """
    gym = _import_gymnasium()
    try:
        if env.spec is None:
            raise ValueError("it has no spec (it was not made with gymnasium.make)")
        return gym.make(env.spec)
    except (ValueError, gym.error.Error) as exc:
        raise ValueError(
            f"cannot make a second copy of env: {str(exc).rstrip('.')}. Pass "
            "eval_env, or set "
            "eval_interval=None."
        ) from exc


def _random_policy(action_space: Any, seed: int) -> Callable[[np.ndarray], Any]:
    """Uniform random actions from a seeded copy of the action space's generator."""
    action_space.seed(int(seed))

    def act(obs: np.ndarray) -> np.ndarray:
        return np.asarray(action_space.sample())[None]

    return act


def _with_feature_names(policy: Any, act: Callable) -> Callable[[np.ndarray], Any]:
    """Give a policy fitted on a DataFrame its observations as one.

    scikit-learn warns on every array passed to an estimator fitted with feature
    names, i.e. on every step of an episode.
    """
    names = getattr(policy, "feature_names_in_", None)
    if names is None:
        return act
    import pandas as pd

    return lambda obs: act(pd.DataFrame(obs, columns=names))


def _as_act_fn(
    policy: Any, action_space: Any, seed: int, *, stochastic: bool
) -> Callable[[np.ndarray], Any]:
    if policy is None:
        return _random_policy(action_space, seed)
    if stochastic and callable(getattr(policy, "sample_action", None)):
        return _with_feature_names(policy, policy.sample_action)
    if callable(getattr(policy, "predict", None)):
        return _with_feature_names(policy, policy.predict)
    if callable(policy):
        return policy
    raise TypeError(
        "policy must have a predict method or be a callable mapping observations "
        f"(n, obs_dim) to actions (n, act_dim), got {type(policy).__name__}."
    )


def _check_env_fits(policy: Any, env: Any, name: str = "env") -> None:
    """Refuse an env whose observations or actions a fitted policy does not fit."""
    # observations are flattened to rows, as collect_transitions stores them
    n_features = getattr(policy, "n_features_in_", None)
    shape = getattr(env.observation_space, "shape", None)
    if n_features is not None and shape is not None and np.prod(shape) != n_features:
        raise ValueError(
            f"{name} observations have shape {tuple(shape)}, but the policy was "
            f"fitted on {n_features} feature{'s' if n_features != 1 else ''}."
        )
    action_dim = getattr(policy, "action_dim_", None)
    shape = getattr(env.action_space, "shape", None)
    if action_dim is not None and shape and int(np.prod(shape)) != action_dim:
        raise ValueError(
            f"{name} actions have shape {tuple(shape)}, but the policy was fitted "
            f"on {action_dim}-dimensional actions."
        )


def _action_converter(action_space: Any) -> Callable[[Any], Any]:
    """Return a function turning a policy's output for one observation into an
    action that ``env.step`` accepts (clipped to a ``Box``)."""
    gym = _import_gymnasium()
    spaces = gym.spaces
    if isinstance(action_space, spaces.Box):
        shape, low, high = action_space.shape, action_space.low, action_space.high
        dtype = action_space.dtype

        def convert(a: Any) -> np.ndarray:
            a = np.asarray(a, dtype=dtype)
            if a.size != int(np.prod(shape)):
                raise ValueError(
                    f"the policy returned {a.size} action values for one "
                    f"observation, but env's action space has shape {shape}."
                )
            return np.clip(a.reshape(shape), low, high)

        return convert
    if isinstance(action_space, spaces.Discrete):

        def convert_discrete(a: Any) -> int:
            return int(np.asarray(a).reshape(-1)[0])

        return convert_discrete
    raise TypeError(
        "only Box and Discrete action spaces are supported, got "
        f"{type(action_space).__name__}."
    )


def evaluate_policy(
    policy: Any,
    env: str | gymnasium.Env,
    *,
    n_episodes: int = 10,
    seed: int = 0,
) -> np.ndarray:
    """Return the undiscounted returns of a policy over whole episodes.

    Parameters
    ----------
    policy : object with a ``predict`` method, callable or None
        Maps observations ``(1, obs_dim)`` to actions ``(1, act_dim)``;
        ``predict`` is used where it exists (deterministic actions of a fitted
        estimator). ``None`` takes uniform random actions, seeded by ``seed``.
    env : str or gymnasium.Env
        Environment id or environment, see :func:`make_env`. An environment
        without a time limit must end its episodes by itself.
    n_episodes : int, default=10
        Number of episodes, at least 1.
    seed : int, default=0
        Episode ``i`` starts from ``env.reset(seed=seed + i)``, so the result
        is deterministic for a deterministic policy.

    Returns
    -------
    returns : ndarray of shape (n_episodes,), dtype float64
        The sum of the rewards of each episode.

    Examples
    --------
    >>> import numpy as np
    >>> from sk_o2o.rl.online import evaluate_policy
    >>> def zero_torque(obs):
    ...     return np.zeros((len(obs), 1))
    >>> returns = evaluate_policy(zero_torque, "Pendulum-v1", n_episodes=3)
    >>> returns.shape, returns.dtype
    ((3,), dtype('float64'))
    """
    n_episodes = check_int(n_episodes, "n_episodes", 1)
    seed = check_int(seed, "seed", 0)
    with _opened(env) as env:
        _check_env_fits(policy, env)
        act = _as_act_fn(policy, env.action_space, seed, stochastic=False)
        convert = _action_converter(env.action_space)
        returns = np.zeros(n_episodes, dtype=np.float64)
        for i in range(n_episodes):
            obs, _ = env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                action = convert(act(np.asarray(obs, dtype=np.float32).reshape(1, -1)))
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns[i] = total
        return returns


def collect_transitions(
    policy: Any,
    env: str | gymnasium.Env,
    *,
    n_steps: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Roll a policy out and record its transitions with D4RL keys.

    Parameters
    ----------
    policy : object with a ``sample_action`` or ``predict`` method, callable or None
        Maps observations ``(1, obs_dim)`` to actions ``(1, act_dim)``.
        ``sample_action`` (stochastic exploration, as in d3rlpy) is preferred
        over ``predict``. ``None`` takes uniform random actions from the action
        space, seeded by ``seed``.
    env : str or gymnasium.Env
        Environment id or environment, see :func:`make_env`.
    n_steps : int
        Number of transitions to record, at least 1. Episodes run back to back;
        the last one is cut when ``n_steps`` is reached.
    seed : int, default=0
        Episode ``i`` starts from ``env.reset(seed=seed + i)``.

    Returns
    -------
    dataset : dict of ndarray
        ``observations`` (n_steps, obs_dim) float32, ``actions``
        (n_steps, act_dim) float32, ``rewards`` (n_steps,) float32,
        ``next_observations`` (n_steps, obs_dim) float32, ``terminals``
        (n_steps,) bool and ``timeouts`` (n_steps,) bool. ``terminals`` marks
        the steps where the environment terminated; ``timeouts`` those where it
        was truncated, plus the last step when it ends no episode, so every
        episode, the last included, is delimited by exactly one of the two
        flags.

    Examples
    --------
    >>> from sk_o2o.rl.online import collect_transitions
    >>> data = collect_transitions(None, "Pendulum-v1", n_steps=300, seed=0)
    >>> data["observations"].shape, data["actions"].shape
    ((300, 3), (300, 1))
    >>> int(data["timeouts"].sum())  # one 200-step episode and a cut one
    2
    """
    n_steps = check_int(n_steps, "n_steps", 1)
    seed = check_int(seed, "seed", 0)
    with _opened(env) as env:
        _check_env_fits(policy, env)
        act = _as_act_fn(policy, env.action_space, seed, stochastic=True)
        convert = _action_converter(env.action_space)
        obs_dim = int(np.prod(env.observation_space.shape))
        act_shape = env.action_space.shape or ()
        act_dim = int(np.prod(act_shape)) if act_shape else 1

        observations = np.empty((n_steps, obs_dim), dtype=np.float32)
        actions = np.empty((n_steps, act_dim), dtype=np.float32)
        rewards = np.empty(n_steps, dtype=np.float32)
        next_observations = np.empty((n_steps, obs_dim), dtype=np.float32)
        terminals = np.zeros(n_steps, dtype=bool)
        timeouts = np.zeros(n_steps, dtype=bool)

        episode = 0
        obs, _ = env.reset(seed=seed)
        for t in range(n_steps):
            observations[t] = np.ravel(obs)
            action = convert(act(observations[t][None]))
            actions[t] = np.ravel(action)
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards[t] = reward
            next_observations[t] = np.ravel(obs)
            if terminated:
                terminals[t] = True
            elif truncated:
                timeouts[t] = True
            if terminated or truncated:
                episode += 1
                obs, _ = env.reset(seed=seed + episode)
    if not terminals[-1]:
        timeouts[-1] = True
    return {
        "observations": observations,
        "actions": actions,
        "rewards": rewards,
        "next_observations": next_observations,
        "terminals": terminals,
        "timeouts": timeouts,
    }
