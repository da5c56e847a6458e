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
    """A mini-batch of (already normalised) transitions on the device.

    Attributes
    ----------
    observations : tensor of shape (batch_size, obs_dim)
        The states, normalised.
    actions : tensor of shape (batch_size, act_dim)
        The actions taken, in the policy's [-1, 1] units.
    rewards : tensor of shape (batch_size,)
        The rewards, multiplied by the estimator's reward scale.
    next_observations : tensor of shape (batch_size, obs_dim)
        The states the actions led to, normalised.
    dones : tensor of shape (batch_size,)
        1.0 where the transition is terminal (no bootstrapping), else 0.0.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    dones: torch.Tensor


class TransitionBuffer:
    """Device-resident transitions with index sampling.

    Parameters
    ----------
    obs_dim : int
        Observation size.
    act_dim : int
        Action size.
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
        # One row per transition, [obs | action | reward | next obs | done]: a
        # batch is a single gather instead of one per field.
        widths = {
            "observations": obs_dim,
            "actions": act_dim,
            "rewards": 1,
            "next_observations": obs_dim,
            "dones": 1,
        }
        bounds = np.cumsum([0, *widths.values()])
        self._columns = {
            key: slice(int(lo), int(hi))
            for key, lo, hi in zip(widths, bounds[:-1], bounds[1:], strict=True)
        }
        self._data = torch.empty(
            (max(capacity, 1), int(bounds[-1])),
            dtype=torch.float32,
            device=torch.device(device),
        )

    def _fields(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Column views of ``rows``; rewards and dones as vectors."""
        fields = {key: rows[:, cols] for key, cols in self._columns.items()}
        fields["rewards"] = fields["rewards"].squeeze(-1)
        fields["dones"] = fields["dones"].squeeze(-1)
        return fields

    @property
    def device(self) -> torch.device:
        """The device the storage lives on."""
        return self._data.device

    @property
    def capacity(self) -> int:
        """Rows the storage holds before it grows."""
        return len(self._data)

    def __len__(self) -> int:
        return self.size

    def append(self, **arrays: np.ndarray | torch.Tensor) -> None:
        """Append transitions, growing the storage when it is full.

        Parameters
        ----------
        **arrays : ndarray or tensor
            One array per field of :class:`Batch` (``observations``, ``actions``,
            ``rewards``, ``next_observations``, ``dones``), all of the same
            length; copied to the device as float32.
        """
        n = len(arrays["rewards"])
        if self.size + n > self.capacity:
            new_capacity = max(2 * self.capacity, self.size + n)
            data = self._data.new_empty((new_capacity, self._data.shape[1]))
            data[: self.size] = self._data[: self.size]
            self._data = data
        new_rows = self._fields(self._data[self.size : self.size + n])
        for key, value in arrays.items():
            if isinstance(value, np.ndarray) and not (
                value.flags.c_contiguous and value.flags.writeable
            ):  # torch takes neither negative strides (X[::-1]) nor read-only arrays
                value = np.array(value, dtype=np.float32, order="C")
            tensor = torch.as_tensor(value, dtype=torch.float32)
            new_rows[key].copy_(tensor.to(self.device))
        self.size += n

    def rows(self, start: int, stop: int | None = None) -> dict[str, torch.Tensor]:
        """Views of the stored rows ``start:stop``, for in-place normalisation.

        Parameters
        ----------
        start : int
            First row.
        stop : int, optional
            Row after the last; by default the number of stored rows.

        Returns
        -------
        fields : dict of str to tensor
            A view per field of :class:`Batch`; writing to it edits the buffer.
        """
        stop = self.size if stop is None else stop
        return self._fields(self._data[start:stop])

    def sample(self, indices: torch.Tensor) -> Batch:
        """The transitions at ``indices``.

        Parameters
        ----------
        indices : tensor of shape (batch_size,), dtype long
            Row indices, on the buffer's device.

        Returns
        -------
        batch : Batch
            Copies of those rows.
        """
        return Batch(**self._fields(self._data[indices]))

    def to(self, device: torch.device) -> TransitionBuffer:
        """Move the storage to ``device`` in place.

        Parameters
        ----------
        device : torch.device
            Where the storage goes.

        Returns
        -------
        self : TransitionBuffer
            This buffer.
        """
        self._data = self._data.to(device)
        return self

    def __reduce__(self):
        # Pickles hold CPU numpy arrays of the filled part only, so they load on
        # machines without the training GPU.
        arrays = {k: v.cpu().numpy() for k, v in self.rows(0).items()}
        return (_rebuild_buffer, (self.obs_dim, self.act_dim, arrays))


def _rebuild_buffer(obs_dim: int, act_dim: int, arrays: dict) -> TransitionBuffer:
    buffer = TransitionBuffer(
        obs_dim, act_dim, torch.device("cpu"), capacity=len(arrays["rewards"])
    )
    buffer.append(**arrays)
    return buffer
