"""One model, many workers: serialize the calls that hook into the model.

Activation maps (torchcam) and the analysis pass register hooks on the model's layers
for the duration of a call; two such calls on the same model from two threads would
read each other's activations. The Predict, Results and Models pages share one
Predictor through the context, so their workers take this per-predictor lock around
every model call. Waiting happens on the worker's thread, never the GUI thread, and a
cancelled worker stops waiting.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def _lock_for(predictor: Any) -> threading.Lock:
    with _GUARD:
        lock = _LOCKS.get(predictor)
        if lock is None:
            lock = _LOCKS[predictor] = threading.Lock()
        return lock


@contextmanager
def using_model(predictor: Any, cancel: Any = None) -> Iterator[None]:
    """Hold the predictor's lock; re-check ``cancel`` every 100 ms while waiting."""
    lock = _lock_for(predictor)
    while not lock.acquire(timeout=0.1):
        if cancel is not None:
            cancel.raise_if_cancelled()
    try:
        yield
    finally:
        lock.release()
