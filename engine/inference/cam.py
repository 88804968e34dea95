"""Activation maps: where the model looked, computed with torchcam on the prediction's forward.

One forward pass gives both the logits (the prediction) and the target layer's activations;
gradient methods (Grad-CAM, Grad-CAM++, Layer-CAM) then differentiate the class score with
respect to that layer only. The model's weights are frozen and its input needs no gradient,
so autograd records nothing before the target layer: a hook makes the layer's output the
start of the graph, and the backward pass stops there. Score-CAM needs no gradient but runs
one extra forward per channel (it is the slow, gradient-free option).

Target layers come from ``engine.models.anatomy.cam_target_layer`` (the last convolutional stage
for CNNs). Vision transformers have no spatial feature map: their target layer outputs
tokens (B, N, C); we drop the class/register tokens and fold the patch tokens back into the
patch grid, so the map has the patch grid's resolution (14×14 for a /16 model at 224 px).
Gradient-based maps on ViTs are coarser and noisier than on CNNs; read them with care.

The raw map covers the model's input: the center crop of the resized image (``crop``), the
whole image stretched to a square (``squish``) or the image plus its padding (``pad``). The
overlay places it on that region of the ORIGINAL image (full size, EXIF-rotated): cropped
edges the model never saw stay uncoloured, a squished map is stretched back to the image's
shape, and the part of a padded map that lies on the padding is cut off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loupe.engine.core.errors import ConfigError

# The "what the network learned" views live in engine.inference.activations; re-exported here so
# every picture of the model's insides is reachable from one module.
from loupe.engine.inference.activations import (
    ChannelActivation,
    conv_layers,
    filters_figure,
    first_conv_filters,
    top_activating,
)

if TYPE_CHECKING:
    import numpy as np
    import torch
    from matplotlib.figure import Figure
    from PIL import Image

    from loupe.engine.inference.predict import Prediction, Predictor

#: CLI spelling -> torchcam class name. Grad-CAM is the default.
CAM_METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMpp",
    "scorecam": "ScoreCAM",
    "layercam": "LayerCAM",
}
DEFAULT_METHOD = "gradcam"
_GRADIENT_METHODS = frozenset({"gradcam", "gradcampp", "layercam"})


@dataclass(frozen=True)
class CamResult:
    """A prediction and the activation map for one class, from one forward pass.

    ``heatmap`` is the raw map at the target layer's resolution, scaled to 0..1 (rows ×
    columns, float32). ``crop_box`` is where the model's input lies in the original image,
    as fractions (left, top, right, bottom); with ``pad`` it reaches past 0..1.
    """

    prediction: Prediction
    heatmap: np.ndarray
    class_index: int
    label: str
    method: str
    layer: str
    crop_box: tuple[float, float, float, float]
    source: Path | None

    def heatmap_at(self, width: int, height: int) -> np.ndarray:
        """The map resized (bilinear) to ``width``×``height``, still 0..1 float32."""
        import numpy as np
        from PIL import Image as PILImage

        img = PILImage.fromarray(self.heatmap.astype(np.float32), mode="F")
        return np.asarray(img.resize((width, height), PILImage.Resampling.BILINEAR))


def compute_cam(
    predictor: Predictor,
    source: str | Path | Image.Image,
    *,
    method: str = DEFAULT_METHOD,
    target: str | int | None = None,
    topk: int = 5,
    layer: str | None = None,
) -> CamResult:
    """Predict one image and compute its activation map from the same forward pass.

    ``target`` is a class name or index; by default the predicted (top) class.
    """
    prepared = predictor.prepare(source)
    batch = prepared.tensor.unsqueeze(0)
    logits, maps, class_indices, layer_name = cam_forward(
        predictor, batch, method=method, target=target, layer=layer
    )
    probs = predictor.probabilities(logits)[0]
    prediction = predictor.make_prediction(probs, prepared.path, topk)
    index = class_indices[0]
    return CamResult(
        prediction=prediction,
        heatmap=maps[0],
        class_index=index,
        label=predictor.classes[index],
        method=method,
        layer=layer_name,
        crop_box=prepared.crop_box,
        source=prepared.path,
    )


def cam_forward(
    predictor: Predictor,
    batch: torch.Tensor,
    *,
    method: str = DEFAULT_METHOD,
    target: str | int | Sequence[int] | None = None,
    layer: str | None = None,
) -> tuple[torch.Tensor, list[np.ndarray], list[int], str]:
    """One forward over a normalized batch: (logits, one map per image, classes, layer).

    ``target`` may be one class (name or index) for the whole batch, one index per image,
    or None for each image's predicted class.
    """
    import torch

    extractor_cls = _extractor_class(method)
    model = predictor.model
    layer_name = layer or target_layer_name(predictor)
    _check_layer(model, layer_name)
    batch = batch.to(predictor.device)
    reshape = _token_reshape(model)
    gradient = method in _GRADIENT_METHODS
    with extractor_cls(model, layer_name, reshape_transform=reshape, **_extra(method)) as cam:
        handle = None
        if gradient:
            module = dict(model.named_modules())[layer_name]
            handle = module.register_forward_hook(_start_graph_here, prepend=True)
        try:
            # inference_mode(False): callers may sit inside inference mode, where no tensor
            # can require grad; the gradient methods need exactly that from the layer on.
            grad_mode = torch.enable_grad() if gradient else torch.no_grad()
            with torch.inference_mode(False), grad_mode:
                logits = model(batch)
                indices = _class_indices(predictor, logits.detach(), target)
                maps = cam(class_idx=indices, scores=logits)
        finally:
            if handle is not None:
                handle.remove()
    heatmaps = [m.detach().float().cpu().numpy() for m in maps[0]]
    return logits.detach().float().cpu(), heatmaps, indices, layer_name


def _start_graph_here(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
    """Make the target layer's output the root of the autograd graph.

    With frozen weights nothing before this layer is recorded, so the backward pass of a
    gradient CAM stops here instead of running through the whole network. The clone keeps
    an in-place op right after the layer from touching a leaf that requires grad.
    """
    return output.detach().requires_grad_(True).clone()


def _extractor_class(method: str) -> type:
    if method not in CAM_METHODS:
        raise ConfigError(
            f"unknown activation-map method {method!r}; choose one of: {', '.join(CAM_METHODS)}"
        )
    from torchcam import methods

    return getattr(methods, CAM_METHODS[method])


def _extra(method: str) -> dict[str, Any]:
    # Score-CAM scores channels in chunks; 32 keeps memory modest on CPU.
    return {"batch_size": 32} if method == "scorecam" else {}


def _class_indices(
    predictor: Predictor, logits: torch.Tensor, target: str | int | Sequence[int] | None
) -> list[int]:
    count = logits.shape[0]
    if target is None:
        return [int(i) for i in logits.argmax(dim=1).tolist()]
    if isinstance(target, str):
        if target not in predictor.classes:
            raise ConfigError(
                f"unknown class {target!r} for the activation map; "
                f"classes are: {', '.join(predictor.classes)}"
            )
        return [predictor.classes.index(target)] * count
    indices = [int(target)] * count if isinstance(target, int) else [int(t) for t in target]
    if len(indices) != count:
        raise ConfigError(f"{len(indices)} target classes for {count} images")
    for index in indices:
        if not 0 <= index < len(predictor.classes):
            raise ConfigError(
                f"class index {index} is out of range; the model has "
                f"{len(predictor.classes)} classes (0..{len(predictor.classes) - 1})"
            )
    return indices


def target_layer_name(predictor: Predictor) -> str:
    """The layer activation maps are taken from, by architecture family.

    ``engine.models.anatomy.cam_target_layer`` knows the families (last conv stage for CNNs, the
    last block's first norm for ViTs, timm's last ``feature_info`` stage otherwise).
    """
    from loupe.engine.models.anatomy import cam_target_layer

    return cam_target_layer(predictor.model, predictor.arch or None)


def _token_reshape(model: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For transformers: fold patch tokens (B, N, C) back into a (B, C, H, W) grid.

    Feature maps that are already spatial (a ViT's patch-embedding conv) pass unchanged.
    """
    from loupe.engine.models.anatomy import cam_reshape_transform

    to_map = cam_reshape_transform(model)
    if to_map is None:
        return None
    return lambda tensor: to_map(tensor) if tensor.ndim == 3 else tensor


def _check_layer(model: Any, name: str) -> None:
    from loupe.engine.inference.activations import named_module

    named_module(model, name)


# -- overlays -----------------------------------------------------------------------------


def colormap_lut(colormap: str = "jet") -> np.ndarray:
    """A 256×3 uint8 lookup table from a matplotlib colormap name."""
    import matplotlib
    import numpy as np

    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ConfigError(
            f"unknown colormap {colormap!r}; try one of: jet, viridis, inferno, magma, turbo"
        ) from None
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def render_overlay(
    result: CamResult,
    image: Image.Image | None = None,
    *,
    opacity: float = 0.5,
    colormap: str = "jet",
) -> Image.Image:
    """The map blended over the original image, at the original's full size (RGB).

    ``image`` defaults to the result's source file loaded at full size with EXIF applied.
    Only the region the model saw is coloured (all of it for squish and pad; the map's part
    on pad's padding is dropped). Colouring uses a 256-entry lookup table and Pillow's C
    code, so a 12-megapixel overlay takes tens of milliseconds.
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
    return base


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
    colormap: str = "jet",
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
    render_overlay(result, image, opacity=opacity, colormap=colormap).save(buffer, format=fmt)
    return atomic_write_bytes(path, buffer.getvalue())


def heatmap_figure(result: CamResult, image: Image.Image | None = None, *,
                   opacity: float = 0.5, colormap: str = "jet") -> Figure:
    """Original | overlay side by side, titled with the class and probability (Agg)."""
    from matplotlib.figure import Figure

    if image is None:
        image = _load_original(result)
    overlay = render_overlay(result, image, opacity=opacity, colormap=colormap)
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


__all__ = [
    "CAM_METHODS",
    "DEFAULT_METHOD",
    "CamResult",
    "ChannelActivation",
    "cam_forward",
    "colormap_lut",
    "compute_cam",
    "conv_layers",
    "filters_figure",
    "first_conv_filters",
    "heatmap_figure",
    "render_overlay",
    "save_overlay",
    "target_layer_name",
    "top_activating",
]
