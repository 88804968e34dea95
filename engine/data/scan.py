"""Find every usable image under a folder, and say why each other image file is not usable.

The walk is recursive and read-only: hidden files and folders are skipped, directory
symlinks are followed once (a loop cannot trap us), and broken links are reported. Each
candidate is then validated by a full decode of its first frame (see
:func:`loupe.engine.data.imageio.validate_image`) in a thread pool; Pillow releases the GIL while
decoding, so threads scale without the spawn-start-method cost of processes.

Verdicts are remembered in an index file in the user cache dir (never in the image
folder), keyed by the root's resolved path, with one entry per relative path holding
the file's size and mtime. Reopening a 100k-image folder then only stats each file.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL

from loupe.engine.core import paths
from loupe.engine.core.atomic import atomic_write_text
from loupe.engine.core.errors import CancelledError, DatasetError
from loupe.engine.core.events import (
    Cancelled,
    CancelToken,
    EventCallback,
    Finished,
    Progress,
    Started,
    ignore_event,
)
from loupe.engine.core.formats import IMAGE_SUFFIXES
from loupe.engine.data import imageio
from loupe.engine.data.imageio import DEFAULT_MAX_PIXELS

BROKEN_LINK = "broken link"
INDEX_VERSION = 1  # bump whenever validate_image's verdicts change meaning
_MAX_WORKERS = 8
_PROGRESS_STEPS = 200  # at most this many Progress events per scan, plus the last
_WAIT_SECONDS = 0.1  # how often cancel is checked while a slow file decodes
_WINDOWS_HIDDEN = getattr(stat, "FILE_ATTRIBUTE_HIDDEN", 0) if os.name == "nt" else 0


@dataclass(frozen=True)
class ImageItem:
    """A usable image. ``rel`` (POSIX, relative to the scan root) keys overrides/manifests.

    ``width``/``height`` are after EXIF orientation, i.e. as the loader returns the image.
    """

    path: Path
    rel: str
    size: int
    mtime_ns: int
    width: int
    height: int


@dataclass(frozen=True)
class RejectedFile:
    """A file that looks like an image by name but cannot be used; ``reason`` is for people."""

    path: Path
    rel: str
    reason: str


@dataclass(frozen=True)
class ScanResult:
    root: Path
    items: tuple[ImageItem, ...]
    rejected: tuple[RejectedFile, ...]


@dataclass(frozen=True)
class _Candidate:
    path: Path
    rel: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class _Verdict:
    """Outcome of validating one file: ``reason`` is empty when the image is usable."""

    width: int = 0
    height: int = 0
    reason: str = ""
    cacheable: bool = True


def scan_folder(
    root: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    use_index: bool = True,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> ScanResult:
    """Walk ``root``, validate every image file, return usable items and rejected files.

    Raises ``DatasetError`` when ``root`` is not a readable folder and ``CancelledError``
    when ``cancel`` is set (verdicts reached so far are still saved to the index).
    """
    root_path = _resolve_root(root)
    on_event(Started("scan", info={"root": str(root_path)}))
    candidates, rejected = _walk(root_path, cancel)
    index = _ScanIndex.load(root_path) if use_index else None
    verdicts: dict[str, _Verdict] = {}
    pending: list[_Candidate] = []
    for candidate in candidates:
        known = _known_verdict(candidate, index, max_pixels)
        if known is None:
            pending.append(candidate)
        else:
            verdicts[candidate.rel] = known
    progress = _ProgressReporter(on_event, len(candidates), len(verdicts))
    try:
        _validate_all(pending, max_pixels, workers, verdicts, progress, cancel)
    except CancelledError:
        if index is not None:
            index.save(candidates, verdicts)
        on_event(Cancelled("scan"))
        raise
    if index is not None:
        index.save(candidates, verdicts)
    result = _assemble(root_path, candidates, verdicts, rejected)
    summary = {"items": len(result.items), "rejected": len(result.rejected)}
    on_event(Finished("scan", result=summary))
    return result


def index_path(root: str | os.PathLike[str]) -> Path:
    """Where the scan index of ``root`` lives (in the user cache dir; safe to delete)."""
    key = str(Path(root).expanduser().resolve())
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return paths.cache_dir() / "scan" / f"{digest}.json"


# --- walking --------------------------------------------------------------------------


def _resolve_root(root: str | os.PathLike[str]) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"folder not found: {path}")
    if not path.is_dir():
        raise DatasetError(f"not a folder: {path} (choose the folder that holds the images)")
    return path.resolve()


def _walk(root: Path, cancel: CancelToken | None) -> tuple[list[_Candidate], list[RejectedFile]]:
    """Depth-first, in name order. Each real folder is visited once, whatever links lead to it.

    Linked folders wait until every real one has been walked, so a folder is reached by its
    own path when it has one: with ``cats`` and a link ``alias -> cats``, the images live
    under ``cats/`` (and get the label ``cats``) whichever name sorts first.
    """
    candidates: list[_Candidate] = []
    rejected: list[RejectedFile] = []
    seen = {os.path.realpath(root)}
    stack: list[tuple[Path, str]] = [(root, "")]
    links: list[tuple[Path, str]] = []
    while stack or links:
        if cancel is not None:
            cancel.raise_if_cancelled()
        if not stack:
            link, rel = links.pop(0)
            real = os.path.realpath(link)
            if real not in seen:
                seen.add(real)
                stack.append((link, rel))
            continue
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as err:
            reason = f"{imageio.UNREADABLE} folder: {err.strerror or err}"
            rejected.append(RejectedFile(folder, prefix.rstrip("/") or ".", reason))
            continue
        subfolders: list[tuple[Path, str]] = []
        for entry in entries:
            if _is_hidden(entry):
                continue
            rel = prefix + entry.name
            if not _is_dir(entry):
                _take_file(entry, rel, candidates, rejected)
            elif entry.is_symlink():
                links.append((Path(entry.path), rel + "/"))
            elif (real := os.path.realpath(entry.path)) not in seen:
                seen.add(real)
                subfolders.append((Path(entry.path), rel + "/"))
        stack.extend(reversed(subfolders))
    return candidates, rejected


def _take_file(
    entry: os.DirEntry[str], rel: str, candidates: list[_Candidate], rejected: list[RejectedFile]
) -> None:
    """Add an image-named file as a candidate, or a broken link as rejected."""
    suffix = os.path.splitext(entry.name)[1].lower()
    path = Path(entry.path)
    if entry.is_symlink() and not os.path.exists(entry.path):
        # Links without a suffix may have pointed at a folder of images: report those too.
        if suffix in IMAGE_SUFFIXES or not suffix:
            rejected.append(RejectedFile(path, rel, BROKEN_LINK))
        return
    if suffix not in IMAGE_SUFFIXES:
        return
    try:
        if not entry.is_file():
            return  # a fifo or socket named like an image: not ours to open
        info = entry.stat()
    except OSError as err:
        rejected.append(RejectedFile(path, rel, f"{imageio.UNREADABLE}: {err.strerror or err}"))
        return
    candidates.append(_Candidate(path, rel, info.st_size, info.st_mtime_ns))


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_hidden(entry: os.DirEntry[str]) -> bool:
    """Dot-names everywhere; on Windows also the hidden attribute (Thumbs.db, desktop.ini)."""
    if entry.name.startswith("."):
        return True
    if _WINDOWS_HIDDEN:
        try:
            attributes = getattr(entry.stat(follow_symlinks=False), "st_file_attributes", 0)
            return bool(attributes & _WINDOWS_HIDDEN)
        except OSError:
            return False
    return False


# --- validation -----------------------------------------------------------------------


def _known_verdict(
    candidate: _Candidate, index: _ScanIndex | None, max_pixels: int
) -> _Verdict | None:
    """A verdict that needs no opening of the file, or None when it must be validated."""
    if candidate.size == 0:
        return _Verdict(reason=imageio.EMPTY_FILE)
    return index.lookup(candidate, max_pixels) if index is not None else None


def _validate_all(
    pending: list[_Candidate],
    max_pixels: int,
    workers: int | None,
    verdicts: dict[str, _Verdict],
    progress: _ProgressReporter,
    cancel: CancelToken | None,
) -> None:
    """Validate in a thread pool with a bounded window, so cancel takes effect promptly."""
    count = workers if workers is not None else min(_MAX_WORKERS, os.cpu_count() or 1)
    if count < 1:
        raise ValueError(f"workers must be at least 1, got {count}")
    queue = iter(pending)
    in_flight: dict[Future[_Verdict], str] = {}
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="loupe-scan") as pool:
        try:
            while True:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                while len(in_flight) < count * 4:
                    candidate = next(queue, None)
                    if candidate is None:
                        break
                    future = pool.submit(_check_one, candidate.path, max_pixels)
                    in_flight[future] = candidate.rel
                if not in_flight:
                    return
                done, _ = wait(in_flight, timeout=_WAIT_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    verdicts[in_flight.pop(future)] = future.result()
                    progress.advance()
        finally:
            for future in in_flight:
                future.cancel()


def _check_one(path: Path, max_pixels: int) -> _Verdict:
    try:
        width, height = imageio.validate_image(path, max_pixels=max_pixels)
    except imageio.UnreadableImage as err:
        width, height = err.size or (0, 0)
        transient = err.reason.startswith(imageio.UNREADABLE)  # permissions can change
        return _Verdict(width, height, err.reason, cacheable=not transient)
    except Exception as err:  # one odd file must not abort a 100k-file scan
        return _Verdict(reason=f"{imageio.DAMAGED}: {type(err).__name__}: {err}", cacheable=False)
    return _Verdict(width, height)


class _ProgressReporter:
    """Emits Progress when the count moves visibly (about 0.5 %) and always at the end."""

    def __init__(self, on_event: EventCallback, total: int, done: int) -> None:
        self._on_event = on_event
        self._total = total
        self._done = done
        self._step = max(1, total // _PROGRESS_STEPS)
        self._emit()

    def advance(self) -> None:
        self._done += 1
        if self._done % self._step == 0 or self._done == self._total:
            self._emit()

    def _emit(self) -> None:
        message = f"checked {self._done} of {self._total} image files"
        self._on_event(Progress("scan", self._done, self._total, message=message))


def _assemble(
    root: Path,
    candidates: Iterable[_Candidate],
    verdicts: dict[str, _Verdict],
    walk_rejected: list[RejectedFile],
) -> ScanResult:
    items: list[ImageItem] = []
    rejected = list(walk_rejected)
    for candidate in candidates:
        verdict = verdicts[candidate.rel]
        if verdict.reason:
            rejected.append(RejectedFile(candidate.path, candidate.rel, verdict.reason))
        else:
            items.append(
                ImageItem(
                    path=candidate.path,
                    rel=candidate.rel,
                    size=candidate.size,
                    mtime_ns=candidate.mtime_ns,
                    width=verdict.width,
                    height=verdict.height,
                )
            )
    items.sort(key=lambda item: item.rel)
    rejected.sort(key=lambda file: file.rel)
    return ScanResult(root=root, items=tuple(items), rejected=tuple(rejected))


# --- the index ------------------------------------------------------------------------


class _ScanIndex:
    """Remembered verdicts for one root: ``rel -> [size, mtime_ns, width, height, reason]``.

    Valid only for the same index version and Pillow version (a new Pillow may read files
    an older one rejected). Written atomically and only when something changed.
    """

    def __init__(self, path: Path, root: Path, entries: dict[str, list[Any]]) -> None:
        self._path = path
        self._root = root
        self._entries = entries

    @classmethod
    def load(cls, root: Path) -> _ScanIndex:
        path = index_path(root)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(path, root, {})  # missing or damaged: it is only a cache
        if not isinstance(data, dict) or data.get("header") != _index_header(root):
            return cls(path, root, {})
        entries = data.get("entries")
        return cls(path, root, entries if isinstance(entries, dict) else {})

    def lookup(self, candidate: _Candidate, max_pixels: int) -> _Verdict | None:
        entry = self._entries.get(candidate.rel)
        if not isinstance(entry, list) or len(entry) != 5:
            return None
        size, mtime_ns, width, height, reason = entry
        if size != candidate.size or mtime_ns != candidate.mtime_ns:
            return None
        if not isinstance(width, int) or not isinstance(height, int):
            return None
        too_large = width * height > max_pixels
        if not reason:
            if too_large:  # the limit was lowered since: no need to open the file
                return _Verdict(width, height, imageio.too_large_reason(width, height, max_pixels))
            return _Verdict(width, height)
        if str(reason).startswith(imageio.TOO_LARGE):
            if too_large:
                return _Verdict(width, height, imageio.too_large_reason(width, height, max_pixels))
            return None  # the limit was raised (or the size is unknown): check it now
        return _Verdict(width, height, str(reason))

    def save(self, candidates: Iterable[_Candidate], verdicts: dict[str, _Verdict]) -> None:
        entries: dict[str, list[Any]] = {}
        for candidate in candidates:
            verdict = verdicts.get(candidate.rel)
            if verdict is None or not verdict.cacheable or candidate.size == 0:
                continue
            entries[candidate.rel] = [
                candidate.size,
                candidate.mtime_ns,
                verdict.width,
                verdict.height,
                verdict.reason,
            ]
        if entries == self._entries:
            return
        document = {"header": _index_header(self._root), "entries": entries}
        try:
            atomic_write_text(self._path, json.dumps(document, separators=(",", ":")))
        except OSError:
            return  # a read-only cache dir makes the next scan slower, nothing worse
        self._entries = entries


def _index_header(root: Path) -> dict[str, Any]:
    return {"version": INDEX_VERSION, "pillow": PIL.__version__, "root": str(root)}
