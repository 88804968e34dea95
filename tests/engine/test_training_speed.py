"""What makes training fast without changing what it computes: epoch 1 overlaps decoding
with training (engine/data/prefetch.py), and checkpoints go to disk when due, not after
every short epoch, while a stop or failure still keeps the last finished epoch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from loupe.engine.core.errors import CancelledError, DatasetError
from loupe.engine.core.events import CancelToken, EpochEnded, Finished, Started
from loupe.engine.data import cache as cache_module
from loupe.engine.data.prefetch import Prefetch
from loupe.engine.training import learner as learner_module
from loupe.engine.training import runs, train
from loupe.engine.training import session as session_module
from loupe.engine.training.runs import load_checkpoint
from tests.engine.test_training_trainer import (
    _config,
    _counting_step,
    _make_folder,
    _prepared,
    _Recorder,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _make_folder(tmp_path_factory.mktemp("speed"), {"red": 24, "blue": 24}, seed=5)


def _slow_decoding(monkeypatch, seconds: float) -> None:
    real = cache_module.load_presized

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_module, "load_presized", slow)


def _started_sessions(monkeypatch) -> list:
    """The sessions that start while the test runs, in order (to read their cache)."""
    sessions: list = []
    real_start = session_module.Session.start

    def start(self, total_epochs):
        sessions.append(self)
        real_start(self, total_epochs)

    monkeypatch.setattr(session_module.Session, "start", start)
    return sessions


# -- epoch 1 overlaps decoding ----------------------------------------------------------------


def test_the_first_batch_trains_before_every_image_is_decoded(folder, monkeypatch):
    """With decoding slowed to 40 ms an image, the first SGD step must come while the
    decode threads are still working: the old behaviour (decode everything, then
    train) reaches the first step with every image decoded."""
    prepared = _prepared(folder)
    total = len(prepared.plan.train) + len(prepared.plan.valid)
    monkeypatch.setattr(learner_module, "STATS_SAMPLE", 8)
    _slow_decoding(monkeypatch, 0.04)
    decoded_at_step: list[int] = []
    sessions = _started_sessions(monkeypatch)

    def record(n, x):
        if n == 1:
            decoded_at_step.append(sessions[0].cache.decode_count)

    _counting_step(monkeypatch, record)
    events = _Recorder()
    result = train(prepared, _config(epochs=2, batch_size=8), on_event=events)
    assert decoded_at_step and decoded_at_step[0] < total
    # Every image is still decoded exactly once, and the end of decoding is reported
    # after the first epoch (with the cache's counters), not before training.
    assert sessions[0].cache.decode_count == total
    kinds = [(type(e).__name__, getattr(e, "task", None)) for e in events
             if isinstance(e, Started | Finished | EpochEnded)]
    first_epoch = kinds.index(("EpochEnded", None))
    assert kinds.index(("Finished", "cache")) < first_epoch
    assert kinds.index(("Started", "train")) < kinds.index(("Started", "cache"))
    assert events.of(Finished, "cache")[0].result["decode_count"] == total
    assert result.history[-1]["epoch"] == 2


def test_statistics_come_from_the_first_images_of_the_first_epoch(folder, monkeypatch):
    """A from-scratch run's normalization is estimated from the first STATS_SAMPLE
    training images in epoch 1's order: the images the first batches need anyway."""
    from loupe.engine.data import stats

    prepared = _prepared(folder)
    monkeypatch.setattr(learner_module, "STATS_SAMPLE", 8)
    seen: list[list] = []
    real = stats.compute_mean_std

    def spy(cache, items, **kwargs):
        seen.append(list(items))
        return real(cache, items, **kwargs)

    monkeypatch.setattr(stats, "compute_mean_std", spy)
    sessions = _started_sessions(monkeypatch)
    train(prepared, _config(epochs=1))
    assert len(seen) == 1
    assert seen[0] == sessions[0].first_epoch_items(0)[:8]


def test_an_unreadable_image_is_still_reported_by_name(tmp_path, monkeypatch):
    """A decode thread that meets a broken file leaves it to the batch that needs it,
    which raises the DatasetError naming the file (in the training thread)."""
    root = _make_folder(tmp_path / "broken", {"red": 12, "blue": 12})
    prepared = _prepared(root)
    victim = prepared.plan.train[3].item.path
    real = cache_module.load_presized

    def broken(path, *args, **kwargs):
        if Path(path) == Path(victim):
            raise OSError("truncated file")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cache_module, "load_presized", broken)
    with pytest.raises(DatasetError, match=str(victim.name)):
        train(prepared, _config(epochs=1))


def test_prefetch_stops_when_asked_and_on_cancel():
    started: list[int] = []
    gate = threading.Event()

    def fetch(item):
        started.append(item)
        gate.wait(5)

    prefetch = Prefetch(fetch, list(range(100)), workers=2)
    while len(started) < 2:
        time.sleep(0.01)
    prefetch.stop()
    gate.set()
    prefetch.wait()
    assert len(started) == 2 and prefetch.done == 2

    cancel = CancelToken()
    cancel.cancel()
    calls: list[int] = []
    cancelled = Prefetch(calls.append, list(range(100)), workers=2, cancel=cancel)
    cancelled.wait()
    assert calls == []


def test_a_failed_run_stops_decoding_ahead(folder, monkeypatch):
    """A run that ends during epoch 1 leaves no decode threads working behind it."""
    prepared = _prepared(folder)
    monkeypatch.setattr(learner_module, "STATS_SAMPLE", 8)
    _slow_decoding(monkeypatch, 0.05)
    sessions = _started_sessions(monkeypatch)
    def fail(n, x):
        raise RuntimeError("a bug in the first step")

    _counting_step(monkeypatch, fail)
    with pytest.raises(RuntimeError, match="first step"):
        train(prepared, _config(epochs=2))
    decoded = sessions[0].cache.decode_count
    time.sleep(0.3)  # six more decodes' time, had the threads gone on
    assert sessions[0].cache.decode_count <= decoded + 2  # at most the ones in flight
    assert decoded < len(prepared.plan.train) + len(prepared.plan.valid)


# -- checkpoints when due ---------------------------------------------------------------------


def _count_writes(monkeypatch) -> list[int]:
    writes: list[int] = []
    real = runs.save_checkpoint

    def save(run_dir, model_state, optimizer_state, scalars, *best):
        writes.append(scalars["epochs_done"])
        return real(run_dir, model_state, optimizer_state, scalars, *best)

    monkeypatch.setattr(runs, "save_checkpoint", save)
    return writes


def test_short_epochs_write_one_checkpoint_at_the_end(folder, monkeypatch):
    monkeypatch.setattr(session_module, "CHECKPOINT_INTERVAL_S", 3600.0)
    writes = _count_writes(monkeypatch)
    result = train(_prepared(folder), _config(epochs=3))
    assert writes == [3]
    _model, _optim, scalars = load_checkpoint(result.run_dir)
    assert scalars["epochs_done"] == 3


def test_epochs_longer_than_the_interval_are_each_written(folder, monkeypatch):
    monkeypatch.setattr(session_module, "CHECKPOINT_INTERVAL_S", 0.0)
    writes = _count_writes(monkeypatch)
    train(_prepared(folder), _config(epochs=3))
    assert writes == [1, 2, 3]


def test_a_stopped_run_writes_its_last_finished_epoch_on_the_way_out(folder, monkeypatch):
    """No checkpoint was due, yet a stop in epoch 3 keeps epoch 2 on disk."""
    monkeypatch.setattr(session_module, "CHECKPOINT_INTERVAL_S", 3600.0)
    writes = _count_writes(monkeypatch)
    prepared = _prepared(folder)
    per_epoch = len(prepared.plan.train) // 8
    cancel = CancelToken()
    _counting_step(monkeypatch, lambda n, x: cancel.cancel() if n == 2 * per_epoch + 1 else None)
    events = _Recorder()
    with pytest.raises(CancelledError):
        train(prepared, _config(epochs=4), on_event=events, cancel=cancel)
    assert writes == [2]
    run_dir = Path(events.of(Started, "train")[0].info["run_dir"])
    _model, _optim, scalars = load_checkpoint(run_dir)
    assert scalars["epochs_done"] == 2
    assert [row["epoch"] for row in scalars["history"]] == [1, 2]
