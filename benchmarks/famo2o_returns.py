"""Offline → online returns: FamO2O vs fixed-β IQL (ours) vs d3rlpy's IQL.

For each dataset and seed, every agent trains ``--offline-steps`` gradient steps
on the dataset, is evaluated, then fine-tunes ``--online-steps`` environment steps
(one update per step) and is evaluated every ``--eval-interval`` steps. Prints a
table of D4RL-normalised returns (mean ± std over seeds) after the offline and the
online phase, and writes learning curves to ``--out``.

Datasets are names for :func:`sk_o2o.datasets.load_dataset`: the shipped Pendulum
ones, or MuJoCo ones built with ``python -m sk_o2o.datasets.builder``, e.g.

    python benchmarks/famo2o_returns.py --datasets hopper-medium-v0 \\
        hopper-medium-replay-v0 --seeds 0 1 2 --offline-steps 100000 \\
        --online-steps 100000 --eval-interval 10000

Runs split over several processes (``--datasets`` or ``--seeds`` each) are merged
with ``--report out1/famo2o_returns.json out2/famo2o_returns.json``; ``--agents``
runs some of the agents only.

d3rlpy's IQL gets nearly the same preprocessing as ours (standardised
observations, d3rlpy adding 1e-3 to the std; rewards scaled by 1000 / return
range, d3rlpy's range 1.2 % wider on the small Hopper build as it drops the
data's last transition; actions min-max scaled) and fine-tunes through one call
of its own ``fit_online`` with the offline data in its buffer, evaluated by a
callback. It keeps its default 256-256 networks: ``--hidden`` sets ours only, so
keep the default to compare.

Every agent is evaluated on the same episodes: after the offline phase those
seeded ``seed``, online those seeded ``seed + 10_000`` (what ``fit_online`` uses
for its evaluations). The training environment is reset with ``seed`` first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sk_o2o import FamO2OPolicy, IQLPolicy
from sk_o2o.datasets import load_dataset, normalized_score
from sk_o2o.rl.base import ONLINE_EVAL_SEED_OFFSET
from sk_o2o.rl.online import evaluate_policy

AGENTS = {
    "famo2o": "FamO2O (ours)",
    "famo2o_authors": "FamO2O, authors' weights",
    "iql": "IQL (ours)",
    "iql_cosine": "IQL (ours), cosine actor lr",
    "d3rlpy": "IQL (d3rlpy)",
}
DEFAULT_AGENTS = ["famo2o", "iql", "d3rlpy"]
ESTIMATORS = {  # key: (class, parameters other than the run's)
    "famo2o": (FamO2OPolicy, {}),
    "famo2o_authors": (FamO2OPolicy, {"advantage_weighting": "batch_mean"}),
    "iql": (IQLPolicy, {}),
    "iql_cosine": (IQLPolicy, {"actor_lr_schedule": "cosine"}),
}


def run_ours(policy, data, args, seed: int) -> list[tuple[int, float]]:
    env = str(data.env_id)
    policy.fit(data)
    curve = [(0, evaluate_policy(policy, env, n_episodes=args.episodes, seed=seed))]
    policy.fit_online(
        env,
        args.online_steps,
        eval_interval=args.eval_interval,
        n_eval_episodes=args.episodes,
        seed=seed,
    )
    # fit_online also evaluates at step 0, on the online seeds; the protocol's
    # step-0 point is the one above, on the same episodes as d3rlpy's.
    curve += [
        (h["env_step"], h["eval_return"])
        for h in policy.history_
        if h["phase"] == "online_eval" and h["env_step"] > 0
    ]
    return [(step, float(np.mean(r))) for step, r in curve]


def run_d3rlpy(data, args, seed: int) -> list[tuple[int, float]]:
    import d3rlpy
    import gymnasium

    d3rlpy.seed(seed)
    env_id = str(data.env_id)
    dataset = d3rlpy.dataset.MDPDataset(
        data.observations,
        data.actions,
        data.rewards,
        data.terminals,
        timeouts=data.timeouts,
    )
    iql = d3rlpy.algos.IQLConfig(
        observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
        action_scaler=d3rlpy.preprocessing.MinMaxActionScaler(),
        reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
        batch_size=256,
    ).create(device="cuda:0" if args.device == "cuda" else "cpu:0")
    quiet = {
        "show_progress": False,
        "logger_adapter": d3rlpy.logging.NoopAdapterFactory(),
    }
    iql.fit(
        dataset,
        n_steps=args.offline_steps,
        n_steps_per_epoch=args.offline_steps,
        **quiet,
    )
    curve = [(0, evaluate_policy(iql, env_id, n_episodes=args.episodes, seed=seed))]

    def evaluate(algo, epoch: int, total_step: int) -> None:
        if total_step % args.eval_interval == 0:
            returns = evaluate_policy(
                algo,
                env_id,
                n_episodes=args.episodes,
                seed=seed + ONLINE_EVAL_SEED_OFFSET,
            )
            curve.append((total_step, returns))

    env = gymnasium.make(env_id)
    # d3rlpy resets without a seed: seeding once here makes its episodes
    # reproducible, as ours are (fit_online resets with seed).
    env.reset(seed=seed)
    # One call, as ours: fine-tuning in chunks would cut an episode at each one.
    iql.fit_online(
        env,
        buffer=dataset,
        n_steps=args.online_steps,
        n_steps_per_epoch=args.online_steps,
        random_steps=0,
        callback=evaluate,
        **quiet,
    )
    return [(step, float(np.mean(r))) for step, r in curve]


def run_agent(key: str, data, args, seed: int) -> list[tuple[int, float]]:
    """The (online step, raw return) curve of one agent on one seed."""
    if key == "d3rlpy":
        return run_d3rlpy(data, args, seed)
    estimator, params = ESTIMATORS[key]
    policy = estimator(
        n_steps=args.offline_steps,
        hidden_sizes=tuple(args.hidden),
        device=args.device,
        random_state=seed,
        **params,
    )
    return run_ours(policy, data, args, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["pendulum-medium-v0"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--offline-steps", type=int, default=2000)
    parser.add_argument("--online-steps", type=int, default=2000)
    parser.add_argument("--eval-interval", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--hidden", nargs="+", type=int, default=[256, 256])
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="for every agent"
    )
    parser.add_argument(
        "--agents", nargs="+", choices=list(AGENTS), default=DEFAULT_AGENTS
    )
    parser.add_argument("--out", type=Path, default=Path("benchmark_output"))
    parser.add_argument(
        "--report",
        nargs="+",
        type=Path,
        help="only merge these famo2o_returns.json files (e.g. of parallel runs) "
        "and print and plot them into --out",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report:
        merged: dict = {}
        for path in args.report:  # runs of the same dataset and agent add up
            for name, agents in json.loads(path.read_text()).items():
                for agent, runs in agents.items():
                    merged.setdefault(name, {}).setdefault(agent, []).extend(runs)
        report(merged, args.out)
        return

    results: dict = {}
    for name in args.datasets:
        data = load_dataset(name)
        for seed in args.seeds:
            curves = {
                AGENTS[key]: run_agent(key, data, args, seed) for key in args.agents
            }
            for agent, curve in curves.items():
                normalised = [
                    (step, normalized_score(r, data.ref_min_score, data.ref_max_score))
                    for step, r in curve
                ]
                results.setdefault(name, {}).setdefault(agent, []).append(normalised)
                print(f"{name} seed {seed} {agent}: {normalised}", flush=True)
    (args.out / "famo2o_returns.json").write_text(json.dumps(results, indent=1))
    report(results, args.out)


def report(results: dict, out: Path) -> None:
    """Print the table of normalised returns and write one learning-curve plot each."""
    print("\nD4RL-normalised return, mean ± std over seeds (last 3: each seed's mean")
    print("of its last three evaluations, less noisy than the last one alone)")
    header = ("after offline", "after online", "last 3 online")
    print(f"{'dataset':30s}{'agent':26s}" + "".join(f"{h:>18s}" for h in header))
    for name, agents in results.items():
        for agent, runs in agents.items():
            columns = (
                np.array([run[0][1] for run in runs]),
                np.array([run[-1][1] for run in runs]),
                # online evaluations only: run[0] is the one after the offline phase
                np.array([np.mean([r for _, r in run[1:][-3:]]) for run in runs]),
            )
            print(
                f"{name:30s}{agent:26s}"
                + "".join(f"{c.mean():10.1f} ± {c.std():5.1f}" for c in columns)
                + f"   ({len(runs)} seeds)"
            )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    for name, agents in results.items():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for agent, runs in agents.items():
            steps = [s for s, _ in runs[0]]
            values = np.array([[v for _, v in run] for run in runs])
            ax.plot(steps, values.mean(0), marker="o", label=agent)
            ax.fill_between(
                steps,
                values.mean(0) - values.std(0),
                values.mean(0) + values.std(0),
                alpha=0.2,
            )
        ax.set(
            xlabel="online environment steps", ylabel="normalised return", title=name
        )
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)


if __name__ == "__main__":
    main()
