"""A model from a run that stopped: its last finished epoch, as an ordinary ``.loupe`` bundle.

A run that is stopped (or fails) keeps ``checkpoint.safetensors`` — model and optimizer
state of its last finished epoch — but writes no bundle: the bundle is written only when
the schedule ends. That checkpoint is a usable model: this module turns it into the same
kind of bundle a finished run writes (same architecture, classes, preprocessing and
normalization; the run's history in its ``training`` block, marked ``stopped_early``),
so the desktop and the CLI can predict with it, export it or resume the run later.

The bundle holds the weights of the run's best finished epoch (lowest validation loss):
the checkpoint carries them beside the last epoch's whenever an earlier epoch scored
better (``Session._write_checkpoint``); ``model_epoch`` in the summary says which epoch
that is, and its metrics are the bundle's. A checkpoint written before this existed has
only the last epoch's weights, which are used then. The run's files are only read, apart from
``run.json`` (the bundle's path) and the bundle written into the run folder; the run is
locked while this happens, so it cannot race a resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loupe.engine.core.errors import ModelFileError
from loupe.engine.core.events import CancelToken, EventCallback, Finished, Started, ignore_event
from loupe.engine.core.formats import BUNDLE_SUFFIX
from loupe.engine.training import runs

SALVAGED_NAME = f"model{BUNDLE_SUFFIX}"


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / runs.CHECKPOINT).is_file()


def run_bundle(run_dir: Path) -> Path | None:
    """The run's bundle if it is on disk (a finished or an already salvaged run)."""
    bundle = runs.read_record(Path(run_dir)).get("bundle")
    if isinstance(bundle, str) and bundle and Path(bundle).is_file():
        return Path(bundle)
    return None


def salvage_bundle(
    run: str | Path,
    *,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> Path:
    """The bundle of run ``run`` (a folder or a run id), written from its checkpoint if the
    run has none yet. Returns the bundle's path.

    Raises ModelFileError when the run never finished an epoch (no checkpoint) and
    TrainingError when another process is training the run right now.
    """
    from loupe.engine.training.builders import load_run_config

    run_dir = runs.find_run(run)
    existing = run_bundle(run_dir)
    if existing is not None:
        return existing
    on_event(Started("salvage", info={"run": run_dir.name}))
    with runs.RunLock(run_dir):
        existing = run_bundle(run_dir)  # written meanwhile by another process
        if existing is not None:
            return existing
        if not has_checkpoint(run_dir):
            raise ModelFileError(
                f"run {run_dir.name} stopped before finishing its first epoch, so it has no "
                "model to use; resume it or train again"
            )
        model_state, _optimizer, scalars = runs.load_checkpoint(run_dir)
        model_state, used = _best_weights(model_state, scalars)
        if cancel is not None:
            cancel.raise_if_cancelled()
        path = _write_bundle(run_dir, load_run_config(run_dir), model_state, scalars, used)
        runs.update_record(run_dir, bundle=str(path), salvaged_epoch=used)
    on_event(Finished("salvage", result={"model": str(path)}))
    return path


def _best_weights(model_state: dict, scalars: dict) -> tuple[dict, int]:
    """The weights of the run's best finished epoch (lowest validation loss) and its
    number: the checkpoint carries them beside the last epoch's when they differ."""
    history = list(scalars.get("history", []))
    best = scalars.pop("best_model", None)
    epoch = scalars.get("best_epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        return model_state, len(history)
    if 1 <= epoch < len(history) and isinstance(best, dict) and best:
        return best, epoch
    return model_state, len(history)


def _write_bundle(
    run_dir: Path, config: Any, model_state: dict, scalars: dict, used: int
) -> Path:
    from loupe.engine.data.transforms import Preprocessing
    from loupe.engine.models.bundle import BundleMeta, save_bundle
    from loupe.engine.models.factory import create_model

    manifest = runs.read_json(run_dir, "manifest.json")
    classes = tuple(str(name) for name in manifest["classes"])
    multi_label = bool(manifest.get("multi_label", False))
    model = create_model(config.arch, len(classes))
    model.load_state_dict(model_state)
    model.eval()
    meta = BundleMeta(
        arch=config.arch, classes=classes,
        preprocessing=Preprocessing.for_size(
            config.size, tuple(scalars["mean"]), tuple(scalars["std"]), resize=config.resize
        ),
        multi_label=multi_label,
        thresholds=(0.5,) * len(classes) if multi_label else None,
        training=_summary(run_dir, config, manifest, scalars, used),
    )
    return save_bundle(run_dir / SALVAGED_NAME, model, meta)


def _summary(
    run_dir: Path, config: Any, manifest: dict, scalars: dict, used: int
) -> dict[str, Any]:
    """The bundle's ``training`` block, as ``report.training_summary`` writes it for a
    finished run, from what the run folder kept (no validation pass: the run's last
    epoch already scored it)."""
    from loupe.engine.data.labels import LabelRule
    from loupe.engine.data.splits import SplitRule

    history = list(scalars.get("history", []))
    label_rule: str | None
    split_rule: str | None
    try:
        data = runs.read_json(run_dir, "data.json")
        label_rule = LabelRule.from_json(data["label"]).spec
        split_rule = SplitRule.from_json(data["split"]).spec
    except Exception:  # noqa: BLE001 - an old or damaged data.json leaves these out
        label_rule = split_rule = None
    record = runs.read_record(run_dir)
    return {
        "epochs": config.epochs,
        "freeze_epochs": config.freeze_epochs,
        "epochs_run": len(history),
        "total_epochs": scalars.get("total_epochs"),
        "stopped_early": True,
        "stopped": record.get("status", "stopped"),
        "best_epoch": runs.best_epoch(history),
        "model_epoch": used,  # the epoch whose weights this bundle holds
        "final_metrics": dict(history[used - 1]) if history else {},
        "history": history,
        "label_rule": label_rule,
        "split_rule": split_rule,
        "seed": config.seed,
        "lr": config.max_lr,
        "batch_size": scalars.get("batch_size"),
        "pretrained": scalars.get("pretrained"),
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        "n_train": len(manifest.get("train", [])),
        "n_valid": len(manifest.get("valid", [])),
    }
