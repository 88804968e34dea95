"""The Predict page's background half: one worker call per image, and pasted pixels.

``predict_with_cam`` gives the prediction and the activation map from one forward pass
(``engine.inference.cam.compute_cam``) and prepares two display-sized layers: the image, and the
image fully coloured by the map (``engine.inference.cam.render_overlay`` at opacity 1, so the part
the model never saw stays uncoloured). Blending those at opacity a equals the engine's
overlay at opacity a, which is why the slider never needs the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtGui import QImage

from loupe.desktop.pages.model_use import using_model
from loupe.desktop.widgets.cam_viewer import DISPLAY_MAX_SIDE, display_layers
from loupe.engine.core.formats import IMAGE_SUFFIXES

METHOD_LABELS: tuple[tuple[str, str], ...] = (
    ("gradcam", "Grad-CAM"),
    ("gradcampp", "Grad-CAM++"),
    ("layercam", "Layer-CAM"),
    ("scorecam", "Score-CAM (slow)"),
)
IMAGE_FILTER = f"Images ({' '.join('*' + s for s in IMAGE_SUFFIXES)});;All files (*)"
HISTORY_LIMIT = 48


@dataclass(frozen=True)
class CamView:
    """A prediction with its map, ready to show: display-sized image and coloured layer."""

    result: Any  # loupe.engine.inference.cam.CamResult
    base: np.ndarray
    heat: np.ndarray
    source: Path | None
    image: Any = None  # the PIL image for pasted pictures (no file to reload)

    @property
    def prediction(self) -> Any:
        return self.result.prediction

    @property
    def name(self) -> str:
        return self.source.name if self.source is not None else "pasted image"


def predict_with_cam(
    predictor: Any,
    source: Path | Any,
    *,
    method: str,
    target: str | None,
    topk: int,
    on_event: Any = None,
    cancel: Any = None,
) -> CamView:
    """Worker body: prediction + map in one forward pass, then the two display layers.

    The map's progress (one step per forward: Score-CAM takes many) goes to ``on_event``
    and ``cancel`` stops it between forwards.
    """
    from PIL import Image

    from loupe.engine.core.events import ignore_event
    from loupe.engine.data.imageio import load_rgb
    from loupe.engine.inference import cam

    with using_model(predictor, cancel):
        result = cam.compute_cam(predictor, source, method=method, target=target, topk=topk,
                                 on_event=on_event or ignore_event, cancel=cancel)
    if cancel is not None:
        cancel.raise_if_cancelled()
    if isinstance(source, str | Path):
        original = load_rgb(Path(source), min_short_side=DISPLAY_MAX_SIDE)
        picture = None
    else:
        original = picture = source.convert("RGB")
    base, _ = display_layers(original, None)
    # The map coloured at full strength on the display-sized image: blending this layer
    # with the plain one at opacity a equals loupe.engine.inference.cam's overlay at opacity a.
    coloured = cam.render_overlay(result, Image.fromarray(base), opacity=1.0)
    heat = np.asarray(coloured, dtype=np.uint8)
    path = Path(source) if isinstance(source, str | Path) else None
    return CamView(result, base, heat, path, picture)


def verdict(prediction: Any, threshold: float | None, *, digits: int = 1) -> str:
    """"label (p)", or "unknown (best guess …)" under the "Unknown" threshold (the
    engine's rule, ``Prediction.unknown_at``): the history and status bar said
    "animal 51%" while the bars said Unknown."""
    top = prediction.top
    if not top:
        return "no label"
    guess = f"{top[0][0]} {top[0][1]:.{digits}%}"
    if prediction.unknown_at(threshold):
        return f"unknown ({guess})"
    return guess


def qimage_to_pil(image: QImage) -> Any:
    """A pasted/dropped QImage as an RGB PIL image (copies the pixels)."""
    from PIL import Image

    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    width, height, stride = rgb.width(), rgb.height(), rgb.bytesPerLine()
    buffer = np.frombuffer(rgb.constBits(), dtype=np.uint8, count=stride * height)
    rows = buffer.reshape(height, stride)[:, : width * 3].reshape(height, width, 3)
    return Image.fromarray(rows.copy())
