"""The RL estimators: data in, algorithm core out."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.utils._param_validation import Interval, StrOptions

from sk_o2o._base import TorchEstimator, check_int, find_stack_level
from sk_o2o.data.buffer import Batch
from sk_o2o.data.normalization import REWARD_SCALINGS
from sk_o2o.data.transitions import check_finite, to_numpy
from sk_o2o.rl.algos.famo2o import (
    FamO2OIQLConfig,
    FamO2OIQLCore,
    FamO2OTD3BCConfig,
    FamO2OTD3BCCore,
)
from sk_o2o.rl.algos.iql import IQLConfig, IQLCore, cosine_decay
from sk_o2o.rl.algos.td3bc import TD3BCConfig, TD3BCCore, actor_step_due
from sk_o2o.rl.balance import balance_code
from sk_o2o.rl.base import BaseRLPolicy

__all__ = ["FamO2OPolicy", "IQLPolicy", "TD3BCPolicy"]

_TD3_POLICY_FREQ = 2  # TD3's actor delay, used by FamO2O's TD3+BC base

_COMMON_CONSTRAINTS = {
    **TorchEstimator._parameter_constraints,
    "hidden_sizes": ["array-like"],
    "n_steps": [Interval(Integral, 0, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "gamma": [Interval(Real, 0, 1, closed="both")],
    "tau": [Interval(Real, 0, 1, closed="right")],
    "normalize_observations": ["boolean"],
    "reward_scaling": [StrOptions(set(REWARD_SCALINGS))],
    "action_bounds": "no_validation",  # checked against the data in fit
    "log_interval": [Interval(Integral, 1, None, closed="left")],
}


def _offline_cosine(estimator, n_steps: int, phase: str) -> Callable | None:
    """The actor's cosine decay over ``fit``'s steps, when the estimator asks."""
    if phase != "offline" or estimator.actor_lr_schedule != "cosine":
        return None
    return functools.partial(cosine_decay, estimator.actor_lr, n_steps=n_steps)


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
        Transitions per gradient step, drawn uniformly from the buffer.
    hidden_sizes : tuple of int, default=(256, 256)
        Hidden layer widths of the actor, critics and value network.
    actor_lr : float, default=3e-4
        Adam learning rate of the actor.
    actor_lr_schedule : {"constant", "cosine"}, default="constant"
        ``"cosine"`` decays the actor's learning rate from ``actor_lr`` towards 0
        over the steps of :meth:`fit`, as the IQL authors' offline runs (and CORL's
        and d3rlpy's IQL reproductions) do; :meth:`partial_fit` and
        ``fit_online`` then train the actor at ``actor_lr`` again.
    critic_lr, value_lr : float, default=3e-4
        Adam learning rates of the critics and the value network.
    gamma : float, default=0.99
        Discount factor.
    tau : float, default=0.005
        Soft-update rate of the target critics.
    normalize_observations : bool, default=True
        Standardise observations with statistics fitted on the training data
        (applied identically to next observations and at predict time).
    reward_scaling : {"returns", "standard", "none"}, default="returns"
        Multiply rewards by 1000 / (max − min episode return), as IQL does for
        locomotion (episodes end at terminals, timeouts and jumps from
        ``next_observations[i]`` to ``X[i + 1]``); or by 1 / std; or leave them.
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
        Gradient steps averaged into one ``history_`` record. ``fit`` records
        its last, shorter interval at its end; :meth:`partial_fit` counts steps
        across calls, so a loop of one-step calls writes one record per
        ``log_interval`` steps, not one per call.

    Attributes
    ----------
    core_ : IQLCore
        The networks and optimisers.
    buffer_ : TransitionBuffer
        The training transitions (normalised) on ``device_``.
    history_ : list of dict
        One record per ``log_interval`` steps: ``step``, ``phase`` and the mean
        ``value_loss``, ``actor_loss`` and ``critic_loss``; ``fit_online``
        adds its episode and evaluation records.
    n_features_in_ : int
        Observation size.
    feature_names_in_ : ndarray of str
        Observation names, when ``X`` had string column names.
    action_dim_ : int
        Action size (the columns of ``y``).
    n_updates_ : int
        Gradient steps taken so far.
    n_env_steps_ : int
        Environment steps taken by ``fit_online`` since :meth:`fit`.
    device_ : torch.device
        Where the networks and the buffer live.
    observation_scaler_ : ObservationScaler
        ``(obs − mean) / std`` with the training observations' statistics (the
        identity with ``normalize_observations=False``), applied to ``X``,
        ``next_observations`` and the inputs of every prediction.
    action_scaler_ : ActionScaler
        Maps actions between the action bounds (``action_bounds``, else the
        training actions' range) and the policy's [-1, 1].
    reward_scale_ : float
        What ``reward_scaling`` multiplies the rewards by in training; values
        (:meth:`predict_value`, :meth:`score`) are divided by it.
    actions_1d_ : bool
        Whether ``y`` was one-dimensional, as the actions :meth:`predict`
        returns then are.
    generator_ : torch.Generator
        The CPU generator, seeded from ``random_state``, that draws every batch,
        noise, :meth:`sample_action`'s draws and ``fit_online``'s seeds.

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
        "actor_lr_schedule": [StrOptions({"constant", "cosine"})],
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
        actor_lr_schedule: str = "constant",
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
        self.actor_lr_schedule = actor_lr_schedule
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
        config = IQLConfig(
            obs_dim=obs_dim,
            act_dim=act_dim,
            hidden=_check_hidden(self.hidden_sizes),
            expectile=self.expectile,
            gamma=self.gamma,
            tau=self.tau,
            actor_lr=self.actor_lr,
            critic_lr=self.critic_lr,
            value_lr=self.value_lr,
        )
        return IQLCore(config, device)

    def _update(self, batch: Batch, phase: str) -> dict[str, torch.Tensor]:
        return self.core_.update(batch, beta=self.beta)

    def _actor_lr_schedule(self, n_steps: int, phase: str) -> Callable | None:
        return _offline_cosine(self, n_steps, phase)


class FamO2OPolicy(BaseRLPolicy):
    """FamO2O: one universal policy family and a state-adaptive balance model.

    Instead of one improvement/constraint balance for all data, FamO2O (Wang et
    al., NeurIPS 2023) trains a *universal model* π_u(a | s, β) — IQL's actor fed
    the state and a sin/cos code of β — and a *balance model* π_b(β | s) that
    picks, per state, the β whose action the critics value most. :meth:`fit`
    pre-trains offline (β drawn uniformly from ``balance_range`` for the
    universal model); :meth:`partial_fit` fine-tunes on new transitions with β
    from the balance model. Acting uses the balance model's mean β.

    Parameters
    ----------
    algo : {"iql", "td3bc"}, default="iql"
        Base algorithm. ``"iql"`` (the paper's): β is the advantage inverse
        temperature. ``"td3bc"`` (our addition; not among the paper's bases): β is
        TD3+BC's α, the weight of the normalised Q term against behaviour
        cloning; TD3's smoothing noise 0.2 (clip 0.5) and actor delay 2 are used,
        :meth:`sample_action` (so ``fit_online``'s acting) adds Gaussian noise of
        standard deviation 0.1 (``TD3BCPolicy``'s default ``exploration_noise``),
        and the balance model's step evaluates Q̄ at the universal model's action
        plus that noise.
    balance_range : (float, float), optional
        Range of β. Default per base: (1, 5) for IQL (the paper's locomotion
        setting), (1, 4) for TD3+BC (our choice, around TD3+BC's α = 2.5).
    balance_update_interval : int, default=5
        Gradient steps between balance-model updates (5 for IQL locomotion).
    balance_lr, alpha_lr : float, default=3e-4
        Learning rates of the balance model and its entropy temperature.
    target_entropy : float, default=-0.5
        Entropy target of the balance model's temperature.
    advantage_weighting : {"per_sample", "batch_mean"}, default="per_sample"
        How the universal model's samples are weighted (IQL only).
        ``"per_sample"`` (the paper's objective): sample i by min(exp(β_i · A_i),
        100), at its own β. ``"batch_mean"`` reproduces the authors' JAX IQL
        code, where a broadcast makes sample j's weight the mean over the
        batch's β_i of min(exp(β_i · A_j), 100): the same for every β code, so
        the family's members learn alike.
    expectile : float, default=0.7
        IQL only, as in :class:`IQLPolicy`; unused with ``algo="td3bc"`` (a
        value other than the default warns).
    n_steps : int, default=50_000
        Gradient steps taken by :meth:`fit`.
    batch_size : int, default=256
        As in :class:`IQLPolicy`.
    hidden_sizes : tuple of int, default=(256, 256)
        Hidden layer widths of every network (π_b's included).
    actor_lr : float, default=3e-4
        Adam learning rate of the universal model.
    actor_lr_schedule : {"constant", "cosine"}, default="constant"
        IQL only. ``"cosine"`` decays the universal model's learning rate from
        ``actor_lr`` towards 0 over the steps of :meth:`fit`, as in
        :class:`IQLPolicy`; :meth:`partial_fit` and ``fit_online`` then train it
        at ``actor_lr`` again. (The authors' FamO2O learner defaults to a
        cosine decay over all its steps, but their shipped FamO2O-IQL
        configuration turns it off.)
    critic_lr : float, default=3e-4
        Adam learning rate of the critics.
    value_lr : float, default=3e-4
        IQL only: the value network's; unused with ``algo="td3bc"``, as
        ``expectile``.
    gamma : float, default=0.99
        Discount factor.
    tau : float, default=0.005
        Soft-update rate of the target critics.
    normalize_observations : bool, default=True
        As in :class:`IQLPolicy`.
    reward_scaling : {"returns", "standard", "none"} or None, default=None
        As in :class:`IQLPolicy`. Default per base, as its fixed-β sibling:
        ``"returns"`` for IQL, ``"none"`` for TD3+BC.
    action_bounds : (low, high), gymnasium Box or None, default=None
        As in :class:`IQLPolicy`.
    device : str or torch.device, default="auto"
        As in :class:`IQLPolicy`.
    random_state : int, RandomState instance or None, default=None
        As in :class:`IQLPolicy`.
    verbose : int, default=0
        Show a progress bar with the current losses.
    log_interval : int, default=1000
        As in :class:`IQLPolicy`.

    Attributes
    ----------
    core_ : FamO2OIQLCore or FamO2OTD3BCCore
        The base's networks with the universal model, the balance model and the
        optimisers.
    buffer_ : TransitionBuffer
        The training transitions (normalised) on ``device_``.
    history_ : list of dict
        As in :class:`IQLPolicy` (:class:`TD3BCPolicy` for ``algo="td3bc"``:
        no ``value_loss``), plus ``balance_loss``, ``alpha`` and
        ``mean_beta`` (the mean β sampled by the balance model).
    n_features_in_ : int
        Observation size.
    feature_names_in_ : ndarray of str
        Observation names, when ``X`` had string column names.
    action_dim_ : int
        Action size (the columns of ``y``).
    n_updates_ : int
        Gradient steps taken so far.
    n_env_steps_ : int
        Environment steps taken by ``fit_online`` since :meth:`fit`.
    device_ : torch.device
        Where the networks and the buffer live.
    observation_scaler_ : ObservationScaler
        ``(obs − mean) / std`` with the training observations' statistics (the
        identity with ``normalize_observations=False``), applied to ``X``,
        ``next_observations`` and the inputs of every prediction.
    action_scaler_ : ActionScaler
        Maps actions between the action bounds (``action_bounds``, else the
        training actions' range) and the policy's [-1, 1].
    reward_scale_ : float
        What ``reward_scaling`` multiplies the rewards by in training; values
        (:meth:`predict_value`, :meth:`score`) are divided by it.
    actions_1d_ : bool
        Whether ``y`` was one-dimensional, as the actions :meth:`predict`
        returns then are.
    generator_ : torch.Generator
        The CPU generator, seeded from ``random_state``, that draws every batch,
        noise, :meth:`sample_action`'s draws and ``fit_online``'s seeds.

    See Also
    --------
    IQLPolicy, TD3BCPolicy : the same bases with one global β.

    Examples
    --------
    >>> from sk_o2o import FamO2OPolicy
    >>> from sk_o2o.datasets import load_dataset
    >>> data = load_dataset("pendulum-medium-replay-v0")
    >>> policy = FamO2OPolicy(n_steps=50, random_state=0, device="cpu").fit(data)
    >>> beta = policy.predict_balance(data["observations"][:3])
    >>> bool(((beta >= 1.0) & (beta <= 5.0)).all())
    True
    """

    _parameter_constraints = {
        **_COMMON_CONSTRAINTS,
        "algo": [StrOptions({"iql", "td3bc"})],
        "balance_range": ["array-like", None],
        "balance_update_interval": [Interval(Integral, 1, None, closed="left")],
        "balance_lr": [Interval(Real, 0, None, closed="neither")],
        "alpha_lr": [Interval(Real, 0, None, closed="neither")],
        "target_entropy": [Interval(Real, -np.inf, np.inf, closed="neither")],
        "advantage_weighting": [StrOptions({"per_sample", "batch_mean"})],
        "expectile": [Interval(Real, 0, 1, closed="neither")],
        "actor_lr": [Interval(Real, 0, None, closed="neither")],
        "actor_lr_schedule": [StrOptions({"constant", "cosine"})],
        "critic_lr": [Interval(Real, 0, None, closed="neither")],
        "value_lr": [Interval(Real, 0, None, closed="neither")],
        "reward_scaling": [StrOptions(set(REWARD_SCALINGS)), None],
    }

    def __init__(
        self,
        *,
        algo: str = "iql",
        balance_range: tuple[float, float] | None = None,
        balance_update_interval: int = 5,
        balance_lr: float = 3e-4,
        alpha_lr: float = 3e-4,
        target_entropy: float = -0.5,
        advantage_weighting: str = "per_sample",
        expectile: float = 0.7,
        n_steps: int = 50_000,
        batch_size: int = 256,
        hidden_sizes: tuple[int, ...] = (256, 256),
        actor_lr: float = 3e-4,
        actor_lr_schedule: str = "constant",
        critic_lr: float = 3e-4,
        value_lr: float = 3e-4,
        gamma: float = 0.99,
        tau: float = 0.005,
        normalize_observations: bool = True,
        reward_scaling: str | None = None,
        action_bounds=None,
        device: str | torch.device = "auto",
        random_state=None,
        verbose: int = 0,
        log_interval: int = 1000,
    ):
        self.algo = algo
        self.balance_range = balance_range
        self.balance_update_interval = balance_update_interval
        self.balance_lr = balance_lr
        self.alpha_lr = alpha_lr
        self.target_entropy = target_entropy
        self.advantage_weighting = advantage_weighting
        self.expectile = expectile
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.hidden_sizes = hidden_sizes
        self.actor_lr = actor_lr
        self.actor_lr_schedule = actor_lr_schedule
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

    _DEFAULT_BALANCE_RANGES = {"iql": (1.0, 5.0), "td3bc": (1.0, 4.0)}
    _DEFAULT_REWARD_SCALINGS = {"iql": "returns", "td3bc": "none"}
    _IQL_ONLY = ("expectile", "value_lr")

    def _reward_scaling(self) -> str:
        if self.reward_scaling is None:
            return self._DEFAULT_REWARD_SCALINGS[self.algo]
        return self.reward_scaling

    def _unused_params(self) -> frozenset[str]:
        return frozenset(self._IQL_ONLY) if self.algo == "td3bc" else frozenset()

    def _resolved_params(self, params: dict[str, Any]) -> dict[str, Any]:
        algo, resolved = params.get("algo", self.algo), dict(params)
        defaults = {
            "reward_scaling": self._DEFAULT_REWARD_SCALINGS,
            "balance_range": self._DEFAULT_BALANCE_RANGES,
        }
        for name, per_base in defaults.items():
            if name in resolved and resolved[name] is None and algo in per_base:
                resolved[name] = per_base[algo]
        return resolved

    def _core_class(self):
        if self.algo == "td3bc":
            return FamO2OTD3BCCore, FamO2OTD3BCConfig
        return FamO2OIQLCore, FamO2OIQLConfig

    def _make_core(self, obs_dim: int, act_dim: int, device: torch.device):
        balance_range = self.balance_range
        if balance_range is None:
            balance_range = self._DEFAULT_BALANCE_RANGES[self.algo]
        base = {
            "obs_dim": obs_dim,
            "act_dim": act_dim,
            "hidden": _check_hidden(self.hidden_sizes),
            "gamma": self.gamma,
            "tau": self.tau,
            "actor_lr": self.actor_lr,
            "critic_lr": self.critic_lr,
            "balance_range": _check_range(balance_range, "balance_range"),
            "balance_lr": self.balance_lr,
            "alpha_lr": self.alpha_lr,
            "target_entropy": float(self.target_entropy),
        }
        if self.algo == "iql":
            base.update(
                expectile=self.expectile,
                value_lr=self.value_lr,
                batch_mean_weights=self.advantage_weighting == "batch_mean",
            )
        else:
            defaults = type(self)().get_params()
            changed = [
                name for name in self._IQL_ONLY if getattr(self, name) != defaults[name]
            ]
            if changed:
                warnings.warn(
                    f"{' and '.join(changed)} "
                    f"{'apply' if len(changed) > 1 else 'applies'} to algo='iql' "
                    f"only; algo={self.algo!r} ignores "
                    f"{'them' if len(changed) > 1 else 'it'}.",
                    UserWarning,
                    stacklevel=find_stack_level(),
                )
            if self.advantage_weighting != "per_sample":
                raise ValueError(
                    f"advantage_weighting={self.advantage_weighting!r} applies to "
                    f"algo='iql' only; algo={self.algo!r} has no advantage weights."
                )
            if self.actor_lr_schedule != "constant":
                raise ValueError(
                    f"actor_lr_schedule={self.actor_lr_schedule!r} applies to "
                    f"algo='iql' only, not algo={self.algo!r}."
                )
        core_cls, config_cls = self._core_class()
        return core_cls(config_cls(**base), device)

    def _noise(self, *shape: int) -> torch.Tensor:
        # Drawn on the CPU generator: the same seed gives the same run on any device.
        return torch.randn(shape, generator=self.generator_, dtype=torch.float32).to(
            self.device_
        )

    def _update(self, batch: Batch, phase: str) -> dict[str, torch.Tensor]:
        core, n = self.core_, len(batch.rewards)
        # The random numbers are drawn first, in a fixed order, so that the core is
        # free to schedule the step's parts (e.g. on two threads).
        balance_noise = None
        if self.n_updates_ % self.balance_update_interval == 0:
            balance_noise = (self._noise(n), self._noise(n, self.action_dim_))
        beta = beta_noise = None
        if phase == "offline":  # explore the whole family
            low, high = core.config.balance_range
            u = torch.rand(n, generator=self.generator_, dtype=torch.float32).to(
                self.device_
            )
            beta = low + (high - low) * u
        else:  # fine-tune the members the balance model picks (after its step)
            beta_noise = self._noise(n)
        if self.algo == "iql":
            return core.update_step(batch, balance_noise, beta, beta_noise)
        return core.update_step(
            batch,
            balance_noise,
            beta,
            beta_noise,
            target_noise=self._noise(n, self.action_dim_) * core.config.policy_noise,
            update_actor=actor_step_due(self.n_updates_, _TD3_POLICY_FREQ),
            clone_only=self._behaviour_cloning,
        )

    def _actor_lr_schedule(self, n_steps: int, phase: str) -> Callable | None:
        return _offline_cosine(self, n_steps, phase)

    def _policy_mode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.core_.act(obs)

    def predict_balance(self, X: ArrayLike) -> np.ndarray:
        """The β the balance model chooses for each state (inside ``balance_range``).

        Parameters
        ----------
        X : array-like of shape (n_samples, obs_dim)
            Observations.

        Returns
        -------
        beta : ndarray of shape (n_samples,)
            The mean of the balance model's distribution for each state.
        """
        obs = self._observations_tensor(X)
        with torch.no_grad():
            beta = self.core_.chosen_balance(obs)
        return beta.cpu().numpy().astype(np.float64)

    def predict_with_balance(self, X: ArrayLike, beta: ArrayLike) -> np.ndarray:
        """Actions of the universal model for a given β (one or one per state).

        Parameters
        ----------
        X : array-like of shape (n_samples, obs_dim)
            Observations.
        beta : float or array-like of shape (n_samples,)
            Finite. The universal model was trained on ``balance_range``;
            outside it, it extrapolates.

        Returns
        -------
        actions : ndarray of shape (n_samples, act_dim) or (n_samples,)
            As from :meth:`predict`.
        """
        obs = self._observations_tensor(X)
        if beta is None:  # np.asarray(None, float32) is NaN
            raise ValueError("beta must be numbers, got None.")
        try:
            beta = np.asarray(to_numpy(beta), dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"beta must be numbers, got {beta!r}.") from None
        if beta.ndim > 1 or (beta.ndim == 1 and len(beta) != len(obs)):
            raise ValueError(
                f"beta must be a number or hold one per row of X ({len(obs)}), got "
                f"shape {beta.shape}."
            )
        beta = np.broadcast_to(beta, (len(obs),))
        check_finite(beta[:, None], "beta")
        beta = torch.as_tensor(beta.copy()).to(self.device_)
        with torch.no_grad():
            mean = self.core_.actor.mode(obs, balance_code(beta))
        return self._actions_out(mean)


def _check_hidden(hidden_sizes) -> tuple[int, ...]:
    # check_int, not int(): int(16.5) and int(True) build other networks.
    message = f"hidden_sizes must be non-empty positive ints, got {hidden_sizes!r}."
    try:
        hidden = tuple(check_int(h, "hidden_sizes", 1) for h in hidden_sizes)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not hidden:
        raise ValueError(message)
    return hidden


def _check_range(value, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}.") from None
    if not (np.isfinite(low) and np.isfinite(high) and 0 <= low < high):
        raise ValueError(f"{name} must satisfy 0 <= low < high, got {value!r}.")
    return low, high


class TD3BCPolicy(BaseRLPolicy):
    """TD3+BC with one global improvement/constraint balance.

    TD3 with a behaviour-cloning term in the actor loss (Fujimoto & Gu, 2021):
    ``−λ·Q(s, π(s)) + (π(s) − a)²`` with ``λ = beta / mean|Q|``. A large ``beta``
    improves on the data, a small one clones it.

    Parameters
    ----------
    beta : float, default=2.5
        The paper's α: weight of the Q term against the behaviour-cloning term.
    n_steps : int, default=50_000
        Gradient steps taken by :meth:`fit`.
    batch_size : int, default=256
        As in :class:`IQLPolicy`.
    hidden_sizes : tuple of int, default=(256, 256)
        Hidden layer widths of the actor and the critics.
    actor_lr, critic_lr : float, default=3e-4
        Adam learning rates.
    gamma : float, default=0.99
        Discount factor.
    tau : float, default=0.005
        Soft-update rate of the target actor and critics.
    policy_noise : float, default=0.2
        Standard deviation of the target policy smoothing noise ([-1, 1] units).
    noise_clip : float, default=0.5
        Clip of that noise.
    policy_freq : int, default=2
        Critic steps per actor (and target) step.
    exploration_noise : float, default=0.1
        Standard deviation of the Gaussian noise of :meth:`sample_action` (and so
        of ``fit_online``'s actions), in [-1, 1] units; read when acting, so it
        may be changed between online calls.
    normalize_observations : bool, default=True
        As in :class:`IQLPolicy`.
    reward_scaling : {"none", "standard", "returns"}, default="none"
        As in :class:`IQLPolicy`; TD3+BC leaves rewards as they are by default.
    action_bounds : (low, high), gymnasium Box or None, default=None
        As in :class:`IQLPolicy`.
    device : str or torch.device, default="auto"
        As in :class:`IQLPolicy`.
    random_state : int, RandomState instance or None, default=None
        As in :class:`IQLPolicy`.
    verbose : int, default=0
        Show a progress bar with the current losses.
    log_interval : int, default=1000
        As in :class:`IQLPolicy`.

    Attributes
    ----------
    core_ : TD3BCCore
        The networks, their targets and the optimisers.
    buffer_ : TransitionBuffer
        The training transitions (normalised) on ``device_``.
    history_ : list of dict
        One record per ``log_interval`` steps: ``step``, ``phase``, the mean
        ``critic_loss`` (every step) and ``actor_loss`` (every ``policy_freq``
        steps); ``fit_online`` adds its episode and evaluation records.
    n_features_in_ : int
        Observation size.
    feature_names_in_ : ndarray of str
        Observation names, when ``X`` had string column names.
    action_dim_ : int
        Action size (the columns of ``y``).
    n_updates_ : int
        Gradient steps taken so far.
    n_env_steps_ : int
        Environment steps taken by ``fit_online`` since :meth:`fit`.
    device_ : torch.device
        Where the networks and the buffer live.
    observation_scaler_ : ObservationScaler
        ``(obs − mean) / std`` with the training observations' statistics (the
        identity with ``normalize_observations=False``), applied to ``X``,
        ``next_observations`` and the inputs of every prediction.
    action_scaler_ : ActionScaler
        Maps actions between the action bounds (``action_bounds``, else the
        training actions' range) and the policy's [-1, 1].
    reward_scale_ : float
        What ``reward_scaling`` multiplies the rewards by in training; values
        (:meth:`predict_value`, :meth:`score`) are divided by it.
    actions_1d_ : bool
        Whether ``y`` was one-dimensional, as the actions :meth:`predict`
        returns then are.
    generator_ : torch.Generator
        The CPU generator, seeded from ``random_state``, that draws every batch,
        noise, :meth:`sample_action`'s draws and ``fit_online``'s seeds.

    Examples
    --------
    >>> from sk_o2o import TD3BCPolicy
    >>> from sk_o2o.datasets import load_dataset
    >>> data = load_dataset("pendulum-medium-replay-v0")
    >>> policy = TD3BCPolicy(n_steps=50, random_state=0, device="cpu").fit(data)
    >>> policy.predict(data["observations"][:2]).shape
    (2, 1)
    """

    _parameter_constraints = {
        **_COMMON_CONSTRAINTS,
        "beta": [Interval(Real, 0, None, closed="left")],
        "policy_noise": [Interval(Real, 0, None, closed="left")],
        "noise_clip": [Interval(Real, 0, None, closed="left")],
        "policy_freq": [Interval(Integral, 1, None, closed="left")],
        "exploration_noise": [Interval(Real, 0, None, closed="left")],
        "actor_lr": [Interval(Real, 0, None, closed="neither")],
        "critic_lr": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        *,
        beta: float = 2.5,
        n_steps: int = 50_000,
        batch_size: int = 256,
        hidden_sizes: tuple[int, ...] = (256, 256),
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        gamma: float = 0.99,
        tau: float = 0.005,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_freq: int = 2,
        exploration_noise: float = 0.1,
        normalize_observations: bool = True,
        reward_scaling: str = "none",
        action_bounds=None,
        device: str | torch.device = "auto",
        random_state=None,
        verbose: int = 0,
        log_interval: int = 1000,
    ):
        self.beta = beta
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.hidden_sizes = hidden_sizes
        self.actor_lr = actor_lr
        self.critic_lr = critic_lr
        self.gamma = gamma
        self.tau = tau
        self.policy_noise = policy_noise
        self.noise_clip = noise_clip
        self.policy_freq = policy_freq
        self.exploration_noise = exploration_noise
        self.normalize_observations = normalize_observations
        self.reward_scaling = reward_scaling
        self.action_bounds = action_bounds
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.log_interval = log_interval

    def _core_class(self):
        return TD3BCCore, TD3BCConfig

    def _make_core(self, obs_dim: int, act_dim: int, device: torch.device) -> TD3BCCore:
        config = TD3BCConfig(
            obs_dim=obs_dim,
            act_dim=act_dim,
            hidden=_check_hidden(self.hidden_sizes),
            gamma=self.gamma,
            tau=self.tau,
            actor_lr=self.actor_lr,
            critic_lr=self.critic_lr,
            policy_noise=self.policy_noise,
            noise_clip=self.noise_clip,
            exploration_noise=self.exploration_noise,
        )
        return TD3BCCore(config, device)

    def _exploration_std(self) -> torch.Tensor:
        # Read at acting time, so set_params(exploration_noise=...) after fit
        # takes effect (the actor's stored copy is the value at fit).
        return torch.full(
            (self.action_dim_,),
            float(self.exploration_noise),
            dtype=torch.float32,
            device=self.device_,
        )

    def _update(self, batch: Batch, phase: str) -> dict[str, torch.Tensor]:
        noise = torch.randn(
            (len(batch.rewards), self.action_dim_),
            generator=self.generator_,
            dtype=torch.float32,
        ).to(self.device_)
        return self.core_.update(
            batch,
            beta=0.0 if self._behaviour_cloning else self.beta,  # see BaseRLPolicy
            target_noise=noise * self.policy_noise,
            update_actor=actor_step_due(self.n_updates_, self.policy_freq),
        )
