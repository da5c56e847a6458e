"""Build D4RL-style datasets for a Gymnasium task with d3rlpy's SAC.

A behaviour policy is trained online with d3rlpy's Soft Actor-Critic, evaluated
every ``eval_interval`` environment steps (deterministic actions, the same
``n_eval_episodes`` seeded episodes each time) and snapshotted. The datasets are
then, as in D4RL:

``random``
    transitions of uniform random actions;
``medium``
    rollouts of the stochastic SAC policy of the first snapshot whose evaluated
    return reached the *medium level*: by default one third of the way from the
    random to the expert return (``medium_fraction``), or ``medium_target_return``;
``medium-replay``
    every transition of the SAC replay buffer collected up to that snapshot
    (initial random steps included);
``expert``
    rollouts of the stochastic policy of the fully trained SAC;
``medium-expert``
    ``medium`` followed by ``expert``.

Each is written to ``<out>/<task>-<quality>-<version>.npz`` (``task`` is the
environment id in lower case without its version, e.g. ``pendulum``) with the D4RL
keys and the metadata ``env_id``, ``quality``, ``ref_min_score`` (mean return of the
random policy over ``n_ref_episodes`` episodes) and ``ref_max_score`` (mean return
of the final SAC policy, deterministic actions, over ``n_ref_episodes`` episodes),
plus the build settings (``seed``, ``n_sac_steps``, ``medium_step``,
``medium_eval_return``). Nothing is logged to disk by d3rlpy (no ``d3rlpy_logs/``);
the SAC replay buffer is kept in NumPy arrays here.

The Pendulum-v1 datasets shipped in ``sk_o2o/datasets/data`` were made from the
repository root with:

    python -m sk_o2o.datasets.builder --env Pendulum-v1 --n-sac-steps 20000 \\
        --n-transitions 20000 --hidden-units 128 128 --n-threads 1 --seed 0 \\
        --qualities random medium medium-replay expert --out sk_o2o/datasets/data

(``pendulum-medium-expert-v0`` is composed from ``medium`` and ``expert`` by
:func:`sk_o2o.datasets.load_dataset`.) That took 8.5 minutes of wall-clock time and
5.6 minutes of CPU time on a shared 2-core machine, nearly all of it in the 19,000
SAC updates (about 15 ms each); the SAC policy reached its expert level by step
5,000. The build is seeded, but results depend on the versions of PyTorch, d3rlpy
and Gymnasium and on the CPU, so a rebuild is close to, not bit-identical with, the
shipped files.

Hopper-v5 needs far more SAC steps (D4RL trained its behaviour policies for 1M
steps). With the default 256-unit networks an update takes 20-30 ms on one thread
of a 2-core machine, so 300k steps take about 2-3 hours and 1M steps 6-9 hours.
A 100k-step build (``--n-sac-steps 100000 --n-transitions 200000 --random-steps
5000 --eval-interval 5000``) took 36 minutes, and its SAC policy plateaued at a
return of about 350, far below D4RL's Hopper expert (about 3,200); see
``benchmarks/README.md``. For example:

    python -m sk_o2o.datasets.builder --env Hopper-v5 --n-sac-steps 300000 \\
        --n-transitions 1000000 --random-steps 10000 --eval-interval 10000 \\
        --n-threads 1

Without ``--out`` the files go to ``$SK_O2O_DATA`` or ``~/.cache/sk_o2o/datasets``,
where :func:`sk_o2o.datasets.load_dataset` finds them by name. PyTorch uses as many
threads as ``OMP_NUM_THREADS`` or ``torch.set_num_threads`` allow.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sk_o2o._base import find_stack_level
from sk_o2o.datasets import D4RL_KEYS, episode_returns, get_data_home
from sk_o2o.rl.online import collect_transitions, evaluate_policy, make_env

__all__ = ["QUALITIES", "build_datasets", "dataset_name", "main"]

QUALITIES = ("random", "medium", "medium-replay", "expert", "medium-expert")
"""The dataset qualities :func:`build_datasets` makes, as D4RL names them."""

# Seeds of the evaluation and collection episodes are offset from ``seed`` so that
# training, evaluation and dataset episodes start from different states.
_EVAL_SEED, _REF_SEED, _COLLECT_SEED = 10_000, 20_000, 30_000


def dataset_name(env_id: str, quality: str, version: str = "v0") -> str:
    """Return the name of a dataset, ``<task>-<quality>-<version>``.

    Parameters
    ----------
    env_id : str
        Gymnasium environment id, e.g. ``"Pendulum-v1"``.
    quality : str
        One of :data:`QUALITIES`.
    version : str, default="v0"
        Dataset version.

    Returns
    -------
    name : str
        The name, also the file name without ``.npz``.

    Examples
    --------
    >>> from sk_o2o.datasets.builder import dataset_name
    >>> dataset_name("Pendulum-v1", "medium-replay")
    'pendulum-medium-replay-v0'
    """
    task = env_id.split("/")[-1].rsplit("-v", 1)[0].lower()
    return f"{task}-{quality}-{version}"


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(message, file=sys.stderr, flush=True)


class _Buffer:
    """Preallocated replay buffer with D4RL fields, sampled for d3rlpy updates."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        self.observations = np.empty((capacity, obs_dim), dtype=np.float32)
        self.actions = np.empty((capacity, act_dim), dtype=np.float32)
        self.rewards = np.empty(capacity, dtype=np.float32)
        self.next_observations = np.empty((capacity, obs_dim), dtype=np.float32)
        self.terminals = np.zeros(capacity, dtype=bool)
        self.timeouts = np.zeros(capacity, dtype=bool)
        self.size = 0

    def sample(self, rng: np.random.Generator, batch_size: int):
        from d3rlpy.dataset import TransitionMiniBatch

        idx = rng.integers(0, self.size, size=batch_size)
        return TransitionMiniBatch(
            observations=self.observations[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx, None],
            next_observations=self.next_observations[idx],
            next_actions=np.zeros_like(self.actions[idx]),  # unused by SAC
            terminals=self.terminals[idx, None].astype(np.float32),
            intervals=np.ones((batch_size, 1), dtype=np.float32),
            transitions=[],
        )

    def head(self, n: int) -> dict[str, np.ndarray]:
        data = {k: getattr(self, k)[:n].copy() for k in D4RL_KEYS}
        if n and not data["terminals"][-1]:
            data["timeouts"][-1] = True
        return data


def _train_sac(
    env_id: str,
    *,
    n_sac_steps: int,
    random_steps: int,
    eval_interval: int,
    n_eval_episodes: int,
    hidden_units: Sequence[int],
    batch_size: int,
    learning_rate: float,
    seed: int,
    verbose: bool,
):
    """Train SAC online; return it, its buffer and (step, return, weights) snapshots."""
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.preprocessing import MinMaxActionScaler

    d3rlpy.seed(seed)
    env = make_env(env_id, seed=seed)
    eval_env = make_env(env_id, seed=seed)
    encoder = VectorEncoderFactory(hidden_units=list(hidden_units))
    sac = d3rlpy.algos.SACConfig(
        batch_size=batch_size,
        actor_learning_rate=learning_rate,
        critic_learning_rate=learning_rate,
        temp_learning_rate=learning_rate,
        actor_encoder_factory=encoder,
        critic_encoder_factory=encoder,
        action_scaler=MinMaxActionScaler(),
    ).create(device="cpu:0")
    sac.action_scaler.fit_with_env(env)
    sac.build_with_env(env)

    obs_dim = int(np.prod(env.observation_space.shape))
    act_shape = env.action_space.shape
    low, high = env.action_space.low, env.action_space.high
    buffer = _Buffer(n_sac_steps, obs_dim, int(np.prod(act_shape)))
    rng = np.random.default_rng(seed)
    snapshots: list[tuple[int, float, dict]] = []

    def snapshot(step: int) -> None:
        ret = float(
            evaluate_policy(
                sac, eval_env, n_episodes=n_eval_episodes, seed=seed + _EVAL_SEED
            ).mean()
        )
        weights = copy.deepcopy(sac.impl.policy.state_dict())
        snapshots.append((step, ret, weights))
        _log(verbose, f"  step {step:>8d}  eval return {ret:10.1f}")

    start = time.perf_counter()
    episode = 0
    obs, _ = env.reset(seed=seed)
    for t in range(n_sac_steps):
        buffer.observations[t] = np.ravel(obs)
        if t < random_steps:
            action = env.action_space.sample()
        else:
            action = sac.sample_action(buffer.observations[t][None])[0]
            action = np.clip(action.reshape(act_shape), low, high)
        buffer.actions[t] = np.ravel(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        buffer.rewards[t] = reward
        buffer.next_observations[t] = np.ravel(obs)
        buffer.terminals[t] = terminated
        buffer.timeouts[t] = truncated and not terminated
        buffer.size = t + 1
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
        if t + 1 >= random_steps and buffer.size >= batch_size:
            sac.update(buffer.sample(rng, batch_size))
        if (t + 1) % eval_interval == 0 and t + 1 >= random_steps:
            snapshot(t + 1)
    if not snapshots or snapshots[-1][0] != n_sac_steps:
        snapshot(n_sac_steps)
    _log(verbose, f"SAC: {n_sac_steps} steps in {time.perf_counter() - start:.0f} s")
    return sac, buffer, snapshots


def _save(path: Path, data: dict, **metadata) -> None:
    arrays = {k: data[k] for k in D4RL_KEYS}
    arrays.update({k: np.asarray(v) for k, v in metadata.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def build_datasets(
    env: str = "Pendulum-v1",
    *,
    n_sac_steps: int = 20_000,
    n_transitions: int = 20_000,
    qualities: Sequence[str] = QUALITIES,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    random_steps: int = 1_000,
    eval_interval: int = 500,
    n_eval_episodes: int = 5,
    n_ref_episodes: int = 20,
    medium_fraction: float = 1 / 3,
    medium_target_return: float | None = None,
    hidden_units: Sequence[int] = (256, 256),
    batch_size: int = 256,
    learning_rate: float = 3e-4,
    version: str = "v0",
    n_threads: int | None = None,
    verbose: bool = False,
) -> dict[str, Path]:
    """Train SAC on a Gymnasium task and write D4RL-style datasets.

    Parameters
    ----------
    env : str, default="Pendulum-v1"
        Gymnasium environment id with a ``Box`` action space.
    n_sac_steps : int, default=20_000
        Environment steps of SAC training (one gradient step per environment
        step once ``random_steps`` are done).
    n_transitions : int, default=20_000
        Transitions of each of the ``random``, ``medium`` and ``expert``
        datasets (``medium-expert`` has twice as many, ``medium-replay`` as many
        as SAC collected before the medium snapshot).
    qualities : sequence of str, default=QUALITIES
        Datasets to write, among ``"random"``, ``"medium"``,
        ``"medium-replay"``, ``"expert"`` and ``"medium-expert"``.
    out : str or path-like, default=None
        Output folder; ``None`` means :func:`sk_o2o.datasets.get_data_home`.
    seed : int, default=0
        Seeds d3rlpy (Python, NumPy and PyTorch generators), the environments
        and the replay sampling.
    random_steps : int, default=1_000
        Initial steps with uniform random actions and no updates.
    eval_interval : int, default=500
        Environment steps between evaluations and policy snapshots.
    n_eval_episodes : int, default=5
        Episodes of each snapshot evaluation.
    n_ref_episodes : int, default=20
        Episodes that measure ``ref_min_score`` (random policy) and
        ``ref_max_score`` (final SAC policy).
    medium_fraction : float, default=1/3
        Medium level as a fraction of the way from ``ref_min_score`` to
        ``ref_max_score``; ignored if ``medium_target_return`` is given.
    medium_target_return : float, default=None
        Medium level as an evaluated return.
    hidden_units : sequence of int, default=(256, 256)
        Hidden layers of the SAC actor and critics.
    batch_size : int, default=256
        SAC mini-batch size.
    learning_rate : float, default=3e-4
        Learning rate of the SAC actor, critics and temperature.
    version : str, default="v0"
        Version suffix of the dataset names.
    n_threads : int, default=None
        PyTorch CPU threads during the build (restored afterwards); ``None``
        keeps the current setting. One thread is often as fast as several for
        these small networks, and much faster on a busy machine.
    verbose : bool, default=False
        Print progress to standard error.

    Returns
    -------
    paths : dict of str to pathlib.Path
        The written file of each quality.

    Examples
    --------
    >>> from sk_o2o.datasets.builder import build_datasets
    >>> paths = build_datasets(
    ...     "Pendulum-v1", n_sac_steps=600, n_transitions=400, random_steps=300,
    ...     eval_interval=300, n_eval_episodes=1, n_ref_episodes=1,
    ...     hidden_units=(32, 32), batch_size=32, out=getfixture("tmp_path"),
    ... )  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['expert', 'medium', 'medium-expert', 'medium-replay', 'random']
    """
    unknown = sorted(set(qualities) - set(QUALITIES))
    if unknown:
        raise ValueError(f"unknown qualities {unknown}; choose among {QUALITIES}.")
    for name, value, minimum in (
        ("n_sac_steps", n_sac_steps, 1),
        ("n_transitions", n_transitions, 1),
        ("random_steps", random_steps, 0),
        ("eval_interval", eval_interval, 1),
        ("n_eval_episodes", n_eval_episodes, 1),
        ("n_ref_episodes", n_ref_episodes, 1),
        ("batch_size", batch_size, 1),
    ):
        if int(value) != value or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    if not 0 < medium_fraction < 1:
        raise ValueError(f"medium_fraction must be in (0, 1), got {medium_fraction}.")
    env_id = env
    gym_env = make_env(env_id)
    if not hasattr(gym_env.action_space, "low"):
        raise ValueError(f"env={env_id!r} must have a continuous (Box) action space.")
    out = get_data_home(out)
    previous_threads = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(int(n_threads))
    try:
        return _build(
            env_id,
            gym_env,
            out,
            n_sac_steps=n_sac_steps,
            n_transitions=n_transitions,
            qualities=qualities,
            seed=seed,
            random_steps=random_steps,
            eval_interval=eval_interval,
            n_eval_episodes=n_eval_episodes,
            n_ref_episodes=n_ref_episodes,
            medium_fraction=medium_fraction,
            medium_target_return=medium_target_return,
            hidden_units=hidden_units,
            batch_size=batch_size,
            learning_rate=learning_rate,
            version=version,
            verbose=verbose,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _build(
    env_id: str,
    gym_env,
    out: Path,
    *,
    n_sac_steps: int,
    n_transitions: int,
    qualities: Sequence[str],
    seed: int,
    random_steps: int,
    eval_interval: int,
    n_eval_episodes: int,
    n_ref_episodes: int,
    medium_fraction: float,
    medium_target_return: float | None,
    hidden_units: Sequence[int],
    batch_size: int,
    learning_rate: float,
    version: str,
    verbose: bool,
) -> dict[str, Path]:
    start = time.perf_counter()

    _log(verbose, f"Training SAC on {env_id} for {n_sac_steps} steps...")
    sac, buffer, snapshots = _train_sac(
        env_id,
        n_sac_steps=n_sac_steps,
        random_steps=random_steps,
        eval_interval=eval_interval,
        n_eval_episodes=n_eval_episodes,
        hidden_units=hidden_units,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        verbose=verbose,
    )
    ref_seed = seed + _REF_SEED
    ref_min = float(
        evaluate_policy(None, gym_env, n_episodes=n_ref_episodes, seed=ref_seed).mean()
    )
    ref_max = float(
        evaluate_policy(sac, gym_env, n_episodes=n_ref_episodes, seed=ref_seed).mean()
    )
    if ref_max <= ref_min:
        warnings.warn(
            f"the final SAC policy's return ({ref_max:.1f}) is not above the random "
            f"policy's ({ref_min:.1f}): normalised scores with these references are "
            "meaningless (and the environment-return scorer refuses them). Train "
            "longer (n_sac_steps) or use more reference episodes (n_ref_episodes).",
            UserWarning,
            stacklevel=find_stack_level(),
        )
    if medium_target_return is None:
        target = ref_min + medium_fraction * (ref_max - ref_min)
    else:
        target = float(medium_target_return)
    medium_step, medium_return, medium_weights = next(
        (s for s in snapshots if s[1] >= target), snapshots[-1]
    )
    if medium_return < target and (
        "medium" in qualities or "medium-replay" in qualities
    ):
        warnings.warn(
            f"no SAC snapshot reached the medium target return {target:.1f} (best "
            f"evaluation {max(s[1] for s in snapshots):.1f}): the medium data come "
            "from the final policy and medium-replay is the whole buffer. Train "
            "longer (n_sac_steps) or lower medium_target_return/medium_fraction.",
            UserWarning,
            stacklevel=find_stack_level(),
        )
    _log(
        verbose,
        f"ref_min_score {ref_min:.1f}, ref_max_score {ref_max:.1f}, medium target "
        f"{target:.1f}: snapshot at step {medium_step} (eval {medium_return:.1f})",
    )

    datasets: dict[str, dict] = {}
    collect_seed = seed + _COLLECT_SEED
    if "random" in qualities:
        datasets["random"] = collect_transitions(
            None, gym_env, n_steps=n_transitions, seed=collect_seed
        )
    if "expert" in qualities or "medium-expert" in qualities:
        # SAC samples from torch's global generator: forked, so that the medium
        # data do not depend on whether the expert data were asked for
        with torch.random.fork_rng(devices=[]):
            datasets["expert"] = collect_transitions(
                sac, gym_env, n_steps=n_transitions, seed=collect_seed
            )
    if "medium" in qualities or "medium-expert" in qualities:
        final_weights = copy.deepcopy(sac.impl.policy.state_dict())
        sac.impl.policy.load_state_dict(medium_weights)
        datasets["medium"] = collect_transitions(
            sac, gym_env, n_steps=n_transitions, seed=collect_seed
        )
        sac.impl.policy.load_state_dict(final_weights)
    if "medium-replay" in qualities:
        datasets["medium-replay"] = buffer.head(medium_step)
    if "medium-expert" in qualities:
        datasets["medium-expert"] = {
            k: np.concatenate([datasets["medium"][k], datasets["expert"][k]])
            for k in D4RL_KEYS
        }

    paths = {}
    for quality in (q for q in QUALITIES if q in qualities):
        data = datasets[quality]
        path = out / f"{dataset_name(env_id, quality, version)}.npz"
        _save(
            path,
            data,
            env_id=env_id,
            quality=quality,
            ref_min_score=ref_min,
            ref_max_score=ref_max,
            seed=seed,
            n_sac_steps=n_sac_steps,
            medium_step=medium_step,
            medium_eval_return=medium_return,
        )
        paths[quality] = path
        returns = episode_returns(data["rewards"], data["terminals"], data["timeouts"])
        _log(
            verbose,
            f"{path.name}: {len(data['rewards'])} transitions, {len(returns)} "
            f"episodes, return {returns.mean():.1f} +- {returns.std():.1f}, "
            f"{path.stat().st_size} bytes",
        )
    _log(verbose, f"Done in {time.perf_counter() - start:.0f} s.")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point, ``python -m sk_o2o.datasets.builder``.

    Parameters
    ----------
    argv : sequence of str, default=None
        Arguments; ``None`` means ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success.

    Examples
    --------
    >>> from sk_o2o.datasets.builder import main
    >>> main(["--help"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(
        prog="python -m sk_o2o.datasets.builder",
        description="Build D4RL-style datasets for a Gymnasium task with SAC "
        "(see sk_o2o.datasets.builder.build_datasets).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--env", default="Pendulum-v1", help="Gymnasium env id (Box actions)")
    add("--n-sac-steps", type=int, default=20_000, help="SAC environment steps")
    add(
        "--n-transitions",
        type=int,
        default=20_000,
        help="transitions of the random, medium and expert datasets",
    )
    add(
        "--qualities",
        nargs="+",
        choices=QUALITIES,
        default=list(QUALITIES),
        metavar="QUALITY",
        help=f"datasets to write, among {', '.join(QUALITIES)}",
    )
    add("--out", default=None, help="output folder (default: the data home)")
    add("--seed", type=int, default=0, help="seed of d3rlpy, the envs and sampling")
    add(
        "--random-steps",
        type=int,
        default=1_000,
        help="initial uniform random steps, no updates",
    )
    add(
        "--eval-interval",
        type=int,
        default=500,
        help="steps between evaluations and policy snapshots",
    )
    add("--n-eval-episodes", type=int, default=5, help="episodes per evaluation")
    add(
        "--n-ref-episodes",
        type=int,
        default=20,
        help="episodes measuring the random and final SAC reference returns",
    )
    add(
        "--medium-fraction",
        type=float,
        default=1 / 3,
        help="medium level, as a fraction from the random to the final return",
    )
    add(
        "--medium-target-return",
        type=float,
        default=None,
        help="medium level as an evaluated return (overrides --medium-fraction)",
    )
    add(
        "--hidden-units",
        type=int,
        nargs="+",
        default=[256, 256],
        help="SAC hidden layers",
    )
    add("--batch-size", type=int, default=256, help="SAC mini-batch size")
    add("--learning-rate", type=float, default=3e-4, help="SAC learning rates")
    add("--version", default="v0", help="version suffix of the dataset names")
    add("--n-threads", type=int, default=None, help="PyTorch CPU threads")
    add("--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    build_datasets(
        args.env,
        n_sac_steps=args.n_sac_steps,
        n_transitions=args.n_transitions,
        qualities=args.qualities,
        out=args.out,
        seed=args.seed,
        random_steps=args.random_steps,
        eval_interval=args.eval_interval,
        n_eval_episodes=args.n_eval_episodes,
        n_ref_episodes=args.n_ref_episodes,
        medium_fraction=args.medium_fraction,
        medium_target_return=args.medium_target_return,
        hidden_units=args.hidden_units,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        version=args.version,
        n_threads=args.n_threads,
        verbose=not args.quiet,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
