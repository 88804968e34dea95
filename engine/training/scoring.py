"""Score a saved bundle on the validation set, or — only when asked — the locked test set.

:func:`score_items` scores labelled images with a model's own preprocessing through the one
scoring pass training validates with (:func:`loupe.engine.training.loop.score`); ``evaluate``
and the error analysis (``loupe.engine.evaluation.analysis``) both use it, so a saved model
scores its validation set exactly as its training's last epoch did.

The test set exists to give one honest number at the end. Every look at it is counted
(in the run record when the bundle's run folder is on this machine, else in a per-bundle
record in the data dir) and a second look is flagged: choosing models by their test score
turns the test set into another validation set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from loupe.engine.core import paths
from loupe.engine.core.atomic import atomic_write_json
from loupe.engine.core.device import DeviceInfo, resolve_device
from loupe.engine.core.errors import ConfigError, DatasetError
from loupe.engine.core.events import CancelToken, EventCallback, WarningEvent, ignore_event
from loupe.engine.training import runs
from loupe.engine.training.batches import BatchLoader
from loupe.engine.training.loop import Scores, channel_stats, score
from loupe.engine.training.report import build_report
from loupe.engine.training.setup import build_targets

if TYPE_CHECKING:
    from loupe.engine.data.cache import ImageCache
    from loupe.engine.data.transforms import Preprocessing


@dataclass(frozen=True)
class EvaluationResult:
    """Scores of one bundle on one set; ``test_looks`` counts looks at the test set."""

    bundle_path: Path
    split: str
    n_images: int
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    confusion: list[list[int]] | None
    top_losses: list[dict[str, Any]]
    test_looks: int | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": str(self.bundle_path), "split": self.split, "n_images": self.n_images,
            "metrics": self.metrics, "per_class": self.per_class, "confusion": self.confusion,
            "top_losses": self.top_losses, "test_looks": self.test_looks,
            "warnings": list(self.warnings),
        }


def evaluate(
    bundle_path: Path | str,
    prepared: Any,
    *,
    test: bool = False,
    device: str = "auto",
    batch_size: int = 32,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> EvaluationResult:
    """Score ``bundle_path`` on ``prepared``'s valid set, or its test set if ``test``."""
    from loupe.engine.models.bundle import load_bundle

    bundle_path = Path(bundle_path)
    loaded = load_bundle(bundle_path)
    meta = loaded.meta
    split = "test" if test else "valid"
    items = prepared.plan.test if test else prepared.plan.valid
    if not items:
        hint = " (make one with --test-fraction, e.g. 0.1)" if test else ""
        raise DatasetError(f"the {split} set of {prepared.spec.root} is empty{hint}")
    _check_classes(items, meta.classes, bundle_path)
    scores = score_items(
        loaded.model, meta.preprocessing, items, meta.classes, multi_label=meta.multi_label,
        device=resolve_device(device), batch_size=batch_size, cancel=cancel,
    )
    thresholds = meta.thresholds or (0.5,) * len(meta.classes)
    report = build_report(
        scores, items, meta.classes, multi_label=meta.multi_label, thresholds=thresholds
    )
    metrics = dict(report["metrics"])
    metrics["loss"] = metrics.pop("valid_loss", float("nan"))
    looks: int | None = None
    warnings: tuple[str, ...] = ()
    if test:
        looks = record_test_look(bundle_path, meta.training)
        if looks is None:
            message = (
                f"test-set look not counted: {bundle_path} names the run folder "
                f"{_foreign_run_dir(meta.training)}, which is not one of Loupe's runs here"
            )
            warnings = (message,)
            on_event(WarningEvent("test-looks-not-counted", message))
        elif looks > 1:
            message = (
                f"the test set has now been looked at {looks} times with this model; "
                "only the first look is an unbiased estimate — use the validation set to "
                "compare models"
            )
            warnings = (message,)
            on_event(WarningEvent("test-set-reused", message))
    return EvaluationResult(
        bundle_path=bundle_path, split=split, n_images=len(items), metrics=metrics,
        per_class=report["per_class"], confusion=report["confusion"],
        top_losses=report["top_losses"], test_looks=looks, warnings=warnings,
    )


def _check_classes(items: Any, classes: tuple[str, ...], bundle_path: Path) -> None:
    unknown = sorted({label for li in items for label in li.labels} - set(classes))
    if unknown:
        raise DatasetError(
            f"model {bundle_path.name} does not know the class(es) {', '.join(unknown)}; "
            f"it was trained on: {', '.join(classes)}"
        )


def image_cache_for(preprocessing: Preprocessing, cache: ImageCache | None = None) -> ImageCache:
    """``cache`` when its images are made as ``preprocessing`` makes them (same presize and
    resize method), else a new cache that makes them so: another method's is never read."""
    from loupe.engine.data.cache import ImageCache

    pre = preprocessing
    if cache is not None and (cache.presize, cache.resize) == (pre.presize, pre.resize):
        return cache
    return ImageCache(pre.presize, resize=pre.resize)


def score_items(
    model: nn.Module,
    preprocessing: Preprocessing,
    items: Sequence[Any],
    classes: Sequence[str],
    *,
    multi_label: bool,
    device: DeviceInfo,
    batch_size: int = 32,
    cache: ImageCache | None = None,
    cancel: CancelToken | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Scores:
    """Per-sample logits, targets and losses of the LabelledItems ``items``, in order.

    The images go through exactly ``preprocessing`` (a bundle's, or a predictor's), from
    ``cache`` when it was made that way (:func:`image_cache_for`), in batches of
    ``batch_size``; the model runs on ``device`` as training runs it (:func:`loop.score`).
    """
    pre = preprocessing
    cache = image_cache_for(pre, cache)
    targets = build_targets(items, classes, multi_label)
    loader = BatchLoader(cache.get, items, targets, batch_size=batch_size, train=False,
                         eval_presize=pre.presize, resize=pre.resize)
    return score(
        model.to(device.device), loader, pre.size, device=device,
        mean=channel_stats(pre.mean, device), std=channel_stats(pre.std, device),
        multi_label=multi_label, cancel=cancel, on_batch=on_batch,
    )


def _looks_run_dir(training: dict[str, Any]) -> Path | None:
    """The bundle's run folder when it is a real run of this machine (the count lives there).

    The path comes from the model file, which is not trusted: only a folder that resolves
    inside ``paths.runs_dir()`` and holds a config.json is ever written to.
    """
    named = _named_run_dir(training)
    return named if named is not None and _is_own_run(named) else None


def _named_run_dir(training: dict[str, Any]) -> Path | None:
    value = training.get("run_dir") if isinstance(training, dict) else None
    return Path(value) if isinstance(value, str) and value and "\0" not in value else None


def _is_own_run(run_dir: Path) -> bool:
    try:
        inside = run_dir.resolve().is_relative_to(paths.runs_dir().resolve())
        return inside and (run_dir / "config.json").is_file()
    except (OSError, ValueError):
        return False


def _foreign_run_dir(training: dict[str, Any]) -> Path | None:
    """A run folder the bundle names that exists here but is not one of Loupe's runs."""
    named = _named_run_dir(training)
    if named is None or _is_own_run(named):
        return None
    try:
        return named if named.exists() else None
    except (OSError, ValueError):
        return named


def _looks_record(bundle_path: Path) -> Path:
    """Where looks are counted for a bundle whose run folder is not on this machine."""
    from loupe.engine.core.digest import sha256_file

    return paths.data_dir() / "test_looks" / f"{sha256_file(bundle_path)}.json"


def test_looks(bundle_path: Path, **_worker_kwargs: Any) -> int:
    """How many times the test set was evaluated with this bundle, without counting one.

    Reads where :func:`record_test_look` writes; a missing or unreadable record counts
    as 0. Extra keyword arguments (``on_event``/``cancel`` from a GUI worker) are ignored:
    this is a couple of small file reads.
    """
    from loupe.engine.models.bundle import read_bundle_meta

    bundle_path = Path(bundle_path)
    training = read_bundle_meta(bundle_path).training
    run_dir = _looks_run_dir(training)
    if run_dir is not None:
        return int(runs.read_record(run_dir).get("test_looks", 0))
    if _foreign_run_dir(training) is not None:
        return 0  # looks are not counted for such a model (see record_test_look)
    record = _looks_record(bundle_path)
    if not record.is_file():
        return 0
    try:
        return int(runs.read_json(record.parent, record.name).get("test_looks", 0))
    except (ConfigError, ValueError, OSError, AttributeError):
        return 0


# A library function, not a pytest test (its name starts with "test").
test_looks.__test__ = False  # type: ignore[attr-defined]


def record_test_look(bundle_path: Path, training: dict[str, Any]) -> int | None:
    """Count one more look at the test set; return the new total.

    The count goes into the bundle's run record (run.json) when that run folder is one of
    Loupe's runs here, else into ``data_dir()/test_looks/<sha256 of the bundle>.json``.
    A model naming an existing folder outside ``paths.runs_dir()`` (or one without a
    config.json) counts nothing and returns None: a model file never makes Loupe write
    to a folder it names.
    """
    run_dir = _looks_run_dir(training)
    if run_dir is None and _foreign_run_dir(training) is not None:
        return None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if run_dir is not None:
        record = runs.read_record(run_dir)
        looks = int(record.get("test_looks", 0)) + 1
        runs.update_record(
            run_dir, test_looks=looks, test_look_times=[*record.get("test_look_times", []), stamp]
        )
        return looks
    path = _looks_record(bundle_path)
    record = runs.read_json(path.parent, path.name) if path.is_file() else {}
    looks = int(record.get("test_looks", 0)) + 1
    atomic_write_json(
        path,
        {"bundle": str(bundle_path), "test_looks": looks,
         "test_look_times": [*record.get("test_look_times", []), stamp]},
    )
    return looks
