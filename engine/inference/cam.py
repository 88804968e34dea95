"""Activation maps: where the model looked, computed with torchcam on the prediction's forward.

One forward pass gives both the logits (the prediction) and the target layer's activations;
gradient methods (Grad-CAM, Grad-CAM++, Layer-CAM) then differentiate the class score with
respect to that layer only. The model's weights are frozen and its input needs no gradient,
so autograd records nothing before the target layer: a hook makes the layer's output the
start of the graph, and the backward pass stops there. Score-CAM needs no gradient but runs
one extra forward per channel (it is the slow, gradient-free option).

Score-CAM runs one forward per chunk of channels (a thousand channels: tens of seconds on
a CPU), so :func:`compute_cam` reports a ``Progress`` event per chunk and checks the
cancel token before each one; the other methods are one forward and one partial backward.

Target layers come from ``engine.models.anatomy.cam_target_layer`` (the last convolutional stage
for CNNs). Vision transformers have no spatial feature map: their target layer outputs
tokens (B, N, C); we drop the class/register tokens and fold the patch tokens back into the
patch grid, so the map has the patch grid's resolution (14×14 for a /16 model at 224 px).
Gradient-based maps on ViTs are coarser and noisier than on CNNs; read them with care.

The raw map covers the model's input (the center crop, the squished square or the padded
square); ``engine.inference.overlays`` places it on the original picture, in a perceptual
colormap, and is re-exported here with the other pictures of the model's insides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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

# The "what the network learned" views live in engine.inference.activations; re-exported here so
# every picture of the model's insides is reachable from one module.
from loupe.engine.inference.activations import (
    ChannelActivation,
    conv_layers,
    filters_figure,
    first_conv_filters,
    top_activating,
)
from loupe.engine.inference.overlays import (
    DEFAULT_COLORMAP,
    colormap_lut,
    heatmap_figure,
    input_outline,
    render_overlay,
    save_overlay,
)

if TYPE_CHECKING:
    import numpy as np
    import torch
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
# Channels Score-CAM scores per forward. Cancel and progress act between forwards, so on
# a CPU a chunk is kept small: 32 made Cancel wait up to 4 s (EfficientNet-Lite0, 224 px,
# 2 cores); per-image cost barely depends on the chunk there. GPUs want big batches.
SCORECAM_CHUNK = {"cpu": 8, "other": 32}
CAM_TASK = "activation-map"  # the task name of compute_cam's events


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
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> CamResult:
    """Predict one image and compute its activation map from the same forward pass.

    ``target`` is a class name or index; by default the predicted (top) class. Events:
    ``Started``, one ``Progress`` per model forward (Score-CAM: one per channel chunk),
    ``Finished``; ``cancel`` is checked before each forward (CancelledError).
    """
    if cancel is not None:
        cancel.raise_if_cancelled()
    prepared = predictor.prepare(source)
    batch = prepared.tensor.unsqueeze(0)
    started = False

    def progress(done: int, total: int) -> None:
        nonlocal started
        if not started:
            started = True
            on_event(Started(CAM_TASK, total=total, info={"method": method}))
        on_event(Progress(CAM_TASK, done, total, message=method))

    logits, maps, class_indices, layer_name = cam_forward(
        predictor, batch, method=method, target=target, layer=layer, on_progress=progress,
        cancel=cancel,
    )
    on_event(Finished(CAM_TASK, {"method": method, "layer": layer_name}))
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
    on_progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
) -> tuple[torch.Tensor, list[np.ndarray], list[int], str]:
    """One forward over a normalized batch: (logits, one map per image, classes, layer).

    ``target`` may be one class (name or index) for the whole batch, one index per image,
    or None for each image's predicted class. ``on_progress(done, total)`` is called after
    each model forward and ``cancel`` checked before each: Score-CAM's per-chunk forwards
    are counted by a forward hook on the model (removed on the way out, cancelled or not).
    """
    import torch

    extractor_cls = _extractor_class(method)
    model = predictor.model
    layer_name = layer or target_layer_name(predictor)
    _check_layer(model, layer_name)
    batch = batch.to(predictor.device)
    reshape = _token_reshape(model)
    gradient = method in _GRADIENT_METHODS
    module = dict(model.named_modules())[layer_name]
    shape: list[int] = []  # the target layer's (batch, channels), seen on the first forward

    def note_shape(_module: Any, _inputs: Any, output: Any) -> None:
        if not shape:
            shape.extend(_map_shape(output, reshape))

    handles = []
    chunk = scorecam_chunk(predictor.device)
    extra = {"batch_size": chunk} if method == "scorecam" else {}
    with extractor_cls(model, layer_name, reshape_transform=reshape, **extra) as cam:
        try:
            handles.append(module.register_forward_hook(note_shape))
            if gradient:
                handles.append(module.register_forward_hook(_start_graph_here, prepend=True))
            # inference_mode(False): callers may sit inside inference mode, where no tensor
            # can require grad; the gradient methods need exactly that from the layer on.
            grad_mode = torch.enable_grad() if gradient else torch.no_grad()
            with torch.inference_mode(False), grad_mode:
                logits = model(batch)
                total = _forward_count(method, shape, chunk)
                if on_progress is not None:
                    on_progress(1, total)
                if method == "scorecam":
                    handles.append(model.register_forward_hook(
                        _forward_counter(on_progress, cancel, total)))
                indices = _class_indices(predictor, logits.detach(), target)
                maps = cam(class_idx=indices, scores=logits)
        finally:
            for handle in handles:
                handle.remove()
    heatmaps = [m.detach().float().cpu().numpy() for m in maps[0]]
    return logits.detach().float().cpu(), heatmaps, indices, layer_name


def _map_shape(output: Any, reshape: Callable[[Any], Any] | None) -> tuple[int, int]:
    """(batch, channels) of the target layer's output, tokens folded as the map is."""
    fmap = reshape(output) if reshape is not None else output
    return int(fmap.shape[0]), int(fmap.shape[1])


def scorecam_chunk(device: Any) -> int:
    """Channels per Score-CAM forward on ``device`` (:data:`SCORECAM_CHUNK`)."""
    kind = getattr(device, "type", str(device))
    return SCORECAM_CHUNK["cpu" if kind == "cpu" else "other"]


def _forward_count(method: str, shape: Sequence[int], chunk: int) -> int:
    """Model forwards of one map: the prediction's, plus for Score-CAM its baseline and one
    per chunk of channels (torchcam scores ``batch × channels`` masked inputs in chunks)."""
    if method != "scorecam" or len(shape) < 2:
        return 1
    masked = shape[0] * shape[1]
    return 2 + -(-masked // chunk)


def _forward_counter(
    on_progress: Callable[[int, int], None] | None, cancel: CancelToken | None, total: int
) -> Callable[..., None]:
    """A forward hook: count each forward, report it, and stop when cancelled."""
    done = [1]

    def hook(_module: Any, _inputs: Any, _output: Any) -> None:
        done[0] += 1
        if on_progress is not None:
            on_progress(min(done[0], total), total)
        if cancel is not None:
            cancel.raise_if_cancelled()

    return hook


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


__all__ = [
    "CAM_METHODS",
    "CAM_TASK",
    "DEFAULT_COLORMAP",
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
    "input_outline",
    "render_overlay",
    "save_overlay",
    "scorecam_chunk",
    "target_layer_name",
    "top_activating",
]
