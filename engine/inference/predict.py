"""Predict with a trained bundle: one image or many, kept warm between calls.

A :class:`Predictor` loads a bundle once (safetensors + JSON, no pickle), puts the model in
eval mode with frozen parameters and answers every later call without re-loading. Images go
through the shared loader (``engine.data.imageio``: EXIF orientation, 16-bit, alpha, JPEG draft)
and the same evaluation transform as validation (``loupe.engine.data.transforms``, with the bundle's
own resize method: crop, squish or pad), so a picture scores the same here as it did in the
validation set.

Single-label models can answer "unknown" when the top probability is under a user-set
threshold (off by default), so a photo of something else is not forced into a class.
Multi-label models return every label above its own threshold, possibly none.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from loupe.engine.data.transforms import Preprocessing

DEFAULT_MULTI_LABEL_THRESHOLD = 0.5


@dataclass(frozen=True)
class Prediction:
    """What the model says about one image.

    ``top`` is sorted by probability, highest first. For single-label models it holds the
    ``topk`` most likely classes (softmax, they sum to at most 1); for multi-label models it
    holds every class whose sigmoid probability reaches its threshold (possibly none).
    ``probs`` maps every class, in the bundle's class order, to its probability.
    """

    path: Path | None
    top: tuple[tuple[str, float], ...]
    unknown: bool
    probs: Mapping[str, float]
    multi_label: bool = False

    @property
    def label(self) -> str | None:
        """The answer in one word: the top class, or None when unknown / no label."""
        if self.unknown or not self.top:
            return None
        return self.top[0][0]

    def unknown_at(self, threshold: float | None) -> bool:
        """Whether this prediction is "unknown" under the "unknown below" ``threshold``:
        the rule ``unknown`` was computed with, for a threshold chosen after predicting
        (the desktop's slider). Multi-label predictions are never unknown."""
        if self.multi_label or not self.top:
            return False
        return is_unknown(self.top[0][1], threshold)

    def to_json(self, *, include_unknown: bool = True) -> dict[str, Any]:
        """The ``loupe predict --json`` object for this image."""
        obj: dict[str, Any] = {
            "path": str(self.path) if self.path is not None else None,
            "top": [{"label": label, "prob": round(prob, 6)} for label, prob in self.top],
        }
        if include_unknown:
            obj["unknown"] = self.unknown
        return obj


@dataclass(frozen=True)
class PreparedInput:
    """One image ready for the model, plus where the model's input lies in the original.

    ``crop_box`` is (left, top, right, bottom) as fractions of the original (EXIF-rotated)
    image, so an activation map can be placed on the full-size original even though the
    image was decoded smaller (JPEG draft) for speed. It is the center crop for ``crop``,
    the whole image for ``squish``, and reaches past 0..1 on the padded sides for ``pad``
    (:func:`loupe.engine.data.resize.input_box`).
    """

    tensor: torch.Tensor  # 3×S×S, normalized
    crop_box: tuple[float, float, float, float]
    path: Path | None


class Predictor:
    """A loaded model that stays warm: eval mode, frozen weights, inference mode per call.

    Build it with :meth:`from_file` (a ``.loupe`` bundle) or directly from a model and its
    metadata (tests, or a model just trained in this process).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        classes: Sequence[str],
        preprocessing: Preprocessing,
        multi_label: bool = False,
        thresholds: Mapping[str, float] | Sequence[float] | float | None = None,
        arch: str = "",
        unknown_below: float | None = None,
        device: str = "cpu",
        threads: int | None = None,
        source: Path | None = None,
    ) -> None:
        import torch

        if not classes:
            raise ConfigError("a model needs at least one class name; the bundle lists none")
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"threads must be 1 or more, got {threads}")
            torch.set_num_threads(threads)
        self.classes: tuple[str, ...] = tuple(classes)
        self.preprocessing = preprocessing
        self.multi_label = bool(multi_label)
        self.thresholds = _resolve_thresholds(thresholds, self.classes)
        self.arch = arch
        self.source = source
        self.unknown_below = _check_unknown_below(unknown_below)
        self.device = _resolve_device(device)
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        self.model = model.to(self.device)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        unknown_below: float | None = None,
        device: str = "cpu",
        threads: int | None = None,
        warm_up: bool = True,
    ) -> Predictor:
        """Load a ``.loupe`` bundle (JSON + safetensors only) and warm the model up.

        ``warm_up`` runs one forward pass on a blank input so the first real prediction
        does not pay for lazy allocations.
        """
        from loupe.engine.models.bundle import load_bundle

        loaded = load_bundle(Path(path))
        meta = loaded.meta
        predictor = cls(
            loaded.model,
            classes=meta.classes,
            preprocessing=meta.preprocessing,
            multi_label=meta.multi_label,
            thresholds=meta.thresholds,
            arch=meta.arch,
            unknown_below=unknown_below,
            device=device,
            threads=threads,
            source=Path(path),
        )
        if warm_up:
            predictor.warm_up()
        return predictor

    def warm_up(self) -> None:
        """One throw-away forward pass at the model's input size."""
        import torch

        size = self.preprocessing.size
        with torch.inference_mode():
            self.model(torch.zeros(1, 3, size, size, device=self.device))

    # -- inputs ---------------------------------------------------------------------------

    def prepare(self, source: str | Path | Image.Image) -> PreparedInput:
        """Load (if a path) and transform one image exactly like a validation image."""
        from loupe.engine.data.imageio import load_rgb

        if isinstance(source, str | Path):
            path: Path | None = Path(source)
            image = load_rgb(Path(source), min_short_side=self.preprocessing.presize)
        else:
            path = None
            image = _upright_rgb(source)
        tensor = self._eval_tensor(image)
        return PreparedInput(tensor, self.crop_box_for(image.size), path)

    def _eval_tensor(self, image: Image.Image) -> torch.Tensor:
        """The validation transform (``loupe.engine.data.transforms``), then normalization.

        ``load_rgb(path, min_short_side=presize)`` followed by ``eval_tensor_from_image`` is
        exactly ``eval_tensor_from_path``; we keep the image to know the crop's position.
        """
        from loupe.engine.data.transforms import eval_tensor_from_image, normalize

        pre = self.preprocessing
        x = eval_tensor_from_image(image, pre.size, pre.presize, pre.resize)
        return normalize(x, pre.mean, pre.std)

    def crop_box_for(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """Where the model's input lies, as fractions of the decoded (= original) image."""
        from loupe.engine.data.resize import input_box

        pre = self.preprocessing
        return input_box(pre.resize, size[0], size[1], pre.size, pre.presize)

    # -- prediction -----------------------------------------------------------------------

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw model outputs for a normalized N×3×S×S batch (inference mode)."""
        import torch

        with torch.inference_mode():
            return self.model(batch.to(self.device)).float().cpu()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax for single-label models, per-class sigmoid for multi-label ones."""
        import torch

        if self.multi_label:
            return torch.sigmoid(logits.float())
        return torch.softmax(logits.float(), dim=-1)

    def predict(self, source: str | Path | Image.Image, topk: int = 5) -> Prediction:
        """Predict one image (a path or an already-loaded PIL image)."""
        prepared = self.prepare(source)
        probs = self.probabilities(self.logits(prepared.tensor.unsqueeze(0)))[0]
        return self.make_prediction(probs, prepared.path, topk)

    def predict_many(
        self,
        paths: Sequence[str | Path],
        *,
        batch_size: int = 16,
        topk: int = 5,
        on_event: EventCallback = ignore_event,
        cancel: CancelToken | None = None,
    ) -> list[Prediction]:
        """Predict many images in batches; a file that cannot be read raises its error.

        For folders where a bad file should not stop the run, use :meth:`iter_batches`
        (``loupe.engine.inference.folder`` does).
        """
        results: list[Prediction] = []
        for outcome in self.iter_batches(
            paths, batch_size=batch_size, topk=topk, on_event=on_event, cancel=cancel
        ):
            if isinstance(outcome.result, Exception):
                raise outcome.result
            results.append(outcome.result)
        return results

    def iter_batches(
        self,
        paths: Sequence[str | Path],
        *,
        batch_size: int = 16,
        topk: int = 5,
        on_event: EventCallback = ignore_event,
        cancel: CancelToken | None = None,
        task: str = "predict",
    ) -> Iterator[BatchOutcome]:
        """Yield one :class:`BatchOutcome` per path, in order, checking cancel per batch.

        A file that fails to load yields its ``LoupeError`` instead of a prediction, so one
        broken image does not stop a folder of thousands. Images are decoded by a few
        threads (Pillow releases the GIL), and the next batch decodes while the model runs
        on this one.
        """
        if batch_size < 1:
            raise ConfigError(f"batch size must be 1 or more, got {batch_size}")
        chunks = [
            [Path(p) for p in paths[start : start + batch_size]]
            for start in range(0, len(paths), batch_size)
        ]
        on_event(Started(task, total=len(paths)))
        done = 0
        pool = ThreadPoolExecutor(max_workers=_loader_threads(), thread_name_prefix="loupe-load")
        with pool:
            upcoming = [pool.submit(self._prepare_or_error, p) for p in chunks[0]] if chunks else []
            for index, chunk in enumerate(chunks):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                loaded = [future.result() for future in upcoming]
                if index + 1 < len(chunks):
                    upcoming = [pool.submit(self._prepare_or_error, p) for p in chunks[index + 1]]
                yield from self._run_batch(chunk, loaded, topk)
                done += len(chunk)
                on_event(Progress(task, done, len(paths)))
        on_event(Finished(task, {"count": len(paths)}))

    def _prepare_or_error(self, path: Path) -> torch.Tensor | Exception:
        from loupe.engine.core.errors import LoupeError

        try:
            return self.prepare(path).tensor
        except LoupeError as err:
            return err

    def _run_batch(
        self, chunk: list[Path], loaded: list[torch.Tensor | Exception], topk: int
    ) -> Iterator[BatchOutcome]:
        import torch

        tensors = [x for x in loaded if not isinstance(x, Exception)]
        probs = self.probabilities(self.logits(torch.stack(tensors))) if tensors else None
        row = 0
        for path, item in zip(chunk, loaded, strict=True):
            if isinstance(item, Exception):
                yield BatchOutcome(path, item)
                continue
            assert probs is not None
            yield BatchOutcome(path, self.make_prediction(probs[row], path, topk))
            row += 1

    def make_prediction(self, probs: torch.Tensor, path: Path | None, topk: int) -> Prediction:
        """Turn one row of probabilities into a :class:`Prediction` (top-k, unknown)."""
        if topk < 1:
            raise ConfigError(f"top-k must be 1 or more, got {topk}")
        values = [float(v) for v in probs.tolist()]
        by_class = dict(zip(self.classes, values, strict=True))
        ranked = sorted(by_class.items(), key=lambda kv: kv[1], reverse=True)
        if self.multi_label:
            top = tuple((c, p) for c, p in ranked if p >= self.thresholds[c])
            return Prediction(path, top, False, by_class, multi_label=True)
        unknown = is_unknown(ranked[0][1], self.unknown_below)
        return Prediction(path, tuple(ranked[:topk]), unknown, by_class)


def is_unknown(top_probability: float, threshold: float | None) -> bool:
    """The "unknown" rule of single-label models: the most likely class is less likely
    than the user's threshold (None: the rule is off)."""
    return threshold is not None and top_probability < threshold


def _upright_rgb(image: Image.Image) -> Image.Image:
    """An in-memory image as the loader would give it: EXIF orientation applied, RGB."""
    from PIL import ImageOps

    from loupe.engine.data.imageio import to_rgb

    try:
        orientation = int(image.getexif().get(0x0112, 1) or 1)
    except Exception:  # broken EXIF must not make a good image unusable
        orientation = 1
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    return to_rgb(image)


@dataclass(frozen=True)
class BatchOutcome:
    """One image's result in a batched run: a :class:`Prediction` or the error it raised."""

    path: Path
    result: Prediction | Exception


def _loader_threads() -> int:
    """Decode threads for batched prediction: a few, never more than the cores."""
    return max(1, min(4, os.cpu_count() or 1))


def _resolve_thresholds(
    thresholds: Mapping[str, float] | Sequence[float] | float | None,
    classes: tuple[str, ...],
) -> dict[str, float]:
    """Per-class thresholds for multi-label models, from whatever form the bundle stores."""
    if thresholds is None:
        values = {c: DEFAULT_MULTI_LABEL_THRESHOLD for c in classes}
    elif isinstance(thresholds, int | float):
        values = {c: float(thresholds) for c in classes}
    elif isinstance(thresholds, Mapping):
        unknown = sorted(set(thresholds) - set(classes))
        if unknown:
            raise ConfigError(
                f"thresholds name classes the model does not have: {', '.join(unknown)}; "
                f"classes are: {', '.join(classes)}"
            )
        values = {c: float(thresholds.get(c, DEFAULT_MULTI_LABEL_THRESHOLD)) for c in classes}
    else:
        listed = [float(t) for t in thresholds]
        if len(listed) != len(classes):
            raise ConfigError(
                f"{len(listed)} thresholds for {len(classes)} classes; give one per class"
            )
        values = dict(zip(classes, listed, strict=True))
    for name, value in values.items():
        if not (0.0 <= value <= 1.0) or math.isnan(value):
            raise ConfigError(f"threshold for class {name!r} must be in 0..1, got {value}")
    return values


def _check_unknown_below(value: float | None) -> float | None:
    if value is None:
        return None
    if not (0.0 < value <= 1.0):
        raise ConfigError(
            f"the 'unknown' threshold must be a probability in (0, 1], got {value}"
        )
    return float(value)


def _resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU (loupe.engine.core.device decides)."""
    from loupe.engine.core.device import resolve_device

    return resolve_device(device).device
