"""The Train page's plots: live loss/metric curves and the learning-rate finder.

The live curves are painted with QPainter (cheap enough to follow every progress event
while training holds the CPU); the learning-rate finder is drawn once, with matplotlib,
when its sweep is done.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QWidget

from loupe.desktop.pages.live_chart import LiveChart, Series
from loupe.desktop.widgets.mpl_canvas import MplCanvas

# Per-epoch metrics drawn on the right-hand plot, first present wins.
METRIC_KEYS = ("error_rate", "accuracy", "f1", "accuracy_multi")


class TrainingCurves(QWidget):
    """Left: train/valid loss per epoch (and the running batch loss); right: the metric.

    Painted with QPainter (desktop/pages/live_chart.py), so updating it while training
    runs costs about a millisecond of GUI time instead of a matplotlib redraw.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loss_chart = LiveChart("loss")
        self.metric_chart = LiveChart("error rate")
        self._batches = self.loss_chart.add_series(
            Series("train (batches)", "#9ecae1", markers=False, width=1.2))
        self._train = self.loss_chart.add_series(Series("train", "#4c78a8"))
        self._valid = self.loss_chart.add_series(Series("valid", "#f58518"))
        self._metric = self.metric_chart.add_series(Series("", "#54a24b"))
        self.metric_name = "error_rate"
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.loss_chart)
        layout.addWidget(self.metric_chart)

    @property
    def epochs(self) -> list[float]:
        return list(self._train.xs)

    @property
    def batch_points(self) -> int:
        return len(self._batches.xs)

    def reset(self) -> None:
        self.loss_chart.clear()
        self.metric_chart.clear()

    def add_batch(self, position: float, loss: float) -> None:
        """Running training loss at ``position`` epochs (e.g. 1.5 = half of epoch 2)."""
        self._batches.add(position, loss)
        self.loss_chart.update()

    def add_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self._train.add(float(epoch), float(metrics.get("train_loss", math.nan)))
        self._valid.add(float(epoch), float(metrics.get("valid_loss", math.nan)))
        name = next((k for k in METRIC_KEYS if k in metrics), self.metric_name)
        self.metric_name = name
        self.metric_chart.title = name.replace("_", " ")
        self._metric.add(float(epoch), float(metrics.get(name, math.nan)))
        self.loss_chart.update()
        self.metric_chart.update()


class LrFinderPlot(MplCanvas):
    """fastai's lr_find plot; a click chooses the learning rate under the cursor."""

    lrChosen = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, width=7.0, height=3.0)
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.suggestion: float | None = None
        self.chosen: float | None = None
        self.mpl_connect("button_press_event", self._on_click)
        self._draw()

    def show_result(self, lrs: Sequence[float], losses: Sequence[float], suggestion: float) -> None:
        self.lrs = list(lrs)
        self.losses = list(losses)
        self.suggestion = suggestion
        self.chosen = suggestion
        self._draw()

    def choose(self, lr: float) -> None:
        """Select ``lr`` (what a click does), redraw the marker and tell the page."""
        if not (math.isfinite(lr) and lr > 0):
            return
        self.chosen = lr
        self._draw()
        self.lrChosen.emit(lr)

    def _on_click(self, event) -> None:  # matplotlib MouseEvent
        if event.inaxes is not None and event.xdata is not None and self.lrs:
            self.choose(float(event.xdata))

    def _draw(self) -> None:
        ax = self.axes()
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (click to choose)")
        ax.set_ylabel("loss")
        ax.grid(True, which="both", alpha=0.2)
        if not self.lrs:
            ax.text(0.5, 0.5, "Press “Find” next to the learning rate", ha="center",
                    va="center", color=self.foreground(), alpha=0.7, transform=ax.transAxes)
            ax.set_xlim(1e-7, 10)
            self.redraw()
            return
        ax.plot(self.lrs, self.losses, color="#4c78a8")
        finite = [v for v in self.losses if math.isfinite(v)]
        if finite:
            low, high = min(finite), max(finite)
            ax.set_ylim(low - 0.05 * (high - low + 1e-9), min(high, finite[0] * 4))
        if self.suggestion:
            ax.axvline(self.suggestion, color="#f58518", linestyle="--",
                       label=f"suggested {self.suggestion:.1e}")
        if self.chosen:
            ax.axvline(self.chosen, color="#e45756", label=f"chosen {self.chosen:.1e}")
        legend = ax.legend(fontsize="small")
        for text in legend.get_texts():
            text.set_color(self.foreground())
        self.redraw()
