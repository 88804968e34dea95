"""An in-process batch loader over the decoded-image cache.

Why not ``torch.utils.data.DataLoader`` with worker processes? Worker processes exist
to hide JPEG decoding, and here there is none after the first epoch: the ImageCache
holds every image as a presized uint8 tensor, so making a batch is a crop, a small
resize and a stack — a few milliseconds of torch ops that release the GIL. One
background thread prefetching the next batches is enough to keep the device busy, and
it avoids everything worker processes bring on a desktop: the spawn start method
re-importing the app on macOS/Windows, pickling the dataset, /dev/shm limits and
orphaned processes when the GUI quits. Threads also share the cache's RAM.

Resize methods (:mod:`loupe.engine.data.resize`): ``crop`` caches the short side at 1.15 × size and
takes fastai's random resized crop (35-100 % of the area, aspect 3/4-4/3). ``squish`` and
``pad`` cache the whole picture as a size×size square: their point is that nothing is cut
off, so training takes only a mild random zoom (a square of 75-100 % of the area, at most
1.15× zoom, the same margin crop's presize gives) and leaves the rest of the variety to the
batch augmentation (flips, rotation, lighting in ``loupe.engine.training.augment``). A crop of a
padded square may trim some border and a little of the picture's edge; that is the zoom.

Determinism: every random choice of an epoch (order, crop boxes) comes from one
``random.Random`` seeded by ``(seed, epoch)`` and is drawn in a fixed order by the single
producer thread, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
import queue
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from loupe.engine.data.resize import LEGACY_RESIZE

Fetch = Callable[[Any], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# fastai's aug_transforms-era defaults for RandomResizedCrop in fine-tuning.
MIN_SCALE = 0.35
RATIO = (3 / 4, 4 / 3)
# squish / pad: the smallest share of the square's area a training crop keeps (zoom ≤ 1.15).
SQUARE_MIN_SCALE = 0.75


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """One integer per (seed, epoch, stream): independent, reproducible random streams."""
    return (seed * 1_000_003 + epoch * 9_176 + stream * 7_919) % (2**63)


def random_crop_box(rng: random.Random, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's RandomResizedCrop.get_params, from ``rng``."""
    area = height * width
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(MIN_SCALE, 1.0)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def random_square_box(rng: random.Random, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, side, side): a random square of ``SQUARE_MIN_SCALE``-100 % of the area."""
    full = min(height, width)
    side = max(1, min(full, round(full * math.sqrt(rng.uniform(SQUARE_MIN_SCALE, 1.0)))))
    return rng.randint(0, height - side), rng.randint(0, width - side), side, side


def train_crop(
    u8: torch.Tensor, size: int, rng: random.Random, resize: str = LEGACY_RESIZE
) -> torch.Tensor:
    """A random resized crop of a cached uint8 image to ``size``×``size`` (still uint8).

    ``crop`` draws fastai's random resized crop, ``squish``/``pad`` a mild square zoom.
    """
    from torchvision.transforms.v2 import functional as tvf

    pick = random_crop_box if resize == "crop" else random_square_box
    top, left, h, w = pick(rng, u8.shape[-2], u8.shape[-1])
    return tvf.resized_crop(u8, top, left, h, w, [size, size], antialias=True)


def eval_crop(
    u8: torch.Tensor, size: int, presize: int | None = None, resize: str = LEGACY_RESIZE
) -> torch.Tensor:
    """Validation view: exactly what prediction computes (float 0..1).

    ``crop``: the center crop. ``presize`` defaults to the standard one for ``size``. The
    cache is presized for the final size; for a smaller progressive-resizing size we first
    shrink to that size's presize so the crop covers the same field of view. ``squish`` and
    ``pad``: the whole cached square at ``size``.
    """
    from loupe.engine.data.cache import presize_for
    from loupe.engine.data.transforms import eval_tensor_from_cached

    if resize != "crop":
        return eval_tensor_from_cached(u8, size, resize)
    presize = presize or presize_for(size)
    if min(u8.shape[-2:]) != presize:
        from torchvision.transforms.v2 import functional as tvf

        u8 = tvf.resize(u8, presize, antialias=True)
    return eval_tensor_from_cached(u8, size)


class BatchLoader:
    """Batches of (images, targets, indices) for one split, made by a prefetch thread.

    ``fetch(item)`` returns the cached uint8 3×H×W tensor (``ImageCache.get``);
    ``targets[i]`` belongs to ``items[i]``. Training batches are shuffled, randomly
    cropped, uint8 (4× less to copy to a GPU) and the last incomplete batch is dropped
    (a batch of one breaks BatchNorm); evaluation batches are in order, center-cropped
    (or whole, for ``squish``/``pad``), float 0..1. ``resize`` must be the method the
    cache behind ``fetch`` was made with.
    """

    def __init__(
        self,
        fetch: Fetch,
        items: Sequence[Any],
        targets: torch.Tensor,
        *,
        batch_size: int,
        train: bool,
        seed: int = 0,
        pin_memory: bool = False,
        prefetch: int = 3,
        eval_presize: int | None = None,
        resize: str = LEGACY_RESIZE,
    ) -> None:
        if len(items) != len(targets):
            raise ValueError(f"{len(items)} items but {len(targets)} targets")
        self.fetch = fetch
        self.items = list(items)
        self.targets = targets
        self.batch_size = max(1, min(batch_size, len(self.items) or 1))
        self.train = train
        self.seed = seed
        self.pin_memory = pin_memory
        self.prefetch = prefetch
        self.eval_presize = eval_presize
        self.resize = resize

    def __len__(self) -> int:
        n = len(self.items)
        if self.train:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def batch_indices(self, epoch: int) -> list[list[int]]:
        """The sample indices of each batch of ``epoch`` (shuffled when training)."""
        order = list(range(len(self.items)))
        if self.train:
            random.Random(epoch_seed(self.seed, epoch, 1)).shuffle(order)
        bs = self.batch_size
        return [order[i : i + bs] for i in range(0, len(self) * bs, bs)][: len(self)]

    def epoch(self, epoch: int, size: int) -> EpochBatches:
        """The batches of ``epoch`` at ``size`` px; use as a context manager."""
        return EpochBatches(self, epoch, size)

    def make_batch(self, indices: list[int], size: int, rng: random.Random) -> Batch:
        fetched = [self.fetch(self.items[i].item) for i in indices]
        if self.train:
            images = [train_crop(u8, size, rng, self.resize) for u8 in fetched]
        else:
            images = [eval_crop(u8, size, self.eval_presize, self.resize) for u8 in fetched]
        x = torch.stack(images)
        index = torch.tensor(indices, dtype=torch.long)
        y = self.targets[index]
        if self.pin_memory:
            x, y = x.pin_memory(), y.pin_memory()
        return x, y, index


_DONE = object()


class EpochBatches:
    """Iterates one epoch's batches while a daemon thread prepares the next ones.

    Closing (leaving the ``with`` block, also on cancel or error) stops the thread
    within one batch, so a cancelled run does not leave work running behind it.
    """

    def __init__(self, loader: BatchLoader, epoch: int, size: int) -> None:
        self._loader = loader
        self._epoch = epoch
        self._size = size
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, loader.prefetch))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="loupe-batches", daemon=True)
        self._started = False

    def __len__(self) -> int:
        return len(self._loader)

    def __enter__(self) -> EpochBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Batch]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            got = self._queue.get()
            if got is _DONE:
                return
            if isinstance(got, BaseException):
                raise got
            yield got

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        if self._started:
            self._thread.join()

    def _put(self, value: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        loader = self._loader
        rng = random.Random(epoch_seed(loader.seed, self._epoch, 2))
        try:
            for indices in loader.batch_indices(self._epoch):
                if self._stop.is_set():
                    return
                if not self._put(loader.make_batch(indices, self._size, rng)):
                    return
        except BaseException as err:  # handed to the consumer, re-raised there
            self._put(err)
            return
        self._put(_DONE)
