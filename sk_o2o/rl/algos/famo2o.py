"""FamO2O on a base algorithm: a universal model, a balance model, base critics.

Bases: IQL (β = the advantage inverse temperature, as in the paper) and TD3+BC
(β = the weight of the normalised Q term against behaviour cloning, TD3+BC's α;
not one of the paper's bases — our addition, documented as such).

One IQL step, in the authors' order (V, π_b, α_b, π_u, Q, target), with IQL's V,
π_u and Q losses taken jointly as in :mod:`sk_o2o.rl.algos.iql`:

1. balance model (every ``balance_update_interval`` steps), through the frozen
   universal model and the target critics:
   L_b = E_s[ α_b · log π_b(x|s) − Q̄(s, ã) ],  β = map(x),  ã ~ π_u(·|s, enc(β));
2. temperature: L_α = α_b · (H − H_target), H = −E[ log π_b(x|s) ];
3. IQL's losses with the actor conditioned on enc(β) and each sample weighted by
   its *own* β: min(exp(β_i · A_i), 100). Offline, β_i ~ U[lo, hi]; online,
   β_i ~ π_b(·|s_i) without gradient. (The authors' IQL code broadcasts a (B,)
   advantage against (B, 1) betas into a (B, B) weight matrix, so the universal
   model gets no β-specific signal; we implement the per-sample form the paper
   describes by default, and the authors' form as ``batch_mean_weights``.)

With TD3+BC the balance model's step is the same; the universal model is TD3+BC's
deterministic actor conditioned on enc(β), its loss −λ_i Q + BC with λ_i = β_i /
E|Q|, and its target actor is conditioned on the same β.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sk_o2o.data.buffer import Batch
from sk_o2o.rl._torch_utils import (
    Exchange,
    FusedAdam,
    SecondThread,
    make_adam,
    soft_update,
    step,
)
from sk_o2o.rl.algos.iql import (
    MAX_ADVANTAGE_WEIGHT,
    IQLConfig,
    IQLCore,
)
from sk_o2o.rl.algos.td3bc import TD3BCConfig, TD3BCCore
from sk_o2o.rl.balance import (
    BALANCE_CODE_DIM,
    BalanceModel,
    balance_code,
    balance_model_loss,
    temperature_loss,
)

__all__ = [
    "FamO2OIQLConfig",
    "FamO2OIQLCore",
    "FamO2OTD3BCConfig",
    "FamO2OTD3BCCore",
    "batch_mean_advantage_weights",
]


def batch_mean_advantage_weights(
    advantage: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """The authors' JAX IQL weights: w_j = mean_i min(exp(β_i · A_j), 100).

    Their code multiplies (B,) advantages by (B, 1) betas, which broadcasts to a
    (B, B) matrix, and averages it against the (B,) log-likelihoods: every sample
    is weighted by its advantage at all the batch's β, not at its own.

    Parameters
    ----------
    advantage : tensor of shape (batch,)
        A_j = Q̄(s_j, a_j) − V(s_j).
    beta : tensor of shape (batch,)
        β_i of each sample.

    Returns
    -------
    weights : tensor of shape (batch,)
        w_j, the same whatever the samples' own β.
    """
    weights = torch.exp(beta.reshape(-1, 1) * advantage.reshape(1, -1))
    return weights.clamp(max=MAX_ADVANTAGE_WEIGHT).mean(0)


@dataclass(kw_only=True)
class _BalanceConfig:
    """The balance model's settings, shared by every FamO2O core."""

    actor_cond_dim: int = BALANCE_CODE_DIM
    balance_range: tuple[float, float] = (1.0, 5.0)
    balance_lr: float = 3e-4
    alpha_lr: float = 3e-4
    initial_alpha: float = 1.0
    target_entropy: float = -0.5


@dataclass(kw_only=True)
class FamO2OIQLConfig(IQLConfig, _BalanceConfig):
    """IQL's configuration plus the balance model's.

    Parameters
    ----------
    obs_dim : int
        Observation size.
    act_dim : int
        Action size.
    hidden : tuple of int, default=(256, 256)
        Hidden layer widths of every network (π_b's included).
    expectile : float, default=0.7
        τ of IQL's value loss.
    gamma : float, default=0.99
        γ, the discount.
    tau : float, default=0.005
        Soft-update rate of the target critics.
    actor_lr : float, default=3e-4
        Adam learning rate of the universal model.
    critic_lr : float, default=3e-4
        Adam learning rate of the critics.
    value_lr : float, default=3e-4
        Adam learning rate of the value network.
    actor_cond_dim : int, default=BALANCE_CODE_DIM
        Extra inputs of the actor: the code of β (6 numbers).
    balance_range : (float, float), default=(1.0, 5.0)
        The range of β.
    balance_lr : float, default=3e-4
        Adam learning rate of the balance model.
    alpha_lr : float, default=3e-4
        Adam learning rate of its temperature.
    initial_alpha : float, default=1.0
        The temperature α_b before training.
    target_entropy : float, default=-0.5
        H_target of the temperature loss.
    batch_mean_weights : bool, default=False
        Weight the universal model's samples as the authors' JAX code does
        (:func:`batch_mean_advantage_weights`) instead of each at its own β.
    """

    actor_cond_dim: int = BALANCE_CODE_DIM
    batch_mean_weights: bool = False  # the authors' (B, B) broadcast


@dataclass(kw_only=True)
class FamO2OTD3BCConfig(TD3BCConfig, _BalanceConfig):
    """TD3+BC's configuration plus the balance model's.

    Parameters
    ----------
    obs_dim : int
        Observation size.
    act_dim : int
        Action size.
    hidden : tuple of int, default=(256, 256)
        Hidden layer widths of every network (π_b's included).
    gamma : float, default=0.99
        γ, the discount.
    tau : float, default=0.005
        Soft-update rate of the target actor and critics.
    actor_lr : float, default=3e-4
        Adam learning rate of the universal model.
    critic_lr : float, default=3e-4
        Adam learning rate of the critics.
    policy_noise : float, default=0.2
        σ of the target policy smoothing noise.
    noise_clip : float, default=0.5
        The clip of that noise.
    exploration_noise : float, default=0.1
        Standard deviation of the actor's exploration noise, also added to its
        action in the balance model's step.
    actor_cond_dim : int, default=BALANCE_CODE_DIM
        Extra inputs of the actor: the code of β (6 numbers).
    balance_range : (float, float), default=(1.0, 5.0)
        The range of β.
    balance_lr : float, default=3e-4
        Adam learning rate of the balance model.
    alpha_lr : float, default=3e-4
        Adam learning rate of its temperature.
    initial_alpha : float, default=1.0
        The temperature α_b before training.
    target_entropy : float, default=-0.5
        H_target of the temperature loss.
    """

    actor_cond_dim: int = BALANCE_CODE_DIM


class _BalanceMixin:
    """π_b, its temperature and their step; the base core supplies the rest."""

    def _init_balance(self, c: _BalanceConfig, device: torch.device) -> None:
        self.balance_model = BalanceModel(c.obs_dim, c.hidden, c.balance_range)
        self.log_alpha = nn.Parameter(
            torch.tensor(float(c.initial_alpha), dtype=torch.float32).log()
        )
        nn.Module.to(self, device)
        self.balance_optimizer = make_adam(
            [(self.balance_model.parameters(), c.balance_lr)], device
        )
        self.alpha_optimizer = make_adam([([self.log_alpha], c.alpha_lr)], device)

    def _balance_then_universal(
        self,
        batch: Batch,
        balance_noise: tuple[torch.Tensor, torch.Tensor] | None,
        beta: torch.Tensor | None,
        beta_noise: torch.Tensor | None,
        update_universal: Callable[[Batch, torch.Tensor], dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """A FamO2O step in order, on one thread: π_b and α_b (when
        ``balance_noise`` is given), β from π_b (when ``beta`` is None, online),
        then the base algorithm's step of the universal model at β."""
        losses = {}
        if balance_noise is not None:
            losses.update(self.update_balance(batch, *balance_noise))
        if beta is None:
            beta = self.sample_balance(batch.observations, beta_noise)
        losses.update(update_universal(batch, beta))
        return losses

    def chosen_balance(self, observations: torch.Tensor) -> torch.Tensor:
        """β that the balance model picks for each state (its mean).

        Parameters
        ----------
        observations : tensor of shape (batch, obs_dim)
            Normalised states.

        Returns
        -------
        beta : tensor of shape (batch,)
            :meth:`BalanceModel.mode <sk_o2o.rl.balance.BalanceModel.mode>`.
        """
        return self.balance_model.mode(observations)

    def act(self, observations: torch.Tensor) -> torch.Tensor:
        """Deterministic action of π_u with the balance model's β.

        Parameters
        ----------
        observations : tensor of shape (batch, obs_dim)
            Normalised states.

        Returns
        -------
        actions : tensor of shape (batch, act_dim)
            π_u's mean action at β = :meth:`chosen_balance`, in [-1, 1].
        """
        beta = self.chosen_balance(observations)
        return self.actor.mode(observations, balance_code(beta))

    @torch.no_grad()
    def sample_balance(
        self, observations: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """β ~ π_b(·|s) from standard-normal ``noise``, without gradient.

        Parameters
        ----------
        observations : tensor of shape (batch, obs_dim)
            Normalised states.
        noise : tensor of shape (batch,)
            Standard-normal draws.

        Returns
        -------
        beta : tensor of shape (batch,)
            One sampled β per state.
        """
        return self.balance_model.sample(observations, noise)[0]

    def update_balance(
        self, batch: Batch, noise: torch.Tensor, action_noise: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The balance model's step and its temperature's (steps 1 and 2).

        Only π_b and α_b learn: the universal model's action and the target
        critics' value carry the gradient to β but are not stepped.

        Parameters
        ----------
        batch : Batch
            Normalised transitions (their observations are read).
        noise : tensor of shape (batch,)
            Standard-normal draws of π_b's sample.
        action_noise : tensor of shape (batch, act_dim)
            Standard-normal draws of the universal model's sampled action.

        Returns
        -------
        losses : dict of str to tensor
            ``balance_loss``, ``alpha`` (α_b before the step) and
            ``mean_beta`` (of the sampled β), detached.
        """
        obs = batch.observations
        beta, log_prob = self.balance_model.sample(obs, noise)
        action = self.actor.sample(obs, action_noise, balance_code(beta))
        # Q̄ with gradients to the action; the target critics stay frozen
        q = self.target_critic(obs, action.clamp(-1.0, 1.0)).min(0).values
        alpha = self.log_alpha.exp()
        b_loss = balance_model_loss(log_prob, q, alpha)
        # Only π_b learns from this loss: the universal model is frozen by asking
        # for π_b's gradients alone (not by switching its requires_grad off, which
        # would race with a universal-model step on another thread).
        self.balance_optimizer.zero_grad(set_to_none=True)
        b_loss.backward(inputs=list(self.balance_model.parameters()))
        self.balance_optimizer.step()
        a_loss = temperature_loss(self.log_alpha, log_prob, self.config.target_entropy)
        step(self.alpha_optimizer, a_loss)
        return {
            "balance_loss": b_loss.detach(),
            "alpha": alpha.detach(),
            "mean_beta": beta.detach().mean(),
        }


class FamO2OIQLCore(_BalanceMixin, IQLCore):
    """IQL's networks with a β-conditioned actor, plus π_b and its temperature.

    Parameters
    ----------
    config : FamO2OIQLConfig
        The networks' sizes and the update's settings.
    device : torch.device
        Where the networks and the optimiser states live.
    """

    def __init__(self, config: FamO2OIQLConfig, device: torch.device):
        IQLCore.__init__(self, config, device)
        self._init_balance(config, device)

    def actor_weights(
        self, advantage: torch.Tensor, beta: torch.Tensor
    ) -> torch.Tensor:
        """min(exp(β_i · A_i), 100) per sample, or the authors' batch mean.

        Parameters
        ----------
        advantage : tensor of shape (batch,)
            A_i = Q̄(s_i, a_i) − V(s_i).
        beta : tensor of shape (batch,)
            β_i of each sample.

        Returns
        -------
        weights : tensor of shape (batch,)
            :func:`~sk_o2o.rl.algos.iql.advantage_weights`, or
            :func:`batch_mean_advantage_weights` with ``batch_mean_weights``.
        """
        if self.config.batch_mean_weights:
            return batch_mean_advantage_weights(advantage, beta)
        return super().actor_weights(advantage, beta)

    def update_universal(
        self, batch: Batch, beta: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """IQL's joint step with the actor conditioned on each sample's β.

        Parameters
        ----------
        batch : Batch
            Normalised transitions on the core's device.
        beta : tensor of shape (batch,)
            β of each sample.

        Returns
        -------
        losses : dict of str to tensor
            As :meth:`IQLCore.update <sk_o2o.rl.algos.iql.IQLCore.update>`.
        """
        return IQLCore.update(self, batch, beta, balance_code(beta))

    def update_step(
        self,
        batch: Batch,
        balance_noise: tuple[torch.Tensor, torch.Tensor] | None,
        beta: torch.Tensor | None,
        beta_noise: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One FamO2O step, in the order of the module docstring.

        Parameters
        ----------
        batch : Batch
            Normalised transitions on the core's device.
        balance_noise : (noise, action_noise) or None
            The balance model's step is taken when given (with these draws).
        beta : tensor of shape (batch,) or None
            β of each sample for the universal model; if ``None``, drawn from π_b
            after its step with ``beta_noise`` (the online phase).
        beta_noise : tensor of shape (batch,), optional
            Standard-normal draws for that β; needed when ``beta`` is None.

        Returns
        -------
        losses : dict of str to tensor
            IQL's three losses, plus the balance model's (:meth:`update_balance`)
            when it stepped; detached.
        """
        worker = self.__dict__.get("_second_thread")
        in_halves = (
            worker is not None
            and isinstance(self.optimizer, FusedAdam)
            and self.optimizer.ready
        )
        if balance_noise is not None and in_halves:
            return self._step_with_balance_in_halves(
                worker, batch, balance_noise, beta, beta_noise
            )
        return self._balance_then_universal(
            batch, balance_noise, beta, beta_noise, self.update_universal
        )

    # A step with the balance model's step, on two threads. That step (~9 matrix
    # products through π_b, π_u and the target critics) is as long as the rest of
    # IQL's step, so the calling thread takes it along with Q̄(s, a), while the
    # worker takes V(s') and the critics', value's and actor's forward and backward
    # passes (with V(s') on the calling thread, that side finished 1.7 ms later).
    # The worker's Adam step and soft update wait for the balance step, which reads
    # the actor and the target critics; the actor's input β waits for it too when
    # it comes from π_b (online). The result is the sequential step's.
    def _step_with_balance_in_halves(
        self,
        worker: SecondThread,
        batch: Batch,
        balance_noise: tuple[torch.Tensor, torch.Tensor],
        beta: torch.Tensor | None,
        beta_noise: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        exchange = Exchange()
        worker.start(lambda: self._iql_half(batch, beta, exchange), exchange)
        try:
            exchange.put("target_q", self.target_q(batch.observations, batch.actions))
            losses = self.update_balance(batch, *balance_noise)
            if beta is None:
                beta = self.sample_balance(batch.observations, beta_noise)
            exchange.put("beta", beta)  # also: the balance step is over
            losses.update(exchange.get("done"))
        except BaseException as error:
            exchange.fail(error)
            exchange.wait_finished()
            raise
        return losses

    def _iql_half(
        self, batch: Batch, beta: torch.Tensor | None, exchange: Exchange
    ) -> dict[str, torch.Tensor]:
        obs, actions = batch.observations, batch.actions
        next_value = self.next_value(batch.next_observations)
        q = self.critic(obs, actions)
        value = self.value(obs).squeeze(-1)
        log_prob = None
        if beta is not None:  # offline: β is known before the balance step
            log_prob = self.actor.log_prob(obs, actions, balance_code(beta))
        target_q = exchange.get("target_q")
        c_loss = self.critic_loss_of(q, batch, next_value)
        v_loss = self.value_loss_of(target_q, value)
        self.optimizer.zero_grad(set_to_none=True)
        if log_prob is not None:
            a_loss = self.actor_loss_of(log_prob, target_q, value, beta)
            (v_loss + a_loss + c_loss).backward()
            exchange.get("beta")  # the balance step has read the actor
        else:
            (v_loss + c_loss).backward()
            beta = exchange.get("beta")
            log_prob = self.actor.log_prob(obs, actions, balance_code(beta))
            a_loss = self.actor_loss_of(log_prob, target_q, value, beta)
            a_loss.backward()
        self.optimizer.step()
        soft_update(self.target_critic, self.critic, self.config.tau)
        return {
            "value_loss": v_loss.detach(),
            "actor_loss": a_loss.detach(),
            "critic_loss": c_loss.detach(),
        }


class FamO2OTD3BCCore(_BalanceMixin, TD3BCCore):
    """TD3+BC's networks with a β-conditioned actor, plus π_b and its temperature.

    Parameters
    ----------
    config : FamO2OTD3BCConfig
        The networks' sizes and the update's settings.
    device : torch.device
        Where the networks and the optimiser states live.
    """

    def __init__(self, config: FamO2OTD3BCConfig, device: torch.device):
        TD3BCCore.__init__(self, config, device)
        self._init_balance(config, device)

    def update_universal(
        self,
        batch: Batch,
        beta: torch.Tensor,
        target_noise: torch.Tensor,
        update_actor: bool,
        clone_only: bool = False,
    ) -> dict[str, torch.Tensor]:
        """TD3+BC's step with the actor (and target actor) conditioned on β.

        Parameters
        ----------
        batch : Batch
            Normalised transitions on the core's device.
        beta : tensor of shape (batch,)
            β of each sample.
        target_noise : tensor of shape (batch, act_dim)
            N(0, policy_noise²) noise for the target policy smoothing.
        update_actor : bool
            Whether to step the actor and the targets.
        clone_only : bool, default=False
            Leave out the actor's Q term (its weight 0, the members still
            conditioned on their β): behaviour cloning, for data without rewards.

        Returns
        -------
        losses : dict of str to tensor
            As :meth:`TD3BCCore.update <sk_o2o.rl.algos.td3bc.TD3BCCore.update>`.
        """
        weight = torch.zeros_like(beta) if clone_only else beta
        return TD3BCCore.update(
            self, batch, weight, target_noise, update_actor, balance_code(beta)
        )

    def update_step(
        self,
        batch: Batch,
        balance_noise: tuple[torch.Tensor, torch.Tensor] | None,
        beta: torch.Tensor | None,
        beta_noise: torch.Tensor | None,
        target_noise: torch.Tensor,
        update_actor: bool,
        clone_only: bool = False,
    ) -> dict[str, torch.Tensor]:
        """One FamO2O step on TD3+BC: π_b and α_b, then TD3+BC's step.

        As :meth:`FamO2OIQLCore.update_step`, plus TD3+BC's ``target_noise``
        (N(0, policy_noise²)) and whether this step ``update_actor``.

        Parameters
        ----------
        batch : Batch
            Normalised transitions on the core's device.
        balance_noise : (noise, action_noise) or None
            The balance model's step is taken when given (with these draws).
        beta : tensor of shape (batch,) or None
            β of each sample for the universal model; if ``None``, drawn from π_b
            after its step with ``beta_noise`` (the online phase).
        beta_noise : tensor of shape (batch,) or None
            Standard-normal draws for that β; needed when ``beta`` is None.
        target_noise : tensor of shape (batch, act_dim)
            N(0, policy_noise²) noise for the target policy smoothing.
        update_actor : bool
            Whether to step the actor and the targets.
        clone_only : bool, default=False
            As in :meth:`update_universal`.

        Returns
        -------
        losses : dict of str to tensor
            TD3+BC's losses, plus the balance model's when it stepped; detached.
        """
        return self._balance_then_universal(
            batch,
            balance_noise,
            beta,
            beta_noise,
            lambda batch, beta: self.update_universal(
                batch, beta, target_noise, update_actor, clone_only
            ),
        )
