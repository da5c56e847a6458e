"""FAMR: forgetting as anchored optimisation (Sanga, Singh and Dubey, 2025).

Our reconstruction of the paper's objective (see ``docs/user-guide/unlearning.md``;
no code was published). With D_f the forget set, u a uniform distribution over
classes and θ₀ the trained weights, unlearning solves

    min_θ  F(θ) + (λ/2)·‖θ − θ₀‖²,      F(θ) = mean_{x ∈ D_f} KL(u ‖ p_θ(·|x)),

touching only D_f. λ (``anchor_strength``) trades forgetting against staying at
θ₀: for convex F the solution moves at most ‖∇F(θ₀)‖/λ from θ₀, the bound each
run records next to the distance it actually moved.

Our extension for class forgetting replaces u by :func:`renormalized_target`,
the trained model's prediction with the forgotten classes taken out (what a
model retrained without them predicts, if it learns the same posterior); F is
then the KL divergence to that fixed target (:func:`target_kl`).

Two solvers, both stopping once the objective's gradient ∇F(θ) + λ(θ − θ₀) has
fallen to ``tol`` times its value at θ₀ in its largest coordinate:

- ``"lbfgs"`` (the default): torch's L-BFGS with a strong-Wolfe line search on
  the whole forget set. The objective is deterministic and smooth, and L-BFGS
  reaches a lower value of it in 10-30 iterations than Adam in 100 steps.
- ``"adam"``: Adam on F with the anchor taken as an exact proximal step in
  Adam's own metric (:func:`anchored_adam_step`), on minibatches if asked. Its
  fixed points are exactly the stationary points of the objective, and it is
  stable for any λ: as λ → ∞ the weights stay at θ₀, where plain Adam on the
  sum would jitter around θ₀ by about the learning rate.
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
    "renormalized_target",
    "stationarity",
    "target_kl",
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
        log p(·|x) of each sample.
    keep : bool tensor of shape (n_classes,), optional
        The classes u covers; the others are left out of the mean.

    Returns
    -------
    kl : tensor of shape (n,)
        KL(u ‖ p(·|x)) of each sample.
    """
    if keep is not None:
        log_probs = log_probs[:, keep]
    return -math.log(log_probs.shape[-1]) - log_probs.mean(-1)


def renormalized_target(log_probs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The trained model's prediction with the forgotten classes taken out.

    q_k = p_k / Σ_{j kept} p_j for kept classes k, 0 for the others: what a
    model retrained without those classes predicts if it learns the same
    posterior (for a Bayes-optimal classifier, exactly p(y | x, y kept)).

    Parameters
    ----------
    log_probs : tensor of shape (n, n_classes)
        log p_θ₀(·|x) of the trained model.
    keep : bool tensor of shape (n_classes,)
        True for the classes that remain.

    Returns
    -------
    target : tensor of shape (n, n_classes)
        q, rows summing to one, zero in the forgotten classes.
    """
    kept = log_probs.masked_fill(~keep, -math.inf)
    return torch.softmax(kept, dim=-1)


def target_kl(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(q ‖ p(·|x)) per sample for fixed soft targets q (zeros allowed).

    Parameters
    ----------
    log_probs : tensor of shape (n, n_classes)
        log p(·|x) of each sample.
    target : tensor of shape (n, n_classes)
        q of each sample, rows summing to one; 0 log 0 counts as 0.

    Returns
    -------
    kl : tensor of shape (n,)
        KL(q ‖ p(·|x)) of each sample.
    """
    log_target = torch.where(target > 0, target.log(), torch.zeros_like(target))
    return (target * (log_target - log_probs)).sum(-1)


def parameter_distance(
    params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor]
) -> torch.Tensor:
    """‖θ − θ₀‖ over all parameter tensors.

    Parameters
    ----------
    params : sequence of tensor
        θ, the current parameters.
    anchors : sequence of tensor
        θ₀, of the same shapes, in the same order.

    Returns
    -------
    distance : tensor
        The Euclidean norm of θ − θ₀ over all tensors together (a scalar).
    """
    diffs = torch._foreach_sub(list(params), list(anchors))
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(diffs)))


def stationarity(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    anchor_strength: float,
) -> torch.Tensor:
    """‖∇F(θ) + λ(θ − θ₀)‖∞: the objective's largest gradient coordinate.

    Zero at the objective's optimum; the ∞-norm is the one L-BFGS tests.

    Parameters
    ----------
    params : sequence of tensor
        θ.
    grads : sequence of tensor
        ∇F(θ), one per parameter tensor.
    anchors : sequence of tensor
        θ₀.
    anchor_strength : float
        λ.

    Returns
    -------
    norm : tensor
        The largest absolute coordinate of ∇F(θ) + λ(θ − θ₀) (a scalar).
    """
    total = torch._foreach_sub(list(params), list(anchors))
    torch._foreach_mul_(total, anchor_strength)
    torch._foreach_add_(total, list(grads))
    return torch.stack(torch._foreach_norm(total, math.inf)).max()


# --------------------------------------------------------------------------- solver
@dataclass
class AdamState:
    """Adam's moment estimates for a list of parameters.

    Parameters
    ----------
    exp_avg : list of tensor
        First-moment estimates m, one per parameter tensor.
    exp_avg_sq : list of tensor
        Second-moment estimates v, one per parameter tensor.
    step : int, default=0
        Steps taken, for the bias corrections.
    betas : (float, float), default=(0.9, 0.999)
        Decay rates of the two moment estimates.
    eps : float, default=1e-8
        Added to sqrt(v̂) in the denominator.
    """

    exp_avg: list[torch.Tensor]
    exp_avg_sq: list[torch.Tensor]
    step: int = 0
    betas: tuple[float, float] = field(default=(0.9, 0.999))
    eps: float = 1e-8

    @classmethod
    def zeros_like(cls, params: Sequence[torch.Tensor]) -> AdamState:
        """A state before the first step: zero moments shaped as ``params``.

        Parameters
        ----------
        params : sequence of tensor
            The parameters the state is for.

        Returns
        -------
        state : AdamState
            Zero moment estimates, ``step`` 0 and Adam's default ``betas`` and ``eps``.
        """
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

    Parameters
    ----------
    params : sequence of tensor
        θ, updated in place.
    grads : sequence of tensor
        ∇F(θ), one per parameter tensor.
    anchors : sequence of tensor
        θ₀.
    state : AdamState
        The moment estimates, updated in place.
    lr : float
        Adam's step size.
    anchor_strength : float
        λ.
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
def _forget_kl(
    log_probs: torch.Tensor, keep: torch.Tensor | None, target: torch.Tensor | None
) -> torch.Tensor:
    """Per-sample forget loss: KL to uniform, or to ``target`` when given."""
    return (
        uniform_kl(log_probs, keep) if target is None else target_kl(log_probs, target)
    )


def _mean_forget_loss(
    log_probs_of: LogProbs,
    X: torch.Tensor,
    keep: torch.Tensor | None,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """F on the whole forget set, evaluated in chunks (keeps the graph)."""
    chunks = X.split(_CHUNK)
    targets = (None,) * len(chunks) if target is None else target.split(_CHUNK)
    total = sum(
        _forget_kl(log_probs_of(chunk), keep, chunk_target).sum()
        for chunk, chunk_target in zip(chunks, targets, strict=True)
    )
    return total / len(X)


def _adam(
    params, anchors, forget_loss_of, *, anchor_strength, lr, n_steps, stop_below, bar
):
    """Anchored Adam steps; returns (F at each evaluation, steps, stopped early)."""
    state = AdamState.zeros_like(params)
    curve: list[torch.Tensor] = []
    for step_index in range(n_steps):
        loss = forget_loss_of()
        curve.append(loss.detach())
        grads = torch.autograd.grad(loss, params, materialize_grads=True)
        if stop_below >= 0:
            with torch.no_grad():
                gradient = stationarity(params, grads, anchors, anchor_strength)
            if float(gradient) <= stop_below:
                return curve, step_index, True
        anchored_adam_step(
            params, grads, anchors, state, lr=lr, anchor_strength=anchor_strength
        )
        if bar is not None:
            bar.update(1)
    return curve, n_steps, False


def _lbfgs(
    params, anchors, forget_loss_of, *, anchor_strength, n_steps, stop_below, bar
):
    """torch's L-BFGS with a strong-Wolfe line search on the whole objective.

    Returns (F at each evaluation, iterations, stopped early: gradient ∞-norm
    at most ``stop_below``, or no more progress).
    """
    if n_steps == 0 or not params:
        return [], 0, False
    max_eval = 4 * n_steps  # the line search rarely needs more than 2 a step
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=n_steps,
        max_eval=max_eval,
        # scipy's default; torch's 100 would keep 200 copies of the weights
        history_size=10,
        line_search_fn="strong_wolfe",
        tolerance_grad=stop_below,
    )
    curve: list[torch.Tensor] = []

    def objective() -> torch.Tensor:  # the line search needs the whole objective
        optimizer.zero_grad(set_to_none=False)
        loss = forget_loss_of()
        loss.backward()
        for p in params:  # a parameter the forward pass does not reach (an
            if p.grad is None:  # auxiliary head off in eval mode) has none
                p.grad = torch.zeros_like(p)
        # the anchor's value and gradient λ(θ − θ₀) in closed form, off the graph
        with torch.no_grad():
            diffs = torch._foreach_sub(params, anchors)
            penalty = torch.stack(torch._foreach_norm(diffs)).square().sum() / 2
            torch._foreach_add_([p.grad for p in params], diffs, alpha=anchor_strength)
        curve.append(loss.detach())
        return loss.detach() + anchor_strength * penalty

    optimizer.step(objective)
    for p in params:
        p.grad = None
    n_iter = optimizer.state[params[0]]["n_iter"]
    if bar is not None:
        bar.update(n_iter)
    return curve, n_iter, n_iter < n_steps and len(curve) < max_eval


def famr_unlearn(
    module: nn.Module,
    log_probs_of: LogProbs,
    X_forget: torch.Tensor,
    *,
    keep: torch.Tensor | None,
    anchor_strength: float,
    n_steps: int,
    generator: torch.Generator,
    forget_target: str = "uniform",
    solver: str = "lbfgs",
    lr: float = 1e-2,
    batch_size: int | None = None,
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
        Classes the target covers (all when None).
    anchor_strength : float
        λ.
    n_steps : int
        The most iterations (of Adam, or of L-BFGS, each with a line search).
    generator : torch.Generator
        CPU generator for Adam's minibatch indices.
    forget_target : {"uniform", "renormalized"}, default="uniform"
        F's target on the forget set: uniform over the kept classes (the
        paper's), or :func:`renormalized_target` of the model at θ₀ (needs
        some classes dropped from ``keep``, else it is the model itself).
    solver : {"lbfgs", "adam"}, default="lbfgs"
        ``"lbfgs"``: torch's L-BFGS with a strong-Wolfe line search on the
        whole forget set. ``"adam"``: :func:`anchored_adam_step`, with
        minibatches if ``batch_size`` is set.
    lr : float, default=1e-2
        Adam's step size.
    batch_size : int or None, default=None
        Adam only: forget samples per step, drawn with ``generator``; None uses
        the whole forget set every step (the deterministic objective of the bound).
    tol : float or None, default=None
        Stop once the objective's gradient ‖∇F(θ) + λ(θ − θ₀)‖∞ is at most
        ``tol`` · ‖∇F(θ₀)‖∞ (Adam: on the step's samples, before the step);
        None takes all ``n_steps``.
    progress : tqdm bar, optional
        Advanced by the iterations taken.

    Returns
    -------
    record : dict
        ``solver``; ``n_steps`` (the iterations taken) and ``n_evaluations``
        (forward-backward passes over the forget set or a batch); ``converged``
        (stopped before ``n_steps``); ``stationarity`` (‖∇F(θ) + λ(θ − θ₀)‖∞ /
        ‖∇F(θ₀)‖∞ at the end, on the whole forget set); ``forget_loss_initial``
        and ``forget_loss`` (F before and after); ``forget_loss_curve`` (F at
        every evaluation); ``parameter_distance`` (‖θ − θ₀‖);
        ``distance_bound`` (‖∇F(θ₀)‖/λ; infinite when λ = 0) and ``time_s``.
    """
    if forget_target not in ("uniform", "renormalized"):
        raise ValueError(
            f"forget_target must be 'uniform' or 'renormalized', got {forget_target!r}."
        )
    if forget_target == "renormalized" and (keep is None or bool(keep.all())):
        raise ValueError(
            "forget_target='renormalized' needs forgotten classes: use it with "
            "unlearn_classes, not unlearn. With every class kept, its target is "
            "the trained model's own prediction and nothing would be forgotten."
        )
    start = time.perf_counter()
    module.eval()
    params = [p for p in module.parameters() if p.requires_grad]
    anchors = [p.detach().clone() for p in params]
    target = None
    if forget_target == "renormalized":
        with torch.no_grad():
            target = torch.cat(
                [
                    renormalized_target(log_probs_of(c), keep)
                    for c in X_forget.split(_CHUNK)
                ]
            )
    initial = _mean_forget_loss(log_probs_of, X_forget, keep, target)
    grads = torch.autograd.grad(initial, params, materialize_grads=True)
    grad_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    grad_sup = max((float(g.abs().max()) for g in grads), default=0.0)
    stop_below = -1.0 if tol is None else tol * grad_sup
    n = len(X_forget)

    def forget_loss_of() -> torch.Tensor:
        if solver == "lbfgs" or batch_size is None or batch_size >= n:
            return _mean_forget_loss(log_probs_of, X_forget, keep, target)
        idx = torch.randint(n, (batch_size,), generator=generator).to(X_forget.device)
        batch_target = None if target is None else target[idx]
        return _forget_kl(log_probs_of(X_forget[idx]), keep, batch_target).mean()

    if solver == "lbfgs":
        curve, n_iter, converged = _lbfgs(
            params,
            anchors,
            forget_loss_of,
            anchor_strength=anchor_strength,
            n_steps=n_steps,
            stop_below=max(stop_below, 0.0),
            bar=progress,
        )
    else:
        curve, n_iter, converged = _adam(
            params,
            anchors,
            forget_loss_of,
            anchor_strength=anchor_strength,
            lr=lr,
            n_steps=n_steps,
            stop_below=stop_below,
            bar=progress,
        )
    final = _mean_forget_loss(log_probs_of, X_forget, keep, target)
    final_grads = torch.autograd.grad(final, params, materialize_grads=True)
    with torch.no_grad():
        gradient = stationarity(params, final_grads, anchors, anchor_strength)
        distance = parameter_distance(params, anchors)
    bound = float(grad_norm) / anchor_strength if anchor_strength > 0 else math.inf
    return {
        "solver": solver,
        "n_steps": n_iter,
        "n_evaluations": len(curve),
        "converged": converged,
        "stationarity": float(gradient) / max(grad_sup, 1e-30),
        "forget_loss_initial": float(initial.detach()),
        "forget_loss": float(final.detach()),
        "forget_loss_curve": torch.stack(curve).tolist() if curve else [],
        "parameter_distance": float(distance),
        "distance_bound": bound,
        "time_s": time.perf_counter() - start,
    }
