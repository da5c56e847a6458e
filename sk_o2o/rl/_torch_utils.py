"""Small torch helpers shared by the algorithm cores."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = [
    "Exchange",
    "FusedAdam",
    "SecondThread",
    "make_adam",
    "move_module_and_optimizers",
    "reduce_to_cpu",
    "second_thread",
    "soft_update",
    "step",
]


class FusedAdam(torch.optim.Adam):
    """torch's fused Adam, stepped without its per-step Python bookkeeping.

    ``torch.optim.Adam(fused=True).step`` re-collects the gradients and moment
    buffers parameter by parameter, groups them by device and dtype, and launches
    the kernel once per parameter group: a few hundred microseconds a step on a
    CPU, as much as the kernel itself. Here the moment buffers and step counters
    are collected once, after the first step has created them, and every later step
    is one ``torch._fused_adam_`` call per set of hyperparameters (groups with the
    same learning rate share a call). The kernel and its arguments are torch's own,
    so the update is bit for bit the same, and parameters without a gradient are
    skipped as torch skips them. Anything off the fast path (a closure, AMSGrad, a
    tensor learning rate, hooks) goes through ``torch.optim.Adam.step``.

    :meth:`step_groups` steps some of the parameter groups only, so that two
    threads can each step the networks of their half of a gradient step.
    """

    def __init__(self, params: Any, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._fast: list[tuple[dict, list, list, list, list]] | None = None

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._fast = None  # the moment buffers are new tensors

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        self._fast = None

    @property
    def ready(self) -> bool:
        """Whether steps take the fast path (from the second step on)."""
        return self._fast is not None

    def _fast_path_ok(self) -> bool:
        return not (
            self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
        ) and all(
            group["fused"]
            and not group["amsgrad"]
            # torch 2.5 has no decoupled_weight_decay key (AdamW was separate)
            and not group.get("decoupled_weight_decay", False)
            and not group["differentiable"]
            and isinstance(group["lr"], float)
            and all(len(self.state[p]) for p in group["params"])
            for group in self.param_groups
        )

    def _collect(self) -> None:
        self._fast = []
        for group in self.param_groups:
            states = [self.state[p] for p in group["params"]]
            self._fast.append(
                (
                    group,
                    list(group["params"]),
                    [state["exp_avg"] for state in states],
                    [state["exp_avg_sq"] for state in states],
                    [state["step"] for state in states],
                )
            )

    def _fast_step(self, entries: Iterable[tuple[dict, list, list, list, list]]):
        calls: dict[tuple, list[list]] = {}
        for group, params, exp_avgs, exp_avg_sqs, steps in entries:
            beta1, beta2 = group["betas"]
            key = (float(group["lr"]), beta1, beta2, group["weight_decay"])
            key += (group["eps"], group["maximize"])
            lists = calls.setdefault(key, [[], [], [], [], []])
            grads = [p.grad for p in params]
            rows = (params, grads, exp_avgs, exp_avg_sqs, steps)
            if any(g is None for g in grads):  # as torch: no gradient, no step
                keep = [i for i, g in enumerate(grads) if g is not None]
                rows = tuple([row[i] for i in keep] for row in rows)
            for acc, row in zip(lists, rows, strict=True):
                acc += row
        for (lr, beta1, beta2, weight_decay, eps, maximize), lists in calls.items():
            params, grads, exp_avgs, exp_avg_sqs, steps = lists
            if not params:
                continue
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                steps,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=weight_decay,
                eps=eps,
                amsgrad=False,
                maximize=maximize,
            )

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if self._fast is None or closure is not None:
            loss = super().step(closure)
            if self._fast is None and self._fast_path_ok():
                self._collect()
            return loss
        self._fast_step(self._fast)
        return None

    @torch.no_grad()
    def step_groups(self, indices: Iterable[int]) -> None:
        """Step the parameter groups at ``indices`` only; needs :attr:`ready`."""
        if self._fast is None:
            raise RuntimeError("step_groups needs one full step() first.")
        self._fast_step(self._fast[i] for i in indices)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self._fast is None or not set_to_none:
            return super().zero_grad(set_to_none)
        for _, params, *_ in self._fast:
            for p in params:
                p.grad = None


def make_adam(
    groups: Iterable[tuple[Iterable[nn.Parameter], float]], device: torch.device
) -> torch.optim.Adam:
    """One Adam over parameter groups with their own learning rates.

    The fused kernel updates every tensor in one pass instead of one op per tensor.
    """
    return FusedAdam(
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


# ----------------------------------------------------------------- two CPU threads
class Exchange:
    """Named values handed between the two halves of one gradient step.

    ``get`` waits for the other thread's ``put``; after ``fail`` (either side raised)
    every pending and later ``get`` raises, so neither thread waits forever.
    """

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._finished = threading.Event()

    def put(self, key: str, value: Any) -> None:
        with self._cond:
            self._values[key] = value
            self._cond.notify_all()

    def get(self, key: str) -> Any:
        with self._cond:
            while key not in self._values and self._error is None:
                self._cond.wait()
            if key in self._values:
                return self._values.pop(key)
            raise RuntimeError("the other half of the gradient step failed") from (
                self._error
            )

    def fail(self, error: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = error
            self._cond.notify_all()

    def finish(self) -> None:
        """Called by the worker when its half has returned or raised."""
        self._finished.set()

    def wait_finished(self) -> None:
        self._finished.wait()


class SecondThread:
    """A worker thread that runs one half of each gradient step.

    Splitting a step into two independent halves, each on its own share of the
    cores (one core each with two torch threads), replaces hundreds of OpenMP
    fork-joins per step (one per kernel, each a barrier that waits for the slower
    core) by two hand-offs.
    It is faster on an idle machine and far more robust on a shared one, where one
    descheduled OpenMP thread stalls every kernel of the step.
    """

    def __init__(self, n_threads: int) -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._loop, args=(n_threads,), name="sk_o2o-half-step", daemon=True
        )
        self._thread.start()

    def _loop(self, n_threads: int) -> None:
        torch.set_num_threads(n_threads)  # this thread's OpenMP/MKL setting
        while (task := self._tasks.get()) is not None:
            fn, exchange = task
            try:
                exchange.put("done", fn())
            except BaseException as error:  # handed to the main thread
                exchange.fail(error)
            finally:
                exchange.finish()

    def start(self, fn: Callable[[], Any], exchange: Exchange) -> None:
        """Run ``fn`` on the worker; its result arrives as ``exchange.get("done")``."""
        self._tasks.put((fn, exchange))

    def close(self) -> None:
        self._tasks.put(None)
        self._thread.join()


@contextlib.contextmanager
def second_thread(device: torch.device) -> Iterator[SecondThread | None]:
    """While training on a CPU with torch set to two or more threads, split them.

    Yields a :class:`SecondThread` holding half of torch's threads and leaves the
    other half to the calling thread (torch's thread setting is restored on exit);
    yields ``None`` on other devices or with one thread, where steps stay whole.
    """
    n_threads = torch.get_num_threads()
    if torch.device(device).type != "cpu" or n_threads < 2:
        yield None
        return
    torch.set_num_threads(n_threads - n_threads // 2)
    worker = SecondThread(n_threads // 2)
    try:
        yield worker
    finally:
        worker.close()
        torch.set_num_threads(n_threads)
