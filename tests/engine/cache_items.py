"""The smallest thing the image cache accepts: what it reads from engine.data.scan.ImageItem."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Item:
    path: Path
    size: int
    mtime_ns: int


def item_for(path: Path) -> Item:
    st = path.stat()
    return Item(path, st.st_size, st.st_mtime_ns)
