"""What a fit needs before its first batch, set up one way for ``train`` and ``lr_find``.

fastai's ``Learner`` holds the model, data, loss and optimizer, and its ``LRFinder`` is a
callback run by the ordinary ``fit``. Here :class:`Learner` is that shared part: device,
model and optimizer (from :mod:`loupe.engine.training.builders`), the decoded-image cache,
the targets and batch loaders, the input normalization and the loop context, and how the
body is frozen. A training :class:`~loupe.engine.training.session.Session` is a Learner with
a run folder, epochs and checkpoints; the lr finder sweeps a bare one (no run folder), so
the two cannot set up a model or its inputs differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from loupe.engine.core.device import DeviceInfo
from loupe.engine.core.events import CancelToken, EventCallback, Finished, Started, WarningEvent
from loupe.engine.data.prefetch import Prefetch
from loupe.engine.training import distributed  # H10 distributed
from loupe.engine.training.augment import Augment
from loupe.engine.training.batches import BatchLoader
from loupe.engine.training.config import TrainConfig
from loupe.engine.training.loop import LoopContext, channel_stats
from loupe.engine.training.setup import build_targets

# How many images a from-scratch run's normalization statistics are estimated from: the
# first ones of its first epoch (fastai's ``Normalize`` uses one batch; a few batches'
# worth come close to the whole set's), so that estimating them waits only for images
# the first batches need anyway.
STATS_SAMPLE = 256


@dataclass(kw_only=True)
class Learner:
    """Model, optimizer, data and loop context of one fit (see module docstring)."""

    prepared: Any
    config: TrainConfig
    events: EventCallback
    cancel: CancelToken | None
    device: DeviceInfo
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    random_init: bool
    pretrained: str
    weights_tag: str | None
    batch_size: int
    n_groups: int = 3
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    ctx: LoopContext | None = None
    prefetch: Prefetch | None = None

    def __post_init__(self) -> None:
        plan = self.prepared.plan
        self.classes: tuple[str, ...] = tuple(plan.classes)
        self.multi_label = bool(plan.multi_label)
        self.thresholds = (0.5,) * len(self.classes)
        from loupe.engine.data.cache import ImageCache, presize_for

        resize = self.config.resize
        self.cache = ImageCache(
            presize_for(self.config.size, resize), max_pixels=self.prepared.spec.max_pixels,
            resize=resize,
        )
        self.train_targets = build_targets(plan.train, self.classes, self.multi_label)
        self.valid_targets = build_targets(plan.valid, self.classes, self.multi_label)
        self.make_loaders()

    def make_loaders(self) -> None:
        """The batch loaders at the current batch size (again after an out-of-memory retry)."""
        plan, pin = self.prepared.plan, self.device.pin_memory
        self.train_loader = BatchLoader(
            self.cache.get, plan.train, self.train_targets, batch_size=self.batch_size,
            train=True, seed=self.config.seed, pin_memory=pin, resize=self.config.resize,
        )
        self.valid_loader = BatchLoader(
            self.cache.get, plan.valid, self.valid_targets, batch_size=self.batch_size,
            train=False, seed=self.config.seed, pin_memory=pin, resize=self.config.resize,
        )
        # The training images' validation view: what the frozen phase's head fit sees first.
        self.probe_loader = BatchLoader(
            self.cache.get, plan.train, self.train_targets, batch_size=self.batch_size,
            train=False, seed=self.config.seed, pin_memory=pin, resize=self.config.resize,
        )
        distributed.shard_loaders(self)  # H10 distributed: this rank's share of the batches

    def prepare_batches(
        self, items: Sequence[Any], *, first: Sequence[Any] | None = None
    ) -> LoopContext:
        """Start decoding ``items`` into the cache in background threads, choose the input
        normalization (unless a resumed run brought its own), and make the loop context.

        Decoding overlaps the first epoch (:mod:`loupe.engine.data.prefetch`): it runs in
        the order ``first`` lists (what the first pass will ask for; default the training
        loader's epoch-0 order), then the rest of ``items``. :meth:`decoding_finished`
        reports the end; :meth:`close` stops it early.
        """
        order = self._decode_order(items, first)
        info = {"presize": self.cache.presize, "resize": self.cache.resize}
        self.events(Started("cache", total=len(order), info=info))
        self.prefetch = Prefetch(self.cache.get, order, cancel=self.cancel)
        if self.mean is None or self.std is None:
            self._choose_normalization(order)
        self.ctx = self._make_context()
        return self.ctx

    def first_epoch_items(self, epoch: int) -> list[Any]:
        """The training images in the order epoch ``epoch``'s batches take them."""
        loader = self.train_loader
        return [loader.items[i].item for batch in loader.batch_indices(epoch) for i in batch]

    def _decode_order(self, items: Sequence[Any], first: Sequence[Any] | None) -> list[Any]:
        if first is None:
            first = self.first_epoch_items(0)
        seen: set[int] = set()
        order = []
        for item in (*first, *items):
            if id(item) not in seen:
                seen.add(id(item))
                order.append(item)
        return order

    def decoding_finished(self) -> None:
        """Once the first epoch asked for every image: wait for the decode threads, then
        report the cache (``Finished("cache")``, and a warning if spilling to disk failed)."""
        prefetch, self.prefetch = self.prefetch, None
        if prefetch is None:
            return
        prefetch.wait()
        stats = self.cache.stats()
        if stats["spill_error"]:
            self.events(WarningEvent("cache-spill-failed", stats["spill_error"]))
        self.events(Finished("cache", result=stats))

    def close(self) -> None:
        """Stop decoding ahead (a run that ends early leaves no work running behind it)."""
        if self.prefetch is not None:
            self.prefetch.stop()

    def _choose_normalization(self, order: Sequence[Any]) -> None:
        """Pretrained: the weights' own statistics. From scratch: the data's (fastai), from
        the first :data:`STATS_SAMPLE` training images the first epoch decodes."""
        if self.random_init:
            from loupe.engine.data.stats import compute_mean_std

            train = {id(li.item) for li in self.prepared.plan.train}
            sample = [item for item in order if id(item) in train][:STATS_SAMPLE]
            self.mean, self.std = compute_mean_std(
                self.cache, sample, sample=STATS_SAMPLE, seed=self.config.seed,
                cancel=self.cancel,
            )
        else:
            from loupe.engine.models.architectures import model_data_config

            data = model_data_config(self.config.arch, self.weights_tag)
            self.mean, self.std = tuple(data["mean"]), tuple(data["std"])

    def _make_context(self) -> LoopContext:
        assert self.mean is not None and self.std is not None
        loss_fn = (
            torch.nn.BCEWithLogitsLoss() if self.multi_label else torch.nn.CrossEntropyLoss()
        )
        cfg = self.config
        return LoopContext(
            model=self.model, optimizer=self.optimizer, loss_fn=loss_fn, device=self.device,
            mean=channel_stats(self.mean, self.device), std=channel_stats(self.std, self.device),
            augment=Augment(flip=cfg.flip, rotate=cfg.rotate, lighting=cfg.lighting),
            seed=cfg.seed, scaler=self.device.make_scaler(), cancel=self.cancel,
            on_progress=self.events, frozen_norm_stats=not self.random_init,
        )

    def freeze(self, frozen: bool) -> None:
        """Freeze the body but its normalization layers (fastai's ``train_bn``), or unfreeze.

        ``fine_tune`` starts frozen; the lr finder, with pretrained weights, sweeps that phase.
        """
        from loupe.engine.models.anatomy import body_parameters, norm_parameters

        keep = {id(p) for p in norm_parameters(self.model)}
        for p in body_parameters(self.model):
            p.requires_grad_(not frozen or id(p) in keep)
