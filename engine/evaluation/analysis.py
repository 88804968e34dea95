"""Error analysis on the validation set: where the model goes wrong, and on what.

One batched pass over the validation images collects logits, losses and penultimate-layer
features together: the images are scored as training validates and ``evaluate`` scores
(:func:`loupe.engine.training.scoring.score_items`), and a pre-hook on the classifier
captures its input, so there is no second forward. From those come: the confusion matrix
(counts and row-normalized), the most-confused pairs, per-class precision/recall/F1/support,
one row per image (actual, predicted, probability, loss: what lists a confusion-matrix
cell), the top losses with their activation maps, and a 2-D map of the images from their
embeddings (PCA, or t-SNE when scikit-learn is installed). Each is a plain data object for
the GUI; the figures for the CLI are in :mod:`loupe.engine.evaluation.analysis_plots`.
Metric arithmetic is reused from :mod:`loupe.engine.training.metrics` so validation during
training and analysis here agree.

Multi-label models have no single predicted class per image, so they get no confusion
matrix or confused pairs; per-class reports use each class's threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loupe.engine.core.errors import ConfigError, DatasetError, LoupeError
from loupe.engine.core.events import (
    CancelToken,
    EventCallback,
    Finished,
    Progress,
    Started,
    WarningEvent,
    ignore_event,
)
from loupe.engine.evaluation.embedding import EMBEDDING_METHODS, EmbeddingMap, embedding_map

if TYPE_CHECKING:
    import numpy as np
    import torch

    from loupe.engine.data.cache import ImageCache
    from loupe.engine.data.labels import LabelledItem
    from loupe.engine.inference.predict import Predictor


@dataclass(frozen=True)
class ValidationOutputs:
    """Everything one pass over the validation set yields, aligned by row."""

    paths: tuple[Path, ...]
    rels: tuple[str, ...]  # each path relative to the data folder (the overrides' key)
    targets: torch.Tensor  # N class indices, or N×C multi-hot for multi-label
    logits: torch.Tensor  # N×C
    losses: torch.Tensor  # N, each image's loss (cross-entropy, or mean BCE over classes)
    features: torch.Tensor  # N×D, the classifier's input
    crop_boxes: tuple[tuple[float, float, float, float], ...]


@dataclass(frozen=True)
class ConfusionData:
    """Rows are actual classes, columns predicted; ``normalized`` rows sum to 1 (or 0)."""

    classes: tuple[str, ...]
    counts: list[list[int]]
    normalized: list[list[float]]


@dataclass(frozen=True)
class ConfusedPair:
    actual: str
    predicted: str
    count: int


@dataclass(frozen=True)
class ImageRow:
    """One validation image's verdict, computed in the same pass as every other result.

    ``actual``/``predicted`` are label text (``"a;b"`` or ``"(none)"`` for multi-label).
    ``prob`` is the probability of the prediction; for multi-label, that of the class the
    model is most wrong about. ``actual_index``/``predicted_index`` are the confusion
    matrix's row and column (None for multi-label), so the rows with a given pair are
    exactly the images counted in that cell.
    """

    path: Path
    rel: str
    actual: str
    predicted: str
    prob: float
    loss: float
    actual_index: int | None
    predicted_index: int | None


@dataclass(frozen=True)
class TopLoss:
    """One of the images the model is most wrong (or least sure) about.

    ``prob`` is the probability the model gave its prediction; the activation map is for
    the predicted class: where the model looked when it got this image wrong.
    """

    path: Path
    actual: str
    predicted: str
    prob: float
    loss: float
    heatmap: np.ndarray | None
    crop_box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Analysis:
    classes: tuple[str, ...]
    multi_label: bool
    count: int
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    confusion: ConfusionData | None
    most_confused: list[ConfusedPair]
    top_losses: list[TopLoss]
    embedding: EmbeddingMap | None
    skipped: list[str] = field(default_factory=list)
    rows: tuple[ImageRow, ...] = ()  # every analysed image, in validation order

    def cell(self, actual: int, predicted: int) -> list[ImageRow]:
        """The images of one confusion-matrix cell (row ``actual``, column ``predicted``)."""
        return [row for row in self.rows
                if row.actual_index == actual and row.predicted_index == predicted]

    def to_json(self) -> dict[str, Any]:
        """The ``metrics.json`` that ``loupe analyze`` writes (no arrays but the matrix)."""
        return {
            "classes": list(self.classes),
            "multi_label": self.multi_label,
            "count": self.count,
            "metrics": self.metrics,
            "per_class": self.per_class,
            "confusion": None
            if self.confusion is None
            else {"counts": self.confusion.counts, "normalized": self.confusion.normalized},
            "most_confused": [
                {"actual": p.actual, "predicted": p.predicted, "count": p.count}
                for p in self.most_confused
            ],
            "top_losses": [
                {"path": str(t.path), "actual": t.actual, "predicted": t.predicted,
                 "prob": t.prob, "loss": t.loss}
                for t in self.top_losses
            ],
            "embedding": None if self.embedding is None else self.embedding.method,
            "skipped": self.skipped,
        }


def collect_outputs(
    predictor: Predictor,
    items: Sequence[LabelledItem],
    *,
    batch_size: int = 32,
    cache: ImageCache | None = None,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> tuple[ValidationOutputs, list[str]]:
    """Run the model once over ``items``; returns the outputs and the files skipped.

    The images are read first (into ``cache`` when it was made with the model's own
    preprocessing, else into a new one); a file that no longer decodes is skipped with a
    warning event, not fatal: analysis of the rest is still worth having. Then the readable
    ones are scored in one pass (``score_items``). Progress events count the images of
    each phase, with the message "reading images" and then "scoring".
    """
    import torch

    from loupe.engine.core.device import resolve_device
    from loupe.engine.models.anatomy import classifier_layer
    from loupe.engine.training.scoring import image_cache_for, score_items

    head = classifier_layer(predictor.model)
    if head is None:
        raise ConfigError("the model has no linear classifier layer to take embeddings from")
    cache = image_cache_for(predictor.preprocessing, cache)
    total = len(items)
    on_event(Started("analysis", total=total))
    readable, skipped = _read_items(items, cache, batch_size, on_event, cancel)
    if not readable:
        raise DatasetError("no validation image could be read; nothing to analyse")
    done = len(skipped)

    def scored(n: int) -> None:
        nonlocal done
        done += n
        on_event(Progress("analysis", done, total, message="scoring"))

    features: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(
        lambda _m, inputs: features.append(inputs[0].detach().flatten(1).float().cpu())
    )
    try:
        scores = score_items(
            predictor.model, predictor.preprocessing, readable, predictor.classes,
            multi_label=predictor.multi_label, device=resolve_device(predictor.device.type),
            batch_size=batch_size, cache=cache, cancel=cancel, on_batch=scored,
        )
    finally:
        handle.remove()
    outputs = ValidationOutputs(
        paths=tuple(li.item.path for li in readable),
        rels=tuple(li.item.rel for li in readable),
        targets=scores.targets,
        logits=scores.logits,
        losses=scores.losses,
        features=torch.cat(features),
        crop_boxes=tuple(_crop_box(predictor, li.item) for li in readable),
    )
    on_event(Finished("analysis", {"count": len(outputs.paths)}))
    return outputs, skipped


def _read_items(
    items: Sequence[LabelledItem],
    cache: ImageCache,
    batch_size: int,
    on_event: EventCallback,
    cancel: CancelToken | None,
) -> tuple[list[LabelledItem], list[str]]:
    """Decode each item into ``cache`` once; (the readable items, the paths skipped)."""
    readable: list[LabelledItem] = []
    skipped: list[str] = []
    for start in range(0, len(items), batch_size):
        if cancel is not None:
            cancel.raise_if_cancelled()
        for labelled in items[start : start + batch_size]:
            try:
                cache.get(labelled.item)
            except LoupeError as err:
                skipped.append(str(labelled.item.path))
                on_event(WarningEvent("unreadable-image", str(err)))
                continue
            readable.append(labelled)
        done = min(start + batch_size, len(items))
        on_event(Progress("analysis", done, len(items), message="reading images"))
    return readable, skipped


def _crop_box(predictor: Predictor, item: Any) -> tuple[float, float, float, float]:
    """Where the model's input lies in the picture, from the scan's original size (a
    squished or padded cache entry is square); an item without one is opened for it."""
    if getattr(item, "width", 0):
        return predictor.crop_box_for((item.width, item.height))
    return predictor.prepare(item.path).crop_box


def analyze(
    predictor: Predictor,
    items: Sequence[LabelledItem],
    *,
    top_k: int = 9,
    cam_method: str | None = "gradcam",
    cam_layer: str | None = None,
    embedding: str = "pca",
    batch_size: int = 32,
    cache: ImageCache | None = None,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> Analysis:
    """The whole error analysis for ``items`` (normally ``prepared.plan.valid``).

    ``cam_method=None`` skips the top-loss activation maps; ``cam_layer`` overrides the
    architecture's default map layer.
    """
    from loupe.engine.training import metrics

    if embedding not in EMBEDDING_METHODS:
        raise ConfigError(
            f"unknown embedding map {embedding!r}; choose one of: {', '.join(EMBEDDING_METHODS)}"
        )
    if not items:
        raise DatasetError("the validation set is empty; choose a split with a validation part")
    outputs, skipped = collect_outputs(
        predictor, items, batch_size=batch_size, cache=cache, on_event=on_event, cancel=cancel
    )
    preds = _predictions(predictor, outputs.logits)
    losses = outputs.losses
    rows = image_rows(predictor, outputs, preds, losses)
    thresholds = [predictor.thresholds[c] for c in predictor.classes]
    summary = metrics.epoch_metrics(
        outputs.logits, outputs.targets, multi_label=predictor.multi_label, thresholds=thresholds
    )
    summary["valid_loss"] = float(losses.mean())
    confusion = None if predictor.multi_label else confusion_data(predictor.classes, preds,
                                                                   outputs.targets)
    return Analysis(
        classes=predictor.classes,
        multi_label=predictor.multi_label,
        count=len(outputs.paths),
        metrics={k: float(v) for k, v in summary.items()},
        per_class=metrics.per_class_report(preds, outputs.targets, predictor.classes),
        confusion=confusion,
        most_confused=most_confused(confusion) if confusion else [],
        top_losses=top_losses(predictor, outputs, rows, losses, k=top_k,
                              cam_method=cam_method, cam_layer=cam_layer),
        embedding=embedding_map(
            outputs.features,
            actual=tuple(row.actual for row in rows),
            predicted=tuple(row.predicted for row in rows),
            paths=outputs.paths,
            method=embedding,
        ),
        skipped=skipped,
        rows=rows,
    )


def image_rows(
    predictor: Predictor, outputs: ValidationOutputs, preds: torch.Tensor, losses: torch.Tensor
) -> tuple[ImageRow, ...]:
    """One :class:`ImageRow` per image from the predictions and losses already computed.

    ``preds`` is what the confusion matrix counts, so rows and matrix cannot disagree.
    """
    probs = predictor.probabilities(outputs.logits)
    if predictor.multi_label:
        # No single prediction: show the class the model is most wrong about.
        shown = (probs - outputs.targets.float()).abs().argmax(dim=1)
        actual_index: list[int | None] = [None] * len(outputs.paths)
        predicted_index: list[int | None] = list(actual_index)
    else:
        shown = preds
        actual_index = [int(t) for t in outputs.targets.tolist()]
        predicted_index = [int(p) for p in preds.tolist()]
    chosen = probs.gather(1, shown.unsqueeze(1)).squeeze(1).tolist()
    return tuple(
        ImageRow(path, rel, _names(predictor, target), _names(predictor, pred), float(prob),
                 float(loss), a, p)
        for path, rel, target, pred, prob, loss, a, p in zip(
            outputs.paths, outputs.rels, outputs.targets, preds, chosen, losses.tolist(),
            actual_index, predicted_index, strict=True)
    )


def _predictions(predictor: Predictor, logits: torch.Tensor) -> torch.Tensor:
    from loupe.engine.training import metrics

    if predictor.multi_label:
        thresholds = [predictor.thresholds[c] for c in predictor.classes]
        return metrics.multi_label_predictions(logits, thresholds)
    return logits.argmax(dim=1)


def confusion_data(
    classes: Sequence[str], preds: torch.Tensor, targets: torch.Tensor
) -> ConfusionData:
    """Counts and row-normalized rates (a class with no images has a zero row)."""
    from loupe.engine.training.metrics import confusion_matrix

    counts = confusion_matrix(preds, targets, len(classes))
    totals = counts.sum(dim=1, keepdim=True).clamp_min(1)
    normalized = counts.float() / totals
    return ConfusionData(tuple(classes), counts.tolist(), normalized.tolist())


def most_confused(confusion: ConfusionData, min_count: int = 1) -> list[ConfusedPair]:
    """Off-diagonal cells with at least ``min_count`` images, most frequent first."""
    pairs = [
        ConfusedPair(actual, predicted, count)
        for i, actual in enumerate(confusion.classes)
        for j, predicted in enumerate(confusion.classes)
        if i != j and (count := confusion.counts[i][j]) >= min_count
    ]
    return sorted(pairs, key=lambda p: (-p.count, p.actual, p.predicted))


def top_losses(
    predictor: Predictor,
    outputs: ValidationOutputs,
    rows: Sequence[ImageRow],
    losses: torch.Tensor,
    *,
    k: int = 9,
    cam_method: str | None = "gradcam",
    cam_layer: str | None = None,
) -> list[TopLoss]:
    """The ``k`` highest-loss images (from :func:`image_rows`), each with an activation map
    for its prediction; ``losses`` is the per-image loss tensor the rows were made from."""
    from loupe.engine.training import metrics

    values, indices = metrics.top_losses(losses, k)
    chosen = [int(i) for i in indices.tolist()]
    heatmaps = _heatmaps_for(predictor, outputs, chosen, cam_method, cam_layer)
    result = []
    for rank, (index, loss) in enumerate(zip(chosen, values.tolist(), strict=True)):
        row = rows[index]
        result.append(
            TopLoss(row.path, row.actual, row.predicted, row.prob, float(loss),
                    heatmaps[rank] if heatmaps else None, outputs.crop_boxes[index])
        )
    return result


def _heatmaps_for(
    predictor: Predictor,
    outputs: ValidationOutputs,
    rows: list[int],
    method: str | None,
    layer: str | None,
) -> list[np.ndarray]:
    """Activation maps for the chosen rows, all in one batched forward."""
    if method is None or not rows:
        return []
    import torch

    from loupe.engine.inference.cam import cam_forward

    batch = torch.stack([predictor.prepare(outputs.paths[r]).tensor for r in rows])
    _, maps, _, _ = cam_forward(predictor, batch, method=method, layer=layer)
    return maps


def _names(predictor: Predictor, row: torch.Tensor) -> str:
    """A class index (or multi-hot row) as the label text the GUI shows."""
    if row.ndim == 0:
        return predictor.classes[int(row)]
    chosen = [c for c, on in zip(predictor.classes, row.tolist(), strict=True) if on]
    return ";".join(chosen) or "(none)"
