"""The data layer: transitions, their converters, normalisers and the device buffer."""

from sk_o2o.data.buffer import Batch, TransitionBuffer
from sk_o2o.data.transitions import (
    D4RL_KEYS,
    DatasetLike,
    Transitions,
    as_transitions,
)

__all__ = [
    "D4RL_KEYS",
    "Batch",
    "DatasetLike",
    "TransitionBuffer",
    "Transitions",
    "as_transitions",
]
