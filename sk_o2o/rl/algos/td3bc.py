"""TD3+BC (Fujimoto & Gu, NeurIPS 2021): TD3 with a behaviour-cloning term.

The losses, in the order of the update:

1. critic (every step), with target policy smoothing:
   ã' = clip(π̄(s') + clip(ε, −c, c), −1, 1),  ε ~ N(0, σ²)
   L_Q = E[ Σ_k (Q_k(s,a) − r − γ(1 − d) min_k Q̄_k(s', ã'))² ]
2. actor (every ``policy_freq`` steps):
   L_π = −E[ λ · Q₁(s, π(s)) ] + E[ (π(s) − a)² ],  λ = β / E|Q₁(s, π(s))|
3. soft update of the target critics and the target actor.

β (the paper's α = 2.5) weighs improvement (the Q term) against staying near the
data (the BC term); it may be one value per sample, which FamO2O uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sk_o2o.data.buffer import Batch
from sk_o2o.rl._torch_utils import (
    make_adam,
    move_module_and_optimizers,
    reduce_to_cpu,
    soft_update,
    step,
)
from sk_o2o.rl.algos.iql import critic_loss  # the same TD regression
from sk_o2o.rl.networks import DeterministicPolicy, EnsembleCritic

__all__ = [
    "TD3BCConfig",
    "TD3BCCore",
    "actor_step_due",
    "smoothed_target_action",
    "td3bc_actor_loss",
]


# ----------------------------------------------------------------- losses, in order
def smoothed_target_action(
    target_action: torch.Tensor, noise: torch.Tensor, noise_clip: float
) -> torch.Tensor:
    """TD3's target policy smoothing: clipped noise on the target action.

    Parameters
    ----------
    target_action : tensor of shape (batch, act_dim)
        π̄(s'), the target actor's action, in [-1, 1].
    noise : tensor of shape (batch, act_dim)
        ε ~ N(0, σ²).
    noise_clip : float
        c: the noise is clipped to [−c, c].

    Returns
    -------
    action : tensor of shape (batch, act_dim)
        ã' = clip(π̄(s') + clip(ε, −c, c), −1, 1).
    """
    return (target_action + noise.clamp(-noise_clip, noise_clip)).clamp(-1.0, 1.0)


def td3bc_actor_loss(
    q_of_policy_action: torch.Tensor,
    policy_action: torch.Tensor,
    actions: torch.Tensor,
    beta: float | torch.Tensor,
) -> torch.Tensor:
    """−E[λ·Q(s, π(s))] + E[(π(s) − a)²] with λ = β / E|Q| (no gradient in E|Q|).

    The squared error is averaged over the action's dimensions too, as the
    authors' ``F.mse_loss(pi, action)``: summed, it would weigh behaviour cloning
    ``act_dim`` times more, i.e. act as β / act_dim.

    Parameters
    ----------
    q_of_policy_action : tensor of shape (batch,)
        Q₁(s, π(s)), the first critic's value of the actor's action.
    policy_action : tensor of shape (batch, act_dim)
        π(s).
    actions : tensor of shape (batch, act_dim)
        a, the dataset's actions.
    beta : float or tensor of shape (batch,)
        β (the paper's α), one value or one per sample.

    Returns
    -------
    loss : tensor
        The scalar loss.
    """
    # The floor only keeps β = 0 (behaviour cloning) at 0 should E|Q| be 0.
    scale = q_of_policy_action.abs().mean().detach()
    lam = beta / scale.clamp_min(torch.finfo(scale.dtype).tiny)
    bc = (policy_action - actions).square().mean(-1)
    return (-lam * q_of_policy_action + bc).mean()


def actor_step_due(n_updates: int, policy_freq: int) -> bool:
    """Whether update number ``n_updates`` (counted from 0) steps the actor.

    The authors count the step before testing it: the actor's first step is the
    ``policy_freq``-th update, after ``policy_freq`` critic steps.

    Parameters
    ----------
    n_updates : int
        The update's index, counted from 0.
    policy_freq : int
        Critic steps per actor step.

    Returns
    -------
    due : bool
        Whether this update steps the actor (and the targets).

    Examples
    --------
    >>> from sk_o2o.rl.algos.td3bc import actor_step_due
    >>> [actor_step_due(n, policy_freq=2) for n in range(4)]
    [False, True, False, True]
    """
    return (n_updates + 1) % policy_freq == 0


# ----------------------------------------------------------------- networks + update
@dataclass
class TD3BCConfig:
    """Everything that defines a TD3+BC learner's networks and update.

    Parameters
    ----------
    obs_dim : int
        Observation size.
    act_dim : int
        Action size.
    hidden : tuple of int, default=(256, 256)
        Hidden layer widths of the actor and the critics.
    actor_cond_dim : int, default=0
        Extra inputs of the actor (FamO2O's code of β); 0 for plain TD3+BC.
    gamma : float, default=0.99
        γ, the discount.
    tau : float, default=0.005
        Soft-update rate of the target actor and critics.
    actor_lr : float, default=3e-4
        Adam learning rate of the actor.
    critic_lr : float, default=3e-4
        Adam learning rate of the critics.
    policy_noise : float, default=0.2
        σ of the target policy smoothing noise (the estimator draws it).
    noise_clip : float, default=0.5
        c, the clip of that noise.
    exploration_noise : float, default=0.1
        Standard deviation of the actor's exploration noise.
    """

    obs_dim: int
    act_dim: int
    hidden: tuple[int, ...] = (256, 256)
    actor_cond_dim: int = 0
    gamma: float = 0.99
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    exploration_noise: float = 0.1


class TD3BCCore(nn.Module):
    """TD3+BC's twin critics, deterministic actor, their targets and optimisers.

    Parameters
    ----------
    config : TD3BCConfig
        The networks' sizes and the update's settings.
    device : torch.device
        Where the networks and the optimiser states live.
    """

    def __init__(self, config: TD3BCConfig, device: torch.device):
        super().__init__()
        self.config = c = config
        self.critic = EnsembleCritic(c.obs_dim, c.act_dim, c.hidden)
        self.target_critic = EnsembleCritic(c.obs_dim, c.act_dim, c.hidden)
        self.actor = DeterministicPolicy(
            c.obs_dim, c.act_dim, c.hidden, c.actor_cond_dim, c.exploration_noise
        )
        self.target_actor = DeterministicPolicy(
            c.obs_dim, c.act_dim, c.hidden, c.actor_cond_dim, c.exploration_noise
        )
        for target, online in (
            (self.target_critic, self.critic),
            (self.target_actor, self.actor),
        ):
            target.load_state_dict(online.state_dict())
            target.requires_grad_(False)
        nn.Module.to(self, device)
        self.critic_optimizer = make_adam(
            [(self.critic.parameters(), c.critic_lr)], device
        )
        self.actor_optimizer = make_adam(
            [(self.actor.parameters(), c.actor_lr)], device
        )

    def to(self, device: torch.device) -> TD3BCCore:  # type: ignore[override]
        """Move networks and optimiser states to ``device``.

        Parameters
        ----------
        device : torch.device
            The new device.

        Returns
        -------
        self : TD3BCCore
            This core, moved in place.
        """
        return move_module_and_optimizers(self, device)

    def __reduce__(self):
        return reduce_to_cpu(self)

    def update_critic(
        self, batch: Batch, target_noise: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        """The critics' step: L_Q with a smoothed target action, one Adam step.

        Parameters
        ----------
        batch : Batch
            Normalised transitions on the core's device.
        target_noise : tensor of shape (batch, act_dim)
            ε ~ N(0, policy_noise²), before clipping.
        cond : tensor of shape (batch, actor_cond_dim) or None
            The actors' extra inputs (FamO2O's code of β).

        Returns
        -------
        loss : tensor
            L_Q, with its graph.
        """
        with torch.no_grad():
            next_action = smoothed_target_action(
                self.target_actor.mode(batch.next_observations, cond),
                target_noise,
                self.config.noise_clip,
            )
            next_q = (
                self.target_critic(batch.next_observations, next_action).min(0).values
            )
        q = self.critic(batch.observations, batch.actions)
        loss = critic_loss(q, batch.rewards, batch.dones, next_q, self.config.gamma)
        step(self.critic_optimizer, loss)
        return loss

    def update_actor(
        self, batch: Batch, beta: float | torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        """The actor's step, then the soft update of both targets.

        Parameters
        ----------
        batch : Batch
            Normalised transitions on the core's device.
        beta : float or tensor of shape (batch,)
            β of :func:`td3bc_actor_loss`.
        cond : tensor of shape (batch, actor_cond_dim) or None
            The actors' extra inputs (FamO2O's code of β).

        Returns
        -------
        loss : tensor
            L_π, with its graph.
        """
        policy_action = self.actor.mode(batch.observations, cond)
        q = self.critic(batch.observations, policy_action)[0]
        loss = td3bc_actor_loss(q, policy_action, batch.actions, beta)
        step(self.actor_optimizer, loss)
        soft_update(self.target_critic, self.critic, self.config.tau)
        soft_update(self.target_actor, self.actor, self.config.tau)
        return loss

    def update(
        self,
        batch: Batch,
        beta: float | torch.Tensor,
        target_noise: torch.Tensor,
        update_actor: bool,
        cond: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One TD3+BC step: the critics', and the actor's when it is due.

        Parameters
        ----------
        batch : Batch
            Normalised transitions on the core's device.
        beta : float or tensor of shape (batch,)
            β of the actor loss.
        target_noise : tensor of shape (batch, act_dim)
            N(0, policy_noise²) noise for the target policy smoothing.
        update_actor : bool
            Whether to step the actor and the targets (see :func:`actor_step_due`).
        cond : tensor of shape (batch, actor_cond_dim), optional
            The actors' extra inputs (FamO2O's code of β).

        Returns
        -------
        losses : dict of str to tensor
            ``critic_loss``, and ``actor_loss`` when the actor stepped; detached.
        """
        losses = {"critic_loss": self.update_critic(batch, target_noise, cond).detach()}
        if update_actor:
            losses["actor_loss"] = self.update_actor(batch, beta, cond).detach()
        return losses
