"""Results: where the model goes wrong on the validation set, and fixing the labels.

The analysis (one pass over the validation images: confusion matrix, top losses with
activation maps, per-class precision/recall/F1, embedding map, first-layer filters) runs
in a worker via ``engine.evaluation.analysis.analyze``; it starts when the page is shown with a new
model or new data, or on "Analyse". Clicking a confusion-matrix cell lists that cell's
images with their probabilities and activation maps (another worker).

Double-click (or Space) on any image, or click a point of the embedding map, opens it in
the image viewer. Relabel and Exclude never touch an image: they are project overrides
(``pages.image_corrections``, shared with the Data tab and the viewer). "Retrain" re-applies
the labels and asks the main window to start training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from loupe.desktop.pages import results_plots as plots
from loupe.desktop.pages.image_corrections import corrections_for
from loupe.desktop.pages.image_preview import PreviewItem, open_preview
from loupe.desktop.pages.results_confusion import ConfusionPanel
from loupe.desktop.pages.results_embedding import EmbeddingPanel
from loupe.desktop.pages.results_filters import FiltersPanel
from loupe.desktop.pages.results_tables import PerClassTable, TestSetPanel
from loupe.desktop.widgets.image_grid import GridItem, ImageGrid
from loupe.desktop.workers import Task, TaskState
from loupe.engine.core.events import Progress


class ResultsPage(QWidget):
    """Error analysis and label cleaning.

    Signals: ``analysisReady(ResultsData)``, ``cellShown(list[CellImage])``,
    ``overridesChanged()`` and ``retrainRequested()`` (the main window starts training).
    """

    analysisReady = Signal(object)
    cellShown = Signal(list)
    overridesChanged = Signal()
    retrainRequested = Signal()

    def __init__(self, context: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._context = context
        self._data: plots.ResultsData | None = None
        self._analysed_for: tuple[int, int] | None = None
        self._rows_cache: tuple[Any, dict[Path, Any]] = (None, {})
        self.corrections = corrections_for(context)
        self.corrections.changed.connect(self._on_corrections)
        self._build()
        context.modelChanged.connect(self._maybe_analyse)
        context.dataPrepared.connect(self._maybe_analyse)
        context.trainingStateChanged.connect(lambda _running: self._update_actions())
        self._update_actions()

    # -- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.analyse_button = QPushButton("Analyse validation set", self)
        self.analyse_button.clicked.connect(self.analyse)
        self.status = QLabel("Train a model (or load one) and open its data to see results.")
        self.progress = QProgressBar(self)
        self.progress.setVisible(False)
        self.progress.setMaximumWidth(220)
        # A real choice only when there is one: t-SNE needs scikit-learn (optional);
        # without it a drop-down with one entry pretended there was a choice.
        self.embedding_combo = QComboBox(self)
        self.embedding_combo.addItem("PCA map", "pca")
        if _sklearn_available():
            self.embedding_combo.addItem("t-SNE map", "tsne")
        self.embedding_combo.setToolTip("How the embedding map is drawn (next analysis)")
        self.embedding_label = QLabel("Embedding map: PCA", self)
        self.embedding_label.setToolTip(
            "Install scikit-learn for a t-SNE map as well (pip install scikit-learn)")
        single = self.embedding_combo.count() == 1
        self.embedding_combo.setVisible(not single)
        self.embedding_label.setVisible(single)
        bar = QHBoxLayout()
        bar.addWidget(self.analyse_button)
        bar.addWidget(self.embedding_combo)
        bar.addWidget(self.embedding_label)
        bar.addSpacing(12)
        bar.addWidget(self.progress)
        bar.addWidget(self.status, 1)

        self.tabs = QTabWidget(self)
        self.confusion = ConfusionPanel(self._context, self._override_note, self)
        self.confusion.cellShown.connect(self.cellShown)
        self._attach_menu(self.confusion.cell_grid)
        self._attach_viewer(self.confusion.cell_grid)
        self.confusion_canvas = self.confusion.canvas
        self.cell_grid = self.confusion.cell_grid
        self.cell_title = self.confusion.cell_title
        self.tabs.addTab(self.confusion, "Confusion matrix")
        self.tabs.addTab(self._build_losses(), "Top losses")
        self.per_class = PerClassTable(self)
        self.tabs.addTab(self.per_class, "Per class")
        self.embedding = EmbeddingPanel(self._context.runner, self)
        self.embedding.pointActivated.connect(self._open_embedding_point)
        self.embedding_canvas = self.embedding.canvas
        self.tabs.addTab(self.embedding, "Embedding map")
        self.filters = FiltersPanel(self._context, self)
        self.filters_canvas = self.filters.canvas
        self._attach_viewer(self.filters.grid)
        self.tabs.addTab(self.filters, "Filters")
        self.test_panel = TestSetPanel(self._context, self)
        self.tabs.addTab(self.test_panel, "Test set")

        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.tabs, 1)

    def _build_losses(self) -> QWidget:
        page = QWidget(self)
        self.loss_grid = ImageGrid(page, runner=self._context.runner, thumb_size=160)
        self.loss_grid.setGridSize(self.loss_grid.gridSize() + QSize(0, 32))
        self._attach_menu(self.loss_grid)
        self._attach_viewer(self.loss_grid)
        self.relabel_combo = QComboBox(page)
        self.relabel_button = QPushButton("Relabel selected", page)
        self.exclude_button = QPushButton("Exclude selected", page)
        self.clear_button = QPushButton("Clear override", page)
        self.changes_label = QLabel("", page)
        self.retrain_button = QPushButton("Retrain", page)
        self.retrain_button.setToolTip("Apply the corrections and train again")
        self.relabel_button.clicked.connect(
            lambda: self.relabel(self._selected_paths(), self.relabel_combo.currentText()))
        self.exclude_button.clicked.connect(lambda: self.exclude(self._selected_paths()))
        self.clear_button.clicked.connect(lambda: self.clear_override(self._selected_paths()))
        self.retrain_button.clicked.connect(self.request_retrain)
        self.loss_grid.itemsSelected.connect(lambda _items: self._update_actions())
        row = QHBoxLayout()
        row.addWidget(QLabel("Correct label:", page))
        row.addWidget(self.relabel_combo)
        for widget in (self.relabel_button, self.exclude_button, self.clear_button):
            row.addWidget(widget)
        row.addStretch(1)
        row.addWidget(self.changes_label)
        row.addWidget(self.retrain_button)
        hint = QLabel("The images the model is most wrong about, with where it looked. "
                      "Double-click (or Space) to look closer; right-click to relabel or "
                      "exclude. Your files are never changed.", page)
        hint.setWordWrap(True)
        layout = QVBoxLayout(page)
        layout.addWidget(hint)
        layout.addWidget(self.loss_grid, 1)
        layout.addLayout(row)
        return page

    def _attach_menu(self, grid: ImageGrid) -> None:
        def build(menu: QMenu, items: list[GridItem]) -> None:
            paths = [self._item_path(item) for item in items]
            relabel = menu.addMenu("Relabel as")
            for name in self._classes():
                relabel.addAction(name, lambda n=name: self.relabel(paths, n))
            menu.addAction("Exclude from training (Del)", lambda: self.exclude(paths))
            menu.addAction("Clear override", lambda: self.clear_override(paths))
            if len(items) == 1:
                menu.addAction("Open in viewer (Space)",
                               lambda: self.open_image(grid, items[0]))

        grid.set_menu_builder(build)
        shortcut = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), grid)
        shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
        shortcut.activated.connect(
            lambda: self.exclude([self._item_path(i) for i in grid.selected_items()]))

    def _attach_viewer(self, grid: ImageGrid) -> None:
        grid.itemActivated.connect(lambda item: self.open_image(grid, item))

    # -- the image viewer -------------------------------------------------------------------
    def _preview_item(self, path: Path) -> PreviewItem:
        """What the analysis knows about a validation image: its label and verdict."""
        row = self._rows_by_path().get(Path(path))
        if row is None:
            return PreviewItem(Path(path), detail="validation set")
        return PreviewItem(
            Path(path), label=f"Actual: {row.actual}",
            detail=f"predicted {row.predicted} ({row.prob:.0%}) · loss {row.loss:.2f} · "
                   "validation set")

    def _rows_by_path(self) -> dict[Path, Any]:
        if self._data is None:
            return {}
        rows = self._rows_cache
        if rows[0] is not self._data:
            rows = (self._data, {row.path: row for row in self._data.analysis.rows})
            self._rows_cache = rows
        return rows[1]

    def open_image(self, grid: ImageGrid, item: GridItem) -> Any:
        """Open ``item`` of ``grid`` in the image viewer; Left/Right walk the grid."""
        paths = [self._item_path(i) for i in grid.items()]
        path = self._item_path(item)
        if path not in paths:
            return None
        return open_preview(self._context, self, [self._preview_item(p) for p in paths],
                            paths.index(path))

    def _open_embedding_point(self, index: int) -> Any:
        embedding = self.embedding.embedding()
        if embedding is None:
            return None
        items = [self._preview_item(Path(p)) for p in embedding.paths]
        return open_preview(self._context, self, items, index)

    # -- analysis ---------------------------------------------------------------------------
    def _key(self) -> tuple[int, int] | None:
        predictor, prepared = self._context.predictor, self._context.prepared
        if predictor is None or prepared is None:
            return None
        return (id(predictor), id(prepared))

    def _maybe_analyse(self) -> None:
        self._update_actions()
        if self.isVisible() and self._key() is not None and self._key() != self._analysed_for:
            self.analyse()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self._maybe_analyse()

    def analyse(self) -> Any:
        """Start the validation-set analysis in a task (a running one is superseded);
        returns the task (or None)."""
        predictor, prepared = self._context.predictor, self._context.prepared
        if predictor is None or prepared is None:
            self.status.setText("Load a model and open its data folder first.")
            return None
        valid = list(prepared.plan.valid)
        self._analysed_for = self._key()
        self.status.setText(f"Analysing {len(valid)} validation images…")
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        return self._context.runner.start(
            plots.run_analysis, predictor, valid, embedding=self.embedding_combo.currentData(),
            owner=self, kind="analysis", on_event=self._on_progress,
            on_result=self._on_analysis, on_done=self._on_analysis_done,
            error_title="Analysis failed")

    def _on_progress(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.progress.setRange(0, max(1, event.total))
            self.progress.setValue(event.done)

    def _on_analysis_done(self, task: Task) -> None:
        self.progress.setVisible(False)
        if task.state is TaskState.CANCELLED:
            self._analysed_for = None  # cancelled: showing the page again retries
            self.status.setText("Analysis cancelled.")
        elif task.state is TaskState.FAILED:
            # Not retried by itself (the dialog would return on every visit): a new model
            # or new data, or the Analyse button, tries again.
            self.status.setText("Analysis failed.")

    def _on_analysis(self, data: plots.ResultsData) -> None:
        self.progress.setVisible(False)
        self._data = data
        result = data.analysis
        metrics = result.metrics
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        skipped = f" · {len(result.skipped)} unreadable" if result.skipped else ""
        self.status.setText(f"{result.count} validation images · {shown}{skipped}")
        self.relabel_combo.clear()
        self.relabel_combo.addItems(list(result.classes))
        self.confusion.show_analysis(result)
        self._fill_losses()
        self.per_class.show_report(result.per_class, metrics)
        self.embedding.show_embedding(result.embedding)
        valid = self._context.prepared.plan.valid if self._context.prepared is not None else ()
        self.filters.show_data(data, [li.item.path for li in valid])
        self._update_actions()
        self.analysisReady.emit(data)

    def results(self) -> plots.ResultsData | None:
        return self._data

    # -- confusion matrix (delegated to ConfusionPanel) ---------------------------------------
    def matrix_axes(self) -> Any:
        """The matplotlib axes of the confusion matrix (for locating cells)."""
        return self.confusion.axes()

    def show_cell(self, actual: int, predicted: int) -> Any:
        """List one cell's images (actual row, predicted column) with their maps."""
        return self.confusion.show_cell(actual, predicted)

    # -- top losses and overrides -------------------------------------------------------------
    def _fill_losses(self) -> None:
        if self._data is None:
            return
        items = []
        for loss, overlay in zip(self._data.analysis.top_losses, self._data.loss_overlays,
                                 strict=True):
            caption = (f"predicted {loss.predicted}\nactual {loss.actual}\n"
                       f"loss {loss.loss:.2f} · p {loss.prob:.2f}{self._override_note(loss.path)}")
            items.append(GridItem(
                path=loss.path, image=overlay, caption=caption, data=loss.path,
                tooltip=f"{loss.path}\npredicted {loss.predicted}, actually {loss.actual}",
                highlight=bool(self._override_note(loss.path))))
        self.loss_grid.set_items(items)

    def _item_path(self, item: GridItem) -> Path:
        return Path(item.data)

    def _selected_paths(self) -> list[Path]:
        return [self._item_path(item) for item in self.loss_grid.selected_items()]

    def _classes(self) -> list[str]:
        if self._data is not None:
            return list(self._data.analysis.classes)
        predictor = self._context.predictor
        return list(predictor.classes) if predictor is not None else []

    def _override_note(self, path: Path) -> str:
        return self.corrections.note(path)

    def relabel(self, paths: list[Path], label: str) -> int:
        """Record ``label`` for each image as a project override (files untouched)."""
        return self.corrections.relabel(paths, label)

    def exclude(self, paths: list[Path]) -> int:
        """Leave these images out of training from now on (a project override)."""
        return self.corrections.exclude(paths)

    def clear_override(self, paths: list[Path]) -> int:
        return self.corrections.clear(paths)

    def _on_corrections(self, _rels: list[str]) -> None:
        """An override changed (here, in the viewer or on the Data tab): re-caption."""
        self._fill_losses()
        self.confusion.refresh_notes()
        self._update_actions()
        self.overridesChanged.emit()

    def request_retrain(self) -> None:
        """Re-apply labels with the overrides, then ask the window to start training."""
        task = self._context.relabel() if self.corrections.pending() else None
        if task is None:
            self.retrainRequested.emit()
            return
        task.finished.connect(lambda _state: self._after_relabel())
        task.done.connect(self._update_actions)

    def _after_relabel(self) -> None:
        self.corrections.mark_applied()
        self._update_actions()
        self.retrainRequested.emit()

    def _update_actions(self) -> None:
        has_selection = bool(self.loss_grid.selected_items())
        for button in (self.relabel_button, self.exclude_button, self.clear_button):
            button.setEnabled(has_selection and self._context.project is not None)
        self.analyse_button.setEnabled(self._key() is not None)
        self.retrain_button.setEnabled(self._context.prepared is not None
                                       and not self._context.training_running)
        pending = self.corrections.pending()
        self.changes_label.setText(
            f"{pending} correction(s) since the last training" if pending else "")


def _sklearn_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None
