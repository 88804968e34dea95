"""The data pipeline in one call: scan → label rule → split.

``inspect``, ``train`` and the desktop all go through :func:`prepare_stages` (the desktop
directly, to show how far a folder got; the others through :func:`prepare_data`, which
raises where it stopped), so the three can never disagree about which file is in which
set. :func:`inspect_report` is the stable JSON that ``loupe inspect --json`` prints (shape
fixed in shared/design.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loupe.engine.core.errors import DatasetError
from loupe.engine.core.events import CancelToken, EventCallback, WarningEvent, ignore_event
from loupe.engine.core.formats import IMAGE_SUFFIXES
from loupe.engine.data.imageio import DEFAULT_MAX_PIXELS
from loupe.engine.data.labels import Labelling, LabelRule, Overrides, apply_label_rule
from loupe.engine.data.scan import ScanResult, scan_folder
from loupe.engine.data.splits import SplitPlan, SplitRule, make_split


@dataclass(frozen=True)
class DataSpec:
    """Everything that decides the data: folder, rules, overrides and the pixel limit."""

    root: Path
    label: LabelRule
    split: SplitRule
    overrides: Overrides | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())


@dataclass(frozen=True)
class PreparedData:
    spec: DataSpec
    scan: ScanResult
    labelling: Labelling
    plan: SplitPlan

    @property
    def warnings(self) -> tuple[str, ...]:
        """Labelling warnings (CSV rows, stale overrides) then split warnings."""
        return self.labelling.warnings + self.plan.warnings


def _check_root(root: Path) -> None:
    if not root.exists():
        raise DatasetError(f"folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"not a folder: {root} (give the folder that holds the images)")
    from loupe.engine.core.outputs import check_home_outside

    check_home_outside(root)  # before the scan writes its index there


@dataclass(frozen=True)
class DataStages:
    """How far scan → label rule → split got: each stage's result so far and, when a stage
    left nothing to go on with, its error; ``prepared`` when the data can be trained on."""

    spec: DataSpec
    scan: ScanResult
    labelling: Labelling | None = None
    plan: SplitPlan | None = None
    error: DatasetError | None = None
    prepared: PreparedData | None = None


def _no_labels_error(spec: DataSpec, labelling: Labelling) -> DatasetError:
    if labelling.excluded and not labelling.unmatched:
        return DatasetError(f"every image in {spec.root} is excluded by the overrides")
    reasons = sorted({u.reason for u in labelling.unmatched})
    example = f" ({reasons[0]})" if reasons else ""
    return DatasetError(
        f"label rule {spec.label.spec!r} labelled none of the {len(labelling.unmatched)} "
        f"usable images in {spec.root}{example}; try another --label rule "
        "(parent | top | upper | regex:PATTERN | csv:FILE)"
    )


def _rejected_summary(rejected) -> str:
    """`` (N file(s) rejected: a.png: empty file, ...)`` so the user knows what to fix."""
    if not rejected:
        return f" (no image files found; Loupe reads {' '.join(IMAGE_SUFFIXES)})"
    shown = "; ".join(f"{r.rel}: {r.reason}" for r in rejected[:3])
    more = f"; and {len(rejected) - 3} more" if len(rejected) > 3 else ""
    return f" ({len(rejected)} file(s) rejected: {shown}{more})"


def prepare_data(
    spec: DataSpec,
    *,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> PreparedData:
    """Scan, label and split ``spec.root``.

    Raises DatasetError only when the folder cannot be used at all (missing, no readable
    images, nothing labelled, an empty train or valid set); rejected and unlabelled files
    are reported in the result, and warnings are also sent as WarningEvent("data-...").
    """
    stages = prepare_stages(spec, on_event=on_event, cancel=cancel)
    if stages.prepared is None:
        assert stages.error is not None
        raise stages.error
    return stages.prepared


def prepare_stages(
    spec: DataSpec,
    *,
    scan: ScanResult | None = None,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> DataStages:
    """Scan ``spec.root`` (or label and split ``scan``, a scan of it made earlier) as far as
    the data allows.

    No usable image, nothing labelled or a split that cannot be made stops there, with
    the DatasetError in ``error`` and the earlier stages' results kept (the desktop shows
    them); a missing folder and a cancel still raise. Warnings of usable data are sent as
    WarningEvent("data-labels" / "data-split").
    """
    if scan is None:
        _check_root(spec.root)
        scan = scan_folder(
            spec.root, max_pixels=spec.max_pixels, on_event=on_event, cancel=cancel
        )
    if not scan.items:
        message = f"no usable images in {spec.root}{_rejected_summary(scan.rejected)}"
        return DataStages(spec, scan, error=DatasetError(message))
    labelling = apply_label_rule(scan, spec.label, spec.overrides)
    if not labelling.labelled:
        return DataStages(spec, scan, labelling, error=_no_labels_error(spec, labelling))
    if cancel is not None:
        cancel.raise_if_cancelled()
    try:
        plan = make_split(labelling, spec.split, cancel=cancel)
    except DatasetError as exc:
        return DataStages(spec, scan, labelling, error=exc)
    prepared = PreparedData(spec=spec, scan=scan, labelling=labelling, plan=plan)
    for message in labelling.warnings:
        on_event(WarningEvent("data-labels", message))
    for message in plan.warnings:
        on_event(WarningEvent("data-split", message))
    return DataStages(spec, scan, labelling, plan, prepared=prepared)


def inspect_report(prepared: PreparedData) -> dict[str, Any]:
    """The ``loupe inspect --json`` object. Paths are relative to the root (POSIX)."""
    plan = prepared.plan
    return {
        "classes": list(plan.classes),
        "counts": {
            cls: {"train": n["train"], "valid": n["valid"], "test": n["test"]}
            for cls, n in plan.counts.items()
        },
        "rejected": [{"path": r.rel, "reason": r.reason} for r in prepared.scan.rejected],
        "unlabeled": [u.item.rel for u in prepared.labelling.unmatched],
        "warnings": list(prepared.warnings),
    }
