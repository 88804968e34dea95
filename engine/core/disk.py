"""Disk space: checked before large writes, named when a write runs out of it, and
bounded for what Loupe keeps by itself (the image cache, checkpoints of old runs).

The caps are environment variables a user can set (README, "Guarantees"):

``LOUPE_CACHE_MAX_GB``        decoded-image spill files under the cache dir (default 10)
``LOUPE_CHECKPOINTS_MAX_GB``  checkpoints of runs that can still be resumed (default 10)

Pruning removes the oldest entries first (by modification time) until the total fits.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loupe.engine.core.errors import ConfigError, WriteError

CACHE_MAX_ENV = "LOUPE_CACHE_MAX_GB"
CHECKPOINTS_MAX_ENV = "LOUPE_CHECKPOINTS_MAX_GB"
DEFAULT_CACHE_MAX_GB = 10.0
DEFAULT_CHECKPOINTS_MAX_GB = 10.0
SPACE_MARGIN = 1 << 20  # file-system metadata and a header that grew since the estimate
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
FREE_SOME_SPACE = "; free some space and try again"
_FULL_TEXT = ("no space left", "os error 28", "disk quota exceeded", "not enough space")


def human_bytes(count: int | float) -> str:
    """``1536`` -> ``1.5 KB``: decimal units, as file managers show sizes."""
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover - the loop always returns


def free_bytes(path: Path | str) -> int | None:
    """Free space on the file system ``path`` is (or will be) on; None if unknown."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the folder is created by the write itself
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def check_free_space(path: Path | str, needed: int, *, what: str = "") -> None:
    """Raise :class:`WriteError` before writing ``needed`` bytes to ``path`` when the disk
    has not got them (plus a small margin). Unknown free space is not an error."""
    free = free_bytes(Path(path).parent)
    if free is not None and free < needed + SPACE_MARGIN:
        raise WriteError(
            f"not enough disk space to write {what}{path}: it needs {human_bytes(needed)}, "
            f"{human_bytes(free)} free on that disk{FREE_SOME_SPACE}",
            errno=errno.ENOSPC, filename=str(path),
        )


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC or a quota as an OSError, or a library's error text saying so (safetensors
    raises its own SafetensorError with "No space left on device (os error 28)")."""
    if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
        return True
    text = str(err).lower()
    return any(hint in text for hint in _FULL_TEXT)


def disk_full_error(path: Path | str, needed: int | None, err: BaseException) -> WriteError:
    free = free_bytes(Path(path).parent)
    need = f"it needs {human_bytes(needed)}, " if needed is not None else ""
    have = f"{human_bytes(free)} free on that disk" if free is not None else "the disk is full"
    return WriteError(
        f"not enough disk space to write {path}: {need}{have}{FREE_SOME_SPACE}",
        errno=errno.ENOSPC, filename=str(path),
    )


def limit_from_env(name: str, default_gb: float) -> int:
    """A size cap in bytes from environment variable ``name`` (gigabytes, 0 allowed)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return int(default_gb * 1e9)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name}={raw!r} must be a number of gigabytes >= 0, e.g. {name}=5")
    return int(value * 1e9)


@dataclass(frozen=True)
class Entry:
    """Something that can be pruned: its size, when it was last used, what to delete."""

    key: str
    size: int
    mtime: float
    paths: tuple[Path, ...]


def by_age(entry: Entry) -> tuple[float, str]:
    """Sort key: oldest (least recently used) first, ties by key."""
    return entry.mtime, entry.key


def oldest_beyond(entries: Iterable[Entry], cap: int) -> list[Entry]:
    """The entries to remove, oldest first, so the rest add up to at most ``cap`` bytes."""
    return first_beyond(sorted(entries, key=by_age), cap)


def first_beyond(ordered: Sequence[Entry], cap: int) -> list[Entry]:
    """The first entries of ``ordered`` to remove so the rest add up to at most ``cap``."""
    total = sum(e.size for e in ordered)
    doomed: list[Entry] = []
    for entry in ordered:
        if total <= cap:
            break
        doomed.append(entry)
        total -= entry.size
    return doomed


def remove_paths(paths: Iterable[Path]) -> int:
    """Delete files (never folders); the bytes freed. Missing files are fine."""
    freed = 0
    for path in paths:
        try:
            size = path.stat().st_size
            path.unlink()
            freed += size
        except OSError:
            continue
    return freed
