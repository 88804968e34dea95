"""Honest progress (issue 12): a whole-run bar whose time left is right from the first
batches, a "Training finished — view results" notice instead of a tab jump, and an
empty bar that is not shown. Times come from a fake clock, never from sleeping."""

from __future__ import annotations

import pytest

import loupe.engine.training
from loupe.desktop.pages.train_progress import RunClock
from loupe.engine.core.events import EpochEnded, Progress, Started

INFO = {"n_train": 320, "n_valid": 80, "batch_size": 8, "arch": "resnet18"}


def _epoch(clock: RunClock, epoch: int, start: float, per_batch: float, batches: int = 40,
           every: int = 1) -> float:
    """Feed one epoch of Progress at ``per_batch`` seconds a batch; return the end time."""
    now = start
    for done in range(1, batches + 1):
        now += per_batch
        if done % every == 0 or done == batches:
            clock.progress(epoch, done, batches, now)
    return now


def test_time_left_is_right_in_the_first_epoch():
    """Batch 13 of 40 in epoch 1 of 5 at 0.5 s a batch: 93.5 s of batches and five
    validation passes left, not the "00:01 left" of the epoch-average estimate."""
    clock = RunClock()
    clock.start(5, INFO)
    now = 100.0
    for done in range(1, 14):
        now += 0.5
        clock.progress(1, done, 40, now)
    left = clock.seconds_left()
    batches_left = 5 * 40 - 13
    validation = 5 * 10 * 0.5 * 0.35  # 10 validation batches an epoch, estimated
    assert left == pytest.approx(batches_left * 0.5 + validation)
    assert clock.fraction == pytest.approx(13 / 200)
    assert "epoch 1/5" in clock.text() and "batch 13/40" in clock.text()
    assert "6% of the run" in clock.text() and "01:42 left" in clock.text()


def test_time_left_follows_the_recent_batch_time_and_the_measured_validation():
    clock = RunClock()
    clock.start(3, INFO)
    end = _epoch(clock, 1, 0.0, per_batch=1.0, every=3)  # throttled events: every 3rd
    clock.epoch_ended(1, end + 4.0)  # validation took 4 s
    assert clock.valid_seconds == pytest.approx(4.0)
    # Epoch 2 runs twice as fast (e.g. the second half of progressive resizing).
    end = _epoch(clock, 2, end + 4.5, per_batch=0.5, batches=40, every=2)
    # The boundary (validation, start-up) is not batch time; the recent rate is.
    assert clock.batch_seconds == pytest.approx(0.5)
    clock.epoch_ended(2, end + 3.0)
    assert clock.epochs_ended == 2 and clock.valid_seconds == pytest.approx(3.0)
    # One epoch left: 40 batches at the recent 0.5 s, and its validation as last measured.
    assert clock.seconds_left() == pytest.approx(40 * 0.5 + 3.0)


def test_a_resumed_run_counts_its_earlier_epochs_as_done():
    clock = RunClock()
    clock.start(4, {**INFO, "resumed_at_epoch": 2})
    _epoch(clock, 3, 0.0, per_batch=0.25, batches=20)
    assert clock.fraction == pytest.approx(60 / 80)
    assert clock.seconds_left() == pytest.approx(20 * 0.25 + 2 * 10 * 0.25 * 0.35)


def test_no_time_left_before_a_batch_time_is_measured():
    clock = RunClock()
    clock.start(2, INFO)
    clock.progress(1, 1, 40, 5.0)
    assert clock.seconds_left() is None
    assert "estimating time left" in clock.text()


@pytest.fixture
def page(window, qtbot):
    window.context.mark_engine_ready()
    with qtbot.waitSignal(window.context.dataPrepared, timeout=60_000):
        window.context.open_sample()
    window.tabs.setCurrentWidget(window.train_page)
    return window.train_page


def test_the_bar_fills_for_the_whole_run_and_its_text_matches(page):
    bar = page.progress
    assert bar.isHidden()  # nothing runs: no empty box that looks like a text field
    times = iter(float(t) for t in range(1000))
    page.now = lambda: next(times)
    page._reset_view()  # what Start training does before the run's first event
    assert not bar.isHidden()
    page._on_event(Started("train", total=4, info=INFO))
    for done in range(1, 21):
        page._on_event(Progress("train", done, 40, epoch=2, loss=0.5))
    # Epoch 2 of 4, batch 20 of 40: 60 of 160 batches, whatever the epoch's own share.
    assert bar.maximum() == 1000 and bar.value() == round(60 / 160 * 1000)
    text = bar.format()
    assert "epoch 2/4" in text and "batch 20/40" in text and "38% of the run" in text
    assert " left" in text and "estimating" not in text
    page._on_event(EpochEnded(2, 4, "unfrozen", {"train_loss": 0.5, "valid_loss": 0.4,
                                                 "error_rate": 0.1, "seconds": 40.0}))
    assert page.table.row_count() == 1


def test_finishing_shows_a_notice_and_stays_on_the_train_tab(page, window, qtbot, monkeypatch,
                                                             tmp_path):
    from loupe.engine.training.trainer import TrainResult
    from tests.desktop.views_fixtures import write_bundle

    bundle = write_bundle(tmp_path / "run" / "model.loupe")

    def quick_train(prepared, config, *, on_event, cancel):
        return TrainResult(bundle_path=bundle, run_dir=bundle.parent,
                           metrics={"error_rate": 0.125}, history=())

    monkeypatch.setattr(loupe.engine.training, "train", quick_train)
    assert page.notice.isHidden()
    with qtbot.waitSignal(window.context.modelChanged, timeout=60_000):
        page.start_training()
    assert window.tabs.currentWidget() is page  # a click meant for Train lands on Train
    assert page.notice.isVisible()
    assert "Training finished" in page.notice_label.text()
    assert "87.5%" in page.notice_label.text()
    page.results_button.click()
    assert window.tabs.currentWidget() is window.results_page
    page._reset_view()  # the next run hides it
    assert page.notice.isHidden()


def test_opening_another_folder_clears_the_last_runs_progress(page, window, qtbot, tmp_path):
    from tests.desktop.views_fixtures import make_dataset

    page._reset_view()
    page._on_event(Started("train", total=2, info=INFO))
    page._on_event(EpochEnded(1, 2, "unfrozen", {"train_loss": 0.5, "valid_loss": 0.4,
                                                 "error_rate": 0.1, "seconds": 4.0}))
    page._on_cancelled()
    assert page.table.row_count() == 1 and not page.progress.isHidden()
    with qtbot.waitSignal(window.context.dataPrepared, timeout=60_000):
        window.open_folder(make_dataset(tmp_path / "other", per_class=3))
    assert page.table.row_count() == 0 and page.progress.isHidden()
    assert page.curves.epochs == []
