"""Shared fixtures: small synthetic transitions and tiny, fast estimators.

Everything here is session-scoped and returns pure factories, so the fixtures can
be used inside hypothesis ``@given`` tests without the function-scoped-fixture
health check.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

# Settings that keep every training test fast on a small shared CPU machine.
TINY = {
    "hidden_sizes": (16, 16),
    "n_steps": 10,
    "batch_size": 16,
    "device": "cpu",
    "random_state": 0,
    "log_interval": 5,
}


def make_transitions(
    n: int = 40,
    obs_dim: int = 3,
    act_dim: int = 2,
    seed: int = 0,
    *,
    episode_length: int = 10,
    low: float | np.ndarray = -1.0,
    high: float | np.ndarray = 1.0,
    timeouts: bool = True,
) -> dict[str, np.ndarray]:
    """Synthetic transitions as a dict with the D4RL keys.

    Episodes have ``episode_length`` steps (the last one may be shorter); within
    an episode ``next_observations[i] == observations[i + 1]``. Episodes end
    alternately in a terminal state (``terminals=1``) and a time limit
    (``timeouts=1``); the final episode always ends in a terminal state. With
    ``timeouts=False`` every episode ends in a terminal state and the dict has
    no ``timeouts`` key. Actions are uniform in ``[low, high]``.
    """
    rng = np.random.default_rng(seed)
    observations = np.empty((n, obs_dim), dtype=np.float32)
    next_observations = np.empty((n, obs_dim), dtype=np.float32)
    terminals = np.zeros(n, dtype=np.float32)
    time_limits = np.zeros(n, dtype=np.float32)
    for k, start in enumerate(range(0, n, episode_length)):
        stop = min(start + episode_length, n)
        states = rng.normal(size=(stop - start + 1, obs_dim)).astype(np.float32)
        observations[start:stop] = states[:-1]
        next_observations[start:stop] = states[1:]
        if timeouts and k % 2 == 1 and stop < n:
            time_limits[stop - 1] = 1.0
        else:
            terminals[stop - 1] = 1.0
    low_arr = np.broadcast_to(np.asarray(low, dtype=np.float64), (act_dim,))
    high_arr = np.broadcast_to(np.asarray(high, dtype=np.float64), (act_dim,))
    actions = rng.uniform(low_arr, high_arr, size=(n, act_dim)).astype(np.float32)
    rewards = rng.normal(size=n).astype(np.float32)
    data = {
        "observations": observations,
        "actions": actions,
        "rewards": rewards,
        "next_observations": next_observations,
        "terminals": terminals,
    }
    if timeouts:
        data["timeouts"] = time_limits
    return data


def fit_kwargs(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The keyword arguments of ``fit(X, y, **kwargs)`` for a D4RL dict."""
    kwargs = {
        "rewards": data["rewards"],
        "next_observations": data["next_observations"],
        "terminals": data["terminals"],
    }
    if "timeouts" in data:
        kwargs["timeouts"] = data["timeouts"]
    return kwargs


def make_policy(**params):
    """An :class:`~sk_o2o.IQLPolicy` with tiny networks and few steps."""
    from sk_o2o import IQLPolicy

    return IQLPolicy(**{**TINY, **params})


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """``torch.set_default_dtype(dtype)`` inside the block."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextlib.contextmanager
def warns_at_test_line(match: str):
    """``pytest.warns(UserWarning, match=match)`` that also checks where it points.

    A warning about the user's data or call must name the user's line, here the
    test's, not a line of sk_o2o (``warnings`` prints that place, and filters by
    its module). Only for tests that call sk_o2o directly: through a Pipeline or
    joblib the first frame outside sk_o2o is theirs.
    """
    with pytest.warns(UserWarning, match=match) as record:
        yield record
    places = [
        (w.filename, w.lineno) for w in record if re.search(match, str(w.message))
    ]
    assert all(Path(f).parent == Path(__file__).parent for f, _ in places), places


@contextlib.contextmanager
def seeded_fit_in_another_thread():
    """While the block runs, another thread sits inside ``torch_seed_context``,
    holding the lock around torch's global generator as a seeded fit there would."""
    from sk_o2o._base import torch_seed_context

    held, release = threading.Event(), threading.Event()

    def seeded_fit():
        with torch_seed_context(0):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=seeded_fit)
    holder.start()
    held.wait()
    try:
        yield
    finally:
        release.set()
        holder.join()


@pytest.fixture(name="make_transitions", scope="session")
def _make_transitions_fixture():
    """Factory ``make_transitions(n=, obs_dim=, act_dim=, seed=, ...)``."""
    return make_transitions


@pytest.fixture(name="fit_kwargs", scope="session")
def _fit_kwargs_fixture():
    """Factory turning a D4RL dict into ``fit``'s keyword arguments."""
    return fit_kwargs


@pytest.fixture(name="make_policy", scope="session")
def _make_policy_fixture():
    """Factory of tiny, fast IQLPolicy estimators (``make_policy(**params)``)."""
    return make_policy


@pytest.fixture(scope="session")
def transitions():
    """A fixed small dataset: 40 transitions, obs_dim=3, act_dim=2."""
    return make_transitions(n=40, obs_dim=3, act_dim=2, seed=0)


@pytest.fixture(scope="session")
def fitted_policy(transitions):
    """A tiny IQLPolicy fitted on ``transitions``. Do not mutate it: clone/copy."""
    data = transitions
    return make_policy().fit(data["observations"], data["actions"], **fit_kwargs(data))


def run_script(path: Path, *args: str, cwd: Path) -> str:
    """Run a script as a user would (one thread, no display); return its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(path), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(name="run_script", scope="session")
def _run_script_fixture():
    """``run_script(path, *args, cwd=)``: a script's stdout, failing on an error."""
    return run_script
