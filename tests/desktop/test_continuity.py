"""The project keeps its model (issue 12): a scripted walk through a restart, stopped runs
used and resumed from the Models page, runs deleted with their size shown, pinning, and
meaningful model names."""
# ruff: noqa: F811 - the fixtures imported from views_fixtures are test parameters

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtWidgets import QFileDialog

from loupe.desktop.context import AppContext
from loupe.desktop.main_window import MainWindow
from loupe.desktop.pages.models_page import ModelsPage
from loupe.engine.core.errors import CancelledError
from loupe.engine.core.events import CancelToken, EpochEnded
from tests.desktop.views_fixtures import (  # noqa: F401 - fixtures
    bundle_file,
    context,
    make_dataset,
    make_image,
)

# A tiny run: timm's 0.4 M-parameter test network, 32 px, from random init (seconds).
TINY = {"arch": "test_resnet", "size": 32, "freeze_epochs": 0, "pretrained": "none",
        "batch_size": 4}


def _window(qtbot) -> MainWindow:
    win = MainWindow(AppContext())
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def _close(win: MainWindow, qtbot) -> None:
    """Quit as the user does: the state is saved, every task stops."""
    win.close()
    qtbot.waitUntil(lambda: not win.isVisible(), timeout=60_000)
    assert win.context.runner.shutdown(60_000)


def test_walk_reopening_after_a_restart_predicts_with_the_projects_model(qtbot, tmp_path):
    """Train, quit, start again on the same folder and settings: Predict works at once,
    with the model named after the run, and the Models page was never opened."""
    root = make_dataset(tmp_path / "pets", per_class=6)
    first = _window(qtbot)
    first.context.mark_engine_ready()
    with qtbot.waitSignal(first.context.dataPrepared, timeout=60_000):
        first.open_folder(root)
    first.tabs.setCurrentWidget(first.train_page)
    with qtbot.waitSignal(first.context.modelChanged, timeout=180_000):
        assert first.train_page.start_training(epochs=1, **TINY) is not None
    trained = first.context.model_path
    assert trained is not None and trained.is_file()
    # The run ended with a notice on the Train page, not a jump to another tab.
    assert first.tabs.currentWidget() is first.train_page
    assert first.train_page.notice.isVisible()
    assert "Training finished" in first.train_page.notice_label.text()
    _close(first, qtbot)

    again = _window(qtbot)  # a new process would build exactly this
    with qtbot.waitSignal(again.context.modelChanged, timeout=120_000):
        again.after_first_paint()  # warm-up, reopen the last project, restore its model
    ctx = again.context
    assert ctx.project.root == root.resolve()
    assert ctx.model_path == trained
    assert ctx.model_title.startswith("pets · test_resnet · ")
    image = make_image(tmp_path / "new" / "photo.png", (200, 60, 40), seed=9)
    again.tabs.setCurrentWidget(again.predict_page)
    with qtbot.waitSignal(again.predict_page.predictionShown, timeout=60_000) as shown:
        again.predict_page.predict_paths([image])
    assert shown.args[0].source == image
    label = again.predict_page.model_label.text()
    assert "pets · test_resnet" in label and "model.loupe" not in label
    assert not again.models_page._runs_listed  # the Models page was never shown
    qtbot.waitUntil(lambda: ctx.prepared is not None, timeout=60_000)
    again.tabs.setCurrentWidget(again.results_page)  # its Results come with it
    with qtbot.waitSignal(again.results_page.analysisReady, timeout=120_000):
        again.results_page.analyse()
    assert ctx.runner.shutdown(60_000)


def _stopped_run(root: Path) -> Path:
    """A run the user stopped after its first epoch of three (the engine, as Stop does)."""
    from loupe.engine.core import paths
    from loupe.engine.data.dataset import prepare_data
    from loupe.engine.data.project import Project
    from loupe.engine.training import TrainConfig, train

    token = CancelToken()
    before = set(paths.runs_dir().iterdir())
    prepared = prepare_data(Project(root).data_spec())

    def on_event(event):
        if isinstance(event, EpochEnded):
            token.cancel()

    with pytest.raises(CancelledError):
        train(prepared, TrainConfig(epochs=3, threads=1, **TINY), on_event=on_event,
              cancel=token)
    (run_dir,) = set(paths.runs_dir().iterdir()) - before
    return run_dir


@pytest.fixture
def stopped(tmp_path) -> tuple[Path, Path]:
    root = make_dataset(tmp_path / "pets", per_class=6)
    return root, _stopped_run(root)


def _models_page(qtbot, context) -> ModelsPage:
    page = ModelsPage(context)
    qtbot.addWidget(page)
    with qtbot.waitSignal(page.runsLoaded, timeout=30_000):
        page.refresh_runs()
    return page


def test_a_stopped_run_can_be_used_and_is_labelled_as_stopped(qtbot, stopped, context):
    _root, run_dir = stopped
    page = _models_page(qtbot, context)
    (run,) = page.runs()
    assert run.run_id == run_dir.name and run.checkpoint and not run.finished
    assert page.runs_table.item(0, 5).text() == "stopped at 1/3"
    assert "MB" in page.runs_table.item(0, 4).text() or "KB" in page.runs_table.item(0, 4).text()
    assert page.use_run_button.isEnabled()  # greyed out before issue 12
    assert "best finished epoch (lowest validation loss; 1 of 3 epochs finished)" in (
        page.use_run_button.toolTip())
    with qtbot.waitSignal(context.modelChanged, timeout=60_000):
        page.use_run_button.click()
    assert context.model_path == run_dir / "model.loupe"
    assert context.predictor.classes == ("cat", "dog")
    assert context.model_title.endswith("stopped at epoch 1 of 3")
    assert page.model_label.text().startswith(f"<b>{context.model_title}</b>")


def test_resume_from_the_models_page_finishes_the_run_on_the_train_page(qtbot, stopped,
                                                                       window):
    _root, run_dir = stopped
    page = window.models_page
    window.tabs.setCurrentWidget(page)
    qtbot.waitUntil(lambda: bool(page.runs()), timeout=30_000)
    page.select_runs([0])
    assert page.resume_button.isEnabled()
    with qtbot.waitSignal(window.train_page.runEnded, timeout=180_000) as ended:
        page.resume_button.click()
        assert window.tabs.currentWidget() is window.train_page
    assert ended.args[0] == "finished"
    assert window.train_page.table.row_count() == 2  # the two epochs it still had to do
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished"
    qtbot.waitUntil(lambda: window.context.model_path == Path(record["bundle"]),
                    timeout=60_000)


def test_deleting_a_run_asks_with_its_size_and_keeps_the_images(qtbot, stopped, context,
                                                                messages):
    root, run_dir = stopped
    images = sorted(p for p in root.rglob("*"))
    page = _models_page(qtbot, context)
    page.select_runs([0])
    size_text = page.runs_table.item(0, 4).text()
    messages.answer = messages.answer.No
    page.delete_button.click()
    assert run_dir.exists()
    question = [r for r in messages.records if r[0] == "question"][-1]
    assert f"frees {size_text}" in question[2] and "Your images are not touched" in question[2]
    messages.answer = messages.answer.Yes
    with qtbot.waitSignal(page.runDeleted, timeout=30_000):
        page.delete_button.click()
    assert not run_dir.exists()
    assert sorted(p for p in root.rglob("*")) == images
    qtbot.waitUntil(lambda: page.runs() == [], timeout=30_000)


def test_deleting_the_run_of_the_loaded_model_unloads_it(qtbot, stopped, context, messages):
    _root, run_dir = stopped
    page = _models_page(qtbot, context)
    page.select_runs([0])
    with qtbot.waitSignal(context.modelChanged, timeout=60_000):
        page.use_run_button.click()
    messages.answer = messages.answer.Yes
    with qtbot.waitSignal(page.runDeleted, timeout=30_000):
        page.delete_button.click()
    assert "will be unloaded" in messages.records[-1][2]
    assert context.model_path is None and context.predictor is None
    assert "No model loaded" in page.model_label.text()


def test_a_pinned_model_comes_back_even_after_another_was_used(qtbot, tmp_path, bundle_file,
                                                               context):
    from loupe.engine.data.project_model import pinned_model
    from tests.desktop.views_fixtures import write_bundle

    root = make_dataset(tmp_path / "pets", per_class=3)
    context.mark_engine_ready()
    context.open_folder(root)
    with qtbot.waitSignal(context.modelChanged, timeout=60_000):
        context.set_model(bundle_file)
    page = ModelsPage(context)
    qtbot.addWidget(page)
    assert page.pin_check.isEnabled() and not page.pin_check.isChecked()
    with qtbot.waitSignal(context.runner.idle, timeout=30_000):
        page.pin_check.setChecked(True)
    assert pinned_model(root) == bundle_file.absolute()
    other = write_bundle(tmp_path / "other.loupe", seed=1)
    with qtbot.waitSignal(context.modelChanged, timeout=60_000):
        context.set_model(other)
    assert not page.pin_check.isChecked()
    qtbot.waitUntil(lambda: not context.runner.active(), timeout=30_000)
    reopened = AppContext()
    reopened.mark_engine_ready()
    with qtbot.waitSignal(reopened.modelChanged, timeout=60_000):
        reopened.open_folder(root)
    assert reopened.model_path == bundle_file and reopened.model_pinned
    assert reopened.runner.shutdown(30_000)


def test_save_as_suggests_the_models_name_beside_the_project(qtbot, tmp_path, stopped,
                                                             context, monkeypatch):
    root, run_dir = stopped
    context.mark_engine_ready()
    context.open_folder(root)
    page = _models_page(qtbot, context)
    page.select_runs([0])
    with qtbot.waitSignal(context.modelChanged, timeout=60_000):
        page.use_run_button.click()
    asked = {}

    def fake_save(_parent, title, start, _filters):
        asked["start"] = Path(start)
        return "", ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(fake_save))
    page._ask_save()
    start = asked["start"]
    assert start.name == context.model_file_name == page.suggested_file_name()
    assert start.name.startswith("pets-test_resnet-") and start.suffix == ".loupe"
    assert start.parent == root.resolve().parent  # beside the image folder, never in it
