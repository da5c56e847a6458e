"""Reinforcement learning: networks, algorithm cores, estimators, environment loops."""

from sk_o2o.rl.estimators import FamO2OPolicy, IQLPolicy, TD3BCPolicy

__all__ = ["FamO2OPolicy", "IQLPolicy", "TD3BCPolicy"]
