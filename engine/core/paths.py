"""Where Loupe keeps its own data: never inside the user's image folder.

platformdirs gives the per-OS user dirs. ``LOUPE_HOME`` (one folder holding data/,
cache/, logs/) overrides them, which is how tests and portable installs isolate state.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "Loupe"


def _base(kind: str) -> Path:
    home = os.environ.get("LOUPE_HOME")
    if home:
        return Path(home) / kind
    if kind == "data":
        return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    if kind == "cache":
        return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    """Projects, runs, imported weights."""
    return _ensure(_base("data"))


def cache_dir() -> Path:
    """Scan index and decoded-image spill files: safe to delete."""
    return _ensure(_base("cache"))


def log_dir() -> Path:
    return _ensure(_base("logs"))


def runs_dir() -> Path:
    return _ensure(data_dir() / "runs")


def projects_dir() -> Path:
    return _ensure(data_dir() / "projects")


def weights_dir() -> Path:
    return _ensure(data_dir() / "weights")


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
