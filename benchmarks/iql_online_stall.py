"""Why does online fine-tuning stall on the small Hopper medium-replay build?

One `IQLPolicy` run (default parameters, as in `famo2o_returns.py`) per call:
``--offline-steps`` on a variant of a dataset, then ``--online-steps`` of
`fit_online` with evaluations every 5,000 steps. Prints and writes one JSON record:
the evaluations, the training episodes' mean return and length per 5,000 steps,
and the actor's standard deviation after each phase. Variants:

- ``base``: the dataset as built;
- ``nonorm``: ``normalize_observations=False``;
- ``norandom``: without its first 5,000 rows (the builder's uniform random steps);
- ``first7500``: its first 7,500 rows only (the size of the small medium-replay
  build), e.g. of ``hopper-medium-v0``.

    SK_O2O_DATA=/tmp/hopper OMP_NUM_THREADS=1 python benchmarks/iql_online_stall.py \\
        --dataset hopper-medium-replay-v0 --variant norandom --seed 0 --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sk_o2o import IQLPolicy
from sk_o2o.data import D4RL_KEYS
from sk_o2o.datasets import load_dataset

ROWS = {"norandom": slice(5000, None), "first7500": slice(0, 7500)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="hopper-medium-replay-v0")
    parser.add_argument("--variant", choices=["base", "nonorm", *ROWS], default="base")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--offline-steps", type=int, default=30_000)
    parser.add_argument("--online-steps", type=int, default=30_000)
    parser.add_argument("--out", type=Path, default=Path("benchmark_output"))
    args = parser.parse_args()

    data = load_dataset(args.dataset)
    env_id = str(data.env_id)
    if args.variant in ROWS:
        data = {key: data[key][ROWS[args.variant]].copy() for key in D4RL_KEYS}
        data["timeouts"][-1] |= ~data["terminals"][-1]  # the cut episode ends here
    policy = IQLPolicy(
        n_steps=args.offline_steps,
        normalize_observations=args.variant != "nonorm",
        random_state=args.seed,
    ).fit(data)
    std_offline = policy.core_.actor.std().tolist()
    policy.fit_online(
        env_id, args.online_steps, eval_interval=5000, n_eval_episodes=5, seed=args.seed
    )
    episodes = [h for h in policy.history_ if h["phase"] == "online_episode"]
    ends = np.array([h["env_step"] for h in episodes])
    returns = np.array([h["episode_return"] for h in episodes])
    lengths = np.diff(ends, prepend=0)
    windows = []
    for start in range(0, args.online_steps, 5000):
        inside = (ends > start) & (ends <= start + 5000)
        windows.append(
            {
                "until_step": start + 5000,
                "episodes": int(inside.sum()),
                "mean_return": float(returns[inside].mean()),
                "mean_length": float(lengths[inside].mean()),
            }
        )
    record = {
        "dataset": args.dataset,
        "variant": args.variant,
        "seed": args.seed,
        "offline_steps": args.offline_steps,
        "evaluations": [
            (h["env_step"], h["eval_return"])
            for h in policy.history_
            if h["phase"] == "online_eval" and h["env_step"] > 0  # as recorded
        ],
        "training_episodes": windows,
        "actor_std_after_offline": std_offline,
        "actor_std_after_online": policy.core_.actor.std().tolist(),
    }
    print(json.dumps(record), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"iql_online_stall_{args.dataset}_{args.variant}_{args.seed}.json"
    (args.out / name).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
