"""What the network learned: first-layer filters, and the images that drive a channel.

From the "visualizing what a neural network is learning" part of the course: a trained
network's first convolution holds edge and colour-blob detectors, and a deeper channel is
best understood by the images that activate it most. Both work on any model with an RGB
convolution (ViTs included: their patch embedding is one); channels of token layers are
averaged over the patch tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loupe.engine.core.errors import ConfigError
from loupe.engine.core.events import (
    CancelToken,
    EventCallback,
    Finished,
    Progress,
    Started,
    ignore_event,
)

if TYPE_CHECKING:
    import numpy as np
    import torch
    from matplotlib.figure import Figure

    from loupe.engine.inference.predict import Predictor


def first_conv_filters(model: torch.nn.Module) -> np.ndarray:
    """The first RGB convolution's filters as N×k×k×3 images, each scaled to 0..1."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == 3:
            weights = module.weight.detach().float().cpu()
            low = weights.amin(dim=(1, 2, 3), keepdim=True)
            high = weights.amax(dim=(1, 2, 3), keepdim=True)
            scaled = (weights - low) / (high - low).clamp_min(1e-8)
            return scaled.permute(0, 2, 3, 1).numpy()
    raise ConfigError("the model has no convolution on RGB input to show filters for")


def filter_mosaic(filters: np.ndarray, columns: int = 8, pad: int = 1) -> np.ndarray:
    """Tile (N, k, k, 3) filters in 0..1 into one RGBA image with transparent gaps.

    One image drawn once is far cheaper than N tiny matplotlib axes (the desktop draws
    this on its GUI thread).
    """
    import numpy as np

    count, height, width = filters.shape[:3]
    rows = max(1, math.ceil(count / columns))
    mosaic = np.zeros((rows * (height + pad) - pad, columns * (width + pad) - pad, 4))
    for index in range(count):
        top, left = (index // columns) * (height + pad), (index % columns) * (width + pad)
        mosaic[top:top + height, left:left + width, :3] = np.clip(filters[index], 0.0, 1.0)
        mosaic[top:top + height, left:left + width, 3] = 1.0
    return mosaic


def filters_figure(filters: np.ndarray, *, columns: int = 8) -> Figure:
    """A grid picture of first-layer filters (edges, colour blobs on a trained model)."""
    from matplotlib.figure import Figure

    count = filters.shape[0]
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(columns * 0.8, rows * 0.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.axis("off")
    ax.imshow(filter_mosaic(filters, columns), interpolation="nearest")
    fig.suptitle(f"first convolution: {count} filters")
    return fig


@dataclass(frozen=True)
class ChannelActivation:
    """How strongly one image drives a channel (mean activation over positions)."""

    path: Path
    score: float


def top_activating(
    predictor: Predictor,
    paths: Sequence[str | Path],
    layer: str,
    channel: int,
    *,
    count: int = 9,
    batch_size: int = 16,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> list[ChannelActivation]:
    """The images (usually the validation set) that activate ``layer``/``channel`` most."""
    import torch

    module = named_module(predictor.model, layer)
    captured: list[torch.Tensor] = []
    from loupe.engine.models.anatomy import cam_reshape_transform

    reshape = cam_reshape_transform(predictor.model)

    def hook(_m: Any, _i: Any, output: torch.Tensor) -> None:
        fmap = reshape(output) if reshape is not None and output.ndim == 3 else output
        if not 0 <= channel < fmap.shape[1]:
            raise ConfigError(
                f"layer {layer!r} has {fmap.shape[1]} channels; {channel} is out of range"
            )
        captured.append(fmap[:, channel].flatten(1).mean(dim=1).float().cpu())

    scores: list[ChannelActivation] = []
    handle = module.register_forward_hook(hook)
    total = len(paths)
    on_event(Started("activations", total=total))
    try:
        for start in range(0, total, batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            chunk = [Path(p) for p in paths[start : start + batch_size]]
            batch = torch.stack([predictor.prepare(p).tensor for p in chunk])
            captured.clear()
            predictor.logits(batch)
            for path, value in zip(chunk, captured[0].tolist(), strict=True):
                scores.append(ChannelActivation(path, float(value)))
            on_event(Progress("activations", min(start + batch_size, total), total))
    finally:
        handle.remove()
    on_event(Finished("activations", {"count": total}))
    return sorted(scores, key=lambda a: a.score, reverse=True)[:count]


def named_module(model: torch.nn.Module, layer: str) -> torch.nn.Module:
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        import difflib

        close = difflib.get_close_matches(layer, modules, n=5)
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise ConfigError(f"the model has no layer named {layer!r}{hint}")
    return modules[layer]


def conv_layers(model: torch.nn.Module) -> list[tuple[str, int]]:
    """(name, output channels) of every 2-D convolution, for a layer picker."""
    import torch

    return [
        (name, module.out_channels)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Conv2d)
    ]
