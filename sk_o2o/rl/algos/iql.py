"""Implicit Q-Learning (Kostrikov, Nair & Levine, ICLR 2022).

The losses are pure functions of tensors, in the order of the update:

1. value:  L_V = E[ |τ − 1(Q̄(s,a) − V(s) < 0)| · (Q̄(s,a) − V(s))² ]
2. actor:  L_π = −E[ min(exp(β · (Q̄(s,a) − V(s))), 100) · log π(a | s) ]
3. critic: L_Q = E[ Σ_k (Q_k(s,a) − r − γ(1 − d) V(s'))² ]
4. soft update of the target critics, Q̄ = min_k of the targets.

β, the advantage inverse temperature, is the balance between improvement (large β)
and staying near the data (β → 0 is behaviour cloning). It is an argument of the
update, a float or one value per sample, so that FamO2O's balance model or GORL's
guiding network can set it from outside. The three losses are computed from the parameters
at the start of the step, as in CORL's IQL: they share no parameters, so one
backward pass and one fused Adam step over all networks give exactly the
gradients of three separate steps, at a fraction of the cost. On a CPU with two or
more torch threads, the step runs in two halves on two threads (the critics; the
value network and the actor), which exchange only Q̄(s, a) and a signal that
V(s') has been read before V steps: the same numbers, without an OpenMP
fork-join per kernel. The authors' JAX code instead steps V first and uses the
updated V in the advantage and the TD target, a one-step lag of a slowly moving
network (documented departure). Their offline runs also decay the actor's
learning rate with :func:`cosine_decay`; the estimators do on request
(``actor_lr_schedule="cosine"``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from sk_o2o.data.buffer import Batch
from sk_o2o.rl._torch_utils import (
    Exchange,
    FusedAdam,
    SecondThread,
    make_adam,
    move_module_and_optimizers,
    reduce_to_cpu,
    soft_update,
    step,
)
from sk_o2o.rl.networks import MLP, EnsembleCritic, GaussianPolicy

__all__ = [
    "IQLConfig",
    "IQLCore",
    "actor_loss",
    "advantage_weights",
    "cosine_decay",
    "critic_loss",
    "expectile_loss",
    "value_loss",
]

MAX_ADVANTAGE_WEIGHT = 100.0
"""The cap of the actor's advantage weights exp(β·A), as in the authors' code."""


# ----------------------------------------------------------------- losses, in order
def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric squared loss: weight τ where diff ≥ 0, 1 − τ where diff < 0.

    Parameters
    ----------
    diff : tensor
        The residuals, Q̄(s, a) − V(s) for the value loss.
    expectile : float
        τ, in (0, 1).

    Returns
    -------
    loss : tensor
        The mean weighted square (a scalar).
    """
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.square()).mean()


def value_loss(
    target_q: torch.Tensor, value: torch.Tensor, expectile: float
) -> torch.Tensor:
    """L_V: V(s) regresses to the τ-expectile of Q̄(s, a) over dataset actions.

    Parameters
    ----------
    target_q : tensor of shape (batch,)
        Q̄(s, a) of the dataset's state-action pairs (no gradient).
    value : tensor of shape (batch,)
        V(s).
    expectile : float
        τ, in (0, 1).

    Returns
    -------
    loss : tensor
        The scalar loss.
    """
    return expectile_loss(target_q - value, expectile)


def advantage_weights(
    advantage: torch.Tensor, beta: float | torch.Tensor
) -> torch.Tensor:
    """AWR weights min(exp(β·A), 100); ``beta`` may be per sample (FamO2O, GORL).

    Parameters
    ----------
    advantage : tensor of shape (batch,)
        A = Q̄(s, a) − V(s).
    beta : float or tensor of shape (batch,)
        β, the advantage inverse temperature.

    Returns
    -------
    weights : tensor of shape (batch,)
        The weight of each sample in the actor loss.
    """
    return torch.exp(beta * advantage).clamp(max=MAX_ADVANTAGE_WEIGHT)


def actor_loss(log_prob: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_π: advantage-weighted negative log-likelihood of the dataset actions.

    Parameters
    ----------
    log_prob : tensor of shape (batch,)
        log π(a | s) of the dataset actions.
    weights : tensor of shape (batch,)
        The samples' weights (no gradient flows into them).

    Returns
    -------
    loss : tensor
        The scalar loss.
    """
    return -(weights.detach() * log_prob).mean()


def critic_loss(
    q: torch.Tensor,
    rewards: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """L_Q for an ensemble ``q`` of shape (n_critics, batch): summed over critics.

    Parameters
    ----------
    q : tensor of shape (n_critics, batch)
        Q_k(s, a) of each critic.
    rewards : tensor of shape (batch,)
        r, scaled.
    dones : tensor of shape (batch,)
        d, 1.0 for terminal transitions (no bootstrapping).
    next_value : tensor of shape (batch,)
        The bootstrap value of s' (V(s') for IQL; no gradient flows into it).
    gamma : float
        γ, the discount.

    Returns
    -------
    loss : tensor
        E[ Σ_k (Q_k(s,a) − r − γ(1 − d) next_value)² ], a scalar.
    """
    target = rewards + gamma * (1.0 - dones) * next_value.detach()
    return (q - target).square().sum(0).mean()


def cosine_decay(lr: float, step: int, n_steps: int) -> float:
    """The authors' offline schedule of the actor's rate: lr · (1 + cos(π t / T)) / 2.

    ``optax.cosine_decay_schedule(lr, T)`` at update ``t`` (0 for the first);
    CORL's IQL and d3rlpy's IQL reproduction decay the actor the same way.

    Parameters
    ----------
    lr : float
        The initial rate.
    step : int
        t, the update's index (0 for the first); held at T after T.
    n_steps : int
        T, the length of the decay.

    Returns
    -------
    rate : float
        The actor's learning rate at update ``step``.

    Examples
    --------
    >>> from sk_o2o.rl.algos.iql import cosine_decay
    >>> [cosine_decay(3e-4, t, n_steps=100) for t in (0, 50, 100)]
    [0.0003, 0.00015, 0.0]
    """
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(step, n_steps) / n_steps))


# ----------------------------------------------------------------- networks + update
@dataclass
class IQLConfig:
    """Everything that defines an IQL learner's networks and update.

    Parameters
    ----------
    obs_dim : int
        Observation size.
    act_dim : int
        Action size.
    hidden : tuple of int, default=(256, 256)
        Hidden layer widths of the actor, the critics and the value network.
    actor_cond_dim : int, default=0
        Extra inputs of the actor (FamO2O's code of β); 0 for plain IQL.
    expectile : float, default=0.7
        τ of the value loss.
    gamma : float, default=0.99
        γ, the discount.
    tau : float, default=0.005
        Soft-update rate of the target critics.
    actor_lr : float, default=3e-4
        Adam learning rate of the actor.
    critic_lr : float, default=3e-4
        Adam learning rate of the critics.
    value_lr : float, default=3e-4
        Adam learning rate of the value network.
    """

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


class IQLCore(nn.Module):
    """IQL's networks and optimiser, and one gradient step on a batch.

    It never sees numpy, normalisation or validation: the estimator feeds it
    normalised batches that are already on the device.

    Parameters
    ----------
    config : IQLConfig
        The networks' sizes and the update's settings.
    device : torch.device
        Where the networks and the optimiser state live.
    """

    def __init__(self, config: IQLConfig, device: torch.device):
        super().__init__()
        self.config = c = config
        self.critic = EnsembleCritic(c.obs_dim, c.act_dim, c.hidden)
        self.target_critic = EnsembleCritic(c.obs_dim, c.act_dim, c.hidden)
        self.target_critic.load_state_dict(self.critic.state_dict())
        self.target_critic.requires_grad_(False)
        self.value = MLP(c.obs_dim, c.hidden, 1)
        self.actor = GaussianPolicy(c.obs_dim, c.act_dim, c.hidden, c.actor_cond_dim)
        super().to(device)
        self.optimizer = make_adam(
            [
                (self.critic.parameters(), c.critic_lr),
                (self.value.parameters(), c.value_lr),
                (self.actor.parameters(), c.actor_lr),
            ],
            device,
        )

    _ACTOR_GROUP = 2  # the optimiser's parameter groups: critics, value, actor

    def set_actor_lr(self, lr: float) -> None:
        """Set the actor's learning rate (for a schedule over the offline steps).

        Parameters
        ----------
        lr : float
            The new rate.
        """
        self.optimizer.param_groups[self._ACTOR_GROUP]["lr"] = float(lr)

    def to(self, device: torch.device) -> IQLCore:  # type: ignore[override]
        """Move networks and optimiser state to ``device``.

        Parameters
        ----------
        device : torch.device
            The new device.

        Returns
        -------
        self : IQLCore
            This core, moved in place.
        """
        return move_module_and_optimizers(self, device)

    def __reduce__(self):
        return reduce_to_cpu(self)

    @torch.no_grad()
    def target_q(self, observations: torch.Tensor, actions: torch.Tensor):
        """Q̄(s, a): the minimum over the target critics, without gradient.

        Parameters
        ----------
        observations : tensor of shape (batch, obs_dim)
            s.
        actions : tensor of shape (batch, act_dim)
            a.

        Returns
        -------
        target_q : tensor of shape (batch,)
            min_k Q̄_k(s, a).
        """
        return self.target_critic(observations, actions).min(0).values

    def actor_weights(
        self, advantage: torch.Tensor, beta: float | torch.Tensor
    ) -> torch.Tensor:
        """Each sample's weight in the actor loss (FamO2O may weight otherwise).

        Parameters
        ----------
        advantage : tensor of shape (batch,)
            A = Q̄(s, a) − V(s).
        beta : float or tensor of shape (batch,)
            β.

        Returns
        -------
        weights : tensor of shape (batch,)
            :func:`advantage_weights` of the samples.
        """
        return advantage_weights(advantage, beta)

    @torch.no_grad()
    def next_value(self, next_observations: torch.Tensor) -> torch.Tensor:
        """V(s') for the TD target, without gradient.

        Parameters
        ----------
        next_observations : tensor of shape (batch, obs_dim)
            s'.

        Returns
        -------
        next_value : tensor of shape (batch,)
            V(s').
        """
        return self.value(next_observations).squeeze(-1)

    # The three losses at this core's settings, from the networks' outputs: every
    # update path (joint, in two halves, FamO2O's) builds its step from these.
    def value_loss_of(
        self, target_q: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        """L_V with this core's expectile.

        Parameters
        ----------
        target_q : tensor of shape (batch,)
            Q̄(s, a).
        value : tensor of shape (batch,)
            V(s).

        Returns
        -------
        loss : tensor
            :func:`value_loss`, a scalar.
        """
        return value_loss(target_q, value, self.config.expectile)

    def actor_loss_of(
        self,
        log_prob: torch.Tensor,
        target_q: torch.Tensor,
        value: torch.Tensor,
        beta: float | torch.Tensor,
    ) -> torch.Tensor:
        """L_π with the advantage Q̄(s, a) − V(s) (no gradient into V).

        Parameters
        ----------
        log_prob : tensor of shape (batch,)
            log π(a | s) of the dataset actions.
        target_q : tensor of shape (batch,)
            Q̄(s, a).
        value : tensor of shape (batch,)
            V(s).
        beta : float or tensor of shape (batch,)
            β.

        Returns
        -------
        loss : tensor
            :func:`actor_loss` with :meth:`actor_weights`, a scalar.
        """
        return actor_loss(log_prob, self.actor_weights(target_q - value.detach(), beta))

    def critic_loss_of(
        self, q: torch.Tensor, batch: Batch, next_value: torch.Tensor
    ) -> torch.Tensor:
        """L_Q with this core's discount.

        Parameters
        ----------
        q : tensor of shape (n_critics, batch)
            Q_k(s, a).
        batch : Batch
            The batch (its rewards and dones are read).
        next_value : tensor of shape (batch,)
            V(s').

        Returns
        -------
        loss : tensor
            :func:`critic_loss`, a scalar.
        """
        return critic_loss(q, batch.rewards, batch.dones, next_value, self.config.gamma)

    def losses(
        self,
        batch: Batch,
        beta: float | torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The three IQL losses at the current parameters, in update order.

        Parameters
        ----------
        batch : Batch
            Normalised transitions on the core's device.
        beta : float or tensor of shape (batch,)
            β of the actor loss.
        cond : tensor of shape (batch, actor_cond_dim), optional
            The actor's extra inputs (FamO2O's code of β).

        Returns
        -------
        losses : dict of str to tensor
            ``value_loss``, ``actor_loss`` and ``critic_loss``, with their graphs.
        """
        target_q = self.target_q(batch.observations, batch.actions)
        next_value = self.next_value(batch.next_observations)
        value = self.value(batch.observations).squeeze(-1)
        log_prob = self.actor.log_prob(batch.observations, batch.actions, cond)
        q = self.critic(batch.observations, batch.actions)
        return {
            "value_loss": self.value_loss_of(target_q, value),
            "actor_loss": self.actor_loss_of(log_prob, target_q, value, beta),
            "critic_loss": self.critic_loss_of(q, batch, next_value),
        }

    def update(
        self,
        batch: Batch,
        beta: float | torch.Tensor,
        cond: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One IQL step: the three losses, one backward pass, one Adam step.

        Then the soft update of the target critics. Inside :meth:`halves_on`,
        on a fused optimiser that has taken its first step, the step runs in
        two halves on two threads, with the same result.

        Parameters
        ----------
        batch : Batch
            Normalised transitions on the core's device.
        beta : float or tensor of shape (batch,)
            β of the actor loss.
        cond : tensor of shape (batch, actor_cond_dim), optional
            The actor's extra inputs (FamO2O's code of β).

        Returns
        -------
        losses : dict of str to tensor
            ``value_loss``, ``actor_loss`` and ``critic_loss``, detached and not
            synchronised with the device (read them when needed).
        """
        worker = self.__dict__.get("_second_thread")
        if worker is not None and isinstance(self.optimizer, FusedAdam):
            if self.optimizer.ready:  # the first step creates Adam's state whole
                return self._update_in_halves(worker, batch, beta, cond)
        losses = self.losses(batch, beta, cond)
        step(self.optimizer, sum(losses.values()))
        soft_update(self.target_critic, self.critic, self.config.tau)
        return {k: v.detach() for k, v in losses.items()}

    # The step in two halves, one per thread. The critics' half reads V(s') before
    # the value/actor half steps V; that half needs Q̄(s, a) from this one; nothing
    # else is shared (each half steps the Adam groups of its own networks, and only
    # the critics' half touches the target critics), so the result is the joint step's.
    _CRITIC_GROUPS, _VALUE_ACTOR_GROUPS = (0,), (1, _ACTOR_GROUP)

    @contextlib.contextmanager
    def halves_on(self, worker: SecondThread | None) -> Iterator[None]:
        """Within this context, steps run in two halves, the second on ``worker``.

        Parameters
        ----------
        worker : SecondThread or None
            The thread that runs the value and actor half; None runs whole steps.

        Yields
        ------
        None
            Steps of :meth:`update` inside the block use ``worker``.
        """
        self.__dict__["_second_thread"] = worker  # not a module attribute: no pickling
        try:
            yield
        finally:
            self.__dict__.pop("_second_thread", None)

    def _update_in_halves(
        self,
        worker: SecondThread,
        batch: Batch,
        beta: float | torch.Tensor,
        cond: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        exchange = Exchange()
        worker.start(
            lambda: self._value_actor_half(batch, beta, cond, exchange), exchange
        )
        try:
            target_q = self.target_q(batch.observations, batch.actions)
            exchange.put("target_q", target_q)
            # V(s') here, not in the other half: that half is the longer one (the
            # actor's log-likelihood); it steps V only after this read.
            next_value = self.next_value(batch.next_observations)
            exchange.put("next_value_read", None)
            q = self.critic(batch.observations, batch.actions)
            c_loss = self.critic_loss_of(q, batch, next_value)
            for param in self.critic.parameters():
                param.grad = None
            c_loss.backward()
            self.optimizer.step_groups(self._CRITIC_GROUPS)
            soft_update(self.target_critic, self.critic, self.config.tau)
            v_loss, a_loss = exchange.get("done")
        except BaseException as error:
            exchange.fail(error)
            exchange.wait_finished()  # the worker must be done with the networks
            raise
        return {
            "value_loss": v_loss,
            "actor_loss": a_loss,
            "critic_loss": c_loss.detach(),
        }

    def _value_actor_half(
        self,
        batch: Batch,
        beta: float | torch.Tensor,
        cond: torch.Tensor | None,
        exchange: Exchange,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        value = self.value(batch.observations).squeeze(-1)
        log_prob = self.actor.log_prob(batch.observations, batch.actions, cond)
        target_q = exchange.get("target_q")
        v_loss = self.value_loss_of(target_q, value)
        a_loss = self.actor_loss_of(log_prob, target_q, value, beta)
        for param in (*self.value.parameters(), *self.actor.parameters()):
            param.grad = None
        (v_loss + a_loss).backward()
        exchange.get("next_value_read")  # V(s') must see V before this step
        self.optimizer.step_groups(self._VALUE_ACTOR_GROUPS)
        return v_loss.detach(), a_loss.detach()
