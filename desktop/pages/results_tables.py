"""Results page panels that are tables: per-class metrics, and the test-set check.

The test set is the one honest estimate a user has; every look at it spends some of
that honesty, because the next decision is taken knowing its result. The engine counts
the looks per run; this panel shows the count before the button and asks again when the
set has already been looked at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
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

from loupe.desktop.widgets.mpl_canvas import MplCanvas
from loupe.desktop.workers import Task, TaskState

PRF_COLUMNS = ("class", "precision", "recall", "f1", "support")
_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter


def _draw_prf(canvas: MplCanvas, rows: Sequence[Mapping[str, Any]]) -> None:
    """Grouped bars: precision, recall and F1 per class (at most 30 classes drawn)."""
    ax = canvas.axes()
    shown = list(rows)[:30]
    names = [str(row.get("class", "")) for row in shown]
    width = 0.27
    for offset, key in enumerate(("precision", "recall", "f1")):
        values = [float(row.get(key, 0.0)) for row in shown]
        ax.bar([i + (offset - 1) * width for i in range(len(shown))], values, width, label=key)
    ax.set_xticks(range(len(shown)), labels=names, rotation=45 if len(shown) > 6 else 0,
                  ha="right" if len(shown) > 6 else "center")
    ax.set_ylim(0, 1.05)
    ax.grid(True, axis="y", alpha=0.3)
    # Above the plot: bars rise from the bottom, so "lower right" covered the last class.
    ax.legend(fontsize="x-small", ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              frameon=False)
    canvas.redraw()


class PerClassTable(QWidget):
    """Create ML's per-class precision/recall/F1 table, plus the overall metrics."""

    def __init__(self, parent: QWidget | None = None, empty_text: str = "No analysis yet.",
                 *, chart: bool = True) -> None:
        super().__init__(parent)
        self.summary = QLabel(empty_text, self)
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, len(PRF_COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(PRF_COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # the model's class order
        self.table.setSortingEnabled(True)
        self.chart = MplCanvas(self, width=6, height=2.5) if chart else None
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        if self.chart is None:
            layout.addWidget(self.table, 1)
        else:
            splitter = QSplitter(Qt.Orientation.Vertical, self)
            splitter.addWidget(self.table)
            splitter.addWidget(self.chart)
            splitter.setStretchFactor(0, 1)
            splitter.setStretchFactor(1, 2)
            layout.addWidget(splitter, 1)

    def show_report(self, rows: Sequence[Mapping[str, Any]],
                    metrics: Mapping[str, float] | None = None) -> None:
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, key in enumerate(PRF_COLUMNS):
                value = row.get(key, "")
                item = QTableWidgetItem()
                if isinstance(value, float):
                    item.setData(Qt.ItemDataRole.DisplayRole, round(value, 4))
                elif isinstance(value, int):
                    item.setData(Qt.ItemDataRole.DisplayRole, value)
                else:
                    item.setText(str(value))
                if c:
                    item.setTextAlignment(_RIGHT)
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        if metrics:
            self.summary.setText(" · ".join(f"{k}: {v:.4f}" for k, v in sorted(metrics.items())))
        if self.chart is not None:
            _draw_prf(self.chart, rows)

    def cell_text(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text() if item is not None else ""


class TestSetPanel(QWidget):
    """"Evaluate on test set" with the look counter and a confirmation after the first look.

    ``evaluated(dict)`` carries the engine's result.
    """

    evaluated = Signal(object)

    def __init__(self, context: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._context = context
        self._looks: int | None = None
        self.warning = QLabel(self)
        self.warning.setWordWrap(True)
        self.button = QPushButton("Evaluate on test set", self)
        self.button.clicked.connect(self.ask_evaluate)
        self.result_label = QLabel("", self)
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.report = PerClassTable(self, "Not evaluated yet.", chart=False)
        self.report.setVisible(False)
        layout = QVBoxLayout(self)
        layout.addWidget(self.warning)
        layout.addWidget(self.button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.result_label)
        layout.addWidget(self.report, 1)
        layout.addStretch(0)
        context.modelChanged.connect(self.refresh)
        context.dataPrepared.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the look count (a task: it hashes the bundle) and update the text.
        A newer model's count supersedes the previous one's."""
        self._show_looks()
        path = self._context.model_path
        if path is None:
            return
        from loupe.engine.training.scoring import test_looks

        self._context.runner.start(test_looks, Path(path), owner=self, kind="test-looks",
                                   on_result=self._on_looks,
                                   error_title="Cannot count the test-set looks")

    def _on_looks(self, looks: int) -> None:
        self._looks = int(looks)
        self._show_looks()

    def _show_looks(self) -> None:
        looks, test_count = self._looks, self._test_count()
        self.button.setEnabled(test_count > 0 and self._context.model_path is not None
                               and not self._context.runner.is_running("evaluate-test",
                                                                        owner=self))
        if test_count == 0:
            self.warning.setText(
                "This split has no test set. Give the split a test fraction on the Data "
                "page to keep some images aside for one final, honest check.")
            return
        if looks is None:
            seen = "has been looked at … (counting)"
        elif looks == 0:
            seen = "has never been looked at"
        else:
            seen = "has been looked at " + ("once" if looks == 1 else f"{looks} times")
        self.warning.setText(
            f"<b>The test set ({test_count} images) {seen}</b> with this model. Use it once, "
            "at the end: every look that influences what you do next makes its score less "
            "trustworthy.")

    def looks(self) -> int | None:
        """Looks at the test set with the current model (None until counted)."""
        return self._looks

    def _test_count(self) -> int:
        prepared = self._context.prepared
        return 0 if prepared is None else len(prepared.plan.test)

    def ask_evaluate(self) -> None:
        looks = self._looks or 0
        if looks > 0:
            answer = QMessageBox.question(
                self, "Look at the test set again?",
                f"The test set has already been looked at {looks} time(s) for this model. "
                "Looking again and then changing the model turns it into a second validation "
                "set. Evaluate anyway?")
            if answer != QMessageBox.StandardButton.Yes:
                return
        self.evaluate()

    def evaluate(self) -> Any:
        """Evaluate the current bundle on the test set in a task (counts one look)."""
        from loupe.engine.training.scoring import evaluate

        path, prepared = self._context.model_path, self._context.prepared
        if path is None or prepared is None:
            return None
        task = self._context.runner.start(
            evaluate, path, prepared, test=True, owner=self, kind="evaluate-test",
            on_result=self._on_result, on_done=self._on_evaluated,
            error_title="Test-set evaluation failed")
        self.button.setEnabled(False)
        self.result_label.setText("Evaluating on the test set…")
        return task

    def _on_result(self, result: Any) -> None:
        shown = " · ".join(f"{k}: {v:.4f}" for k, v in sorted(result.metrics.items())
                           if isinstance(v, int | float))
        self.result_label.setText(
            f"Test set, {result.n_images} images: {shown}"
            + "".join(f"<br><b>Warning:</b> {w}" for w in result.warnings))
        self.report.show_report(result.per_class, result.metrics)
        self.report.setVisible(True)
        if result.test_looks is not None:
            self._looks = result.test_looks
        self._show_looks()
        self.evaluated.emit(result)

    def _on_evaluated(self, task: Task) -> None:
        if task.state is not TaskState.FINISHED:
            self.result_label.setText("")
            self.refresh()
