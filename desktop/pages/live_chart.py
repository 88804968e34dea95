"""A small line chart painted with QPainter, for curves that update while training runs.

Why not matplotlib here: one Agg redraw of a two-panel figure costs 150-250 ms of CPU with
the GIL held on a busy 2-core machine, which stalls both the GUI and the training thread
every time a point arrives. Painting a few dozen points with QPainter costs about a
millisecond, so the curves can follow every epoch (and the running batch loss) without
the window or the training slowing down. Matplotlib stays for the one-off plots.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFontMetrics,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPalette,
    QPen,
)
from PySide6.QtWidgets import QSizePolicy, QWidget


@dataclass
class Series:
    """One named line: points (x, y), colour, and whether to mark each point."""

    name: str
    colour: str
    markers: bool = True
    width: float = 2.0
    xs: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)

    def add(self, x: float, y: float) -> None:
        if math.isfinite(x) and math.isfinite(y):
            self.xs.append(x)
            self.ys.append(y)

    def clear(self) -> None:
        self.xs.clear()
        self.ys.clear()


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 × 10^k steps) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-6:
        if value >= low - step * 1e-6:
            ticks.append(round(value, 10))
        value += step
    return ticks


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.001:
        return f"{value:.0e}"
    return f"{value:.3g}"


@dataclass(frozen=True)
class Marker:
    """A vertical line at ``x`` with a short label at its top (a suggested rate)."""

    x: float
    colour: str
    label: str = ""
    dashed: bool = False


def tick_labels(ticks: list[float]) -> list[str]:
    """Labels for ``ticks``, with as many decimals as their spacing needs: a flat curve's
    axis read "0.693 0.693 0.693" with three significant digits."""
    labels = [_label(t) for t in ticks]
    if len(set(labels)) == len(labels) or len(ticks) < 2:
        return labels
    step = min(abs(b - a) for a, b in zip(ticks, ticks[1:], strict=False)) or 1.0
    decimals = max(0, min(10, -math.floor(math.log10(step) + 1e-9)))
    labels = [f"{t:.{decimals}f}" for t in ticks]
    if len(set(labels)) < len(labels):  # a 2.5 step: one more decimal
        labels = [f"{t:.{decimals + 1}f}" for t in ticks]
    return labels


class LiveChart(QWidget):
    """Axes, ticks, lines and a legend; call :meth:`update` after adding points.

    ``x_format`` labels the x ticks (a log-scale chart stores log10 values and shows
    "1e-3"); ``y_cap`` clips the top of the y range (an exploding loss would flatten the
    rest); ``markers`` are vertical lines; ``clicked(x)`` gives the x under a click.
    """

    clicked = Signal(float)

    MARGINS = (52, 26, 12, 34)  # left, top, right, bottom in pixels

    def __init__(self, title: str, x_label: str = "epoch",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.x_label = x_label
        self.series: list[Series] = []
        self.placeholder = "appears when training starts"
        self.min_x_span = 1.0
        self.x_format: Callable[[float], str] | None = None
        self.y_cap: float | None = None
        self.markers: list[Marker] = []
        self._last_bounds: tuple[float, float, float, float] | None = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(220, 160)

    def add_series(self, series: Series) -> Series:
        self.series.append(series)
        return series

    def clear(self) -> None:
        for series in self.series:
            series.clear()
        self.update()

    def has_points(self) -> bool:
        return any(s.xs for s in self.series)

    def _bounds(self) -> tuple[float, float, float, float]:
        xs = [x for s in self.series for x in s.xs]
        ys = [y for s in self.series for y in s.ys]
        x0, x1 = min(xs), max(xs)
        if x1 - x0 < self.min_x_span:
            x1 = x0 + self.min_x_span
        y0, y1 = min(ys), max(ys)
        if self.y_cap is not None and y0 < self.y_cap < y1:
            y1 = self.y_cap
        pad = (y1 - y0) * 0.08 or max(abs(y0) * 0.1, 0.01)
        return x0, x1, y0 - pad, y1 + pad

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        fg = palette.color(QPalette.ColorRole.WindowText)
        painter.fillRect(self.rect(), palette.color(QPalette.ColorRole.Base))
        top = self.MARGINS[1]
        plot = self.plot_rect()
        painter.setPen(fg)
        painter.drawText(QRectF(0, 2, self.width(), top - 4), Qt.AlignmentFlag.AlignCenter,
                         self.title)
        painter.drawText(QRectF(plot.left(), plot.bottom() + 16, plot.width(), 16),
                         Qt.AlignmentFlag.AlignCenter, self.x_label)
        if not self.has_points():
            painter.setPen(QColor(fg.red(), fg.green(), fg.blue(), 140))
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, self.placeholder)
            painter.drawRect(plot)
            return
        bounds = self._bounds()
        self._last_bounds = bounds
        self._draw_axes(painter, plot, bounds, fg)
        painter.setClipRect(plot.adjusted(-4, -4, 4, 4))
        for series in self.series:
            self._draw_series(painter, plot, bounds, series)
        self._draw_markers(painter, plot, bounds, fg)
        painter.setClipping(False)
        self._draw_legend(painter, plot, bounds, fg)

    @staticmethod
    def _map(plot: QRectF, bounds: tuple[float, float, float, float], x: float,
             y: float) -> QPointF:
        x0, x1, y0, y1 = bounds
        return QPointF(plot.left() + (x - x0) / (x1 - x0) * plot.width(),
                       plot.bottom() - (y - y0) / (y1 - y0) * plot.height())

    def _draw_axes(self, painter: QPainter, plot: QRectF,
                   bounds: tuple[float, float, float, float], fg: QColor) -> None:
        x0, x1, y0, y1 = bounds
        grid = QPen(QColor(fg.red(), fg.green(), fg.blue(), 40))
        metrics = QFontMetrics(painter.font())
        y_ticks = nice_ticks(y0, y1)
        for value, text in zip(y_ticks, tick_labels(y_ticks), strict=True):
            point = self._map(plot, bounds, x0, value)
            painter.setPen(grid)
            painter.drawLine(QPointF(plot.left(), point.y()), QPointF(plot.right(), point.y()))
            painter.setPen(fg)
            painter.drawText(QPointF(plot.left() - 6 - metrics.horizontalAdvance(text),
                                     point.y() + metrics.ascent() / 2 - 1), text)
        x_ticks = [t for t in nice_ticks(x0, x1, 6) if float(t).is_integer()] or [x0, x1]
        for value in x_ticks:
            point = self._map(plot, bounds, value, y0)
            painter.setPen(grid)
            painter.drawLine(QPointF(point.x(), plot.top()), QPointF(point.x(), plot.bottom()))
            painter.setPen(fg)
            text = self.x_format(value) if self.x_format is not None else _label(value)
            painter.drawText(QPointF(point.x() - metrics.horizontalAdvance(text) / 2,
                                     plot.bottom() + metrics.ascent() + 3), text)
        painter.setPen(fg)
        painter.drawRect(plot)

    def _draw_series(self, painter: QPainter, plot: QRectF,
                     bounds: tuple[float, float, float, float], series: Series) -> None:
        if not series.xs:
            return
        points = [self._map(plot, bounds, x, y) for x, y in zip(series.xs, series.ys,
                                                                 strict=True)]
        pen = QPen(QColor(series.colour), series.width)
        painter.setPen(pen)
        path = QPainterPath(points[0])
        for point in points[1:]:
            path.lineTo(point)
        painter.drawPath(path)
        if series.markers:
            painter.setBrush(QColor(series.colour))
            for point in points:
                painter.drawEllipse(point, 3.5, 3.5)
            painter.setBrush(Qt.BrushStyle.NoBrush)

    def _draw_markers(self, painter: QPainter, plot: QRectF,
                      bounds: tuple[float, float, float, float], fg: QColor) -> None:
        metrics = QFontMetrics(painter.font())
        for row, marker in enumerate(self.markers):
            x = self._map(plot, bounds, marker.x, bounds[2]).x()
            pen = QPen(QColor(marker.colour), 1.6)
            if marker.dashed:
                pen.setStyle(Qt.PenStyle.DashLine)
            painter.setPen(pen)
            painter.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
            if marker.label:
                width = metrics.horizontalAdvance(marker.label)
                left = x + 4 if x + 4 + width < plot.right() else x - 4 - width
                painter.drawText(QPointF(left, plot.top() + metrics.ascent() + 2
                                         + row * metrics.height()), marker.label)

    def x_at(self, pixel_x: float) -> float | None:
        """The x value under a horizontal pixel position (None before anything is drawn)."""
        bounds = self._last_bounds
        if bounds is None and self.has_points():
            bounds = self._bounds()
        if bounds is None:
            return None
        plot = self.plot_rect()
        x0, x1 = bounds[0], bounds[1]
        return x0 + (pixel_x - plot.left()) / plot.width() * (x1 - x0)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt API)
        position = event.position()
        if self.plot_rect().contains(position) and self.has_points():
            x = self.x_at(position.x())
            if x is not None:
                self.clicked.emit(x)
        super().mousePressEvent(event)

    def plot_rect(self) -> QRectF:
        left, top, right, bottom = self.MARGINS
        return QRectF(left, top, max(10, self.width() - left - right),
                      max(10, self.height() - top - bottom))

    def legend_rect(self, plot: QRectF | None = None,
                    bounds: tuple[float, float, float, float] | None = None) -> QRectF | None:
        """Where the legend goes: the plot corner covering the fewest points (it sat in
        the top right, over the batch-loss spikes and the last epochs' points)."""
        named = [s for s in self.series if s.xs and s.name]
        if len(named) < 2:
            return None
        plot = plot or self.plot_rect()
        bounds = bounds or self._bounds()
        metrics = QFontMetrics(self.font())
        width = max(metrics.horizontalAdvance(s.name) for s in named) + 34
        height = metrics.height() * len(named) + 8
        points = []  # the lines, sampled along each segment (not only at the data points)
        for series in self.series:
            mapped = [self._map(plot, bounds, x, y)
                      for x, y in zip(series.xs, series.ys, strict=True)]
            points += mapped[:1]
            for a, b in zip(mapped, mapped[1:], strict=False):
                points += [a + (b - a) * (k / 4) for k in range(1, 5)]
        corners = [QRectF(plot.right() - width - 6, plot.top() + 6, width, height),
                   QRectF(plot.left() + 6, plot.top() + 6, width, height),
                   QRectF(plot.right() - width - 6, plot.bottom() - height - 6, width, height),
                   QRectF(plot.left() + 6, plot.bottom() - height - 6, width, height)]
        return min(corners, key=lambda box: sum(box.adjusted(-8, -8, 8, 8).contains(point)
                                                for point in points))

    def _draw_legend(self, painter: QPainter, plot: QRectF,
                     bounds: tuple[float, float, float, float], fg: QColor) -> None:
        box = self.legend_rect(plot, bounds)
        if box is None:
            return
        named = [s for s in self.series if s.xs and s.name]
        metrics = QFontMetrics(painter.font())
        painter.fillRect(box, self.palette().color(QPalette.ColorRole.Base))
        painter.setPen(QColor(fg.red(), fg.green(), fg.blue(), 90))
        painter.drawRect(box)
        for row, series in enumerate(named):
            y = box.top() + 4 + metrics.height() * row + metrics.height() / 2
            painter.setPen(QPen(QColor(series.colour), 2))
            painter.drawLine(QPointF(box.left() + 6, y), QPointF(box.left() + 24, y))
            painter.setPen(fg)
            painter.drawText(QPointF(box.left() + 28, y + metrics.ascent() / 2 - 1),
                             series.name)
