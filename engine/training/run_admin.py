"""Looking after run folders: their size on disk, deleting them safely, and naming models.

A small run keeps a checkpoint (weights plus optimizer moments, about three times the
model) and a bundle; five runs of a ResNet-18 took 641 MB. The desktop lists each run's
size and deletes a run on request; what may be deleted is decided here, not in the GUI:
only a folder that is itself a run under Loupe's runs folder, never while it trains, and
never anything else (a bundle saved elsewhere with ``--out``, the user's images).

Models get names people can tell apart: "pets · resnet18 · 27 Nov 2026 · 94.1% accuracy"
to show, ``pets-resnet18-2026-11-27-acc94.1.loupe`` to save as, both from the bundle's
metadata (architecture, run id, final metrics) and the run's data folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from loupe.engine.core import paths
from loupe.engine.core.errors import ConfigError
from loupe.engine.core.events import CancelToken, EventCallback, ignore_event
from loupe.engine.core.formats import BUNDLE_SUFFIX
from loupe.engine.core.outputs import is_inside

# ``runs`` (and with it torch) is imported inside the functions that need it: the desktop
# imports this module for :func:`format_size` while its window is built, before torch.


def disk_size(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links are not followed)."""
    total = 0
    for base, dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            try:
                info = os.lstat(os.path.join(base, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(base, name)):
                total += info.st_size
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(base, d))]
    return total


def format_size(size: int) -> str:
    """'134 MB', '1.2 GB', '512 KB' (powers of 1024, as file managers show)."""
    units = ("bytes", "KB", "MB", "GB", "TB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{int(value)} bytes"
    return f"{value:.0f} {units[unit]}" if value >= 100 else f"{value:.1f} {units[unit]}"


def run_root(run_dir: Path) -> Path | None:
    """The image folder a run trained on (its data.json), or None if unreadable."""
    try:
        data = json.loads((Path(run_dir) / "data.json").read_text(encoding="utf-8"))
        return Path(data["root"]) if isinstance(data.get("root"), str) else None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def delete_run(
    run: str | Path,
    *,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> int:
    """Delete the run folder ``run`` (a folder or a run id); return the bytes freed.

    Refused (ConfigError) for anything that is not a run folder directly under the runs
    folder, or whose image folder lies inside it; refused (TrainingError) while a
    process trains the run. A bundle the run saved elsewhere (``--out``) is kept.
    """
    from loupe.engine.training import runs

    run_dir = runs.find_run(run)
    home = paths.runs_dir()
    if run_dir.resolve().parent != home.resolve() or run_dir.is_symlink():
        raise ConfigError(f"{run_dir} is not a run folder under {home}; nothing was deleted")
    root = run_root(run_dir)
    if root is not None and is_inside(root, run_dir):
        raise ConfigError(
            f"the image folder {root} lies inside the run folder {run_dir}; nothing was deleted"
        )
    if cancel is not None:
        cancel.raise_if_cancelled()
    size = disk_size(run_dir)
    # Held while deleting: a resume cannot start on a half-deleted run, and a run being
    # trained raises TrainingError here instead of losing its folder mid-epoch.
    lock = runs.RunLock(run_dir).acquire()
    try:
        shutil.rmtree(run_dir)
    finally:
        lock.release()  # its file is gone with the folder; the descriptor still closes
    return size


# --- names ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelName:
    """How a model is shown ("pets · resnet18 · 27 Nov 2026 · 94.1% accuracy") and the
    file name suggested when saving it."""

    title: str
    file_name: str


def _run_date(run_id: str) -> date | None:
    stamp = run_id[:8]
    try:
        return date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]))
    except ValueError:
        return None


def _accuracy(training: Mapping[str, Any]) -> float | None:
    final = training.get("final_metrics")
    if not isinstance(final, Mapping):
        return None
    for key in ("accuracy", "accuracy_multi"):
        value = final.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    error = final.get("error_rate")
    if isinstance(error, int | float) and math.isfinite(error):
        return 1.0 - float(error)
    return None


def _safe(text: str) -> str:
    kept = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.strip())
    return "-".join(part for part in kept.split("-") if part)[:60]


def model_name(arch: str, training: Mapping[str, Any], project: str | None,
               fallback: str = "model") -> ModelName:
    """Name a model from its bundle's architecture and ``training`` block.

    ``project`` is the name of the image folder it was trained on (None: unknown);
    ``fallback`` stands in when nothing is known (an imported bundle without a summary).
    """
    run_id = str(training.get("run_id") or "")
    when = _run_date(run_id)
    accuracy = _accuracy(training)
    parts = [p for p in (project, arch) if p]
    if when is not None:
        parts.append(f"{when.day} {when:%b %Y}")
    if accuracy is not None:
        parts.append(f"{accuracy:.1%} accuracy")
    if training.get("stopped_early") and isinstance(training.get("epochs_run"), int):
        total = training.get("total_epochs")
        of = f" of {total}" if isinstance(total, int) else ""
        parts.append(f"stopped at epoch {training['epochs_run']}{of}")
    if not parts:
        parts = [fallback]
    file_parts = [_safe(p) for p in (project, arch) if p]
    if when is not None:
        file_parts.append(when.isoformat())
    if accuracy is not None:
        file_parts.append(f"acc{accuracy * 100:.1f}")
    stem = "-".join(p for p in file_parts if p) or _safe(fallback) or "model"
    return ModelName(" · ".join(parts), stem + BUNDLE_SUFFIX)


def bundle_name(path: Path | str) -> ModelName:
    """The name of the bundle at ``path`` (reads its header, and its run's data.json)."""
    from loupe.engine.models.bundle import read_bundle_meta

    path = Path(path)
    meta = read_bundle_meta(path)
    training = meta.training
    project = None
    run_dir = training.get("run_dir")
    if isinstance(run_dir, str) and run_dir:
        root = run_root(Path(run_dir))
        project = root.name if root is not None else None
    fallback = path.stem if path.stem != "model" else (meta.arch or "model")
    return model_name(meta.arch, training, project, fallback=fallback)
