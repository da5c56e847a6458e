"""The unlearning methods FAMR is compared with, as functions of a torch module.

Each edits the trained module in place from tensors on its device and returns a
small dict of what it did; the estimators in :mod:`sk_o2o.unlearning.estimators`
give them the scikit-learn API. Retraining on the retain set, the gold standard,
needs no function here: it is the classifier's own ``fit``.

- Fine-tuning on the retain set (forgetting by catastrophic interference).
- NegGrad: gradient ascent on the forget set's cross-entropy; NegGrad+ (Kurmanji
  et al., 2023) adds descent on the retain set: α·CE(retain) − (1 − α)·CE(forget).
- Random relabelling: fine-tuning on the forget set with random wrong labels.
- SSD, Selective Synaptic Dampening (Foster et al., 2024): parameters much more
  important to the forget set than to all the data are scaled down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from sk_o2o.rl._torch_utils import step

__all__ = [
    "diagonal_fisher",
    "finetune",
    "neggrad",
    "neggrad_loss",
    "random_label",
    "random_wrong_labels",
    "selective_dampening_",
    "ssd",
]

LogProbs = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- losses
def neggrad_loss(
    forget_log_probs: torch.Tensor,
    forget_labels: torch.Tensor,
    retain_log_probs: torch.Tensor | None = None,
    retain_labels: torch.Tensor | None = None,
    retain_weight: float = 0.0,
) -> torch.Tensor:
    """α·CE(retain) − (1 − α)·CE(forget); α = 0 (no retain batch) is NegGrad.

    Parameters
    ----------
    forget_log_probs : tensor of shape (n_forget, n_classes)
        Log-probabilities of a forget batch.
    forget_labels : tensor of shape (n_forget,)
        Its labels (class indices).
    retain_log_probs : tensor of shape (n_retain, n_classes), optional
        Log-probabilities of a retain batch (NegGrad+).
    retain_labels : tensor of shape (n_retain,), optional
        Its labels.
    retain_weight : float, default=0.0
        α.

    Returns
    -------
    loss : tensor
        The scalar loss to minimise.
    """
    loss = -(1.0 - retain_weight) * F.nll_loss(forget_log_probs, forget_labels)
    if retain_log_probs is not None and retain_weight > 0:
        loss = loss + retain_weight * F.nll_loss(retain_log_probs, retain_labels)
    return loss


def random_wrong_labels(
    labels: torch.Tensor | None,
    n: int,
    allowed: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Labels drawn uniformly from ``allowed`` classes, never the true label.

    ``allowed`` is a bool mask over the classes (the classes kept, when whole
    classes are forgotten); without ``labels`` any allowed class is drawn.

    Parameters
    ----------
    labels : tensor of shape (n,) or None
        The true labels (class indices), never drawn.
    n : int
        Number of labels to draw.
    allowed : bool tensor of shape (n_classes,)
        The classes that may be drawn.
    generator : torch.Generator
        CPU generator of the draws.

    Returns
    -------
    labels : tensor of shape (n,), dtype long
        The drawn labels, on the CPU.
    """
    candidates = allowed.cpu().nonzero().flatten()
    if labels is None:
        return candidates[torch.randint(len(candidates), (n,), generator=generator)]
    # Draw rank r among the candidates other than the true label, then skip over
    # the true label's own position.
    is_true = candidates[None, :] == labels.cpu()[:, None]
    has_true = is_true.any(1)
    true_position = is_true.int().argmax(1)
    rank = torch.rand(n, generator=generator, dtype=torch.float32) * (
        len(candidates) - has_true.long()
    )
    rank = rank.long()
    rank += (has_true & (rank >= true_position)).long()
    return candidates[rank]


# --------------------------------------------------------------------------- loops
def _shuffled_batches(
    n: int,
    n_epochs: int,
    batch_size: int,
    generator: torch.Generator,
    progress: tqdm | None = None,
) -> Iterator[torch.Tensor]:
    """Shuffled minibatch indices for ``n_epochs`` passes over ``n`` rows.

    All are drawn before the first is used (the generator's draws do not depend
    on the training); ``progress``, a tqdm bar, counts them.
    """
    batches = [
        idx
        for _ in range(n_epochs)
        for idx in torch.randperm(n, generator=generator).split(batch_size)
    ]
    if progress is not None:
        progress.reset(total=len(batches))
    for idx in batches:
        yield idx
        if progress is not None:
            progress.update()


def _sample(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(n, (size,), generator=generator)


def finetune(
    module: nn.Module,
    log_probs_of: LogProbs,
    X_retain: torch.Tensor,
    y_retain: torch.Tensor,
    *,
    n_epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    progress: tqdm | None = None,
) -> dict[str, float]:
    """Adam on the retain set's cross-entropy for ``n_epochs`` epochs.

    Parameters
    ----------
    module : torch.nn.Module
        The trained classifier, edited in place.
    log_probs_of : callable
        Inputs → log-probabilities through ``module``.
    X_retain : tensor of shape (n_retain, ...)
        The retain set, on the module's device.
    y_retain : tensor of shape (n_retain,)
        Its labels (class indices).
    n_epochs : int
        Passes over the retain set.
    lr : float
        Adam's learning rate.
    batch_size : int
        Samples per step.
    generator : torch.Generator
        CPU generator of the shuffles.
    progress : tqdm bar, optional
        Counts the steps.

    Returns
    -------
    record : dict
        ``retain_loss``: the last batch's cross-entropy.
    """
    module.train()
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    loss = torch.zeros((), dtype=torch.float32)
    for idx in _shuffled_batches(
        len(X_retain), n_epochs, batch_size, generator, progress
    ):
        idx = idx.to(X_retain.device)
        loss = F.nll_loss(log_probs_of(X_retain[idx]), y_retain[idx])
        step(optimizer, loss)
    return {"retain_loss": float(loss.detach())}


def neggrad(
    module: nn.Module,
    log_probs_of: LogProbs,
    X_forget: torch.Tensor,
    y_forget: torch.Tensor,
    X_retain: torch.Tensor | None,
    y_retain: torch.Tensor | None,
    *,
    retain_weight: float,
    n_epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    progress: tqdm | None = None,
) -> dict[str, float]:
    """NegGrad (``retain_weight=0``) or NegGrad+: epochs over the forget set.

    NegGrad+ pairs each forget batch with a retain batch of the same size.

    Parameters
    ----------
    module : torch.nn.Module
        The trained classifier, edited in place.
    log_probs_of : callable
        Inputs → log-probabilities through ``module``.
    X_forget : tensor of shape (n_forget, ...)
        The forget set, on the module's device.
    y_forget : tensor of shape (n_forget,)
        Its labels (class indices).
    X_retain : tensor of shape (n_retain, ...) or None
        The retain set (NegGrad+ only).
    y_retain : tensor of shape (n_retain,) or None
        Its labels.
    retain_weight : float
        α of :func:`neggrad_loss`; 0 is NegGrad.
    n_epochs : int
        Passes over the forget set.
    lr : float
        Adam's learning rate.
    batch_size : int
        Forget samples per step.
    generator : torch.Generator
        CPU generator of the shuffles and retain batches.
    progress : tqdm bar, optional
        Counts the steps.

    Returns
    -------
    record : dict
        ``loss``: the last step's loss.
    """
    module.train()
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    loss = torch.zeros((), dtype=torch.float32)
    use_retain = retain_weight > 0 and X_retain is not None
    for idx in _shuffled_batches(
        len(X_forget), n_epochs, batch_size, generator, progress
    ):
        idx = idx.to(X_forget.device)
        retain_lp = retain_y = None
        if use_retain:
            r = _sample(len(X_retain), len(idx), generator).to(X_retain.device)
            retain_lp, retain_y = log_probs_of(X_retain[r]), y_retain[r]
        loss = neggrad_loss(
            log_probs_of(X_forget[idx]),
            y_forget[idx],
            retain_lp,
            retain_y,
            retain_weight,
        )
        step(optimizer, loss)
    return {"loss": float(loss.detach())}


def random_label(
    module: nn.Module,
    log_probs_of: LogProbs,
    X_forget: torch.Tensor,
    y_forget: torch.Tensor | None,
    allowed: torch.Tensor,
    X_retain: torch.Tensor | None,
    y_retain: torch.Tensor | None,
    *,
    n_epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
    progress: tqdm | None = None,
) -> dict[str, float]:
    """Fine-tune on the forget set with fixed random wrong labels.

    The labels are drawn once among the ``allowed`` classes. With a retain set,
    each forget batch is paired with a retain batch and their losses added.

    Parameters
    ----------
    module : torch.nn.Module
        The trained classifier, edited in place.
    log_probs_of : callable
        Inputs → log-probabilities through ``module``.
    X_forget : tensor of shape (n_forget, ...)
        The forget set, on the module's device.
    y_forget : tensor of shape (n_forget,) or None
        Its true labels, never drawn (see :func:`random_wrong_labels`); None
        draws any allowed class.
    allowed : bool tensor of shape (n_classes,)
        The classes the wrong labels are drawn from.
    X_retain : tensor of shape (n_retain, ...) or None
        The retain set, if any.
    y_retain : tensor of shape (n_retain,) or None
        Its labels.
    n_epochs : int
        Passes over the forget set.
    lr : float
        Adam's learning rate.
    batch_size : int
        Forget samples per step.
    generator : torch.Generator
        CPU generator of the labels, shuffles and retain batches.
    progress : tqdm bar, optional
        Counts the steps.

    Returns
    -------
    record : dict
        ``loss``: the last step's loss.
    """
    module.train()
    labels = random_wrong_labels(y_forget, len(X_forget), allowed, generator)
    labels = labels.to(X_forget.device)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    loss = torch.zeros((), dtype=torch.float32)
    for idx in _shuffled_batches(
        len(X_forget), n_epochs, batch_size, generator, progress
    ):
        idx = idx.to(X_forget.device)
        loss = F.nll_loss(log_probs_of(X_forget[idx]), labels[idx])
        if X_retain is not None:
            r = _sample(len(X_retain), len(idx), generator).to(X_retain.device)
            loss = loss + F.nll_loss(log_probs_of(X_retain[r]), y_retain[r])
        step(optimizer, loss)
    return {"loss": float(loss.detach())}


# --------------------------------------------------------------------------- SSD
def diagonal_fisher(
    module: nn.Module,
    log_probs_of: LogProbs,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
) -> list[torch.Tensor]:
    """Importance of each parameter: the mean over batches of (∂CE/∂θ)².

    The batch-level diagonal Fisher estimate of the SSD authors' code.

    Parameters
    ----------
    module : torch.nn.Module
        The trained classifier (put in eval mode; not edited).
    log_probs_of : callable
        Inputs → log-probabilities through ``module``.
    X : tensor of shape (n_samples, ...)
        The samples, on the module's device.
    y : tensor of shape (n_samples,)
        Their labels (class indices).
    batch_size : int
        Samples per batch.

    Returns
    -------
    importances : list of tensor
        One per trainable parameter tensor, of its shape.
    """
    module.eval()
    params = [p for p in module.parameters() if p.requires_grad]
    importances = [torch.zeros_like(p) for p in params]
    batches = list(zip(X.split(batch_size), y.split(batch_size), strict=True))
    for xb, yb in batches:
        loss = F.nll_loss(log_probs_of(xb), yb)
        grads = torch.autograd.grad(loss, params, materialize_grads=True)
        torch._foreach_addcmul_(importances, grads, grads)
    torch._foreach_div_(importances, len(batches))
    return importances


@torch.no_grad()
def selective_dampening_(
    params: Sequence[torch.Tensor],
    importance_all: Sequence[torch.Tensor],
    importance_forget: Sequence[torch.Tensor],
    *,
    selection_weight: float,
    dampening_constant: float,
) -> int:
    """SSD's edit: where imp_f > α·imp_D, θ ← θ·min(λ·imp_D/imp_f, 1).

    Parameters
    ----------
    params : sequence of tensor
        θ, edited in place.
    importance_all : sequence of tensor
        imp_D, the importances on all the data.
    importance_forget : sequence of tensor
        imp_f, the importances on the forget set.
    selection_weight : float
        α.
    dampening_constant : float
        λ.

    Returns
    -------
    n_dampened : int
        The number of parameters (coordinates) dampened.
    """
    n_selected = 0
    for theta, imp_d, imp_f in zip(
        params, importance_all, importance_forget, strict=True
    ):
        selected = imp_f > selection_weight * imp_d
        factor = (dampening_constant * imp_d / imp_f.clamp_min(1e-30)).clamp_max(1.0)
        theta.mul_(torch.where(selected, factor, torch.ones_like(factor)))
        n_selected += int(selected.sum())
    return n_selected


def ssd(
    module: nn.Module,
    log_probs_of: LogProbs,
    X_forget: torch.Tensor,
    y_forget: torch.Tensor,
    X_all: torch.Tensor,
    y_all: torch.Tensor,
    *,
    selection_weight: float,
    dampening_constant: float,
    batch_size: int,
) -> dict[str, float]:
    """Selective Synaptic Dampening with importances on all data and on D_f.

    Parameters
    ----------
    module : torch.nn.Module
        The trained classifier, edited in place.
    log_probs_of : callable
        Inputs → log-probabilities through ``module``.
    X_forget : tensor of shape (n_forget, ...)
        The forget set, on the module's device.
    y_forget : tensor of shape (n_forget,)
        Its labels (class indices).
    X_all : tensor of shape (n_samples, ...)
        All the training data (retain and forget).
    y_all : tensor of shape (n_samples,)
        Its labels.
    selection_weight : float
        α of :func:`selective_dampening_`.
    dampening_constant : float
        λ of :func:`selective_dampening_`.
    batch_size : int
        Samples per batch of the importance estimates.

    Returns
    -------
    record : dict
        ``n_dampened``: the number of parameters dampened.
    """
    importance_all = diagonal_fisher(
        module, log_probs_of, X_all, y_all, batch_size=batch_size
    )
    importance_forget = diagonal_fisher(
        module, log_probs_of, X_forget, y_forget, batch_size=batch_size
    )
    params = [p for p in module.parameters() if p.requires_grad]
    n_selected = selective_dampening_(
        params,
        importance_all,
        importance_forget,
        selection_weight=selection_weight,
        dampening_constant=dampening_constant,
    )
    return {"n_dampened": n_selected}
