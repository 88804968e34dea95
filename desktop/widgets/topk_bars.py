"""Top-k predictions as horizontal bars: label, bar, percentage (Lobe's "play" view).

Painted directly rather than with matplotlib: it updates on every prediction and must
look crisp at any DPI. When the prediction is "unknown" the bars are drawn muted and a
line says the top probability is under the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetrics, QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import QSizePolicy, QWidget

_ROW_HEIGHT = 26
_GAP = 6


class TopKBars(QWidget):
    """Shows ``[(label, probability), ...]`` best first; :meth:`rows` returns what is shown."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[tuple[str, float]] = []
        self._unknown = False
        self._threshold: float | None = None
        self._message = "No prediction yet"
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)

    def set_predictions(
        self,
        top: Sequence[tuple[str, float]],
        *,
        unknown: bool = False,
        threshold: float | None = None,
    ) -> None:
        self._rows = [(str(label), float(prob)) for label, prob in top]
        self._unknown = unknown
        self._threshold = threshold
        self._message = ""
        self.setToolTip(self.headline())
        self.updateGeometry()
        self.update()

    def clear(self, message: str = "No prediction yet") -> None:
        self._rows = []
        self._unknown = False
        self._message = message
        self.setToolTip("")
        self.updateGeometry()
        self.update()

    def rows(self) -> list[tuple[str, float]]:
        return list(self._rows)

    def is_unknown(self) -> bool:
        return self._unknown

    def headline(self) -> str:
        """The one-line verdict shown above the bars."""
        if self._message:
            return self._message
        if not self._rows:
            return ""
        label, prob = self._rows[0]
        if self._unknown:
            limit = f" (below {self._threshold:.0%})" if self._threshold is not None else ""
            return f"Unknown{limit}: best guess {label} at {prob:.1%}"
        return f"{label}  {prob:.1%}"

    def shown_headline(self) -> str:
        """The headline as painted: elided to the widget's width (the whole of it is the
        tooltip), instead of cut off mid-word at the right edge of a narrow panel."""
        font = self.font()
        font.setBold(True)
        return QFontMetrics(font).elidedText(
            self.headline(), Qt.TextElideMode.ElideRight, max(0, self.width()))

    def sizeHint(self) -> QSize:
        rows = max(1, len(self._rows)) + 1
        return QSize(280, rows * (_ROW_HEIGHT + _GAP) + _GAP)

    def minimumSizeHint(self) -> QSize:
        return QSize(160, 2 * (_ROW_HEIGHT + _GAP))

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: ARG002
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        text = palette.color(QPalette.ColorRole.WindowText)
        bar = palette.color(QPalette.ColorRole.Highlight)
        if self._unknown:
            bar = palette.color(QPalette.ColorRole.Mid)
        track = palette.color(QPalette.ColorRole.AlternateBase)
        width = self.width()
        font = painter.font()
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(text)
        painter.drawText(QRectF(0, 0, width, _ROW_HEIGHT),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         self.shown_headline())
        font.setBold(False)
        painter.setFont(font)
        label_w = min(160.0, width * 0.35)
        pct_w = 60.0
        bar_w = max(10.0, width - label_w - pct_w - 2 * _GAP)
        for i, (label, prob) in enumerate(self._rows):
            y = (i + 1) * (_ROW_HEIGHT + _GAP)
            painter.setPen(text)
            elided = painter.fontMetrics().elidedText(
                label, Qt.TextElideMode.ElideRight, int(label_w - _GAP))
            painter.drawText(QRectF(0, y, label_w, _ROW_HEIGHT),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, elided)
            x0 = label_w + _GAP
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(track)
            painter.drawRoundedRect(QRectF(x0, y + 4, bar_w, _ROW_HEIGHT - 8), 4, 4)
            painter.setBrush(QColor(bar) if i == 0 else QColor(bar).lighter(130))
            fill = max(0.0, min(1.0, prob)) * bar_w
            if fill > 0:
                painter.drawRoundedRect(QRectF(x0, y + 4, fill, _ROW_HEIGHT - 8), 4, 4)
            painter.setPen(text)
            painter.drawText(QRectF(x0 + bar_w + _GAP, y, pct_w, _ROW_HEIGHT),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                             f"{prob:.1%}")
        painter.end()
