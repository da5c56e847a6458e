"""Observation, reward and action normalisation fitted on the training data.

They are estimator parameters, not Pipeline steps, so that observations, next
observations and predict-time inputs are always transformed identically.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from sk_o2o._base import find_stack_level
from sk_o2o.data.transitions import episode_ids

__all__ = [
    "ActionScaler",
    "ObservationScaler",
    "check_actions_in_bounds",
    "fit_action_scaler",
    "fit_observation_scaler",
    "reward_scale",
]

REWARD_SCALINGS = ("none", "standard", "returns")


@dataclass(frozen=True)
class ObservationScaler:
    """``(obs - mean) / std``; the identity when ``mean=0, std=1``."""

    mean: np.ndarray
    std: np.ndarray

    def transform(self, observations: np.ndarray) -> np.ndarray:
        return ((observations - self.mean) / self.std).astype(np.float32)

    def transform_(self, observations: torch.Tensor) -> torch.Tensor:
        """In-place :meth:`transform` of a tensor (no temporary copies)."""
        device = observations.device
        mean, std = torch.from_numpy(self.mean), torch.from_numpy(self.std)
        return observations.sub_(mean.to(device)).div_(std.to(device))


def fit_observation_scaler(observations: np.ndarray, enabled: bool):
    """Standardise each feature; constant features keep a unit scale."""
    dim = observations.shape[1]
    if not enabled:
        return ObservationScaler(np.zeros(dim, np.float32), np.ones(dim, np.float32))
    # float64 statistics, accumulated in chunks so no full-size temporary is made
    # (float32 accumulation turns a constant 1e6 feature into std 0.125).
    n = len(observations)
    mean = observations.sum(axis=0, dtype=np.float64) / n
    sq = np.zeros(dim)
    for start in range(0, n, 65_536):
        chunk = observations[start : start + 65_536].astype(np.float64) - mean
        sq += np.einsum("ij,ij->j", chunk, chunk)
    std = np.sqrt(sq / n)
    constant = std <= 1e-6 * (1.0 + np.abs(mean))
    return ObservationScaler(
        mean.astype(np.float32), np.where(constant, 1.0, std).astype(np.float32)
    )


@dataclass(frozen=True)
class ActionScaler:
    """Maps actions between ``[low, high]`` and the policy's ``[-1, 1]``."""

    low: np.ndarray
    high: np.ndarray

    def transform(self, actions: np.ndarray) -> np.ndarray:
        return (2.0 * (actions - self.low) / (self.high - self.low) - 1.0).astype(
            np.float32
        )

    def transform_(self, actions: torch.Tensor) -> torch.Tensor:
        """In-place :meth:`transform` of a tensor."""
        device = actions.device
        low = torch.from_numpy(self.low).to(device, torch.float32)
        high = torch.from_numpy(self.high).to(device, torch.float32)
        return actions.sub_(low).mul_(2.0 / (high - low)).sub_(1.0)

    def inverse_transform(self, actions: np.ndarray) -> np.ndarray:
        scaled = self.low + (np.clip(actions, -1.0, 1.0) + 1.0) * (
            (self.high - self.low) / 2.0
        )
        return np.clip(scaled, self.low, self.high)


def fit_action_scaler(actions: np.ndarray, action_bounds) -> ActionScaler:
    """Action bounds from ``action_bounds`` (a pair or a gymnasium Box), else data.

    Raises
    ------
    ValueError
        If the bounds are malformed or an action lies outside them.
    """
    dim = actions.shape[1]
    if action_bounds is None:
        low, high = actions.min(axis=0), actions.max(axis=0)
        flat = high - low < 1e-6
        low, high = np.where(flat, low - 1.0, low), np.where(flat, high + 1.0, high)
    else:
        if hasattr(action_bounds, "low") and hasattr(action_bounds, "high"):
            low, high = action_bounds.low, action_bounds.high
        else:
            try:
                low, high = action_bounds
            except (TypeError, ValueError):
                raise ValueError(
                    "action_bounds must be None, a (low, high) pair or a gymnasium "
                    f"Box, got {action_bounds!r}."
                ) from None
        try:
            low = np.broadcast_to(np.asarray(low, dtype=np.float64), (dim,)).copy()
            high = np.broadcast_to(np.asarray(high, dtype=np.float64), (dim,)).copy()
        except (TypeError, ValueError):
            raise ValueError(
                "action_bounds must hold numbers, scalars or arrays of length "
                f"{dim} (the actions' dimension), got {action_bounds!r}."
            ) from None
        infinite = np.flatnonzero(~(np.isfinite(low) & np.isfinite(high)))
        if len(infinite):
            raise ValueError(
                f"action_bounds must be finite, got low={low.tolist()}, "
                f"high={high.tolist()} (first infinite at dimension {infinite[0]}); "
                "the policy scales actions to [-1, 1] by these bounds."
            )
        if np.any(high <= low):
            raise ValueError(f"action_bounds need low < high, got {low}, {high}.")
        check_actions_in_bounds(actions, low, high, "action_bounds")
    return ActionScaler(low.astype(np.float64), high.astype(np.float64))


def check_actions_in_bounds(
    actions, low, high, bounds_name: str, hint: str = ""
) -> None:
    """Raise a ValueError naming ``y`` and the first action outside the bounds.

    Compared in float32, the precision actions are stored in, so an action at a
    bound such as -0.1 is not refused for float rounding. ``hint``, if given,
    ends the message.
    """
    low32, high32 = np.float32(low), np.float32(high)
    outside = np.flatnonzero(((actions < low32) | (actions > high32)).any(axis=1))
    if len(outside):
        raise ValueError(
            f"y holds actions outside {bounds_name} (first at index "
            f"{outside[0]}: {actions[outside[0]]}, bounds {low}..{high}).{hint}"
        )


def reward_scale(
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray | None,
    scaling: str,
    *,
    observations: np.ndarray | None = None,
    next_observations: np.ndarray | None = None,
) -> float:
    """Return the factor the rewards are multiplied by during training.

    ``"returns"`` is IQL's locomotion choice: ``1000 / (max - min episode
    return)`` (Kostrikov et al., 2022), which makes the AWR temperature comparable
    across tasks. Episodes end at terminals, timeouts and, given the
    observations, where ``next_observations[i]`` is not ``observations[i + 1]``
    (as in the IQL authors' code, which uses no timeouts); with a single
    episode the rewards are left unscaled, with a warning. ``"standard"``
    divides by the reward standard deviation. Rewards are scaled, never shifted:
    a shift changes the optimal policy of episodic tasks (it acts as a per-step
    bonus), and scaling keeps values exactly invertible.
    """
    if scaling == "none":
        return 1.0
    if scaling == "standard":
        std = float(rewards.std())
        return 1.0 / std if std > 1e-6 else 1.0
    ids = episode_ids(
        terminals,
        timeouts,
        observations=observations,
        next_observations=next_observations,
    )
    n_breaks = int(ids[-1]) - int(episode_ids(terminals, timeouts)[-1])
    # Breaks in the succession that no flag explains: time-limit ends where the
    # data carry no timeouts (one per episode), else rows dropped from episodes,
    # e.g. by a shuffled KFold, whose fragments' returns then set the scale. With
    # timeouts flagged, a few breaks already tell; without, only a rate no
    # episode length explains. Above half the rows,
    # warn_if_next_observations_do_not_follow speaks (maybe another space).
    flagged = timeouts is not None and bool(np.any(timeouts))
    rate = 0.01 if flagged else 0.1
    if n_breaks >= 10 and rate * len(rewards) < n_breaks <= len(rewards) / 2:
        warnings.warn(
            f"reward_scaling='returns' found {n_breaks} places in {len(rewards)} "
            "transitions where next_observations[i] is not X[i + 1] and no "
            "terminal or timeout ends the episode, so it scales the rewards by the "
            "returns of episode fragments, not of whole episodes. Rows dropped at "
            "random from episode-ordered data (KFold(shuffle=True), "
            "StratifiedKFold(shuffle=True)) do this: split by episode (GroupKFold "
            "with groups=episode_ids), or choose reward_scaling='standard'. (If "
            "these are the ends of short episodes, pass timeouts to say so.)",
            UserWarning,
            stacklevel=find_stack_level(),
        )
    returns = np.bincount(ids, weights=rewards.astype(np.float64))
    if len(returns) == 1:
        warnings.warn(
            "reward_scaling='returns' found one episode in the data (no terminals, "
            "timeouts or jumps between next_observations and the following "
            "observations), so it has no spread of returns: rewards are left "
            "unscaled. Pass timeouts, or choose reward_scaling='standard'.",
            UserWarning,
            stacklevel=find_stack_level(),
        )
        return 1.0
    spread = float(returns.max() - returns.min())
    return 1000.0 / spread if spread > 1e-6 else 1.0
