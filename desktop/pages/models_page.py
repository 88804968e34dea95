"""Models: the loaded model, save/load/export, and the training runs with their curves.

Everything that reads files runs in a worker: a runs folder can hold hundreds of runs,
a bundle can be hundreds of megabytes, and an ONNX export traces the whole model.
Saving a bundle is a copy of the trained file, written atomically, so a crash never
leaves half a model at the destination.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
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

from desktop.widgets.epoch_table import EpochTable
from desktop.widgets.mpl_canvas import MplCanvas

ONNX_INSTALL_HINT = (
    "ONNX export needs the optional packages 'onnx' and 'onnxruntime'.\n\n"
    "Install them into the Python that runs Loupe with:\n\n"
    f"    {sys.executable} -m pip install onnx onnxruntime\n\n"
    "or, in a source checkout:  .venv/bin/pip install '.[onnx]'\n\n"
    "then choose Export ONNX again (no restart needed)."
)
BUNDLE_FILTER = "Loupe models (*.loupe);;All files (*)"


@dataclass(frozen=True)
class RunSummary:
    """One run as the runs list shows it (read from the run folder by a worker)."""

    run_id: str
    path: Path
    arch: str
    status: str
    bundle: Path | None
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def started(self) -> str:
        """When the run started, from its id (``YYYYMMDD-HHMMSS-arch-xxxxxx``, UTC)."""
        stamp = self.run_id[:15]
        if len(stamp) == 15 and stamp[8] == "-" and stamp.replace("-", "").isdigit():
            return (f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]} "
                    f"{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}")
        return self.run_id

    @property
    def label(self) -> str:
        """Short name for legends: architecture and start time."""
        return f"{self.arch} {self.started[5:]}"

    @property
    def epochs(self) -> int:
        return len(self.history)

    def last(self, key: str) -> float | None:
        values = [row[key] for row in self.history if isinstance(row.get(key), int | float)]
        return float(values[-1]) if values else None


def load_run_summaries(*, on_event=None, cancel=None) -> list[RunSummary]:  # noqa: ANN001
    """Every run under the user data dir, newest first (run ids start with a UTC stamp)."""
    from engine import paths
    from engine.errors import ConfigError
    from engine.training import runs

    summaries: list[RunSummary] = []
    for run_dir in sorted(paths.runs_dir().iterdir(), reverse=True):
        if cancel is not None:
            cancel.raise_if_cancelled()
        if not (run_dir / "config.json").is_file():
            continue
        try:
            config = runs.read_json(run_dir, "config.json")
            record = runs.read_record(run_dir)
            history = tuple(runs.read_metrics(run_dir))
        except (ConfigError, ValueError, OSError):
            summaries.append(RunSummary(run_dir.name, run_dir, "?", "unreadable", None))
            continue
        bundle = record.get("bundle")
        summaries.append(
            RunSummary(
                run_id=run_dir.name,
                path=run_dir,
                arch=str(config.get("arch", "?")) if isinstance(config, dict) else "?",
                status=str(record.get("status", "unknown")),
                bundle=Path(bundle) if isinstance(bundle, str) and bundle else None,
                history=history,
            )
        )
    return summaries


def copy_bundle(source: Path, target: Path, *, on_event=None, cancel=None) -> Path:  # noqa: ANN001
    """Copy a bundle atomically (temp file + rename) so the target is never half-written."""
    from engine.atomic import atomic_write_bytes
    from engine.errors import ModelFileError

    if source.resolve() == target.resolve():
        return target
    try:
        data = source.read_bytes()
    except OSError as err:
        raise ModelFileError(f"cannot read the model file {source}: {err.strerror}") from err
    if cancel is not None:
        cancel.raise_if_cancelled()
    return atomic_write_bytes(target, data)


def _training_summary(path: Path, *, on_event=None, cancel=None) -> str:  # noqa: ANN001
    """One line about how the bundle was trained, from its metadata (header only)."""
    from engine.bundle import read_bundle_meta

    meta = read_bundle_meta(path)
    training = meta.training
    parts = []
    if isinstance(training.get("epochs_run", training.get("epochs")), int):
        parts.append(f"trained {training.get('epochs_run', training.get('epochs'))} epoch(s)")
    final = training.get("final_metrics") or {}
    if isinstance(final, dict):
        parts.extend(f"{key} {final[key]:.4f}" for key in ("error_rate", "valid_loss")
                     if isinstance(final.get(key), int | float))
    for key, name in (("label_rule", "labels"), ("pretrained", "weights")):
        if training.get(key):
            parts.append(f"{name}: {training[key]}")
    if meta.versions.get("loupe"):
        parts.append(f"Loupe {meta.versions['loupe']}, torch {meta.versions.get('torch', '?')}")
    return " · ".join(parts)


def onnx_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def export_with_parity(predictor: Any, target: Path, check_images: Sequence[Path] = (), *,
                       on_event=None, cancel=None) -> Any:  # noqa: ANN001
    """Worker body: engine.export.export_onnx, checked on real validation images if any."""
    from desktop.pages.model_use import using_model
    from engine.events import ignore_event
    from engine.export import export_onnx

    with using_model(predictor, cancel):
        return export_onnx(predictor, target, check_images=tuple(check_images),
                           on_event=on_event or ignore_event)


def plot_runs(canvas: MplCanvas, summaries: Sequence[RunSummary]) -> None:
    """Loss curves (train dashed, valid solid) and error rate, one colour per run."""
    canvas.clear()
    fig = canvas.figure
    loss_ax = fig.add_subplot(1, 2, 1)
    err_ax = fig.add_subplot(1, 2, 2)
    for ax, title in ((loss_ax, "Loss"), (err_ax, "Error rate")):
        canvas.style_axes(ax)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    if not summaries:
        loss_ax.text(0.5, 0.5, "Select a run", ha="center", va="center",
                     transform=loss_ax.transAxes, color=canvas.foreground())
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for i, run in enumerate(summaries):
        colour = colours[i % len(colours)]
        xs = list(range(1, run.epochs + 1))
        short = run.label
        for key, style in (("train_loss", "--"), ("valid_loss", "-")):
            ys = [row.get(key) for row in run.history]
            if any(isinstance(y, int | float) for y in ys):
                loss_ax.plot(xs, ys, style, color=colour, marker="o", markersize=3,
                             label=f"{short} {key.split('_')[0]}")
        errs = [row.get("error_rate") for row in run.history]
        if any(isinstance(y, int | float) for y in errs):
            err_ax.plot(xs, errs, "-", color=colour, marker="o", markersize=3, label=short)
    for ax in (loss_ax, err_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    canvas.redraw()


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
            lines.append(f"input {pre.size}×{pre.size} px (resized to {pre.presize} first)")
        self.model_label.setText("<br>".join(lines))
        worker = self._context.runner.start(_training_summary, Path(path), name="model-meta")
        worker.finished.connect(lambda text: self._add_summary(path, text))

    def _add_summary(self, path: Path, text: str) -> None:
        if text and path == self._context.model_path:
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
        if target.suffix.lower() != ".loupe":
            target = target.with_name(target.name + ".loupe")
        worker = self._context.runner.start(copy_bundle, Path(source), target, name="save-model")
        worker.finished.connect(self._on_saved)
        worker.errored.connect(lambda exc: self._context.errorRaised.emit("Save failed", str(exc)))

    def _on_saved(self, path: Path) -> None:
        self._context.statusMessage.emit(f"Model saved to {path}")
        self.modelSaved.emit(Path(path))

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save model as", "model.loupe", BUNDLE_FILTER)
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
        prepared = self._context.prepared
        check = [li.item.path for li in prepared.plan.valid[:4]] if prepared is not None else []
        worker = self._context.runner.start(
            export_with_parity, predictor, Path(target), check, name="export-onnx")
        worker.finished.connect(self._on_exported)
        worker.errored.connect(
            lambda exc: self._context.errorRaised.emit("ONNX export failed", str(exc)))
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
        worker = self._context.runner.start(load_run_summaries, name="list-runs")
        worker.finished.connect(self._on_runs)
        worker.errored.connect(
            lambda exc: self._context.errorRaised.emit("Could not list runs", str(exc)))

    def runs(self) -> list[RunSummary]:
        return list(self._runs)

    def _on_runs(self, summaries: list[RunSummary]) -> None:
        self._runs = list(summaries)
        table = self.runs_table
        table.setRowCount(len(self._runs))
        for row, run in enumerate(self._runs):
            error = run.last("error_rate")
            cells = [run.started, run.arch, str(run.epochs),
                     "" if error is None else f"{error:.4f}", run.status]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(f"{run.run_id}\n{run.path}")
                table.setItem(row, col, item)
        if self._runs:
            table.selectRow(0)
        else:
            plot_runs(self.canvas, [])
            self.epoch_table.clear()
        self.runsLoaded.emit(self._runs)

    def selected_runs(self) -> list[RunSummary]:
        rows = sorted({index.row() for index in self.runs_table.selectedIndexes()})
        return [self._runs[row] for row in rows if row < len(self._runs)]

    def select_runs(self, rows: Sequence[int]) -> None:
        self.runs_table.clearSelection()
        mode = self.runs_table.selectionMode()
        self.runs_table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row in rows:
            self.runs_table.selectRow(row)
        self.runs_table.setSelectionMode(mode)

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
