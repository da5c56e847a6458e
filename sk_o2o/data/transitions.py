"""Transitions: the one container every RL estimator trains on, and its converters.

Estimators accept data the scikit-learn way, ``fit(X, y, *, rewards,
next_observations, terminals, timeouts=None)`` with ``X`` the observations and
``y`` the actions, or as one dataset: a mapping with D4RL keys, a d3rlpy
``MDPDataset``/``ReplayBuffer``, or a path to an ``.npz``/``.hdf5`` file with D4RL
keys. :func:`as_transitions` turns any of these into validated float32 arrays.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeAlias

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.sparse import issparse
from sklearn.utils.validation import check_array, check_consistent_length

from sk_o2o._base import find_stack_level

__all__ = [
    "D4RL_KEYS",
    "DatasetLike",
    "Transitions",
    "as_transitions",
    "check_finite",
    "check_flags",
    "check_float_array",
    "episode_ends",
    "episode_ids",
    "is_dataset",
    "to_numpy",
]

DatasetLike: TypeAlias = ArrayLike | Mapping[str, ArrayLike] | str | os.PathLike | Any
"""What ``fit``'s ``X`` may be: observations, or a whole dataset.

A dataset is a mapping with the :data:`D4RL_KEYS`, a path to an ``.npz`` or
``.hdf5`` file holding them, or a d3rlpy ``MDPDataset`` / ``ReplayBuffer`` (which
is ``Any`` here: d3rlpy is an optional dependency).
"""

D4RL_KEYS = (
    "observations",
    "actions",
    "rewards",
    "next_observations",
    "terminals",
    "timeouts",
)
"""The keys of a dataset, as D4RL names them; ``timeouts`` may be missing."""


@dataclass(frozen=True)
class Transitions:
    """Validated transitions as float32 numpy arrays (``timeouts`` may be None).

    ``actions`` is always 2-D; ``actions_1d`` says whether they were given 1-D, so
    that ``predict`` can answer in the same shape. Made by :func:`as_transitions`.

    Parameters
    ----------
    observations : ndarray of shape (n_transitions, obs_dim)
        The states the actions were taken in.
    actions : ndarray of shape (n_transitions, act_dim)
        The actions taken.
    rewards : ndarray of shape (n_transitions,)
        The rewards received.
    next_observations : ndarray of shape (n_transitions, obs_dim)
        The states the actions led to.
    terminals : ndarray of shape (n_transitions,)
        1.0 where the episode ended in a terminal state, else 0.0.
    timeouts : ndarray of shape (n_transitions,) or None, default=None
        1.0 where a time limit cut the episode, else 0.0; None if not given.
    actions_1d : bool, default=False
        Whether the actions were given as a 1-D array.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray | None = None
    actions_1d: bool = False

    def __len__(self) -> int:
        return len(self.observations)

    def as_dict(self) -> dict[str, np.ndarray]:
        """The transitions as a dict with D4RL keys.

        Returns
        -------
        arrays : dict of str to ndarray
            One entry per array field (``timeouts`` only when given).
        """
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        }


def check_flags(value, name: str, n: int | None = None) -> np.ndarray:
    """Episode flags as a boolean array, refusing anything but 0/1 or booleans."""
    arr = np.asarray(to_numpy(value))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}.")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} elements, expected {n}.")
    if arr.dtype != bool:
        bad = np.flatnonzero((arr != 0) & (arr != 1))
        if len(bad):
            raise ValueError(
                f"{name} must hold 0/1 or booleans; index {bad[0]} is {arr[bad[0]]}."
            )
        arr = arr.astype(bool)
    return arr


def episode_ends(
    terminals,
    timeouts=None,
    n: int | None = None,
    *,
    observations=None,
    next_observations=None,
) -> np.ndarray:
    """Validated boolean flags: True where an episode ends.

    With ``observations`` and ``next_observations``, an episode also ends where
    the data jump: ``next_observations[i]`` is not ``observations[i + 1]``
    (Euclidean distance above 1e-6, the IQL authors' test), which finds the
    ends of episodes cut by a time limit when ``timeouts`` are not given.
    """
    ends = check_flags(terminals, "terminals", n).copy()  # may be the caller's
    if timeouts is not None:
        ends = ends | check_flags(timeouts, "timeouts", len(ends))
    if observations is not None and next_observations is not None and len(ends) > 1:
        ends[:-1] |= _jumps(observations, next_observations)
    return ends


def _jumps(observations, next_observations, chunk: int = 65_536) -> np.ndarray:
    """``‖next_observations[i] − observations[i + 1]‖ > 1e-6`` for i < n − 1.

    In chunks, so that a million transitions need no full-size temporaries.
    """
    obs, next_obs = np.asarray(observations), np.asarray(next_observations)
    n = len(obs) - 1
    jumps = np.empty(max(n, 0), dtype=bool)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        gap = next_obs[start:stop].astype(np.float64) - obs[start + 1 : stop + 1]
        jumps[start:stop] = np.linalg.norm(gap.reshape(len(gap), -1), axis=1) > 1e-6
    return jumps


def _same_space(rows: np.ndarray, table: np.ndarray) -> bool:
    """Whether some of ``rows`` occur, bit for bit, among the rows of ``table``.

    Shuffled transitions find nearly all their next observations among the
    observations, a subsample (rows dropped) a share as large as the sample's;
    arrays in different spaces (one of them transformed) practically none.
    """

    def as_void(a: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(a.reshape(len(a), -1), dtype=np.float32)
        return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()

    found = int(np.isin(as_void(rows), as_void(table)).sum())
    return found >= max(3, 0.01 * len(rows))


def warn_if_next_observations_do_not_follow(
    observations: np.ndarray,
    next_observations: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray | None = None,
    *,
    order_matters: bool = True,
) -> None:
    """Warn when ``next_observations`` do not follow ``observations`` as they should.

    Where a timeout ends an episode, ``next_observations[i]`` must not be
    ``observations[i + 1]``, the next episode's first state (the mistake of
    building next observations by shifting D4RL's arrays).

    Inside episodes (no terminal or timeout flag) the two are the same state. If
    they mostly differ, the arrays are in different spaces (a ``Pipeline``
    transforms ``X`` but hands ``next_observations`` to the policy unchanged) or
    the transitions are not in episode order. Out of order, the next observations
    are still rows of ``observations``: that case is a warning only where
    ``order_matters`` (``reward_scaling="returns"``, which sums rewards over
    episodes), since shuffled transitions are otherwise as good as ordered ones.
    """
    jumps = _jumps(observations, next_observations)
    if timeouts is not None:
        cut = check_flags(timeouts, "timeouts", len(jumps) + 1)[:-1].astype(bool)
        naive = int((cut & ~jumps).sum())
        if naive and naive >= cut.sum() / 2:
            warnings.warn(
                f"next_observations[i] equals X[i + 1] at {naive} of the "
                f"{int(cut.sum())} transitions that a timeout ends, where X[i + 1] "
                "starts the next episode: those transitions bootstrap from another "
                "episode's first state. Give the true state after the time-limit "
                "step, or drop those transitions, as d4rl.qlearning_dataset does.",
                UserWarning,
                stacklevel=find_stack_level(),
            )
    inside = ~episode_ends(terminals, timeouts)[:-1]
    if inside.sum() < 10:  # too few to tell
        return
    n_jumps, n_inside = int(jumps[inside].sum()), int(inside.sum())
    if n_jumps <= n_inside / 2:
        return
    inside_next = np.asarray(next_observations)[:-1][inside]
    if _same_space(inside_next, np.asarray(observations)):
        if order_matters:
            warnings.warn(
                f"next_observations[i] differs from X[i + 1] at {n_jumps} of the "
                f"{n_inside} transitions that no terminal or timeout ends, though "
                "next observations are rows of X elsewhere: the transitions are "
                "shuffled or rows were dropped, so reward_scaling='returns' sees "
                "fragments of episodes, not their returns. Keep whole episodes in "
                "order (split by episode), or choose reward_scaling='standard'.",
                UserWarning,
                stacklevel=find_stack_level(),
            )
    else:
        warnings.warn(
            f"next_observations[i] differs from X[i + 1] at {n_jumps} of the "
            f"{n_inside} transitions that no terminal or timeout ends, and is "
            "practically never a row of X: X and next_observations seem to be in "
            "different spaces (a Pipeline transforms X but passes "
            "next_observations to the policy unchanged: normalise with the "
            "policy's normalize_observations, not a scaler step, and pass "
            "next_observations through any feature map yourself).",
            UserWarning,
            stacklevel=find_stack_level(),
        )


def episode_ids(
    terminals: np.ndarray,
    timeouts: np.ndarray | None = None,
    *,
    observations: np.ndarray | None = None,
    next_observations: np.ndarray | None = None,
) -> np.ndarray:
    """Return the episode index of each transition.

    An episode ends at a transition whose ``terminals`` or ``timeouts`` flag is
    set, and, given ``observations`` and ``next_observations``, where
    ``next_observations[i]`` is not ``observations[i + 1]``; transitions after
    the last end form one more (unfinished) episode.

    Parameters
    ----------
    terminals : array-like of shape (n,)
        Terminal flags (bool or 0/1).
    timeouts : array-like of shape (n,), default=None
        Time-limit flags (bool or 0/1); ``None`` means none.
    observations, next_observations : array-like of shape (n, obs_dim), optional
        The transitions' states, in the order of the flags.

    Returns
    -------
    ids : ndarray of shape (n,), dtype int64
        Non-decreasing episode indices starting at 0, usable as ``groups`` for
        :class:`sklearn.model_selection.GroupKFold`.

    Examples
    --------
    >>> from sk_o2o.data.transitions import episode_ids
    >>> episode_ids([0, 1, 0, 0, 0], [0, 0, 0, 1, 0])
    array([0, 0, 1, 1, 2])
    >>> obs = [[0.0], [1.0], [5.0], [6.0]]  # a jump after the second transition
    >>> episode_ids(
    ...     [0, 0, 0, 0], observations=obs, next_observations=[[1.0], [2.0], [6.0], [7.0]]
    ... )
    array([0, 0, 1, 1])
    """
    ends = episode_ends(
        terminals,
        timeouts,
        observations=observations,
        next_observations=next_observations,
    )
    ids = np.zeros(len(ends), dtype=np.int64)
    np.cumsum(ends[:-1], out=ids[1:])
    return ids


def check_finite(values: np.ndarray, name: str) -> None:
    """Raise a ValueError naming ``name`` and the first row holding NaN or inf."""
    finite = np.isfinite(values)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(len(values), -1).all(axis=1))[0]
        raise ValueError(
            f"{name} contains NaN, infinity or a value too large for float32 "
            f"(first at index {bad}); remove or impute those rows."
        )


def to_numpy(values):
    """Torch tensors (on any device) to numpy; anything else unchanged."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype == torch.bfloat16:  # numpy has no bfloat16
            values = values.float()
        return values.numpy()
    return values


def check_float_array(values, name: str, *, ndim: int) -> np.ndarray:
    """A finite float32 array with ``ndim`` dimensions; errors name ``name``."""
    values = to_numpy(values)
    if np.ndim(values) > 2:  # scikit-learn's message would not name the argument
        raise ValueError(
            f"{name} must be {ndim}-dimensional, got shape {np.shape(values)}."
        )
    if ndim == 1 and np.ndim(values) == 0:  # one transition's reward or flag,
        values = np.reshape(values, 1)  # a scalar as env.step returns it
    array = check_array(
        values,
        input_name=name,
        dtype=np.float32,
        ensure_2d=ndim == 2,
        ensure_all_finite=False,
        ensure_min_samples=1,
    )
    if ndim == 1:
        array = np.asarray(array)
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise ValueError(
                f"{name} must be one-dimensional, got shape {array.shape}."
            )
    check_finite(array, name)
    return array


def _as_flags(values, name: str) -> np.ndarray:
    array = check_float_array(values, name, ndim=1)
    return check_flags(array, name).astype(np.float32)


def _from_arrays(
    X, y, rewards, next_observations, terminals, timeouts, *, names=("X", "y")
) -> Transitions:
    x_name, y_name = names  # "observations", "actions" for a dataset
    missing = [
        name
        for name, value in (
            (y_name, y),
            ("rewards", rewards),
            ("next_observations", next_observations),
            ("terminals", terminals),
        )
        if value is None
    ]
    if missing:
        raise ValueError(
            f"the transitions need {', '.join(missing)}: pass observations as X, "
            "actions as y "
            "and rewards=, next_observations=, terminals= as keyword arguments, "
            "or one dataset (a mapping with D4RL keys, a d3rlpy dataset or a path)."
        )
    observations = check_float_array(X, x_name, ndim=2)
    actions = np.asarray(to_numpy(y))
    actions_1d = actions.ndim == 1
    actions = check_float_array(
        actions.reshape(-1, 1) if actions_1d else actions, y_name, ndim=2
    )
    arrays = {
        y_name: actions,
        "rewards": check_float_array(rewards, "rewards", ndim=1),
        "next_observations": check_float_array(
            next_observations, "next_observations", ndim=2
        ),
        "terminals": _as_flags(terminals, "terminals"),
    }
    if timeouts is not None:
        arrays["timeouts"] = _as_flags(timeouts, "timeouts")
    for name, array in arrays.items():
        if len(array) != len(observations):
            raise ValueError(
                f"{name} has {len(array)} entries but {x_name} has "
                f"{len(observations)}; every transition needs one of each."
            )
    check_consistent_length(observations, *arrays.values())
    del arrays[y_name]
    if arrays["next_observations"].shape[1] != observations.shape[1]:
        raise ValueError(
            f"next_observations has {arrays['next_observations'].shape[1]} "
            f"features but {x_name} has {observations.shape[1]}."
        )
    return Transitions(observations, actions, **arrays, actions_1d=actions_1d)


def _from_mapping(data: Mapping) -> Transitions:
    missing = [k for k in D4RL_KEYS[:-1] if k not in data]
    if missing:
        hint = ""
        if missing == ["next_observations"]:  # as in D4RL's raw hdf5 files
            hint = (
                " Build next_observations[i] = observations[i + 1] inside episodes "
                "and drop each episode's last transition, whose successor is not "
                "stored (d4rl.qlearning_dataset does this)."
            )
        raise ValueError(
            f"the dataset lacks the D4RL key(s) {missing}; it has {sorted(data)}."
            + hint
        )
    return _from_arrays(
        data["observations"],
        data["actions"],
        data["rewards"],
        data["next_observations"],
        data["terminals"],
        data.get("timeouts"),
        names=("observations", "actions"),
    )


def _from_file(path: str | os.PathLike) -> Transitions:
    path = os.fspath(path)
    if not os.path.exists(path):
        hint = ""
        if not os.path.splitext(path)[1]:
            hint = " To load a dataset by name, use sk_o2o.datasets.load_dataset."
        raise ValueError(f"dataset file {path!r} does not exist.{hint}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return _from_mapping({k: data[k] for k in data.files if k in D4RL_KEYS})
    if suffix in (".hdf5", ".h5"):
        try:
            import h5py
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("reading .hdf5 datasets needs h5py") from exc
        with h5py.File(path, "r") as data:
            return _from_mapping({k: data[k][()] for k in D4RL_KEYS if k in data})
    raise ValueError(f"dataset file {path!r} must end in .npz, .hdf5 or .h5.")


def _from_d3rlpy(buffer) -> Transitions:
    """Flatten a d3rlpy ReplayBuffer/MDPDataset, one episode at a time.

    d3rlpy stores no observation after an episode's last step: a terminal last
    step keeps its own observation as a placeholder next observation (it is never
    bootstrapped from), a timed-out last step is dropped.
    """
    space = getattr(getattr(buffer, "dataset_info", None), "action_space", None)
    if getattr(space, "name", None) == "DISCRETE":
        raise ValueError(
            "the d3rlpy dataset has discrete actions; sk_o2o's policies act in "
            "continuous (Box) action spaces."
        )
    parts: dict[str, list[np.ndarray]] = {k: [] for k in D4RL_KEYS}
    for episode in buffer.episodes:
        obs = np.asarray(episode.observations, dtype=np.float32)
        if obs.ndim != 2:
            raise TypeError("only flat vector observations are supported.")
        act = np.asarray(episode.actions, dtype=np.float32).reshape(len(obs), -1)
        rew = np.asarray(episode.rewards, dtype=np.float32).reshape(len(obs))
        terminated = bool(episode.terminated)
        n = len(obs) if terminated else len(obs) - 1
        if n <= 0:
            continue
        next_obs = np.concatenate([obs[1:], obs[-1:]])[:n]
        terminals = np.zeros(n, dtype=np.float32)
        timeouts = np.zeros(n, dtype=np.float32)
        (terminals if terminated else timeouts)[-1] = 1.0
        for key, value in zip(
            D4RL_KEYS,
            (obs[:n], act[:n], rew[:n], next_obs, terminals, timeouts),
            strict=True,
        ):
            parts[key].append(value)
    if not parts["observations"]:
        raise ValueError("the d3rlpy dataset holds no complete transition.")
    return _from_mapping({k: np.concatenate(v) for k, v in parts.items()})


def is_dataset(X) -> bool:
    """Whether ``X`` is a whole dataset rather than an array of observations."""
    if issparse(X):  # a DOK sparse matrix is a dict, not a dataset
        return False
    is_d3rlpy = hasattr(X, "episodes") and hasattr(X, "transition_count")
    return isinstance(X, (str, os.PathLike, Mapping)) or is_d3rlpy


def as_transitions(
    X: DatasetLike,
    y: ArrayLike | None = None,
    *,
    rewards: ArrayLike | None = None,
    next_observations: ArrayLike | None = None,
    terminals: ArrayLike | None = None,
    timeouts: ArrayLike | None = None,
) -> Transitions:
    """Validate transitions given as arrays or as a dataset.

    Parameters
    ----------
    X : array-like of shape (n_transitions, obs_dim), mapping, d3rlpy dataset or path
        Observations, or a whole dataset (then every other argument must be None).
    y : array-like of shape (n_transitions, act_dim) or (n_transitions,)
        Actions taken.
    rewards : array-like of shape (n_transitions,)
        Reward of each transition.
    next_observations : array-like of shape (n_transitions, obs_dim)
        The state each transition led to.
    terminals : array-like of shape (n_transitions,)
        1 where the episode ended in a terminal state (no bootstrapping).
    timeouts : array-like of shape (n_transitions,), optional
        1 where the episode was cut by a time limit (bootstrapping continues).

    Returns
    -------
    transitions : Transitions
        The arrays as float32, actions 2-D, flags as 0.0/1.0.

    Raises
    ------
    ValueError
        On NaN/inf (naming the argument and the first bad index), mismatched
        lengths, wrong shapes, non-binary flags or incomplete datasets.

    Examples
    --------
    >>> import numpy as np
    >>> from sk_o2o.data import as_transitions
    >>> t = as_transitions(np.zeros((4, 3)), np.zeros(4), rewards=np.ones(4),
    ...                    next_observations=np.zeros((4, 3)), terminals=np.zeros(4))
    >>> t.actions.shape
    (4, 1)
    """
    if is_dataset(X):
        extra = [
            name
            for name, value in (
                ("y", y),
                ("rewards", rewards),
                ("next_observations", next_observations),
                ("terminals", terminals),
                ("timeouts", timeouts),
            )
            if value is not None
        ]
        if extra:
            raise ValueError(
                f"X is a whole dataset, so {', '.join(extra)} must not be given."
            )
        if isinstance(X, (str, os.PathLike)):
            return _from_file(X)
        if isinstance(X, Mapping):
            return _from_mapping(X)
        return _from_d3rlpy(X)
    return _from_arrays(X, y, rewards, next_observations, terminals, timeouts)
