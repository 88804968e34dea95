"""Activation-map overlays: the raw map coloured and placed on the original picture.

The raw map (``engine.inference.cam.CamResult.heatmap``) covers the model's input: the
center crop of the resized image (``crop``), the whole image stretched to a square
(``squish``) or the image plus its padding (``pad``). The overlay places it on that region
of the ORIGINAL image (full size, EXIF-rotated): cropped edges the model never saw stay
uncoloured, a squished map is stretched back to the image's shape, and the part of a
padded map that lies on the padding is cut off. Only for ``crop`` does the model see less
than the whole picture; :func:`input_outline` gives the region to outline then.

Maps are coloured with a perceptual colormap (``inferno``: dark = low, bright = high,
readable in grey and by colour-blind people), not the rainbow ``jet``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from loupe.engine.core.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure
    from PIL import Image

    from loupe.engine.inference.cam import CamResult

#: Perceptually uniform and monotonic in lightness: low = dark, high = bright.
DEFAULT_COLORMAP = "inferno"


def colormap_lut(colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """A 256×3 uint8 lookup table from a matplotlib colormap name."""
    import matplotlib
    import numpy as np

    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ConfigError(
            f"unknown colormap {colormap!r}; try one of: inferno, viridis, magma, cividis, jet"
        ) from None
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def render_overlay(
    result: CamResult,
    image: Image.Image | None = None,
    *,
    opacity: float = 0.5,
    colormap: str = DEFAULT_COLORMAP,
    outline: bool = False,
) -> Image.Image:
    """The map blended over the original image, at the original's full size (RGB).

    ``image`` defaults to the result's source file loaded at full size with EXIF applied.
    Only the region the model saw is coloured (all of it for squish and pad; the map's part
    on pad's padding is dropped). ``outline`` draws the border of that region when it is
    not the whole picture (a center crop), so the uncoloured edges read as "not seen".
    Colouring uses a 256-entry lookup table and Pillow's C code, so a 12-megapixel overlay
    takes tens of milliseconds.
    """
    import numpy as np
    from PIL import Image as PILImage

    if not 0.0 <= opacity <= 1.0:
        raise ConfigError(f"overlay opacity must be in 0..1, got {opacity}")
    if image is None:
        image = _load_original(result)
    base = image.convert("RGB") if image.mode != "RGB" else image.copy()
    width, height = base.size
    visible, source = _visible_part(result.crop_box, result.heatmap.shape)
    left, top, right, bottom = visible
    box = (round(left * width), round(top * height), round(right * width), round(bottom * height))
    box_size = (max(1, box[2] - box[0]), max(1, box[3] - box[1]))
    levels = (np.clip(result.heatmap, 0.0, 1.0) * 255).round().astype(np.uint8)
    heat = PILImage.fromarray(levels, mode="L").resize(
        box_size, PILImage.Resampling.BILINEAR, box=source
    )
    heat.putpalette(colormap_lut(colormap).tobytes())  # L becomes P: the LUT in C
    coloured = heat.convert("RGB")
    region = base.crop(box)
    base.paste(PILImage.blend(region, coloured, opacity), box[:2])
    if outline and input_outline(result.crop_box) is not None:
        _draw_outline(base, box)
    return base


def input_outline(
    crop_box: tuple[float, float, float, float],
) -> tuple[float, float, float, float] | None:
    """The part of the picture the model saw, as fractions, when it is not all of it.

    A center crop (``crop``) gives its box; ``squish`` and ``pad`` show the model the
    whole picture, so there is nothing to outline (None).
    """
    left, top, right, bottom = crop_box
    inside = (max(0.0, left), max(0.0, top), min(1.0, right), min(1.0, bottom))
    whole = inside[0] <= 1e-3 and inside[1] <= 1e-3 and inside[2] >= 1 - 1e-3 and (
        inside[3] >= 1 - 1e-3)
    return None if whole else inside


def _draw_outline(image: Image.Image, box: tuple[int, int, int, int]) -> None:
    """A two-tone (white over black) border, visible on light and dark pictures alike."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    width = max(1, round(min(image.size) / 160))
    left, top, right, bottom = box[0], box[1], box[2] - 1, box[3] - 1
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0), width=width + 1)
    draw.rectangle((left, top, right, bottom), outline=(255, 255, 255), width=width)


def _visible_part(
    crop_box: tuple[float, float, float, float], shape: tuple[int, ...]
) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float]]:
    """The part of the model's input inside the image: (image fractions, heat-map box).

    The crop box clipped to 0..1, and the same region in the heat map's own pixels (a
    float box for Pillow's resize). Only a pad box reaches outside the image; for crop and
    squish this is the whole box and the whole map.
    """
    left, top, right, bottom = crop_box
    rows, cols = shape[0], shape[1]
    clipped = (max(0.0, left), max(0.0, top), min(1.0, right), min(1.0, bottom))
    span_w, span_h = right - left, bottom - top
    source = (
        (clipped[0] - left) / span_w * cols,
        (clipped[1] - top) / span_h * rows,
        (clipped[2] - left) / span_w * cols,
        (clipped[3] - top) / span_h * rows,
    )
    return clipped, source


def _load_original(result: CamResult) -> Image.Image:
    """The source image at full size, EXIF applied, through the shared loader."""
    if result.source is None:
        raise ConfigError("this activation map came from an in-memory image; pass the image")
    from loupe.engine.data.imageio import load_rgb

    return load_rgb(result.source)


def save_overlay(
    result: CamResult,
    path: str | Path,
    image: Image.Image | None = None,
    *,
    opacity: float = 0.5,
    colormap: str = DEFAULT_COLORMAP,
    outline: bool = True,
) -> Path:
    """Render the overlay and write it atomically (format from the suffix, PNG/JPEG)."""
    import io

    from loupe.engine.core.atomic import atomic_write_bytes

    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}.get(
        path.suffix.lower()
    )
    if fmt is None:
        raise ConfigError(f"cannot write an overlay to {path.name}: use .png, .jpg or .webp")
    from loupe.engine.core.outputs import same_file

    if result.source is not None and same_file(path, result.source):
        raise ConfigError(
            f"refusing to overwrite the input image {result.source} with its activation map; "
            "choose another file name for the overlay"
        )
    buffer = io.BytesIO()
    render_overlay(result, image, opacity=opacity, colormap=colormap, outline=outline).save(
        buffer, format=fmt)
    return atomic_write_bytes(path, buffer.getvalue())


def heatmap_figure(result: CamResult, image: Image.Image | None = None, *,
                   opacity: float = 0.5, colormap: str = DEFAULT_COLORMAP) -> Figure:
    """Original | overlay side by side, titled with the class and probability (Agg)."""
    from matplotlib.figure import Figure

    if image is None:
        image = _load_original(result)
    overlay = render_overlay(result, image, opacity=opacity, colormap=colormap, outline=True)
    fig = Figure(figsize=(8, 4), layout="constrained")
    prob = result.prediction.probs[result.label]
    for axis, picture, title in zip(
        fig.subplots(1, 2),
        (image, overlay),
        ("image", f"{result.label} ({prob:.1%}) · {result.method}"),
        strict=True,
    ):
        axis.imshow(picture)
        axis.set_title(title)
        axis.axis("off")
    return fig
