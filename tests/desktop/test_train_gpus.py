"""The Train page's "all N GPUs": offered from the device probe, run as real child
processes (torch.distributed, gloo on the CPU here: the page's call is wrapped only to put
the config on the CPU), whose events fill the live table; Stop ends them without blocking
the GUI thread. A tiny folder, timm's test_resnet at 32 px, keeps each run to seconds."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer

from loupe.desktop.pages.train_settings import TrainSettings
from loupe.desktop.workers import TaskState
from loupe.engine.core.events import Started
from loupe.engine.training import launch
from tests.desktop.views_fixtures import make_dataset


@pytest.fixture
def gpus(request, monkeypatch) -> dict:
    """``launch.gpu_count`` answers ``request.param`` (2 unless parametrized) and records
    the thread of each call. Patched before the window exists, so its probe sees it."""
    state: dict = {"count": getattr(request, "param", 2), "threads": []}

    def fake_gpu_count() -> int:
        state["threads"].append(threading.current_thread())
        return state["count"]

    monkeypatch.setattr(launch, "gpu_count", fake_gpu_count)
    return state


@pytest.fixture
def page(gpus, window, qtbot, tmp_path):
    """The Train page of a shown window, on a 40-image folder, once the probe answered."""
    window.context.mark_engine_ready()
    with qtbot.waitSignal(window.context.dataPrepared, timeout=60_000):
        window.context.open_folder(make_dataset(tmp_path / "pets", per_class=20))
    window.tabs.setCurrentWidget(window.train_page)
    qtbot.waitUntil(lambda: bool(gpus["threads"]), timeout=60_000)
    qtbot.waitUntil(lambda: not window.context.runner.active(), timeout=60_000)
    return window.train_page


def _on_cpu(monkeypatch) -> list[int]:
    """The page's distributed call, with the config moved to the CPU (one thread per
    process): the real launch otherwise. Returns the process counts it was asked for."""
    asked: list[int] = []
    real = launch.train_distributed

    def train_distributed_on_cpu(prepared, config, nproc, **kwargs):
        asked.append(nproc)
        return real(prepared, dataclasses.replace(config, device="cpu", threads=1), nproc,
                    **kwargs)

    monkeypatch.setattr(launch, "train_distributed", train_distributed_on_cpu)
    return asked


def _tiny_run(settings: TrainSettings, epochs: int) -> None:
    """What a user sets in the form for a seconds-long run, and "all 2 GPUs"."""
    settings.arch.setEditText("test_resnet")
    settings.pretrained.setCurrentIndex(settings.pretrained.findData("none"))
    settings.size.setValue(32)
    settings.batch_size.setValue(8)
    settings.epochs.setValue(epochs)
    settings.freeze_epochs.setValue(0)
    settings.gpus.setCurrentIndex(settings.gpus.findData(2))


@pytest.mark.parametrize("gpus", [1, 2], indirect=True)
def test_the_gpus_choice_is_offered_only_with_two_or_more_gpus(page, gpus):
    settings = page.settings
    assert len(gpus["threads"]) == 1  # probed once, in a worker
    assert gpus["threads"][0] is not threading.main_thread()
    items = [settings.gpus.itemText(i) for i in range(settings.gpus.count())]
    if gpus["count"] == 1:
        assert items == ["1 GPU"] and not settings.gpus.isVisibleTo(settings)
        assert settings.processes() == 1
        return
    assert items == ["1 GPU", "all 2 GPUs"] and settings.gpus.isVisibleTo(settings)
    assert settings.gpus.currentIndex() == 0 and settings.processes() == 1  # the default
    settings.gpus.setCurrentIndex(1)
    assert settings.processes() == 2
    settings.device.setCurrentIndex(settings.device.findData("cpu"))
    assert settings.processes() == 1 and not settings.gpus.isEnabled()  # one CPU process


def test_the_gpus_choice_is_saved_with_the_project_settings(qtbot):
    settings = TrainSettings()
    qtbot.addWidget(settings)
    settings.set_gpu_count(4)
    settings.gpus.setCurrentIndex(1)
    saved = {**settings.config().to_json(), "gpus": settings.gpus_setting()}
    assert saved["gpus"] == "all"
    again = TrainSettings()  # the project reopened: its settings come before the probe
    qtbot.addWidget(again)
    again.apply_saved(saved)
    assert again.processes() == 1
    again.set_gpu_count(2)  # another machine: all of its GPUs
    assert again.gpus.currentText() == "all 2 GPUs" and again.processes() == 2
    again.apply_saved({**saved, "gpus": 1})
    assert again.processes() == 1 and again.gpus_setting() == 1


class _Watch:
    """What the GUI thread receives during a run: rank 0's Started, the status lines, and
    the order of table rows and the result. Installed before Start, since the page hands
    its bound callbacks to the runner then."""

    def __init__(self, page, monkeypatch) -> None:
        self.page = page
        self.started: list[Started] = []
        self.statuses: list[str] = []
        self.order: list[str] = []
        real_on_event, real_add = page._on_event, page.table.add_epoch

        def on_event(event) -> None:
            if isinstance(event, Started) and event.task == "train":
                self.started.append(event)
            real_on_event(event)
            self.statuses.append(page.status.text())

        def add_epoch(epoch, *args) -> None:
            self.order.append(f"row {epoch}")
            real_add(epoch, *args)

        monkeypatch.setattr(page, "_on_event", on_event)
        monkeypatch.setattr(page.table, "add_epoch", add_epoch)
        page.context.trainingFinished.connect(lambda _info: self.order.append("finished"))

    def child_pids(self) -> list[int]:
        info = self.started[0].info
        assert info["world_size"] == 2 and len(info["processes"]) == 2
        assert os.getpid() not in info["processes"]  # other processes trained
        return list(info["processes"])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_all_gpus_trains_in_child_processes_and_their_epochs_fill_the_table(
    page, qtbot, monkeypatch
):
    asked = _on_cpu(monkeypatch)
    watch = _Watch(page, monkeypatch)
    _tiny_run(page.settings, epochs=2)
    with qtbot.waitSignal(page.runEnded, timeout=240_000) as ended:
        page.start_button.click()
        assert page.is_running() and page.status.text() == "Starting test_resnet on 2 GPUs…"
    assert ended.args == [TaskState.FINISHED.value], page.status.text()
    assert asked == [2]
    watch.child_pids()
    assert any("Training test_resnet on 2 processes (" in text for text in watch.statuses)
    # The live table got its rows from the children's events, before the result came.
    assert watch.order == ["row 1", "row 2", "finished"]
    assert page.table.row_count() == 2
    assert page.curves.epochs == [1.0, 2.0]
    result = page.last_result
    assert result.metrics["world_size"] == 2 and result.bundle_path.is_file()
    qtbot.waitUntil(lambda: page.context.predictor is not None, timeout=60_000)
    assert page.context.model_path == result.bundle_path
    assert page.context.project.training["gpus"] == "all"


def test_stop_ends_the_child_processes_without_blocking_the_gui(page, qtbot, monkeypatch):
    _on_cpu(monkeypatch)
    watch = _Watch(page, monkeypatch)
    _tiny_run(page.settings, epochs=40)
    page.start_button.click()
    task = page.runner.current("train", owner=page)
    qtbot.waitUntil(lambda: page.table.row_count() >= 1, timeout=240_000)
    pids = watch.child_pids()
    assert all(_alive(pid) for pid in pids)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    began = time.monotonic()
    with qtbot.waitSignal(page.runEnded, timeout=120_000) as ended:
        page.stop_button.click()
        assert time.monotonic() - began < 0.5  # the click returned at once
    timer.stop()
    gaps = [b - a for a, b in zip([began, *ticks], ticks, strict=False)]
    assert len(ticks) >= 5 and max(gaps) < 1.5, max(gaps)  # the event loop kept running
    assert ended.args == [TaskState.CANCELLED.value] and task.state is TaskState.CANCELLED
    assert "Training stopped" in page.status.text()
    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()
    assert page.table.row_count() < 40
    qtbot.waitUntil(lambda: not any(_alive(pid) for pid in pids), timeout=30_000)
    run_dir = Path(watch.started[0].info["run_dir"])
    assert json.loads((run_dir / "run.json").read_text())["status"] == "cancelled"


def test_resume_goes_to_the_distributed_launch_when_all_gpus_are_chosen(
    page, qtbot, monkeypatch, tmp_path
):
    """Models → Resume with "all 2 GPUs": resume_distributed, not resume (the launch
    itself is the engine's, tested with real processes in tests/engine)."""
    from loupe.engine.core.errors import CancelledError

    asked: list[tuple[Path, int]] = []

    def fake_resume_distributed(run, nproc, *, on_event, cancel):
        asked.append((run, nproc))
        raise CancelledError("stopped")

    monkeypatch.setattr(launch, "resume_distributed", fake_resume_distributed)
    page.settings.gpus.setCurrentIndex(1)
    with qtbot.waitSignal(page.runEnded, timeout=30_000) as ended:
        page.resume_run(tmp_path / "runs" / "run-1")
        assert page.status.text() == "Resuming run run-1 on 2 GPUs…"
    assert asked == [(tmp_path / "runs" / "run-1", 2)]
    assert ended.args == [TaskState.CANCELLED.value]
