"""Training: fastai's fine_tune / fit_one_cycle as a GUI-free engine (issue 3).

Public names: TrainConfig, TrainResult, train, resume, lr_find, evaluate. Importing this
package imports torch (the functions share names with their modules ``lr_find`` and
``evaluate``, so they are bound eagerly here; a lazy lookup would be shadowed by the
submodule once it is imported). Code that must stay light imports
``engine.training.config`` alone.
"""

from __future__ import annotations

from engine.training.config import TrainConfig
from engine.training.evaluate import EvaluationResult, evaluate
from engine.training.lr_find import LRFindResult, lr_find
from engine.training.trainer import TrainResult, resume, train

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
