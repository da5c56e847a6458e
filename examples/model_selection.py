"""Choose IQL's balance β by cross-validation over episodes.

``GridSearchCV`` slices the transitions' keyword arrays per fold; ``GroupKFold``
over episode ids keeps every episode whole in one fold. Two ways to score:

- the return in the environment (``make_env_return_scorer``), the real target;
- offline, on the held-out episodes (TD error), which needs scikit-learn's
  metadata routing to pass rewards and next observations to the scorer.

Last, the same search over a ``Pipeline`` whose first step adds a feature (the
pendulum's angle). Observation *normalisation* is a parameter of the policy, not a
Pipeline step; a feature map in a Pipeline must be applied to the next
observations too, since a Pipeline hands fit parameters to its last step as they are.

    python examples/model_selection.py [--n-steps 2000]
"""

from __future__ import annotations

import argparse

import numpy as np
import sklearn
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sk_o2o import IQLPolicy
from sk_o2o.datasets import load_dataset
from sk_o2o.metrics import make_env_return_scorer, td_error_scorer


def with_angle(observations: np.ndarray) -> np.ndarray:
    """Pendulum observations (cos θ, sin θ, θ') plus θ itself."""
    angle = np.arctan2(observations[:, 1], observations[:, 0])
    return np.column_stack([observations, angle])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-steps", type=int, default=2000)
    args = parser.parse_args()

    data = load_dataset("pendulum-medium-replay-v0")
    X, y = data.observations, data.actions
    transitions = {
        "rewards": data.rewards,
        "next_observations": data.next_observations,
        "terminals": data.terminals,
        "timeouts": data.timeouts,
    }
    policy = IQLPolicy(n_steps=args.n_steps, hidden_sizes=(128, 128), random_state=0)
    grid = {"beta": [0.5, 3.0, 10.0]}

    by_return = GridSearchCV(
        policy,
        grid,
        cv=GroupKFold(n_splits=3),
        scoring=make_env_return_scorer(
            "Pendulum-v1",
            n_episodes=5,
            reference_returns=(data.ref_min_score, data.ref_max_score),
        ),
    )
    by_return.fit(X, y, groups=data.episode_ids, **transitions)
    print("normalised return per beta:")
    for beta, score in zip(
        grid["beta"], by_return.cv_results_["mean_test_score"], strict=True
    ):
        print(f"  beta={beta:5.1f}  {score:6.1f}")
    print("best:", by_return.best_params_)

    with sklearn.config_context(enable_metadata_routing=True):
        by_td = GridSearchCV(
            policy, grid, cv=GroupKFold(n_splits=3), scoring=td_error_scorer
        )
        by_td.fit(X, y, groups=data.episode_ids, **transitions)
    print("held-out TD error per beta (negated):")
    for beta, score in zip(
        grid["beta"], by_td.cv_results_["mean_test_score"], strict=True
    ):
        print(f"  beta={beta:5.1f}  {score:8.4f}")
    print(
        "IQL's critics do not depend on beta, so the TD error barely moves with it:"
        " score policies by return."
    )

    pipe = make_pipeline(FunctionTransformer(with_angle), policy)
    pipe_params = {f"iqlpolicy__{k}": v for k, v in transitions.items()}
    pipe_params["iqlpolicy__next_observations"] = with_angle(data.next_observations)
    by_return_pipe = GridSearchCV(
        pipe,
        {"iqlpolicy__beta": grid["beta"]},
        cv=GroupKFold(n_splits=3),
        scoring=make_env_return_scorer(
            "Pendulum-v1",
            n_episodes=5,
            reference_returns=(data.ref_min_score, data.ref_max_score),
        ),
    )
    by_return_pipe.fit(X, y, groups=data.episode_ids, **pipe_params)
    print("Pipeline (angle feature + IQL), best:", by_return_pipe.best_params_)
    print(f"  its normalised return: {by_return_pipe.best_score_:.1f}")


if __name__ == "__main__":
    main()
