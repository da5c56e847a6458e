"""Seed-to-seed spread after offline training: FamO2O, its members at fixed β, IQL.

A diagnostic for ``famo2o_returns.py``: when FamO2O scores far below IQL after
the offline phase on some seeds, is the balance model's choice to blame, the
universal model, or the spread that IQL itself shows at that many steps? For each
seed it fits ``FamO2OPolicy`` and ``IQLPolicy`` with the same number of gradient
steps and evaluates, over the same seeded episodes, FamO2O acting with the
balance model's β, the universal model with β fixed at each ``--betas`` value
(``predict_with_balance``), and IQL. Prints one line per seed and writes JSON.

    python benchmarks/famo2o_offline_seeds.py --dataset hopper-medium-v0 \\
        --steps 5000 --seeds 0 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np

from sk_o2o import FamO2OPolicy, IQLPolicy
from sk_o2o.datasets import episode_returns, load_dataset
from sk_o2o.rl.online import evaluate_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="pendulum-medium-v0")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 3.0, 5.0])
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument(
        "--advantage-weighting",
        choices=["per_sample", "batch_mean"],
        default="per_sample",
    )
    parser.add_argument("--out", type=Path, default=Path("famo2o_offline_seeds"))
    args = parser.parse_args()
    data = load_dataset(args.dataset, data_home=args.data_home)
    env = str(data.env_id)
    data_return = float(
        episode_returns(data.rewards, data.terminals, data.timeouts).mean()
    )
    print(
        f"{args.dataset}: {len(data.rewards)} transitions, data return {data_return:.1f}"
    )
    runs = []
    for seed in args.seeds:
        start = time.perf_counter()

        def score(policy, seed=seed) -> float:
            # a policy: an estimator, or a callable from observations to actions
            returns = evaluate_policy(policy, env, n_episodes=args.episodes, seed=seed)
            return float(returns.mean())

        famo2o = FamO2OPolicy(
            n_steps=args.steps,
            random_state=seed,
            advantage_weighting=args.advantage_weighting,
        ).fit(data)
        chosen = famo2o.predict_balance(data.observations)
        iql = IQLPolicy(n_steps=args.steps, random_state=seed).fit(data)
        run = {
            "seed": seed,
            "famo2o": score(famo2o),
            "famo2o_fixed_beta": {
                str(beta): score(
                    functools.partial(famo2o.predict_with_balance, beta=beta)
                )
                for beta in args.betas
            },
            "chosen_beta": [
                float(chosen.min()),
                float(chosen.mean()),
                float(chosen.max()),
            ],
            "iql": score(iql),
            "seconds": time.perf_counter() - start,
        }
        runs.append(run)
        fixed = "  ".join(
            f"β={b}: {r:6.1f}" for b, r in run["famo2o_fixed_beta"].items()
        )
        print(
            f"seed {seed}: FamO2O {run['famo2o']:6.1f} (β {chosen.min():.2f}-"
            f"{chosen.max():.2f})  fixed {fixed}  IQL {run['iql']:6.1f}",
            flush=True,
        )
    returns = {
        "famo2o": [r["famo2o"] for r in runs],
        "iql": [r["iql"] for r in runs],
    }
    for b in args.betas:
        returns[f"famo2o_beta_{b}"] = [r["famo2o_fixed_beta"][str(b)] for r in runs]
    summary = {k: [float(np.mean(v)), float(np.std(v))] for k, v in returns.items()}
    print(
        "mean ± std over seeds:",
        {k: f"{m:.1f} ± {s:.1f}" for k, (m, s) in summary.items()},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "dataset": args.dataset,
        "steps": args.steps,
        "data_return": data_return,
        "runs": runs,
        "summary": summary,
    }
    (args.out / "famo2o_offline_seeds.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
