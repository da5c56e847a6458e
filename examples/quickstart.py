"""Quickstart: offline RL on the shipped Pendulum data, in a few minutes on a CPU.

Fits :class:`sk_o2o.IQLPolicy` on ``pendulum-medium-replay-v0`` (logged while an
SAC agent was learning, mostly poor episodes), then compares its return in the
real environment with a random policy and with the episodes in the data.

    python examples/quickstart.py [--n-steps 5000] [--out quickstart_output]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import sk_o2o
from sk_o2o import IQLPolicy
from sk_o2o.datasets import episode_returns, load_dataset, normalized_score
from sk_o2o.rl.online import evaluate_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-steps", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path("quickstart_output"))
    args = parser.parse_args()

    data = load_dataset("pendulum-medium-replay-v0")
    print(f"data: {len(data.rewards)} transitions, {data.episode_ids[-1] + 1} episodes")

    policy = IQLPolicy(
        n_steps=args.n_steps, random_state=0, verbose=1, log_interval=100
    )
    start = time.perf_counter()
    policy.fit(data)
    print(f"fit: {args.n_steps} gradient steps in {time.perf_counter() - start:.0f} s")

    def score(returns):
        mean = returns.mean()
        norm = normalized_score(mean, data.ref_min_score, data.ref_max_score)
        return f"{mean:8.1f}  (normalised {norm:5.1f})"

    data_returns = episode_returns(data.rewards, data.terminals, data.timeouts)
    print("mean return over episodes, Pendulum-v1:")
    print(f"  random policy  {score(evaluate_policy(None, 'Pendulum-v1'))}")
    print(f"  the data       {score(data_returns)}")
    print(f"  IQLPolicy      {score(evaluate_policy(policy, 'Pendulum-v1'))}")

    args.out.mkdir(parents=True, exist_ok=True)
    policy.save(args.out / "iql_pendulum.safetensors")  # no pickle: safe to share
    reloaded = sk_o2o.load(args.out / "iql_pendulum.safetensors")
    assert (
        reloaded.predict(data.observations) == policy.predict(data.observations)
    ).all()
    print(f"saved and reloaded: {args.out / 'iql_pendulum.safetensors'}")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    steps = [h["step"] for h in policy.history_]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for ax, key in zip(axes, ["value_loss", "critic_loss", "actor_loss"], strict=True):
        ax.plot(steps, [h[key] for h in policy.history_])
        ax.set(title=key, xlabel="gradient step")
    fig.tight_layout()
    fig.savefig(args.out / "losses.png", dpi=100)
    print(f"loss curves: {args.out / 'losses.png'}")


if __name__ == "__main__":
    main()
