"""The epoch loop: one training pass, one scoring pass, read top to bottom.

Kept apart from the run bookkeeping (trainer.py) in the spirit of torchvision's
``references/classification/train.py``: ``train_epoch`` is a plain function over a
:class:`LoopContext`, and :func:`score` is the one way Loupe scores labelled images, as
torchvision's one ``evaluate()`` serves every epoch and ``--test-only``: validation during
training, ``evaluate`` of a saved model (validation or locked test set) and the error
analysis all get their per-sample logits, targets and losses from it. ``train_step`` is
module-level on purpose: it is the one seam tests replace to inject an out-of-memory error
or a non-finite loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from loupe.engine.core.device import DeviceInfo
from loupe.engine.core.errors import CancelledError, TrainingError
from loupe.engine.core.events import CancelToken, Progress
from loupe.engine.training.augment import Augment
from loupe.engine.training.batches import BatchLoader, epoch_seed


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; carries where, for the user's message."""

    def __init__(
        self, value: float, epoch: int, batch: int | None, where: str = "training"
    ) -> None:
        at = f", batch {batch + 1}" if batch is not None else ""
        super().__init__(f"{where} loss became {value} at epoch {epoch + 1}{at}")
        self.value, self.epoch, self.batch = value, epoch, batch


@dataclass
class LoopContext:
    """What every batch needs: model, optimizer, loss, device and input statistics."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    device: DeviceInfo
    mean: torch.Tensor  # 1×3×1×1 on the device
    std: torch.Tensor
    augment: Augment
    seed: int
    scaler: torch.amp.GradScaler
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    cancel: CancelToken | None = None
    frozen_norm_stats: bool = False  # pretrained runs: BatchNorm keeps ImageNet statistics
    on_progress: Callable[[Progress], None] = field(default=lambda event: None)


def channel_stats(values: Sequence[float], device: DeviceInfo) -> torch.Tensor:
    """Per-channel mean or std as a 1×3×1×1 tensor on the device (broadcasts on a batch)."""
    return torch.tensor(tuple(values), device=device.device).view(1, 3, 1, 1)


def model_input(
    x: torch.Tensor,
    device: DeviceInfo,
    mean: torch.Tensor,
    std: torch.Tensor,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Host batch → normalized device batch (uint8 or float 0..1 in, float out)."""
    x = x.to(device.device, non_blocking=True)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    if augment is not None:
        x = augment(x)
    x = (x - mean) / std
    if device.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def to_model_input(ctx: LoopContext, x: torch.Tensor, generator: torch.Generator | None):
    """:func:`model_input` with ``ctx``'s device and statistics; augmented by ``ctx.augment``
    when a ``generator`` gives the random draws."""
    augment = None if generator is None else (lambda batch: ctx.augment(batch, generator))
    return model_input(x, ctx.device, ctx.mean, ctx.std, augment)


def train_step(ctx: LoopContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward, loss, backward and optimizer step for one batch; returns the loss.

    The loss is checked before the step so a NaN never reaches the weights.
    """
    if x.shape[0] == 1:
        _check_single_image_batch(ctx.model)
    ctx.optimizer.zero_grad(set_to_none=True)
    with ctx.device.autocast():
        out = ctx.model(x)
    loss = ctx.loss_fn(out.float(), y)
    if not torch.isfinite(loss):
        return loss.detach()
    ctx.scaler.scale(loss).backward()
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    return loss.detach()


def set_train_mode(ctx: LoopContext) -> None:
    """Training mode, except BatchNorm layers when ``ctx.frozen_norm_stats``.

    Fine-tuning pretrained weights on a few hundred images, BatchNorm layers in training
    mode normalise with the statistics of each small, augmented batch and overwrite the
    running statistics the pretrained weights were trained with, which undoes much of
    what the frozen phase's head was fitted to (Keras' transfer-learning guide gives the
    same advice for EfficientNet). In eval mode they keep the pretrained statistics while
    their scale and shift still train.
    """
    ctx.model.train()
    if ctx.frozen_norm_stats:
        for module in ctx.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _check_single_image_batch(model: nn.Module) -> None:
    """Batch normalization cannot train on one image (torch raises a bare ValueError)."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
           for m in model.modules()):
        raise TrainingError(
            "a training batch of 1 image: this architecture's batch normalization needs at "
            "least 2 images per batch; use a batch size of 2 or more (--bs 2), or add images"
        )


def _check_cancel(cancel: CancelToken | None) -> None:
    if cancel is not None and cancel.cancelled:
        raise CancelledError()


def train_epoch(
    ctx: LoopContext, loader: BatchLoader, epoch: int, size: int, eta_after: float = 0.0
) -> float:
    """One pass over the training batches; returns the mean training loss.

    Random streams (augmentation draws, dropout) are reseeded from (seed, epoch) so an
    epoch run after a resume is the epoch an uninterrupted run would have run.
    """
    set_train_mode(ctx)
    generator = torch.Generator().manual_seed(epoch_seed(ctx.seed, epoch, 3))
    torch.manual_seed(epoch_seed(ctx.seed, epoch, 4))
    total_loss, count = 0.0, 0
    start = time.monotonic()
    with loader.epoch(epoch, size) as batches:
        n = len(batches)
        for i, (xb, yb, _) in enumerate(batches):
            _check_cancel(ctx.cancel)
            x = to_model_input(ctx, xb, generator)
            y = yb.to(ctx.device.device, non_blocking=True)
            loss = train_step(ctx, x, y)
            value = float(loss.item())
            if not math.isfinite(value):
                raise NonFiniteLoss(value, epoch, i)
            if ctx.scheduler is not None:
                ctx.scheduler.step()
            total_loss += value * len(yb)
            count += len(yb)
            per_batch = (time.monotonic() - start) / (i + 1)
            ctx.on_progress(
                Progress(
                    "train", i + 1, n, message="training", epoch=epoch + 1,
                    loss=total_loss / count, eta_seconds=per_batch * (n - i - 1) + eta_after,
                )
            )
    _check_cancel(ctx.cancel)
    return total_loss / max(1, count)


@dataclass
class Scores:
    """Everything :func:`score` produced, on the CPU: per-sample logits, targets, losses."""

    logits: torch.Tensor
    targets: torch.Tensor
    losses: torch.Tensor

    @property
    def loss(self) -> float:
        return float(self.losses.mean().item()) if self.losses.numel() else float("nan")


def per_sample_loss(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool):
    """Loss of each sample (for the mean and for top losses)."""
    if multi_label:
        raw = nn.functional.binary_cross_entropy_with_logits(
            logits, targets.float(), reduction="none"
        )
        return raw.mean(dim=1)
    return nn.functional.cross_entropy(logits, targets, reduction="none")


@torch.inference_mode()
def score(
    model: nn.Module,
    loader: BatchLoader,
    size: int,
    *,
    device: DeviceInfo,
    mean: torch.Tensor,
    std: torch.Tensor,
    multi_label: bool,
    epoch: int = 0,
    cancel: CancelToken | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Scores:
    """Score every item of ``loader`` (an evaluation loader) in order, in eval mode.

    ``device`` gives the mixed precision and memory layout, ``mean``/``std`` (1×3×1×1 on
    the device, :func:`channel_stats`) the normalization. ``cancel`` is checked before
    each batch; ``on_batch(n)`` is told each batch's size once it is scored.
    """
    model.eval()
    logits, targets = [], []
    with loader.epoch(epoch, size) as batches:
        for xb, yb, _ in batches:
            _check_cancel(cancel)
            x = model_input(xb, device, mean, std)
            with device.autocast():
                out = model(x)
            logits.append(out.float().cpu())
            targets.append(yb)
            if on_batch is not None:
                on_batch(len(yb))
    if not logits:
        empty = torch.zeros(0)
        return Scores(empty, empty, empty)
    all_logits, all_targets = torch.cat(logits), torch.cat(targets)
    return Scores(all_logits, all_targets, per_sample_loss(all_logits, all_targets, multi_label))
