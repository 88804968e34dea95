"""One rank's share of each epoch's batches (distributed training; see distributed.py).

Each epoch's order is the single-process one (one shuffle seeded by (seed, epoch), the same
on every rank). Its full training batches of ``batch_size`` (per process) are dealt round
robin, so global step *s* is batches *sW .. sW+W-1*: the images one process would take in
one step of ``W × batch_size``, no image on two ranks. Every rank gets
``N // (W × batch_size)`` batches (equal counts, or DDP's collectives would wait forever);
the remainder, fewer than ``W × batch_size`` images and different ones each epoch, is
dropped, as one process drops its last incomplete batch. Evaluation batches are split into
contiguous blocks, so the blocks in rank order are the loader's own order.
"""

from __future__ import annotations

from loupe.engine.training.batches import BatchLoader


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random draws (crops, augmentation, dropout)."""
    return seed if rank == 0 else (seed + 1_000_003 * rank) % 2**32


class RankLoader(BatchLoader):
    """One rank's share of a :class:`BatchLoader`'s batches.

    ``whole`` is the single-process loader (same items, order seed and batch size); this
    loader takes every W-th of its full training batches, or one contiguous block of its
    evaluation batches, so the order and the batches themselves stay the loader's own.
    """

    whole: BatchLoader
    rank: int
    world_size: int

    @classmethod
    def share(cls, loader: BatchLoader, rank: int, world_size: int) -> RankLoader:
        whole = BatchLoader.__new__(BatchLoader)
        whole.__dict__.update(loader.__dict__)
        if loader.train:
            whole.batch_size = max(1, min(loader.batch_size, len(loader.items) // world_size))
        mine = cls.__new__(cls)
        mine.__dict__.update(whole.__dict__)
        mine.whole, mine.rank, mine.world_size = whole, rank, world_size
        if loader.train:
            mine.seed = rank_seed(loader.seed, rank)  # crops; the order is whole's
        return mine

    def _block(self, count: int) -> tuple[int, int]:
        return self.rank * count // self.world_size, (self.rank + 1) * count // self.world_size

    def __len__(self) -> int:
        count = len(self.whole)
        if self.train:
            return count // self.world_size
        start, stop = self._block(count)
        return stop - start

    def batch_indices(self, epoch: int) -> list[list[int]]:
        batches = self.whole.batch_indices(epoch)
        if self.train:
            steps = len(batches) // self.world_size
            return batches[self.rank : steps * self.world_size : self.world_size]
        start, stop = self._block(len(batches))
        return batches[start:stop]
