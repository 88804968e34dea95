"""Training: fastai's fine_tune / fit_one_cycle as a GUI-free engine (issue 3).

Heavy imports (torch, timm) happen when these names are first used, so importing
``engine.training`` stays cheap for the CLI's ``--help`` and the desktop's first paint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.training.config import TrainConfig

if TYPE_CHECKING:
    from engine.training.evaluate import evaluate
    from engine.training.lr_find import lr_find
    from engine.training.trainer import TrainResult, resume, train

__all__ = ["TrainConfig", "TrainResult", "train", "lr_find", "resume", "evaluate"]

_LAZY = {
    "TrainResult": "engine.training.trainer",
    "train": "engine.training.trainer",
    "resume": "engine.training.trainer",
    "lr_find": "engine.training.lr_find",
    "evaluate": "engine.training.evaluate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine.training' has no attribute {name!r}")
