"""Settings for every test run here, the doctests under ``sk_o2o/`` included."""

from __future__ import annotations

import os

import torch

# The tests train tiny networks: one intra-op thread is faster than several, and
# on a busy machine several threads oversubscribe the cores (20x slower here).
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)
