"""The one large image viewer: double-click (or Space) on an image anywhere opens it.

A non-modal window with the image big, its path, its label and the model's prediction,
the activation map (the same :class:`CamViewer` as the Predict page: method, class, Map
switch, opacity, colour bar, crop outline, progress and Cancel), and Relabel / Exclude /
Undo. The widget only shows and asks: loading the pixels and the map (a worker) and the
corrections (project overrides) belong to the page-side controller,
``loupe.desktop.pages.image_preview``. Keys: Left/Right (or the arrows) for the previous
and next image of the list it was opened from, Space or Esc to close, Del to exclude.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from loupe.desktop.widgets.cam_viewer import CamViewer


class ImageViewer(QDialog):
    """Big picture + facts + corrections for one image of a list.

    Signals (the controller acts on them): ``navigateRequested(int)`` (-1 / +1),
    ``relabelRequested(str)``, ``excludeRequested()``, ``includeRequested()`` (clear an
    exclusion or relabel), ``undoRequested()``; the map's own requests come from
    :attr:`cam` (``methodChanged``, ``targetChanged``, ``cancelRequested``).
    """

    navigateRequested = Signal(int)
    relabelRequested = Signal(str)
    excludeRequested = Signal()
    includeRequested = Signal()
    undoRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Image")
        self.setModal(False)
        self.setSizeGripEnabled(True)
        self._excluded = False
        self.title = QLabel(self)
        bold = self.title.font()
        bold.setBold(True)
        bold.setPointSizeF(bold.pointSizeF() * 1.15)
        self.title.setFont(bold)
        self.position = QLabel(self)
        self.prev_button = QToolButton(self)
        self.prev_button.setArrowType(Qt.ArrowType.LeftArrow)
        self.prev_button.setToolTip("Previous image (Left)")
        self.next_button = QToolButton(self)
        self.next_button.setArrowType(Qt.ArrowType.RightArrow)
        self.next_button.setToolTip("Next image (Right)")
        self.path_label = QLabel(self)
        self.path_label.setWordWrap(True)
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.label_label = QLabel(self)
        self.label_label.setWordWrap(True)
        self.prediction_label = QLabel(self)
        self.prediction_label.setWordWrap(True)
        self.override_label = QLabel(self)
        self.override_label.setWordWrap(True)
        self.cam = CamViewer(self)
        self.cam.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.relabel_combo = QComboBox(self)
        self.relabel_button = QPushButton("Relabel", self)
        self.exclude_button = QPushButton("Exclude", self)
        self.undo_button = QPushButton("Undo", self)
        self.correction_hint = QLabel(self)
        self.correction_hint.setWordWrap(True)
        self.close_button = QPushButton("Close", self)
        self._build_layout()
        self.prev_button.clicked.connect(lambda: self.navigateRequested.emit(-1))
        self.next_button.clicked.connect(lambda: self.navigateRequested.emit(1))
        self.relabel_button.clicked.connect(
            lambda: self.relabelRequested.emit(self.relabel_combo.currentText()))
        self.exclude_button.clicked.connect(self._on_exclude)
        self.undo_button.clicked.connect(self.undoRequested)
        self.close_button.clicked.connect(self.close)
        self.resize(900, 760)

    def _build_layout(self) -> None:
        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(self.position)
        header.addWidget(self.prev_button)
        header.addWidget(self.next_button)
        actions = QHBoxLayout()
        actions.addWidget(QLabel("Correct label:", self))
        actions.addWidget(self.relabel_combo)
        actions.addWidget(self.relabel_button)
        actions.addWidget(self.exclude_button)
        actions.addWidget(self.undo_button)
        actions.addWidget(self.correction_hint, 1)
        actions.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.path_label)
        layout.addWidget(self.label_label)
        layout.addWidget(self.prediction_label)
        layout.addWidget(self.override_label)
        layout.addWidget(self.cam, 1)
        layout.addLayout(actions)

    # -- content ------------------------------------------------------------------------
    def show_facts(self, *, title: str, path: str, label: str, position: tuple[int, int],
                   prediction: str = "") -> None:
        """The text about the image (before its pixels arrive)."""
        self.setWindowTitle(f"{title} — Loupe")
        self.title.setText(title)
        self.path_label.setText(path)
        self.label_label.setText(label)
        self.label_label.setVisible(bool(label))
        index, count = position
        self.position.setText(f"{index + 1} / {count}" if count > 1 else "")
        self.prev_button.setEnabled(index > 0)
        self.next_button.setEnabled(index + 1 < count)
        self.set_prediction(prediction)

    def set_prediction(self, text: str) -> None:
        self.prediction_label.setText(text)
        self.prediction_label.setVisible(bool(text))

    def set_corrections(self, *, classes: Sequence[str], editable: bool, override: str,
                        excluded: bool, can_undo: bool, reason: str = "") -> None:
        """Enable Relabel / Exclude / Undo as the image's state allows."""
        current = self.relabel_combo.currentText()
        self.relabel_combo.blockSignals(True)
        self.relabel_combo.clear()
        self.relabel_combo.addItems(list(classes))
        if current in classes:
            self.relabel_combo.setCurrentText(current)
        self.relabel_combo.blockSignals(False)
        self._excluded = excluded
        self.exclude_button.setText("Include again" if excluded else "Exclude")
        self.exclude_button.setToolTip(
            "Use this image for training again" if excluded
            else "Leave this image out of training (Del); the file is not changed")
        for widget in (self.relabel_combo, self.relabel_button, self.exclude_button):
            widget.setEnabled(editable and bool(classes))
        self.undo_button.setEnabled(editable and can_undo)
        self.override_label.setText(override)
        self.override_label.setVisible(bool(override))
        self.correction_hint.setText("" if editable else reason)

    # -- keys ---------------------------------------------------------------------------
    def _on_exclude(self) -> None:
        if self._excluded:
            self.includeRequested.emit()
        else:
            self.excludeRequested.emit()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key == Qt.Key.Key_Space:
            self.close()  # Space opened it, Space closes it (Quick Look)
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_Up) and self.prev_button.isEnabled():
            self.navigateRequested.emit(-1)
        elif key in (Qt.Key.Key_Right, Qt.Key.Key_Down) and self.next_button.isEnabled():
            self.navigateRequested.emit(1)
        elif key == Qt.Key.Key_Delete and self.exclude_button.isEnabled() and (
                not self._excluded):
            self.excludeRequested.emit()
        else:
            super().keyPressEvent(event)
            return
        event.accept()
