"""Implicit Q-Learning (Kostrikov, Nair & Levine, ICLR 2022).

The losses are pure functions of tensors, in the order of the update:

1. value:  L_V = E[ |τ − 1(Q̄(s,a) − V(s) < 0)| · (Q̄(s,a) − V(s))² ]
2. actor:  L_π = −E[ min(exp(β · (Q̄(s,a) − V(s))), 100) · log π(a | s) ]
3. critic: L_Q = E[ Σ_k (Q_k(s,a) − r − γ(1 − d) V(s'))² ]
4. soft update of the target critics, Q̄ = min_k of the targets.

β, the advantage inverse temperature, is the balance between improvement (large β)
and staying near the data (β → 0 is behaviour cloning). It is an argument of the
update, a float or one value per sample, so that FamO2O's balance model or GORL's
guiding network can set it from outside. The update order V → π → Q follows the
authors' code (the actor and the critic target use the freshly updated V).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sk_o2o.data.buffer import Batch
from sk_o2o.rl.networks import EnsembleCritic, GaussianPolicy, MLP

__all__ = [
    "IQLConfig",
    "IQLCore",
    "actor_loss",
    "advantage_weights",
    "critic_loss",
    "expectile_loss",
    "value_loss",
]

MAX_ADVANTAGE_WEIGHT = 100.0


# ----------------------------------------------------------------- losses, in order
def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric squared loss: weight τ where diff ≥ 0, 1 − τ where diff < 0."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.square()).mean()


def value_loss(
    target_q: torch.Tensor, value: torch.Tensor, expectile: float
) -> torch.Tensor:
    """L_V: V(s) regresses to the τ-expectile of Q̄(s, a) over dataset actions."""
    return expectile_loss(target_q - value, expectile)


def advantage_weights(
    advantage: torch.Tensor, beta: float | torch.Tensor
) -> torch.Tensor:
    """AWR weights min(exp(β·A), 100); ``beta`` may be per sample (FamO2O, GORL)."""
    return torch.exp(beta * advantage).clamp(max=MAX_ADVANTAGE_WEIGHT)


def actor_loss(log_prob: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_π: advantage-weighted negative log-likelihood of the dataset actions."""
    return -(weights.detach() * log_prob).mean()


def critic_loss(
    q: torch.Tensor,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """L_Q for an ensemble ``q`` of shape (n_critics, batch): summed over critics."""
    target = rewards + gamma * (1.0 - dones) * next_value.detach()
    return (q - target).square().sum(0).mean()


# ----------------------------------------------------------------- networks + update
@dataclass
class IQLConfig:
    """Everything that defines an IQL learner's networks and update."""

    obs_dim: int
    act_dim: int
    hidden: tuple[int, ...] = (256, 256)
    actor_cond_dim: int = 0
    expectile: float = 0.7
    gamma: float = 0.99
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4


def _adam(params, lr: float, device: torch.device) -> torch.optim.Adam:
    # The fused kernel does one pass per step instead of one per tensor op.
    return torch.optim.Adam(params, lr=lr, fused=device.type in ("cpu", "cuda"))


class IQLCore(nn.Module):
    """IQL's networks and optimisers, and one gradient step on a batch.

    It never sees numpy, normalisation or validation: the estimator feeds it
    normalised batches that are already on the device.
    """

    def __init__(self, config: IQLConfig, device: torch.device):
        super().__init__()
        self.config = config
        c = config
        self.critic = EnsembleCritic(c.obs_dim, c.act_dim, c.hidden)
        self.target_critic = EnsembleCritic(c.obs_dim, c.act_dim, c.hidden)
        self.target_critic.load_state_dict(self.critic.state_dict())
        self.target_critic.requires_grad_(False)
        self.value = MLP(c.obs_dim, c.hidden, 1)
        self.actor = GaussianPolicy(c.obs_dim, c.act_dim, c.hidden, c.actor_cond_dim)
        self.to(device)
        self._make_optimizers(device)

    def _make_optimizers(self, device: torch.device) -> None:
        c = self.config
        self.critic_optimizer = _adam(self.critic.parameters(), c.critic_lr, device)
        self.value_optimizer = _adam(self.value.parameters(), c.value_lr, device)
        self.actor_optimizer = _adam(self.actor.parameters(), c.actor_lr, device)

    @property
    def device(self) -> torch.device:
        return self.critic.net[0].weight.device

    def to(self, device: torch.device) -> IQLCore:  # type: ignore[override]
        """Move networks and optimiser state to ``device``."""
        states = self.optimizer_state_dicts() if hasattr(self, "actor_optimizer") else None
        super().to(device)
        if states is not None:
            self._make_optimizers(torch.device(device))
            self.load_optimizer_state_dicts(states)
        return self

    def optimizer_state_dicts(self) -> dict[str, Any]:
        return {
            "critic": self.critic_optimizer.state_dict(),
            "value": self.value_optimizer.state_dict(),
            "actor": self.actor_optimizer.state_dict(),
        }

    def load_optimizer_state_dicts(self, states: dict[str, Any]) -> None:
        self.critic_optimizer.load_state_dict(states["critic"])
        self.value_optimizer.load_state_dict(states["value"])
        self.actor_optimizer.load_state_dict(states["actor"])

    def __reduce__(self):
        # CPU-only pickles: rebuilt from the config, weights and optimiser state.
        cpu = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        optim = _tensors_to_cpu(self.optimizer_state_dicts())
        return (_rebuild_core, (type(self), self.config, cpu, optim))

    # -- the update, in order
    @torch.no_grad()
    def target_q(self, observations: torch.Tensor, actions: torch.Tensor):
        """Q̄(s, a): the minimum over the target critics."""
        return self.target_critic(observations, actions).min(0).values

    def update_value(self, batch: Batch, target_q: torch.Tensor) -> torch.Tensor:
        loss = value_loss(
            target_q, self.value(batch.observations).squeeze(-1), self.config.expectile
        )
        _step(self.value_optimizer, loss)
        return loss

    def update_actor(
        self,
        batch: Batch,
        advantage: torch.Tensor,
        beta: float | torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        weights = advantage_weights(advantage, beta)
        log_prob = self.actor.log_prob(batch.observations, batch.actions, cond)
        loss = actor_loss(log_prob, weights)
        _step(self.actor_optimizer, loss)
        return loss

    def update_critic(self, batch: Batch, next_value: torch.Tensor) -> torch.Tensor:
        q = self.critic(batch.observations, batch.actions)
        loss = critic_loss(
            q, batch.rewards, batch.dones, next_value, self.config.gamma
        )
        _step(self.critic_optimizer, loss)
        with torch.no_grad():
            for target, online in zip(
                self.target_critic.parameters(), self.critic.parameters(), strict=True
            ):
                target.lerp_(online, self.config.tau)
        return loss

    def update(
        self,
        batch: Batch,
        beta: float | torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One IQL step; returns the (detached, un-synchronised) losses."""
        target_q = self.target_q(batch.observations, batch.actions)
        v_loss = self.update_value(batch, target_q)
        with torch.no_grad():  # V(s) and V(s') with the updated V, in one pass
            both = torch.cat([batch.observations, batch.next_observations])
            value, next_value = self.value(both).squeeze(-1).chunk(2)
        a_loss = self.update_actor(batch, target_q - value, beta, cond)
        q_loss = self.update_critic(batch, next_value)
        return {
            "value_loss": v_loss.detach(),
            "actor_loss": a_loss.detach(),
            "critic_loss": q_loss.detach(),
        }


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _tensors_to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _tensors_to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_tensors_to_cpu(v) for v in obj]
    return obj


def _rebuild_core(cls, config: IQLConfig, state: dict, optim: dict) -> IQLCore:
    core = cls(config, torch.device("cpu"))
    core.load_state_dict(state)
    core.load_optimizer_state_dicts(optim)
    return core
