"""The Data page's images up close: preview and corrections on the table and samples.

Double-click (or Space) on a row of the label preview, or on a sample thumbnail, opens
the image viewer; the right-click menu offers the same Relabel / Exclude / Include again
/ Undo as the Results page (``pages.image_corrections``). A correction made here re-applies
the labels at once (a worker, as a rule edit does), so an excluded image shows as
"excluded (project override)" and can be brought back from the same menu.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QModelIndex, QObject, QPoint, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QMenu, QTableView

from loupe.desktop.pages.data_views import PreviewFilter, PreviewModel
from loupe.desktop.pages.image_corrections import corrections_for
from loupe.desktop.pages.image_preview import PreviewItem, open_preview
from loupe.desktop.widgets.image_grid import GridItem, ImageGrid

# Rows handed to the viewer around the opened one (Left/Right walk them): a 100k-image
# table must not build 100k items on the GUI thread.
NAVIGATION_SPAN = 500


class DataImageActions(QObject):
    """Wires the viewer and the correction menu into the table and the samples grid."""

    def __init__(self, context: Any, table: QTableView, proxy: PreviewFilter,
                 model: PreviewModel, samples: ImageGrid,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._context = context
        self.table, self._proxy, self._model, self.samples = table, proxy, model, samples
        self.corrections = corrections_for(context)
        table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        table.customContextMenuRequested.connect(self._show_menu)
        table.doubleClicked.connect(lambda index: self.open_row(index.row()))
        table.installEventFilter(self)
        table.setToolTip("Double-click or press Space to look at an image; right-click to "
                         "relabel, exclude or include it again")
        samples.itemActivated.connect(self.open_sample)
        samples.set_menu_builder(self._fill_sample_menu)

    # -- opening ---------------------------------------------------------------------------
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (watched is self.table and event.type() == QEvent.Type.KeyPress
                and isinstance(event, QKeyEvent) and event.key() == Qt.Key.Key_Space
                and self.table.currentIndex().isValid()):
            self.open_row(self.table.currentIndex().row())
            return True
        return super().eventFilter(watched, event)

    def _source_row(self, proxy_row: int) -> int:
        return self._proxy.mapToSource(self._proxy.index(proxy_row, 0)).row()

    def _item_for(self, source_row: int) -> PreviewItem:
        rel, label, status = self._model.row_values(source_row)
        where = f"{status} set" if status in ("train", "valid", "test") else status
        return PreviewItem(Path(self._model.row_path(source_row)),
                           label=f"Label: {label}" if label else "", detail=where)

    def open_row(self, proxy_row: int) -> Any:
        """Open the table's row (as sorted and filtered) in the viewer."""
        count = self._proxy.rowCount()
        if not 0 <= proxy_row < count:
            return None
        first = max(0, proxy_row - NAVIGATION_SPAN)
        last = min(count, proxy_row + NAVIGATION_SPAN + 1)
        items = [self._item_for(self._source_row(r)) for r in range(first, last)]
        return open_preview(self._context, self.table, items, proxy_row - first,
                            after_change=self._context.relabel)

    def open_sample(self, item: GridItem) -> Any:
        grid_items = self.samples.items()
        if item not in grid_items:
            return None
        items = [PreviewItem(Path(i.path), label=f"Label: {i.caption}", detail="train set")
                 for i in grid_items if i.path is not None]
        return open_preview(self._context, self.samples, items, grid_items.index(item),
                            after_change=self._context.relabel)

    # -- the context menu --------------------------------------------------------------------
    def selected_paths(self) -> list[Path]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [Path(self._model.row_path(self._source_row(r))) for r in rows]

    def build_menu(self, paths: list[Path], open_row: int | None = None) -> QMenu:
        """The menu for ``paths`` (separate from showing it, so tests can read it)."""
        menu = QMenu(self.table)
        if open_row is not None:
            menu.addAction("Open (Space)", lambda: self.open_row(open_row))
        self._add_corrections(menu, paths)
        return menu

    def _add_corrections(self, menu: QMenu, paths: list[Path]) -> None:
        corrections = self.corrections
        editable = [p for p in paths if corrections.editable(p)]
        if not editable:
            return
        relabel = menu.addMenu("Relabel as")
        for name in corrections.classes():
            relabel.addAction(name, lambda n=name: self._correct(
                lambda: corrections.relabel(editable, n)))
        if any(corrections.state(p) != ("exclude", ()) for p in editable):
            menu.addAction("Exclude from training",
                           lambda: self._correct(lambda: corrections.exclude(editable)))
        if any(corrections.state(p) is not None for p in editable):
            menu.addAction("Include again (clear the override)",
                           lambda: self._correct(lambda: corrections.clear(editable)))
        if len(editable) == 1 and corrections.can_undo(editable[0]):
            menu.addAction("Undo the last correction",
                           lambda: self._correct(lambda: corrections.undo(editable[0])))

    def _correct(self, change: Any) -> None:
        if change():
            self._context.relabel()  # the table, counts and split show it at once

    def _show_menu(self, pos: QPoint) -> None:
        index: QModelIndex = self.table.indexAt(pos)
        if not index.isValid():
            return
        if not self.table.selectionModel().isRowSelected(index.row(), QModelIndex()):
            self.table.selectRow(index.row())
        paths = self.selected_paths()
        menu = self.build_menu(paths, index.row() if len(paths) == 1 else None)
        if not menu.isEmpty():
            menu.exec(self.table.viewport().mapToGlobal(pos))

    def _fill_sample_menu(self, menu: QMenu, items: list[GridItem]) -> None:
        if len(items) == 1:
            menu.addAction("Open (Space)", lambda: self.open_sample(items[0]))
        self._add_corrections(menu, [Path(i.path) for i in items if i.path is not None])
