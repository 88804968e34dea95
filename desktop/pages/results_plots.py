"""Drawing and background work for the Results page, kept apart from its layout.

Worker functions here take ``on_event``/``cancel`` (loupe.desktop.workers calls them that way)
and return plain data; drawing functions take an :class:`MplCanvas` and the engine's
analysis objects. Overlays are made by ``engine.inference.cam.render_overlay`` on thumbnail-sized
copies, so a grid of 30 activation maps costs milliseconds to show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loupe.desktop.pages.model_use import using_model
from loupe.desktop.widgets.mpl_canvas import MplCanvas

THUMB_SIDE = 192
CELL_LIMIT = 36  # images shown (with maps) for one confusion-matrix cell


@dataclass(frozen=True)
class ResultsData:
    """One analysis plus what the page shows with it (computed in a worker)."""

    analysis: Any  # loupe.engine.evaluation.analysis.Analysis
    loss_overlays: tuple[np.ndarray | None, ...]
    filters: np.ndarray | None
    filters_error: str = ""
    layers: tuple[tuple[str, int], ...] = ()  # convolutions (name, channels) to inspect


@dataclass(frozen=True)
class CellImage:
    """One image of a confusion-matrix cell: its prediction and a map thumbnail."""

    path: Path
    actual: str
    prediction: Any  # loupe.engine.inference.predict.Prediction
    overlay: np.ndarray


def overlay_thumbnail(path: Path, heatmap: Any, crop_box: Any, label: str,
                      side: int = THUMB_SIDE) -> np.ndarray:
    """The image at thumbnail size with a map blended in (engine.inference.cam.render_overlay)."""
    from loupe.engine.data.imageio import load_rgb
    from loupe.engine.inference.cam import CamResult, render_overlay

    image = load_rgb(path, min_short_side=side)
    image.thumbnail((side, side))
    if heatmap is None:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    result = CamResult(prediction=None, heatmap=heatmap, class_index=-1, label=label,
                       method="", layer="", crop_box=tuple(crop_box), source=path)
    return np.asarray(render_overlay(result, image, opacity=0.5), dtype=np.uint8)


def run_analysis(predictor: Any, items: Sequence[Any], *, embedding: str = "pca",
                 top_k: int = 16, on_event: Any = None, cancel: Any = None) -> ResultsData:
    """Worker body: ``engine.evaluation.analysis.analyze``, then top-loss overlays and
    first-layer filters."""
    from loupe.engine.core.errors import LoupeError
    from loupe.engine.core.events import ignore_event
    from loupe.engine.evaluation import analysis
    from loupe.engine.inference import cam

    with using_model(predictor, cancel):
        result = analysis.analyze(predictor, items, top_k=top_k, embedding=embedding,
                                  on_event=on_event or ignore_event, cancel=cancel)
    overlays: list[np.ndarray | None] = []
    for loss in result.top_losses:
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            overlays.append(overlay_thumbnail(loss.path, loss.heatmap, loss.crop_box,
                                              loss.predicted))
        except LoupeError:
            overlays.append(None)
    try:
        filters, filters_error = cam.first_conv_filters(predictor.model), ""
    except LoupeError as err:
        filters, filters_error = None, str(err)
    layers = tuple(cam.conv_layers(predictor.model))
    return ResultsData(result, tuple(overlays), filters, filters_error, layers)


def cell_images(predictor: Any, entries: Sequence[tuple[Path, str]], *, method: str = "gradcam",
                on_event: Any = None, cancel: Any = None) -> list[CellImage]:
    """Worker body: prediction + map (for the predicted class) for each (path, actual)."""
    from loupe.engine.core.events import Finished, Progress, Started
    from loupe.engine.inference import cam

    emit = on_event or (lambda _event: None)
    chosen = list(entries)[:CELL_LIMIT]
    emit(Started("cell", total=len(chosen)))
    images = []
    for done, (path, actual) in enumerate(chosen, start=1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        with using_model(predictor, cancel):
            result = cam.compute_cam(predictor, path, method=method)
        overlay = overlay_thumbnail(path, result.heatmap, result.crop_box, result.label)
        images.append(CellImage(Path(path), actual, result.prediction, overlay))
        emit(Progress("cell", done, len(chosen)))
    emit(Finished("cell", {"count": len(images)}))
    return images


def draw_confusion(canvas: MplCanvas, confusion: Any, *, normalized: bool = False) -> Any:
    """fastai's plot_confusion_matrix: actual rows, predicted columns, counts in cells."""
    ax = canvas.axes()
    if confusion is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "No confusion matrix for multi-label models", ha="center",
                va="center", transform=ax.transAxes, color=canvas.foreground())
        canvas.redraw()
        return ax
    values = np.asarray(confusion.normalized if normalized else confusion.counts, dtype=float)
    n = len(confusion.classes)
    peak = values.max() if values.size else 0.0
    # Colours from 0, not from the smallest cell: the text colour below assumes it, and
    # with imshow's default (min..max) scale a cell just above peak / 2 was drawn white
    # and got white text.
    ax.imshow(values, cmap="Blues", interpolation="nearest", vmin=0.0, vmax=peak or 1.0)
    ax.set_xticks(range(n), labels=confusion.classes, rotation=90 if n > 4 else 0)
    ax.set_yticks(range(n), labels=confusion.classes)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    ax.set_title("Confusion matrix (click a cell)")
    for i in range(n):
        for j in range(n):
            text = f"{values[i, j]:.2f}" if normalized else str(int(values[i, j]))
            colour = "white" if peak and values[i, j] > peak / 2 else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour,
                    fontsize="small" if n > 8 else "medium")
    canvas.redraw()
    return ax


def draw_embedding(canvas: MplCanvas, embedding: Any) -> None:
    """Scatter of the validation images' embeddings, coloured by actual class; wrong
    predictions are drawn with a black edge."""
    ax = canvas.axes()
    if embedding is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "Too few validation images for an embedding map", ha="center",
                va="center", transform=ax.transAxes, color=canvas.foreground())
        canvas.redraw()
        return
    coords = np.asarray(embedding.coords)
    classes = sorted(set(embedding.actual))
    palette = _class_colours(len(classes))
    for index, name in enumerate(classes):
        rows = [i for i, a in enumerate(embedding.actual) if a == name]
        wrong = [i for i in rows if embedding.predicted[i] != name]
        ax.scatter(coords[rows, 0], coords[rows, 1], s=18, color=palette[index], label=name,
                   alpha=0.8)
        if wrong:
            ax.scatter(coords[wrong, 0], coords[wrong, 1], s=40, facecolors="none",
                       edgecolors=canvas.foreground(), linewidths=1.0)
    ax.set_title(f"Embedding map ({embedding.method.upper()}); circled = misclassified")
    ax.set_xticks([])
    ax.set_yticks([])
    if len(classes) <= 20:
        ax.legend(fontsize="x-small", markerscale=1.2)
    canvas.redraw()


def draw_filters(canvas: MplCanvas, filters: np.ndarray | None, message: str = "") -> None:
    """First-convolution filters as a grid of tiny RGB images."""
    canvas.clear()
    if filters is None or len(filters) == 0:
        ax = canvas.figure.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, message or "No filters to show", ha="center", va="center",
                transform=ax.transAxes, color=canvas.foreground())
        canvas.redraw()
        return
    from loupe.engine.inference.activations import filter_mosaic

    count = min(len(filters), 64)
    columns = 8 if count > 16 else 4
    ax = canvas.figure.add_subplot(1, 1, 1)
    ax.axis("off")
    # One image, not 64 subplots: building those took ~0.6 s of the GUI thread.
    ax.imshow(filter_mosaic(filters[:count], columns), interpolation="nearest")
    ax.set_title(f"First-layer filters ({len(filters)}, shown {count})",
                 color=canvas.foreground())
    canvas.redraw()


def _class_colours(count: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]
