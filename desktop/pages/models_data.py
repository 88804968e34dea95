"""The Models page's non-widget half: reading runs, copying bundles, exporting, plotting.

Each function that touches files or the model is a worker body (it takes ``on_event``
and ``cancel`` because loupe.desktop.workers passes them), so the page only wires results to
widgets.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loupe.desktop.widgets.mpl_canvas import MplCanvas
from loupe.engine.core.formats import BUNDLE_SUFFIX

ONNX_INSTALL_HINT = (
    "ONNX export needs the optional packages 'onnx' and 'onnxruntime'.\n\n"
    "Install them into the Python that runs Loupe with:\n\n"
    f"    {sys.executable} -m pip install onnx onnxruntime\n\n"
    "or, in a source checkout:  .venv/bin/pip install '.[onnx]'\n\n"
    "then choose Export ONNX again (no restart needed)."
)
BUNDLE_FILTER = f"Loupe models (*{BUNDLE_SUFFIX});;All files (*)"


@dataclass(frozen=True)
class RunSummary:
    """One run as the runs list shows it (read from the run folder by a worker)."""

    run_id: str
    path: Path
    arch: str
    status: str
    bundle: Path | None
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    size: int = 0  # bytes on disk (checkpoint, bundle, logs)
    checkpoint: bool = False  # a finished epoch to use or resume from
    total_epochs: int | None = None

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def usable(self) -> bool:
        """Its model can be used: a bundle on disk, or a checkpoint to make one from."""
        return (self.bundle is not None and self.bundle.is_file()) or self.checkpoint

    @property
    def resumable(self) -> bool:
        return not self.finished and self.checkpoint

    @property
    def status_text(self) -> str:
        """'finished', 'stopped at 2/5' (epochs), 'failed at 1/5', 'stopped, no epoch'."""
        if self.finished or self.status in ("unknown", "unreadable"):
            return self.status
        word = "stopped" if self.status == "cancelled" else self.status
        of = f"/{self.total_epochs}" if self.total_epochs else ""
        return f"{word} at {self.epochs}{of}" if self.epochs else f"{word}, no epoch"

    @property
    def started(self) -> str:
        """When the run started, from its id (``YYYYMMDD-HHMMSS-arch-xxxxxx``, UTC)."""
        stamp = self.run_id[:15]
        if len(stamp) == 15 and stamp[8] == "-" and stamp.replace("-", "").isdigit():
            return (f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]} "
                    f"{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}")
        return self.run_id

    @property
    def label(self) -> str:
        """Short name for legends: architecture and start time."""
        return f"{self.arch} {self.started[5:]}"

    @property
    def epochs(self) -> int:
        return len(self.history)

    def last(self, key: str) -> float | None:
        values = [row[key] for row in self.history if isinstance(row.get(key), int | float)]
        return float(values[-1]) if values else None


def load_run_summaries(*, on_event=None, cancel=None) -> list[RunSummary]:  # noqa: ANN001
    """Every run under the user data dir, newest first (run ids start with a UTC stamp)."""
    from loupe.engine.core import paths
    from loupe.engine.core.errors import ConfigError
    from loupe.engine.training import runs
    from loupe.engine.training.run_admin import disk_size

    summaries: list[RunSummary] = []
    for run_dir in sorted(paths.runs_dir().iterdir(), reverse=True):
        if cancel is not None:
            cancel.raise_if_cancelled()
        if not (run_dir / "config.json").is_file():
            continue
        try:
            config = runs.read_json(run_dir, "config.json")
            record = runs.read_record(run_dir)
            history = tuple(runs.read_metrics(run_dir))
        except (ConfigError, ValueError, OSError):
            summaries.append(RunSummary(run_dir.name, run_dir, "?", "unreadable", None,
                                        size=disk_size(run_dir)))
            continue
        bundle = record.get("bundle")
        total = _total_epochs(run_dir, config)
        summaries.append(
            RunSummary(
                run_id=run_dir.name,
                path=run_dir,
                arch=str(config.get("arch", "?")) if isinstance(config, dict) else "?",
                status=str(record.get("status", "unknown")),
                bundle=Path(bundle) if isinstance(bundle, str) and bundle else None,
                history=history,
                size=disk_size(run_dir),
                checkpoint=(run_dir / runs.CHECKPOINT).is_file(),
                total_epochs=total,
            )
        )
    return summaries


def _total_epochs(run_dir: Path, config: Any) -> int | None:
    """Epochs the run was set to do: its checkpoint says (fine_tune's frozen epochs
    included, none from random init); before one, the config's estimate."""
    import json

    try:
        total = json.loads((run_dir / "checkpoint.json").read_text(encoding="utf-8"))
        if isinstance(total.get("total_epochs"), int):
            return int(total["total_epochs"])
    except (OSError, ValueError, AttributeError):
        pass
    if not isinstance(config, dict) or not isinstance(config.get("epochs"), int):
        return None
    frozen = config.get("freeze_epochs", 0)
    scratch = config.get("pretrained") == "none"
    return config["epochs"] + (frozen if isinstance(frozen, int) and not scratch else 0)


def use_run_model(run_dir: Path, *, on_event=None, cancel=None) -> Path:  # noqa: ANN001
    """Worker body: the run's bundle, made from its best finished epoch if it stopped."""
    from loupe.engine.core.events import ignore_event
    from loupe.engine.training.salvage import salvage_bundle

    return salvage_bundle(run_dir, on_event=on_event or ignore_event, cancel=cancel)


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies under ``folder`` (the loaded model in a run folder)."""
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except OSError:
        return False


def delete_question(runs: Sequence[RunSummary], model: Path | None) -> str:
    """What deleting ``runs`` means: what goes, the space it frees, what stays."""
    from loupe.engine.training.run_admin import format_size

    size = format_size(sum(run.size for run in runs))
    what = (f"the run of {runs[0].started} ({runs[0].arch}, {runs[0].status_text})"
            if len(runs) == 1 else f"{len(runs)} runs")
    in_use = model is not None and any(inside(model, run.path) for run in runs)
    return (f"Delete {what}? This frees {size}: the checkpoint, model and logs in Loupe's "
            "runs folder. Your images are not touched."
            + ("\n\nThe model loaded now comes from this run; it will be unloaded."
               if in_use else ""))


def delete_run_files(run_dir: Path, project_root: Path | None, model: Path | None, *,
                     on_event=None, cancel=None) -> int:  # noqa: ANN001
    """Worker body: delete the run folder (engine rules), and forget its model in the
    project's record. Returns the bytes freed."""
    from loupe.engine.core.events import ignore_event
    from loupe.engine.data.project_model import forget_model
    from loupe.engine.training.run_admin import delete_run

    freed = delete_run(run_dir, on_event=on_event or ignore_event, cancel=cancel)
    if project_root is not None and model is not None:
        forget_model(project_root, model)
    return freed


def copy_bundle(source: Path, target: Path, *, on_event=None, cancel=None) -> Path:  # noqa: ANN001
    """Copy a bundle atomically (temp file + rename) so the target is never half-written."""
    from loupe.engine.core.atomic import atomic_write_bytes
    from loupe.engine.core.errors import ModelFileError

    if source.resolve() == target.resolve():
        return target
    try:
        data = source.read_bytes()
    except OSError as err:
        raise ModelFileError(f"cannot read the model file {source}: {err.strerror}") from err
    if cancel is not None:
        cancel.raise_if_cancelled()
    return atomic_write_bytes(target, data)


def training_summary(path: Path, *, on_event=None, cancel=None) -> str:  # noqa: ANN001
    """One line about how the bundle was trained, from its metadata (header only)."""
    from loupe.engine.models.bundle import read_bundle_meta

    meta = read_bundle_meta(path)
    training = meta.training
    parts = []
    if isinstance(training.get("epochs_run", training.get("epochs")), int):
        parts.append(f"trained {training.get('epochs_run', training.get('epochs'))} epoch(s)")
    final = training.get("final_metrics") or {}
    if isinstance(final, dict):
        parts.extend(f"{key} {final[key]:.4f}" for key in ("error_rate", "valid_loss")
                     if isinstance(final.get(key), int | float))
    for key, name in (("label_rule", "labels"), ("pretrained", "weights")):
        if training.get(key):
            parts.append(f"{name}: {training[key]}")
    if meta.versions.get("loupe"):
        parts.append(f"Loupe {meta.versions['loupe']}, torch {meta.versions.get('torch', '?')}")
    return " · ".join(parts)


def onnx_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def export_with_parity(predictor: Any, target: Path, check_images: Sequence[Path] = (), *,
                       on_event=None, cancel=None) -> Any:  # noqa: ANN001
    """Worker body: ``engine.inference.export.export_onnx``, checked on real validation
    images if any."""
    from loupe.desktop.pages.model_use import using_model
    from loupe.engine.core.events import ignore_event
    from loupe.engine.inference.export import export_onnx

    with using_model(predictor, cancel):
        return export_onnx(predictor, target, check_images=tuple(check_images),
                           on_event=on_event or ignore_event)


def plot_runs(canvas: MplCanvas, summaries: Sequence[RunSummary]) -> None:
    """Loss curves (train dashed, valid solid) and error rate, one colour per run."""
    canvas.clear()
    fig = canvas.figure
    loss_ax = fig.add_subplot(1, 2, 1)
    err_ax = fig.add_subplot(1, 2, 2)
    from matplotlib.ticker import MaxNLocator

    for ax, title in ((loss_ax, "Loss"), (err_ax, "Error rate")):
        canvas.style_axes(ax)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    if not summaries:
        loss_ax.text(0.5, 0.5, "Select a run", ha="center", va="center",
                     transform=loss_ax.transAxes, color=canvas.foreground())
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    for i, run in enumerate(summaries):
        colour = colours[i % len(colours)]
        xs = list(range(1, run.epochs + 1))
        short = run.label
        for key, style in (("train_loss", "--"), ("valid_loss", "-")):
            ys = [row.get(key) for row in run.history]
            if any(isinstance(y, int | float) for y in ys):
                loss_ax.plot(xs, ys, style, color=colour, marker="o", markersize=3,
                             label=f"{short} {key.split('_')[0]}")
        errs = [row.get("error_rate") for row in run.history]
        if any(isinstance(y, int | float) for y in errs):
            err_ax.plot(xs, errs, "-", color=colour, marker="o", markersize=3, label=short)
    longest = max((run.epochs for run in summaries), default=0)
    for ax in (loss_ax, err_ax):
        if longest:
            # Whole epochs only: around a single point the automatic limits (0.945 …
            # 1.055) held one integer, below the locator's minimum of two, so the ticks
            # became overlapping decimals.
            ax.set_xlim(0.75, longest + 0.25)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    canvas.redraw()
