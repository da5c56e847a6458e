"""The classifier an unlearner wraps: a skorch net around a torch module.

Every unlearner trains and edits a :class:`skorch.NeuralNetClassifier`. Users pass
their own, a bare :class:`torch.nn.Module` (wrapped with the defaults below), or
nothing (the built-in MLP). The unlearning algorithms then work on the module's
log-probabilities, whatever the module outputs: :func:`log_probabilities` reads the
net's criterion to know whether the module returns logits or probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from skorch import NeuralNetClassifier
from torch import nn

from sk_o2o.rl.networks import MLP

__all__ = ["MLPClassifierModule", "log_probabilities", "make_classifier_net"]


class MLPClassifierModule(nn.Module):
    """A ReLU multi-layer perceptron returning class logits.

    Parameters
    ----------
    n_features : int, default=1
        Input size (set from the data by the unlearners).
    n_classes : int, default=2
        Number of classes (set from the data by the unlearners).
    hidden_sizes : sequence of int, default=(100,)
        Hidden layer widths, as in scikit-learn's ``MLPClassifier``.
    """

    def __init__(
        self,
        n_features: int = 1,
        n_classes: int = 2,
        hidden_sizes: Sequence[int] = (100,),
    ):
        super().__init__()
        self.net = MLP(n_features, tuple(hidden_sizes), n_classes)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Class logits of the rows of ``X``.

        Parameters
        ----------
        X : tensor of shape (n_samples, n_features)
            Input rows.

        Returns
        -------
        logits : tensor of shape (n_samples, n_classes)
            Unnormalised class scores.
        """
        return self.net(X)


def make_classifier_net(
    module: type[nn.Module] | nn.Module = MLPClassifierModule, **params: Any
) -> NeuralNetClassifier:
    """A skorch classifier with the defaults the unlearners use.

    Cross-entropy on logits, Adam with learning rate 1e-3, 30 epochs of batches of
    64, no internal validation split, silent. Any of these, and the module's own
    parameters (``module__hidden_sizes=(256, 256)``), can be overridden.

    Parameters
    ----------
    module : torch.nn.Module class or instance, default=MLPClassifierModule
        Returns logits of shape ``(n_samples, n_classes)``.
    **params
        Further :class:`skorch.NeuralNetClassifier` parameters.

    Returns
    -------
    net : skorch.NeuralNetClassifier
        Unfitted.

    Examples
    --------
    >>> from sk_o2o.unlearning import make_classifier_net
    >>> net = make_classifier_net(max_epochs=5, module__hidden_sizes=(32,))
    >>> net.max_epochs
    5
    """
    defaults: dict[str, Any] = {
        "criterion": nn.CrossEntropyLoss,
        "optimizer": torch.optim.Adam,
        "lr": 1e-3,
        "max_epochs": 30,
        "batch_size": 64,
        "train_split": None,
        "iterator_train__shuffle": True,
        "verbose": 0,
    }
    return NeuralNetClassifier(module, **{**defaults, **params})


def log_probabilities(net: NeuralNetClassifier, output: torch.Tensor) -> torch.Tensor:
    """Log class probabilities from the output of ``net.module_``.

    skorch's convention: with ``NLLLoss`` the module returns probabilities; with
    any other criterion (``CrossEntropyLoss``) it returns logits.
    """
    if isinstance(net.criterion_, nn.NLLLoss):
        return torch.log(output.clamp_min(torch.finfo(output.dtype).tiny))
    return torch.log_softmax(output, dim=-1)
