"""Whole-run progress and a time left that is right from the first batches.

The engine's per-batch ``Progress`` carries the epoch, the batch and the batches per epoch;
its ``eta_seconds`` adds the previous epoch's duration for the epochs left, which is zero
during the first epoch ("00:01 left" at batch 13 of a 5-epoch run). :class:`RunClock`
instead measures the time per batch over the last few seconds (the batches done between
two events / the time between them, so start-up and the last epoch's validation are not
counted as batch time) and says::

    time left = batches left in the whole run × recent time per batch
              + validation passes left × time per validation pass

A validation pass is measured once one has run (from the epoch's last batch to its
``EpochEnded``); before that it is estimated from the validation images: a forward pass
costs about a third of a training step. The clock is plain Python fed with times, so
tests drive it with a fake clock; the Train page feeds it ``time.monotonic()``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton

from loupe.desktop.widgets.epoch_table import format_seconds

WINDOW = 20  # recent progress events used for the time per batch (~2 s at 10 per second)
VALID_COST = 0.35  # one validation batch relative to one training batch, until measured


@dataclass
class RunClock:
    """Where a training run is, as a share of all its batches, and how long it has left."""

    total_epochs: int = 0
    first_epoch: int = 0  # epochs already done when the run started (a resumed run)
    valid_batches: int = 0  # validation batches per epoch (estimate from Started info)
    batches: int = 0  # training batches per epoch (from Progress.total)
    epoch: int = 0  # the epoch in progress, 1-based
    done: int = 0  # its batches done
    epochs_ended: int = 0
    batch_seconds: float | None = None
    valid_seconds: float | None = None
    _window: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=WINDOW))
    _last_batch_at: float | None = None

    def start(self, total_epochs: int, info: Mapping[str, Any]) -> None:
        """A run began (``Started`` of task "train"): its epochs and data sizes."""
        self.total_epochs = int(total_epochs or 0)
        self.first_epoch = int(info.get("resumed_at_epoch") or 0)
        self.epochs_ended = self.first_epoch
        n_valid, batch = info.get("n_valid"), info.get("batch_size")
        if isinstance(n_valid, int) and isinstance(batch, int) and batch > 0:
            self.valid_batches = math.ceil(n_valid / batch)

    def progress(self, epoch: int, done: int, total: int, now: float) -> None:
        """A training ``Progress``: ``done`` of ``total`` batches of ``epoch`` (1-based)."""
        if epoch != self.epoch:
            self._window.clear()  # time across an epoch boundary includes validation
            self.epoch = epoch
        self.batches = max(1, int(total))
        self.done = int(done)
        self._window.append((now, self._position()))
        (t0, g0), (t1, g1) = self._window[0], self._window[-1]
        if g1 > g0 and t1 > t0:
            self.batch_seconds = (t1 - t0) / (g1 - g0)
        if done >= total:
            self._last_batch_at = now

    def epoch_ended(self, epoch: int, now: float) -> None:
        """``EpochEnded``: the time since the last batch was the validation pass."""
        self.epochs_ended = max(self.epochs_ended, int(epoch))
        if self._last_batch_at is not None and now >= self._last_batch_at:
            self.valid_seconds = now - self._last_batch_at
        self._last_batch_at = None

    def _position(self) -> int:
        return max(0, self.epoch - 1) * self.batches + self.done

    @property
    def fraction(self) -> float:
        """Share of the run's training batches done (resumed runs count earlier epochs)."""
        if not self.total_epochs or not self.batches:
            return 0.0
        return min(1.0, self._position() / (self.total_epochs * self.batches))

    def seconds_left(self) -> float | None:
        """None until a time per batch has been measured (the first two events)."""
        if self.batch_seconds is None or not self.total_epochs:
            return None
        batches_left = max(0, self.total_epochs * self.batches - self._position())
        validations_left = max(0, self.total_epochs - self.epochs_ended)
        per_validation = self.valid_seconds
        if per_validation is None:
            per_validation = self.valid_batches * self.batch_seconds * VALID_COST
        return batches_left * self.batch_seconds + validations_left * per_validation

    def text(self, loss: float | None = None) -> str:
        """The bar's text: 'epoch 2/5 · batch 13/40 · loss 0.4123 · 27% of the run · 03:12
        left'."""
        parts = [f"epoch {self.epoch}/{self.total_epochs}", f"batch {self.done}/{self.batches}"]
        if loss is not None and math.isfinite(loss):
            parts.append(f"loss {loss:.4f}")
        parts.append(f"{self.fraction:.0%} of the run")
        left = self.seconds_left()
        parts.append(f"{format_seconds(left)} left" if left is not None
                     else "estimating time left…")
        return " · ".join(parts)


class FinishedNotice(QFrame):
    """"Training finished — view results": a notice on the Train page, not a tab switch
    (a click meant for Train used to land on Results when a run ended under it)."""

    STYLE = ("QFrame#finishedNotice { background: #1f5f3a; border-radius: 4px; }"
             "QFrame#finishedNotice QLabel { color: white; }")

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("finishedNotice")
        self.setStyleSheet(self.STYLE)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.results_button = QPushButton("View results")
        row = QHBoxLayout(self)
        row.setContentsMargins(10, 6, 6, 6)
        row.addWidget(self.label, 1)
        row.addWidget(self.results_button)
        self.hide()

    def finished(self, error_rate: float | None) -> None:
        accuracy = (f" — accuracy {1 - error_rate:.1%}" if isinstance(error_rate, float)
                    else "")
        self.label.setText(f"<b>Training finished{accuracy}.</b> The model is loaded: see "
                           "where it goes wrong, or predict with it.")
        self.show()
