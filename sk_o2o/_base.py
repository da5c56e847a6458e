"""Shared estimator machinery: devices, seeding, progress, history, persistence.

Every sk_o2o estimator derives from :class:`TorchEstimator`. It decides the device
in one place (:func:`resolve_device`), seeds network initialisation without touching
the caller's global random state (:func:`torch_seed_context`), keeps a plottable
``history_``, and makes pickles that load on a machine without the training GPU.
The safe on-disk format (:meth:`TorchEstimator.save` / :func:`load`) is a single
safetensors file: tensors plus a JSON header, read without executing any code.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from tqdm.auto import tqdm

__all__ = [
    "TorchEstimator",
    "autograd_on",
    "check_int",
    "find_stack_level",
    "load",
    "progress_bar",
    "resolve_device",
    "seed_from_random_state",
    "torch_seed_context",
]

FORMAT_VERSION = 1


# --------------------------------------------------------------------------- warnings
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def find_stack_level() -> int:
    """The ``stacklevel`` that attributes a warning to the first caller outside sk_o2o.

    A fixed ``stacklevel`` names the user's line only through one call path; the
    same check reached through ``fit``, ``partial_fit``, a decorator or
    ``sk_o2o.load`` sits at different depths. Counting sk_o2o's own frames (as
    pandas does) names the caller's line, so the warning shows where the user
    can act on it and ``warnings.filterwarnings(module=...)`` sees the caller's
    module.

    Returns
    -------
    stacklevel : int
        To pass as ``warnings.warn(..., stacklevel=find_stack_level())``.

    Examples
    --------
    >>> from sk_o2o._base import find_stack_level
    >>> find_stack_level()  # called from outside sk_o2o: the caller itself
    1
    """
    frame = inspect.currentframe()
    level = 0
    try:
        # This function's frame counts as one, so the first frame outside the
        # package is ``level`` frames above warnings.warn's caller.
        while (
            frame is not None
            and frame.f_code.co_filename.startswith(_PACKAGE_DIR)
            # a module of the package run as a script (python -m
            # sk_o2o.datasets.builder) is the caller: above it is runpy
            and frame.f_globals.get("__name__") != "__main__"
        ):
            frame = frame.f_back
            level += 1
    finally:
        del frame
    return level


# --------------------------------------------------------------------------- validation
def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int, or a TypeError/ValueError naming ``name``.

    Refuses booleans and anything that is not an integer, and values below
    ``minimum``.

    Examples
    --------
    >>> from sk_o2o._base import check_int
    >>> check_int(3, "n_steps", 1)
    3
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


# --------------------------------------------------------------------------- devices
def resolve_device(device: str | torch.device, *, fallback_to_cpu: bool = False):
    """Turn a ``device`` parameter into a :class:`torch.device`.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device
        ``"auto"`` picks CUDA when available, else the CPU.
    fallback_to_cpu : bool, default=False
        Return the CPU (with a warning) instead of raising when the requested CUDA
        device is missing. Used when unpickling a model trained on a GPU.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If ``device`` is not a recognised option, or names a CUDA device that this
        machine does not have.

    Examples
    --------
    >>> from sk_o2o._base import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(
            f"device must be a string such as 'auto', 'cpu' or 'cuda:0', "
            f"got {type(device).__name__}."
        )
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"device={device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'."
        ) from exc
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(
            f"device={device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'."
        )
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = dev.index or 0
    if index >= n_gpus:
        message = (
            f"device={device!r} was requested but this machine has "
            f"{n_gpus} CUDA device(s); use device='auto' or 'cpu'."
        )
        if fallback_to_cpu:
            warnings.warn(
                message + " Loading on the CPU instead.", stacklevel=find_stack_level()
            )
            return torch.device("cpu")
        raise ValueError(message)
    return dev


# --------------------------------------------------------------------------- seeding
def seed_from_random_state(random_state) -> int:
    """Draw a torch seed from a scikit-learn ``random_state`` parameter."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


# torch's global generators are one per process: two fits in threads (joblib's
# threading backend, a ThreadPoolExecutor) would reseed them under each other and
# take each other's draws, and one would "restore" the other's seeded state. Every
# sk_o2o block that seeds or draws from them holds this lock (reentrant: a seeded
# block may call another).
_GLOBAL_RNG_LOCK = threading.RLock()


def _new_lock_in_forked_child() -> None:
    # A child forked while another thread held the lock would inherit it held,
    # by a thread that does not exist there, and block at its first seeded fit.
    global _GLOBAL_RNG_LOCK
    _GLOBAL_RNG_LOCK = threading.RLock()


os.register_at_fork(after_in_child=_new_lock_in_forked_child)


@contextlib.contextmanager
def torch_seed_context(seed: int) -> Iterator[None]:
    """Seed torch's global generators inside the block, restoring them afterwards.

    Network constructors draw their initial weights from the global CPU generator;
    this keeps ``random_state`` reproducible without changing the caller's random
    streams. CUDA generators are seeded (and restored) only where CUDA is already
    initialised: ``torch.manual_seed`` would reseed them for good, and forking them
    would initialise CUDA for a CPU-only fit. The block holds a process-wide lock,
    so seeded blocks in several threads run one at a time.

    Parameters
    ----------
    seed : int
        The seed of the block's draws.

    Examples
    --------
    >>> import torch
    >>> from sk_o2o._base import torch_seed_context
    >>> with torch_seed_context(0):
    ...     a = torch.rand(2)
    >>> with torch_seed_context(0):
    ...     b = torch.rand(2)
    >>> bool((a == b).all())
    True
    """
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed_all(seed)
        yield


def autograd_on(method: Callable) -> Callable:
    """Run a training method with autograd on, whatever the caller's mode.

    A ``fit`` called under ``torch.no_grad()`` or ``torch.inference_mode()``
    (common around evaluation code) would otherwise build networks and batches
    that autograd cannot differentiate.

    Parameters
    ----------
    method : callable
        The method to wrap.

    Returns
    -------
    wrapped : callable
        ``method``, run under ``torch.inference_mode(False)`` and
        ``torch.enable_grad()``.
    """

    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            return method(*args, **kwargs)

    return wrapped


def progress_bar(total: int, *, verbose: int | bool, desc: str, leave: bool = False):
    """A tqdm bar that is silent unless ``verbose``.

    Bars vanish when done unless ``leave``: a loop of short ``partial_fit`` calls
    would otherwise print one finished bar per call.
    """
    return tqdm(total=total, disable=not verbose, desc=desc, leave=leave)


# --------------------------------------------------------------------------- base
class TorchEstimator(BaseEstimator):
    """Base class for sk_o2o estimators whose fitted state lives in torch objects.

    Subclasses list, in ``_device_attributes``, the fitted attributes that hold
    tensors (objects with a ``to(device)`` method whose pickles are CPU-only). The
    base class moves them to the estimator's device after unpickling and implements
    the safe persistence format: subclasses give their fitted state through
    ``_get_state_tensors`` and ``_get_json_state``, and take it back in
    ``_set_state(state, tensors)``. It also seeds the fitted ``generator_`` from
    ``random_state`` (``_seed_generator``), from which every later random draw
    comes, and puts the attributes back when a call fails
    (``_restore_on_error``).
    """

    _device_attributes: ClassVar[tuple[str, ...]] = ()

    # The parameters every sk_o2o estimator has; subclasses add theirs.
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # -- randomness: one torch generator per fitted estimator, seeded once
    def _seed_generator(self) -> int:
        """Seed ``generator_`` from ``random_state``; returns the seed drawn.

        The seed also seeds the initial weights (:func:`torch_seed_context`).
        ``generator_`` then draws every batch, noise and sub-seed, so that a fitted
        estimator continues one reproducible stream across calls and pickles.
        """
        seed = seed_from_random_state(self.random_state)
        self.generator_ = torch.Generator().manual_seed(seed)
        return seed

    def _draw_seed(self) -> int:
        """A seed for what has its own generator (an env, a skorch fit)."""
        return int(torch.randint(2**31 - 1, (), generator=self.generator_))

    # -- failures: a failed call leaves the estimator as it was
    @contextlib.contextmanager
    def _restore_on_error(self) -> Iterator[None]:
        """Restore the attributes (and any state edited in place) on an error.

        Every estimator edits two attributes in place rather than replacing
        them: ``generator_`` (each draw advances it) and ``history_`` (records
        are appended); both are put back here. A subclass names its own such
        state in :meth:`_snapshot_in_place_state`.
        """
        saved = self.__dict__.copy()
        generator, history = saved.get("generator_"), saved.get("history_")
        generator_state = None if generator is None else generator.get_state()
        n_records = None if history is None else len(history)
        restore_in_place = self._snapshot_in_place_state()
        try:
            yield
        except BaseException:
            if generator is not None:
                generator.set_state(generator_state)
            if history is not None:
                del history[n_records:]
            if restore_in_place is not None:
                restore_in_place()
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _snapshot_in_place_state(self) -> Callable[[], None] | None:
        """What a failed call could change in place, and how to put it back."""
        return None

    # -- pickling: fitted torch state is pickled on the CPU (see the attributes'
    # own __reduce__) and moved back to the requested device if it exists here.
    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        present = [a for a in self._device_attributes if hasattr(self, a)]
        if present:
            device = resolve_device(self.device, fallback_to_cpu=True)
            for name in present:
                getattr(self, name).to(device)
            self.device_ = device

    # -- safe persistence
    def save(self, path: str | os.PathLike) -> None:
        """Save the fitted model to a safetensors file that loads without pickle.

        The file holds the network weights (and an RL policy's normalisation
        statistics) as tensors, and the parameters, the fitted metadata and
        ``history_`` (and an unlearner's ``unlearning_history_``) as JSON.
        Loading it with :func:`sk_o2o.load` never executes code from the file.
        Optimiser states are not saved, nor is an RL policy's training buffer:
        ``partial_fit`` after loading continues from the weights with fresh
        optimisers (a policy's buffer then starts with the new transitions).
        Use pickle or joblib to keep everything.

        Parameters
        ----------
        path : str or os.PathLike
            Destination file, conventionally ending in ``.safetensors``.

        Raises
        ------
        TypeError
            If a parameter holds something the format cannot store as a plain
            value, in particular a model: an unlearner whose ``estimator`` is
            not None (a skorch net, a ``FrozenEstimator`` or a torch module)
            cannot be saved this way. Use pickle or joblib for it.
        sklearn.exceptions.NotFittedError
            If the estimator is not fitted.
        """
        from safetensors.torch import save_file
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        tensors = {
            "generator_state": self.generator_.get_state(),
            **self._get_state_tensors(),
        }
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        state = {
            "n_features_in_": self.n_features_in_,
            "history_": self.history_,
            **self._get_json_state(),
        }
        if hasattr(self, "feature_names_in_"):
            state["feature_names_in_"] = list(self.feature_names_in_)
        folder = os.path.dirname(os.path.abspath(os.fspath(path)))
        if not os.path.isdir(folder):  # else safetensors names its temporary file
            raise FileNotFoundError(
                f"cannot save to {os.fspath(path)!r}: the folder {folder!r} does "
                "not exist."
            )
        header = {
            "format_version": FORMAT_VERSION,
            "sk_o2o_version": _package_version(),
            "class": type(self).__name__,
            "params": _to_json(self.get_params(deep=False), "params"),
            "state": _to_json(state, "state"),
        }
        save_file(tensors, os.fspath(path), metadata={"sk_o2o": json.dumps(header)})

    def _set_common_state(
        self, state: Mapping[str, Any], tensors: dict[str, torch.Tensor]
    ) -> None:
        """Load what :meth:`save` stores for every estimator (before ``_set_state``)."""
        self.generator_ = torch.Generator()
        self.generator_.set_state(tensors["generator_state"])
        self.n_features_in_ = int(state["n_features_in_"])
        self.history_ = list(state["history_"])
        if "feature_names_in_" in state:
            self.feature_names_in_ = np.asarray(
                state["feature_names_in_"], dtype=object
            )

    # Each estimator's own fitted state (the generator, n_features_in_,
    # feature_names_in_ and history_ are saved and loaded above).
    def _get_state_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _get_json_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_state(self, state: Mapping[str, Any], tensors: dict[str, torch.Tensor]):
        raise NotImplementedError


def _to_json(obj: Any, where: str = "") -> Any:
    """Convert parameters and fitted metadata to JSON-compatible values.

    ``where`` names the value in the error, e.g. ``params['random_state']``.
    """
    if isinstance(obj, Mapping):
        return {str(k): _to_json(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, tuple):  # tagged, so parameters load back unchanged
        return {"__tuple__": [_to_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_to_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, torch.Tensor):  # accepted wherever arrays are; loads as one
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biuf":  # tagged, so parameters load back unchanged
            return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
        return _to_json(obj.tolist(), where)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.device):
        return {"__device__": str(obj)}
    if hasattr(obj, "low") and hasattr(obj, "high"):  # a gymnasium Box
        low, high = np.asarray(obj.low), np.asarray(obj.high)
        return {"__box__": [low.tolist(), high.tolist()], "dtype": low.dtype.str}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "get_params") or isinstance(obj, torch.nn.Module):
        raise TypeError(
            f"cannot store {where} (a {type(obj).__name__}) in the safe format: "
            "it holds a model, and the safe format stores parameters as plain "
            "values only (the unlearners' built-in MLP is estimator=None). Use "
            "pickle or joblib for this model."
        )
    raise TypeError(
        f"cannot store {where} (a {type(obj).__name__}) in the safe format; "
        "set it to a plain value (an int, float, str, bool, None or a list of "
        "them) or use pickle or joblib for this model."
    )


def _from_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tuple__"}:
            return tuple(_from_json(v) for v in obj["__tuple__"])
        if set(obj) == {"__ndarray__", "dtype"}:
            return np.asarray(obj["__ndarray__"], dtype=np.dtype(obj["dtype"]))
        if set(obj) == {"__device__"}:
            return torch.device(obj["__device__"])
        if set(obj) == {"__box__", "dtype"}:
            return _box(*obj["__box__"], dtype=np.dtype(obj["dtype"]))
        return {k: _from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    return obj


def _box(low: list, high: list, dtype: np.dtype):
    """A gymnasium Box from stored bounds; the bounds alone without gymnasium."""
    low, high = np.asarray(low, dtype), np.asarray(high, dtype)
    try:
        from gymnasium.spaces import Box
    except ImportError:  # pragma: no cover - depends on the install
        return (low, high)
    return Box(low, high, dtype=dtype)


def _registry() -> dict[str, type[TorchEstimator]]:
    from sk_o2o.rl.estimators import FamO2OPolicy, IQLPolicy, TD3BCPolicy
    from sk_o2o.unlearning import estimators as unlearners

    classes = [FamO2OPolicy, IQLPolicy, TD3BCPolicy]
    classes += [getattr(unlearners, name) for name in unlearners.__all__]
    return {cls.__name__: cls for cls in classes}


def load(
    path: str | os.PathLike, *, device: str | torch.device | None = None
) -> TorchEstimator:
    """Load a model written by ``estimator.save(path)``.

    Only sk_o2o estimator classes can be named in the file, and the file is read
    with safetensors: no code from the file is executed.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :meth:`TorchEstimator.save`.
    device : str or torch.device, optional
        Override the saved ``device`` parameter (e.g. ``"cpu"`` for a model trained
        with ``device="cuda"``). By default the saved device is used when present,
        else the CPU with a warning.

    Returns
    -------
    estimator : TorchEstimator
        The fitted estimator.

    Examples
    --------
    >>> import os, tempfile
    >>> from sk_o2o import IQLPolicy, load
    >>> from sk_o2o.datasets import load_dataset
    >>> data = load_dataset("pendulum-medium-replay-v0")
    >>> policy = IQLPolicy(n_steps=10, hidden_sizes=(32, 32), random_state=0)
    >>> policy = policy.fit(data)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "policy.safetensors")
    ...     policy.save(path)
    ...     loaded = load(path, device="cpu")
    >>> X = data.observations[:5]
    >>> bool((loaded.predict(X) == policy.predict(X)).all())
    True
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as error:
        raise ValueError(
            f"{os.fspath(path)!r} is not a safetensors file ({error}); load reads "
            "files written by save. A pickled model loads with pickle or joblib, "
            "from a source you trust."
        ) from error
    name = os.fspath(path)
    if "sk_o2o" not in metadata:
        raise ValueError(f"{name!r} is not an sk_o2o model file.")
    try:
        header = _from_json(json.loads(metadata["sk_o2o"]))
    # JSON errors, and tagged values (arrays, dtypes, devices) that do not decode
    except (ValueError, TypeError, KeyError, RuntimeError, RecursionError) as error:
        raise ValueError(f"{name!r} has a damaged sk_o2o header ({error}).") from None
    if not isinstance(header, dict) or not isinstance(header.get("params"), dict):
        raise ValueError(f"{name!r} has a damaged sk_o2o header (no parameters).")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"unsupported sk_o2o model format {header.get('format_version')!r}."
        )
    registry = _registry()
    if header.get("class") not in registry:
        raise ValueError(
            f"unknown estimator class {header.get('class')!r} in {name!r}."
        )
    try:
        estimator = registry[header["class"]](**header["params"])
    except TypeError as error:  # a parameter the class does not have
        raise ValueError(
            f"the parameters in {name!r} do not fit {header['class']}: {error}."
        ) from None
    if device is not None:
        estimator.set_params(device=device)
    try:
        estimator._validate_params()  # values as fit would check them
    except ValueError as error:
        raise ValueError(f"the parameters in {name!r} are invalid: {error}") from None
    try:
        estimator._set_common_state(header["state"], tensors)
        estimator._set_state(header["state"], tensors)
    except RuntimeError as error:  # load_state_dict: missing, unexpected or reshaped
        written_by = header.get("sk_o2o_version", "an earlier version")
        raise ValueError(
            f"the weights in {name!r} do not fit {header['class']} of "
            f"sk_o2o {_package_version()} (the file was written by sk_o2o "
            f"{written_by}); refit the model and save it again."
        ) from error
    except (KeyError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(
            f"{name!r} has a damaged fitted state for {header['class']} "
            f"({type(error).__name__}: {error})."
        ) from None
    return estimator


def _package_version() -> str:
    from sk_o2o import __version__

    return __version__
