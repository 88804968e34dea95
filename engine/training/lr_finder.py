"""fastai's learning-rate finder: train briefly while the rate grows exponentially.

The loss first barely moves (rate too small), then falls (useful rates), then explodes
(too large). The suggestion is fastai's default "valley": the middle-to-late part of the
longest stretch where the smoothed loss keeps falling; "steep" (steepest descent) is
reported too. The model is built exactly as ``train`` starts (pretrained body frozen),
used once and thrown away: no run folder, no checkpoint.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from loupe.engine.core.device import resolve_device, torch_threads
from loupe.engine.core.events import (
    CancelToken,
    EventCallback,
    Finished,
    Progress,
    Started,
    ThrottledCallback,
    ignore_event,
)
from loupe.engine.training.augment import Augment
from loupe.engine.training.batches import BatchLoader
from loupe.engine.training.config import TrainConfig
from loupe.engine.training.loop import LoopContext, to_model_input, train_step
from loupe.engine.training.setup import (
    auto_batch_size,
    build_targets,
    load_pretrained,
    resolve_arch_choice,
)

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
    events = ThrottledCallback(on_event)
    config = resolve_arch_choice(config)
    with torch_threads(config.threads):
        ctx, loader = _setup(prepared, config, start_lr, events, cancel)
        events(Started("lr-find", total=num_it, info={"arch": config.arch}))
        lrs, losses = _sweep(ctx, loader, config.size, start_lr, end_lr, num_it, events)
    if not lrs:
        lrs, losses = [start_lr], [float("nan")]
    suggestion, steep = suggest(lrs, losses, num_it)
    result = LRFindResult(tuple(lrs), tuple(losses), float(suggestion), float(steep))
    events(Finished("lr-find", result={"suggestion": result.suggestion, "steep": result.steep}))
    return result


def _setup(
    prepared: Any, config: TrainConfig, start_lr: float, events: EventCallback, cancel
) -> tuple:
    from loupe.engine.data.cache import ImageCache, presize_for
    from loupe.engine.data.stats import compute_mean_std
    from loupe.engine.models.anatomy import layer_groups, norm_parameters
    from loupe.engine.models.architectures import model_data_config
    from loupe.engine.models.factory import create_model
    from loupe.engine.training.builders import new_optimizer
    from loupe.engine.training.trainer import seed_everything

    seed_everything(config.seed)
    device = resolve_device(config.device)
    state, _description, tag = load_pretrained(config)
    plan = prepared.plan
    model = create_model(config.arch, len(plan.classes), pretrained_state=state).to(device.device)
    if state is not None:  # fine_tune starts frozen: find the rate for that phase
        keep = {id(p) for p in norm_parameters(model)}
        for group in layer_groups(model)[:-1]:
            for p in group:
                p.requires_grad_(id(p) in keep)
    optimizer, _groups = new_optimizer(model, start_lr, config.wd, device)
    cache = ImageCache(presize_for(config.size, config.resize),
                       max_pixels=prepared.spec.max_pixels, resize=config.resize)
    cache.warm([li.item for li in plan.train], on_event=events, cancel=cancel)
    if state is None:
        mean, std = compute_mean_std(cache, [li.item for li in plan.train], seed=config.seed)
    else:
        data = model_data_config(config.arch, tag)
        mean, std = data["mean"], data["std"]
    targets = build_targets(plan.train, plan.classes, plan.multi_label)
    bs = config.batch_size or auto_batch_size(device, config.size)
    loader = BatchLoader(cache.get, plan.train, targets, batch_size=bs, train=True,
                         seed=config.seed, pin_memory=device.pin_memory, resize=config.resize)
    loss_fn = torch.nn.BCEWithLogitsLoss() if plan.multi_label else torch.nn.CrossEntropyLoss()
    ctx = LoopContext(
        model=model, optimizer=optimizer, loss_fn=loss_fn, device=device,
        mean=torch.tensor(mean, device=device.device).view(1, 3, 1, 1),
        std=torch.tensor(std, device=device.device).view(1, 3, 1, 1),
        augment=Augment(flip=config.flip, rotate=config.rotate, lighting=config.lighting),
        seed=config.seed, scaler=device.make_scaler(), cancel=cancel,
    )
    return ctx, loader



def _sweep(ctx, loader: BatchLoader, size: int, start_lr: float, end_lr: float,
           num_it: int, events: EventCallback) -> tuple[list[float], list[float]]:
    """Run the batches, raising the rate each step; stop when the loss diverges."""
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
