"""The one way the desktop runs work off the GUI thread: ``runner.start(fn, ...)``.

An engine function is plain Python: it takes ``on_event`` and ``cancel`` and knows nothing
about Qt (see engine/core/events.py). :meth:`TaskRunner.start` runs it on its own
``QThread`` as a :class:`Task` and wires what happens back to the GUI thread, in the
manner of superqt's ``create_worker(fn, _connect={"returned": ..., "errored": ...})``
and Orange's ``ConcurrentWidgetMixin.start()``::

    runner.start(analyse, model, images, owner=self, kind="analysis",
                 on_result=self._show, on_event=self._progress,
                 error_title="Analysis failed")

- **Results and errors are wired once, here.** ``on_result(result)``, ``on_error(exc)``,
  ``on_cancel()``, ``on_event(event)`` and ``on_done(task)`` (after any outcome) run on
  the GUI thread. Without ``on_error`` an exception is shown in the app's words by the
  runner's error reporter (AppContext sets it: its ``report_error`` -> the main window's
  dialog), titled ``error_title``. Nothing dies silently on a thread.
- **A newer task of the same kind supersedes the older one.** Starting a task of
  (``owner``, ``kind``) cancels the one still running and *drops* it: its late result,
  error, events and ``done`` are never delivered. Pages need no "is this still my
  worker?" checks. ``supersede=False`` is for one-off work (saving a file) that must not
  cancel an earlier one.
- **The runner knows what runs.** :meth:`TaskRunner.is_running` / :meth:`TaskRunner.current`
  answer "is a task of kind X running?", so pages keep no current-worker attributes.
  :class:`TaskState` is the task's state: PENDING -> RUNNING -> FINISHED | FAILED |
  CANCELLED. It changes on the GUI thread, together with the callbacks, so a page never
  sees a finished state whose result it has not been handed yet.

Threading: the Task object stays on the GUI thread; only ``fn`` runs on the thread and
reports through queued signals. (With PySide a Python callable connected to a signal runs
in the thread of the *sender's* affinity, so a task moved to its thread would run the
pages' lambdas there, touching widgets from the wrong thread.) Progress events are
throttled to a few per second; a training loop reports thousands of batches.

Cancellation is cooperative (superqt/labelme pattern): :meth:`Task.cancel` sets the
engine's ``CancelToken``, which the engine checks per item or batch, and
:class:`loupe.engine.core.errors.CancelledError` becomes CANCELLED. Threads are never
terminated: :meth:`TaskRunner.shutdown` cancels, waits for each thread to end, and
delivers what is left.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from enum import Enum
from typing import Any

import shiboken6
from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, QThread, QTimer, Signal, Slot

from loupe.engine.core.errors import CancelledError
from loupe.engine.core.events import CancelToken, Event, ThrottledCallback

log = logging.getLogger(__name__)

# Engine Progress events forwarded per second per task; enough for a smooth bar.
PROGRESS_PER_SECOND = 10.0

ErrorReporter = Callable[[str, BaseException], None]


class TaskState(Enum):
    """Where a task is. The last three are final."""

    PENDING = "pending"  # created; its thread starts when control returns to the loop
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped by its token, or superseded (result dropped)

    @property
    def active(self) -> bool:
        return self in (TaskState.PENDING, TaskState.RUNNING)


def ignore_error(exc: BaseException) -> None:
    """``on_error`` for work whose failure the page shows some other way (or not at all:
    the device probe keeps its defaults). The traceback is in the log already."""


class Task(QObject):
    """One call of ``fn`` on its own thread; the handle a page gets from ``start``.

    Signals (GUI thread, never for a dropped task): ``event(object)``,
    ``finished(result)``, ``errored(exc)``, ``cancelled()``, then ``done()`` after any of
    the three; ``stateChanged(TaskState)``.
    """

    event = Signal(object)
    finished = Signal(object)
    errored = Signal(object)
    cancelled = Signal()
    done = Signal()
    stateChanged = Signal(object)

    # From the task's thread to the GUI thread (queued).
    _began = Signal()
    _emitted = Signal(object)
    _ended = Signal(object, object)  # final TaskState, result or exception

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        kind: str = "",
        owner: object = None,
        events: bool = True,
    ) -> None:
        super().__init__()
        self._fn = fn
        self._args = args
        self._kwargs = dict(kwargs or {})
        self._events = events
        self.kind = kind or getattr(fn, "__name__", "task")
        self.owner = owner
        self.token = CancelToken()
        self.result: Any = None
        self.error: BaseException | None = None
        self.traceback_text = ""
        self.dropped = False
        self._state = TaskState.PENDING
        self._lock = threading.Lock()
        self._forward = ThrottledCallback(self._emitted.emit, PROGRESS_PER_SECOND)
        self._callbacks: dict[str, Callable[..., Any] | None] = {}
        queued = Qt.ConnectionType.QueuedConnection
        self._began.connect(self._on_began, queued)
        self._emitted.connect(self._on_emitted, queued)
        self._ended.connect(self._on_ended, queued)

    @property
    def state(self) -> TaskState:
        return self._state

    @property
    def is_cancel_requested(self) -> bool:
        return self.token.cancelled

    def cancel(self) -> None:
        """Ask the function to stop at its next check; its CANCELLED is still delivered.
        Safe from any thread."""
        self.token.cancel()

    def drop(self) -> None:
        """Cancel, and deliver nothing more: the runner calls this when a newer task of
        the same kind starts. The state still ends CANCELLED once the thread is done."""
        self.dropped = True
        self.token.cancel()

    def wire(self, **callbacks: Callable[..., Any] | None) -> None:
        """Callbacks (``result``, ``error``, ``cancel``, ``event``, ``done``) called on the
        GUI thread before the matching signal; released when the task ends. They are
        skipped once the owner (a page, a widget) has been deleted."""
        self._callbacks.update(callbacks)

    def _owner_gone(self) -> bool:
        return isinstance(self.owner, QObject) and not shiboken6.isValid(self.owner)

    # The task's thread --------------------------------------------------------------
    def run(self) -> None:
        """Call the function and report one outcome. Runs on the task's thread; touches
        no widget, only emits queued signals."""
        with self._lock:
            if self._state is TaskState.PENDING:
                self._state = TaskState.RUNNING
        self._began.emit()
        try:
            self.token.raise_if_cancelled()  # cancelled before the thread even started
            if self._events:
                result = self._fn(
                    *self._args, on_event=self._forward, cancel=self.token, **self._kwargs
                )
            else:
                result = self._fn(*self._args, **self._kwargs)
        except CancelledError:
            self._ended.emit(TaskState.CANCELLED, None)
        except BaseException as exc:  # noqa: BLE001 - a task must never die silently
            self.traceback_text = traceback.format_exc()
            log.info("task %s failed: %s", self.kind, self.traceback_text)
            self._ended.emit(TaskState.FAILED, exc)
        else:
            self._ended.emit(TaskState.FINISHED, result)

    # The GUI thread -----------------------------------------------------------------
    @Slot()
    def _on_began(self) -> None:
        if not self.dropped and self._state is TaskState.RUNNING:
            self.stateChanged.emit(TaskState.RUNNING)

    @Slot(object)
    def _on_emitted(self, event: Event) -> None:
        if self.dropped:
            return
        callback = self._callbacks.get("event")
        if callback is not None and not self._owner_gone():
            callback(event)
        self.event.emit(event)

    @Slot(object, object)
    def _on_ended(self, state: TaskState, payload: Any) -> None:
        callbacks, self._callbacks = self._callbacks, {}
        with self._lock:
            self._state = TaskState.CANCELLED if self.dropped else state
        if self.dropped:
            return  # superseded: a late result is not news
        if state is TaskState.FINISHED:
            self.result = payload
        elif state is TaskState.FAILED:
            self.error = payload
        if self._owner_gone():
            callbacks = {}
        try:
            self.stateChanged.emit(state)
            if state is TaskState.FINISHED:
                self._call(callbacks.get("result"), payload)
                self.finished.emit(payload)
            elif state is TaskState.FAILED:
                self._call(callbacks.get("error"), payload)
                self.errored.emit(payload)
            else:
                self._call(callbacks.get("cancel"))
                self.cancelled.emit()
        finally:  # a page that raised in its result slot must still leave "busy"
            self._call(callbacks.get("done"), self)
            self.done.emit()

    @staticmethod
    def _call(callback: Callable[..., Any] | None, *args: Any) -> None:
        if callback is not None:
            callback(*args)


class _CallThread(QThread):
    """A thread whose whole job is one :meth:`Task.run` call (no event loop)."""

    def __init__(self, task: Task) -> None:
        super().__init__()
        self._task = task

    def run(self) -> None:
        self._task.run()


class TaskRunner(QObject):
    """Starts tasks on threads, supersedes older ones of a kind, and stops them politely.

    PySide deletes a ``QThread`` whose last Python reference goes away, which aborts the
    process with "QThread: Destroyed while thread is still running"; the runner holds
    both the task and its thread until the thread has really finished.
    """

    # Emitted when the last running task has ended (used to close the window after a
    # cancel without blocking the GUI thread).
    idle = Signal()
    # Emitted when the number of running tasks changes.
    activeChanged = Signal(int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._running: dict[Task, QThread] = {}
        self._report: ErrorReporter | None = None

    def set_error_reporter(self, report: ErrorReporter) -> None:
        """What a task without ``on_error`` does with its exception: ``report(title, exc)``."""
        self._report = report

    def report_error(self, title: str, exc: BaseException) -> None:
        if self._report is None:
            log.warning("%s: %r", title, exc)
        else:
            self._report(title, exc)

    def start(
        self,
        fn: Callable[..., Any],
        *args: Any,
        kind: str = "",
        owner: object = None,
        supersede: bool = True,
        events: bool = True,
        on_result: Callable[[Any], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
        on_cancel: Callable[[], Any] | None = None,
        on_event: Callable[[Any], Any] | None = None,
        on_done: Callable[[Task], Any] | None = None,
        error_title: str = "",
        **kwargs: Any,
    ) -> Task:
        """Run ``fn(*args, on_event=..., cancel=..., **kwargs)`` on a new thread.

        ``events=False`` calls ``fn(*args, **kwargs)``: short engine calls that take
        neither a callback nor a token (loading a model) but must stay off the GUI
        thread. ``kind`` (default: the function's name) with ``owner`` (the page) is what
        a newer task supersedes; the keyword names above are the runner's, never passed
        to ``fn``. The thread starts when control returns to the event loop, so signals a
        caller connects right after this call are connected before anything is emitted.
        """
        task = Task(fn, args, kwargs, kind=kind, owner=owner, events=events)
        if supersede:
            self.drop(task.kind, owner=owner)
        if on_error is None:
            title = error_title or f"{task.kind.replace('-', ' ').capitalize()} failed"
            on_error = lambda exc: self.report_error(title, exc)  # noqa: E731
        task.wire(result=on_result, error=on_error, cancel=on_cancel, event=on_event,
                  done=on_done)
        thread = _CallThread(task)
        thread.setObjectName(f"loupe-{task.kind}")
        thread.finished.connect(self._on_thread_finished)
        self._running[task] = thread
        QTimer.singleShot(0, self, lambda t=task: self._launch(t))
        self.activeChanged.emit(len(self._running))
        return task

    def _launch(self, task: Task) -> None:
        thread = self._running.get(task)
        if thread is not None and not thread.isRunning() and not thread.isFinished():
            thread.start()

    # What runs ----------------------------------------------------------------------
    def active(self) -> list[Task]:
        """Tasks whose thread has not finished yet (dropped ones included)."""
        return list(self._running)

    def tasks(self, kind: str, owner: object = None) -> list[Task]:
        """The pending or running tasks of ``kind`` for ``owner``, oldest first (dropped
        ones left out: they are over as far as the owner is concerned)."""
        return [t for t in self._running
                if t.kind == kind and t.owner is owner and t.state.active and not t.dropped]

    def current(self, kind: str, owner: object = None) -> Task | None:
        """The newest pending or running task of ``kind`` for ``owner`` (None: none)."""
        tasks = self.tasks(kind, owner)
        return tasks[-1] if tasks else None

    def is_running(self, kind: str, owner: object = None) -> bool:
        """Whether a task of ``kind`` for ``owner`` is pending or running (its result not
        yet delivered)."""
        return bool(self.tasks(kind, owner))

    # Stopping -----------------------------------------------------------------------
    def cancel(self, kind: str, owner: object = None) -> bool:
        """Cancel the tasks of ``kind`` (a Stop button): their CANCELLED is delivered."""
        tasks = self.tasks(kind, owner)
        for task in tasks:
            task.cancel()
        return bool(tasks)

    def drop(self, kind: str, owner: object = None) -> None:
        """Cancel the tasks of ``kind`` and deliver nothing more from them."""
        for task in self.tasks(kind, owner):
            task.drop()

    def cancel_all(self) -> None:
        for task in list(self._running):
            task.cancel()

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel every task, wait for each thread, and deliver the outcomes.

        Returns False if some thread is still running after ``timeout_ms`` (an engine call
        that does not check its token); it is left running, never terminated.
        """
        self.cancel_all()
        ok = True
        for task, thread in list(self._running.items()):
            if not thread.isRunning() and not thread.isFinished():
                thread.start()  # still pending: it sees its token at once and ends CANCELLED
            if not thread.wait(timeout_ms):
                log.warning("task %s did not stop within %d ms", task.kind, timeout_ms)
                ok = False
                continue
            # Its queued outcome: so states are final once shutdown returns.
            QCoreApplication.sendPostedEvents(task, QEvent.Type.MetaCall)
            self._forget(task)
        return ok

    @Slot()
    def _on_thread_finished(self) -> None:
        thread = self.sender()
        for task, candidate in list(self._running.items()):
            if candidate is thread:
                self._forget(task)

    def _forget(self, task: Task) -> None:
        thread = self._running.pop(task, None)
        if thread is None:
            return
        # The thread has finished: dropping our references (Python owns both objects)
        # now deletes them safely.
        thread.wait()
        self.activeChanged.emit(len(self._running))
        if not self._running:
            self.idle.emit()
