"""Decoding ahead of the batch loop: epoch 1 overlaps decoding with training.

A DataLoader with worker processes hides decoding behind the model's compute; Loupe
decodes each image once into :class:`~loupe.engine.data.cache.ImageCache` and used to do
all of it before the first batch (``ImageCache.warm``), so a run's first epoch paid for
decoding and training one after the other. :class:`Prefetch` instead decodes in
background threads, in the order the first epoch will ask for the images (then the
validation images), while training runs. The batch producer asks the cache as before:
an image a decode thread is still working on is waited for, not decoded twice (the
cache's in-flight table), and one already decoded is a RAM hit.

Threads, not processes, for the reasons ``loupe.engine.training.batches`` gives: Pillow's
decoder and torch's resize release the GIL, and the cache's RAM is shared.

A file that cannot be decoded is not reported here: the decode thread moves on, and the
batch (or validation pass) that needs the file asks the cache again, which raises the
:class:`~loupe.engine.core.errors.DatasetError` naming the file in the training thread,
where every other error of a run is raised.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from loupe.engine.core.events import CancelToken


def decode_threads() -> int:
    """Decode threads: one per core (as ``DataLoader(num_workers=cores)``), at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


class Prefetch:
    """Calls ``fetch(item)`` for every item, in order, on ``workers`` daemon threads.

    Stops early on :meth:`stop` or when ``cancel`` is set; :meth:`wait` joins the threads.
    ``done`` counts the items handed out and finished (decoded, or failed and left to the
    consumer to report).
    """

    def __init__(
        self,
        fetch: Callable[[Any], Any],
        items: Sequence[Any],
        *,
        workers: int | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        self._fetch = fetch
        self._items = list(items)
        self._cancel = cancel
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._done = 0
        count = max(1, min(workers or decode_threads(), len(self._items) or 1))
        self._threads = [
            threading.Thread(target=self._work, name=f"loupe-decode-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def done(self) -> int:
        with self._lock:
            return self._done

    def stop(self) -> None:
        """No new decodes start; the ones running finish (each is one image)."""
        self._stop.set()

    def wait(self) -> None:
        for thread in self._threads:
            thread.join()

    def _stopped(self) -> bool:
        return self._stop.is_set() or (self._cancel is not None and self._cancel.cancelled)

    def _work(self) -> None:
        while not self._stopped():
            with self._lock:
                index = self._next
                self._next += 1
            if index >= len(self._items):
                return
            try:
                self._fetch(self._items[index])
            except Exception:  # noqa: BLE001 - the consumer's own fetch raises it, naming the file
                pass
            with self._lock:
                self._done += 1
