"""Which model belongs to a project: the one last used with it, or the one the user pinned.

Reopening a folder should bring its model back, as Lobe and Create ML do, so Predict and
Results work without a trip to the Models page. The record is a small JSON file next to
the project file (``<project key>.model.json`` in the projects folder, never in the image
folder)::

    {"last": "/…/runs/20261127-…/model.loupe", "pinned": null}

It is kept apart from the project file because the project file is rewritten whole from
the project's settings on every save. :func:`project_model` answers "which model?": the
pinned one if its file still exists, else the last used one, else the newest finished
run trained on this folder (projects trained before this record existed).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loupe.engine.core import paths
from loupe.engine.core.atomic import atomic_write_json
from loupe.engine.data.project import project_file, resolve_root

RECORD_SUFFIX = ".model.json"
# Each change reads, edits and rewrites the record; the desktop makes them from worker
# threads (remember after a load, pin from a checkbox), so they take turns.
_WRITING = threading.Lock()


@dataclass(frozen=True)
class ProjectModel:
    """A project's model file and why it was chosen: "pinned", "last used" or "newest run"."""

    path: Path
    reason: str

    @property
    def pinned(self) -> bool:
        return self.reason == "pinned"


def record_path(root: Path | str) -> Path:
    project = project_file(root)
    return project.with_name(project.stem + RECORD_SUFFIX)


def read_record(root: Path | str) -> dict[str, Any]:
    """The record, or {} when there is none or it cannot be read (never raises)."""
    try:
        data = json.loads(record_path(root).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(root: Path | str, record: dict[str, Any]) -> None:
    atomic_write_json(record_path(root), {"last": record.get("last"),
                                          "pinned": record.get("pinned")})


def remember_model(root: Path | str, model: Path | str) -> None:
    """``model`` was just used with the project at ``root`` (trained, loaded, chosen)."""
    with _WRITING:
        record = read_record(root)
        record["last"] = str(Path(model).absolute())
        _write(root, record)


def pin_model(root: Path | str, model: Path | str | None) -> None:
    """Always reopen ``root`` with ``model`` (None: unpin, back to the last used one)."""
    with _WRITING:
        record = read_record(root)
        record["pinned"] = str(Path(model).absolute()) if model is not None else None
        if model is not None:
            record["last"] = record["pinned"]
        _write(root, record)


def pinned_model(root: Path | str) -> Path | None:
    pinned = read_record(root).get("pinned")
    return Path(pinned) if isinstance(pinned, str) and pinned else None


def forget_model(root: Path | str, model: Path | str) -> None:
    """Drop ``model`` from the record (its run was deleted)."""
    with _WRITING:
        record = read_record(root)
        gone = str(Path(model).absolute())
        changed = False
        for key in ("last", "pinned"):
            if record.get(key) == gone:
                record[key] = None
                changed = True
        if changed:
            _write(root, record)


def project_model(root: Path | str) -> ProjectModel | None:
    """The model to reopen the project at ``root`` with, or None (see module docstring)."""
    record = read_record(root)
    for key, reason in (("pinned", "pinned"), ("last", "last used")):
        value = record.get(key)
        if isinstance(value, str) and value and Path(value).is_file():
            return ProjectModel(Path(value), reason)
    newest = newest_run_model(root)
    return ProjectModel(newest, "newest run") if newest is not None else None


def newest_run_model(root: Path | str) -> Path | None:
    """The bundle of the newest finished run trained on ``root`` (run ids sort by time)."""
    resolved = str(resolve_root(root))
    folder = paths.runs_dir()
    for run_dir in sorted((p for p in folder.iterdir() if p.is_dir()), reverse=True):
        try:
            data = json.loads((run_dir / "data.json").read_text(encoding="utf-8"))
            record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not (isinstance(data, dict) and isinstance(record, dict)):
            continue
        if data.get("root") != resolved or record.get("status") != "finished":
            continue
        bundle = record.get("bundle")
        if isinstance(bundle, str) and bundle and Path(bundle).is_file():
            return Path(bundle)
    return None
