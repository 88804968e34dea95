"""Read-only views of the Data page: label preview, rejected files, counts chart, samples.

The table models keep references to the engine's results and format rows on demand, so
a 100k-image folder costs no per-row widgets.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QBrush, QColor, QPalette
from PySide6.QtWidgets import QWidget

from loupe.desktop.widgets.image_grid import GridItem
from loupe.desktop.widgets.mpl_canvas import MplCanvas

_Index = QModelIndex | QPersistentModelIndex
SET_NAMES = ("train", "valid", "test")
SET_COLOURS = {"train": "#4c78a8", "valid": "#f58518", "test": "#54a24b"}
MAX_CHART_CLASSES = 40


def _warning_brush(palette: QPalette) -> QBrush:
    """A background that reads as 'attention' in light and dark palettes."""
    dark = palette.color(QPalette.ColorRole.Base).lightness() < 128
    return QBrush(QColor(110, 45, 30) if dark else QColor(255, 224, 204))


class _RowsModel(QAbstractTableModel):
    """A read-only table of tuples: the first ``len(HEADERS)`` fields are the columns."""

    HEADERS: tuple[str, ...] = ()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[tuple[Any, ...]] = []

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if index.isValid() and role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return self._rows[index.row()][index.column()]
        return None

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None


class PreviewModel(_RowsModel):
    """File → label(s) → set, then unmatched files (highlighted) and excluded ones."""

    HEADERS = ("File", "Label", "Set / reason")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # rows are (rel, label, set or reason, unmatched, path, excluded)
        self._brush = QBrush()

    def set_data(self, labelling: Any, plan: Any, palette: QPalette) -> None:
        """Rows from an ``engine.data.labels.Labelling`` and (if the split worked) its plan."""
        self.beginResetModel()
        self._brush = _warning_brush(palette)
        where: dict[str, str] = {}
        if plan is not None:
            for name, items in plan.sets().items():
                where.update((li.item.rel, name) for li in items)
        rows: list[tuple[str, str, str, bool, Any, bool]] = []
        if labelling is not None:
            rows.extend(
                (li.item.rel, ", ".join(li.labels), where.get(li.item.rel, "—"), False,
                 li.item.path, False)
                for li in labelling.labelled
            )
            rows.extend(
                (u.item.rel, "", f"unmatched: {u.reason}", True, u.item.path, False)
                for u in labelling.unmatched
            )
            rows.extend((item.rel, "", "excluded (project override)", False, item.path, True)
                        for item in labelling.excluded)
        self._rows = rows
        self.endResetModel()

    def is_unmatched(self, row: int) -> bool:
        return self._rows[row][3]

    def unmatched_rows(self) -> list[int]:
        return [i for i, row in enumerate(self._rows) if row[3]]

    def row_values(self, row: int) -> tuple[str, str, str]:
        rel, label, status = self._rows[row][:3]
        return rel, label, status

    def row_path(self, row: int) -> Any:
        """The image file of a row (what the viewer and the corrections take)."""
        return self._rows[row][4]

    def is_excluded(self, row: int) -> bool:
        return self._rows[row][5]

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if (role == Qt.ItemDataRole.BackgroundRole and index.isValid()
                and self._rows[index.row()][3]):
            return self._brush
        return super().data(index, role)


class PreviewFilter(QSortFilterProxyModel):
    """Text filter over every column, optionally only the unmatched rows."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFilterKeyColumn(-1)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setSortCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self._only_unmatched = False

    def set_only_unmatched(self, only: bool) -> None:
        self.beginFilterChange()
        self._only_unmatched = only
        self.endFilterChange()

    def filterAcceptsRow(self, source_row: int, source_parent: _Index) -> bool:
        model = self.sourceModel()
        if self._only_unmatched and isinstance(model, PreviewModel):
            if not model.is_unmatched(source_row):
                return False
        return super().filterAcceptsRow(source_row, source_parent)


class RejectedModel(_RowsModel):
    """Files the scan could not use, with the engine's human reason."""

    HEADERS = ("File", "Why it was rejected")

    def set_scan(self, scan: Any) -> None:
        self.beginResetModel()
        self._rows = [(r.rel, r.reason) for r in (scan.rejected if scan is not None else ())]
        self.endResetModel()


class CountsChart(MplCanvas):
    """Images per class in each set, as grouped horizontal bars (one row per class)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, width=5.0, height=3.0)
        self.shown_counts: dict[str, dict[str, int]] = {}
        self.show_counts({})

    def show_counts(self, counts: dict[str, dict[str, int]]) -> None:
        ax = self.axes()
        classes = list(counts)[:MAX_CHART_CLASSES]
        self.shown_counts = {c: dict(counts[c]) for c in classes}
        if not classes:
            ax.text(0.5, 0.5, "No labelled images yet", ha="center", va="center",
                    color=self.foreground(), transform=ax.transAxes)
            ax.set_axis_off()
            self.redraw()
            return
        sets = [s for s in SET_NAMES if any(counts[c].get(s, 0) for c in classes)] or ["train"]
        height = 0.8 / len(sets)
        for i, name in enumerate(sets):
            ys = [row + (i - (len(sets) - 1) / 2) * height for row in range(len(classes))]
            ax.barh(ys, [counts[c].get(name, 0) for c in classes], height=height,
                    color=SET_COLOURS[name], label=name)
        ax.set_yticks(range(len(classes)), classes)
        ax.invert_yaxis()
        ax.set_xlabel("images")
        title = "Images per class and set"
        if len(counts) > MAX_CHART_CLASSES:
            title += f" (first {MAX_CHART_CLASSES} of {len(counts)} classes)"
        ax.set_title(title)
        legend = ax.legend(loc="lower right", fontsize="small")
        for text in legend.get_texts():
            text.set_color(self.foreground())
        legend.get_frame().set_alpha(0.6)
        self.redraw()


def sample_items(plan: Any, limit: int = 36) -> list[GridItem]:
    """fastai's show_batch: a few training images of every class, round-robin by class,
    in the split's (deterministic) order."""
    if plan is None:
        return []
    by_class: dict[str, list[Any]] = {c: [] for c in plan.classes}
    for li in plan.train:
        bucket = by_class.get(li.labels[0]) if li.labels else None
        if bucket is not None and len(bucket) < limit:
            bucket.append(li)
    picked: list[Any] = []
    while len(picked) < limit and any(by_class.values()):
        for bucket in by_class.values():
            if bucket and len(picked) < limit:
                picked.append(bucket.pop(0))
    return [
        GridItem(path=li.item.path, caption=", ".join(li.labels), tooltip=li.item.rel,
                 data=li.item.rel)
        for li in picked
    ]
