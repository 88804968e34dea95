"""The fastai-style epoch table: one row per finished epoch, filled live during training.

Columns are epoch, train_loss, valid_loss, error_rate, then any other metric the engine
reports (accuracy, f1, ...), then time as mm:ss. A "phase" column appears once an epoch
carries a phase (frozen / unfrozen), as fastai's fine_tune prints two tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QWidget

_FIXED = ("train_loss", "valid_loss", "error_rate")
_TIME_KEYS = ("seconds", "time", "epoch_seconds")
# Bookkeeping the engine logs per epoch that is not a metric (fastai's table omits it).
_HIDDEN = frozenset({"epoch", "phase", "total_epochs", "batch_size", "size", "lr", "lrs",
                     *_TIME_KEYS})


def format_seconds(seconds: float | None) -> str:
    """fastai prints epoch time as mm:ss (h:mm:ss past an hour)."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _format_metric(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(float(value)):
            return str(value)
        return f"{float(value):.6f}"
    return "" if value is None else str(value)


class EpochTableModel(QStandardItemModel):
    """Rows of (epoch, phase, metrics, seconds); columns grow when a new metric appears.

    Why a QStandardItemModel: its cells live in C++, so painting, sizing columns to their
    contents and scrolling never call back into Python. A Python ``data()`` override is
    called for every role of every cell on each layout, and each call must take the GIL
    from the training threads; at the first epoch's end (new metric columns, the whole
    table re-measured) those hand-overs stalled the GUI thread for 15-20 ms.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[dict[str, Any]] = []
        self._metrics: list[str] = list(_FIXED)
        self._show_phase = False
        self._font = QFont()
        self._font.setStyleHint(QFont.StyleHint.Monospace)
        self._font.setFamily("monospace")
        self.setHorizontalHeaderLabels(self.columns())

    def columns(self) -> list[str]:
        """Header names, in display order."""
        head = ["epoch", "phase"] if self._show_phase else ["epoch"]
        return [*head, *self._metrics, "time"]

    def add_row(self, epoch: int, metrics: Mapping[str, Any], phase: str = "") -> None:
        seconds = next((metrics[k] for k in _TIME_KEYS if k in metrics), None)
        new_metrics = [k for k in metrics if k not in _HIDDEN and k not in self._metrics]
        if phase and not self._show_phase:
            self._show_phase = True
            self._insert_column(1)
        for name in new_metrics:  # before "time", in the order the engine reports them
            self._metrics.append(name)
            self._insert_column(len(self.columns()) - 2)
        self._rows.append({"epoch": epoch, "phase": phase, "m": dict(metrics), "s": seconds})
        row = len(self._rows) - 1
        self.appendRow([self._item(row, c) for c in range(len(self.columns()))])

    def _insert_column(self, column: int) -> None:
        """Insert ``column`` (already in :meth:`columns`) with its cells for existing rows."""
        self.insertColumn(column, [self._item(r, column) for r in range(len(self._rows))])
        self.setHorizontalHeaderItem(column, QStandardItem(self.columns()[column]))

    def _item(self, row: int, column: int) -> QStandardItem:
        item = QStandardItem(self.cell_text(row, column))
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        item.setFont(self._font)
        item.setEditable(False)
        return item

    def clear(self) -> None:
        super().clear()
        self._rows.clear()
        self._metrics = list(_FIXED)
        self._show_phase = False
        self.setHorizontalHeaderLabels(self.columns())

    def cell_text(self, row: int, column: int) -> str:
        """The text shown at (row, column); also what tests and copy-paste read."""
        name = self.columns()[column]
        data = self._rows[row]
        if name == "epoch":
            epoch = data["epoch"]
            whole = isinstance(epoch, float) and epoch.is_integer()
            return str(int(epoch)) if whole else str(epoch)
        if name == "phase":
            return data["phase"]
        if name == "time":
            return format_seconds(data["s"])
        return _format_metric(data["m"].get(name))


class EpochTable(QTableView):
    """Read-only view of :class:`EpochTableModel` that keeps the newest epoch visible.

    Feed it with :meth:`add_epoch_event` (an ``engine.core.events.EpochEnded``) from a slot, or
    :meth:`set_history` with a run's saved per-epoch rows.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model = EpochTableModel(self)
        self.setModel(self._model)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setVisible(False)
        # Every column as wide as its contents; the last one ("time") used to stretch
        # over the rest of the table, so mm:ss sat far to the right of its header.
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(False)

    @property
    def table_model(self) -> EpochTableModel:
        return self._model

    def add_epoch(self, epoch: int, metrics: Mapping[str, Any], phase: str = "") -> None:
        self._model.add_row(epoch, metrics, phase)
        self._fit_columns()
        self.scrollToBottom()

    def _fit_columns(self) -> None:
        """Widen columns to a new row's text: ResizeToContents does not re-measure on an
        appended row ("unfrozen" after "frozen" showed as "unfro…")."""
        self.horizontalHeader().resizeSections(QHeaderView.ResizeMode.ResizeToContents)

    def add_epoch_event(self, event: Any) -> None:
        """Append an ``EpochEnded`` event (epoch, phase, metrics)."""
        self.add_epoch(event.epoch, event.metrics, event.phase or "")

    def set_history(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Replace the table with saved rows, each a dict with "epoch" and metric keys."""
        self._model.clear()
        for index, row in enumerate(rows):
            epoch = int(row.get("epoch", index))
            self._model.add_row(epoch, row, str(row.get("phase", "") or ""))
        self._fit_columns()
        self.scrollToBottom()

    def clear(self) -> None:
        self._model.clear()

    def row_count(self) -> int:
        return self._model.rowCount()
