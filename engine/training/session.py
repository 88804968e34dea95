"""The state of one training run and the steps ``trainer._run`` drives.

A :class:`Session` is a :class:`~loupe.engine.training.learner.Learner` (model, optimizer,
image cache, batch loaders, loop context) with a run folder, a history and checkpoints. It
is built fresh (:func:`build_session`) or from a run's checkpoint (:func:`restore_session`);
both end in the same object, so a resumed run executes the very code an uninterrupted one
does. Out-of-memory retries, checkpoints and per-epoch warnings live here.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from loupe.engine.core.errors import TrainingError
from loupe.engine.core.events import EpochEnded, Started, WarningEvent
from loupe.engine.training import distributed, runs  # H10 distributed
from loupe.engine.training.head_fit import linear_head  # H10: probe_epoch via distributed
from loupe.engine.training.learner import Learner
from loupe.engine.training.loop import NonFiniteLoss, Scores, score, train_epoch
from loupe.engine.training.metrics import epoch_metrics
from loupe.engine.training.schedule import Cycle, one_cycle
from loupe.engine.training.setup import imbalance_warning, random_init_message

CHECKPOINT_FORMAT = 1
# Seconds of training between checkpoint writes (see Session.save_checkpoint).
CHECKPOINT_INTERVAL_S = 30.0


@dataclass(kw_only=True)
class Session(Learner):
    """Everything a run needs between epochs (see module docstring)."""

    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    cycle: Cycle | None = None
    last_scores: Scores | None = None
    overfit_warned: bool = False
    snapshot: dict[str, Any] | None = None
    lock: runs.RunLock | None = None  # held while this process trains the run
    # The epoch (1-based) with the lowest validation loss so far and its weights.
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.writer = runs.CheckpointWriter(self.run_dir)
        self._unwritten: dict[str, Any] | None = None  # the latest epoch's, not on disk yet
        self._last_write = time.monotonic()

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    # -- setup --------------------------------------------------------------------------

    def start(self, total_epochs: int) -> None:
        """Announce the run, warn, decode the images once, then set up the batch loop."""
        plan = self.prepared.plan
        self.info = {
            **self.device.describe(), "arch": self.config.arch, "pretrained": self.pretrained,
            "classes": list(self.classes), "multi_label": self.multi_label,
            "n_train": len(plan.train), "n_valid": len(plan.valid), "epochs": total_epochs,
            "batch_size": self.batch_size, "size": self.config.size,
            "resize": self.config.resize,
            "run_dir": str(self.run_dir), "resumed_at_epoch": self.epochs_done,
            **distributed.describe(),  # H10 distributed: world_size (and the ranks' pids)
        }
        self.events(Started("train", total=total_epochs, info=self.info))
        if self.random_init:
            self.events(WarningEvent("random-init", random_init_message(self.config)))
        message = imbalance_warning(plan)
        if message:
            self.events(WarningEvent("imbalance", message))
        # Decoding overlaps the first epoch, in the order it takes the images: the frozen
        # phase's linear probe reads the training images in order, SGD epochs shuffled.
        done = self.epochs_done
        probe = not self.random_init and done == 0 and self.config.freeze_epochs > 0
        first = [li.item for li in plan.train] if probe else self.first_epoch_items(done)
        self.prepare_batches([li.item for li in (*plan.train, *plan.valid)], first=first)

    # -- phases and epochs --------------------------------------------------------------

    def enter_phase(self, frozen: bool, cycle: Cycle, epoch_in_phase: int) -> None:
        """Freeze (all but head and norm layers) or unfreeze; start this phase's cycle."""
        self.freeze(frozen)
        distributed.wrap_for_phase(self)  # H10 distributed: DDP over what trains this phase
        self.cycle = cycle
        self._reschedule(epoch_in_phase)

    def _reschedule(self, epoch_in_phase: int) -> None:
        steps = len(self.train_loader)
        assert self.ctx is not None and self.cycle is not None
        self.ctx.scheduler = one_cycle(
            self.optimizer, self.cycle, steps, start_step=epoch_in_phase * steps
        )

    def size_for(self, epoch: int, total: int) -> int:
        """Progressive resizing: the first half of the epochs at half size (÷32 rounded)."""
        size = self.config.size
        if not self.config.progressive_resize or epoch >= total // 2:
            return size
        return min(size, max(32, int(size / 2 / 32 + 0.5) * 32))

    def run_epoch(
        self, epoch: int, total: int, phase: str, cycle: Cycle, first_epoch: int
    ) -> dict[str, Any]:
        """One epoch; on CUDA out-of-memory, halve the batch size and rerun the epoch.

        The state to go back to is the CPU copy taken for the previous epoch's checkpoint
        (or, before the first epoch, a copy taken now).
        """
        if self.snapshot is None:
            self.snapshot = self._snapshot()
        while True:
            try:
                return self._epoch(epoch, total, phase, epoch - first_epoch)
            except torch.OutOfMemoryError:
                self._after_oom(self.snapshot, epoch - first_epoch)

    def _epoch(self, epoch: int, total: int, phase: str, in_phase: int) -> dict[str, Any]:
        assert self.ctx is not None
        start = time.monotonic()
        size = self.size_for(epoch, total)
        per_epoch = self.history[-1]["seconds"] if self.history else 0.0
        head = linear_head(self.model) if phase == "frozen" else None
        if head is not None:  # the frozen phase as a linear probe (see head_fit)
            loader = self.probe_loader if in_phase == 0 else self.train_loader
            train_loss = distributed.probe_epoch(  # H10 distributed: shared features
                self.ctx, self.model, head, loader, epoch, in_phase, size,
                multi_label=self.multi_label,
            )
        else:
            train_loss = train_epoch(
                self.ctx, self.train_loader, epoch, size, per_epoch * (total - epoch - 1)
            )
        train_loss = distributed.finish_train_epoch(self.model, train_loss)  # H10 distributed
        scores = self.validate(epoch, size)
        if not math.isfinite(scores.loss):
            raise NonFiniteLoss(scores.loss, epoch, None, where="validation")
        metrics = epoch_metrics(
            scores.logits, scores.targets, multi_label=self.multi_label,
            thresholds=self.thresholds,
        )
        self.last_scores = scores if size == self.config.size else None
        return {
            "epoch": epoch + 1, "phase": phase, "train_loss": train_loss,
            "valid_loss": scores.loss, **metrics, "size": size,
            "batch_size": self.batch_size, "seconds": time.monotonic() - start,
        }

    def validate(self, epoch: int, size: int) -> Scores:
        """The validation set scored as every model is scored (:func:`loop.score`)."""
        assert self.ctx is not None
        return distributed.gather_scores(score(  # H10 distributed: every rank's share
            self.model, self.valid_loader, size, device=self.device, mean=self.ctx.mean,
            std=self.ctx.std, multi_label=self.multi_label, epoch=epoch, cancel=self.cancel,
        ))

    def _snapshot(self) -> dict[str, Any]:
        """CPU copies of model and optimizer state: what an OOM retry goes back to."""
        return {
            "model": _cpu_copy(self.model.state_dict()),
            "optimizer": _cpu_copy(self.optimizer.state_dict()),
        }

    def _after_oom(self, snapshot: dict[str, Any], epoch_in_phase: int) -> None:
        distributed.refuse_oom_retry(self.device.name, self.batch_size)  # H10 distributed
        if self.device.kind == "cuda":
            torch.cuda.empty_cache()
        if self.batch_size <= 1:
            raise TrainingError(
                f"out of {self.device.name} memory even with batch size 1 at "
                f"{self.config.size} px; try a smaller --size or a smaller --arch"
            )
        old = self.batch_size
        self.model.load_state_dict(snapshot["model"])
        self.optimizer.load_state_dict(snapshot["optimizer"])
        self.batch_size = old // 2
        self.make_loaders()
        self._reschedule(epoch_in_phase)
        self.events(
            WarningEvent(
                "oom-retry",
                f"out of {self.device.name} memory with batch size {old}; "
                f"retrying the epoch with batch size {self.batch_size}",
            )
        )

    def epoch_finished(self, row: dict[str, Any], total: int) -> None:
        """Announce the epoch, checkpoint, log the metrics line, watch for overfitting.

        The event goes first: a GUI redraws its table and curves on it, and that work
        needs the GIL in many short stretches. Taking the state copy releases the GIL
        (torch copies), while the checkpoint writer's flattening and the metrics write
        take it; announcing first lets the GUI finish before they start, instead of
        queueing behind them (a 30-40 ms stall of the window at every epoch's end).
        The checkpoint is written whatever the callback does.
        """
        self.history.append(row)
        numbers = {k: float(v) for k, v in row.items() if k not in ("epoch", "phase")}
        try:
            self.decoding_finished()
            self.events(EpochEnded(row["epoch"], total, row["phase"], numbers))
        finally:
            if distributed.is_main():  # H10 distributed: rank 0 alone writes run files
                self.save_checkpoint(total)
                runs.append_metrics(self.run_dir, row)
        if not self.overfit_warned and _overfitting(self.history):
            self.overfit_warned = True
            self.events(
                WarningEvent(
                    "overfitting",
                    "validation loss rose two epochs in a row while training loss fell: "
                    "the model is starting to memorise the training images; fewer epochs "
                    "or more data/augmentation may do better",
                )
            )

    def save_checkpoint(self, total: int) -> None:
        """Copy the state now; write it to disk when due, on the writer thread.

        The copy (taken synchronously, so it is the epoch's exact state) is what a stop,
        a failure or an out-of-memory retry goes back to. Writing it costs a noticeable
        share of a short CPU epoch (a ResNet-18 checkpoint with its AdamW moments is
        134 MB), so it goes to disk after the last epoch and otherwise only when
        :data:`CHECKPOINT_INTERVAL_S` of training have passed since the last write; a run
        that is stopped or fails writes its latest copy on the way out (:meth:`flush`).
        Only a killed process (power cut, ``kill -9``) can lose epochs, at most that
        interval's worth.
        """
        self.snapshot = self._snapshot()
        self._note_best(self.snapshot["model"])
        self._unwritten = {
            "format": CHECKPOINT_FORMAT, "epochs_done": self.epochs_done,
            "total_epochs": total, "batch_size": self.batch_size, "history": self.history,
            "mean": list(self.mean or ()), "std": list(self.std or ()),
            "pretrained": self.pretrained, "random_init": self.random_init,
            "weights_tag": self.weights_tag,
            "world_size": distributed.world_size(),  # H10 distributed
        }
        due = time.monotonic() - self._last_write >= CHECKPOINT_INTERVAL_S
        if due or self.epochs_done >= total:
            self._write_checkpoint()

    def _note_best(self, model_state: dict[str, torch.Tensor]) -> None:
        """Keep the weights of the epoch with the lowest validation loss so far
        (:func:`runs.best_epoch`; a copy already made for the checkpoint: nothing more
        is copied)."""
        if runs.best_epoch(self.history) == self.epochs_done:
            self.best_epoch, self.best_state = self.epochs_done, model_state

    def _write_checkpoint(self) -> None:
        """Submit the pending checkpoint; while the run is not over and an earlier epoch
        scored better than the last, its weights go in too (a stopped run's model is made
        from them: :mod:`loupe.engine.training.salvage`)."""
        if self._unwritten is None or self.snapshot is None:
            return
        scalars, self._unwritten = self._unwritten, None
        best = None
        if self.best_epoch is not None:
            scalars["best_epoch"] = self.best_epoch
            unfinished = scalars["epochs_done"] < scalars["total_epochs"]
            if unfinished and self.best_epoch != scalars["epochs_done"]:
                best = self.best_state
        self.writer.submit(self.snapshot["model"], self.snapshot["optimizer"], scalars, best)
        self._last_write = time.monotonic()

    def flush(self) -> None:
        """Write the latest epoch's state if it is not on disk yet, and wait until it is
        (before finishing, stopping or failing)."""
        self._write_checkpoint()
        self.writer.wait()

    # -- the end --------------------------------------------------------------------------

    def final_report(self) -> dict[str, Any]:
        from loupe.engine.training.report import build_report

        scores = self.last_scores
        if scores is None:
            scores = self.validate(self.epochs_done, self.config.size)
        return build_report(
            scores, self.prepared.plan.valid, self.classes,
            multi_label=self.multi_label, thresholds=self.thresholds,
        )

    def save_bundle(self, report: dict[str, Any]) -> Path:
        from loupe.engine.core.formats import BUNDLE_SUFFIX
        from loupe.engine.data.transforms import Preprocessing
        from loupe.engine.models.bundle import BundleMeta, save_bundle
        from loupe.engine.training.report import training_summary

        assert self.mean is not None and self.std is not None
        meta = BundleMeta(
            arch=self.config.arch, classes=self.classes,
            preprocessing=Preprocessing.for_size(
                self.config.size, self.mean, self.std, resize=self.config.resize
            ),
            multi_label=self.multi_label,
            thresholds=self.thresholds if self.multi_label else None,
            training=training_summary(
                prepared=self.prepared, config=self.config, run_dir=self.run_dir,
                history=self.history, report=report, pretrained=self.pretrained,
                batch_size=self.batch_size,
            ) | {"world_size": distributed.world_size()},  # H10 distributed
        )
        path = Path(self.config.out) if self.config.out else self.run_dir / f"model{BUNDLE_SUFFIX}"
        if not distributed.is_main():  # H10 distributed: rank 0 alone writes the bundle
            return path.expanduser()
        self.model.eval()
        return save_bundle(path.expanduser(), self.model, meta)


def _cpu_copy(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu_copy(v) for v in obj]
    return copy.copy(obj)


def _overfitting(history: list[dict[str, Any]]) -> bool:
    if len(history) < 3:
        return False
    v = [row["valid_loss"] for row in history[-3:]]
    t = [row["train_loss"] for row in history[-3:]]
    return v[0] < v[1] < v[2] and t[0] > t[1] > t[2]
