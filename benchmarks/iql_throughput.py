"""Update throughput of sk_o2o's IQLPolicy and FamO2OPolicy against d3rlpy's IQL.

Both train on the same transitions (Hopper-sized: 11-d observations, 3-d actions)
with batch 256 and 256-256 MLPs, in one process, on the same device. Each runs
``--steps`` gradient steps through its public ``fit`` (sampling included) after a
short warm-up; the script prints gradient steps per second and the ratio.

``--single-thread`` also times sk_o2o's steps with one torch thread, where a step
is not split in two, and reports the ceiling of the split on two threads: twice
that rate against d3rlpy's, the ratio a perfect split with no hand-off would give.

    python benchmarks/iql_throughput.py --steps 2000 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch


def make_data(n: int, obs_dim: int = 11, act_dim: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n + 1, obs_dim)).astype(np.float32)
    terminals = np.zeros(n, dtype=np.float32)
    terminals[999::1000] = 1.0
    return {
        "observations": obs[:-1],
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": obs[1:],
        "terminals": terminals,
    }


def sk_o2o_runner(data: dict, device: str, estimator: str = "IQLPolicy"):
    """A function timing ``fit`` with ``n_steps`` gradient steps."""
    import sk_o2o

    def run(n_steps):
        policy = getattr(sk_o2o, estimator)(
            n_steps=n_steps, batch_size=256, device=device, random_state=0
        )
        start = time.perf_counter()
        policy.fit(data)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return run


def d3rlpy_runner(data: dict, device: str):
    """A function timing d3rlpy's ``fit`` with ``n_steps`` gradient steps."""
    import d3rlpy

    dataset = d3rlpy.dataset.MDPDataset(
        data["observations"], data["actions"], data["rewards"], data["terminals"]
    )
    d3_device = "cpu:0" if device == "cpu" else "cuda:0"

    def run(n_steps):
        iql = d3rlpy.algos.IQLConfig(batch_size=256).create(device=d3_device)
        start = time.perf_counter()
        if n_steps:
            iql.fit(
                dataset,
                n_steps=n_steps,
                n_steps_per_epoch=n_steps,
                show_progress=False,
                logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
            )
        else:
            iql.build_with_dataset(dataset)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return run


def single_threaded(run):
    """``run`` with one torch thread (sk_o2o's step then runs whole)."""

    def run_1(n_steps):
        n_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return run(n_steps)
        finally:
            torch.set_num_threads(n_threads)

    return run_1


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on every platform
        return None


def steps_per_second(run, steps: int) -> float:
    """Gradient steps per second, less the set-up time (a 0-step fit)."""
    return steps / (run(steps) - run(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--transitions", type=int, default=100_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--single-thread",
        action="store_true",
        help="also time sk_o2o with one thread: the two-thread split's ceiling",
    )
    args = parser.parse_args()
    load_before = _load_average()
    data = make_data(args.transitions)
    runners = {
        "sk_o2o_iql": sk_o2o_runner(data, args.device),
        "sk_o2o_famo2o": sk_o2o_runner(data, args.device, "FamO2OPolicy"),
        "d3rlpy_iql": d3rlpy_runner(data, args.device),
    }
    if args.single_thread:
        for name in ("sk_o2o_iql", "sk_o2o_famo2o"):
            runners[f"{name}_1thread"] = single_threaded(runners[name])
    for run in runners.values():
        run(50)  # warm-up
    # Alternate the runners so that a slow spell of a shared machine hits all; report
    # the median of the repeats.
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            rates[name].append(steps_per_second(run, args.steps))
    median = {name: float(np.median(r)) for name, r in rates.items()}
    result = {
        "device": args.device,
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads",
        "steps": args.steps,
        "repeats": args.repeats,
        **{f"{name}_steps_per_s": round(v, 1) for name, v in median.items()},
        "ratio_iql": round(median["sk_o2o_iql"] / median["d3rlpy_iql"], 2),
        "ratio_famo2o": round(median["sk_o2o_famo2o"] / median["d3rlpy_iql"], 2),
        # a step split perfectly over two threads would run at twice the 1-thread rate
        **{
            f"ceiling_{name}": round(
                2 * median[f"sk_o2o_{name}_1thread"] / median["d3rlpy_iql"], 2
            )
            for name in ("iql", "famo2o")
            if f"sk_o2o_{name}_1thread" in median
        },
        # Other processes on a shared machine change the figures (with two torch
        # threads, OpenMP's per-kernel fork-join suffers most): record the load.
        "load_average_1min": [load_before, _load_average()],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
