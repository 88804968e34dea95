"""Every message in GUI terms and every empty state explained (issue 12): failed downloads,
the random-start banner, garbage weights, a missing folder, stale recent entries, empty
and one-class folders, corrections, folder predictions, file dialogs, Help → Quick start,
and the cosmetic fixes (epoch table, architecture list, validation share)."""
# ruff: noqa: F811 - the fixtures imported from views_fixtures are test parameters

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QFileDialog

import loupe.engine.models.weights_download
from loupe.desktop.context import AppContext
from loupe.desktop.file_dialogs import LAST_FOLDER_KEY, FileDialogs
from loupe.desktop.main_window import MainWindow
from loupe.engine.core.errors import WeightsError
from loupe.engine.core.events import WarningEvent
from tests.desktop.views_fixtures import (  # noqa: F401 - fixtures
    bundle_file,
    context,
    fresh_predictor,
    loaded_bundle,
    make_dataset,
    model_context,
)


@pytest.fixture
def window(window):
    window.context.mark_engine_ready()
    return window


def _open(window, qtbot, folder: Path) -> None:
    """Open ``folder`` and wait for its scan, label and split results."""
    context = window.context
    window.open_folder(folder)
    qtbot.waitUntil(lambda: context.data.scan is not None
                    and not context.runner.is_running("scan", owner=context)
                    and not context.runner.is_running("relabel", owner=context),
                    timeout=60_000)


# -- the Train page's weights messages ----------------------------------------------------

def test_a_failed_download_leaves_no_downloading_header_and_points_at_import(
        window, qtbot, messages, monkeypatch):
    page = window.train_page

    def offline(arch, *, on_event, cancel):
        raise WeightsError(f"could not download timm/{arch}: offline mode is on "
                           "(HF_HUB_OFFLINE); import a file instead with "
                           "`loupe weights import FILE --arch NAME`")

    monkeypatch.setattr(loupe.engine.models.weights_download, "download_weights", offline)
    with qtbot.waitSignal(window.context.errorRaised, timeout=30_000):
        page.download_weights("resnet18")
    qtbot.waitUntil(lambda: not window.context.runner.is_running("download-weights",
                                                                 owner=page))
    assert "Downloading" not in page.status.text()
    assert "were not downloaded" in page.status.text()
    title, text = messages.records[-1][1:]
    assert title == "Download failed" and "offline mode is on" in text
    assert "Import…" in text and "loupe weights" not in text
    assert page.progress.isHidden()


def test_the_random_start_banner_points_at_the_import_button(window):
    from loupe.engine.training.config import TrainConfig
    from loupe.engine.training.setup import random_init_message

    page = window.train_page
    engine_text = random_init_message(TrainConfig(arch="resnet34"))
    assert "loupe weights import" in engine_text  # the CLI's wording
    page._on_event(WarningEvent("random-init", engine_text))
    banner = page.banner.text()
    assert "random initialisation" in banner and "Import…" in banner
    assert "loupe weights" not in banner and "`" not in banner


def test_a_garbage_pth_import_gets_a_plain_message(window, qtbot, messages, tmp_path,
                                                   monkeypatch):
    garbage = tmp_path / "resnet18.pth"
    garbage.write_bytes(b"\x13\x37" * 5000)  # neither a zip, a pickle nor safetensors
    monkeypatch.setattr(QFileDialog, "getOpenFileName",
                        staticmethod(lambda *a, **k: (str(garbage), "")))
    with qtbot.waitSignal(window.context.errorRaised, timeout=30_000) as raised:
        window.train_page.import_weights("resnet18")
    title, text = raised.args
    assert title == "Cannot import"
    assert "“resnet18.pth” is not a weights file" in text
    assert ".safetensors" in text and "header" not in text and "deserializ" not in text


# -- folders that are not there ------------------------------------------------------------

def test_a_missing_folder_on_the_command_line_opens_nothing_and_says_so(qtbot, tmp_path,
                                                                        messages):
    missing = tmp_path / "no such folder"
    win = MainWindow(AppContext())
    qtbot.addWidget(win)
    win.show()
    win._start_up(sample=False, folder=missing)  # what after_first_paint runs
    assert win.context.project is None
    assert win.windowTitle() in ("Loupe", "")
    assert missing.name not in win.windowTitle()
    kind, title, text = messages.records[-1]
    assert kind == "warning" and title == "Cannot open the folder"
    assert str(missing) in text and "does not exist" in text
    assert missing.resolve() not in win.context.recent_folders()
    assert win.context.runner.shutdown(60_000)


def test_missing_recent_projects_can_be_removed(window, tmp_path):
    from loupe.engine.data.project import add_recent, recent_projects

    kept = make_dataset(tmp_path / "kept", per_class=1)
    gone = tmp_path / "gone"
    add_recent(kept)
    add_recent(gone)
    page = window.start_page
    page.refresh_recent()
    texts = [page.recent_list.item(i).text() for i in range(page.recent_list.count())]
    assert any("(missing)" in t and "gone" in t for t in texts)
    assert not page.remove_button.isEnabled()
    row = next(i for i, t in enumerate(texts) if "gone" in t)
    page.recent_list.item(row).setSelected(True)  # missing entries can be selected now
    assert page.remove_button.isEnabled()
    page.remove_button.click()
    assert recent_projects() == [kept.resolve()]  # forgotten; the other entry stays
    assert kept.is_dir()  # nothing on disk is touched
    texts = [page.recent_list.item(i).text() for i in range(page.recent_list.count())]
    assert not any("gone" in t for t in texts)


# -- empty states ----------------------------------------------------------------------------

def _data_message(window) -> str:
    return window.data_page.rule_error.text()


def _warnings(window) -> list[str]:
    box = window.data_page.warnings
    return [box.item(i).text() for i in range(box.count())]


def test_an_empty_folder_is_called_empty(window, qtbot, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    _open(window, qtbot, folder)
    assert _data_message(window).startswith("The folder is empty.")
    assert "No warnings." not in _warnings(window)
    status = window.train_page.status.text()
    assert "empty" in status and "Open a folder" not in status
    assert not window.train_page.start_button.isEnabled()


def test_a_folder_of_other_files_says_none_is_an_image(window, qtbot, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    for name in ("a.txt", "b.pdf", "c.csv"):
        (folder / name).write_text("not an image")
    _open(window, qtbot, folder)
    message = _data_message(window)
    assert message.startswith("No images here: the folder holds 3 file(s)")
    assert ".png" in message and "No warnings." not in _warnings(window)
    assert "No images here" in window.train_page.status.text()


def test_one_image_in_one_class_says_a_classifier_needs_two_classes(window, qtbot, tmp_path):
    folder = tmp_path / "one"
    (folder / "cat").mkdir(parents=True)
    Image.new("RGB", (24, 24), (200, 30, 30)).save(folder / "cat" / "a.png")
    _open(window, qtbot, folder)
    message = _data_message(window)
    assert message.startswith("A classifier needs at least two classes; found 1: cat (1 image)")
    summary = window.data_page.summary.text()
    assert summary.startswith("1 image · ") and "1 class" in summary  # not "1 images"
    train = window.train_page
    assert "two classes" in train.status.text() and "Open a folder" not in train.status.text()
    assert not train.start_button.isEnabled()


def test_one_class_with_enough_images_still_cannot_start(window, qtbot, tmp_path, messages):
    folder = tmp_path / "cats"
    for i in range(6):
        (folder / "cat").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 24), (200, 30 + i, 30)).save(folder / "cat" / f"{i}.png")
    with qtbot.waitSignal(window.context.dataPrepared, timeout=60_000):
        window.open_folder(folder)  # the engine can split it: it is "prepared"
    assert "two classes" in _data_message(window)
    assert window.train_page.start_training() is None
    assert "two classes" in messages.records[-1][2]


def test_the_train_page_names_the_open_folder_when_its_data_is_not_usable(window, qtbot,
                                                                          tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (24, 24), (10 * i, 30, 30)).save(folder / f"{i}.png")
    _open(window, qtbot, folder)  # "parent" labels nothing directly in the root
    status = window.train_page.status.text()
    assert status.startswith("flat: The labelling rule labelled none of the 4 images")
    assert "How images are labelled" in status  # the editor's title, not "--label"
    assert "Open a folder" not in status and "--label" not in status


def test_too_few_images_to_split_says_so_in_words(window, qtbot, tmp_path):
    folder = make_dataset(tmp_path / "two", per_class=1)
    _open(window, qtbot, folder)
    message = _data_message(window)
    assert message.startswith("These 2 images cannot be split into training and validation")
    assert "How images are split" in message


def test_the_validation_share_says_why_it_is_not_the_fraction_asked():
    from loupe.desktop.pages.data_advice import valid_share_note

    def plan(kind: str, train: int, valid: int, pattern: str = ""):
        rule = SimpleNamespace(kind=kind, fraction=0.3, pattern=pattern)
        return SimpleNamespace(train=[0] * train, valid=[0] * valid, test=[], rule=rule)

    note = valid_share_note(plan("random", 408, 190))  # the sample at random:0.3
    assert note.startswith("31.8% of 598 in validation (asked 30%; each image is placed by")
    grouped = valid_share_note(plan("group", 408, 190, pattern=r"^(\w+)_"))
    assert "grouped by '^(\\w+)_'" in grouped
    assert valid_share_note(plan("random", 70, 30)) == "30.0% of 100 in validation"


def test_the_data_summary_shows_the_validation_share(window, qtbot, tmp_path):
    _open(window, qtbot, make_dataset(tmp_path / "pets", per_class=10))
    assert "% of 20 in validation" in window.data_page.summary.text()


# -- corrections, folder predictions --------------------------------------------------------

def test_corrections_count_images_not_clicks():
    from loupe.desktop.pages.corrections import net_corrections
    from loupe.engine.data.labels import Overrides

    before = Overrides()
    assert net_corrections(before, Overrides(exclude={"a.png"})) == 1
    relabelled = Overrides(relabel={"a.png": ("dog",)})
    assert net_corrections(before, relabelled) == 1  # exclude, then relabel: one image
    assert net_corrections(before, Overrides()) == 0  # ... then clear: none
    saved = Overrides(relabel={"b.png": ("cat",)}, exclude={"c.png"})
    assert net_corrections(saved, Overrides(relabel={"b.png": ("cat",)})) == 1


def test_folder_prediction_says_how_many_could_not_be_read(qtbot, model_context, tmp_path):
    from loupe.desktop.pages.predict_folder import FolderPanel

    folder = tmp_path / "batch"
    folder.mkdir()
    Image.new("RGB", (40, 40), (200, 60, 40)).save(folder / "good.png")
    for i in range(4):
        (folder / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    panel = FolderPanel(model_context)
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.folderFinished, timeout=60_000):
        panel.start(folder)
    assert panel.title.text() == "1 of 5 images predicted, 4 could not be read"


# -- file dialogs, help ------------------------------------------------------------------------

def test_file_dialogs_start_in_the_project_folder_and_remember_the_last_one(tmp_path,
                                                                           monkeypatch):
    project = make_dataset(tmp_path / "pets", per_class=1)
    elsewhere = tmp_path / "downloads"
    elsewhere.mkdir()
    chosen = elsewhere / "weights.pth"
    starts: list[str] = []

    def fake_open(_parent, _title, start, _filters):
        starts.append(start)
        return str(chosen), ""

    def fake_save(_parent, _title, start, _filters):
        starts.append(start)
        return "", ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(fake_open))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(fake_save))
    dialogs = FileDialogs()
    dialogs.project_folder = lambda: project
    assert dialogs.open_file(None, "Weights", "*") == chosen
    assert starts[0] == str(project)  # first time: the project folder, not the cwd
    dialogs.open_file(None, "Weights", "*")
    assert starts[1] == str(elsewhere)  # then where the user went last
    assert QSettings().value(LAST_FOLDER_KEY) == str(elsewhere)
    restarted = FileDialogs()  # a new session reads it back
    assert restarted.start_folder() == elsewhere
    # Saving never starts inside the image folder: Loupe never writes there.
    QSettings().setValue(LAST_FOLDER_KEY, str(project / "cat"))
    dialogs.save_file(None, "Save", "model.loupe", "*")
    assert Path(starts[2]) == project.parent / "model.loupe"


def test_help_has_a_quick_start_page(window):
    actions = {a.text(): a for a in window.menuBar().actions()}
    help_menu = actions["&Help"].menu()
    names = [a.text() for a in help_menu.actions()]
    assert names[:2] == ["&Quick start", "&About Loupe"]
    window.quick_start_action.trigger()
    dialog = window._quick_start
    assert dialog.isVisible()
    text = dialog.text.toPlainText()
    for words in ("Open folder…", "Start training", "View results", "Use this rate",
                  "Import…", "two classes"):
        assert words in text


# -- cosmetics ------------------------------------------------------------------------------------

def test_the_epoch_table_time_column_does_not_stretch(qtbot):
    from loupe.desktop.widgets.epoch_table import EpochTable

    table = EpochTable()
    qtbot.addWidget(table)
    table.resize(900, 200)
    table.show()
    table.add_epoch(1, {"train_loss": 0.5, "valid_loss": 0.4, "error_rate": 0.1,
                        "seconds": 61.0})
    header = table.horizontalHeader()
    time_column = table.table_model.columns().index("time")
    assert table.table_model.cell_text(0, time_column) == "01:01"
    assert header.sectionSize(time_column) < 120  # sized to "01:01", not the leftover width
    assert not header.stretchLastSection()


def test_the_architecture_list_has_room_between_rows(window):
    combo = window.train_page.settings.arch
    row = combo.view().sizeHintForRow(0)
    assert row >= combo.fontMetrics().height() + 10


def test_engine_errors_reach_the_dialog_without_command_line_options(window, qtbot):
    from loupe.engine.core.errors import TrainingError

    engine_text = ("training stopped: the training loss became nan at epoch 2; lower the "
                   "learning rate (e.g. --lr 0.0002); the last good checkpoint is kept")
    with qtbot.waitSignal(window.context.errorRaised) as raised:
        window.context.report_error("Training failed", TrainingError(engine_text))
    text = raised.args[1]
    assert "(e.g. 0.0002 in the Learning rate field)" in text and "--lr" not in text
    with qtbot.waitSignal(window.context.errorRaised) as raised:
        window.context.report_error("Training failed", TrainingError(
            "out of GPU memory even with batch size 1 at 224 px; try a smaller --size or a "
            "smaller --arch"))
    assert raised.args[1].endswith("try a smaller Image size or architecture")


def test_a_flat_curves_axis_labels_are_all_different():
    """The live lr-finder curve of a frozen model read "0.693 0.693 0.693" on its axis."""
    from loupe.desktop.pages.live_chart import nice_ticks, tick_labels

    labels = tick_labels(nice_ticks(0.6929, 0.6932))
    assert labels == ["0.6929", "0.6930", "0.6931", "0.6932"]
    assert tick_labels([0.5, 1.0, 1.5]) == ["0.5", "1", "1.5"]  # unchanged when distinct
