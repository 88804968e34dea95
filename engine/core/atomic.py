"""Atomic writes for Loupe's own files: temp file in the same folder, fsync, os.replace.

A crash, a kill or a full disk leaves either the old file or the new one, never half of
each and never an empty target. What a killed write can leave behind is a temp file (or,
for :func:`atomic_write_with`, a temp folder) named ``.<target name>.<8 chars>.tmp`` next
to the target; :func:`remove_stale_temps` removes those, and Loupe calls it on its own
folders (run folders when a run is opened, the weights store, the image cache).

Files get the mode a plain ``open()`` would give them (``0666`` less the umask, applied
by the kernel when the temp file is created), or the mode of the file they replace.

A write that fails because the disk is full (``ENOSPC``, a quota, or safetensors' own
error, which is not an OSError) raises :class:`~loupe.engine.core.errors.WriteError`,
one line naming the file and the space it needs; large writes check the free space
before they start.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loupe.engine.core.disk import check_free_space, disk_full_error, is_disk_full
from loupe.engine.core.errors import LoupeError, WriteError

# ``.<target>.<8 chars>.tmp``: 8 hex digits from us, or tempfile.mkstemp's 8 characters
# (what earlier versions of Loupe used), so their leftovers are recognised too.
TEMP_NAME = re.compile(r"^\..+\.[0-9a-z_]{8}\.tmp$")
STALE_AFTER_S = 3600.0  # a temp untouched this long belongs to a write that died
_CHECK_SPACE_FROM = 1 << 20  # smaller writes do not pay for a statvfs
_O_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def _temp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"


def _named(err: OSError, path: Path) -> OSError:
    """The same error naming the file the caller asked for, not our temp name."""
    return type(err)(err.errno, err.strerror, str(path))


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create the folder and an empty temp file beside ``path`` (same file system, so
    the final ``os.replace`` is atomic). Mode 0666: the kernel applies the umask."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            tmp = _temp_path(path)
            try:
                return os.open(tmp, _O_FLAGS, 0o666), tmp
            except FileExistsError:
                continue
    except OSError as err:
        raise _named(err, path) from err


def _keep_mode(tmp: Path, path: Path) -> None:
    """A replaced file keeps its mode (a user's chmod survives a rewrite)."""
    try:
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    except FileNotFoundError:
        pass  # a new file: the creation mode is already the usual one
    except OSError:
        pass  # file systems without modes (FAT, some network shares)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); Windows cannot open a folder for this."""
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_failed(err: BaseException, path: Path, needed: int | None) -> BaseException:
    """The error to raise for a failed write: a full disk as one WriteError line."""
    if isinstance(err, LoupeError) or not isinstance(err, Exception):
        return err
    if is_disk_full(err):
        return disk_full_error(path, needed, err)
    if type(err).__name__ == "SafetensorError":  # safetensors' write errors: not OSError
        return WriteError(f"cannot write {path}: {err}", filename=str(path))
    return err


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    path = Path(path)
    if len(data) >= _CHECK_SPACE_FROM:
        check_free_space(path, len(data))
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _keep_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        failure = _write_failed(err, path, len(data))
        if failure is err:
            raise
        raise failure from err
    _sync_folder(path.parent)
    return path


def atomic_write_with(
    path: Path | str, write: Callable[[Path], None], *, expected_bytes: int | None = None
) -> Path:
    """Atomically create ``path`` with a writer that takes a file path, not bytes.

    For libraries that stream to a file themselves (safetensors' ``save_file``, ONNX and
    TorchScript export): they never hold a second in-memory copy of a large file, and
    they release the GIL while writing, which keeps the GUI thread responsive.

    The writer gets ``.<name>.<8 hex>.tmp/<name>`` — a file inside a temp folder of
    ours, because such libraries make temp files of their own next to the path they are
    given (safetensors writes ``.tmpXXXXXX`` and renames it): a kill leaves one folder
    of our naming for :func:`remove_stale_temps`, not a stray file of theirs. The file
    exists, empty, when the writer is called. ``expected_bytes``: checked against the
    free space first, and named in a disk-full message.
    """
    path = Path(path)
    if expected_bytes is not None:
        check_free_space(path, expected_bytes)
    folder = _create_temp_folder(path)
    tmp = folder / path.name
    try:
        os.close(os.open(tmp, _O_FLAGS, 0o666))
        mode = tmp.stat().st_mode & 0o7777  # what the umask (and a default ACL) allow
        write(tmp)
        os.chmod(tmp, mode)  # safetensors makes its file 0600; a plain open() would not
        _keep_mode(tmp, path)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        shutil.rmtree(folder, ignore_errors=True)
        failure = _write_failed(err, path, expected_bytes)
        if failure is err:
            raise
        raise failure from err
    shutil.rmtree(folder, ignore_errors=True)
    _sync_folder(path.parent)
    return path


def _create_temp_folder(path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            folder = _temp_path(path)
            try:
                folder.mkdir(mode=0o700)
                return folder
            except FileExistsError:
                continue
    except OSError as err:
        raise _named(err, path) from err


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def remove_stale_temps(
    folder: Path | str,
    *,
    older_than_s: float | None = STALE_AFTER_S,
    extra: re.Pattern[str] | None = None,
) -> list[Path]:
    """Remove what killed atomic writes left in ``folder``: temp files and temp folders
    named ``.<target>.<8 chars>.tmp`` (and names matching ``extra``).

    Only entries untouched for ``older_than_s`` seconds go, so a write in progress in
    another process is left alone; ``None`` removes them all, for a folder the caller
    holds a lock on (a run folder). Never raises: a leftover is not worth an error.
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not (TEMP_NAME.match(entry.name) or (extra is not None and extra.match(entry.name))):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if older_than_s is not None and now - info.st_mtime < older_than_s:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed
