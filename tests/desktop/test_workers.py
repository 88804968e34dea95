"""EngineWorker/WorkerRunner: events, results, errors and cancel reach the GUI thread."""

from __future__ import annotations

import threading
import time

import pytest

from loupe.desktop.workers import PROGRESS_PER_SECOND, WorkerRunner
from loupe.engine.core.errors import DatasetError
from loupe.engine.core.events import EpochEnded, Finished, Progress, Started


@pytest.fixture
def runner(qapp):
    runner = WorkerRunner()
    yield runner
    assert runner.shutdown(10_000)


def fake_engine_call(n, *, on_event, cancel):
    """Looks like an engine function: events, cancel checks, a return value."""
    on_event(Started("fake", total=n))
    for i in range(n):
        cancel.raise_if_cancelled()
        on_event(Progress("fake", i + 1, n))
    on_event(EpochEnded(1, 1, "unfrozen", {"train_loss": 0.5}))
    on_event(Finished("fake"))
    return {"worker_thread": threading.current_thread().name, "n": n}


def test_events_and_result_arrive_on_the_gui_thread(qtbot, runner):
    seen: list[tuple[str, object]] = []
    worker = runner.start(fake_engine_call, 5, name="fake")
    worker.event.connect(lambda e: seen.append((threading.current_thread().name, e)))
    with qtbot.waitSignal(worker.finished, timeout=10_000) as blocker:
        pass
    qtbot.waitUntil(lambda: not runner.active(), timeout=5_000)
    result = blocker.args[0]
    assert result["n"] == 5
    assert result["worker_thread"] != threading.main_thread().name
    kinds = [type(e).__name__ for _, e in seen]
    assert kinds[0] == "Started" and kinds[-1] == "Finished" and "EpochEnded" in kinds
    # Lambdas connected by pages must run on the GUI thread, never the worker's.
    assert {thread for thread, _ in seen} == {threading.main_thread().name}
    assert worker.outcome == "finished"


def test_progress_is_throttled_but_the_last_one_passes(qtbot, runner):
    progress: list[Progress] = []

    def chatty(*, on_event, cancel):
        start = time.monotonic()
        for i in range(20_000):
            on_event(Progress("chatty", i + 1, 20_000))
        return time.monotonic() - start

    worker = runner.start(chatty)
    worker.event.connect(lambda e: progress.append(e) if isinstance(e, Progress) else None)
    with qtbot.waitSignal(worker.finished, timeout=20_000) as blocker:
        pass
    elapsed = blocker.args[0]
    assert progress[-1].done == 20_000
    assert len(progress) <= PROGRESS_PER_SECOND * (elapsed + 1) + 1
    assert len(progress) < 20_000


def test_engine_error_becomes_errored_signal(qtbot, runner):
    def broken(*, on_event, cancel):
        raise DatasetError("folder not found: /nowhere")

    worker = runner.start(broken)
    with qtbot.waitSignal(worker.errored, timeout=10_000) as blocker:
        pass
    assert isinstance(blocker.args[0], DatasetError)
    assert "/nowhere" in str(blocker.args[0])
    assert "DatasetError" in worker.traceback_text
    assert worker.outcome == "errored"


def test_cancel_stops_a_running_call(qtbot, runner):
    started = threading.Event()

    def endless(*, on_event, cancel):
        started.set()
        while True:
            cancel.raise_if_cancelled()
            time.sleep(0.005)

    worker = runner.start(endless)
    qtbot.waitUntil(started.is_set, timeout=5_000)
    with qtbot.waitSignal(worker.cancelled, timeout=10_000):
        worker.cancel()
    qtbot.waitUntil(lambda: not runner.active(), timeout=5_000)
    assert worker.outcome == "cancelled"


def test_plain_call_without_event_arguments(qtbot, runner):
    worker = runner.start(sorted, [3, 1, 2], events=False)
    with qtbot.waitSignal(worker.finished, timeout=10_000) as blocker:
        pass
    assert blocker.args[0] == [1, 2, 3]


def test_shutdown_cancels_and_waits_for_every_thread(qtbot, runner):
    stopped = []
    running = []

    def endless(*, on_event, cancel):
        running.append(True)
        try:
            while True:
                cancel.raise_if_cancelled()
                time.sleep(0.005)
        finally:
            stopped.append(True)

    workers = [runner.start(endless) for _ in range(3)]
    assert len(runner.active()) == 3
    qtbot.waitUntil(lambda: len(running) == 3, timeout=5_000)
    assert runner.shutdown(10_000)
    assert stopped == [True, True, True]
    assert runner.active() == []
    assert all(w.is_cancel_requested for w in workers)


def test_idle_is_emitted_when_the_last_worker_ends(qtbot, runner):
    with qtbot.waitSignal(runner.idle, timeout=10_000):
        runner.start(fake_engine_call, 2)
    assert runner.active() == []


def test_a_worker_cancelled_before_its_thread_starts_never_runs(qtbot, runner):
    ran = []
    worker = runner.start(lambda *, on_event, cancel: ran.append(True))
    worker.cancel()
    with qtbot.waitSignal(worker.cancelled, timeout=10_000):
        pass
    assert ran == []
