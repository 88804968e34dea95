"""Training: fastai's fine_tune / fit_one_cycle as a GUI-free engine.

Public names: TrainConfig, TrainResult, train, resume, lr_find, LRFindResult, evaluate,
EvaluationResult. They are bound lazily (PEP 562 ``__getattr__``), so importing this
package, or ``loupe.engine.training.config`` alone, does not import torch: the desktop
builds a ``TrainConfig`` on the UI thread before torch is loaded. The functions live in
modules with other names (``trainer``, ``lr_finder``, ``scoring``), so a submodule import
never shadows a function of the same name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loupe.engine.training.config import TrainConfig
    from loupe.engine.training.lr_finder import LRFindResult, lr_find
    from loupe.engine.training.scoring import EvaluationResult, evaluate
    from loupe.engine.training.trainer import TrainResult, resume, train

# public name -> the module (in this package) that defines it
_EXPORTS = {
    "TrainConfig": "config",
    "TrainResult": "trainer",
    "train": "trainer",
    "resume": "trainer",
    "lr_find": "lr_finder",
    "LRFindResult": "lr_finder",
    "evaluate": "scoring",
    "EvaluationResult": "scoring",
}

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "resume",
    "lr_find",
    "LRFindResult",
    "evaluate",
    "EvaluationResult",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # AttributeError lets ``from loupe.engine.training import runs`` find the submodule.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
