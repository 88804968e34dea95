"""Batch-level augmentation on the training device: flips, small rotations, lighting.

Doing this on whole batches with torch ops (rather than per image with PIL) is what
fastai's ``aug_transforms`` does on the GPU: one affine warp for the batch is far cheaper
than N image operations, and on the CPU it is still one vectorised call. Random draws
come from a CPU generator seeded per epoch, so results do not depend on the device.
Inputs are float images in 0..1 (before normalization); outputs stay in 0..1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Which augmentations to apply: horizontal ``flip``, ``rotate`` up to ± degrees,
    ``lighting``: brightness and contrast change up to this fraction."""

    flip: bool = True
    rotate: float = 10.0
    lighting: float = 0.2

    @property
    def active(self) -> bool:
        return self.flip or self.rotate > 0 or self.lighting > 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment the float batch ``x`` (N×3×H×W, 0..1) with draws from ``generator``."""
        n = x.shape[0]
        if n == 0 or not self.active:
            return x
        if self.flip or self.rotate > 0:
            x = _warp(x, self._affine(n, generator).to(x.device, x.dtype))
        if self.lighting > 0:
            x = _lighting(x, self.lighting, generator)
        return x

    def _affine(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """One 2×3 affine matrix per image: optional mirror times a small rotation."""
        u = torch.rand(n, 2, generator=generator)
        angle = (u[:, 0] * 2 - 1) * math.radians(self.rotate)
        mirror = torch.where(u[:, 1] < 0.5, -1.0, 1.0) if self.flip else torch.ones(n)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = cos * mirror
        theta[:, 0, 1] = -sin
        theta[:, 1, 0] = sin * mirror
        theta[:, 1, 1] = cos
        return theta


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply per-image affine maps; reflection padding avoids black corners (fastai)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _lighting(x: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Random brightness and contrast per image, in logit space like fastai's."""
    n = x.shape[0]
    draws = (torch.rand(n, 2, generator=generator) * 2 - 1) * amount
    brightness = (0.5 + draws[:, 0] * 0.5).to(x.device, x.dtype).view(n, 1, 1, 1)
    contrast = torch.exp(draws[:, 1] * math.log(1 + amount * 2)).to(x.device, x.dtype)
    contrast = contrast.view(n, 1, 1, 1)
    eps = 1e-4
    logit = torch.logit(x.clamp(eps, 1 - eps))
    logit = logit * contrast + torch.logit(brightness.clamp(eps, 1 - eps))
    return torch.sigmoid(logit)
