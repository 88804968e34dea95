"""Decoded-image cache: every image is decoded once per presize, then never again.

Decoding a PNG or JPEG costs far more than everything else a CPU epoch does with a small
image, so the cache keeps each image as a presized uint8 3×H×W tensor (for the ``crop``
resize method the short side is ``presize``, slightly larger than the training size so
random crops have room; for ``squish`` and ``pad`` a ``presize``×``presize`` square, see
:mod:`loupe.engine.data.resize`). Tensors live in RAM up to a byte budget (least recently used leave
first); what does not fit is spilled to plain ``.npy`` files under the user cache dir and
read back from there, which is still far cheaper than decoding. Entries are keyed by the
file's absolute path, byte size, mtime, the presize and the resize method, so an edited
file gets a new key and is decoded afresh, and a later session on the same folder starts
from the spill files.

``decode_count`` counts calls to the image decoder; the tests and the benchmark use it to
prove that epochs after the first decode nothing.

Spill files are bounded: when a cache is created (at most once a minute per folder and
process) and after each :meth:`ImageCache.warm`, the spill folder is pruned to
``LOUPE_CACHE_MAX_GB`` (:mod:`loupe.engine.core.disk`), least recently used files first
(a spill file's mtime is refreshed whenever it is read); this session's own files go
last. So the folder holds at most the cap plus what one session spills. Temp files of
writes that died are removed once they are an hour old.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import numpy as np
import torch

from loupe.engine.core import paths
from loupe.engine.core.disk import CACHE_MAX_ENV, DEFAULT_CACHE_MAX_GB, limit_from_env
from loupe.engine.core.errors import ConfigError, DatasetError
from loupe.engine.core.events import (
    CancelToken,
    EventCallback,
    Finished,
    Progress,
    Started,
    WarningEvent,
    ignore_event,
)
from loupe.engine.data.cache_prune import prune_spill_folder
from loupe.engine.data.resize import LEGACY_RESIZE, SQUARE_METHODS, check_resize, resize_image

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_RAM_BUDGET = 2 * 1024**3
PRESIZE_PERCENT = 115
# Bump when the decode chain (loader, resize) changes, so old spill files are not reused.
# 2: embedded ICC colour profiles are converted to sRGB.
CACHE_FORMAT = 2


class CacheableItem(Protocol):
    """What the cache needs from an item: :class:`loupe.engine.data.scan.ImageItem` has it."""

    @property
    def path(self) -> Path: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...


def presize_for(size: int, resize: str = LEGACY_RESIZE) -> int:
    """The side images are cached at for training size ``size`` and resize method ``resize``.

    ``crop``: a short side of ceil(size × 1.15), so random crops have room (integer
    arithmetic, so e.g. 20 → 23 exactly rather than a float rounding accident). ``squish``
    and ``pad``: ``size`` itself, so the cached square is exactly the validation input and
    an exported model's recipe is one resize (their training zoom is in
    ``loupe.engine.training.batches.random_square_box``).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ConfigError(f"image size must be a positive whole number of pixels, got {size!r}")
    if check_resize(resize) in SQUARE_METHODS:
        return size
    return -(-size * PRESIZE_PERCENT // 100)


def presized_uint8(image: Image.Image, presize: int, resize: str = LEGACY_RESIZE) -> torch.Tensor:
    """An RGB image as uint8 3×H×W in its cached form (:func:`engine.data.resize.resize_image`)."""
    from loupe.engine.data.imageio import to_uint8_tensor

    return to_uint8_tensor(resize_image(image, presize, resize)).contiguous()


def load_presized(
    source: str | Path | BinaryIO,
    presize: int,
    *,
    max_pixels: int | None = None,
    resize: str = LEGACY_RESIZE,
) -> torch.Tensor:
    """Decode a file the one way training, validation and prediction all do.

    The loader may decode a JPEG at reduced size (draft) as long as the short side stays at
    least ``presize`` (so both sides do, which squish and pad need); then the picture is
    resized to its cached form.
    """
    from loupe.engine.data.imageio import load_rgb

    kwargs: dict[str, Any] = {"min_short_side": presize}
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    return presized_uint8(load_rgb(source, **kwargs), presize, resize)


def cache_key(item: CacheableItem, presize: int, resize: str = LEGACY_RESIZE) -> str:
    """Stable across sessions: absolute path, byte size, mtime (ns), presize, method, format.

    A ``crop`` key is spelled as before the method existed, so spill files made then keep
    serving; the other methods add their name, so no method ever reads another's tensors.
    """
    text = f"{CACHE_FORMAT}\0{os.path.abspath(item.path)}\0{item.size}\0{item.mtime_ns}\0{presize}"
    if check_resize(resize) != LEGACY_RESIZE:
        text += f"\0{resize}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class ImageCache:
    """Presized uint8 tensors: RAM within ``ram_budget_bytes`` (LRU), spill files beyond.

    ``resize`` is the method (:data:`loupe.engine.data.resize.RESIZE_METHODS`) that shapes every
    cached image; it is part of each key.

    Thread-safe: any number of threads may call :meth:`get`; two threads asking for the
    same uncached image wait on one decode instead of decoding twice. Tensors handed out
    are shared with the cache; treat them as read-only.
    """

    def __init__(
        self,
        presize: int,
        ram_budget_bytes: int = DEFAULT_RAM_BUDGET,
        disk_dir: Path | None = None,
        *,
        max_pixels: int | None = None,
        resize: str = LEGACY_RESIZE,
        disk_cap_bytes: int | None = None,
    ) -> None:
        if isinstance(presize, bool) or not isinstance(presize, int) or presize <= 0:
            raise ConfigError(f"cache presize must be a positive whole number, got {presize!r}")
        if ram_budget_bytes < 0:
            raise ConfigError(f"cache RAM budget must be >= 0 bytes, got {ram_budget_bytes!r}")
        self.presize = presize
        self.resize = check_resize(resize)
        self.ram_budget_bytes = int(ram_budget_bytes)
        self.disk_dir = Path(disk_dir) if disk_dir is not None else paths.cache_dir() / "images"
        self.max_pixels = max_pixels
        self.disk_cap_bytes = (
            limit_from_env(CACHE_MAX_ENV, DEFAULT_CACHE_MAX_GB)
            if disk_cap_bytes is None else int(disk_cap_bytes)
        )
        self._lock = threading.Lock()
        self._ram: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._ram_bytes = 0
        self._spilling: dict[str, torch.Tensor] = {}  # evicted, write in progress
        self._on_disk: set[str] = set()
        self._inflight: dict[str, Future[torch.Tensor]] = {}
        self._decode_count = 0
        self._ram_hits = 0
        self._disk_hits = 0
        self._spill_writes = 0
        self._spill_error: str | None = None
        if _prune_due(self.disk_dir):
            self.prune_disk()

    # -- public ---------------------------------------------------------------------------

    @property
    def decode_count(self) -> int:
        """How many times the image decoder ran (0 for an epoch served from the cache)."""
        with self._lock:
            return self._decode_count

    def get(self, item: CacheableItem) -> torch.Tensor:
        """The item's presized uint8 3×H×W tensor, decoding it only if no cache has it.

        Raises :class:`DatasetError` naming the file when it cannot be decoded.
        """
        key = cache_key(item, self.presize, self.resize)
        with self._lock:
            hit = self._ram.get(key)
            if hit is not None:
                self._ram.move_to_end(key)
                self._ram_hits += 1
                return hit
            hit = self._spilling.get(key)
            if hit is not None:
                self._ram_hits += 1
                return hit
            waiting = self._inflight.get(key)
            if waiting is None:
                future: Future[torch.Tensor] = Future()
                self._inflight[key] = future
        if waiting is not None:
            return waiting.result()
        try:
            tensor = self._fetch(key, item)
            future.set_result(tensor)
            return tensor
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def warm(
        self,
        items: Iterable[CacheableItem],
        *,
        workers: int | None = None,
        on_event: EventCallback = ignore_event,
        cancel: CancelToken | None = None,
    ) -> dict[str, Any]:
        """Decode every item not cached yet, in parallel threads, before training starts.

        Pillow and the resize release the GIL, so threads scale without the start-up and
        pickling costs of processes. Events: ``Started("cache")``, one ``Progress`` per
        item, ``Finished("cache", stats)``. Checks ``cancel`` before each image and raises
        :class:`loupe.engine.core.errors.CancelledError`; the first unreadable file raises its
        :class:`DatasetError`. Returns :meth:`stats`.
        """
        todo = list(items)
        total = len(todo)
        workers = workers or min(8, os.cpu_count() or 1)
        spill_error_before = self.stats()["spill_error"]
        info = {"presize": self.presize, "resize": self.resize}
        on_event(Started("cache", total=total, info=info))
        if cancel is not None:
            cancel.raise_if_cancelled()

        def job(item: CacheableItem) -> None:
            if cancel is not None:
                cancel.raise_if_cancelled()
            self.get(item)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loupe-cache") as pool:
            futures = [pool.submit(job, item) for item in todo]
            try:
                for done, fut in enumerate(as_completed(futures), start=1):
                    fut.result()
                    on_event(Progress("cache", done, total, message="decoding images"))
                    if cancel is not None:
                        cancel.raise_if_cancelled()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
        self.prune_disk()
        stats = self.stats()
        if stats["spill_error"] and stats["spill_error"] != spill_error_before:
            on_event(WarningEvent("cache-spill-failed", stats["spill_error"]))
        on_event(Finished("cache", result=stats))
        return stats

    def stats(self) -> dict[str, Any]:
        """Counters for benchmarks, logs and the desktop's status line."""
        with self._lock:
            return {
                "presize": self.presize,
                "resize": self.resize,
                "ram_items": len(self._ram),
                "ram_bytes": self._ram_bytes,
                "ram_budget_bytes": self.ram_budget_bytes,
                "disk_items": len(self._on_disk),
                "disk_dir": str(self.disk_dir),
                "decode_count": self._decode_count,
                "ram_hits": self._ram_hits,
                "disk_hits": self._disk_hits,
                "spill_writes": self._spill_writes,
                "spill_error": self._spill_error,
            }

    def prune_disk(self) -> int:
        """Keep the spill folder within ``disk_cap_bytes``; returns the bytes freed.

        Least recently used files go first; files this cache wrote or read go only if the
        rest cannot make room (they are then decoded again when next needed).
        """
        with self._lock:
            ours = set(self._on_disk)
        freed = prune_spill_folder(self.disk_dir, self.disk_cap_bytes, protect=ours)
        if freed:
            with self._lock:
                self._on_disk = {k for k in self._on_disk if self._spill_path(k).exists()}
        return freed

    def clear_ram(self) -> None:
        """Drop the RAM tier (spill files stay); for tests and memory pressure."""
        with self._lock:
            self._ram.clear()
            self._ram_bytes = 0

    # -- internals ------------------------------------------------------------------------

    def _fetch(self, key: str, item: CacheableItem) -> torch.Tensor:
        """Spill file if there is a valid one, else the decoder; then keep the result."""
        tensor = self._read_spill(key)
        if tensor is not None:
            with self._lock:
                self._disk_hits += 1
                self._on_disk.add(key)
            self._keep(key, tensor, on_disk=True)
            return tensor
        tensor = self._decode(item)
        self._keep(key, tensor, on_disk=False)
        return tensor

    def _decode(self, item: CacheableItem) -> torch.Tensor:
        with self._lock:
            self._decode_count += 1
        try:
            return load_presized(
                item.path, self.presize, max_pixels=self.max_pixels, resize=self.resize
            )
        except DatasetError:
            raise
        except (OSError, ValueError, SyntaxError) as exc:
            raise DatasetError(f"{item.path}: cannot decode image: {exc}") from exc

    def _keep(self, key: str, tensor: torch.Tensor, *, on_disk: bool) -> None:
        """Put a tensor in RAM, evicting least recently used ones to spill files."""
        nbytes = tensor.numel() * tensor.element_size()
        evicted: list[tuple[str, torch.Tensor]] = []
        with self._lock:
            if nbytes > self.ram_budget_bytes:
                if not on_disk:
                    evicted.append((key, tensor))
                    self._spilling[key] = tensor
            else:
                self._ram[key] = tensor
                self._ram_bytes += nbytes
                while self._ram_bytes > self.ram_budget_bytes:
                    old_key, old = self._ram.popitem(last=False)
                    self._ram_bytes -= old.numel() * old.element_size()
                    if old_key not in self._on_disk:
                        evicted.append((old_key, old))
                        self._spilling[old_key] = old
        for old_key, old in evicted:
            written = self._write_spill(old_key, old)
            with self._lock:
                self._spilling.pop(old_key, None)
                if written:
                    self._on_disk.add(old_key)
                    self._spill_writes += 1

    def _spill_path(self, key: str) -> Path:
        return self.disk_dir / key[:2] / f"{key}.npy"

    def _read_spill(self, key: str) -> torch.Tensor | None:
        """A valid spill file's tensor, or None (missing, truncated or not ours)."""
        path = self._spill_path(key)
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            return None  # damaged: decode again and overwrite it
        try:
            os.utime(path)  # recently used: the disk cap prunes it last
        except OSError:
            pass
        ok = (
            isinstance(array, np.ndarray)
            and array.dtype == np.uint8
            and array.ndim == 3
            and array.shape[0] == 3
            and min(array.shape[1:]) == self.presize
            and (self.resize not in SQUARE_METHODS or array.shape[1] == array.shape[2])
        )
        return torch.from_numpy(np.ascontiguousarray(array)) if ok else None

    def _write_spill(self, key: str, tensor: torch.Tensor) -> bool:
        """Write one spill file atomically (temp + rename); False if spilling failed.

        Unlike loupe.engine.core.atomic this skips fsync: a spill file is a re-creatable cache entry
        validated on read, and an fsync per image would dominate the first epoch on slow
        disks. After the first failure (full or read-only disk) spilling stops, the
        failure is reported in :meth:`stats`, and evicted images are decoded again.
        """
        if self._spill_error is not None:
            return False
        path = self._spill_path(key)
        buffer = io.BytesIO()
        np.save(buffer, tensor.numpy(), allow_pickle=False)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(buffer.getbuffer())
            os.replace(tmp, path)
            return True
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            with self._lock:
                self._spill_error = (
                    f"cannot write the image cache in {self.disk_dir}: {exc}; images that do "
                    "not fit the RAM budget will be decoded again each epoch"
                )
            return False


_PRUNE_EVERY_S = 60.0
_last_prune: dict[str, float] = {}
_prune_lock = threading.Lock()


def _prune_due(disk_dir: Path) -> bool:
    """True at most once a minute per spill folder: caches are made per training run,
    evaluation and prediction batch, and each prune lists the whole folder."""
    key, now = str(disk_dir), time.monotonic()
    with _prune_lock:
        if now - _last_prune.get(key, -_PRUNE_EVERY_S) < _PRUNE_EVERY_S:
            return False
        _last_prune[key] = now
        return True
