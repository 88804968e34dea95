"""The Results page's confusion-matrix tab: the matrix, and the images behind a cell.

Clicking a cell (actual row, predicted column) lists the validation images that landed
there (the analysis's per-image rows, ``Analysis.cell``), each with its probabilities
and an activation map for the predicted class, computed in a worker; the cell stays
outlined on the matrix so it is clear whose images are listed. The same context menu as
the top-losses grid (relabel, exclude) and the image viewer are attached by the page.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QLabel, QSplitter, QVBoxLayout, QWidget

from loupe.desktop.pages import results_plots as plots
from loupe.desktop.widgets.image_grid import GridItem, ImageGrid
from loupe.desktop.widgets.mpl_canvas import MplCanvas


class ConfusionPanel(QWidget):
    """Matrix on the left, the clicked cell's images on the right.

    ``cellShown(list[CellImage])`` fires when a cell's images and maps are on screen.
    ``note_for(path)`` is the page's function that says if an image has an override.
    """

    cellShown = Signal(list)

    def __init__(self, context: Any, note_for: Callable[[Path], str],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._context = context
        self._note_for = note_for
        self._analysis: Any = None
        self._axes: Any = None
        self._title = ""
        self._cell: tuple[int, int] | None = None
        self._marker: Any = None
        self.canvas = MplCanvas(self, width=5, height=5)
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.normalize_check = QCheckBox("Normalize rows", self)
        self.normalize_check.toggled.connect(lambda _on: self._draw())
        self.confused_label = QLabel("", self)
        self.confused_label.setWordWrap(True)
        self.cell_title = QLabel("Click a cell to see its images.", self)
        self.cell_title.setWordWrap(True)
        self.cell_grid = ImageGrid(self, runner=context.runner, thumb_size=144)
        left = QWidget(self)
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.canvas, 1)
        left_layout.addWidget(self.normalize_check)
        left_layout.addWidget(self.confused_label)
        right = QWidget(self)
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.cell_title)
        right_layout.addWidget(self.cell_grid, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

    def show_analysis(self, analysis: Any) -> None:
        """Draw the matrix and open the most confused cell, where the errors are."""
        self._analysis = analysis
        self._cell = None
        self.cell_grid.set_items([])
        self.cell_title.setText("Click a cell to see its images.")
        self._draw()
        if analysis.confusion is not None and analysis.most_confused:
            pair = analysis.most_confused[0]
            self.show_cell(analysis.classes.index(pair.actual),
                           analysis.classes.index(pair.predicted))

    def axes(self) -> Any:
        """The matplotlib axes of the matrix (for locating cells)."""
        return self._axes

    def _draw(self) -> None:
        if self._analysis is None:
            return
        self._axes = plots.draw_confusion(self.canvas, self._analysis.confusion,
                                          normalized=self.normalize_check.isChecked())
        self._marker = None
        self._mark_cell()
        pairs = self._analysis.most_confused[:5]
        text = "; ".join(f"{p.actual} → {p.predicted}: {p.count}" for p in pairs)
        self.confused_label.setText(f"Most confused: {text}" if text else "No confusions.")

    def _on_click(self, event: Any) -> None:
        confusion = self._analysis.confusion if self._analysis is not None else None
        if confusion is None or event.inaxes is not self._axes or event.xdata is None:
            return
        row, column = int(round(event.ydata)), int(round(event.xdata))
        n = len(confusion.classes)
        if 0 <= row < n and 0 <= column < n:
            self.show_cell(row, column)

    def show_cell(self, actual: int, predicted: int) -> Any:
        """List the images of one cell (actual row, predicted column) with their maps."""
        if self._analysis is None or self._context.predictor is None:
            return None
        names = self._analysis.classes
        self._cell = (actual, predicted)
        self._mark_cell()
        # The analysis's own per-image rows: exactly the images this cell counts.
        rows = self._analysis.cell(actual, predicted)
        entries = [(row.path, row.actual) for row in rows]
        more = f" (showing {plots.CELL_LIMIT})" if len(entries) > plots.CELL_LIMIT else ""
        self._title = (
            f"Actual {names[actual]}, predicted {names[predicted]}: {len(entries)} images{more}")
        # The maps take seconds; list the cell's own images at once (the analysis already
        # has their predictions) instead of leaving the previous cell's under this title.
        self.cell_title.setText(self._title + " · computing activation maps…")
        self.cell_grid.set_items([
            GridItem(path=Path(row.path), caption=f"{row.predicted} {row.prob:.0%}"
                     + self._note_for(Path(row.path)), data=Path(row.path),
                     tooltip=f"{row.path}\nactual {row.actual}")
            for row in rows[:plots.CELL_LIMIT]
        ])
        return self._context.runner.start(  # the previous cell's maps are superseded
            plots.cell_images, self._context.predictor, entries, owner=self,
            kind="cell-images", on_result=self._on_images, error_title="Cannot show the cell")

    def highlighted_cell(self) -> tuple[int, int] | None:
        """(actual row, predicted column) of the outlined cell."""
        return self._cell if self._marker is not None else None

    def marker(self) -> Any:
        """The outline drawn around the listed cell (a matplotlib Rectangle), or None."""
        return self._marker

    def _mark_cell(self) -> None:
        """Outline the listed cell (replacing the previous outline)."""
        from matplotlib.patches import Rectangle

        if self._marker is not None:
            self._marker.remove()
            self._marker = None
        if self._cell is None or self._axes is None or self._analysis.confusion is None:
            return
        row, column = self._cell
        self._marker = Rectangle((column - 0.5, row - 0.5), 1.0, 1.0, fill=False,
                                 edgecolor="#f58518", linewidth=3.5, zorder=5,
                                 clip_on=False)
        self._axes.add_patch(self._marker)
        self.canvas.redraw()

    def refresh_notes(self) -> None:
        """Re-caption the listed images after an override changed."""
        for item in self.cell_grid.items():
            item.caption = item.caption.split("\n[")[0] + self._note_for(Path(item.data))
        self.cell_grid.viewport().update()

    def _on_images(self, images: list[plots.CellImage]) -> None:
        self.cell_title.setText(f"{self._title} — double-click an image to look closer; "
                                "right-click to relabel or exclude it")
        items = []
        for image in images:
            top = image.prediction.top
            caption = f"{top[0][0]} {top[0][1]:.0%}" if top else "(no label)"
            caption += self._note_for(image.path)
            tip = ", ".join(f"{name} {p:.1%}" for name, p in top)
            items.append(GridItem(image=image.overlay, caption=caption, data=image.path,
                                  tooltip=f"{image.path}\nactual {image.actual}\n{tip}"))
        self.cell_grid.set_items(items)
        self.cellShown.emit(images)
