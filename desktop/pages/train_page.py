"""The Train page: settings on the left; live progress, curves and the epoch table on the
right. Training, the learning-rate finder, weight imports/downloads and the device probe
all run in workers, so the rest of the window stays usable while a model trains.

The progress bar is for the whole run (:class:`~loupe.desktop.pages.train_progress.RunClock`:
time left from the measured time per batch, right from the first batches) and is hidden
while nothing runs. When a run ends the page says so with a "View results" button
instead of switching tabs under the user's mouse.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from loupe.desktop.context import AppContext
from loupe.desktop.gui_words import in_gui_words
from loupe.desktop.pages.data_advice import data_problem, ready_summary, training_problem
from loupe.desktop.pages.train_charts import LrFinderPanel, TrainingCurves
from loupe.desktop.pages.train_progress import FinishedNotice, RunClock
from loupe.desktop.pages.train_settings import TrainSettings, format_lr, probe_hardware
from loupe.desktop.pages.train_weights import WeightsActions, random_init_banner
from loupe.desktop.widgets.epoch_table import EpochTable
from loupe.desktop.workers import Task, TaskState, ignore_error
from loupe.engine.core.errors import LoupeError
from loupe.engine.core.events import EpochEnded, Progress, Started, WarningEvent

# Columns of the epoch table are fastai's; these per-epoch facts are kept out of it.
_NOT_TABLE_COLUMNS = ("size", "batch_size")
_BANNER_STYLE = (
    "QLabel { background: #7a4a00; color: white; border-radius: 4px; padding: 6px 10px; }"
)


class TrainPage(WeightsActions, QWidget):
    """Start/Stop a run and watch it; ``start_training()`` is also Results' "Retrain"."""

    # The run ended (finished, stopped or failed): the button states follow.
    runEnded = Signal(str)
    # "View results" on the finished notice: the main window shows the Results tab.
    viewResultsRequested = Signal()

    def __init__(self, context: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.runner = context.runner
        self._loaded = False
        self._pending_settings: dict[str, Any] | None = None
        self.clock = RunClock()
        self.now = time.monotonic  # the clock's time source (tests give a fake one)
        self._project_root: Path | None = None
        self.last_result: Any = None
        splitter = QSplitter(self)
        splitter.addWidget(self._build_left())
        splitter.addWidget(self._build_right())
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([460, 820])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(splitter)
        context.projectChanged.connect(self._on_project)
        context.engineReady.connect(self._engine_loaded)
        context.dataPrepared.connect(self._on_data)
        context.dataChanged.connect(self._on_data)
        self._update_ready()

    # Layout -------------------------------------------------------------------------
    def _build_left(self) -> QWidget:
        self.settings = TrainSettings()
        self.settings.archChanged.connect(self.refresh_weights_status)
        self.settings.importRequested.connect(self.import_weights)
        self.settings.downloadRequested.connect(self.download_weights)
        self.settings.findLrRequested.connect(self.find_lr)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(self.settings)
        scroll.setMinimumWidth(self.settings.minimumSizeHint().width() + 24)
        self.start_button = QPushButton("Start training")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start_training)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop_training)
        self.stop_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button, 1)
        buttons.addWidget(self.stop_button)
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(0, 0, 6, 0)
        layout.addWidget(scroll, 1)
        layout.addLayout(buttons)
        return panel

    def _build_right(self) -> QWidget:
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(6, 0, 0, 0)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(_BANNER_STYLE)
        self.banner.hide()
        self.status = QLabel("Open a folder on the Data page, then start training.")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.progress.hide()  # an empty bar looks like a text box: shown while work runs
        self.plots = QTabWidget()
        self.curves = TrainingCurves()
        self.lr_plot = LrFinderPanel()
        self.lr_plot.lrChosen.connect(self._use_lr)
        self.plots.addTab(self.curves, "Curves")
        self.plots.addTab(self.lr_plot, "Learning rate finder")
        self.table = EpochTable()
        self.notice = FinishedNotice()
        self.notice.results_button.clicked.connect(self.viewResultsRequested)
        self.notice_label = self.notice.label
        self.results_button = self.notice.results_button
        layout.addWidget(self.notice)
        layout.addWidget(self.banner)
        layout.addWidget(self.status)
        layout.addWidget(self.progress)
        layout.addWidget(self.plots, 3)
        layout.addWidget(self.table, 2)
        return panel

    def showEvent(self, event: QShowEvent) -> None:
        """Fill in the engine parts once torch is in. Never import torch here: a window
        reopening on this tab would load it on the GUI thread before its first paint;
        the ``engineReady`` connection fills the page when the warm-up finishes."""
        super().showEvent(event)
        if self.context.engine_ready:
            self._engine_loaded()

    def _engine_loaded(self) -> None:
        """Once torch is in: engine limits, the saved settings, devices, weights status."""
        if self._loaded:
            return
        self._loaded = True
        self.settings.load_limits()
        if self._pending_settings:
            self.settings.apply_saved(self._pending_settings)
            self._pending_settings = None
        self.runner.start(probe_hardware, events=False, owner=self, kind="devices",
                          on_result=self._on_hardware, on_error=ignore_error)
        self.refresh_architectures()

    def _on_hardware(self, found: tuple[list[tuple[str, str]], int]) -> None:
        devices, gpus = found
        self.settings.set_devices(devices)
        self.settings.set_gpu_count(gpus)

    # Project ------------------------------------------------------------------------
    def _on_project(self) -> None:
        project = self.context.project
        root = getattr(project, "root", None)
        if root != self._project_root and not (self.is_running() or self.lr_finding()):
            self._clear_run_view()  # another folder: the last run's curves are not its
        self._project_root = root
        if project is not None and project.training:
            if self._loaded:
                self.settings.apply_saved(project.training)
            else:
                self._pending_settings = dict(project.training)
        self._update_ready()

    def _on_data(self) -> None:
        self._update_ready()
        if self.is_running() or self.lr_finding():
            return
        self.status.setText(self.ready_text())

    def data_problem(self) -> str:
        """Why the open folder's data cannot be trained on ("" when it can)."""
        return training_problem(self.context)

    def ready_text(self) -> str:
        return self.data_problem() or ready_summary(self.context.prepared)

    def _update_ready(self) -> None:
        busy = self.is_running() or self.lr_finding()
        ready = self.context.prepared is not None and not data_problem(self.context.data)
        self.start_button.setEnabled(ready and not busy)
        self.settings.find_lr_button.setEnabled(ready and not busy)

    def is_running(self) -> bool:
        return self.runner.is_running("train", owner=self)

    # Learning-rate finder -----------------------------------------------------------
    def find_lr(self) -> Task | None:
        """Run the learning-rate finder in a task (None if it cannot start now)."""
        if self.context.prepared is None or self.is_running():
            return None
        try:
            config = self.settings.config()
        except LoupeError as exc:
            self.context.report_error("Invalid training settings", exc)
            return None
        from loupe.engine.training import lr_find

        self.plots.setCurrentWidget(self.lr_plot)
        self.settings.find_lr_button.setEnabled(False)
        self.status.setText("Finding a learning rate…")
        self.lr_plot.begin()
        self.notice.hide()
        self.progress.setRange(0, 0)
        self.progress.setFormat("learning-rate finder: preparing the images")
        self.progress.show()
        task = self.runner.start(
            lr_find, self.context.prepared, config, owner=self, kind="lr-find",
            on_event=self._on_event, on_result=self._on_lr_found, on_done=self._lr_done,
            on_point=self.lr_plot.add_point, error_title="Learning-rate finder")
        # Training must not start beside the finder (both would fight for the cores and
        # the finder would then overwrite the rate the run started with); Stop cancels it.
        self._update_ready()
        self.stop_button.setEnabled(True)
        return task

    def _lr_done(self, task: Task) -> None:
        if not self.is_running():
            self.stop_button.setEnabled(False)
            if task.state is TaskState.CANCELLED:
                self.status.setText("Learning-rate finder stopped.")
                self.lr_plot.stopped()
            if task.state is not TaskState.FINISHED:
                self.progress.hide()
        self._update_ready()

    def lr_finding(self) -> bool:
        return self.runner.is_running("lr-find", owner=self)

    def _on_lr_found(self, result: Any) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat("learning-rate finder: done")
        self.lr_plot.show_result(result.lrs, result.losses, result.suggestion)
        self.status.setText(
            f"Suggested learning rate {format_lr(result.suggestion)}: press “Use this rate” "
            "to put it in the learning-rate field, or click the curve to choose another."
        )

    def _use_lr(self, lr: float) -> None:
        self.settings.set_lr(lr)
        self.status.setText(f"Learning rate set to {format_lr(lr)}.")

    # Training -----------------------------------------------------------------------
    def start_training(self, **overrides: Any) -> Task | None:
        """Start a run with the form's settings (``overrides`` replace fields, e.g. for
        tests or Results' Retrain). Returns the task, or None if it could not start."""
        if self.is_running() or self.lr_finding():
            return None
        problem = self.data_problem()
        if problem:
            self.context.errorRaised.emit("No training data", problem)
            return None
        try:
            config = self.settings.config(**overrides)
        except LoupeError as exc:
            self.context.report_error("Invalid training settings", exc)
            return None
        if self.context.project is not None:
            self.context.project.training = {**config.to_json(),
                                             "gpus": self.settings.gpus_setting()}
            self.context.save_project()
        from loupe.engine.training import launch, train

        self._config = config
        self._reset_view()
        nproc = self.settings.processes()
        # "All N GPUs": the same run on N processes, whose events come back the same way.
        call = (train, self.context.prepared, config) if nproc == 1 else (
            launch.train_distributed, self.context.prepared, config, nproc)
        task = self.runner.start(
            *call, owner=self, kind="train",
            on_event=self._on_event, on_result=self._on_finished, on_cancel=self._on_cancelled,
            on_done=self._on_done, error_title="Training failed")
        self._set_running(True)
        self.status.setText(f"Starting {config.arch}{_on_gpus(nproc)}…")
        return task

    def resume_run(self, run_dir: Path) -> Task | None:
        """Continue a stopped run from its last finished epoch (Models page → Resume).

        The engine rebuilds the run's data from its record and refuses when the folder or
        split changed since; the table and curves show the epochs it still runs, and the
        bar counts the epochs already done.
        """
        if self.is_running() or self.lr_finding():
            self.context.errorRaised.emit(
                "Cannot resume now", "Wait for the current training (or finder) to end.")
            return None
        from loupe.engine.training import launch, resume

        self._config = None
        self._reset_view()
        nproc = self.settings.processes()
        call = (resume, Path(run_dir)) if nproc == 1 else (
            launch.resume_distributed, Path(run_dir), nproc)
        task = self.runner.start(
            *call, owner=self, kind="train",
            on_event=self._on_event, on_result=self._on_finished, on_cancel=self._on_cancelled,
            on_done=self._on_done, error_title="Cannot resume the run")
        self._set_running(True)
        self.status.setText(f"Resuming run {Path(run_dir).name}{_on_gpus(nproc)}…")
        return task

    def stop_training(self) -> None:
        if self.runner.cancel("lr-find", owner=self):
            self.stop_button.setEnabled(False)
            return
        if self.runner.cancel("train", owner=self):
            self.status.setText("Stopping after the current batch…")
            self.stop_button.setEnabled(False)

    def _clear_run_view(self) -> None:
        self.table.clear()
        self.curves.reset()
        self.banner.clear()
        self.banner.hide()
        self.notice.hide()
        self.progress.hide()
        self.lr_plot.reset()

    def _reset_view(self) -> None:
        self.plots.setCurrentWidget(self.curves)  # the live curves, not the lr finder
        self.table.clear()
        self.curves.reset()
        self.banner.clear()
        self.banner.hide()
        self.notice.hide()
        self.progress.setRange(0, 0)
        self.progress.setFormat("preparing…")
        self.progress.show()
        self.clock = RunClock()

    def _set_running(self, running: bool) -> None:
        self.settings.set_running(running)
        self.stop_button.setEnabled(running)
        self.context.set_training(running)
        self._update_ready()

    # Events (slots on the GUI thread) -------------------------------------------------
    def _on_event(self, event: Any) -> None:
        if isinstance(event, Progress):
            self._on_progress(event)
        elif isinstance(event, EpochEnded):
            self.clock.epoch_ended(event.epoch, self.now())
            metrics = {k: v for k, v in event.metrics.items() if k not in _NOT_TABLE_COLUMNS}
            self.table.add_epoch(event.epoch, metrics, event.phase)
            self.curves.add_epoch(event.epoch, event.metrics)
        elif isinstance(event, WarningEvent):
            self.show_warning(self._warning_text(event))
        elif isinstance(event, Started) and event.task == "train":
            self.clock.start(event.total or 0, event.info)
            info = event.info
            self.status.setText(
                f"Training {info.get('arch', '')} on {_where(info)} · "
                f"{info.get('n_train', '?')} training / {info.get('n_valid', '?')} validation "
                f"images · batch size {info.get('batch_size', '?')} · weights: "
                f"{info.get('pretrained', '?')}"
            )

    def _on_progress(self, event: Progress) -> None:
        if event.task == "train" and event.epoch is not None:
            # The bar is the whole run; its text says where in it and what is left.
            self.clock.progress(event.epoch, event.done, event.total, self.now())
            self.progress.setRange(0, 1000)
            self.progress.setValue(round(self.clock.fraction * 1000))
            self.progress.setFormat(self.clock.text(event.loss))
            if event.loss is not None:
                self.curves.add_batch(event.epoch - 1 + event.done / event.total, event.loss)
            return
        self.progress.setRange(0, max(1, event.total))
        self.progress.setValue(event.done)
        if event.task == "cache":
            self.progress.setFormat("decoding the images once: %v of %m")
        elif event.task == "lr-find":
            self.lr_plot.flush()
            self.progress.setFormat("learning-rate finder: batch %v of at most %m")
        else:
            self.progress.setFormat(f"{event.message or event.task}: %v of %m")

    def _warning_text(self, event: WarningEvent) -> str:
        """The engine's warning, with command-line advice replaced by the page's buttons."""
        if event.code == "random-init":
            config = getattr(self, "_config", None)
            asked = config is not None and config.pretrained == "none"
            return random_init_banner(self.settings.arch_name(), asked)
        return event.message

    def show_warning(self, message: str) -> None:
        text = self.banner.text()
        self.banner.setText(f"{text}\n⚠ {message}" if text else f"⚠ {message}")
        self.banner.show()

    def _on_finished(self, result: Any) -> None:
        self.last_result = result
        metrics = result.metrics
        error = metrics.get("error_rate")
        summary = f" · error rate {error:.3f}" if isinstance(error, float) else ""
        self.status.setText(f"Finished{summary}. Model saved to {result.bundle_path}")
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat("done: 100% of the run")
        self.notice.finished(error)
        self.context.set_model(result.bundle_path)
        self.context.trainingFinished.emit(
            {
                "model": str(result.bundle_path),
                "run_dir": str(result.run_dir),
                "metrics": dict(metrics),
                "history": [dict(row) for row in result.history],
                "report": dict(result.report),
                "result": result,
            }
        )

    def _on_cancelled(self) -> None:
        self.status.setText(
            "Training stopped. Its finished epochs are kept: on the Models page, use the "
            "run's model or resume it."
        )
        self.progress.setFormat(f"stopped at {self.clock.fraction:.0%} of the run")

    def _on_done(self, task: Task) -> None:
        if task.state is TaskState.FAILED:  # the dialog says it too (the runner's report)
            self.status.setText(f"Training failed: {in_gui_words(str(task.error))}")
            self.progress.hide()
        self._set_running(False)
        self.runEnded.emit(task.state.value)


def _on_gpus(nproc: int) -> str:
    return f" on {nproc} GPUs" if nproc > 1 else ""


def _where(info: dict[str, Any]) -> str:
    """What a run's Started says it trains on: "2 GPUs (NVIDIA …)" for a distributed run
    (rank 0 speaks for every process; each has a GPU of its own)."""
    name, processes = info.get("device_name", ""), int(info.get("world_size") or 1)
    if processes == 1:
        return str(name)
    what = "GPUs" if info.get("device") == "cuda" else "processes"
    return f"{processes} {what} ({name})"
