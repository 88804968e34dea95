"""The one place that turns engine calls into background work.

An engine function is plain Python: it takes ``on_event`` and ``cancel`` and knows nothing
about Qt (see engine/core/events.py). :class:`EngineWorker` runs it inside a ``QThread`` and
turns what happens into signals that the GUI thread receives through queued connections,
so widgets are only ever touched in slots on the GUI thread.

The worker object itself stays on the GUI thread; only the call runs on the thread. This
matters with PySide: a plain Python callable (a lambda) connected to a signal runs in the
thread of the *sender's* affinity, so a worker moved to its thread would run lambdas
connected by pages on that thread, touching widgets from the wrong thread.

What the signals carry:

- every engine event becomes ``event(object)``; Progress is throttled to a few per second
  (a training loop can report thousands of batches; the GUI needs ten updates a second);
- the return value becomes ``finished(object)``;
- any exception becomes ``errored(object)`` instead of a thread that dies silently;
- :class:`loupe.engine.core.errors.CancelledError` becomes ``cancelled()``.

Cancellation is cooperative (superqt/labelme pattern): :meth:`EngineWorker.cancel` sets the
engine's ``CancelToken``, which the engine checks per item or batch. Threads are never
terminated: :meth:`WorkerRunner.shutdown` cancels, asks the thread to quit and waits.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, QTimer, Signal, Slot

from loupe.engine.core.errors import CancelledError
from loupe.engine.core.events import CancelToken, Event, ThrottledCallback

log = logging.getLogger(__name__)

# Engine Progress events forwarded per second per task; enough for a smooth bar.
PROGRESS_PER_SECOND = 10.0


class EngineWorker(QObject):
    """Runs ``fn(*args, on_event=..., cancel=..., **kwargs)`` once, on its own thread.

    With ``events=False`` the function is called as ``fn(*args, **kwargs)``: for short
    engine calls that take neither a callback nor a token (loading a model, applying a
    label rule) but must still stay off the GUI thread.
    """

    event = Signal(object)
    finished = Signal(object)
    errored = Signal(object)
    cancelled = Signal()
    # Emitted last, whatever the outcome: the runner uses it to end the thread.
    done = Signal()

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        events: bool = True,
        name: str = "",
    ) -> None:
        super().__init__()
        self._fn = fn
        self._args = args
        self._kwargs = dict(kwargs or {})
        self._events = events
        self.name = name or getattr(fn, "__name__", "work")
        self.token = CancelToken()
        self._forward = ThrottledCallback(self._emit_event, PROGRESS_PER_SECOND)
        self.result: Any = None
        self.error: BaseException | None = None
        self.traceback_text = ""
        self.outcome = "pending"  # pending | running | finished | errored | cancelled

    def cancel(self) -> None:
        """Ask the engine to stop at its next check; safe from any thread."""
        self.token.cancel()

    @property
    def is_cancel_requested(self) -> bool:
        return self.token.cancelled

    def _emit_event(self, event: Event) -> None:
        self.event.emit(event)

    def run(self) -> None:
        """Call the function and report exactly one outcome signal, then ``done``.

        Runs on the worker's thread; only emits signals (queued to the GUI thread)."""
        self.outcome = "running"
        try:
            self.token.raise_if_cancelled()  # cancelled before the thread even started
            if self._events:
                result = self._fn(
                    *self._args, on_event=self._forward, cancel=self.token, **self._kwargs
                )
            else:
                result = self._fn(*self._args, **self._kwargs)
        except CancelledError:
            self.outcome = "cancelled"
            self.cancelled.emit()
        except BaseException as exc:  # noqa: BLE001 - a worker must never die silently
            self.error = exc
            self.traceback_text = traceback.format_exc()
            self.outcome = "errored"
            log.info("worker %s failed: %s", self.name, self.traceback_text)
            self.errored.emit(exc)
        else:
            self.result = result
            self.outcome = "finished"
            self.finished.emit(result)
        finally:
            self.done.emit()


class _CallThread(QThread):
    """A thread whose whole job is one :meth:`EngineWorker.run` call (no event loop)."""

    def __init__(self, worker: EngineWorker) -> None:
        super().__init__()
        self._worker = worker

    def run(self) -> None:
        self._worker.run()


class WorkerRunner(QObject):
    """Starts workers on threads, keeps them alive, and stops them politely.

    PySide deletes a ``QThread`` whose last Python reference goes away, which aborts the
    process with "QThread: Destroyed while thread is still running"; the runner holds
    both the worker and its thread until the thread has really finished.
    """

    # Emitted when the last running worker has ended (used to close the window after a
    # cancel without blocking the GUI thread).
    idle = Signal()
    # Emitted when the number of running workers changes.
    activeChanged = Signal(int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._running: dict[EngineWorker, QThread] = {}

    def start(
        self,
        fn: Callable[..., Any],
        *args: Any,
        events: bool = True,
        name: str = "",
        **kwargs: Any,
    ) -> EngineWorker:
        """Run ``fn`` in a new thread and return its worker.

        The thread starts when control returns to the event loop, so every signal the
        caller connects right after this call is connected before anything is emitted.
        """
        worker = EngineWorker(fn, args, kwargs, events=events, name=name)
        thread = _CallThread(worker)
        thread.setObjectName(f"loupe-{worker.name}")
        thread.finished.connect(self._on_thread_finished)
        self._running[worker] = thread
        QTimer.singleShot(0, self, lambda w=worker: self._launch(w))
        self.activeChanged.emit(len(self._running))
        return worker

    def _launch(self, worker: EngineWorker) -> None:
        thread = self._running.get(worker)
        if thread is not None and not thread.isRunning() and not thread.isFinished():
            thread.start()

    def active(self) -> list[EngineWorker]:
        """Workers whose thread has not finished yet."""
        return list(self._running)

    def cancel_all(self) -> None:
        for worker in list(self._running):
            worker.cancel()

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel every worker, ask each thread to quit and wait for it.

        Returns False if some thread is still running after ``timeout_ms`` (an engine call
        that does not check its token); it is left running, never terminated.
        """
        self.cancel_all()
        ok = True
        for worker, thread in list(self._running.items()):
            if not thread.wait(timeout_ms):
                log.warning("worker %s did not stop within %d ms", worker.name, timeout_ms)
                ok = False
                continue
            self._forget(worker)
        return ok

    @Slot()
    def _on_thread_finished(self) -> None:
        thread = self.sender()
        for worker, candidate in list(self._running.items()):
            if candidate is thread:
                self._forget(worker)

    def _forget(self, worker: EngineWorker) -> None:
        thread = self._running.pop(worker, None)
        if thread is None:
            return
        # The thread has finished: dropping our references (Python owns both objects)
        # now deletes them safely.
        thread.wait()
        self.activeChanged.emit(len(self._running))
        if not self._running:
            self.idle.emit()
