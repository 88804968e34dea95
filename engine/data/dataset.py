"""The data pipeline in one call: scan → label rule → split.

``inspect``, ``train`` and the desktop all go through :func:`prepare_data`, so the three
can never disagree about which file is in which set. :func:`inspect_report` is the stable
JSON that ``loupe inspect --json`` prints (shape fixed in shared/design.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loupe.engine.core.errors import DatasetError
from loupe.engine.core.events import CancelToken, EventCallback, WarningEvent, ignore_event
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


def _no_labels_error(spec: DataSpec, labelling: Labelling) -> DatasetError:
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
        return " (no image files found; Loupe reads .jpg .jpeg .png .bmp .gif .webp .tif .tiff)"
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
    _check_root(spec.root)
    scan = scan_folder(spec.root, max_pixels=spec.max_pixels, on_event=on_event, cancel=cancel)
    if not scan.items:
        raise DatasetError(f"no usable images in {spec.root}{_rejected_summary(scan.rejected)}")
    labelling = apply_label_rule(scan, spec.label, spec.overrides)
    if not labelling.labelled:
        if labelling.excluded and not labelling.unmatched:
            raise DatasetError(f"every image in {spec.root} is excluded by the overrides")
        raise _no_labels_error(spec, labelling)
    if cancel is not None:
        cancel.raise_if_cancelled()
    plan = make_split(labelling, spec.split, cancel=cancel)
    prepared = PreparedData(spec=spec, scan=scan, labelling=labelling, plan=plan)
    for message in labelling.warnings:
        on_event(WarningEvent("data-labels", message))
    for message in plan.warnings:
        on_event(WarningEvent("data-split", message))
    return prepared


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
