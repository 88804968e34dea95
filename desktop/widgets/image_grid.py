"""A thumbnail grid (model/view): captions, selection, context menus, background decoding.

Decoding an image can take tens of milliseconds, so thumbnails are never decoded on the
UI thread: tasks on the app's task runner (desktop/workers.py), two per grid, take the
requested rows from one queue and decode and shrink them with the engine's loader (EXIF
orientation, bomb limits, 16-bit and alpha handled the same as training) into QImages,
sent back as events; the model turns each into a pixmap. New items drop the tasks, so
thumbnails of the previous items never land in the new ones. Items may also carry
pixels already (a CAM overlay array) instead of a path.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPoint,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QImage, QKeyEvent, QPalette, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QMenu, QWidget

from loupe.desktop.workers import Task, TaskRunner, TaskState

_Index = QModelIndex | QPersistentModelIndex
_EAGER_LIMIT = 200  # items loaded right away; the rest load when the view asks for them
_KIND = "thumbnails"
# Decoding tasks per grid. Two load 200 photos about twice as fast as one on two cores
# (0.6 s against 1.1 s, 600×400 PNGs to 128 px; as fast as the former 2-thread pool)
# and the GUI thread stays on time (p99 lateness about 5 ms either way).
DECODE_TASKS = 2


@dataclass
class GridItem:
    """One cell: ``path`` to decode or ``image`` (H×W×3 uint8 array / PIL image) to show.

    ``data`` is the page's payload (a rel path, labels, probabilities); the grid never
    reads it. ``highlight`` draws the caption in the palette's warning colour.
    """

    path: Path | None = None
    caption: str = ""
    tooltip: str = ""
    data: Any = None
    image: Any = None
    highlight: bool = False


def array_to_qimage(array: np.ndarray) -> QImage:
    """An H×W×3 (or H×W) uint8 array as a QImage that owns its memory."""
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    if arr.ndim == 2:
        arr = np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
    height, width = arr.shape[:2]
    image = QImage(arr.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return image.copy()


def pil_to_qimage(img: Any) -> QImage:
    """A PIL image (any mode) as an RGB QImage that owns its memory."""
    return array_to_qimage(np.asarray(img.convert("RGB")))


def load_thumbnail(item: GridItem, size: int) -> QImage:
    """Decode and shrink one item to fit ``size``×``size``; runs on a task's thread."""
    if item.image is not None:
        source = item.image
        if isinstance(source, np.ndarray):
            from PIL import Image

            source = Image.fromarray(np.ascontiguousarray(source, dtype=np.uint8))
        img = source.convert("RGB")
    else:
        from loupe.engine.data.imageio import load_rgb

        img = load_rgb(item.path, min_short_side=size)
    return square_qimage(fit_image(img, size), size)


def square_qimage(img: Any, size: int) -> QImage:
    """``img`` centred on a transparent ``size``×``size`` canvas.

    Every cell then has the same decoration size, which the grid's uniform item sizes
    and fixed grid assume: with true-size pixmaps the first item's shape decided every
    cell's, so tall thumbnails were cut in half and captions landed on other images.
    """
    from PIL import Image

    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(img.convert("RGB"), ((size - img.width) // 2, (size - img.height) // 2))
    arr = np.ascontiguousarray(np.asarray(canvas), dtype=np.uint8)
    image = QImage(arr.data, size, size, 4 * size, QImage.Format.Format_RGBA8888)
    return image.copy()


def fit_image(img: Any, size: int) -> Any:
    """Scale to fit ``size``×``size`` keeping the aspect: down with antialiasing, and up
    (bilinear) for tiny images, so every cell of the grid is filled alike."""
    from PIL import Image

    scale = size / max(img.width, img.height)
    target = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    if target == img.size:
        return img
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    return img.resize(target, resample)


@dataclass(frozen=True)
class Thumbnail:
    """One decoded row (the task's event): its image, or why it could not be read."""

    row: int
    image: QImage | None
    error: str = ""


def decode_thumbnails(requests: queue.SimpleQueue, size: int, *, on_event: Any,
                      cancel: Any) -> None:
    """Task body: decode the requested ``(row, item)`` pairs until none is left.

    Several tasks may share the queue. Rows the view asks for later go into it too; one
    asked for just as the tasks end is picked up by the next task (the model starts one
    when a task is done and rows are left).
    """
    while True:
        cancel.raise_if_cancelled()
        try:
            row, item = requests.get_nowait()
        except queue.Empty:
            return
        try:
            image = load_thumbnail(item, size)
        except Exception as exc:  # noqa: BLE001 - shown as the cell's tooltip
            on_event(Thumbnail(row, None, str(exc)))
        else:
            on_event(Thumbnail(row, image))


class ImageGridModel(QAbstractListModel):
    """Items plus their thumbnails; ``idle`` fires when no thumbnail is still loading."""

    idle = Signal()

    def __init__(self, runner: TaskRunner, parent: QObject | None = None,
                 thumb_size: int = 128) -> None:
        super().__init__(parent)
        self._runner = runner
        self._items: list[GridItem] = []
        self._thumbs: dict[int, QPixmap] = {}
        self._errors: dict[int, str] = {}
        self._requested: set[int] = set()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._thumb_size = thumb_size
        self._placeholder = self._make_placeholder()

    def set_items(self, items: Sequence[GridItem]) -> None:
        self.beginResetModel()
        self._runner.drop(_KIND, owner=self)  # the old items' thumbnails never arrive
        self._requests = queue.SimpleQueue()
        self._items = list(items)
        self._thumbs.clear()
        self._errors.clear()
        self._requested.clear()
        self.endResetModel()
        for row in range(min(len(self._items), _EAGER_LIMIT)):
            self._request(row)
        if not self._items:
            self.idle.emit()

    def items(self) -> list[GridItem]:
        return list(self._items)

    def item(self, row: int) -> GridItem:
        return self._items[row]

    def has_thumbnail(self, row: int) -> bool:
        return row in self._thumbs

    def thumbnail(self, row: int) -> QPixmap | None:
        return self._thumbs.get(row)

    def error(self, row: int) -> str | None:
        return self._errors.get(row)

    def pending(self) -> int:
        return len(self._requested) - len(self._thumbs) - len(self._errors)

    def load_all(self) -> None:
        """Request every thumbnail (the view normally asks only for visible ones)."""
        for row in range(len(self._items)):
            self._request(row)

    def _request(self, row: int) -> None:
        if row in self._requested:
            return
        self._requested.add(row)
        self._requests.put((row, self._items[row]))
        self._decode()

    def _decode(self) -> None:
        if len(self._runner.tasks(_KIND, owner=self)) < DECODE_TASKS:
            self._runner.start(
                decode_thumbnails, self._requests, self._thumb_size, owner=self, kind=_KIND,
                supersede=False, on_event=self._on_thumbnail, on_done=self._on_decoded)

    def _on_decoded(self, task: Task) -> None:
        if task.state is TaskState.FINISHED and not self._requests.empty():
            self._decode()  # rows asked for while the tasks were ending

    def _on_thumbnail(self, thumbnail: Thumbnail) -> None:
        if thumbnail.image is None:
            self._errors[thumbnail.row] = thumbnail.error
        else:
            self._thumbs[thumbnail.row] = QPixmap.fromImage(thumbnail.image)
        self._changed(thumbnail.row)

    def _changed(self, row: int) -> None:
        index = self.index(row)
        self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])
        if self.pending() == 0:
            self.idle.emit()

    def _make_placeholder(self) -> QPixmap:
        pixmap = QPixmap(self._thumb_size, self._thumb_size)
        pixmap.fill(QColor(128, 128, 128, 60))
        return pixmap

    # Qt model interface -------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._items):
            return None
        row = index.row()
        item = self._items[row]
        if role == Qt.ItemDataRole.DisplayRole:
            return item.caption
        if role == Qt.ItemDataRole.DecorationRole:
            if row not in self._requested:
                self._request(row)
            return self._thumbs.get(row, self._placeholder)
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = item.tooltip or (str(item.path) if item.path else item.caption)
            error = self._errors.get(row)
            return f"{tip}\n{error}" if error else tip
        if role == Qt.ItemDataRole.ForegroundRole and (item.highlight or row in self._errors):
            return QBrush(QColor(200, 40, 40))
        return None


class ImageGrid(QListView):
    """The thumbnail grid widget.

    Signals: ``itemActivated(GridItem)`` on double-click, Enter or Space (pages open the
    image viewer), ``itemClicked(GridItem)`` on a single click, ``itemsSelected(list)``
    when the selection changes. :meth:`set_menu_builder` installs a function that fills
    the context menu for the selected items (pages add Relabel/Exclude there).
    """

    itemActivated = Signal(object)
    itemClicked = Signal(object)
    itemsSelected = Signal(list)

    def __init__(self, parent: QWidget | None = None, *, runner: TaskRunner,
                 thumb_size: int = 128) -> None:
        super().__init__(parent)
        self._model = ImageGridModel(runner, self, thumb_size)
        self.setModel(self._model)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        # Not uniform: each caption gets its own height (within the grid cell), so one
        # with an extra line (a top loss's "[excluded]" note) is not cut to "…" because
        # the first item's caption was shorter.
        self.setUniformItemSizes(False)
        self.setWordWrap(True)
        self.setSpacing(6)
        self.setIconSize(QSize(thumb_size, thumb_size))
        self.setGridSize(QSize(thumb_size + 24, thumb_size + 48))
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._show_menu)
        # Double-click on every platform (``activated`` is a single click on some), and
        # Enter/Space from keyPressEvent: the same gesture opens an image everywhere.
        self.doubleClicked.connect(self._activate)
        self.clicked.connect(
            lambda index: self.itemClicked.emit(self._model.item(index.row())))
        self.selectionModel().selectionChanged.connect(
            lambda *_: self.itemsSelected.emit(self.selected_items()))
        self._menu_builder: Callable[[QMenu, list[GridItem]], None] | None = None
        self.setBackgroundRole(QPalette.ColorRole.Base)

    @property
    def grid_model(self) -> ImageGridModel:
        return self._model

    def set_items(self, items: Sequence[GridItem]) -> None:
        self._model.set_items(items)

    def items(self) -> list[GridItem]:
        return self._model.items()

    def selected_items(self) -> list[GridItem]:
        rows = sorted(index.row() for index in self.selectionModel().selectedIndexes())
        return [self._model.item(row) for row in rows]

    def select_rows(self, rows: Sequence[int]) -> None:
        """Select exactly ``rows`` (used by keyboard actions and tests)."""
        selection = QItemSelection()
        for row in rows:
            index = self._model.index(row)
            selection.select(index, index)
        self.selectionModel().select(
            selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        if rows:  # the keyboard's current item follows (Space opens it)
            self.selectionModel().setCurrentIndex(
                self._model.index(rows[0]), QItemSelectionModel.SelectionFlag.NoUpdate)

    def _activate(self, index: QModelIndex) -> None:
        if index.isValid() and index.row() < self._model.rowCount():
            self.itemActivated.emit(self._model.item(index.row()))

    def keyPressEvent(self, event: QKeyEvent) -> None:
        """Space (Quick Look's key) and Enter open the current image."""
        if event.key() in (Qt.Key.Key_Space, Qt.Key.Key_Return, Qt.Key.Key_Enter) and (
                self.currentIndex().isValid()):
            self._activate(self.currentIndex())
            event.accept()
            return
        super().keyPressEvent(event)

    def set_menu_builder(self, builder: Callable[[QMenu, list[GridItem]], None]) -> None:
        self._menu_builder = builder

    def build_menu(self, items: list[GridItem]) -> QMenu:
        """The context menu for ``items`` (separate from showing it, so tests can read it)."""
        menu = QMenu(self)
        if self._menu_builder is not None:
            self._menu_builder(menu, items)
        return menu

    def _show_menu(self, pos: QPoint) -> None:
        index = self.indexAt(pos)
        if index.isValid() and not self.selectionModel().isSelected(index):
            self.select_rows([index.row()])
        items = self.selected_items()
        if not items or self._menu_builder is None:
            return
        menu = self.build_menu(items)
        if not menu.isEmpty():
            menu.exec(self.viewport().mapToGlobal(pos))
