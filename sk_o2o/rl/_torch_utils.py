"""Small torch helpers shared by the algorithm cores."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = [
    "make_adam",
    "move_module_and_optimizers",
    "reduce_to_cpu",
    "soft_update",
    "step",
]


def make_adam(
    groups: Iterable[tuple[Iterable[nn.Parameter], float]], device: torch.device
) -> torch.optim.Adam:
    """One Adam over parameter groups with their own learning rates.

    The fused kernel updates every tensor in one pass instead of one op per tensor.
    """
    return torch.optim.Adam(
        [{"params": list(params), "lr": lr} for params, lr in groups],
        fused=torch.device(device).type in ("cpu", "cuda"),
    )


def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@torch.no_grad()
def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Polyak averaging: target ← (1 − τ)·target + τ·online."""
    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


def _optimizers(module: nn.Module) -> dict[str, torch.optim.Optimizer]:
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, torch.optim.Optimizer)
    }


def move_module_and_optimizers(module: nn.Module, device: torch.device) -> Any:
    """``module.to(device)`` that also moves the state of its optimisers.

    Parameters are moved in place, so the optimisers keep pointing at them;
    reloading their state dicts casts the moment estimates to the new device.
    """
    optimizers = _optimizers(module)
    states = {name: opt.state_dict() for name, opt in optimizers.items()}
    nn.Module.to(module, device)
    for name, opt in optimizers.items():
        opt.load_state_dict(states[name])
        for group in opt.param_groups:  # the fused kernel needs its device's flag
            group["fused"] = torch.device(device).type in ("cpu", "cuda")
    return module


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def reduce_to_cpu(module: nn.Module) -> tuple:
    """``__reduce__`` for a core: CPU-only pickles rebuilt from the config.

    The core's class must take ``(config, device)`` and keep its config in
    ``self.config``; the pickle holds the config, weights and optimiser states.
    """
    weights = _to_cpu(module.state_dict())
    optim = {name: _to_cpu(o.state_dict()) for name, o in _optimizers(module).items()}
    return (_rebuild, (type(module), module.config, weights, optim))


def _rebuild(cls, config, weights: dict, optim: dict) -> nn.Module:
    module = cls(config, torch.device("cpu"))
    module.load_state_dict(weights)
    for name, opt in _optimizers(module).items():
        opt.load_state_dict(optim[name])
    return module
