"""Where the improvement/constraint balance β comes from.

- a fixed coefficient: a float passed to the base algorithm's update (``IQLPolicy``);
- FamO2O (Wang et al., NeurIPS 2023): a *universal model* π_u(a | s, enc(β)) — the
  base actor fed a sin/cos code of β — and a *balance model* π_b(β | s) that picks,
  per state, the β whose action the critics value most.

This module holds the balance model's network, the code of β and the balance
model's two losses, as pure functions in update order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from sk_o2o.rl.networks import MLP

__all__ = [
    "BALANCE_CODE_DIM",
    "BalanceModel",
    "balance_code",
    "balance_model_loss",
    "temperature_loss",
]

BALANCE_CODE_DIM = 6
"""Length of :func:`balance_code`'s code of β: the universal model's extra inputs."""
_LOG_STD_MIN, _LOG_STD_MAX = -10.0, 2.0  # the authors' clip for π_b's log-std


def balance_code(beta: torch.Tensor) -> torch.Tensor:
    """The authors' 6-number sin/cos code of β, shape (batch, 6).

    enc₂ᵢ = sin(β / 10000^(2i/6)), enc₂ᵢ₊₁ = cos(β / 10000^(2i/6)), i = 0, 1, 2.

    Parameters
    ----------
    beta : tensor of shape (batch,)
        One β per sample.

    Returns
    -------
    code : tensor of shape (batch, BALANCE_CODE_DIM)
        sin, cos, sin, cos, ... of β at three frequencies.
    """
    i = torch.arange(BALANCE_CODE_DIM // 2, device=beta.device, dtype=beta.dtype)
    scaled = beta.reshape(-1, 1) / 10000.0 ** (2.0 * i / BALANCE_CODE_DIM)
    # interleave: sin, cos, sin, cos, ...
    return torch.stack([scaled.sin(), scaled.cos()], dim=-1).flatten(1)


class BalanceModel(nn.Module):
    """π_b(β | s): a 1-D tanh-Gaussian over x ∈ (-1, 1), mapped into the range.

    As in the authors' code, the mean is an MLP of the state and the log-std a
    single learned number (state-independent, starting at 0, clipped to [−10, 2]).
    β = lo + (x + 1) / 2 · (hi − lo), so β always lies inside ``balance_range``.
    (The authors' CQL code maps x·(hi − lo) + lo, which leaves the range; we do not.)

    Parameters
    ----------
    obs_dim : int
        Observation size.
    hidden : sequence of int
        Hidden layer widths of the mean's MLP.
    balance_range : (float, float)
        ``(lo, hi)``, the range of β.
    """

    def __init__(
        self, obs_dim: int, hidden: Sequence[int], balance_range: tuple[float, float]
    ):
        super().__init__()
        self.net = MLP(obs_dim, hidden, 1)
        self.log_std = nn.Parameter(torch.zeros((), dtype=torch.float32))
        self.low, self.high = (float(v) for v in balance_range)

    def to_beta(self, x: torch.Tensor) -> torch.Tensor:
        """Map x ∈ [-1, 1] linearly onto ``balance_range``.

        Parameters
        ----------
        x : tensor
            Values in [-1, 1] (the tanh of the Gaussian sample).

        Returns
        -------
        beta : tensor
            lo + (x + 1) / 2 · (hi − lo), of the shape of ``x``.
        """
        return self.low + (x + 1.0) * (0.5 * (self.high - self.low))

    def mode(self, observations: torch.Tensor) -> torch.Tensor:
        """The β of the distribution's mean (used to act and to evaluate).

        Parameters
        ----------
        observations : tensor of shape (batch, obs_dim)
            Normalised states.

        Returns
        -------
        beta : tensor of shape (batch,)
            β = map(tanh(mean(s))), inside ``balance_range``.
        """
        return self.to_beta(torch.tanh(self.net(observations).squeeze(-1)))

    def sample(self, observations: torch.Tensor, noise: torch.Tensor):
        """Reparameterised ``(beta, log_prob)`` from standard-normal ``noise``.

        Parameters
        ----------
        observations : tensor of shape (batch, obs_dim)
            Normalised states.
        noise : tensor of shape (batch,)
            Standard-normal draws, one per state.

        Returns
        -------
        beta : tensor of shape (batch,)
            The sampled β, differentiable in the balance model's parameters.
        log_prob : tensor of shape (batch,)
            log π_b(x | s) of the tanh-Gaussian sample x.
        """
        mean = self.net(observations).squeeze(-1)
        log_std = self.log_std.clamp(_LOG_STD_MIN, _LOG_STD_MAX)
        u = mean + log_std.exp() * noise
        x = torch.tanh(u)
        # log N(u; mean, std) − log(1 − tanh(u)²), the latter in a stable form
        log_prob = (
            -0.5 * noise.square()
            - log_std
            - 0.5 * math.log(2.0 * math.pi)
            - 2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))
        )
        return self.to_beta(x), log_prob


# ----------------------------------------------------------------- losses, in order
def balance_model_loss(
    log_prob: torch.Tensor, q_of_chosen_action: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """E_s[ α_b · log π_b(x|s) − Q̄(s, ã) ], ã ~ π_u(·|s, enc(β)), β = map(x).

    Gradients reach π_b through β (reparameterised) and the frozen universal model.

    Parameters
    ----------
    log_prob : tensor of shape (batch,)
        log π_b(x|s) of the sampled x, from :meth:`BalanceModel.sample`.
    q_of_chosen_action : tensor of shape (batch,)
        Q̄(s, ã) of the universal model's action at the sampled β.
    alpha : tensor
        The temperature α_b (a scalar); no gradient flows into it.

    Returns
    -------
    loss : tensor
        The scalar loss.
    """
    return (alpha.detach() * log_prob - q_of_chosen_action).mean()


def temperature_loss(
    log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float
) -> torch.Tensor:
    """α_b · (H − H_target), H = −E[log π_b(x|s)]: α_b rises while H is too low.

    The authors' form; SAC's log α_b · (H − H_target) has the same sign, and its
    gradient differs by the factor α_b.

    Parameters
    ----------
    log_alpha : tensor
        log α_b, the learned scalar.
    log_prob : tensor of shape (batch,)
        log π_b(x|s) of sampled x; no gradient flows into it.
    target_entropy : float
        H_target.

    Returns
    -------
    loss : tensor
        The scalar loss.
    """
    entropy = -log_prob.detach().mean()
    return log_alpha.exp() * (entropy - target_entropy)
