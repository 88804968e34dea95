"""fastai's learning-rate finder: train briefly while the rate grows exponentially.

The loss first barely moves (rate too small), then falls (useful rates), then explodes
(too large). The suggestion is fastai's default "valley": the middle-to-late part of the
longest stretch where the smoothed loss keeps falling; "steep" (steepest descent) is
reported too.

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
from collections.abc import Sequence
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


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's ``valley``: longest decreasing run of the loss, 2/3 of the way down it."""
    n = len(losses)
    if n < 2:
        return lrs[0] if lrs else float("nan")
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return lrs[max_start + int(sections) + int(sections / 2)]


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
) -> LRFindResult:
    """Sweep the learning rate from ``start_lr`` to ``end_lr`` over ≤ ``num_it`` batches."""
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
        lrs, losses = _sweep(ctx, learner.train_loader, config.size, start_lr, end_lr, num_it,
                             events)
    if not lrs:
        lrs, losses = [start_lr], [float("nan")]
    suggestion, steep = suggest(lrs, losses, num_it)
    result = LRFindResult(tuple(lrs), tuple(losses), float(suggestion), float(steep))
    events(Finished("lr-find", result={"suggestion": result.suggestion, "steep": result.steep}))
    return result


def _sweep(ctx: LoopContext, loader: BatchLoader, size: int, start_lr: float, end_lr: float,
           num_it: int, events: EventCallback) -> tuple[list[float], list[float]]:
    """Run the batches, raising the rate each step; stop when the loss diverges.

    The model is in plain training mode, BatchNorm statistics included, as the finder has
    always swept (``train_epoch`` keeps pretrained statistics frozen instead)."""
    lrs: list[float] = []
    losses: list[float] = []
    avg, best = 0.0, math.inf
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
                avg = SMOOTH_BETA * avg + (1 - SMOOTH_BETA) * loss
                smooth = avg / (1 - SMOOTH_BETA ** (i + 1))
                lrs.append(lr)
                losses.append(smooth)
                best = min(best, smooth)
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
