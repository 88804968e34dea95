"""A matplotlib figure inside a Qt widget, themed from the Qt palette.

Pages draw into ``canvas.figure`` and call :meth:`MplCanvas.redraw`; ``draw_idle`` lets
Qt coalesce repaints, so a training page updating per batch never blocks the UI.
"""

from __future__ import annotations

import warnings

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from PySide6.QtCore import QEvent
from PySide6.QtGui import QPaintEvent, QPalette
from PySide6.QtWidgets import QApplication, QSizePolicy, QWidget


class MplCanvas(FigureCanvasQTAgg):
    """FigureCanvasQTAgg owning its Figure; colours follow the light/dark palette.

    The Figure is built directly (no pyplot), so there is no global figure state.

    ``width``/``height`` are the preferred size in inches; the canvas expands with its
    layout. Call :meth:`clear` then add axes (``self.figure.add_subplot``) and
    :meth:`redraw`; :meth:`axes` returns a single, cleared axes for the common case.
    """

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        width: float = 5.0,
        height: float = 3.5,
        dpi: int = 100,
    ) -> None:
        self.figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
        super().__init__(self.figure)
        self._stale = False  # redraw() asked while hidden: render at the next paint
        if parent is not None:
            self.setParent(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 120)
        self._apply_palette()

    def clear(self) -> None:
        """Remove every axes and re-apply the palette colours."""
        self.figure.clear()
        self._apply_palette()

    def axes(self):  # -> matplotlib.axes.Axes
        """A fresh single axes filling the figure (clears the figure first)."""
        self.clear()
        ax = self.figure.add_subplot(1, 1, 1)
        self.style_axes(ax)
        return ax

    def style_axes(self, ax) -> None:
        """Give an axes the palette's text and background colours."""
        fg, bg = self._colours()
        ax.set_facecolor(bg)
        ax.tick_params(colors=fg, which="both")
        for spine in ax.spines.values():
            spine.set_color(fg)
        ax.xaxis.label.set_color(fg)
        ax.yaxis.label.set_color(fg)
        ax.title.set_color(fg)

    def foreground(self) -> str:
        """The palette's text colour as a hex string, for texts drawn by pages."""
        return self._colours()[0]

    def redraw(self) -> None:
        """Schedule a repaint (coalesced by Qt; cheap to call often).

        A canvas in a hidden tab only remembers that it is stale and renders when shown:
        rendering every hidden plot was most of the start-up time and GUI-thread work
        during training.
        """
        if self.isVisible():
            self.draw_idle()
        else:
            self._stale = True

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt API)
        # Shown (or grabbed) at last: schedule the render the base paintEvent performs.
        if self._stale:
            self._stale = False
            self.draw_idle()
        super().paintEvent(event)

    def draw(self) -> None:
        """Render; a canvas in a hidden tab can be too small for its layout, which
        matplotlib warns about on every draw; it lays out properly once shown."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="constrained_layout not applied")
            super().draw()

    def changeEvent(self, event: QEvent) -> None:
        """Follow a light/dark switch while the window is open: recolour and redraw."""
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_palette()
            for ax in self.figure.axes:
                self.style_axes(ax)
            self.redraw()
        super().changeEvent(event)

    def _theme(self) -> QPalette:
        """The palette to follow: the parent's, else the application's. (Matplotlib gives
        the canvas itself a fixed white palette, so ``self.palette()`` would not do.)"""
        parent = self.parentWidget()
        return parent.palette() if parent is not None else QApplication.palette()

    def _colours(self) -> tuple[str, str]:
        palette = self._theme()
        fg = palette.color(QPalette.ColorRole.WindowText).name()
        bg = palette.color(QPalette.ColorRole.Base).name()
        return fg, bg

    def _apply_palette(self) -> None:
        window = self._theme().color(QPalette.ColorRole.Window).name()
        self.figure.set_facecolor(window)
        self.figure.set_edgecolor(window)
