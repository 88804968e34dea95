"""Find bundled resources (sample images, icons) from a checkout or an installed wheel."""

from __future__ import annotations

from importlib import resources as _res
from pathlib import Path


def resources_root() -> Path:
    """The ``loupe.resources`` package folder, wherever it is installed.

    Wheels are installed unzipped, so ``files()`` is a real folder; we refuse a zipped
    install with a clear message rather than hand out paths that do not exist.
    """
    root = _res.files("loupe.resources")
    path = Path(str(root))
    if not path.is_dir():
        raise FileNotFoundError(f"Loupe's resources are not a folder on disk: {root}")
    return path


def sample_dir() -> Path:
    """The bundled sample image set (flat folder, class in the file name's case)."""
    return resources_root() / "samples"


def icon_path() -> Path:
    return resources_root() / "icons" / "loupe.png"
