"""A visible drop area that turns a drop into the window's routing plan.

What a drop *means* (a model file wins, then images, then a folder) is decided once, in
``loupe.desktop.routing``; the main window, the Predict page and this widget all use it, so a
file dropped anywhere is treated the same way.
"""

from __future__ import annotations

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QPalette
from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget

from loupe.desktop.routing import DropPlan, classify_paths, local_paths


def plan_for(mime: QMimeData | None) -> DropPlan:
    """The routing plan for a drag's or a paste's data (empty when nothing usable)."""
    if mime is None:
        return DropPlan()
    return classify_paths(local_paths(mime))


def mime_is_usable(mime: QMimeData | None) -> bool:
    """True when a drag carries files Loupe can use, or pixels (from a web browser)."""
    if mime is None:
        return False
    return not plan_for(mime).empty or mime.hasImage()


class DropZone(QFrame):
    """A framed area that says what it accepts and emits what was dropped.

    ``dropped`` carries a :class:`loupe.desktop.routing.DropPlan`; ``imageDropped`` a QImage
    when the drag carried pixels rather than files.
    """

    dropped = Signal(object)
    imageDropped = Signal(object)

    def __init__(self, text: str = "Drop images, a folder or a model here",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setMinimumHeight(64)
        self._label = QLabel(text, self)
        self._label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self._label)
        self._set_hover(False)

    def set_text(self, text: str) -> None:
        self._label.setText(text)

    def text(self) -> str:
        return self._label.text()

    def _set_hover(self, hover: bool) -> None:
        role = QPalette.ColorRole.Highlight if hover else QPalette.ColorRole.Mid
        colour = self.palette().color(role).name()
        self.setStyleSheet(f"DropZone {{ border: 2px dashed {colour}; border-radius: 8px; }}")

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if mime_is_usable(event.mimeData()):
            event.acceptProposedAction()
            self._set_hover(True)
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if mime_is_usable(event.mimeData()):
            event.acceptProposedAction()

    def dragLeaveEvent(self, event) -> None:  # noqa: ANN001 - QDragLeaveEvent
        self._set_hover(False)
        super().dragLeaveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        self._set_hover(False)
        mime = event.mimeData()
        plan = plan_for(mime)
        if not plan.empty:
            event.acceptProposedAction()
            self.dropped.emit(plan)
        elif mime.hasImage():
            event.acceptProposedAction()
            self.imageDropped.emit(mime.imageData())
        else:
            event.ignore()
