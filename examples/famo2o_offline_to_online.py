"""FamO2O offline → online on Pendulum: what the balance model does.

Pre-trains :class:`sk_o2o.FamO2OPolicy` offline on the shipped medium + expert
Pendulum data, then fine-tunes it online in the environment, and writes two
figures:

- ``return_curve.png``: evaluation return during online fine-tuning, against the
  return right after offline pre-training and against fixed-β IQL (``IQLPolicy``)
  pre-trained and fine-tuned the same way;
- ``balance_vs_quality.png``: the β the balance model picks for each dataset
  state, against the return of the episode that state comes from.

    python examples/famo2o_offline_to_online.py [--offline-steps 3000]
        [--online-steps 3000] [--out famo2o_output]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sk_o2o import FamO2OPolicy, IQLPolicy
from sk_o2o.datasets import episode_returns, load_dataset

ENV = "Pendulum-v1"


def offline_then_online(policy, data, args) -> list[tuple[int, float]]:
    """Fit offline, fine-tune online; the (env step, evaluation return) curve.

    fit_online evaluates before its first step as well: the curve starts at
    the offline policy's return.
    """
    policy.fit(data)
    policy.fit_online(
        ENV,
        args.online_steps,
        eval_interval=args.eval_interval,
        n_eval_episodes=5,
        seed=0,
    )
    return [
        (h["env_step"], h["eval_return"])
        for h in policy.history_
        if h["phase"] == "online_eval"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--offline-steps", type=int, default=3000)
    parser.add_argument("--online-steps", type=int, default=3000)
    parser.add_argument("--eval-interval", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("famo2o_output"))
    args = parser.parse_args()

    data = load_dataset("pendulum-medium-expert-v0")
    common = {
        "n_steps": args.offline_steps,
        "hidden_sizes": (128, 128),
        "random_state": 0,
        "verbose": 1,
    }
    famo2o = FamO2OPolicy(balance_update_interval=1, **common)
    curves = {
        "FamO2O (IQL)": offline_then_online(famo2o, data, args),
        "IQL, fixed β=3": offline_then_online(
            IQLPolicy(beta=3.0, **common), data, args
        ),
    }
    for name, curve in curves.items():
        print(f"{name:16s}", "  ".join(f"{step}:{ret:7.1f}" for step, ret in curve))

    beta = famo2o.predict_balance(data.observations)
    state_return = episode_returns(data.rewards, data.terminals, data.timeouts)[
        data.episode_ids
    ]
    print(
        f"chosen β: {beta.min():.2f}..{beta.max():.2f} (std {beta.std():.3f}); "
        f"correlation with the state's episode return "
        f"{np.corrcoef(beta, state_return)[0, 1]:+.2f}"
    )

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figures")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, curve in curves.items():
        steps, returns = zip(*curve, strict=True)
        ax.plot(steps, returns, marker="o", label=name)
    ax.set(xlabel="online environment steps", ylabel="evaluation return", title=ENV)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "return_curve.png", dpi=100)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter(state_return, beta, s=2, alpha=0.3)
    ax.set(
        xlabel="return of the state's episode in the data",
        ylabel="β chosen by the balance model",
        title="state-adaptive balance",
    )
    fig.tight_layout()
    fig.savefig(args.out / "balance_vs_quality.png", dpi=100)
    print(f"figures in {args.out}/")


if __name__ == "__main__":
    main()
