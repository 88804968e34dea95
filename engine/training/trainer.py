"""fastai's ``fine_tune`` / ``fit_one_cycle`` as a GUI-free engine call.

``train(prepared, config)`` builds the model (pretrained body if weights are on this
machine, else random init — said loudly), runs the phases, checkpoints every epoch into
its run folder and saves a ``.loupe`` bundle. ``resume(run)`` continues a run from its
last finished epoch. Events go to ``on_event``; ``cancel`` is checked every batch.

Phases, as fastai: with pretrained weights, ``freeze_epochs`` with the body frozen (its
normalization layers still train) at one-cycle pct_start 0.99, then ``epochs`` unfrozen
at half the rate with discriminative rates ``slice(lr/100, lr)``, pct_start 0.3, div 5.
From random init: ``epochs`` of plain ``fit_one_cycle`` on everything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from loupe.engine.core.device import torch_threads
from loupe.engine.core.errors import CancelledError, TrainingError
from loupe.engine.core.events import (
    Cancelled,
    CancelToken,
    EventCallback,
    Failed,
    Finished,
    ThrottledCallback,
    ignore_event,
)
from loupe.engine.training import distributed, runs  # H10 distributed
from loupe.engine.training.builders import build_session, load_run_config, restore_session
from loupe.engine.training.config import TrainConfig
from loupe.engine.training.loop import NonFiniteLoss
from loupe.engine.training.schedule import Cycle, discriminative_lrs
from loupe.engine.training.session import Session

LR_ADVICE = "lower the learning rate (e.g. --lr {lr:g})"


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced: the bundle, its run folder, metrics and summary."""

    bundle_path: Path
    run_dir: Path
    metrics: dict[str, Any]
    history: tuple[dict[str, Any], ...]
    report: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Phase:
    """One ``fit_one_cycle`` call over global epochs [first_epoch, first_epoch + epochs)."""

    name: str
    first_epoch: int
    cycle: Cycle
    frozen: bool

    def covers(self, epoch: int) -> bool:
        return self.first_epoch <= epoch < self.first_epoch + self.cycle.epochs


def plan_phases(config: TrainConfig, *, random_init: bool, n_groups: int) -> list[Phase]:
    """fine_tune's two phases, or fit_one_cycle's one when training from scratch."""
    lr = config.max_lr
    if random_init:
        return [Phase("scratch", 0, Cycle(config.epochs, (lr,) * n_groups), False)]
    phases = []
    if config.freeze_epochs:
        frozen_lrs = (lr / 10,) * (n_groups - 1) + (lr,)  # fastai's slice(lr)
        phases.append(
            Phase("frozen", 0, Cycle(config.freeze_epochs, frozen_lrs, pct_start=0.99), True)
        )
    unfrozen = Cycle(config.epochs, discriminative_lrs(lr / 2, n_groups), pct_start=0.3, div=5)
    phases.append(Phase("unfrozen", config.freeze_epochs, unfrozen, False))
    return phases


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch (the batch loader derives its own from it)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(
    prepared: Any,
    config: TrainConfig,
    *,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> TrainResult:
    """Train on ``prepared`` (loupe.engine.data.dataset.PreparedData) as ``config`` says.

    Raises TrainingError (with advice) when training cannot go on, CancelledError when
    ``cancel`` was set; in both cases the last finished epoch's checkpoint is kept.
    """
    events = ThrottledCallback(distributed.main_events(on_event))  # H10: rank 0 reports
    session: Session | None = None
    try:
        if config.out is not None and distributed.is_main():  # H10: rank 0 writes it
            from loupe.engine.core.outputs import check_output, check_writable

            root = getattr(getattr(prepared, "spec", None), "root", None)
            pretrained = config.pretrained if config.pretrained not in ("auto", "none") else None
            check_output(config.out, inputs=(pretrained,), folders=(root,), option="the model file")
            check_writable(config.out)
        seed_everything(config.seed)
        with (
            distributed.joined(config.device),  # H10 distributed: the process group
            torch_threads(distributed.cap_threads(config.threads)),  # H10: cores per process
        ):
            session = build_session(prepared, config, events, cancel)
            return _run(session)
    except BaseException as err:
        err = distributed.explain(err, session, cancel)  # H10 distributed: a lost peer
        _report_failure(err, session, events)
        raise err
    finally:
        if session is not None:
            session.close()
            if session.lock is not None:
                session.lock.release()


def resume(
    run: str | Path,
    prepared: Any | None = None,
    *,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> TrainResult:
    """Continue run ``run`` (a run folder or id) from its last finished epoch.

    ``prepared`` defaults to rebuilding the data from the run's data.json; either way the
    split must be the one the run started with, or the run would silently change data.
    """
    events = ThrottledCallback(distributed.main_events(on_event))  # H10: rank 0 reports
    session: Session | None = None
    lock: runs.RunLock | None = None
    try:
        run_dir = runs.find_run(run)
        # Before anything reads or rewrites the run: a second resume must not touch it.
        if distributed.is_main():  # H10 distributed: rank 0 holds the run
            lock = runs.RunLock(run_dir).acquire()
        runs.refuse_finished(run_dir)
        saved = load_run_config(run_dir)
        with (
            distributed.joined(saved.device),  # H10 distributed: the process group
            torch_threads(distributed.cap_threads(saved.threads)),  # H10: cores per process
        ):
            session = restore_session(run_dir, prepared, events, cancel)
            return _run(session)
    except BaseException as err:
        err = distributed.explain(err, session, cancel)  # H10 distributed: a lost peer
        _report_failure(err, session, events)
        raise err
    finally:
        if session is not None:
            session.close()
        if lock is not None:
            lock.release()


def _report_failure(err: BaseException, session: Session | None, events: EventCallback) -> None:
    """Make the last checkpoint durable, record the status, then send the final event."""
    # Ctrl+C that got past the CLI's cancel token is still the user stopping the run.
    cancelled = isinstance(err, CancelledError | KeyboardInterrupt)
    status = "cancelled" if cancelled else "failed"
    if session is not None and distributed.is_main():  # H10: rank 0 writes run files
        fields = {"status": status, "error": str(err) or type(err).__name__}
        try:
            session.flush()
        except Exception as write_error:  # already failing: record it, keep the first error
            fields["checkpoint_error"] = str(write_error)
        try:
            runs.update_record(session.run_dir, **fields)
        except OSError:  # a full disk: the run's own error is still the one reported
            pass
    if cancelled:
        events(Cancelled("train", str(err) or "interrupted"))
    elif isinstance(err, TrainingError):
        events(Failed("train", str(err), getattr(err, "advice", "")))
    elif isinstance(err, Exception):
        events(Failed("train", str(err) or type(err).__name__))


def _run(session: Session) -> TrainResult:
    """Run the remaining epochs of every phase, then write the bundle."""
    phases = plan_phases(
        session.config, random_init=session.random_init, n_groups=session.n_groups
    )
    total = phases[-1].first_epoch + phases[-1].cycle.epochs
    session.start(total)
    current: Phase | None = None
    for epoch in range(session.epochs_done, total):
        phase = next(p for p in phases if p.covers(epoch))
        if phase is not current:
            session.enter_phase(phase.frozen, phase.cycle, epoch - phase.first_epoch)
            current = phase
        try:
            row = session.run_epoch(epoch, total, phase.name, phase.cycle, phase.first_epoch)
        except NonFiniteLoss as err:
            raise _nan_error(session, err) from err
        session.epoch_finished(row, total)
    return _finish(session)


def _nan_error(session: Session, err: Exception) -> TrainingError:
    session.flush()
    lr = session.config.max_lr / 10
    advice = LR_ADVICE.format(lr=lr)
    kept = (
        f"the last good checkpoint (epoch {session.epochs_done}) is kept in {session.run_dir}"
        if session.epochs_done
        else "no epoch finished, so there is no checkpoint"
    )
    error = TrainingError(f"training stopped: the {err}; {advice}; {kept}")
    error.advice = advice  # type: ignore[attr-defined]
    return error


def _finish(session: Session) -> TrainResult:
    session.flush()
    report = session.final_report()
    bundle_path = session.save_bundle(report)
    metrics = dict(report.get("metrics", {}))
    if session.history:
        metrics.update({k: v for k, v in session.history[-1].items() if k != "phase"})
    metrics["world_size"] = distributed.world_size()  # H10 distributed: in the final line
    if distributed.is_main():  # H10 distributed: rank 0 writes run files
        runs.update_record(session.run_dir, status="finished", bundle=str(bundle_path), error=None)
    session.events(
        Finished(
            "train",
            result={"model": str(bundle_path), "run_dir": str(session.run_dir), "metrics": metrics},
        )
    )
    return TrainResult(
        bundle_path=bundle_path,
        run_dir=session.run_dir,
        metrics=metrics,
        history=tuple(session.history),
        report=report,
        info=dict(session.info),
    )
