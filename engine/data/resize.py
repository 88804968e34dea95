"""fastai's resize methods: how a picture of any shape becomes the model's square input.

- ``crop`` (fastai's default, and what Loupe did before the choice existed): the short side
  is resized to ``presize``, then training takes a random crop and validation/prediction
  the center crop. The long side's edges are cut off.
- ``squish``: the whole picture is resized to a square, aspect ratio ignored. Nothing is
  cut off; shapes are stretched. Clip art and other subjects that fill their frame keep
  all their content (center-cropping them loses it).
- ``pad``: the whole picture is fitted inside the square keeping its aspect ratio, and the
  rest is filled with :data:`PAD_FILL`, a constant black (fastai's ``PadMode.Zeros``,
  torchvision's ``Pad`` default). A constant fill invents no content, unlike reflection
  padding, which mirrors the subject into the margins.

This module is the one place that names the methods (CLI choices, desktop combo,
``TrainConfig`` and ``Preprocessing`` validation all use :data:`RESIZE_METHODS`) and holds
their geometry as plain arithmetic. It imports neither torch nor, until a picture is
resized, Pillow, so the training config and the desktop's settings form can use it before
torch is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loupe.engine.core.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

RESIZE_METHODS: tuple[str, ...] = ("crop", "squish", "pad")
# New training runs use this; change it here and the config, CLI and desktop follow.
# Chosen by measurement (docs/benchmarks.md, "Fine-tuning pretrained weights"): with the
# installed EfficientNet-Lite0 weights at 128 px, pad made 64 validation errors over the
# three benchmark folders, crop and squish 77 each; pad was best or tied on every folder.
DEFAULT_RESIZE = "pad"
# Bundles and run configs written before the choice existed were all trained this way.
LEGACY_RESIZE = "crop"
PAD_FILL: tuple[int, int, int] = (0, 0, 0)
SQUARE_METHODS = frozenset({"squish", "pad"})

RESIZE_HELP: dict[str, str] = {
    "crop": "short side resized, then a random crop (training) or the center crop "
    "(validation, prediction): the long side's edges are cut off",
    "squish": "the whole image resized to a square, aspect ratio ignored: nothing is cut "
    "off, shapes are stretched",
    "pad": "the whole image fitted inside a square, aspect kept, the rest filled with "
    "black: nothing is cut off or stretched",
}

Box = tuple[float, float, float, float]


def check_resize(value: object) -> str:
    """``value`` if it is a resize method, else a ConfigError naming it and the choices."""
    if not isinstance(value, str) or value not in RESIZE_METHODS:
        raise ConfigError(
            f"resize method {value!r} is not one of: {', '.join(RESIZE_METHODS)}"
        )
    return value


def fitted_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(w, h) of a ``width``×``height`` picture scaled so its long side is ``side`` (pad)."""
    scale = side / max(width, height)
    if width >= height:
        return side, max(1, round(height * scale))
    return max(1, round(width * scale)), side


def pad_offsets(width: int, height: int, side: int) -> tuple[int, int]:
    """(left, top) of the fitted picture inside the ``side``×``side`` padded square."""
    fit_w, fit_h = fitted_size(width, height, side)
    return (side - fit_w) // 2, (side - fit_h) // 2


def resize_image(image: Image.Image, presize: int, resize: str) -> Image.Image:
    """The cached form of an RGB picture: short side ``presize`` (crop) or a square.

    ``squish`` and ``pad`` give ``presize``×``presize``; resampling is antialiased bilinear
    for all three, like ``loupe.engine.data.imageio.resize_short_side``.
    """
    from PIL import Image as PILImage

    from loupe.engine.data.imageio import resize_short_side

    check_resize(resize)
    if resize == "crop":
        return resize_short_side(image, presize)
    if resize == "squish":
        if image.size == (presize, presize):
            return image
        return image.resize((presize, presize), PILImage.Resampling.BILINEAR)
    fit = fitted_size(image.width, image.height, presize)
    inner = image if image.size == fit else image.resize(fit, PILImage.Resampling.BILINEAR)
    canvas = PILImage.new("RGB", (presize, presize), PAD_FILL)
    canvas.paste(inner, pad_offsets(image.width, image.height, presize))
    return canvas


def input_box(resize: str, width: int, height: int, size: int, presize: int) -> Box:
    """Where the model's square input lies in a ``width``×``height`` original.

    (left, top, right, bottom) as fractions of the original, so an activation map (which
    covers the model input) can be placed on the full-size picture. ``crop``: the center
    crop, inside 0..1. ``squish``: exactly the picture, (0, 0, 1, 1); the map is stretched
    back to the picture's shape. ``pad``: larger than the picture (below 0 or above 1 on
    the padded sides); the overlay cuts off the part of the map that lies on the padding.
    """
    check_resize(resize)
    if resize == "squish":
        return (0.0, 0.0, 1.0, 1.0)
    if resize == "pad":
        fit_w, fit_h = fitted_size(width, height, presize)
        left, top = pad_offsets(width, height, presize)
        return (-left / fit_w, -top / fit_h, (presize - left) / fit_w, (presize - top) / fit_h)
    scale = presize / min(width, height)
    frac_w = min(1.0, size / (width * scale))
    frac_h = min(1.0, size / (height * scale))
    left_f, top_f = (1.0 - frac_w) / 2.0, (1.0 - frac_h) / 2.0
    return (left_f, top_f, left_f + frac_w, top_f + frac_h)
