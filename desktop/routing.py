"""What a drop or a paste means: images to predict, a folder, or a model file.

Kept apart from the window so the decision is a plain function tests can call, and the
window only has to act on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QMimeData, QUrl

from loupe.engine.core.formats import BUNDLE_SUFFIX, IMAGE_SUFFIXES


@dataclass(frozen=True)
class DropPlan:
    """Dropped paths sorted by what Loupe does with them."""

    model: Path | None = None
    folder: Path | None = None
    images: tuple[Path, ...] = ()
    ignored: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def empty(self) -> bool:
        return self.model is None and self.folder is None and not self.images


def classify_paths(paths: list[Path]) -> DropPlan:
    """A model file wins, then images (all of them), then the first folder."""
    model = next((p for p in paths if p.suffix.lower() == BUNDLE_SUFFIX and p.is_file()), None)
    images = tuple(p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    folder = next((p for p in paths if p.is_dir()), None)
    used = {model, folder, *images}
    ignored = tuple(p for p in paths if p not in used)
    if model is not None:
        return DropPlan(model=model, ignored=ignored)
    if images:
        return DropPlan(images=images, ignored=ignored)
    return DropPlan(folder=folder, ignored=ignored)


def local_paths(mime: QMimeData) -> list[Path]:
    """Local files named by URLs (drag and drop, copied files) or by pasted text."""
    urls = list(mime.urls()) if mime.hasUrls() else []
    if not urls and mime.hasText():
        for line in mime.text().splitlines():
            line = line.strip()
            if line.startswith("file:"):
                urls.append(QUrl(line))
            elif line:
                urls.append(QUrl.fromLocalFile(line))
    paths = [Path(u.toLocalFile()) for u in urls if u.isLocalFile()]
    return [p for p in paths if p.exists()]
