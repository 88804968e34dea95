"""A project: one image folder plus how to label, split and train it, saved as JSON.

Projects live under ``paths.projects_dir()``, one file per folder named by a hash of the
resolved folder path, never inside the image folder (users' folders are read-only to
us). A damaged project file must not lock a user out of their folder, so loading one
returns defaults plus a warning instead of raising, and keeps a copy of the bad file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loupe.engine.core import paths
from loupe.engine.core.atomic import atomic_write_bytes, atomic_write_json
from loupe.engine.core.errors import ConfigError, LoupeError
from loupe.engine.core.text import text_bytes
from loupe.engine.data.labels import LabelRule, Overrides
from loupe.engine.data.splits import SplitRule

PROJECT_FORMAT = 1
RECENT_FILE = "recent.json"
RECENT_LIMIT = 20


def resolve_root(root: Path | str) -> Path:
    return Path(root).expanduser().resolve()


def project_file(root: Path | str) -> Path:
    """Where the project for ``root`` is stored: keyed by a hash of the resolved path."""
    key = hashlib.sha256(text_bytes(str(resolve_root(root)))).hexdigest()[:20]
    return paths.projects_dir() / f"{key}.json"


@dataclass
class Project:
    """Settings for one folder. ``training`` is free-form (arch, epochs, size, ...)."""

    root: Path
    label: LabelRule = field(default_factory=lambda: LabelRule("parent"))
    split: SplitRule = field(default_factory=SplitRule)
    overrides: Overrides = field(default_factory=Overrides)
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = resolve_root(self.root)

    @property
    def name(self) -> str:
        return self.root.name or str(self.root)

    @property
    def path(self) -> Path:
        return project_file(self.root)

    def data_spec(self, **kwargs: Any):
        """The :class:`loupe.engine.data.dataset.DataSpec` for this project (kwargs: max_pixels)."""
        from loupe.engine.data.dataset import DataSpec

        return DataSpec(self.root, self.label, self.split, self.overrides, **kwargs)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROJECT_FORMAT,
            "root": str(self.root),
            "label": self.label.to_json(),
            "split": self.split.to_json(),
            "overrides": self.overrides.to_json(),
            "training": dict(self.training),
        }

    def save(self) -> Path:
        """Write atomically to the projects dir and move the folder to the top of recents."""
        return self.write(self.encode())

    def encode(self) -> bytes:
        """The project file's bytes as the settings are now (a snapshot to write later)."""
        try:
            text = json.dumps(self.to_json(), indent=2, sort_keys=True)
        except TypeError as err:
            raise ConfigError(f"training settings must be JSON values: {err}") from err
        return (text + "\n").encode("utf-8")

    def write(self, data: bytes) -> Path:
        """Write ``data`` (from :meth:`encode`) as the project file, atomically (it is
        synced to disk: tens of milliseconds), and put the folder first in the recents."""
        target = self.path
        if target.resolve().is_relative_to(self.root):
            raise ConfigError(
                f"Loupe's data folder {target.parent} is inside the image folder {self.root}; "
                "set LOUPE_HOME elsewhere so Loupe never writes into your images"
            )
        atomic_write_bytes(target, data)
        add_recent(self.root)
        return target


def _field(data: dict[str, Any], key: str, parse, default, warnings: list[str]):
    if key not in data:
        return default
    try:
        return parse(data[key])
    except (LoupeError, TypeError, ValueError, AttributeError) as err:
        warnings.append(f"project setting {key!r} was invalid ({err}); using the default")
        return default


def project_from_json(root: Path | str, data: Any) -> tuple[Project, list[str]]:
    """Build a project from parsed JSON, replacing each bad field by its default."""
    project = Project(Path(root))
    if not isinstance(data, dict):
        return project, ["not a JSON object; using default settings"]
    warnings: list[str] = []
    project.label = _field(data, "label", LabelRule.from_json, project.label, warnings)
    project.split = _field(data, "split", SplitRule.from_json, project.split, warnings)
    project.overrides = _field(data, "overrides", Overrides.from_json, project.overrides, warnings)

    def _dict(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        return dict(value)

    project.training = _field(data, "training", _dict, {}, warnings)
    return project, warnings


def load_project(root: Path | str) -> tuple[Project, list[str]]:
    """The saved project for ``root``, or a new one with defaults.

    Never raises for a damaged file: it returns defaults and warnings, and copies the
    damaged file to ``<name>.corrupt`` so the next save does not destroy the evidence.
    """
    path = project_file(root)
    if not path.exists():
        return Project(Path(root)), []
    try:
        raw = path.read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        _keep_corrupt(path)
        return Project(Path(root)), [
            f"project file {path} could not be read ({err}); using default settings "
            f"(a copy was kept as {path.name}.corrupt)"
        ]
    project, warnings = project_from_json(root, data)
    if warnings:
        _keep_corrupt(path)
    return project, [f"project file {path}: {warning}" for warning in warnings]


def _keep_corrupt(path: Path) -> None:
    try:
        atomic_write_bytes(path.with_name(path.name + ".corrupt"), path.read_bytes())
    except OSError:
        pass  # best effort: the warning already tells the user


def _recent_path() -> Path:
    return paths.projects_dir() / RECENT_FILE


def _read_recent() -> list[dict[str, str]]:
    try:
        data = json.loads(_recent_path().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    if not isinstance(data, list):
        return []
    return [e for e in data if isinstance(e, dict) and isinstance(e.get("root"), str)]


def recent_projects() -> list[Path]:
    """Folders of recently used projects, most recent first (missing folders included,
    so the UI can show them as unavailable rather than silently forgetting them)."""
    return [Path(entry["root"]) for entry in _read_recent()]


def add_recent(root: Path | str) -> None:
    resolved = str(resolve_root(root))
    entries = [e for e in _read_recent() if e["root"] != resolved]
    entries.insert(0, {"root": resolved, "opened": datetime.now(UTC).isoformat()})
    atomic_write_json(_recent_path(), entries[:RECENT_LIMIT])


def forget_recent(root: Path | str) -> None:
    resolved = str(resolve_root(root))
    entries = [e for e in _read_recent() if e["root"] != resolved]
    atomic_write_json(_recent_path(), entries)
