"""Guards for every file Loupe writes: no output ever replaces an input or lands in the
user's image folder.

Files are compared by identity (``os.stat`` device + inode, as ``os.path.samefile``
does), never by spelling: a symlink, a hard link, ``..`` or a bind mount of the same file
or folder is the same file or folder. Every command checks its outputs (sidecars
included) here before it starts work, so a refusal costs nothing and loses nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from loupe.engine.core.errors import ConfigError, ModelFileError

PathLike = str | os.PathLike[str]


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when both names lead to one existing file (links, ``..``, bind mounts)."""
    try:
        # realpath first: ``new/../x`` is ``x`` once saving has created ``new``
        return os.path.samefile(_real(a), _real(b))
    except (OSError, ValueError):  # either does not exist (yet): not the same file
        return False


def _real(path: PathLike) -> str:
    return os.path.realpath(Path(path).expanduser())


def is_inside(path: PathLike, folder: PathLike) -> bool:
    """True when ``path`` (existing or not) is ``folder`` or lies anywhere below it.

    Walks the real path's ancestors and compares each existing one with ``folder`` by
    device and inode, so an alias of the folder (symlink, bind mount) is caught too.
    """
    try:
        target = os.stat(Path(folder).expanduser())
    except (OSError, ValueError):
        return False
    key = (target.st_dev, target.st_ino)
    current = Path(_real(path))
    for candidate in (current, *current.parents):
        try:
            info = os.stat(candidate)
        except (OSError, ValueError):
            continue
        if (info.st_dev, info.st_ino) == key:
            return True
    return False


def check_output(
    path: PathLike,
    *,
    inputs: Iterable[PathLike | None] = (),
    folders: Iterable[PathLike | None] = (),
    option: str | None = None,
    overwrite: bool = True,
    overwrite_flag: str = "--overwrite",
) -> None:
    """Raise ConfigError (one line naming the files) when writing ``path`` would replace
    one of ``inputs`` or write inside one of ``folders`` (the user's image folders).

    ``option`` names the output in the message (``--plot``); ``overwrite=False`` also
    refuses an existing file, pointing at ``overwrite_flag``. ``None`` entries are skipped.
    """
    name = f"{option} {path}" if option else str(path)
    for folder in folders:
        if folder is not None and is_inside(path, folder):
            raise ConfigError(
                f"{name} is inside the image folder {folder}; Loupe never writes there. "
                "Choose a place outside it."
            )
    for source in inputs:
        if source is not None and same_file(path, source):
            raise ConfigError(
                f"{name} would overwrite the input file {source}; choose another file name"
            )
    if not overwrite and Path(path).expanduser().exists():
        raise ConfigError(
            f"{name} already exists; choose another file name or pass {overwrite_flag} "
            "to replace it"
        )


def check_distinct(outputs: Iterable[tuple[str, PathLike | None]]) -> None:
    """Refuse two outputs of one command that name the same file (``(option, path)`` pairs)."""
    seen: list[tuple[str, Path]] = []
    for option, path in outputs:
        if path is None:
            continue
        real = Path(_real(path))
        for other_option, other in seen:
            if real == other or same_file(real, other):
                raise ConfigError(
                    f"{option} {path} is the same file as {other_option}; "
                    "give each output its own file name"
                )
        seen.append((option, real))


def check_home_outside(folder: PathLike) -> None:
    """Refuse an image folder that holds Loupe's own data (``LOUPE_HOME`` inside it):
    scanning and training would write caches, runs and models among the images."""
    home = os.environ.get("LOUPE_HOME")
    if home and is_inside(home, folder):
        raise ConfigError(
            f"LOUPE_HOME {home} is inside the image folder {folder}; Loupe never writes "
            "there. Set LOUPE_HOME to a folder outside it."
        )


def check_writable(path: PathLike, *, what: str = "model file") -> None:
    """Fail now, not after hours of training, when ``path`` cannot be written there.

    Creates the folder (as saving would) and a throwaway file next to where it goes.
    """
    import tempfile

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        Path(probe).unlink()
    except OSError as err:
        raise ModelFileError(f"cannot write {what} {path}: {err.strerror or err}") from err
