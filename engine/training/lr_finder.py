"""fastai's learning-rate finder: train briefly while the rate grows exponentially.

The loss first barely moves (rate too small), then falls (useful rates), then explodes
(too large). The suggestion is fastai's default "valley": the point halfway down the
steep descent of the smoothed loss (see :func:`valley` for how it differs from fastai's
code); "steep" (steepest descent) is reported too. ``on_point(lr, loss)``
is told every point as it is measured, so a GUI can draw the curve while it grows.

As fastai's ``LRFinder`` is a callback on the ordinary ``fit``, the sweep runs on the
ordinary set-up: the :class:`~loupe.engine.training.learner.Learner` that ``train`` builds
(same device, weights, model, optimizer, image cache, normalization and loop context, the
pretrained body frozen as ``fine_tune`` starts), only without a run folder. What differs is
the loop: one batch per rate, the rate raised every step. The learner is used once and
thrown away: no run folder, no checkpoint.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loupe.engine.core.device import torch_threads
from loupe.engine.core.events import (
    CancelToken,
    EventCallback,
    Finished,
    Progress,
    Started,
    ThrottledCallback,
    ignore_event,
)
from loupe.engine.training.batches import BatchLoader
from loupe.engine.training.builders import build_learner
from loupe.engine.training.config import TrainConfig
from loupe.engine.training.loop import LoopContext, to_model_input, train_step

SMOOTH_BETA = 0.98
DIVERGE_FACTOR = 4.0
# A rise of the loss smaller than this share of its whole fall does not end a descent.
VALLEY_TOLERANCE = 0.05
# The suggestion: where the smoothed loss has fallen this share of its descent.
VALLEY_DEPTH = 0.5


@dataclass(frozen=True)
class LRFindResult:
    """The sweep (rates and smoothed losses) and fastai's two suggestions."""

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    suggestion: float
    steep: float

    def to_json(self) -> dict[str, Any]:
        return {"lrs": list(self.lrs), "losses": list(self.losses),
                "suggestion": self.suggestion, "steep": self.steep}


class LossSmoother:
    """fastai's smoothed loss: an exponential moving average with its start-up bias removed."""

    def __init__(self, beta: float = SMOOTH_BETA) -> None:
        self.beta, self.avg, self.count = beta, 0.0, 0

    def __call__(self, loss: float) -> float:
        self.count += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * loss
        return self.avg / (1 - self.beta**self.count)


def smooth_losses(raw: Sequence[float]) -> list[float]:
    """The curve the finder records for the batch losses ``raw``."""
    smoother = LossSmoother()
    return [smoother(loss) for loss in raw]


def valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """The rate at which the smoothed loss has come halfway down its descent into the minimum.

    fastai's ``valley`` takes the longest *decreasing subsequence* of the smoothed loss,
    whose points need not be neighbours, and the point in its middle. When the flat start
    drifts down a little (a frozen pretrained body, small batches) that subsequence
    begins deep in the flat part and its middle lands there: 1.4e-4 on a curve whose loss
    fell steeply from 1e-3 and was lowest near 5e-3 (issue 12). Here the valley is the
    *contiguous* descent ending at the lowest smoothed loss: walking back from the
    minimum, it goes on while the loss keeps rising (going backwards), a dip of less than
    ``VALLEY_TOLERANCE`` of the whole fall being noise. The suggestion is measured in
    loss, not in points: the first rate at which the loss has fallen ``VALLEY_DEPTH`` of
    that descent, so a long, slightly sloping start cannot pull it back into the flat
    part. Halfway (fastai's code also takes the middle of its valley) rather than two
    thirds: the smoothing (an average over about 50 batches, four decades of rate) lags
    behind the real loss, and two thirds of the smoothed fall came at or past the real
    minimum on short descents in simulations; halfway stayed inside the real descent.
    """
    n = len(losses)
    if n < 2:
        return lrs[0] if lrs else float("nan")
    low = min(range(n), key=losses.__getitem__)
    tolerance = VALLEY_TOLERANCE * (max(losses[: low + 1]) - losses[low])
    if tolerance <= 0.0:  # the loss never fell: its lowest point is the least bad rate
        return lrs[low]
    top = low
    for k in range(low - 1, -1, -1):
        if losses[k] < losses[top] - tolerance:
            break  # going back, the loss fell again: the descent starts at ``top``
        if losses[k] > losses[top]:
            top = k
    target = losses[top] - (losses[top] - losses[low]) * VALLEY_DEPTH
    return lrs[next(k for k in range(top, low + 1) if losses[k] <= target)]


def steepest(lrs: list[float], losses: list[float]) -> float:
    """The rate where the loss falls fastest per unit of log(lr)."""
    if len(lrs) < 2:
        return lrs[0] if lrs else float("nan")
    grads = [
        (losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i]))
        for i in range(len(lrs) - 1)
    ]
    return lrs[min(range(len(grads)), key=grads.__getitem__)]


def suggest(lrs: list[float], losses: list[float], num_it: int) -> tuple[float, float]:
    """(valley, steep) on the sweep without its noisy start and exploding end (fastai)."""
    lo, hi = num_it // 10, len(lrs) - 5
    if hi - lo < 3:
        lo, hi = 0, len(lrs)
    return valley(lrs[lo:hi], losses[lo:hi]), steepest(lrs[lo:hi], losses[lo:hi])


def lr_find(
    prepared: Any,
    config: TrainConfig,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
    on_point: Callable[[float, float], None] | None = None,
) -> LRFindResult:
    """Sweep the learning rate from ``start_lr`` to ``end_lr`` over ≤ ``num_it`` batches.

    ``on_point(lr, smoothed_loss)`` is called on the sweep's thread for every batch, not
    throttled like the Progress events: a live plot keeps the points and redraws when a
    Progress event arrives.
    """
    from loupe.engine.training.trainer import seed_everything

    events = ThrottledCallback(on_event)
    seed_everything(config.seed)  # as train does
    with torch_threads(config.threads):
        learner = build_learner(prepared, config, events, cancel)
        ctx = learner.prepare_batches([li.item for li in prepared.plan.train])
        if not learner.random_init:  # fine_tune starts frozen: find the rate for that phase
            learner.freeze(True)
        config = learner.config
        events(Started("lr-find", total=num_it, info={"arch": config.arch}))
        try:
            lrs, losses = _sweep(ctx, learner.train_loader, config.size, start_lr, end_lr,
                                 num_it, events, on_point)
        finally:
            learner.close()  # the sweep may end before every image was decoded
    if not lrs:
        lrs, losses = [start_lr], [float("nan")]
    suggestion, steep = suggest(lrs, losses, num_it)
    result = LRFindResult(tuple(lrs), tuple(losses), float(suggestion), float(steep))
    events(Finished("lr-find", result={"suggestion": result.suggestion, "steep": result.steep}))
    return result


def _sweep(ctx: LoopContext, loader: BatchLoader, size: int, start_lr: float, end_lr: float,
           num_it: int, events: EventCallback,
           on_point: Callable[[float, float], None] | None = None,
           ) -> tuple[list[float], list[float]]:
    """Run the batches, raising the rate each step; stop when the loss diverges.

    The model is in plain training mode, BatchNorm statistics included, as the finder has
    always swept (``train_epoch`` keeps pretrained statistics frozen instead)."""
    lrs: list[float] = []
    losses: list[float] = []
    smoother, best = LossSmoother(), math.inf
    generator = torch.Generator().manual_seed(ctx.seed)
    ctx.model.train()
    epoch = 0
    while len(lrs) < num_it and len(loader):
        with loader.epoch(epoch, size) as batches:
            for xb, yb, _ in batches:
                if ctx.cancel is not None:
                    ctx.cancel.raise_if_cancelled()
                i = len(lrs)
                lr = start_lr * (end_lr / start_lr) ** (i / max(1, num_it - 1))
                for group in ctx.optimizer.param_groups:
                    group["lr"] = lr
                x = to_model_input(ctx, xb, generator)
                loss = float(train_step(ctx, x, yb.to(ctx.device.device)).item())
                if not math.isfinite(loss):
                    return lrs, losses
                smooth = smoother(loss)
                lrs.append(lr)
                losses.append(smooth)
                best = min(best, smooth)
                if on_point is not None:
                    on_point(lr, smooth)
                events(Progress("lr-find", i + 1, num_it, loss=smooth, message=f"lr {lr:.2e}"))
                if smooth > DIVERGE_FACTOR * best or len(lrs) >= num_it:
                    return lrs, losses
        epoch += 1
    return lrs, losses


def _nearest(values: Sequence[float], target: float) -> int:
    """Index of the value closest to ``target``."""
    return min(range(len(values)), key=lambda k: abs(values[k] - target))


def plot_lr_find(result: LRFindResult, path: Path | str) -> Path:
    """Save the loss-vs-rate curve as PNG (Agg backend, no GUI, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from loupe.engine.core.atomic import atomic_write_bytes

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(result.lrs, result.losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    for lr, name, marker in ((result.suggestion, "valley", "o"), (result.steep, "steep", "x")):
        idx = _nearest(result.lrs, lr)
        ax.plot([lr], [result.losses[idx]], marker, label=f"{name}: {lr:.2e}")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(Path(path), buffer.getvalue())
