"""The fastai-style epoch table: one row per finished epoch, filled live during training.

Columns are epoch, train_loss, valid_loss, error_rate, then any other metric the engine
reports (accuracy, f1, ...), then time as mm:ss. A "phase" column appears once an epoch
carries a phase (frozen / unfrozen), as fastai's fine_tune prints two tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QWidget

_FIXED = ("train_loss", "valid_loss", "error_rate")
_TIME_KEYS = ("seconds", "time", "epoch_seconds")
# Bookkeeping the engine logs per epoch that is not a metric (fastai's table omits it).
_HIDDEN = frozenset({"epoch", "phase", "total_epochs", "batch_size", "size", "lr", "lrs",
                     *_TIME_KEYS})

_Index = QModelIndex | QPersistentModelIndex


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


class EpochTableModel(QAbstractTableModel):
    """Rows of (epoch, phase, metrics, seconds); columns grow when a new metric appears."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[dict[str, Any]] = []
        self._metrics: list[str] = list(_FIXED)
        self._show_phase = False

    def columns(self) -> list[str]:
        """Header names, in display order."""
        head = ["epoch", "phase"] if self._show_phase else ["epoch"]
        return [*head, *self._metrics, "time"]

    def add_row(self, epoch: int, metrics: Mapping[str, Any], phase: str = "") -> None:
        seconds = next((metrics[k] for k in _TIME_KEYS if k in metrics), None)
        new_metrics = [k for k in metrics if k not in _HIDDEN and k not in self._metrics]
        if new_metrics or (phase and not self._show_phase):
            self.beginResetModel()
            self._metrics.extend(new_metrics)
            self._show_phase = self._show_phase or bool(phase)
            self._rows.append({"epoch": epoch, "phase": phase, "m": dict(metrics), "s": seconds})
            self.endResetModel()
            return
        row = len(self._rows)
        self.beginInsertRows(QModelIndex(), row, row)
        self._rows.append({"epoch": epoch, "phase": phase, "m": dict(metrics), "s": seconds})
        self.endInsertRows()

    def clear(self) -> None:
        self.beginResetModel()
        self._rows.clear()
        self._metrics = list(_FIXED)
        self._show_phase = False
        self.endResetModel()

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

    # Qt model interface -------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns())

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.cell_text(index.row(), index.column())
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.FontRole:
            font = QFont()
            font.setStyleHint(QFont.StyleHint.Monospace)
            font.setFamily("monospace")
            return font
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self.columns()[section]
        return None


class EpochTable(QTableView):
    """Read-only view of :class:`EpochTableModel` that keeps the newest epoch visible.

    Feed it with :meth:`add_epoch_event` (an ``engine.events.EpochEnded``) from a slot, or
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
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)

    @property
    def table_model(self) -> EpochTableModel:
        return self._model

    def add_epoch(self, epoch: int, metrics: Mapping[str, Any], phase: str = "") -> None:
        self._model.add_row(epoch, metrics, phase)
        self.scrollToBottom()

    def add_epoch_event(self, event: Any) -> None:
        """Append an ``EpochEnded`` event (epoch, phase, metrics)."""
        self.add_epoch(event.epoch, event.metrics, event.phase or "")

    def set_history(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Replace the table with saved rows, each a dict with "epoch" and metric keys."""
        self._model.clear()
        for index, row in enumerate(rows):
            epoch = int(row.get("epoch", index))
            self._model.add_row(epoch, row, str(row.get("phase", "") or ""))
        self.scrollToBottom()

    def clear(self) -> None:
        self._model.clear()

    def row_count(self) -> int:
        return self._model.rowCount()
