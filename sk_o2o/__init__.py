"""sk_o2o: "train once" offline and offline-to-online RL as scikit-learn estimators.

Estimators follow the scikit-learn API (``fit``/``partial_fit``/``predict``,
``clone``, ``GridSearchCV``, pickling) and train with PyTorch on the CPU or a GPU.
"""

from sk_o2o._base import load
from sk_o2o.rl.estimators import FamO2OPolicy, IQLPolicy, TD3BCPolicy

__all__ = ["FamO2OPolicy", "IQLPolicy", "TD3BCPolicy", "load"]
__version__ = "0.1.0.dev0"
