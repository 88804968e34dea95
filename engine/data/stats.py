"""Normalization statistics: ImageNet's for pretrained models, the data's own otherwise.

A pretrained network expects inputs normalized the way it was trained (ImageNet's mean and
std, or whatever its timm config says); a network trained from scratch does better with
the statistics of its own training images, estimated from a deterministic sample so the
same data and seed always give the same numbers (they are stored in the bundle).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from loupe.engine.core.errors import ConfigError, DatasetError
from loupe.engine.core.events import CancelToken

if TYPE_CHECKING:
    from loupe.engine.data.cache import CacheableItem, ImageCache

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# A channel that never varies (a folder of grey scans) would divide by zero.
MIN_STD = 1e-3


def sample_items(
    items: Sequence[CacheableItem], sample: int, seed: int
) -> list[CacheableItem]:
    """Up to ``sample`` items, chosen by ``seed`` independently of the input order."""
    ordered = sorted(items, key=lambda item: str(item.path))
    if len(ordered) <= sample:
        return ordered
    return random.Random(seed).sample(ordered, sample)


def compute_mean_std(
    cache: ImageCache,
    items: Sequence[CacheableItem],
    *,
    sample: int = 500,
    seed: int = 0,
    cancel: CancelToken | None = None,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std (0..1 units) over every pixel of a sample of images.

    Images come from the cache (presized uint8), so the sample is decoded at most once and
    is ready for training afterwards. Sums are accumulated in float64; std is floored at
    ``MIN_STD``.
    """
    import torch

    if isinstance(sample, bool) or not isinstance(sample, int) or sample <= 0:
        raise ConfigError(f"statistics sample size must be a positive integer, got {sample!r}")
    chosen = sample_items(items, sample, seed)
    if not chosen:
        raise DatasetError(
            "cannot compute normalization statistics: the training set has no images"
        )
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    pixels = 0
    for item in chosen:
        if cancel is not None:
            cancel.raise_if_cancelled()
        x = cache.get(item).reshape(3, -1).to(torch.float64).div_(255.0)
        total += x.sum(dim=1)
        total_sq += x.square().sum(dim=1)
        pixels += x.shape[1]
    mean = total / pixels
    var = (total_sq / pixels - mean.square()).clamp_min(0.0)
    std = var.sqrt().clamp_min(MIN_STD)
    m = tuple(float(v) for v in mean)
    s = tuple(float(v) for v in std)
    return (m[0], m[1], m[2]), (s[0], s[1], s[2])
