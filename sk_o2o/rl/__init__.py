"""Reinforcement learning: networks, algorithm cores, estimators, environment loops."""

from sk_o2o.rl.estimators import IQLPolicy

__all__ = ["IQLPolicy"]
