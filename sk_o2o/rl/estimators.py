"""The RL estimators: data in, algorithm core out."""

from __future__ import annotations

from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions

from sk_o2o.data.buffer import Batch
from sk_o2o.data.normalization import REWARD_SCALINGS
from sk_o2o.rl.algos.iql import IQLConfig, IQLCore
from sk_o2o.rl.base import BaseRLPolicy

__all__ = ["IQLPolicy"]

_COMMON_CONSTRAINTS = {
    "hidden_sizes": ["array-like"],
    "n_steps": [Interval(Integral, 0, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "gamma": [Interval(Real, 0, 1, closed="both")],
    "tau": [Interval(Real, 0, 1, closed="right")],
    "normalize_observations": ["boolean"],
    "reward_scaling": [StrOptions(set(REWARD_SCALINGS))],
    "action_bounds": "no_validation",  # checked against the data in fit
    "device": [str, torch.device],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
    "log_interval": [Interval(Integral, 1, None, closed="left")],
}


class IQLPolicy(BaseRLPolicy):
    """Implicit Q-Learning with one global improvement/constraint balance.

    The fixed-balance baseline of the sk_o2o family: an expectile value function,
    twin critics with target networks and an advantage-weighted Gaussian actor
    (Kostrikov et al., 2022). ``beta``, the advantage inverse temperature, sets
    how hard the policy improves on the data (large ``beta``) versus how close it
    stays to it (``beta`` → 0 is behaviour cloning).

    Parameters
    ----------
    beta : float, default=3.0
        Advantage inverse temperature of the actor loss.
    expectile : float, default=0.7
        Expectile τ of the value loss, in (0, 1); 0.5 is a mean, → 1 a maximum.
    n_steps : int, default=50_000
        Gradient steps taken by :meth:`fit`.
    batch_size : int, default=256
    hidden_sizes : tuple of int, default=(256, 256)
        Hidden layer widths of the actor, critics and value network.
    actor_lr, critic_lr, value_lr : float, default=3e-4
        Adam learning rates.
    gamma : float, default=0.99
        Discount factor.
    tau : float, default=0.005
        Soft-update rate of the target critics.
    normalize_observations : bool, default=True
        Standardise observations with statistics fitted on the training data
        (applied identically to next observations and at predict time).
    reward_scaling : {"returns", "standard", "none"}, default="returns"
        Multiply rewards by 1000 / (max − min episode return), as IQL does for
        locomotion; or by 1 / std; or leave them.
    action_bounds : (low, high), gymnasium Box or None, default=None
        Bounds of the action space (scalars or arrays of ``act_dim``). ``None``
        takes the per-dimension range of the training actions. Actions are
        modelled in [-1, 1] internally; predictions are returned in these units.
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, batch sampling and :meth:`sample_action`. The same
        seed and data give identical predictions on the CPU.
    verbose : int, default=0
        Show a progress bar with the current losses.
    log_interval : int, default=1000
        Gradient steps averaged into one ``history_`` record.

    Attributes
    ----------
    core_ : IQLCore
        The networks and optimisers.
    buffer_ : TransitionBuffer
        The training transitions (normalised) on ``device_``.
    history_ : list of dict
        One record per ``log_interval`` steps: ``step``, ``phase`` and the mean
        ``value_loss``, ``actor_loss`` and ``critic_loss``.
    n_features_in_ : int
        Observation size.
    feature_names_in_ : ndarray of str
        Observation names, when ``X`` had string column names.
    action_dim_ : int
    n_updates_ : int
        Gradient steps taken so far.
    device_ : torch.device

    See Also
    --------
    sk_o2o.metrics.make_env_return_scorer : select ``beta`` by environment return.

    Examples
    --------
    >>> from sk_o2o import IQLPolicy
    >>> from sk_o2o.datasets import load_dataset
    >>> data = load_dataset("pendulum-medium-replay-v0")
    >>> policy = IQLPolicy(n_steps=100, random_state=0, device="cpu").fit(data)
    >>> policy.predict(data["observations"][:2]).shape
    (2, 1)
    """

    _parameter_constraints = {
        **_COMMON_CONSTRAINTS,
        "beta": [Interval(Real, 0, None, closed="left")],
        "expectile": [Interval(Real, 0, 1, closed="neither")],
        "actor_lr": [Interval(Real, 0, None, closed="neither")],
        "critic_lr": [Interval(Real, 0, None, closed="neither")],
        "value_lr": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        *,
        beta: float = 3.0,
        expectile: float = 0.7,
        n_steps: int = 50_000,
        batch_size: int = 256,
        hidden_sizes: tuple[int, ...] = (256, 256),
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        value_lr: float = 3e-4,
        gamma: float = 0.99,
        tau: float = 0.005,
        normalize_observations: bool = True,
        reward_scaling: str = "returns",
        action_bounds=None,
        device: str | torch.device = "auto",
        random_state=None,
        verbose: int = 0,
        log_interval: int = 1000,
    ):
        self.beta = beta
        self.expectile = expectile
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.hidden_sizes = hidden_sizes
        self.actor_lr = actor_lr
        self.critic_lr = critic_lr
        self.value_lr = value_lr
        self.gamma = gamma
        self.tau = tau
        self.normalize_observations = normalize_observations
        self.reward_scaling = reward_scaling
        self.action_bounds = action_bounds
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.log_interval = log_interval

    def _core_class(self):
        return IQLCore, IQLConfig

    def _make_core(self, obs_dim: int, act_dim: int, device: torch.device) -> IQLCore:
        hidden = tuple(int(h) for h in self.hidden_sizes)
        if not hidden or min(hidden) < 1:
            raise ValueError(
                f"hidden_sizes must be non-empty positive ints, got {self.hidden_sizes}."
            )
        config = IQLConfig(
            obs_dim=obs_dim,
            act_dim=act_dim,
            hidden=hidden,
            expectile=self.expectile,
            gamma=self.gamma,
            tau=self.tau,
            actor_lr=self.actor_lr,
            critic_lr=self.critic_lr,
            value_lr=self.value_lr,
        )
        return IQLCore(config, device)

    def _update(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.core_.update(batch, beta=self.beta)
