"""The Train page's plots: live loss/metric curves and the learning-rate finder.

Both draw with ``draw_idle`` (coalesced by Qt), and the curves redraw only once per
epoch plus a few times a second for the batch loss, so plotting never competes with
training for the GUI thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget

from desktop.widgets.mpl_canvas import MplCanvas

# Per-epoch metrics drawn on the right-hand plot, first present wins.
METRIC_KEYS = ("error_rate", "accuracy", "f1", "accuracy_multi")
# Redrawing both plots costs a few ms of GUI time; the batch loss is redrawn at most this
# often (epochs always redraw).
BATCH_REDRAW_SECONDS = 0.5


class TrainingCurves(MplCanvas):
    """Left: train/valid loss per epoch (and the running batch loss); right: the metric."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, width=7.0, height=3.0)
        self.epochs: list[float] = []
        self.train_loss: list[float] = []
        self.valid_loss: list[float] = []
        self.metric_values: list[float] = []
        self.metric_name = "error_rate"
        self.batch_x: list[float] = []
        self.batch_loss: list[float] = []
        self._last_batch_draw = 0.0
        self.reset()

    def reset(self) -> None:
        self.epochs.clear()
        self.train_loss.clear()
        self.valid_loss.clear()
        self.metric_values.clear()
        self.batch_x.clear()
        self.batch_loss.clear()
        self._draw()

    def add_batch(self, position: float, loss: float) -> None:
        """Running training loss at ``position`` epochs (e.g. 1.5 = half of epoch 2)."""
        if math.isfinite(loss):
            self.batch_x.append(position)
            self.batch_loss.append(loss)
            now = time.monotonic()
            if now - self._last_batch_draw >= BATCH_REDRAW_SECONDS:
                self._last_batch_draw = now
                self._draw()

    def add_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.epochs.append(float(epoch))
        self.train_loss.append(float(metrics.get("train_loss", math.nan)))
        self.valid_loss.append(float(metrics.get("valid_loss", math.nan)))
        name = next((k for k in METRIC_KEYS if k in metrics), self.metric_name)
        self.metric_name = name
        self.metric_values.append(float(metrics.get(name, math.nan)))
        self._draw()

    def _draw(self) -> None:
        self.clear()
        loss_ax = self.figure.add_subplot(1, 2, 1)
        metric_ax = self.figure.add_subplot(1, 2, 2)
        for ax in (loss_ax, metric_ax):
            self.style_axes(ax)
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.25)
        loss_ax.set_title("loss")
        metric_ax.set_title(self.metric_name.replace("_", " "))
        if self.batch_x:
            loss_ax.plot(self.batch_x, self.batch_loss, color="#9ecae1", linewidth=1,
                         label="train (batches)")
        if self.epochs:
            loss_ax.plot(self.epochs, self.train_loss, "o-", color="#4c78a8", label="train")
            loss_ax.plot(self.epochs, self.valid_loss, "o-", color="#f58518", label="valid")
            metric_ax.plot(self.epochs, self.metric_values, "o-", color="#54a24b")
        if self.epochs or self.batch_x:
            legend = loss_ax.legend(fontsize="small")
            for text in legend.get_texts():
                text.set_color(self.foreground())
        else:
            for ax in (loss_ax, metric_ax):
                ax.text(0.5, 0.5, "appears when training starts", ha="center", va="center",
                        color=self.foreground(), alpha=0.6, transform=ax.transAxes)
        self.redraw()


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
