"""End to end: IQLPolicy learns a better policy than the data's from shipped data."""

from __future__ import annotations

import numpy as np
import pytest

from sk_o2o import IQLPolicy
from sk_o2o.datasets import episode_returns, load_dataset
from sk_o2o.rl.online import evaluate_policy

pytest.importorskip("gymnasium")


def test_iql_beats_random_and_the_data_on_pendulum():
    data = load_dataset("pendulum-medium-replay-v0")
    data_mean = episode_returns(data.rewards, data.terminals, data.timeouts).mean()
    random_mean = evaluate_policy(None, "Pendulum-v1", n_episodes=10, seed=100).mean()

    policy = IQLPolicy(
        n_steps=3000, hidden_sizes=(128, 128), device="cpu", random_state=0
    ).fit(data)
    learned_mean = evaluate_policy(
        policy, "Pendulum-v1", n_episodes=10, seed=100
    ).mean()

    # Measured (seeds 0-2): about -600..-880 against random ≈ -1200 and the
    # data's -1308. "Well above random" is at least 20% of the random-to-expert
    # gap (the expert return is data.ref_max_score ≈ -138).
    gap = data.ref_max_score - data.ref_min_score
    assert learned_mean >= random_mean + 0.2 * gap, (learned_mean, random_mean)
    # Implied by the line above on this data (its episodes score below random);
    # kept as the foundation issue's second criterion.
    assert learned_mean >= data_mean, (learned_mean, data_mean)
    assert np.isfinite([h["critic_loss"] for h in policy.history_]).all()
