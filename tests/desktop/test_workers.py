"""Task/TaskRunner: events, results, errors and cancel reach the GUI thread; one way to
wire them; a newer task of a kind supersedes the older; closing cancels everything."""

from __future__ import annotations

import threading
import time

from loupe.desktop.workers import PROGRESS_PER_SECOND, TaskRunner, TaskState
from loupe.engine.core.errors import DatasetError
from loupe.engine.core.events import EpochEnded, Finished, Progress, Started


def fake_engine_call(n, *, on_event, cancel):
    """Looks like an engine function: events, cancel checks, a return value."""
    on_event(Started("fake", total=n))
    for i in range(n):
        cancel.raise_if_cancelled()
        on_event(Progress("fake", i + 1, n))
    on_event(EpochEnded(1, 1, "unfrozen", {"train_loss": 0.5}))
    on_event(Finished("fake"))
    return {"worker_thread": threading.current_thread().name, "n": n}


def endless(started: threading.Event | None = None):
    """An engine call that runs until cancelled (checking its token, as the engine does)."""

    def call(*, on_event, cancel):
        if started is not None:
            started.set()
        while True:
            cancel.raise_if_cancelled()
            time.sleep(0.005)

    return call


def test_events_and_result_arrive_on_the_gui_thread(qtbot, runner):
    seen: list[tuple[str, object]] = []
    results = []
    task = runner.start(fake_engine_call, 5, kind="fake", on_result=results.append,
                        on_event=lambda e: seen.append((threading.current_thread().name, e)))
    with qtbot.waitSignal(task.finished, timeout=10_000) as blocker:
        pass
    qtbot.waitUntil(lambda: not runner.active(), timeout=5_000)
    result = blocker.args[0]
    assert results == [result] and result["n"] == 5
    assert result["worker_thread"] != threading.main_thread().name
    kinds = [type(e).__name__ for _, e in seen]
    assert kinds[0] == "Started" and kinds[-1] == "Finished" and "EpochEnded" in kinds
    # Callbacks run on the GUI thread, never the task's.
    assert {thread for thread, _ in seen} == {threading.main_thread().name}
    assert task.state is TaskState.FINISHED and task.result is result


def test_progress_is_throttled_but_the_last_one_passes(qtbot, runner):
    progress: list[Progress] = []

    def chatty(*, on_event, cancel):
        start = time.monotonic()
        for i in range(20_000):
            on_event(Progress("chatty", i + 1, 20_000))
        return time.monotonic() - start

    task = runner.start(chatty, on_event=lambda e: progress.append(e))
    with qtbot.waitSignal(task.finished, timeout=20_000) as blocker:
        pass
    elapsed = blocker.args[0]
    assert progress[-1].done == 20_000
    assert len(progress) <= PROGRESS_PER_SECOND * (elapsed + 1) + 1
    assert len(progress) < 20_000


def test_an_error_is_reported_by_default_in_the_apps_words(qtbot, runner):
    reported: list[tuple[str, BaseException]] = []
    runner.set_error_reporter(lambda title, exc: reported.append((title, exc)))

    def broken(*, on_event, cancel):
        raise DatasetError("folder not found: /nowhere")

    task = runner.start(broken, kind="scan", error_title="Cannot read the folder")
    with qtbot.waitSignal(task.errored, timeout=10_000) as blocker:
        pass
    assert isinstance(blocker.args[0], DatasetError)
    assert [(title, str(exc)) for title, exc in reported] == [
        ("Cannot read the folder", "folder not found: /nowhere")]
    assert "DatasetError" in task.traceback_text
    assert task.state is TaskState.FAILED and task.error is blocker.args[0]


def test_on_error_replaces_the_default_report(qtbot, runner):
    reported, handled = [], []
    runner.set_error_reporter(lambda title, exc: reported.append(title))
    task = runner.start(lambda: 1 / 0, events=False, on_error=handled.append)
    with qtbot.waitSignal(task.done, timeout=10_000):
        pass
    assert reported == [] and isinstance(handled[0], ZeroDivisionError)


def test_a_failed_task_shows_the_main_windows_dialog(qtbot, window, messages):
    def broken(*, on_event, cancel):
        raise DatasetError("folder not found: /nowhere")

    task = window.context.runner.start(broken, kind="x", error_title="Cannot read the folder")
    with qtbot.waitSignal(task.done, timeout=10_000):
        pass
    assert ("warning", "Cannot read the folder", "folder not found: /nowhere") in messages.records
    assert "folder not found: /nowhere" in window.statusBar().currentMessage()


def test_a_newer_task_of_the_same_kind_supersedes_the_older(qtbot, runner):
    results: list[str] = []
    events: list[object] = []
    release = threading.Event()
    owner = object()

    def slow(name, *, on_event, cancel):
        release.wait(10)  # does not look at its token until released: it finishes
        on_event(Progress(name, 1, 1))
        return name

    old = runner.start(slow, "old", kind="cell", owner=owner, on_result=results.append,
                       on_event=events.append, on_done=lambda t: results.append("done old"))
    late: list[object] = []
    for signal in (old.finished, old.errored, old.cancelled, old.done, old.event):
        signal.connect(lambda *args: late.append(args))
    qtbot.waitUntil(lambda: old.state is TaskState.RUNNING, timeout=5_000)
    other = runner.start(slow, "other owner", kind="cell", on_result=results.append)
    assert not old.is_cancel_requested  # another owner's task of that kind is its own
    new = runner.start(slow, "new", kind="cell", owner=owner, on_result=results.append)
    assert old.is_cancel_requested and old.dropped
    assert runner.current("cell", owner=owner) is new and runner.is_running("cell", owner)
    release.set()
    qtbot.waitUntil(lambda: not runner.active(), timeout=10_000)
    assert sorted(results) == ["new", "other owner"]  # the old one's result never arrived
    assert late == [] and events == []
    assert old.state is TaskState.CANCELLED and old.result is None
    assert new.state is other.state is TaskState.FINISHED
    assert not runner.is_running("cell", owner=owner)


def test_supersede_false_keeps_the_earlier_task(qtbot, runner):
    release = threading.Event()
    results: list[int] = []

    def save(n, *, on_event, cancel):
        release.wait(10)
        return n

    first = runner.start(save, 1, kind="save", supersede=False, on_result=results.append)
    runner.start(save, 2, kind="save", supersede=False, on_result=results.append)
    assert not first.is_cancel_requested
    release.set()
    qtbot.waitUntil(lambda: not runner.active(), timeout=10_000)
    assert sorted(results) == [1, 2]


def test_states_go_pending_running_then_one_final_state(qtbot, runner):
    started = threading.Event()
    release = threading.Event()

    def waits(*, on_event, cancel):
        started.set()
        release.wait(10)
        return "ok"

    task = runner.start(waits, kind="w")
    changes: list[TaskState] = []
    task.stateChanged.connect(changes.append)
    assert task.state is TaskState.PENDING and task.state.active
    assert runner.is_running("w")  # pending counts: its result is still to come
    qtbot.waitUntil(started.is_set, timeout=5_000)
    assert task.state is TaskState.RUNNING
    release.set()
    with qtbot.waitSignal(task.done, timeout=10_000):
        pass
    assert task.state is TaskState.FINISHED and not task.state.active
    assert changes == [TaskState.RUNNING, TaskState.FINISHED]
    assert not runner.is_running("w") and runner.current("w") is None


def test_the_state_is_final_before_the_result_callback_runs(qtbot, runner):
    seen = []
    task = runner.start(sorted, [2, 1], events=False, kind="sort",
                        on_result=lambda _r: seen.append((task.state, runner.is_running("sort"))))
    with qtbot.waitSignal(task.done, timeout=10_000):
        pass
    assert seen == [(TaskState.FINISHED, False)]


def test_cancel_stops_a_running_call_and_says_so(qtbot, runner):
    started = threading.Event()
    outcomes = []
    task = runner.start(endless(started), kind="loop", on_cancel=lambda: outcomes.append("c"),
                        on_done=lambda t: outcomes.append(t.state))
    qtbot.waitUntil(started.is_set, timeout=5_000)
    with qtbot.waitSignal(task.cancelled, timeout=10_000):
        assert runner.cancel("loop")
    qtbot.waitUntil(lambda: not runner.active(), timeout=5_000)
    assert task.state is TaskState.CANCELLED
    assert outcomes == ["c", TaskState.CANCELLED]
    assert not runner.cancel("loop")  # nothing of that kind runs any more


def test_plain_call_without_event_arguments(qtbot, runner):
    task = runner.start(sorted, [3, 1, 2], events=False)
    with qtbot.waitSignal(task.finished, timeout=10_000) as blocker:
        pass
    assert blocker.args[0] == [1, 2, 3] and task.kind == "sorted"


def test_a_deleted_owner_gets_no_callbacks(qtbot, runner):
    from PySide6.QtWidgets import QLabel

    release = threading.Event()
    label = QLabel()
    called = []
    task = runner.start(lambda: release.wait(10), events=False, owner=label, kind="k",
                        on_result=lambda _r: called.append(label.text()))
    label.deleteLater()
    qtbot.waitUntil(lambda: _deleted(label), timeout=5_000)
    release.set()
    with qtbot.waitSignal(task.done, timeout=10_000):
        pass
    assert called == [] and task.state is TaskState.FINISHED


def _deleted(obj) -> bool:
    import shiboken6

    return not shiboken6.isValid(obj)


def test_shutdown_cancels_and_waits_for_every_thread(qtbot, runner):
    stopped = []
    running = []

    def loop(*, on_event, cancel):
        running.append(True)
        try:
            while True:
                cancel.raise_if_cancelled()
                time.sleep(0.005)
        finally:
            stopped.append(True)

    tasks = [runner.start(loop, supersede=False) for _ in range(3)]
    assert len(runner.active()) == 3
    qtbot.waitUntil(lambda: len(running) == 3, timeout=5_000)
    pending = runner.start(loop, kind="never-started")  # its thread has not started yet
    assert runner.shutdown(10_000)
    assert stopped == [True, True, True]
    assert runner.active() == []
    assert all(t.is_cancel_requested for t in tasks)
    assert {t.state for t in (*tasks, pending)} == {TaskState.CANCELLED}


def test_idle_is_emitted_when_the_last_task_ends(qtbot, runner):
    with qtbot.waitSignal(runner.idle, timeout=10_000):
        runner.start(fake_engine_call, 2)
    assert runner.active() == []


def test_a_task_cancelled_before_its_thread_starts_never_runs(qtbot, runner):
    ran = []
    task = runner.start(lambda *, on_event, cancel: ran.append(True))
    task.cancel()
    with qtbot.waitSignal(task.cancelled, timeout=10_000):
        pass
    assert ran == [] and task.state is TaskState.CANCELLED


def test_closing_the_window_cancels_every_task_and_waits(qtbot, window, qtlog):
    started = [threading.Event() for _ in range(2)]
    runner: TaskRunner = window.context.runner
    tasks = [runner.start(endless(event), kind=f"loop{i}", owner=window)
             for i, event in enumerate(started)]
    qtbot.waitUntil(lambda: all(e.is_set() for e in started), timeout=10_000)
    window.close()
    assert window.isVisible()  # not yet: the window stays responsive while they stop
    assert all(t.is_cancel_requested for t in tasks)
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=30_000)
    assert runner.active() == []
    assert [t.state for t in tasks] == [TaskState.CANCELLED, TaskState.CANCELLED]
    assert not any("Destroyed while thread" in r.message for r in qtlog.records)
