"""Training under ``torch.distributed``: the same run, its batches shared by N processes.

PyTorch ships the machinery (DistributedDataParallel, ``torchrun`` /
``torch.distributed.run``); this module is what Loupe's own loop needs to run inside it,
kept out of the loop's files so that a single-process run reads exactly as before. Every
function here is a no-op (or returns its input) when the process is not one of several.

Rank rules (docs/architecture.md repeats them in one place):

- **World.** torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``
  say who we are; :func:`joined` initialises the process group from them (``nccl`` on
  CUDA, one GPU per local rank; ``gloo`` on the CPU) and closes it after the run.
- **Rank 0 alone writes**: the run folder (config, manifest, metrics, run.json, lock),
  checkpoints, the bundle, events (so the CLI's table, JSON lines and the desktop's stream
  come from one process) and stdout. Every other rank trains silently (it prints only its
  own error) and returns.
- **Data.** Every rank scans the folder itself (no pickled plan crosses processes; each
  rank proves it can read the files it will decode; the per-machine scan index makes the
  repeat cheap) and the ranks compare a digest of the split before training
  (:func:`shard_loaders`): a node whose folder differs is an error, not a silent skew.
  Each rank decodes into its own cache (any image can land on any rank next epoch).
- **Batches** (:mod:`rank_loader`). Each epoch's order is today's (one shuffle seeded
  by (seed, epoch), the same on every rank); its full batches of ``batch_size`` (per
  process) are dealt round robin, so global step *s* is batches *sW .. sW+W-1* of that
  order: the images of one single-process step of ``W × batch_size``. Every rank gets
  ``N // (W × batch_size)`` batches; the remainder (fewer than ``W × batch_size`` images,
  different ones each epoch) is dropped, as a single process drops its last incomplete
  batch. Crops, augmentation and dropout draw from per-rank seeds (rank 0 keeps the
  run's own).
- **Validation** (and the frozen phase's features) is split into contiguous blocks of
  batches, scored on the plain model (no DDP collectives in eval) and gathered back in
  order, so every rank holds the whole validation set's logits: the epoch line, the final
  report and the overfitting check are the single-process ones. Training losses are
  averaged over ranks; BatchNorm statistics are rank 0's after each epoch.
- **Schedule.** One optimizer step per global step on every rank: the one-cycle schedule
  counts global steps (``len(train_loader)``), so it is the same on every rank and by
  epoch the same as on one process. The learning rate is not rescaled.
- **Failures.** A rank that stops (error, kill, Ctrl+C) ends the run: its peers' next
  collective fails, :func:`explain` says so in words, and rank 0 writes its latest
  checkpoint on the way out (trainer's failure path), so ``--resume`` continues, on the
  same or another number of processes (:func:`announce_resume` says which).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import math
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loupe.engine.core.device import default_threads
from loupe.engine.core.errors import CancelledError, ConfigError, DatasetError, TrainingError
from loupe.engine.core.events import CancelToken, EventCallback, WarningEvent, ignore_event
from loupe.engine.training.batches import BatchLoader
from loupe.engine.training.collectives import broadcast_text, comm_device, gather_rows
from loupe.engine.training.loop import NonFiniteLoss, Scores
from loupe.engine.training.rank_loader import RankLoader, rank_seed

# How long a collective waits for a slow peer. A peer that dies closes its sockets and
# its partners fail at once; this only bounds a peer that hangs. Generous, because the
# first collective after the scan waits for the slowest rank's scan of a large folder.
COLLECTIVE_TIMEOUT = timedelta(minutes=60)
# What a lost peer looks like in a collective's error (gloo and NCCL spellings).
_LOST_PEER = ("connection closed by peer", "connection reset by peer", "broken pipe",
              "gloo", "nccl", "timed out", "process group")


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place among the processes of one run (1 of 1 outside torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError as err:
        value = os.environ[name]
        raise ConfigError(f"environment variable {name}={value!r} is not a number") from err


def _initialised() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world() -> World:
    """The process group's view when it is initialised, else torchrun's environment."""
    local_rank = _env_int("LOCAL_RANK", 0)
    local_size = _env_int("LOCAL_WORLD_SIZE", 1)
    if _initialised():
        rank, size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    return World(rank, size, local_rank, max(1, min(local_size, size)))


def active() -> bool:
    return world().active


def grouped() -> bool:
    """Several processes and their group is open: what the collective steps need (a
    torchrun process outside :func:`joined`, such as an lr-find, works alone)."""
    return world().active and _initialised()


def is_main() -> bool:
    """True on rank 0, and in every process that is not part of a distributed run."""
    return world().is_main


def world_size() -> int:
    return world().size


def main_events(callback: EventCallback) -> EventCallback:
    """``callback`` on rank 0; elsewhere events are dropped (rank 0 alone reports)."""
    return callback if is_main() else ignore_event


def cap_threads(threads: int) -> int:
    """Split the cores among the processes of this machine (2 ranks on 8 cores: 4 each),
    so N processes never run N times as many threads as there are cores."""
    here = world()
    if not here.active:
        return threads
    share = max(1, (os.cpu_count() or 1) // here.local_size)
    return max(1, min(threads or default_threads(), share))


@contextlib.contextmanager
def joined(device: str) -> Iterator[World]:
    """Initialise the process group for the run when torchrun started several processes.

    ``device`` is the run's device choice: CUDA runs use ``nccl`` with one GPU per local
    rank, anything else ``gloo``. A group someone else initialised is used as it is and
    left open; one made here is closed on the way out.
    """
    here = world()
    if not here.active or _initialised():
        yield here
        return
    if not torch.distributed.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run one process")
    from loupe.engine.core.device import resolve_device

    backend = "gloo"
    if resolve_device(device).kind == "cuda":
        count = torch.cuda.device_count()
        if here.local_rank >= count:
            raise ConfigError(
                f"process {here.local_rank} of this machine needs GPU {here.local_rank}, but "
                f"there are {count} GPU(s); start at most {count} processes per machine"
            )
        torch.cuda.set_device(here.local_rank)
        backend = "nccl"
    torch.distributed.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    try:
        yield world()
    finally:
        with contextlib.suppress(Exception):  # a failed group may refuse; the process ends
            torch.distributed.destroy_process_group()


def share_run_dir(run_dir: Path | None) -> Path:
    """Rank 0's new run folder, on every rank (the others never create one)."""
    if not grouped():
        assert run_dir is not None
        return run_dir
    return Path(broadcast_text(str(run_dir) if run_dir is not None else None))


def describe() -> dict[str, Any]:
    """Facts for the run's Started event: the world size and, when several, the pids."""
    here = world()
    if not grouped():
        return {"world_size": 1}
    pids = gather_rows(torch.tensor([os.getpid()], dtype=torch.long))
    return {"world_size": here.size, "processes": [int(p) for p in pids.tolist()]}


# -- batches -------------------------------------------------------------------------------


def shard_loaders(learner: Any) -> None:
    """Give this rank its share of the learner's loaders, once the ranks agree on the data."""
    here = world()
    if not grouped():
        return
    _check_same_plan(learner.prepared.plan)
    n_train = len(learner.train_loader.items)
    if n_train < here.size:
        raise DatasetError(
            f"{n_train} training image(s) cannot be shared by {here.size} processes; "
            "use fewer processes or more images"
        )
    for name in ("train_loader", "valid_loader", "probe_loader"):
        loader = getattr(learner, name, None)
        if isinstance(loader, BatchLoader) and not isinstance(loader, RankLoader):
            setattr(learner, name, RankLoader.share(loader, here.rank, here.size))


def _check_same_plan(plan: Any) -> None:
    text = json.dumps(plan.manifest(), sort_keys=True)
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()
    mine = torch.frombuffer(bytearray(digest), dtype=torch.uint8).view(1, -1)
    table = gather_rows(mine)
    differ = [rank for rank in range(table.shape[0]) if not torch.equal(table[rank], table[0])]
    if differ:
        ranks = ", ".join(str(r) for r in differ)
        raise DatasetError(
            f"process(es) {ranks} see a different split of the images than process 0 (other "
            "files, labels or options): every machine needs the same folder at the same "
            "path, and every process the same data options"
        )


# -- the model -----------------------------------------------------------------------------


def wrap_for_phase(learner: Any) -> None:
    """DDP over the parameters that train in this phase (call after freezing/unfreezing).

    DDP registers the parameters that require gradients when it is built, so each phase
    gets its own wrapper. Only the loop context's model is wrapped: checkpoints, the
    bundle, evaluation and the frozen-phase features use the plain model.
    """
    here = world()
    if not grouped() or learner.ctx is None:
        return
    from torch.nn.parallel import DistributedDataParallel

    learner.ctx.seed = rank_seed(learner.config.seed, here.rank)
    previous, learner.ctx.model = learner.ctx.model, learner.model
    if isinstance(previous, DistributedDataParallel):
        del previous
        gc.collect()  # the old wrapper's gradient hooks go with it, before new ones come
    if not any(p.requires_grad for p in learner.model.parameters()):
        return
    ids = [torch.cuda.current_device()] if learner.device.kind == "cuda" else None
    learner.ctx.model = DistributedDataParallel(learner.model, device_ids=ids)


def finish_train_epoch(model: nn.Module, train_loss: float) -> float:
    """After a training pass: rank 0's norm statistics everywhere, the loss over ranks."""
    if not grouped():
        return train_loss
    device = comm_device()
    with torch.no_grad():
        for buffer in model.buffers():
            if buffer.device == device:
                torch.distributed.broadcast(buffer, 0)
            else:
                copy = buffer.to(device)
                torch.distributed.broadcast(copy, 0)
                buffer.copy_(copy)
    total = torch.tensor([train_loss], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return float(total.item()) / world_size()


def gather_scores(scores: Scores) -> Scores:
    """Every rank's validation block, in order: the whole validation set's scores."""
    if not grouped():
        return scores
    return Scores(gather_rows(scores.logits), gather_rows(scores.targets),
                  gather_rows(scores.losses))


def probe_epoch(
    ctx: Any, model: nn.Module, head: nn.Linear, loader: BatchLoader, epoch: int,
    epoch_in_phase: int, size: int, *, multi_label: bool,
) -> float:
    """The frozen phase's linear probe (:func:`head_fit.probe_epoch`) on shared features:
    each rank extracts its share, all fit the head to all of them, rank 0's head wins."""
    from loupe.engine.training import head_fit

    if not grouped():
        return head_fit.probe_epoch(
            ctx, head, loader, epoch, epoch_in_phase, size, multi_label=multi_label
        )
    plain = dataclasses.replace(ctx, model=model)  # features need forward_head: no DDP
    feats, targets = head_fit.extract_features(
        plain, loader, epoch, size, augment=epoch_in_phase > 0
    )
    feats, targets = gather_rows(feats), gather_rows(targets)
    loss = head_fit.fit_linear_head(head, feats, targets, multi_label=multi_label)
    with torch.no_grad():
        for param in head.parameters():
            torch.distributed.broadcast(param.data, 0)
    if not math.isfinite(loss):
        raise NonFiniteLoss(loss, epoch, None, where="head fit")
    if ctx.cancel is not None:
        ctx.cancel.raise_if_cancelled()
    return loss


def refuse_oom_retry(device_name: str, batch_size: int) -> None:
    """One rank cannot halve its batch alone (its peers would wait for it): stop instead."""
    if grouped():
        raise TrainingError(
            f"out of {device_name} memory with batch size {batch_size} per process; a "
            "distributed run cannot change its batch size on one process: start again with "
            "a smaller --bs or --size"
        )


# -- resume and failures -------------------------------------------------------------------


class PeerLostError(TrainingError):
    """This process stopped because another process of the run did (see :func:`explain`)."""


def announce_resume(scalars: dict[str, Any], events: EventCallback) -> None:
    """Say on how many processes a resumed run goes on, and on how many it ran before."""
    before, now = int(scalars.get("world_size", 1)), world_size()
    if before == now == 1:
        return
    batch = int(scalars.get("batch_size", 0))
    if before == now:
        message = f"resuming on {now} processes, as the run trained before"
    else:
        message = (
            f"resuming on {now} process(es); the run trained on {before} before, so each "
            f"step now takes {batch * now} images instead of {batch * before} (batch size "
            f"{batch} per process) and an epoch has {'fewer' if now > before else 'more'} "
            "steps; the learning-rate schedule still follows the epochs"
        )
    events(WarningEvent("world-size", message))


def _lost_peer(err: BaseException) -> bool:
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(err, dist_error):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(mark in text for mark in _LOST_PEER)


def explain(err: BaseException, session: Any, cancel: CancelToken | None) -> BaseException:
    """A collective that failed because a peer is gone, as the error a person can act on.

    Anything else (or any error outside a distributed run) is returned unchanged.
    """
    if not active() or not _lost_peer(err):
        return err
    if cancel is not None and cancel.cancelled:
        new: BaseException = CancelledError("stopped with the other processes of the run")
    else:
        kept = ""
        done = int(getattr(session, "epochs_done", 0) or 0) if session is not None else 0
        if done:
            kept = (f"; the checkpoint of epoch {done} is kept in "
                    f"{session.run_dir}, continue with --resume {Path(session.run_dir).name}")
        new = PeerLostError(
            f"training stopped on process {world().rank} of {world_size()}: another process "
            f"of this run stopped (it failed, was killed or lost its connection; its own "
            f"error is in its output){kept}"
        )
    new.__cause__ = err
    return new
