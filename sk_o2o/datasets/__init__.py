"""D4RL-style offline RL datasets.

Datasets are ``.npz`` files with the D4RL keys ``observations``, ``actions``,
``rewards``, ``next_observations``, ``terminals`` and ``timeouts``, and the
metadata ``env_id``, ``quality``, ``ref_min_score`` (mean return of a uniform
random policy) and ``ref_max_score`` (mean return of the expert policy), from which
D4RL-style normalised scores are computed with :func:`normalized_score`.

Small Pendulum-v1 datasets ship with the package: ``pendulum-random-v0``,
``pendulum-medium-v0``, ``pendulum-medium-replay-v0``, ``pendulum-expert-v0`` and
``pendulum-medium-expert-v0`` (medium and expert concatenated when loaded). Larger
ones are built with :mod:`sk_o2o.datasets.builder` into :func:`get_data_home`.

Names are looked up in this order: the ``.npz`` files in :func:`get_data_home`
(``$SK_O2O_DATA`` if set, else ``~/.cache/sk_o2o/datasets``), then the datasets
shipped with the package, so that a dataset built under a shipped name is found.
A name ending in ``-medium-expert-<version>`` with no file of its own is the
concatenation of the ``-medium-`` and ``-expert-`` datasets of the same place. A
path to an ``.npz`` file is loaded directly.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from sk_o2o.data.transitions import (
    D4RL_KEYS,
    check_flags,
    episode_ends,
    episode_ids,
)

__all__ = [
    "episode_ids",
    "episode_returns",
    "get_data_home",
    "list_datasets",
    "load_dataset",
    "normalized_score",
]

METADATA_KEYS = ("env_id", "quality", "ref_min_score", "ref_max_score")
_MEDIUM_EXPERT = re.compile(r"^(?P<prefix>.+)-medium-expert-(?P<version>v\d+)$")


def get_data_home(data_home: str | os.PathLike | None = None) -> Path:
    """Return the folder where built datasets are cached.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The folder to use. ``None`` means ``$SK_O2O_DATA`` if that environment
        variable is set, else ``~/.cache/sk_o2o/datasets``. The folder is not
        created.

    Returns
    -------
    data_home : pathlib.Path
        The folder, with ``~`` expanded.

    Examples
    --------
    >>> from sk_o2o.datasets import get_data_home
    >>> get_data_home("/tmp/my-datasets")
    PosixPath('/tmp/my-datasets')
    """
    if data_home is None:
        data_home = os.environ.get("SK_O2O_DATA") or Path("~/.cache/sk_o2o/datasets")
    return Path(data_home).expanduser()


def _shipped_dir():
    return resources.files("sk_o2o.datasets").joinpath("data")


def _names_in(folder) -> set[str]:
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return set()
    names = {e.name[: -len(".npz")] for e in entries if e.name.endswith(".npz")}
    for name in list(names):
        match = re.match(r"^(.+)-medium-(v\d+)$", name)
        if match and f"{match[1]}-expert-{match[2]}" in names:
            names.add(f"{match[1]}-medium-expert-{match[2]}")
    return names


def list_datasets(*, data_home: str | os.PathLike | None = None) -> list[str]:
    """Return the names of the datasets :func:`load_dataset` can load by name.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Cache folder of built datasets, see :func:`get_data_home`.

    Returns
    -------
    names : list of str
        Sorted names of the shipped and the cached datasets.

    Examples
    --------
    >>> from sk_o2o.datasets import list_datasets
    >>> "pendulum-medium-replay-v0" in list_datasets()
    True
    """
    names = _names_in(_shipped_dir()) | _names_in(get_data_home(data_home))
    return sorted(names)


def episode_returns(
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray | None = None,
) -> np.ndarray:
    """Return the undiscounted return of each episode of a dataset.

    Parameters
    ----------
    rewards : array-like of shape (n,)
        Rewards in episode order.
    terminals : array-like of shape (n,)
        Terminal flags (bool or 0/1).
    timeouts : array-like of shape (n,), default=None
        Time-limit flags (bool or 0/1); ``None`` means none.

    Returns
    -------
    returns : ndarray of shape (n_episodes,), dtype float64
        Sum of the rewards of each episode, in order; ``returns[k]`` sums the
        transitions whose :func:`episode_ids` is ``k`` (a trailing unfinished
        episode included).

    Examples
    --------
    >>> from sk_o2o.datasets import episode_returns
    >>> episode_returns([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 0], [0, 0, 0, 1])
    array([3., 7.])
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D, got shape {rewards.shape}.")
    ends = episode_ends(terminals, timeouts, len(rewards))
    if len(rewards) == 0:
        return np.zeros(0, dtype=np.float64)
    starts = np.concatenate([[0], np.flatnonzero(ends[:-1]) + 1])
    return np.add.reduceat(rewards, starts)


def normalized_score(
    returns: float | np.ndarray, ref_min_score: float, ref_max_score: float
) -> float | np.ndarray:
    """Return D4RL normalised scores, ``100 * (R - min) / (max - min)``.

    0 is the return of a uniform random policy and 100 that of the expert.

    Parameters
    ----------
    returns : float or array-like
        Undiscounted episode returns.
    ref_min_score : float
        Reference return of the random policy (``data["ref_min_score"]``).
    ref_max_score : float
        Reference return of the expert policy (``data["ref_max_score"]``).

    Returns
    -------
    score : float or ndarray
        The normalised score(s), a float for a scalar ``returns``.

    Examples
    --------
    >>> from sk_o2o.datasets import normalized_score
    >>> normalized_score(-500.0, ref_min_score=-1200.0, ref_max_score=-150.0)
    66.66...
    """
    lo, hi = float(ref_min_score), float(ref_max_score)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo == hi:
        raise ValueError(
            "ref_min_score and ref_max_score must be finite and different, got "
            f"{lo} and {hi}."
        )
    arr = np.asarray(returns, dtype=np.float64)
    score = 100.0 * (arr - lo) / (hi - lo)
    return float(score) if score.ndim == 0 else score


def _read_npz(path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read dataset file {str(path)!r}: {exc}") from exc
    missing = [k for k in D4RL_KEYS + METADATA_KEYS if k not in data]
    if missing:
        hint = ""
        if all(k in data for k in D4RL_KEYS):
            hint = (
                " load_dataset reads the builder's files, which carry metadata; an "
                "estimator's fit takes this plain D4RL file as it is, and "
                "sk_o2o.datasets.episode_ids gives its episodes (for GroupKFold)."
            )
        raise ValueError(
            f"dataset file {str(path)!r} lacks the key(s) {missing}.{hint}"
        )
    return data


def _concatenate(first: dict, second: dict) -> dict:
    data = {k: np.concatenate([first[k], second[k]]) for k in D4RL_KEYS}
    for key in METADATA_KEYS:
        data[key] = first[key]
    data["quality"] = np.asarray("medium-expert")
    return data


def _find(name: str, data_home) -> dict | None:
    """Load ``name`` from the cache, then from the shipped data; None if absent.

    The cache first: a dataset built under a shipped name (the builder's default
    environment is Pendulum) is the one its builder wants.
    """
    for folder in (get_data_home(data_home), _shipped_dir()):
        candidate = folder.joinpath(f"{name}.npz")
        if candidate.is_file():
            return _read_npz(candidate)
        match = _MEDIUM_EXPERT.match(name)
        if match:
            prefix, version = match["prefix"], match["version"]
            medium = folder.joinpath(f"{prefix}-medium-{version}.npz")
            expert = folder.joinpath(f"{prefix}-expert-{version}.npz")
            if medium.is_file() and expert.is_file():
                return _concatenate(_read_npz(medium), _read_npz(expert))
    return None


def load_dataset(
    name: str | os.PathLike, *, data_home: str | os.PathLike | None = None
) -> Bunch:
    """Load a D4RL-style dataset by name or from an ``.npz`` file.

    Parameters
    ----------
    name : str or path-like
        A name from :func:`list_datasets`, such as
        ``"pendulum-medium-replay-v0"``, or the path to an ``.npz`` file with
        the D4RL keys and the metadata written by
        :mod:`sk_o2o.datasets.builder`.
    data_home : str or path-like, default=None
        Cache folder of built datasets, see :func:`get_data_home`.

    Returns
    -------
    data : sklearn.utils.Bunch
        A dict (with attribute access) of ``observations`` (n, obs_dim)
        float32, ``actions`` (n, act_dim) float32, ``rewards`` (n,) float32,
        ``next_observations`` (n, obs_dim) float32, ``terminals`` (n,) bool,
        ``timeouts`` (n,) bool, ``episode_ids`` (n,) int64 (see
        :func:`episode_ids`), ``env_id`` (str), ``quality`` (str),
        ``ref_min_score`` and ``ref_max_score`` (float) and ``name`` (str). It
        can be passed to the estimators' ``fit`` as is.

    Raises
    ------
    ValueError
        If ``name`` is neither a known dataset nor an existing ``.npz`` file, or
        the file lacks keys or has inconsistent lengths.

    Examples
    --------
    >>> from sk_o2o.datasets import episode_returns, load_dataset
    >>> data = load_dataset("pendulum-medium-replay-v0")
    >>> data.env_id, data.quality
    ('Pendulum-v1', 'medium-replay')
    >>> data.observations.shape[1], data.actions.shape[1]
    (3, 1)
    >>> returns = episode_returns(data.rewards, data.terminals, data.timeouts)
    >>> len(returns) == int(data.episode_ids[-1]) + 1
    True
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a str or a path, got {type(name).__name__}.")
    path = Path(name).expanduser()
    raw = None
    if str(name).endswith(".npz") or os.sep in str(name):
        if not path.is_file():
            raise ValueError(f"dataset file {str(name)!r} does not exist.")
        raw = _read_npz(path)
        label = path.name[: -len(".npz")] if path.name.endswith(".npz") else path.name
    else:
        raw = _find(str(name), data_home)
        label = str(name)
    if raw is None:
        raise ValueError(
            f"unknown dataset {str(name)!r}; available datasets: "
            f"{list_datasets(data_home=data_home)}, or give the path to an .npz "
            "file. Build more with `python -m sk_o2o.datasets.builder`."
        )
    return _to_bunch(raw, label)


def _to_bunch(raw: dict, label: str) -> Bunch:
    observations = np.asarray(raw["observations"], dtype=np.float32)
    actions = np.asarray(raw["actions"], dtype=np.float32)
    if observations.ndim != 2:
        raise ValueError(f"observations must be 2-D, got shape {observations.shape}.")
    n = len(observations)
    if actions.ndim == 1:
        actions = actions[:, None]
    next_observations = np.asarray(raw["next_observations"], dtype=np.float32)
    rewards = np.asarray(raw["rewards"], dtype=np.float32).reshape(-1)
    for key, arr in (
        ("actions", actions),
        ("rewards", rewards),
        ("next_observations", next_observations),
    ):
        if len(arr) != n:
            raise ValueError(f"{key} has {len(arr)} rows, observations has {n}.")
    if next_observations.shape != observations.shape:
        raise ValueError(
            f"next_observations has shape {next_observations.shape}, "
            f"observations {observations.shape}."
        )
    terminals = check_flags(raw["terminals"], "terminals", n)
    timeouts = check_flags(raw["timeouts"], "timeouts", n)
    return Bunch(
        observations=observations,
        actions=actions,
        rewards=rewards,
        next_observations=next_observations,
        terminals=terminals,
        timeouts=timeouts,
        episode_ids=episode_ids(terminals, timeouts),
        env_id=str(raw["env_id"]),
        quality=str(raw["quality"]),
        ref_min_score=float(raw["ref_min_score"]),
        ref_max_score=float(raw["ref_max_score"]),
        name=label,
    )
