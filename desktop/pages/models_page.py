"""Models: the loaded model, save/load/export, and the training runs with their curves.

Everything that reads files runs in a worker: a runs folder can hold hundreds of runs,
a bundle can be hundreds of megabytes, and an ONNX export traces the whole model.
Saving a bundle is a copy of the trained file, written atomically, so a crash never
leaves half a model at the destination.

Each run can be used (a stopped run's best finished epoch becomes a bundle first, see
``engine.training.salvage``), resumed (the main window continues it on the Train page)
or deleted (after a confirmation that says how much space it frees; the engine decides
what may be deleted, and never touches the images). The current model can be pinned to
the project, which then always reopens with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from loupe.desktop.file_dialogs import dialogs
from loupe.desktop.pages.models_data import (
    BUNDLE_FILTER,
    ONNX_INSTALL_HINT,
    RunSummary,
    copy_bundle,
    delete_question,
    delete_run_files,
    export_with_parity,
    inside,
    load_run_summaries,
    onnx_available,
    plot_runs,
    training_summary,
    use_run_model,
)
from loupe.desktop.widgets.epoch_table import EpochTable
from loupe.desktop.widgets.mpl_canvas import MplCanvas
from loupe.desktop.workers import ignore_error
from loupe.engine.core.formats import BUNDLE_SUFFIX
from loupe.engine.training.run_admin import format_size

__all__ = ["ModelsPage", "RunSummary", "onnx_available"]

class ModelsPage(QWidget):
    """Save/load/export the model and browse, plot and compare training runs.

    ``modelSaved(Path)`` and ``exported(Path)`` fire after the file is complete.
    """

    modelSaved = Signal(Path)
    exported = Signal(object)
    runsLoaded = Signal(list)
    resumeRequested = Signal(Path)  # a run folder: the main window resumes it
    runDeleted = Signal(Path)

    def __init__(self, context: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._context = context
        self._runs: list[RunSummary] = []
        self._build()
        context.modelChanged.connect(self._show_model)
        context.projectChanged.connect(self._show_model)
        context.trainingFinished.connect(lambda _result: self.refresh_runs())
        # Only the buttons: re-plotting here cost the Start click ~50 ms of GUI time.
        context.trainingStateChanged.connect(lambda _running: self._update_run_buttons())
        self._show_model()
        self._runs_listed = False  # listing imports torch: wait until the page is shown

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        if not self._runs_listed:
            self._runs_listed = True
            self.refresh_runs()

    # -- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        model_box = QGroupBox("Current model", self)
        form = QFormLayout(model_box)
        self.model_label = QLabel("No model loaded", model_box)
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        buttons = QHBoxLayout()
        self.load_button = QPushButton("Load model…", model_box)
        self.save_button = QPushButton("Save model as…", model_box)
        self.export_button = QPushButton("Export ONNX…", model_box)
        for button in (self.load_button, self.save_button, self.export_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        form.addRow(buttons)
        self.pin_check = QCheckBox("Always reopen this project with this model (pin)", model_box)
        self.pin_check.setToolTip(
            "Unpinned, the project reopens with the model used last with it")
        self.pin_check.toggled.connect(self._pin_toggled)
        form.addRow(self.pin_check)
        self.export_label = QLabel("", model_box)
        self.export_label.setWordWrap(True)
        form.addRow(self.export_label)
        self.load_button.clicked.connect(self._ask_load)
        self.save_button.clicked.connect(self._ask_save)
        self.export_button.clicked.connect(self._ask_export)

        runs_box = QGroupBox("Training runs", self)
        self.runs_table = QTableWidget(0, 6, runs_box)
        self.runs_table.setHorizontalHeaderLabels(
            ["started (UTC)", "architecture", "epochs", "error rate", "size", "status"])
        self.runs_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.runs_table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.runs_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.runs_table.verticalHeader().setVisible(False)
        self.runs_table.setWordWrap(False)
        self.runs_table.horizontalHeaderItem(5).setToolTip(
            "finished, or stopped/failed at finished epochs / planned epochs")
        self.runs_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.runs_table.horizontalHeader().setStretchLastSection(True)
        self.runs_table.itemSelectionChanged.connect(self._on_run_selection)
        self.refresh_button = QPushButton("Refresh", runs_box)
        self.use_run_button = QPushButton("Use this run's model", runs_box)
        self.use_run_button.setEnabled(False)
        self.resume_button = QPushButton("Resume", runs_box)
        self.resume_button.setToolTip("Continue a stopped run from its last finished epoch")
        self.resume_button.setEnabled(False)
        self.delete_button = QPushButton("Delete…", runs_box)
        self.delete_button.setToolTip("Delete the run's folder (checkpoint, model, logs); "
                                      "your images are never touched")
        self.delete_button.setEnabled(False)
        self.refresh_button.clicked.connect(self.refresh_runs)
        self.use_run_button.clicked.connect(self._use_selected_run)
        self.resume_button.clicked.connect(self._resume_selected_run)
        self.delete_button.clicked.connect(self._delete_selected_runs)
        self.compare_hint = QLabel("Select two runs (Ctrl+click) to compare their curves.")
        self.canvas = MplCanvas(runs_box, width=7, height=3)
        self.epoch_table = EpochTable(runs_box)

        left = QWidget(runs_box)
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.runs_table, 1)
        row = QHBoxLayout()
        row.addWidget(self.refresh_button)
        row.addWidget(self.use_run_button)
        row.addWidget(self.resume_button)
        row.addWidget(self.delete_button)
        row.addStretch(1)
        left_layout.addLayout(row)
        left_layout.addWidget(self.compare_hint)
        right = QSplitter(Qt.Orientation.Vertical, runs_box)
        right.addWidget(self.canvas)
        right.addWidget(self.epoch_table)
        splitter = QSplitter(Qt.Orientation.Horizontal, runs_box)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        # Wide enough for every column of the runs table, status and size included.
        splitter.setSizes([600, 500])
        runs_layout = QVBoxLayout(runs_box)
        runs_layout.addWidget(splitter)

        layout = QVBoxLayout(self)
        layout.addWidget(model_box)
        layout.addWidget(runs_box, 1)

    # -- current model ----------------------------------------------------------------------
    def _show_model(self) -> None:
        path = self._context.model_path
        predictor = self._context.predictor
        has_model = path is not None
        self.save_button.setEnabled(has_model)
        self.export_button.setEnabled(has_model)
        self.pin_check.blockSignals(True)
        self.pin_check.setChecked(has_model and self._context.model_pinned)
        self.pin_check.blockSignals(False)
        self.pin_check.setEnabled(has_model and self._context.project is not None)
        if not has_model:
            self.model_label.setText("No model loaded. Train one, or load a .loupe file.")
            return
        title = self._context.model_title or Path(path).name
        lines = [f"<b>{title}</b>", f"file: {path}"]
        if predictor is not None:
            classes = list(predictor.classes)
            shown = ", ".join(classes[:12]) + (" …" if len(classes) > 12 else "")
            kind = "multi-label" if predictor.multi_label else "single-label"
            pre = predictor.preprocessing
            lines.append(f"{predictor.arch or 'model'} · {kind} · {len(classes)} classes: {shown}")
            first = f" (short side resized to {pre.presize} first)" if pre.resize == "crop" else ""
            lines.append(f"input {pre.size}×{pre.size} px · resize: {pre.resize}{first}")
        self.model_label.setText("<br>".join(lines))
        # An extra line only: a bundle whose header cannot be read shows without it. A
        # newer model's line supersedes this one.
        self._context.runner.start(training_summary, Path(path), owner=self, kind="model-meta",
                                   on_result=self._add_summary, on_error=ignore_error)

    def _add_summary(self, text: str) -> None:
        if text:
            self.model_label.setText(f"{self.model_label.text()}<br>{text}")

    def load_model(self, path: Path) -> None:
        """Load a bundle through the context (a worker), which emits modelChanged."""
        self._context.set_model(Path(path))

    def _ask_load(self) -> None:
        path = dialogs.open_file(self, "Load model", BUNDLE_FILTER)
        if path is not None:
            self.load_model(path)

    def _pin_toggled(self, pinned: bool) -> None:
        if self._context.pin_model(pinned) is not None:
            self._context.statusMessage.emit(
                "This project will always reopen with this model" if pinned else
                "This project will reopen with the model used last")

    def save_model(self, target: Path) -> None:
        """Copy the current bundle to ``target`` atomically, in a worker."""
        source = self._context.model_path
        if source is None:
            self._context.errorRaised.emit("No model", "There is no model to save yet.")
            return
        target = Path(target)
        if target.suffix.lower() != BUNDLE_SUFFIX:
            target = target.with_name(target.name + BUNDLE_SUFFIX)
        self._context.runner.start(copy_bundle, Path(source), target, owner=self,
                                   kind="save-model", supersede=False,
                                   on_result=self._on_saved, error_title="Save failed")

    def _on_saved(self, path: Path) -> None:
        self._context.statusMessage.emit(f"Model saved to {path}")
        self.modelSaved.emit(Path(path))

    def suggested_file_name(self) -> str:
        """The name "Save model as…" offers: project, architecture, date and accuracy."""
        return self._context.model_file_name or f"model{BUNDLE_SUFFIX}"

    def _ask_save(self) -> None:
        path = dialogs.save_file(self, "Save model as", self.suggested_file_name(),
                                 BUNDLE_FILTER)
        if path is not None:
            self.save_model(path)

    # -- ONNX -------------------------------------------------------------------------------
    def export_onnx(self, target: Path) -> bool:
        """Export the current bundle to ONNX in a worker; False (with advice) if onnx is
        missing."""
        predictor = self._context.predictor
        if predictor is None:
            self._context.errorRaised.emit("No model", "Load or train a model first.")
            return False
        if not onnx_available():
            self._context.errorRaised.emit("ONNX export unavailable", ONNX_INSTALL_HINT)
            return False
        target = Path(target)
        if target.suffix.lower() != ".onnx":  # a name typed without it, as save_model does
            target = target.with_name(target.name + ".onnx")
        prepared = self._context.prepared
        check = [li.item.path for li in prepared.plan.valid[:4]] if prepared is not None else []
        self._context.runner.start(
            export_with_parity, predictor, target, check, owner=self, kind="export-onnx",
            supersede=False, on_result=self._on_exported, error_title="ONNX export failed")
        self._context.statusMessage.emit(f"Exporting to {target}…")
        return True

    def _on_exported(self, result: Any) -> None:
        diff = result.max_abs_diff
        parity = "not checked" if diff is None else (
            f"max difference {diff:.1e} on {result.checked} images"
            + ("" if result.parity_ok else f" (over the {result.tolerance:.0e} tolerance!)"))
        self._context.statusMessage.emit(f"Exported {result.path.name}: {parity}")
        self.export_label.setText(f"Last export: {result.path} — PyTorch/ONNX {parity}")
        self.exported.emit(result)

    def _ask_export(self) -> None:
        if not onnx_available():
            QMessageBox.information(self, "ONNX export unavailable", ONNX_INSTALL_HINT)
            return
        stem = Path(self.suggested_file_name()).stem
        path = dialogs.save_file(self, "Export ONNX", f"{stem}.onnx", "ONNX models (*.onnx)")
        if path is not None:
            self.export_onnx(path)

    # -- runs -------------------------------------------------------------------------------
    def refresh_runs(self) -> None:
        """Re-read the runs folder in a task; a newer refresh supersedes it."""
        self._context.runner.start(load_run_summaries, owner=self, kind="list-runs",
                                   on_result=self._on_runs, error_title="Could not list runs")

    def runs(self) -> list[RunSummary]:
        return list(self._runs)

    def _on_runs(self, summaries: list[RunSummary]) -> None:
        keep = {run.run_id for run in self.selected_runs()}
        self._runs = list(summaries)
        table = self.runs_table
        table.blockSignals(True)
        table.clearSelection()
        table.setRowCount(len(self._runs))
        for row, run in enumerate(self._runs):
            error = run.last("error_rate")
            cells = [run.started, run.arch, str(run.epochs),
                     "" if error is None else f"{error:.4f}", format_size(run.size),
                     run.status_text]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(f"{run.run_id}\n{run.path}")
                table.setItem(row, col, item)
        table.blockSignals(False)
        rows = [i for i, run in enumerate(self._runs) if run.run_id in keep]
        self.select_runs(rows or ([0] if self._runs else []))
        self._on_run_selection()
        self.runsLoaded.emit(self._runs)

    def selected_runs(self) -> list[RunSummary]:
        rows = sorted({index.row() for index in self.runs_table.selectedIndexes()})
        return [self._runs[row] for row in rows if row < len(self._runs)]

    def select_runs(self, rows: Sequence[int]) -> None:
        """Select exactly these rows (one selection change, so one redraw)."""
        model = self.runs_table.model()
        selection = QItemSelection()
        last = model.columnCount() - 1
        for row in rows:
            selection.select(model.index(row, 0), model.index(row, last))
        self.runs_table.selectionModel().select(
            selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)

    def _on_run_selection(self) -> None:
        selected = self.selected_runs()
        plot_runs(self.canvas, selected[:4])
        if len(selected) == 1:
            self.epoch_table.set_history(list(selected[0].history))
            self.compare_hint.setText("Select two runs (Ctrl+click) to compare their curves.")
        else:
            self.epoch_table.clear()
            if len(selected) > 1:
                self.epoch_table.setToolTip("Select a single run to see its epoch table")
                self.compare_hint.setText(f"Comparing {min(len(selected), 4)} runs.")
        self._update_run_buttons()

    def _update_run_buttons(self) -> None:
        selected = self.selected_runs()
        one = selected[0] if len(selected) == 1 else None
        training = self._context.training_running
        self.use_run_button.setEnabled(one is not None and one.usable)
        self.use_run_button.setToolTip(
            "" if one is None or one.finished or not one.checkpoint else
            f"Uses the model of its best finished epoch (lowest validation loss; "
            f"{one.epochs}" + (f" of {one.total_epochs}" if one.total_epochs else "")
            + " epochs finished)")
        self.resume_button.setEnabled(one is not None and one.resumable and not training)
        self.delete_button.setEnabled(bool(selected) and not training)

    def _use_selected_run(self) -> None:
        selected = self.selected_runs()
        if len(selected) != 1 or not selected[0].usable:
            return
        run = selected[0]
        if run.bundle is not None and run.bundle.is_file():
            self.load_model(run.bundle)
            return
        # A stopped run: its best finished epoch becomes a bundle first (a worker).
        self._context.statusMessage.emit(f"Making a model from run {run.run_id}…")
        self._context.runner.start(
            use_run_model, run.path, owner=self, kind="use-run",
            on_result=self._on_run_model, error_title="Cannot use this run's model")

    def _on_run_model(self, bundle: Path) -> None:
        self.load_model(bundle)
        self.refresh_runs()

    def _resume_selected_run(self) -> None:
        selected = self.selected_runs()
        if len(selected) == 1 and selected[0].resumable:
            self.resumeRequested.emit(selected[0].path)

    # -- deleting runs -----------------------------------------------------------------
    def _delete_selected_runs(self) -> None:
        runs = self.selected_runs()
        if not runs or self._context.training_running:
            return
        if self.confirm_delete(runs):
            for run in runs:
                self.delete_run(run)

    def confirm_delete(self, runs: Sequence[RunSummary]) -> bool:
        """Ask first, saying what goes, how much space it frees and what stays."""
        answer = QMessageBox.question(
            self, "Delete training run", delete_question(runs, self._context.model_path),
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def delete_run(self, run: RunSummary) -> Any:
        """Delete one run's folder in a worker; the list is re-read afterwards."""
        model = self._context.model_path
        project = self._context.project
        model_in_run = model if model is not None and inside(model, run.path) else None
        return self._context.runner.start(
            delete_run_files, run.path, project.root if project is not None else None,
            model_in_run or (run.bundle if run.bundle is not None else None),
            owner=self, kind="delete-run", supersede=False,
            on_result=lambda freed: self._on_deleted(run, freed, model_in_run),
            error_title="Cannot delete the run")

    def _on_deleted(self, run: RunSummary, freed: int, model_in_run: Path | None) -> None:
        if model_in_run is not None and self._context.model_path == model_in_run:
            self._context.clear_model()
        self._context.statusMessage.emit(f"Deleted run {run.run_id}: {format_size(freed)} freed")
        self.runDeleted.emit(run.path)
        self.refresh_runs()

