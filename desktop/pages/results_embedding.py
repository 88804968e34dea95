"""The Results page's embedding map: which image is each point?

Hovering a point names its image (tooltip) and shows the picture beside it (an inset,
loaded in a worker and kept in a small cache); clicking a point asks the page to open
it in the image viewer (``pointActivated(index)``, the index into the embedding's
paths). Points are found by distance on screen, so overlapping class scatters and the
"misclassified" circles do not get in the way.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from loupe.desktop.pages import results_plots as plots
from loupe.desktop.widgets.mpl_canvas import MplCanvas
from loupe.desktop.workers import ignore_error

HOVER_RADIUS_PX = 8.0  # how close (in screen pixels) the pointer must be to a point
INSET_SIDE = 96
_CACHE_LIMIT = 256


def thumbnail_array(path: Path, side: int = INSET_SIDE) -> np.ndarray:
    """Worker body: the image shrunk to fit ``side``×``side`` (EXIF and bombs handled by
    the engine's loader), as an H×W×3 uint8 array for matplotlib."""
    from loupe.engine.data.imageio import load_rgb

    image = load_rgb(Path(path), min_short_side=side)
    image.thumbnail((side, side))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


class EmbeddingPanel(QWidget):
    """The scatter, plus hover insets and click-to-open."""

    pointActivated = Signal(int)
    insetShown = Signal(int)  # a hovered point's picture is drawn

    def __init__(self, runner: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._runner = runner
        self._embedding: Any = None
        self._hovered: int | None = None
        self._inset: Any = None
        self._thumbs: OrderedDict[Path, np.ndarray] = OrderedDict()
        self.canvas = MplCanvas(self, width=6, height=4)
        self.canvas.setMouseTracking(True)
        self.hint = QLabel("Hover a point to see its image; click it to open it.", self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.hint)
        self.canvas.mpl_connect("motion_notify_event", self._on_motion)
        self.canvas.mpl_connect("button_press_event", self._on_press)
        self.canvas.mpl_connect("figure_leave_event", lambda _event: self._hover(None))

    def show_embedding(self, embedding: Any) -> None:
        self._embedding = embedding
        self._hovered = None
        self._inset = None
        plots.draw_embedding(self.canvas, embedding)
        self.hint.setVisible(embedding is not None)

    def embedding(self) -> Any:
        return self._embedding

    def hovered(self) -> int | None:
        return self._hovered

    def point_position(self, index: int) -> tuple[float, float]:
        """Where point ``index`` is drawn, in matplotlib display pixels (for tests)."""
        x, y = self._axes().transData.transform(np.asarray(self._embedding.coords)[index])
        return float(x), float(y)

    # -- finding the point under the pointer -------------------------------------------------
    def _axes(self) -> Any:
        return self.canvas.figure.axes[0] if self.canvas.figure.axes else None

    def point_at(self, x: float, y: float) -> int | None:
        """The point nearest to display position (x, y), if within the hover radius."""
        ax = self._axes()
        if self._embedding is None or ax is None:
            return None
        screen = ax.transData.transform(np.asarray(self._embedding.coords, dtype=float))
        distances = np.hypot(screen[:, 0] - x, screen[:, 1] - y)
        index = int(distances.argmin())
        radius = HOVER_RADIUS_PX * self.canvas.devicePixelRatioF()
        return index if distances[index] <= radius else None

    def _on_motion(self, event: Any) -> None:
        if event.inaxes is None:
            self._hover(None)
            return
        self._hover(self.point_at(event.x, event.y))

    def _on_press(self, event: Any) -> None:
        if event.inaxes is None or event.button != 1:
            return
        index = self.point_at(event.x, event.y)
        if index is not None:
            self.pointActivated.emit(index)

    # -- the hovered point's picture ----------------------------------------------------------
    def _hover(self, index: int | None) -> None:
        if index == self._hovered:
            return
        self._hovered = index
        self._remove_inset()
        if index is None or self._embedding is None:
            self.canvas.setToolTip("")
            self.canvas.redraw()
            return
        emb = self._embedding
        path = Path(emb.paths[index])
        self.canvas.setToolTip(f"{path.name}\nactual {emb.actual[index]}, "
                               f"predicted {emb.predicted[index]}\nclick to open")
        cached = self._thumbs.get(path)
        if cached is not None:
            self._draw_inset(index, cached)
            return
        self._runner.start(  # the previous point's picture is superseded
            thumbnail_array, path, events=False, owner=self, kind="embedding-thumbnail",
            on_result=lambda thumb, i=index, p=path: self._on_thumbnail(i, p, thumb),
            on_error=ignore_error)  # no picture: the tooltip still names the image

    def _on_thumbnail(self, index: int, path: Path, thumb: np.ndarray) -> None:
        self._thumbs[path] = thumb
        while len(self._thumbs) > _CACHE_LIMIT:
            self._thumbs.popitem(last=False)
        if self._hovered == index:
            self._draw_inset(index, thumb)

    def _draw_inset(self, index: int, thumb: np.ndarray) -> None:
        from matplotlib.offsetbox import AnnotationBbox, OffsetImage

        ax = self._axes()
        if ax is None:
            return
        self._remove_inset()
        xy = tuple(np.asarray(self._embedding.coords)[index])
        # Towards the middle of the plot, so the picture is never cut at an edge.
        x_mid, y_mid = np.mean(ax.get_xlim()), np.mean(ax.get_ylim())
        offset = (-70 if xy[0] > x_mid else 70, -70 if xy[1] > y_mid else 70)
        self._inset = AnnotationBbox(
            OffsetImage(thumb, zoom=1.0 / self.canvas.devicePixelRatioF()), xy,
            xybox=offset, boxcoords="offset points", pad=0.25,
            arrowprops={"arrowstyle": "-", "color": self.canvas.foreground()})
        ax.add_artist(self._inset)
        self.canvas.redraw()
        self.insetShown.emit(index)

    def _remove_inset(self) -> None:
        if self._inset is not None:
            try:
                self._inset.remove()
            except (ValueError, NotImplementedError):
                pass  # the figure was cleared (a new analysis) and took it along
            self._inset = None

    def inset_shown(self) -> bool:
        return self._inset is not None
