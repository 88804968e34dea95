"""Lesson 1's first moment on the Predict page: ask the pretrained ImageNet model.

Before anything is trained, a newcomer can see what the network Loupe starts from already
knows: its top 5 of ImageNet's 1000 classes and where it looked, for any dropped photo.
``engine.inference.imagenet.imagenet_predictor`` gives an ordinary Predictor, so the page predicts
with it exactly as with a trained model; this module only decides *which* predictor the
page uses (:class:`ImageNetSwitch`) and draws the page's empty state (:class:`PredictIntro`).

The model is loaded once, in a worker (about a second; torch and timm are needed), and
kept: switching back to it later is instant. A model loaded or trained meanwhile wins.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

LOADING_TEXT = "Loading the ImageNet model…"


def imagenet_label(predictor: Any) -> str:
    """What the page header says while the ImageNet model answers."""
    return (f"ImageNet model: {predictor.arch} ({len(predictor.classes)} classes, "
            "not trained on your images)")


def imagenet_toggle(parent: QWidget) -> QPushButton:
    """The toolbar's on/off button: ImageNet's answers on demand, at any time."""
    button = QPushButton("ImageNet model", parent)
    button.setCheckable(True)
    button.setToolTip(
        "Ask the pretrained ImageNet model (1000 everyday classes) instead of your model")
    return button


class ImageNetSwitch(QObject):
    """Whether the Predict page asks the pretrained ImageNet model instead of the user's.

    ``changed`` fires when loading starts or ends, or when the model fails to load; the
    page then reads :attr:`active`, :attr:`loading`, :attr:`error` and :attr:`predictor`.
    """

    changed = Signal()

    def __init__(self, context: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._context = context
        self.predictor: Any = None  # loupe.engine.inference.predict.Predictor, once loaded
        self.active = False
        self.error = ""
        self._wanted = False  # asked for and not replaced since: activate when loaded

    @property
    def loading(self) -> bool:
        return self._context.runner.is_running("imagenet-model", owner=self)

    def request(self) -> None:
        """Use the ImageNet model: at once if loaded, else after a worker loads it."""
        from loupe.engine.inference.imagenet import imagenet_predictor

        self._wanted = True
        self.error = ""
        if self.predictor is not None:
            self.active = True
            self.changed.emit()
            return
        if self.loading:
            return
        # The error is not only a dialog: the page's intro keeps saying it (on_error).
        self._context.runner.start(
            imagenet_predictor, events=False, owner=self, kind="imagenet-model",
            on_result=self._on_loaded, on_error=self._on_failed, on_cancel=self._on_cancelled)
        self._context.statusMessage.emit(LOADING_TEXT)
        self.changed.emit()

    def label(self) -> str:
        return imagenet_label(self.predictor) if self.predictor is not None else ""

    def release(self) -> None:
        """Back to the user's model (or none). The loaded model is kept for later; one
        still loading is kept but not switched to. The caller refreshes the page."""
        self._wanted = False
        self.active = False

    def _on_loaded(self, predictor: Any) -> None:
        self.predictor = predictor
        self.active = self._wanted  # stale: a model loaded or trained meanwhile wins
        if self.active:
            self._context.statusMessage.emit(f"{imagenet_label(predictor)} loaded")
        self.changed.emit()

    def _on_failed(self, exc: BaseException) -> None:
        from loupe.desktop.context import describe_error

        self._wanted = self.active = False
        self.error = f"The pretrained ImageNet model could not be loaded: {describe_error(exc)}"
        self._context.errorRaised.emit("ImageNet model unavailable", self.error)
        self.changed.emit()

    def _on_cancelled(self) -> None:
        self._wanted = self.active = False
        self.changed.emit()


class PredictIntro(QWidget):
    """The Predict page before the first prediction: what to do, and the ImageNet offer.

    ``tryRequested`` asks the page to switch to the ImageNet model.
    """

    tryRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAutoFillBackground(True)
        self.setBackgroundRole(QPalette.ColorRole.Base)
        self.title = QLabel(self)
        font = QFont(self.title.font())
        font.setPointSizeF(font.pointSizeF() * 1.5)
        font.setBold(True)
        self.title.setFont(font)
        self.body = QLabel(self)
        self.body.setWordWrap(True)
        self.try_button = QPushButton("Try the pretrained ImageNet model", self)
        self.try_button.setToolTip(
            "Ask the network Loupe starts from (trained on ImageNet's 1000 classes) what it "
            "sees in your photos")
        self.try_button.clicked.connect(self.tryRequested)
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.hint = QLabel(self)
        self.hint.setWordWrap(True)
        self.hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        column = QWidget(self)  # a readable line length, centred in the page
        column.setMaximumWidth(600)
        inner = QVBoxLayout(column)
        inner.setContentsMargins(0, 0, 0, 0)
        inner.addWidget(self.title)
        inner.addWidget(self.body)
        inner.addSpacing(8)
        inner.addWidget(self.try_button, 0, Qt.AlignmentFlag.AlignLeft)
        inner.addWidget(self.status)
        inner.addSpacing(8)
        inner.addWidget(self.hint)
        row = QHBoxLayout()  # stretches, not an alignment: wrapped labels keep their height
        row.addStretch(1)
        row.addWidget(column, 4)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 24, 24, 24)
        layout.addStretch(1)
        layout.addLayout(row)
        layout.addStretch(2)

    def show_state(self, *, has_model: bool, switch: ImageNetSwitch) -> None:
        """Texts for: nothing loaded, ImageNet loading/ready, the user's model ready."""
        self.status.setText(switch.error or (LOADING_TEXT if switch.loading else ""))
        self.status.setVisible(bool(self.status.text()))
        self.try_button.setEnabled(not switch.loading)
        self.try_button.setVisible(not switch.active)
        if switch.active:
            self.title.setText("The ImageNet model is ready")
            self.body.setText("Drop a photo here, open one, or paste one (Ctrl+V): you will "
                              "see its top 5 guesses and where the model looked.")
            self.hint.setText("Its answers are ImageNet's 1000 everyday classes, not yours. "
                              "Train a model on your images (Data, then Train) to get your "
                              "own classes.")
        elif has_model:
            self.title.setText("Your model is ready")
            self.body.setText("Drop an image here, open one, or paste one (Ctrl+V).")
            self.try_button.setText("Compare with the pretrained ImageNet model")
            self.hint.setText("")
        else:
            self.title.setText("What does a pretrained network see?")
            self.body.setText(
                "Before you train anything, ask the model Loupe starts from. It learnt from "
                "ImageNet's 1.2 million photos and names 1000 everyday things: cats and "
                "dogs by breed, birds, cars, food, tools… Drop a photo to see its top 5 "
                "guesses and where it looked.")
            self.try_button.setText("Try the pretrained ImageNet model")
            self.hint.setText("Or drop a .loupe model file here, or train your own on the "
                              "Train page.")
        self.hint.setVisible(bool(self.hint.text()))
