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


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any threads.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _temp_next_to(path: Path) -> tuple[int, str]:
    """Create the folder and a temp file beside ``path`` (same file system: atomic replace).

    mkstemp makes the file private (0600); it gets the mode a plain ``open()`` would give
    (or the replaced file's mode), so an exported CSV or model is readable like any other
    file the user saves. A failure names the file the caller asked for, not our temp name.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise type(err)(err.errno, err.strerror, str(path)) from err
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK
        os.chmod(tmp, mode)
    except OSError:
        pass  # file systems without modes (FAT, some network shares): keep mkstemp's
    return fd, tmp


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
