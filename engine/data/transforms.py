"""The evaluation transform, shared by validation and prediction so they cannot drift.

A model scores a picture in the app exactly as it scored the same picture in the
validation set only if both go through the same code, so there is one chain:
``load_rgb`` → resized by the model's resize method (:mod:`loupe.engine.data.resize`: short side to
``presize`` for ``crop``, a ``presize`` square for ``squish`` and ``pad``) → uint8 3×H×W
(this is what the image cache stores) → center crop to ``size`` (``crop``) or the whole
square at ``size`` (``squish``, ``pad``) → float 0..1 → :func:`normalize`. Validation
starts from the cached uint8 tensor (:func:`eval_tensor_from_cached`); prediction starts
from a file or an image and reaches the same uint8 tensor through the same functions
(:func:`eval_tensor_from_path`, :func:`eval_tensor_from_image`).

:class:`Preprocessing` records these choices, with the normalization statistics, in the
model bundle, so a bundle carries its own preprocessing (as timm's ``pretrained_cfg`` does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import torch

from loupe.engine.core.errors import ConfigError
from loupe.engine.data.cache import load_presized, presize_for, presized_uint8
from loupe.engine.data.resize import LEGACY_RESIZE, PAD_FILL, check_resize
from loupe.engine.data.stats import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from PIL import Image

# The loader's resize (loupe.engine.data.imageio.resize_short_side) is antialiased bilinear; the
# field exists so a bundle states it and a future resize method is a recorded change.
INTERPOLATIONS: tuple[str, ...] = ("bilinear",)


def eval_tensor_from_cached(
    u8: torch.Tensor, size: int, resize: str = LEGACY_RESIZE
) -> torch.Tensor:
    """The ``size``×``size`` eval view of a cached uint8 3×H×W tensor; float 0..1.

    ``crop``: the center crop, offset ``(H - size) // 2`` (and likewise for W). ``squish``
    and ``pad``: the whole cached square, resized to ``size`` if it is not already (it is,
    except at a progressive-resizing size). Returns a new tensor; the cached one is never
    modified.
    """
    if u8.ndim != 3 or u8.shape[0] != 3 or u8.dtype != torch.uint8:
        raise ConfigError(
            f"expected a uint8 3×H×W image tensor, got {u8.dtype} {tuple(u8.shape)}"
        )
    if check_resize(resize) != "crop":
        return _whole_square(u8, size, resize)
    height, width = int(u8.shape[1]), int(u8.shape[2])
    if not isinstance(size, int) or size <= 0 or size > min(height, width):
        raise ConfigError(
            f"crop size {size!r} must be a positive whole number no larger than the "
            f"image's short side ({min(height, width)} px)"
        )
    top, left = (height - size) // 2, (width - size) // 2
    crop = u8[:, top : top + size, left : left + size]
    return crop.to(torch.float32).div_(255.0)


def _whole_square(u8: torch.Tensor, size: int, resize: str) -> torch.Tensor:
    """A squished or padded square at ``size``×``size``, nothing cut off; float 0..1."""
    height, width = int(u8.shape[1]), int(u8.shape[2])
    if height != width:
        raise ConfigError(
            f"a {resize} image must be square, got {width}×{height}; was it cached "
            "with another resize method?"
        )
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ConfigError(f"input size {size!r} must be a positive whole number of pixels")
    if height != size:
        from torchvision.transforms.v2 import functional as tvf

        u8 = tvf.resize(u8, [size, size], antialias=True)
    return u8.to(torch.float32).div_(255.0)


def eval_tensor_from_image(
    image: Image.Image, size: int, presize: int, resize: str = LEGACY_RESIZE
) -> torch.Tensor:
    """The eval view of an already-loaded RGB image (a pasted or dropped picture)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return eval_tensor_from_cached(presized_uint8(rgb, presize, resize), size, resize)


def eval_tensor_from_path(
    path: str | Path | BinaryIO,
    size: int,
    presize: int,
    *,
    max_pixels: int | None = None,
    resize: str = LEGACY_RESIZE,
) -> torch.Tensor:
    """The eval view of a file: exactly what validation computes from the image cache."""
    u8 = load_presized(path, presize, max_pixels=max_pixels, resize=resize)
    return eval_tensor_from_cached(u8, size, resize)


def normalize(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """``(x - mean) / std`` per channel for a 3×H×W image or an N×3×H×W batch."""
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ConfigError(f"expected a 3×H×W image or N×3×H×W batch, got {tuple(x.shape)}")
    m = torch.as_tensor(tuple(mean), dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.as_tensor(tuple(std), dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - m) / s


def _triple(name: str, value: Any, *, positive: bool) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be 3 numbers (R, G, B), got {value!r}") from exc
    if len(triple) != 3 or not all(math.isfinite(v) for v in triple):
        raise ConfigError(f"{name} must be 3 finite numbers (R, G, B), got {value!r}")
    if positive and min(triple) <= 0:
        raise ConfigError(f"{name} values must be > 0, got {value!r}")
    return triple


@dataclass(frozen=True)
class Preprocessing:
    """Input size, presize, interpolation, normalization and resize method: in every bundle.

    ``resize`` defaults to ``crop`` because that is what a bundle without the field (one
    written before the choice existed) was trained with; training passes its own method.
    """

    size: int
    presize: int
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = LEGACY_RESIZE

    def __post_init__(self) -> None:
        for name in ("size", "presize"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"preprocessing {name} must be a positive integer, got {value!r}")
        if self.presize < self.size:
            raise ConfigError(
                f"preprocessing presize ({self.presize}) must be >= size ({self.size})"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"unknown interpolation {self.interpolation!r}; allowed: "
                + ", ".join(INTERPOLATIONS)
            )
        check_resize(self.resize)
        object.__setattr__(self, "mean", _triple("mean", self.mean, positive=False))
        object.__setattr__(self, "std", _triple("std", self.std, positive=True))

    @classmethod
    def for_size(
        cls,
        size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        resize: str = LEGACY_RESIZE,
    ) -> Preprocessing:
        """The standard preprocessing for training size ``size`` and method ``resize``.

        presize = ceil(1.15 × size) for ``crop``, ``size`` for ``squish`` and ``pad``
        (:func:`loupe.engine.data.cache.presize_for`).
        """
        return cls(
            size=size, presize=presize_for(size, resize),
            mean=_triple("mean", mean, positive=False), std=_triple("std", std, positive=True),
            resize=resize,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "presize": self.presize,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Preprocessing:
        """Parse :meth:`to_json` output; a missing or bad field is a :class:`ConfigError`.

        A missing ``resize`` means ``crop``: the bundle predates the choice.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"preprocessing must be a JSON object, got {type(data).__name__}")
        missing = [k for k in ("size", "presize", "mean", "std") if k not in data]
        if missing:
            raise ConfigError("preprocessing is missing " + ", ".join(missing))
        return cls(
            size=data["size"],
            presize=data["presize"],
            interpolation=data.get("interpolation", "bilinear"),
            mean=data["mean"],
            std=data["std"],
            resize=data.get("resize", LEGACY_RESIZE),
        )

    def eval_input_from_cached(self, u8: torch.Tensor) -> torch.Tensor:
        """Normalized model input (3×size×size) from a cached uint8 tensor."""
        x = eval_tensor_from_cached(u8, self.size, self.resize)
        return normalize(x, self.mean, self.std)

    def eval_input_from_path(self, path: str | Path | BinaryIO) -> torch.Tensor:
        """Normalized model input (3×size×size) from a file: same chain as validation."""
        x = eval_tensor_from_path(path, self.size, self.presize, resize=self.resize)
        return normalize(x, self.mean, self.std)

    def recipe(self) -> str:
        """The resize steps in words, for people feeding an exported model elsewhere."""
        how = f"({self.interpolation}, antialiased)"
        square = f"{self.presize}×{self.presize}"
        if self.resize == "crop":
            steps = (f"resize so the short side is {self.presize} px {how}; center-crop "
                     f"{self.size}×{self.size}")
        elif self.resize == "squish":
            steps = f"resize the whole image to {square} px ignoring its aspect ratio {how}"
        else:
            steps = (f"resize so the long side is {self.presize} px {how}; pad to {square} "
                     f"with the constant colour RGB{PAD_FILL}, the image centred")
        if self.resize != "crop" and self.presize != self.size:
            steps += f"; resize to {self.size}×{self.size} {how}"
        return steps
