"""Matplotlib figures for :mod:`engine.evaluation.analysis`, and the files ``loupe analyze`` writes.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no global state), so they
render with the Agg backend in the CLI and embed in a Qt canvas in the desktop alike.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

from loupe.engine.core.atomic import atomic_write_bytes, atomic_write_json
from loupe.engine.core.errors import LoupeError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from loupe.engine.evaluation.analysis import Analysis, ConfusionData, EmbeddingMap, TopLoss
    from loupe.engine.inference.predict import Predictor

MAX_LABELLED_CLASSES = 30  # beyond this, tick labels become unreadable


def confusion_figure(confusion: ConfusionData) -> Figure:
    """Counts and row-normalized confusion matrices side by side (rows: actual)."""
    import numpy as np
    from matplotlib.figure import Figure

    n = len(confusion.classes)
    side = min(14.0, 3.0 + 0.45 * n)
    fig = Figure(figsize=(2 * side, side), layout="constrained")
    for axis, data, title, fmt in zip(
        fig.subplots(1, 2),
        (np.asarray(confusion.counts), np.asarray(confusion.normalized)),
        ("confusion matrix (counts)", "confusion matrix (row-normalized)"),
        ("{:d}", "{:.2f}"),
        strict=True,
    ):
        axis.imshow(data, cmap="Blues", vmin=0)
        axis.set_title(title)
        axis.set_xlabel("predicted")
        axis.set_ylabel("actual")
        if n <= MAX_LABELLED_CLASSES:
            axis.set_xticks(range(n), confusion.classes, rotation=90)
            axis.set_yticks(range(n), confusion.classes)
            high = data.max() or 1
            for (row, col), value in np.ndenumerate(data):
                colour = "white" if value > high / 2 else "black"
                text = fmt.format(int(value) if fmt == "{:d}" else float(value))
                axis.text(col, row, text, ha="center", va="center", color=colour, fontsize=8)
    return fig


def per_class_figure(per_class: list[dict]) -> Figure:
    """Precision, recall and F1 per class as grouped bars; support in the tick labels."""
    import numpy as np
    from matplotlib.figure import Figure

    n = len(per_class)
    fig = Figure(figsize=(max(6.0, 0.6 * n + 2), 4.5), layout="constrained")
    axis = fig.subplots()
    x = np.arange(n)
    for offset, key in zip((-0.27, 0.0, 0.27), ("precision", "recall", "f1"), strict=True):
        axis.bar(x + offset, [row[key] for row in per_class], width=0.27, label=key)
    axis.set_xticks(x, [f"{row['class']}\n(n={row['support']})" for row in per_class],
                    rotation=90 if n > 8 else 0)
    axis.set_ylim(0, 1.05)
    axis.set_title("per-class precision / recall / F1")
    axis.legend(loc="lower right")
    return fig


def top_losses_figure(
    losses: list[TopLoss], predictor: Predictor, *, opacity: float = 0.5
) -> Figure:
    """A grid of the top-loss images with their activation maps and verdicts."""
    from matplotlib.figure import Figure

    from loupe.engine.inference.cam import CamResult, render_overlay
    from loupe.engine.inference.predict import Prediction

    columns = min(3, max(1, len(losses)))
    rows = max(1, math.ceil(len(losses) / columns))
    fig = Figure(figsize=(4 * columns, 4.3 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, loss in zip(axes.flat, losses, strict=False):
        picture = _thumbnail(predictor, loss.path)
        if loss.heatmap is not None and picture is not None:
            result = CamResult(
                prediction=Prediction(loss.path, (), False, {}), heatmap=loss.heatmap,
                class_index=-1, label=loss.predicted, method="", layer="",
                crop_box=loss.crop_box, source=loss.path,
            )
            picture = render_overlay(result, picture, opacity=opacity)
        if picture is not None:
            axis.imshow(picture)
        axis.set_title(
            f"{loss.path.name}\nactual {loss.actual} · predicted {loss.predicted}\n"
            f"p={loss.prob:.2f} · loss {loss.loss:.2f}",
            fontsize=8,
        )
    fig.suptitle("top losses (activation map of the predicted class)")
    return fig


def _thumbnail(predictor: Predictor, path: Path):
    """The image small (JPEG draft), EXIF applied; None if it no longer loads."""
    from loupe.engine.data.imageio import load_rgb

    try:
        image = load_rgb(path, min_short_side=predictor.preprocessing.presize)
    except LoupeError:
        return None
    image.thumbnail((384, 384))
    return image


def embedding_figure(embedding: EmbeddingMap) -> Figure:
    """Validation images as points, coloured by actual class; mistakes drawn as crosses."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 6), layout="constrained")
    axis = fig.subplots()
    actual = np.asarray(embedding.actual)
    wrong = actual != np.asarray(embedding.predicted)
    names = sorted(set(embedding.actual))
    for index, name in enumerate(names):
        colour = f"C{index % 10}"
        right, missed = (actual == name) & ~wrong, (actual == name) & wrong
        xs, ys = embedding.coords[right].T
        axis.scatter(xs, ys, c=colour, marker="o", s=18, label=name)
        if missed.any():
            xs, ys = embedding.coords[missed].T
            axis.scatter(xs, ys, c=colour, marker="x", s=30)
    axis.set_title(f"validation images by penultimate features ({embedding.method.upper()}); "
                   "x = misclassified", fontsize=9)
    if len(names) <= 20:
        axis.legend(fontsize=8, markerscale=1.2)
    return fig


def figure_png(fig: Figure, *, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes with Agg (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def write_report(
    analysis: Analysis, predictor: Predictor, out_dir: str | Path, *, opacity: float = 0.5
) -> list[Path]:
    """Write every figure as PNG and ``metrics.json`` into ``out_dir``; return the paths."""
    from loupe.engine.inference.cam import filters_figure, first_conv_filters

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Figure] = {"per_class.png": per_class_figure(analysis.per_class)}
    if analysis.confusion is not None:
        figures["confusion.png"] = confusion_figure(analysis.confusion)
    if analysis.top_losses:
        figures["top_losses.png"] = top_losses_figure(
            analysis.top_losses, predictor, opacity=opacity
        )
    if analysis.embedding is not None:
        figures["embedding.png"] = embedding_figure(analysis.embedding)
    try:
        figures["first_conv_filters.png"] = filters_figure(first_conv_filters(predictor.model))
    except LoupeError:
        pass  # a model without an RGB convolution has no filters to show
    written = [atomic_write_bytes(out / name, figure_png(fig)) for name, fig in figures.items()]
    written.append(atomic_write_json(out / "metrics.json", analysis.to_json()))
    return written
