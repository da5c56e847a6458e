"""A replay buffer that lives on the training device.

Transitions are copied to the device once; batches are drawn by tensor indexing,
never by a Python loop over transitions. Appending (the online path) grows the
storage geometrically, so one env step at a time costs amortised O(1).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

__all__ = ["Batch", "TransitionBuffer"]


class Batch(NamedTuple):
    """A mini-batch of (already normalised) transitions on the device."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    dones: torch.Tensor


class TransitionBuffer:
    """Device-resident transitions with index sampling.

    Parameters
    ----------
    obs_dim, act_dim : int
        Feature sizes.
    device : torch.device
        Where the storage lives.
    capacity : int, default=1024
        Initial storage size; grows by doubling when full.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, device: torch.device, capacity: int = 1024
    ):
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.size = 0
        self._storage = self._allocate(max(capacity, 1), torch.device(device))

    def _allocate(self, capacity: int, device: torch.device) -> dict:
        def empty(*shape):
            return torch.empty(shape, dtype=torch.float32, device=device)

        return {
            "observations": empty(capacity, self.obs_dim),
            "actions": empty(capacity, self.act_dim),
            "rewards": empty(capacity),
            "next_observations": empty(capacity, self.obs_dim),
            "dones": empty(capacity),
        }

    @property
    def device(self) -> torch.device:
        return self._storage["rewards"].device

    @property
    def capacity(self) -> int:
        return len(self._storage["rewards"])

    def __len__(self) -> int:
        return self.size

    def append(self, **arrays: np.ndarray | torch.Tensor) -> None:
        """Append normalised arrays with keys of :class:`Batch`."""
        n = len(arrays["rewards"])
        if self.size + n > self.capacity:
            new_capacity = max(2 * self.capacity, self.size + n)
            storage = self._allocate(new_capacity, self.device)
            for key, old in self._storage.items():
                storage[key][: self.size] = old[: self.size]
            self._storage = storage
        for key, value in arrays.items():
            tensor = torch.as_tensor(value, dtype=torch.float32)
            self._storage[key][self.size : self.size + n] = tensor.to(self.device)
        self.size += n

    def rows(self, start: int, stop: int | None = None) -> dict[str, torch.Tensor]:
        """Views of the stored rows ``start:stop``, for in-place normalisation."""
        stop = self.size if stop is None else stop
        return {key: value[start:stop] for key, value in self._storage.items()}

    def sample(self, indices: torch.Tensor) -> Batch:
        """The transitions at ``indices`` (a long tensor on the buffer's device)."""
        return Batch(*(self._storage[key][indices] for key in Batch._fields))

    def to(self, device: torch.device) -> TransitionBuffer:
        """Move the storage to ``device`` in place and return self."""
        self._storage = {k: v.to(device) for k, v in self._storage.items()}
        return self

    def __reduce__(self):
        # Pickles hold CPU numpy arrays of the filled part only, so they load on
        # machines without the training GPU.
        arrays = {k: v[: self.size].cpu().numpy() for k, v in self._storage.items()}
        return (_rebuild_buffer, (self.obs_dim, self.act_dim, arrays))


def _rebuild_buffer(obs_dim: int, act_dim: int, arrays: dict) -> TransitionBuffer:
    buffer = TransitionBuffer(
        obs_dim, act_dim, torch.device("cpu"), capacity=len(arrays["rewards"])
    )
    buffer.append(**arrays)
    return buffer
