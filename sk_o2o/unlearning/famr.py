"""FAMR: forgetting as anchored optimisation (Sanga, Singh and Dubey, 2025).

Our reconstruction of the paper's objective (see ``docs/user-guide/unlearning.md``;
no code was published). With D_f the forget set, u a uniform distribution over
classes and θ₀ the trained weights, unlearning solves

    min_θ  F(θ) + (λ/2)·‖θ − θ₀‖²,      F(θ) = mean_{x ∈ D_f} KL(u ‖ p_θ(·|x)),

touching only D_f. λ (``anchor_strength``) trades forgetting against staying at
θ₀: for convex F the solution moves at most ‖∇F(θ₀)‖/λ from θ₀, the bound each
run records next to the distance it actually moved.

The solver is Adam on F with the anchor taken as an exact proximal step in Adam's
own metric (:func:`anchored_adam_step`). Its fixed points are exactly the
stationary points of the objective, ∇F(θ) + λ(θ − θ₀) = 0, and it is stable for
any λ: as λ → ∞ the weights stay at θ₀, where plain Adam on the sum would jitter
around θ₀ by about the learning rate. It stops early once the objective's
gradient, ‖∇F(θ) + λ(θ − θ₀)‖, falls to ``tol`` times its value at θ₀.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "AdamState",
    "anchored_adam_step",
    "famr_unlearn",
    "parameter_distance",
    "stationarity",
    "uniform_kl",
]

LogProbs = Callable[[torch.Tensor], torch.Tensor]  # inputs -> log p(·|x)

_CHUNK = 4096  # rows per forward when evaluating F on the whole forget set


# --------------------------------------------------------------------------- losses
def uniform_kl(log_probs: torch.Tensor, keep: torch.Tensor | None = None):
    """KL(u ‖ p(·|x)) per sample, u uniform over the ``keep`` classes (default all).

    KL(u ‖ p) = −log K − mean_k log p_k: the cross-entropy to the uniform
    distribution minus its entropy, zero exactly when p is uniform over the kept
    classes (and, with ``keep``, puts no mass on the others).

    Parameters
    ----------
    log_probs : tensor of shape (n, n_classes)
    keep : bool tensor of shape (n_classes,), optional

    Returns
    -------
    kl : tensor of shape (n,)
    """
    if keep is not None:
        log_probs = log_probs[:, keep]
    return -math.log(log_probs.shape[-1]) - log_probs.mean(-1)


def parameter_distance(
    params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor]
) -> torch.Tensor:
    """‖θ − θ₀‖ over all parameter tensors."""
    diffs = torch._foreach_sub(list(params), list(anchors))
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(diffs)))


def stationarity(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    anchor_strength: float,
) -> torch.Tensor:
    """‖∇F(θ) + λ(θ − θ₀)‖: the objective's gradient, zero at its optimum."""
    total = torch._foreach_sub(list(params), list(anchors))
    torch._foreach_mul_(total, anchor_strength)
    torch._foreach_add_(total, list(grads))
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(total)))


# --------------------------------------------------------------------------- solver
@dataclass
class AdamState:
    """Adam's moment estimates for a list of parameters."""

    exp_avg: list[torch.Tensor]
    exp_avg_sq: list[torch.Tensor]
    step: int = 0
    betas: tuple[float, float] = field(default=(0.9, 0.999))
    eps: float = 1e-8

    @classmethod
    def zeros_like(cls, params: Sequence[torch.Tensor]) -> AdamState:
        return cls(
            [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
        )


@torch.no_grad()
def anchored_adam_step(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    state: AdamState,
    *,
    lr: float,
    anchor_strength: float,
) -> None:
    """One Adam step on F, then the anchor's proximal step in Adam's metric.

    With d = sqrt(v̂) + ε Adam's per-coordinate scale, z = θ − lr·m̂/d the Adam
    step on F alone, the step solves argmin_θ (λ/2)‖θ − θ₀‖² + ‖θ − z‖²_d/(2·lr)
    in closed form: θ = (d·z + lr·λ·θ₀) / (d + lr·λ).
    """
    beta1, beta2 = state.betas
    state.step += 1
    torch._foreach_lerp_(state.exp_avg, list(grads), 1 - beta1)
    torch._foreach_mul_(state.exp_avg_sq, beta2)
    torch._foreach_addcmul_(state.exp_avg_sq, list(grads), list(grads), 1 - beta2)
    correction1 = 1 - beta1**state.step
    correction2 = 1 - beta2**state.step
    step_size = lr / correction1
    shrink = lr * anchor_strength
    for theta, m, v, theta0 in zip(
        params, state.exp_avg, state.exp_avg_sq, anchors, strict=True
    ):
        d = (v / correction2).sqrt_().add_(state.eps)
        z = theta - step_size * m / d
        theta.copy_((d * z + shrink * theta0) / (d + shrink))


# --------------------------------------------------------------------------- loop
def _mean_forget_loss(
    log_probs_of: LogProbs, X: torch.Tensor, keep: torch.Tensor | None
) -> torch.Tensor:
    """F on the whole forget set, evaluated in chunks (keeps the graph)."""
    total = sum(
        uniform_kl(log_probs_of(chunk), keep).sum() for chunk in X.split(_CHUNK)
    )
    return total / len(X)


def famr_unlearn(
    module: nn.Module,
    log_probs_of: LogProbs,
    X_forget: torch.Tensor,
    *,
    keep: torch.Tensor | None,
    anchor_strength: float,
    lr: float,
    n_steps: int,
    batch_size: int | None,
    generator: torch.Generator,
    tol: float | None = None,
    progress=None,
) -> dict[str, float | int | bool | list[float]]:
    """Run FAMR on ``module`` in place and return what was done.

    Parameters
    ----------
    module : torch.nn.Module
        The trained classifier; its trainable parameters are θ, their values on
        entry θ₀. It is put in eval mode, so dropout is off and batch-norm
        statistics are not updated from the forget set.
    log_probs_of : callable
        Inputs → log-probabilities through ``module``.
    X_forget : tensor of shape (n_forget, ...)
        The forget set, on the module's device.
    keep : bool tensor of shape (n_classes,) or None
        Classes the uniform target covers (all when None).
    anchor_strength, lr, n_steps : float, float, int
        λ, Adam's step size and the largest number of steps.
    batch_size : int or None
        Forget samples per step, drawn with ``generator``; None uses the whole
        forget set every step (the deterministic objective of the bound).
    generator : torch.Generator
        CPU generator for the minibatch indices.
    tol : float or None, default=None
        Stop before a step whose (minibatch) objective gradient ‖∇F(θ) +
        λ(θ − θ₀)‖ is at most ``tol`` · ‖∇F(θ₀)‖; None takes all ``n_steps``.
    progress : tqdm bar, optional

    Returns
    -------
    record : dict
        ``n_steps`` (the steps taken), ``converged`` (whether ``tol`` stopped
        it), ``stationarity`` (the last relative objective gradient, NaN
        without ``tol``), ``forget_loss_initial`` and ``forget_loss`` (F before
        and after), ``forget_loss_curve`` (the minibatch F of every step),
        ``parameter_distance`` (‖θ − θ₀‖), ``distance_bound`` (‖∇F(θ₀)‖/λ;
        infinite when λ = 0) and ``time_s``.
    """
    start = time.perf_counter()
    module.eval()
    params = [p for p in module.parameters() if p.requires_grad]
    anchors = [p.detach().clone() for p in params]
    initial = _mean_forget_loss(log_probs_of, X_forget, keep)
    grads = torch.autograd.grad(initial, params, materialize_grads=True)
    grad_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    state = AdamState.zeros_like(params)
    curve: list[torch.Tensor] = []
    n = len(X_forget)
    steps_taken, converged, relative_gradient = 0, False, math.nan
    for _ in range(n_steps):
        if batch_size is None or batch_size >= n:
            batch = X_forget
        else:
            idx = torch.randint(n, (batch_size,), generator=generator)
            batch = X_forget[idx.to(X_forget.device)]
        loss = uniform_kl(log_probs_of(batch), keep).mean()
        grads = torch.autograd.grad(loss, params, materialize_grads=True)
        if tol is not None:
            with torch.no_grad():
                gradient = stationarity(params, grads, anchors, anchor_strength)
            relative_gradient = float(gradient) / max(float(grad_norm), 1e-30)
            if relative_gradient <= tol:
                converged = True
                break
        anchored_adam_step(
            params, grads, anchors, state, lr=lr, anchor_strength=anchor_strength
        )
        curve.append(loss.detach())
        steps_taken += 1
        if progress is not None:
            progress.update(1)
    with torch.no_grad():
        final = _mean_forget_loss(log_probs_of, X_forget, keep)
        distance = parameter_distance(params, anchors)
    bound = float(grad_norm) / anchor_strength if anchor_strength > 0 else math.inf
    return {
        "n_steps": steps_taken,
        "converged": converged,
        "stationarity": relative_gradient,
        "forget_loss_initial": float(initial.detach()),
        "forget_loss": float(final),
        "forget_loss_curve": torch.stack(curve).tolist() if curve else [],
        "parameter_distance": float(distance),
        "distance_bound": bound,
        "time_s": time.perf_counter() - start,
    }
