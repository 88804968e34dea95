"""Atomic writes for Loupe's own files: temp file in the same folder, fsync, os.replace.

A crash or a full disk leaves either the old file or the new one, never half of each.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _temp_next_to(path: Path) -> tuple[int, str]:
    """Create the folder and a temp file beside ``path`` (same file system: atomic replace).

    A failure names the file the caller asked for, not our hidden temp name.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise type(err)(err.errno, err.strerror, str(path)) from err


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    path = Path(path)
    fd, tmp = _temp_next_to(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_with(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Atomically create ``path`` with a writer that takes a file path, not bytes.

    For libraries that stream to a file themselves (safetensors' ``save_file``): they
    never hold a second in-memory copy of a large file, and they release the GIL while
    writing, which keeps the GUI thread responsive while a checkpoint is saved.
    """
    path = Path(path)
    fd, tmp = _temp_next_to(path)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
