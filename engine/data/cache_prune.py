"""Keep the decoded-image spill folder (:mod:`loupe.engine.data.cache`) within its cap.

Spill files are ``DISK_DIR/XX/KEY.npy``; a file's mtime is refreshed whenever it is read,
so "oldest" means least recently used. The running session's own files go last.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from loupe.engine.core.atomic import remove_stale_temps
from loupe.engine.core.disk import Entry, by_age, first_beyond, remove_paths


def prune_spill_folder(disk_dir: Path, cap: int, *, protect: Iterable[str] = ()) -> int:
    """Delete spill files (``XX/KEY.npy``) oldest first until they add up to ``cap`` bytes.

    Keys in ``protect`` (the running session's) are counted but removed only after every
    other file. Stale temp files of killed writes go too. Returns the bytes freed.
    """
    protected = set(protect)
    mine: list[Entry] = []
    others: list[Entry] = []
    try:
        shards = [entry for entry in os.scandir(disk_dir) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return 0
    for shard in shards:
        remove_stale_temps(shard.path)
        try:
            files = list(os.scandir(shard.path))
        except OSError:
            continue
        for entry in files:
            if not entry.name.endswith(".npy"):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            key = entry.name[: -len(".npy")]
            found = Entry(key, info.st_size, info.st_mtime, (Path(entry.path),))
            (mine if key in protected else others).append(found)
    ordered = sorted(others, key=by_age) + sorted(mine, key=by_age)  # this session's last
    doomed = first_beyond(ordered, cap)
    return remove_paths(path for gone in doomed for path in gone.paths)
