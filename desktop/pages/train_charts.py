"""The Train page's plots: live loss/metric curves and the learning-rate finder.

Both are painted with QPainter (desktop/pages/live_chart.py), cheap enough to follow every
progress event while training or the finder's sweep holds the CPU.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from loupe.desktop.pages.live_chart import LiveChart, Marker, Series

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


class LrFinderPanel(QWidget):
    """fastai's lr_find plot, drawn while the sweep runs, and a "Use this rate" button.

    The sweep's thread hands each (rate, loss) point to :meth:`add_point` (a deque: no Qt
    call off the GUI thread); the page calls :meth:`flush` on each Progress event, so the
    curve grows a few times a second. Painted with QPainter, as the training curves are.
    The suggestion (the engine's ``valley``) and a click on the curve only *choose* a
    rate; the learning-rate field changes when the user presses "Use this rate"
    (``lrChosen``).
    """

    lrChosen = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.chart = LiveChart("loss (smoothed) while the learning rate grows",
                               x_label="learning rate (click the curve to choose)")
        self.chart.placeholder = "Press “Find” next to the learning rate"
        self.chart.min_x_span = 0.5
        self.chart.x_format = _decade
        self.curve = self.chart.add_series(Series("", "#4c78a8", markers=False, width=1.8))
        self.chart.clicked.connect(lambda x: self.choose(10.0 ** x))
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.use_button = QPushButton("Use this rate")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self.apply)
        row = QHBoxLayout()
        row.addWidget(self.note, 1)
        row.addWidget(self.use_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.chart, 1)
        layout.addLayout(row)
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.suggestion: float | None = None
        self.chosen: float | None = None
        self._incoming: deque[tuple[float, float]] = deque()

    # The sweep --------------------------------------------------------------------------
    def reset(self) -> None:
        """No curve (another folder was opened)."""
        self.begin()
        self.chart.placeholder = "Press “Find” next to the learning rate"
        self.note.setText("")

    def begin(self) -> None:
        """A new sweep: forget the old curve and say what is happening."""
        self._incoming.clear()
        self.lrs, self.losses = [], []
        self.curve.clear()
        self.suggestion = self.chosen = None
        self.chart.markers = []
        self.chart.placeholder = "Measuring the loss at growing learning rates…"
        self.note.setText("The curve appears point by point; the suggestion when it ends.")
        self.use_button.setEnabled(False)
        self.use_button.setText("Use this rate")
        self.chart.update()

    def add_point(self, lr: float, loss: float) -> None:
        """Called on the sweep's thread for every batch: only queue the point."""
        self._incoming.append((lr, loss))

    def flush(self) -> None:
        """Draw the points queued so far (GUI thread)."""
        added = False
        while self._incoming:
            lr, loss = self._incoming.popleft()
            self._append(lr, loss)
            added = True
        if added:
            self._cap()
            self.chart.update()

    def _append(self, lr: float, loss: float) -> None:
        if lr > 0 and math.isfinite(lr) and math.isfinite(loss):
            self.lrs.append(lr)
            self.losses.append(loss)
            self.curve.add(math.log10(lr), loss)

    def _cap(self) -> None:
        # As fastai's plot: the explosion at the end would flatten the useful part.
        self.chart.y_cap = 4 * self.losses[0] if self.losses else None

    def show_result(self, lrs: Sequence[float], losses: Sequence[float],
                    suggestion: float) -> None:
        """The whole sweep and the engine's suggestion, chosen but not yet applied."""
        self._incoming.clear()
        self.lrs, self.losses = [], []
        self.curve.clear()
        for lr, loss in zip(lrs, losses, strict=False):
            self._append(lr, loss)
        self._cap()
        self.suggestion = suggestion if math.isfinite(suggestion) and suggestion > 0 else None
        self.chart.placeholder = "The sweep stopped before its first point"
        if self.suggestion is not None:
            self.choose(self.suggestion)
        else:
            self.chart.update()

    def stopped(self) -> None:
        self.chart.placeholder = "Stopped"
        self.note.setText("The learning-rate finder was stopped.")
        self.chart.update()

    # Choosing ---------------------------------------------------------------------------
    def choose(self, lr: float) -> None:
        """Mark ``lr`` (the suggestion, or what a click picked); the field is unchanged."""
        if not (math.isfinite(lr) and lr > 0) or not self.lrs:
            return
        self.chosen = lr
        markers = []
        if self.suggestion is not None:
            markers.append(Marker(math.log10(self.suggestion), "#f58518",
                                  f"suggested {self.suggestion:.1e}", dashed=True))
        if lr != self.suggestion:
            markers.append(Marker(math.log10(lr), "#e45756", f"chosen {lr:.1e}"))
        self.chart.markers = markers
        self.use_button.setText(f"Use this rate ({lr:.1e})")
        self.use_button.setEnabled(True)
        which = "the suggestion (halfway down the steep descent)" if lr == self.suggestion \
            else "your choice"
        self.note.setText(f"{lr:.1e} is {which}. Click the curve to choose another rate; "
                          "“Use this rate” puts it in the learning-rate field.")
        self.chart.update()

    def apply(self) -> None:
        """The user's "Use this rate": tell the page to fill in the field."""
        if self.chosen is not None:
            self.lrChosen.emit(self.chosen)


def _decade(x: float) -> str:
    """Tick label of log10(lr): 1e-5, 1e-3, 1, 10."""
    power = round(x)
    if power == 0:
        return "1"
    if power == 1:
        return "10"
    return f"1e{power}"
