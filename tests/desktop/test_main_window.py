"""The shell flows on the bundled sample: start, data, label preview, train/stop, close
during training, corrupted settings/project, drops, paste and shortcuts."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QByteArray, QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QImage
from PySide6.QtWidgets import QApplication

from loupe.desktop.context import AppContext
from loupe.desktop.main_window import MainWindow
from loupe.desktop.workers import TaskState
from loupe.engine.core.resources import sample_dir
from loupe.engine.data.project import project_file
from tests.desktop.views_fixtures import make_dataset

TINY = {"arch": "resnet18", "size": 32, "freeze_epochs": 0, "pretrained": "none",
        "batch_size": 32}


@pytest.fixture
def sample_window(window, qtbot):
    with qtbot.waitSignal(window.context.dataPrepared, timeout=60_000):
        qtbot.mouseClick(window.start_page.sample_button, Qt.MouseButton.LeftButton)
    return window


def _urls_mime(paths: list[Path]) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


def _drop(window: MainWindow, paths: list[Path]) -> QDropEvent:
    """A real drag-enter then drop with file URLs, as the window system delivers them."""
    mime = _urls_mime(paths)
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier)
    enter = QDragEnterEvent(QPointF(50, 50), *args)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    event = QDropEvent(QPointF(50, 50), *args)
    QApplication.sendEvent(window, event)
    return event


def test_try_the_sample_opens_it_with_the_lesson1_rule(sample_window):
    win = sample_window
    assert win.tabs.currentWidget() is win.data_page
    assert win.context.project.label.spec == "upper:animal,food"
    page = win.data_page
    classes = {page.counts_table.item(r, 0).text() for r in range(page.counts_table.rowCount())}
    assert classes == {"animal", "food"}
    assert set(page.chart.shown_counts) == {"animal", "food"}
    assert page.preview_model.rowCount() == len(win.context.data.scan.items)
    assert page.preview_model.unmatched_rows() == []
    assert "2 classes" in page.summary.text()
    assert len(page.samples.items()) > 0
    assert {item.caption for item in page.samples.items()} == {"animal", "food"}
    assert project_file(sample_dir()).exists()  # saved, and listed as recent
    assert win.context.recent_folders()[0] == sample_dir().resolve()


def test_label_rule_preview_updates_and_highlights_unmatched(sample_window, qtbot):
    page = sample_window.data_page
    editor = page.label_editor
    with qtbot.waitSignal(sample_window.context.dataChanged, timeout=30_000):
        editor.kind.setCurrentIndex(editor.kind.findData("regex"))
        editor.pattern.setText(r"^([a-z])")
    labels = {page.preview_model.row_values(r)[1] for r in range(page.preview_model.rowCount())}
    unmatched = page.preview_model.unmatched_rows()
    assert unmatched, "capitalized animal files must be listed as unmatched"
    assert all(page.preview_model.row_values(r)[0][0].isupper() for r in unmatched)
    assert labels - {""} <= set("abcdefghijklmnopqrstuvwxyz")
    assert sample_window.context.project.label.spec == "regex:^([a-z])"
    page.only_unmatched.setChecked(True)
    assert page.preview_proxy.rowCount() == len(unmatched)
    editor.pattern.setText("([")
    page.apply_rules()
    assert "invalid regex" in page.rule_error.text()


def test_start_training_shows_an_epoch_row_then_stop(sample_window, qtbot):
    win = sample_window
    win.tabs.setCurrentWidget(win.train_page)
    page = win.train_page
    worker = page.start_training(epochs=4, **TINY)
    assert worker is not None and win.context.training_running
    assert not page.start_button.isEnabled() and page.stop_button.isEnabled()
    qtbot.waitUntil(lambda: page.table.row_count() >= 1, timeout=120_000)
    row = page.table.table_model
    assert row.cell_text(0, 0) == "1"
    assert "train_loss" in row.columns() and "valid_loss" in row.columns()
    assert page.curves.epochs == [1.0]
    with qtbot.waitSignal(worker.cancelled, timeout=60_000):
        page.stop_training()
    qtbot.waitUntil(lambda: not win.context.training_running, timeout=10_000)
    assert page.start_button.isEnabled()
    assert "stopped" in page.status.text().lower()


def test_close_during_training_asks_cancels_waits_and_saves(sample_window, qtbot, messages,
                                                            qtlog):
    win = sample_window
    page = win.train_page
    worker = page.start_training(epochs=50, **TINY)
    qtbot.waitUntil(lambda: worker.state is TaskState.RUNNING, timeout=10_000)
    messages.answer = messages.answer.No
    win.close()
    assert win.isVisible() and worker.state is TaskState.RUNNING
    messages.answer = messages.answer.Yes
    win.close()
    assert [k for k in messages.kinds() if k == "question"] == ["question", "question"]
    qtbot.waitUntil(lambda: not win.isVisible(), timeout=60_000)
    assert worker.state is TaskState.CANCELLED
    assert win.context.runner.active() == []
    assert not any("Destroyed while thread" in r.message for r in qtlog.records)
    assert QSettings().value("window/geometry") is not None
    assert project_file(sample_dir()).exists()
    assert win.context.project.training["epochs"] == 50


def test_corrupted_settings_give_defaults_and_a_warning(qtbot, isolated_settings):
    path = Path(QSettings().fileName())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\xff\xfe not an ini file [[[\n[window\ngeometry=@ByteArray(\\x01)\n")
    context = AppContext()
    win = MainWindow(context)
    qtbot.addWidget(win)
    assert "Settings were damaged" in win.settings_warning
    assert "could not be read" in win.settings_warning
    assert "defaults for the settings file" not in win.settings_warning  # garbled wording
    assert win.statusBar().currentMessage() == win.settings_warning
    assert win.width() >= 900  # default geometry, not garbage
    win.save_state()
    assert QSettings().status() == QSettings.Status.NoError


def test_geometry_from_a_larger_screen_is_not_called_damage(qtbot):
    import struct

    # What Qt saved for a 1200×800 window on a 1400 px wide screen (format 3.0); Qt will
    # not restore it on this smaller screen. That is a moved laptop, not a damaged file.
    rect = struct.pack(">4i", 100, 60, 1299, 859)
    blob = (b"\x01\xd9\xd0\xcb" + struct.pack(">HH", 3, 0) + rect + rect
            + struct.pack(">iBBi", 0, 0, 0, 1400) + rect)
    settings = QSettings()
    settings.setValue("window/geometry", QByteArray(blob))
    settings.sync()
    win = MainWindow(AppContext())
    qtbot.addWidget(win)
    assert win.settings_warning == ""
    available = QGuiApplication.primaryScreen().availableGeometry()
    assert win.width() <= max(win.minimumWidth(), available.width())
    assert win.height() <= max(win.minimumHeight(), available.height())


def test_wrongly_typed_settings_are_reported_not_fatal(qtbot):
    settings = QSettings()
    settings.setValue("window/geometry", "not bytes")
    settings.setValue("window/tab", "seven")
    settings.sync()
    win = MainWindow(AppContext())
    qtbot.addWidget(win)
    assert "window geometry" in win.settings_warning and "last tab" in win.settings_warning
    assert win.tabs.currentIndex() == 0


def test_corrupted_project_file_gives_defaults_and_a_warning(window, qtbot):
    target = project_file(sample_dir())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"{ this is not json")
    messages_seen: list[str] = []
    window.context.statusMessage.connect(messages_seen.append)
    with qtbot.waitSignal(window.context.dataPrepared, timeout=60_000):
        window.context.open_sample()
    assert any("could not be read" in m for m in messages_seen)
    assert window.context.project.label.spec == "upper:animal,food"


def test_reopening_the_sample_with_a_damaged_project_keeps_its_rule_and_says_so(qtbot,
                                                                              window):
    with qtbot.waitSignal(window.context.dataPrepared, timeout=60_000):
        window.context.open_sample()
    window.save_state()
    window.context.flush_project()  # its own save is done before the file is damaged
    project_file(sample_dir()).write_text('{"format": 1, "label": {"kind": "nonsense"')
    again = MainWindow(AppContext())
    qtbot.addWidget(again)
    again.show()
    with qtbot.waitSignal(again.context.dataPrepared, timeout=60_000):  # not "labels none"
        again.after_first_paint()  # reopens the last project: the sample
    assert again.context.project.label.spec == "upper:animal,food"
    listed = [again.data_page.warnings.item(i).text()
              for i in range(again.data_page.warnings.count())]
    assert any("could not be read" in text for text in listed)
    assert again.context.runner.shutdown(60_000)


def _images(folder: Path, names: list[str]) -> list[Path]:
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 24), (200, 30, 30)).save(path)
        paths.append(path)
    return paths


def test_dropped_folder_opens_as_data_when_no_model_is_loaded(window, qtbot, tmp_path):
    root = tmp_path / "pets"
    _images(root, ["cat/a.png", "cat/b.png", "cat/c.png", "dog/a.png", "dog/b.png", "dog/c.png"])
    with qtbot.waitSignal(window.context.dataChanged, timeout=60_000):
        event = _drop(window, [root])
    assert event.isAccepted()
    assert window.context.project.root == root.resolve()
    assert window.tabs.currentWidget() is window.data_page


def test_dropped_images_go_to_the_predict_page(window, tmp_path, monkeypatch):
    received: list[list[Path]] = []
    monkeypatch.setattr(window.predict_page, "predict_paths", received.append)
    paths = _images(tmp_path, ["one.png", "two.jpg"])
    _drop(window, [*paths, tmp_path / "notes.txt"])
    assert received == [paths]
    assert window.tabs.currentWidget() is window.predict_page


def test_dropped_model_file_is_loaded(window, tmp_path, monkeypatch):
    loaded: list[Path] = []
    monkeypatch.setattr(window.context, "set_model", loaded.append)
    model = tmp_path / "pets.loupe"
    model.write_bytes(b"placeholder: routing only looks at the suffix")
    _drop(window, [model, *_images(tmp_path, ["x.png"])])
    assert loaded == [model]


def test_dropped_folder_with_a_model_loaded_can_go_to_predict(window, tmp_path, monkeypatch,
                                                              messages):
    window.context.predictor = object()
    folders: list[Path] = []
    monkeypatch.setattr(window.predict_page, "predict_folder", folders.append)

    def choose_predict(box):
        messages.records.append(("exec", box.windowTitle(), box.text()))
        box.buttons()[0].click()  # the first button added: "Predict every image"
        return 0

    monkeypatch.setattr("PySide6.QtWidgets.QMessageBox.exec", choose_predict)
    _drop(window, [tmp_path])
    assert folders == [tmp_path]
    assert window.context.project is None


def test_paste_files_and_pixels(window, tmp_path, monkeypatch):
    received: list[list[Path]] = []
    monkeypatch.setattr(window.predict_page, "predict_paths", received.append)
    paths = _images(tmp_path, ["pasted.png"])
    QGuiApplication.clipboard().setMimeData(_urls_mime(paths))
    window.paste()
    image = QImage(16, 16, QImage.Format.Format_RGB32)
    image.fill(0x3366CC)
    QGuiApplication.clipboard().setImage(image)
    window.paste()
    assert received[0] == paths
    pasted = received[1][0]
    assert pasted.suffix == ".png" and pasted.is_file()
    assert Image.open(pasted).size == (16, 16)


def test_keyboard_shortcuts_switch_tabs(window, qtbot):
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentWidget() is window.train_page
    qtbot.keyClick(window, Qt.Key.Key_5, Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentWidget() is window.predict_page
    actions = window.findChildren(type(window.train_action))
    shortcuts = {a.text(): a.shortcut().toString() for a in actions}
    assert shortcuts["&Train"] == "Ctrl+T" and shortcuts["&Stop"] == "Ctrl+."
    assert shortcuts["&Quit"] == "Ctrl+Q"


def test_start_up_reopens_the_last_project_with_its_settings(qtbot, window):
    context = window.context
    with qtbot.waitSignal(context.dataPrepared, timeout=60_000):
        context.open_sample()
    context.project.training = {"arch": "resnet18", "epochs": 9}
    with qtbot.waitSignal(context.projectSaved, timeout=10_000):
        context.save_project()  # written by a task, off the GUI thread
    window.tabs.setCurrentWidget(window.start_page)
    window.save_state()
    again = MainWindow(AppContext())
    qtbot.addWidget(again)
    again.show()
    with qtbot.waitSignal(again.context.dataPrepared, timeout=60_000):
        again.after_first_paint()
    assert again.context.project.root == sample_dir().resolve()
    assert again.context.project.label.spec == "upper:animal,food"
    assert again.tabs.currentWidget() is again.start_page  # restored tab stays in front
    qtbot.waitUntil(lambda: again.context.engine_ready, timeout=60_000)
    assert again.train_page.settings.epochs.value() == 9
    assert again.context.runner.shutdown(60_000)


def test_opening_another_folder_forgets_the_previous_folders_results(window, qtbot, tmp_path):
    first = make_dataset(tmp_path / "first", per_class=4)
    with qtbot.waitSignal(window.context.dataPrepared, timeout=60_000):
        window.open_folder(first)
    assert window.data_page.preview_model.rowCount() == 8
    window.open_folder(make_dataset(tmp_path / "second", per_class=3))
    with qtbot.waitSignal(window.context.runner.idle, timeout=30_000):
        window.data_page.cancel_scan()  # cancelled before it read a file
    assert window.context.data.scan is None and window.context.prepared is None
    assert window.data_page.preview_model.rowCount() == 0
    assert window.data_page.summary.text() == ""
    assert "Ready" not in window.train_page.status.text()
    assert not window.train_page.start_button.isEnabled()


def test_window_title_names_the_folder_once_and_loupe_once(window, qtbot, tmp_path):
    with qtbot.waitSignal(window.context.dataPrepared, timeout=60_000):
        window.open_folder(make_dataset(tmp_path / "pets", per_class=3))
    # Qt adds the display name unless the title already ends with it.
    QGuiApplication.setApplicationDisplayName("Loupe")
    assert window.windowTitle().startswith("pets")
    assert window.windowTitle().endswith(QGuiApplication.applicationDisplayName())


def test_warm_up_imports_the_engine_modules_the_pages_call_first():
    """The Start click must not import engine modules on the GUI thread (a 40 ms stall)."""
    import sys

    from loupe.desktop.main_window import WARM_MODULES, _warm_up

    info = _warm_up()
    assert info["kind"] in ("cpu", "cuda", "mps")
    assert all(name in sys.modules for name in WARM_MODULES)
    assert "loupe.engine.training.trainer" in WARM_MODULES


def test_saving_the_project_runs_off_the_gui_thread_and_keeps_the_newest(
    qtbot, window, monkeypatch
):
    """The project file is synced to disk (tens of ms): a Start click or a label change
    must not wait for it. Saves are written by a task, the newest settings win, and
    opening a project first writes what is still pending."""
    import threading

    from loupe.engine.data import project as project_module

    context = window.context
    with qtbot.waitSignal(context.dataPrepared, timeout=60_000):
        context.open_sample()
    writers: list[str] = []
    real_write = project_module.Project.write

    def write(self, data):
        writers.append(threading.current_thread().name)
        return real_write(self, data)

    monkeypatch.setattr(project_module.Project, "write", write)
    with qtbot.waitSignal(context.projectSaved, timeout=10_000):
        context.project.training = {"epochs": 3}
        context.save_project()
        context.project.training = {"epochs": 4}
        context.save_project()
    qtbot.waitUntil(lambda: not context.runner.tasks("save-project", owner=context))
    assert writers and threading.main_thread().name not in writers
    assert len(writers) == 1  # the second save's snapshot; the other task had nothing left
    saved = project_module.load_project(context.project.root)[0]
    assert saved.training == {"epochs": 4}

    # A save still pending when a project is (re)opened is written first, not lost.
    context.project.training = {"epochs": 5}
    context.save_project()
    with qtbot.waitSignal(context.dataPrepared, timeout=60_000):
        context.open_sample()
    assert context.project.training == {"epochs": 5}
