"""The Predict page's folder panel: batch prediction with progress, cancel and CSV.

``engine.inference.folder.predict_folder`` does the work (scan, batched prediction, CSV written
atomically) in a worker; the CSV first goes to Loupe's cache folder, and "Save CSV…"
writes the same rows, atomically, wherever the user chooses. The panel never writes
into the predicted folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from loupe.desktop.file_dialogs import dialogs
from loupe.desktop.workers import Task, TaskState
from loupe.engine.core.events import Finished, Progress, Started

ROW_LIMIT = 5000  # rows shown in the table; the CSV always has all of them


def _predict_folder_locked(predictor: Any, folder: Path, csv_path: Path, *, topk: int,
                           on_event: Any, cancel: Any) -> Any:
    """engine.inference.folder.predict_folder, holding the model while it runs (see model_use)."""
    from loupe.desktop.pages.model_use import using_model
    from loupe.engine.inference.folder import predict_folder

    with using_model(predictor, cancel):
        return predict_folder(predictor, folder, csv_path, topk=topk, on_event=on_event,
                              cancel=cancel)


def folder_summary(result: Any) -> str:
    """'5 images predicted', or '1 of 5 images predicted, 4 could not be read'."""
    total = len(result.rows)
    failed = len(result.failed)
    noun = "image" if total == 1 else "images"
    if not failed:
        return f"{total} {noun} predicted"
    if failed == total:
        return f"No image predicted: {'the' if total == 1 else 'all'} {total} {noun} could " \
               "not be read"
    return f"{total - failed} of {total} {noun} predicted, {failed} could not be read"


class FolderPanel(QWidget):
    """Progress, Cancel, Save CSV… and the result table of one folder run.

    ``folderFinished(FolderResult)`` fires when a run completes (not when cancelled).
    """

    folderFinished = Signal(object)

    def __init__(self, context: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._context = context
        self._folder: Path | None = None
        self._result: Any = None
        self.title = QLabel("", self)
        self.progress = QProgressBar(self)
        self.cancel_button = QPushButton("Cancel", self)
        self.save_button = QPushButton("Save CSV…", self)
        self.save_button.setEnabled(False)
        self.cancel_button.setEnabled(False)
        self.summary = QLabel("", self)
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, 4, self)
        self.table.setHorizontalHeaderLabels(["file", "prediction", "probability", "note"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setMinimumHeight(140)
        row = QHBoxLayout()
        row.addWidget(self.title, 1)
        row.addWidget(self.progress, 2)
        row.addWidget(self.cancel_button)
        row.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(self._ask_save)

    def is_running(self) -> bool:
        return self._context.runner.is_running("predict-folder", owner=self)

    def result(self) -> Any:
        return self._result

    def start(self, folder: Path, *, topk: int = 3, predictor: Any = None) -> Task:
        """Predict every image under ``folder`` in a task (a running batch is superseded);
        ``predictor`` is the Predict page's active model (default: the context's)."""
        from loupe.engine.core import paths

        stamp = time.strftime("%Y%m%d-%H%M%S")
        csv_path = paths.cache_dir() / "predictions" / f"{folder.name or 'folder'}-{stamp}.csv"
        self._result = None
        self._folder = Path(folder)
        self.table.setRowCount(0)
        self.summary.setText("")
        self.title.setText(f"Predicting {folder}")
        self.progress.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        self.save_button.setEnabled(False)
        return self._context.runner.start(
            _predict_folder_locked, predictor or self._context.predictor, folder, csv_path,
            topk=topk, owner=self, kind="predict-folder", on_event=self._on_event,
            on_result=self._on_finished, on_done=self._on_done,
            error_title="Folder prediction failed")

    def cancel(self) -> None:
        if self._context.runner.cancel("predict-folder", owner=self):
            self.cancel_button.setEnabled(False)
            self.title.setText("Cancelling…")

    def save_csv(self, target: Path) -> Path | None:
        """Write the finished run's CSV to ``target`` atomically."""
        from loupe.engine.core.atomic import atomic_write_text
        from loupe.engine.inference.folder import rows_to_csv

        if self._result is None:
            return None
        target = Path(target)
        if target.suffix.lower() != ".csv":  # a name typed without it in the dialog
            target = target.with_name(target.name + ".csv")
        path = atomic_write_text(target, rows_to_csv(self._result.rows))
        self._context.statusMessage.emit(f"Saved {len(self._result.rows)} predictions to {path}")
        return path

    def _ask_save(self) -> None:
        stem = self._folder.name if self._folder is not None else "predictions"
        path = dialogs.save_file(self, "Save predictions", f"{stem}-predictions.csv",
                                 "CSV files (*.csv)")
        if path is not None:
            self.save_csv(path)

    # -- task callbacks ------------------------------------------------------------------------
    def _on_event(self, event: Any) -> None:
        if isinstance(event, Started) and event.task == "predict-folder":
            self.progress.setRange(0, max(1, event.total or 0))
            self.progress.setValue(0)
        elif isinstance(event, Progress) and event.task == "predict-folder":
            self.progress.setRange(0, max(1, event.total))
            self.progress.setValue(event.done)
            self.title.setText(f"Predicting… {event.done}/{event.total}")
        elif isinstance(event, Progress) and event.task == "scan":
            self.title.setText(f"Looking for images… {event.done}/{event.total}")
        elif isinstance(event, Finished) and event.task == "predict-folder":
            self.progress.setValue(self.progress.maximum())

    def _on_finished(self, result: Any) -> None:
        self._result = result
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.title.setText(folder_summary(result))
        self.save_button.setEnabled(True)
        self._fill_table(result)
        self.folderFinished.emit(result)

    def _on_done(self, task: Task) -> None:
        self.cancel_button.setEnabled(False)
        if task.state is TaskState.FINISHED:
            return
        failed = task.state is TaskState.FAILED  # the runner shows the error itself
        self.title.setText("Folder prediction failed" if failed
                           else "Cancelled: nothing was written")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def _shown_name(self, path: Path) -> str:
        """The path under the predicted folder: bare names were ambiguous in subfolders
        (cats/001.jpg and dogs/001.jpg were both "001.jpg")."""
        folder = self._folder
        try:
            return Path(path).relative_to(folder).as_posix() if folder else Path(path).name
        except ValueError:
            return Path(path).name

    def _fill_table(self, result: Any) -> None:
        rows = result.rows[:ROW_LIMIT]
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            pred = row.prediction
            name = self._shown_name(row.path)
            if pred is None:
                cells = [name, "", "", row.error]
            elif pred.multi_label:
                cells = [name, "; ".join(n for n, _ in pred.top) or "(none)",
                         f"{max(pred.probs.values()):.1%}", ""]
            else:
                label, prob = pred.top[0]
                cells = [name, "unknown" if pred.unknown else label, f"{prob:.1%}",
                         f"best guess {label}" if pred.unknown else ""]
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(str(row.path))
                self.table.setItem(index, column, item)
        counts = ", ".join(f"{name}: {n}" for name, n in sorted(result.counts.items()))
        failed = len(result.failed)
        extra = f" · {failed} could not be read" if failed else ""
        more = f" (table shows the first {ROW_LIMIT})" if len(result.rows) > ROW_LIMIT else ""
        self.summary.setText(f"{counts}{extra}{more}")
