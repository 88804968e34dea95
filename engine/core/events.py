"""Progress events and cooperative cancellation.

The engine reports through one callback that takes these small frozen dataclasses; it
never prints and never assumes a GUI. The CLI turns them into lines, the desktop worker
forwards them as Qt signals. Cancellation is cooperative: long loops call
``cancel.raise_if_cancelled()`` once per item or batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loupe.engine.core.errors import CancelledError


@dataclass(frozen=True)
class Started:
    """A long task began. ``info`` carries task-specific facts (device, arch, weights)."""

    task: str
    total: int | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``task`` are finished (files, batches, images)."""

    task: str
    done: int
    total: int
    message: str = ""
    epoch: int | None = None
    loss: float | None = None
    eta_seconds: float | None = None


@dataclass(frozen=True)
class EpochEnded:
    """One epoch finished; ``metrics`` holds train_loss, valid_loss, error_rate, ..."""

    epoch: int
    total_epochs: int
    phase: str
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class WarningEvent:
    """Something the user should know that does not stop the task.

    ``code`` is stable for programs (``random-init``, ``overfitting``, ``imbalance``,
    ``oom-retry``, ...); ``message`` is for people.
    """

    code: str
    message: str


@dataclass(frozen=True)
class Finished:
    task: str
    result: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    task: str
    message: str
    advice: str = ""


@dataclass(frozen=True)
class Cancelled:
    task: str
    message: str = "cancelled by the user"


Event = Started | Progress | EpochEnded | WarningEvent | Finished | Failed | Cancelled
EventCallback = Callable[[Event], None]


def ignore_event(event: Event) -> None:
    """Default callback: drop the event."""


class CancelToken:
    """A thread-safe flag a worker checks; set from any thread with :meth:`cancel`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError()


class ThrottledCallback:
    """Pass every event through, but at most ``max_per_second`` Progress events.

    The last Progress of a task (``done == total``) always passes, so a bar ends full.
    """

    def __init__(self, callback: EventCallback, max_per_second: float = 10.0) -> None:
        self._callback = callback
        self._interval = 1.0 / max_per_second
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Progress) and event.done < event.total:
            now = time.monotonic()
            with self._lock:
                last = self._last.get(event.task, float("-inf"))
                if now - last < self._interval:
                    return
                self._last[event.task] = now
        self._callback(event)
