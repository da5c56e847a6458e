"""Networks shared by the RL algorithms: MLPs, twin critics, Gaussian policies.

Policies take an optional conditioning input (``cond_dim``) so that the same actor
serves as FamO2O's universal model, fed the state and a code of the balance.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP", "DeterministicPolicy", "EnsembleCritic", "GaussianPolicy"]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # IQL's clip of the learned log-std
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class _Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) with CPU-friendly layouts.

    On the CPU, MKL's speed for the thin products of an MLP's first and last layers
    depends on the memory layout that autograd hands it, by up to 5x:

    - a narrow input layer (the state, ~10-30 features): ``linear`` computes the
      weight gradient as the transposed (256 x 256)ᵀ·(256 x in) product, 156 us
      for in = 11; through a contiguous (in x out) copy of the weight it is the
      (in x 256)·(256 x 256) product, 30 us. The copy is 3k numbers.
    - a single output (V(s)): the (1 x in) weight read as an (in x 1) matrix
      without copying: 65 vs 121 us for forward and backward.

    The values are the same matrix products; only the order of summation inside
    the BLAS kernel may differ, i.e. float rounding. Off the CPU it is ``linear``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cpu or x.dim() != 2:
            return nn.functional.linear(x, self.weight, self.bias)
        if self.out_features == 1:
            return torch.addmm(self.bias, x, self.weight.view(-1, 1))
        if self.in_features < _NARROW_INPUT:
            return torch.addmm(self.bias, x, self.weight.t().contiguous())
        return nn.functional.linear(x, self.weight, self.bias)


_NARROW_INPUT = 64  # input layers narrower than this take the copied-weight path


class MLP(nn.Sequential):
    """Linear-ReLU stack ending in a linear layer of size ``out_dim``."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int):
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [
                _Linear(in_dim, width, dtype=torch.float32),
                nn.ReLU(inplace=True),
            ]
            in_dim = width
        layers.append(_Linear(in_dim, out_dim, dtype=torch.float32))
        super().__init__(*layers)


class _EnsembleLinear(nn.Module):
    """``n`` independent linear layers evaluated with one batched matmul."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default initialisation
        self.weight = nn.Parameter(
            torch.empty(n, in_dim, out_dim, dtype=torch.float32).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(
            torch.empty(n, 1, out_dim, dtype=torch.float32).uniform_(-bound, bound)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if weight.shape[2] == 1:
            # The same numbers, seen as the transpose of an (n, 1, in) matrix: a
            # (n, in, 1) right-hand side with unit strides sends bmm down a path
            # about 8x slower on the CPU (145 vs 18 us for the critics' last layer).
            weight = weight.view(weight.shape[0], 1, -1).transpose(1, 2)
        return torch.baddbmm(self.bias, x, weight)


class EnsembleCritic(nn.Module):
    """``n_critics`` Q-networks Q_k(s, a) computed together.

    One batched matmul per layer instead of one small matmul per critic: the twin
    critics of IQL cost little more than one.

    Returns
    -------
    q : tensor of shape (n_critics, batch)
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: Sequence[int], n_critics: int = 2
    ):
        super().__init__()
        self.n_critics = n_critics
        dims = [obs_dim + act_dim, *hidden]
        layers: list[nn.Module] = []
        for d_in, d_out in itertools.pairwise(dims):
            layers += [_EnsembleLinear(n_critics, d_in, d_out), nn.ReLU(inplace=True)]
        layers.append(_EnsembleLinear(n_critics, dims[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, observations: torch.Tensor, actions: torch.Tensor):
        x = torch.cat([observations, actions], dim=-1)
        x = x.unsqueeze(0).expand(self.n_critics, *x.shape)
        return self.net(x).squeeze(-1)


class _Actor(nn.Module):
    """tanh(f(s[, c])): the mean action in [-1, 1], optionally conditioned on c.

    Subclasses define ``std()``; sampling adds ``std() * noise`` to the mode.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: Sequence[int], cond_dim: int = 0
    ):
        super().__init__()
        self.cond_dim = cond_dim
        self.mean_net = MLP(obs_dim + cond_dim, hidden, act_dim)

    def mode(self, observations: torch.Tensor, cond: torch.Tensor | None = None):
        """The mean action, in [-1, 1]."""
        if self.cond_dim:
            observations = torch.cat([observations, cond], dim=-1)
        return torch.tanh(self.mean_net(observations))

    def std(self) -> torch.Tensor:
        raise NotImplementedError

    def sample(
        self,
        observations: torch.Tensor,
        noise: torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reparameterised sample from standard-normal ``noise`` (not clipped)."""
        return self.mode(observations, cond) + self.std() * noise


class GaussianPolicy(_Actor):
    """π(a | s[, c]) = N(tanh(f(s, c)), σ²), σ state-independent (as in IQL).

    Parameters
    ----------
    obs_dim, act_dim : int
    hidden : sequence of int
    cond_dim : int, default=0
        Size of an extra conditioning input concatenated to the state.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: Sequence[int], cond_dim: int = 0
    ):
        super().__init__(obs_dim, act_dim, hidden, cond_dim)
        self.log_std = nn.Parameter(torch.zeros(act_dim, dtype=torch.float32))

    def log_prob(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """log π(a | s[, c]), shape (batch,)."""
        mean = self.mode(observations, cond)
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(-1)

    def std(self) -> torch.Tensor:
        """The state-independent standard deviation, shape (act_dim,)."""
        return self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()


class DeterministicPolicy(_Actor):
    """π(s[, c]) = tanh(f(s, c)), TD3's actor; explores with fixed Gaussian noise.

    ``std()`` is the exploration noise (TD3's ``expl_noise``, in the [-1, 1] action
    range), so the estimators sample actions from every policy the same way.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int],
        cond_dim: int = 0,
        exploration_noise: float = 0.1,
    ):
        super().__init__(obs_dim, act_dim, hidden, cond_dim)
        self.register_buffer(
            "exploration_std",
            torch.full((act_dim,), float(exploration_noise), dtype=torch.float32),
        )

    def std(self) -> torch.Tensor:
        return self.exploration_std
