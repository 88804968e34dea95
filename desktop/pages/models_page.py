"""Models: the loaded model, save/load/export, and the training runs with their curves.

Everything that reads files runs in a worker: a runs folder can hold hundreds of runs,
a bundle can be hundreds of megabytes, and an ONNX export traces the whole model.
Saving a bundle is a copy of the trained file, written atomically, so a crash never
leaves half a model at the destination.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
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

from loupe.desktop.pages.models_data import (
    BUNDLE_FILTER,
    ONNX_INSTALL_HINT,
    RunSummary,
    copy_bundle,
    export_with_parity,
    load_run_summaries,
    onnx_available,
    plot_runs,
    training_summary,
)
from loupe.desktop.widgets.epoch_table import EpochTable
from loupe.desktop.widgets.mpl_canvas import MplCanvas
from loupe.desktop.workers import ignore_error
from loupe.engine.core.formats import BUNDLE_SUFFIX

__all__ = ["ModelsPage", "RunSummary", "onnx_available"]

class ModelsPage(QWidget):
    """Save/load/export the model and browse, plot and compare training runs.

    ``modelSaved(Path)`` and ``exported(Path)`` fire after the file is complete.
    """

    modelSaved = Signal(Path)
    exported = Signal(object)
    runsLoaded = Signal(list)

    def __init__(self, context: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._context = context
        self._runs: list[RunSummary] = []
        self._build()
        context.modelChanged.connect(self._show_model)
        context.trainingFinished.connect(lambda _result: self.refresh_runs())
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
        self.export_label = QLabel("", model_box)
        self.export_label.setWordWrap(True)
        form.addRow(self.export_label)
        self.load_button.clicked.connect(self._ask_load)
        self.save_button.clicked.connect(self._ask_save)
        self.export_button.clicked.connect(self._ask_export)

        runs_box = QGroupBox("Training runs", self)
        self.runs_table = QTableWidget(0, 5, runs_box)
        self.runs_table.setHorizontalHeaderLabels(
            ["started (UTC)", "architecture", "epochs", "error rate", "status"])
        self.runs_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.runs_table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.runs_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.runs_table.verticalHeader().setVisible(False)
        self.runs_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.runs_table.horizontalHeader().setStretchLastSection(True)
        self.runs_table.itemSelectionChanged.connect(self._on_run_selection)
        self.refresh_button = QPushButton("Refresh", runs_box)
        self.use_run_button = QPushButton("Use this run's model", runs_box)
        self.use_run_button.setEnabled(False)
        self.refresh_button.clicked.connect(self.refresh_runs)
        self.use_run_button.clicked.connect(self._use_selected_run)
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
        row.addStretch(1)
        left_layout.addLayout(row)
        left_layout.addWidget(self.compare_hint)
        right = QSplitter(Qt.Orientation.Vertical, runs_box)
        right.addWidget(self.canvas)
        right.addWidget(self.epoch_table)
        splitter = QSplitter(Qt.Orientation.Horizontal, runs_box)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([440, 660])
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
        if not has_model:
            self.model_label.setText("No model loaded. Train one, or load a .loupe file.")
            return
        lines = [f"<b>{Path(path).name}</b> — {path}"]
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
        path, _ = QFileDialog.getOpenFileName(self, "Load model", "", BUNDLE_FILTER)
        if path:
            self.load_model(Path(path))

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

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save model as", f"model{BUNDLE_SUFFIX}",
                                              BUNDLE_FILTER)
        if path:
            self.save_model(Path(path))

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
        path, _ = QFileDialog.getSaveFileName(
            self, "Export ONNX", "model.onnx", "ONNX models (*.onnx)")
        if path:
            self.export_onnx(Path(path))

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
                     "" if error is None else f"{error:.4f}", run.status]
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
        bundle = selected[0].bundle if len(selected) == 1 else None
        self.use_run_button.setEnabled(bundle is not None and bundle.is_file())

    def _use_selected_run(self) -> None:
        selected = self.selected_runs()
        if len(selected) == 1 and selected[0].bundle is not None:
            self.load_model(selected[0].bundle)
