"""The picture part of the activation-map viewer: the image, the model's region, a veil.

:class:`MapView` paints one image scaled to fit, the outline of the region the model saw
(a center crop) and, while a new map computes, a translucent veil saying so;
:class:`ColourBar` is the map's legend. Both only paint: :class:`CamViewer` feeds them.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPaintEvent, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from loupe.desktop.widgets.image_grid import array_to_qimage

Region = tuple[float, float, float, float]  # left, top, right, bottom as fractions


class MapView(QWidget):
    """Paints one QImage scaled to fit, aspect kept, centred; optionally the outline of
    the region the model saw, and a veil with a message while a new map computes."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image: QImage | None = None
        self._message = "Drop an image to see what the model sees"
        self._region: Region | None = None
        self._veil = ""
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(120, 120)

    def set_image(self, image: QImage | None, message: str = "") -> None:
        self._image = image
        if message:
            self._message = message
        self.update()

    def image(self) -> QImage | None:
        return self._image

    def set_region(self, region: Region | None) -> None:
        self._region = region
        self.update()

    def region(self) -> Region | None:
        return self._region

    def set_veil(self, text: str) -> None:
        """Cover the picture with a translucent veil and ``text`` ("" removes it)."""
        self._veil = text
        self.update()

    def veil(self) -> str:
        return self._veil

    def image_rect(self) -> QRect:
        """Where the picture is painted (scaled to fit, centred)."""
        if self._image is None or self._image.isNull():
            return QRect()
        size = self._image.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        x = (self.width() - size.width()) // 2
        y = (self.height() - size.height()) // 2
        return QRect(x, y, size.width(), size.height())

    def region_rect(self) -> QRectF | None:
        """The outlined region in widget coordinates (None: nothing outlined)."""
        target = self.image_rect()
        if self._region is None or target.isEmpty():
            return None
        left, top, right, bottom = self._region
        return QRectF(target.x() + left * target.width(), target.y() + top * target.height(),
                      (right - left) * target.width(), (bottom - top) * target.height())

    def sizeHint(self) -> QSize:
        return QSize(420, 420)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: ARG002
        painter = QPainter(self)
        painter.fillRect(self.rect(), self.palette().color(QPalette.ColorRole.Base))
        if self._image is None or self._image.isNull():
            painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self._message)
            painter.end()
            return
        target = self.image_rect()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(target, self._image)
        region = self.region_rect()
        if region is not None:
            self._paint_region(painter, region)
        if self._veil:
            painter.fillRect(target, QColor(0, 0, 0, 130))
            painter.setPen(QColor(255, 255, 255))
            painter.drawText(target, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self._veil)
        painter.end()

    @staticmethod
    def _paint_region(painter: QPainter, region: QRectF) -> None:
        """Dashed white over solid black: visible on light and dark pictures alike."""
        painter.setPen(QPen(QColor(0, 0, 0), 3))
        painter.drawRect(region)
        dashed = QPen(QColor(255, 255, 255), 1.5, Qt.PenStyle.DashLine)
        painter.setPen(dashed)
        painter.drawRect(region)
        painter.setPen(QColor(255, 255, 255))
        label = region.adjusted(4, 2, -4, -2)
        painter.drawText(label, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop,
                         "model's view (center crop)")


class ColourBar(QWidget):
    """The map's legend: the colormap as a bar, "low" on the left, "high" on the right."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._bar: QImage | None = None
        self.setMinimumWidth(160)
        self.setFixedHeight(max(18, self.fontMetrics().height() + 4))
        self.setToolTip("Activation map colours: dark = the model paid little attention "
                        "there, bright = it looked there most")

    def colours(self) -> np.ndarray:
        """The 256 colours shown, low to high (the engine's overlay colormap)."""
        from loupe.engine.inference.cam import colormap_lut

        return colormap_lut()

    def _bar_image(self) -> QImage:
        if self._bar is None:
            self._bar = array_to_qimage(self.colours()[None, :, :])
        return self._bar

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: ARG002
        painter = QPainter(self)
        metrics = self.fontMetrics()
        low, high = "low", "high"
        left = metrics.horizontalAdvance(low) + 6
        right = self.width() - metrics.horizontalAdvance(high) - 6
        text = self.palette().color(QPalette.ColorRole.WindowText)
        painter.setPen(text)
        painter.drawText(QRect(0, 0, left, self.height()), Qt.AlignmentFlag.AlignVCenter, low)
        painter.drawText(QRect(right + 6, 0, self.width() - right, self.height()),
                         Qt.AlignmentFlag.AlignVCenter, high)
        bar = QRect(left, 3, max(1, right - left), self.height() - 6)
        painter.drawImage(bar, self._bar_image())
        painter.setPen(self.palette().color(QPalette.ColorRole.Mid))
        painter.drawRect(bar.adjusted(0, 0, -1, -1))
        painter.end()
