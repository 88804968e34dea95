"""Desktop test setup: isolated QSettings, recorded (never blocking) message boxes.

tests/conftest.py already forces the offscreen platform and isolates LOUPE_HOME; here
every test also gets its own settings folder (INI format, under tmp_path) and a
:class:`MessageRecorder` in place of modal QMessageBox calls, which would otherwise wait
forever for a click in a headless run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox


@dataclass
class MessageRecorder:
    """Every message box shown: (kind, title, text). ``answer`` answers questions."""

    records: list[tuple[str, str, str]] = field(default_factory=list)
    answer: QMessageBox.StandardButton = QMessageBox.StandardButton.Yes

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.records]

    def texts(self) -> str:
        return "\n".join(f"{title}: {text}" for _, title, text in self.records)


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, qapp) -> Path:
    """QSettings read and write an INI file under tmp_path, never the user's."""
    folder = tmp_path / "qsettings"
    qapp.setOrganizationName("Loupe")
    qapp.setApplicationName("Loupe")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
        QSettings.setPath(QSettings.Format.IniFormat, scope, str(folder))
    return folder


@pytest.fixture(autouse=True)
def messages(monkeypatch) -> MessageRecorder:
    """Replace QMessageBox's modal entry points by a recorder."""
    recorder = MessageRecorder()

    def _static(kind: str, returns_answer: bool):
        def show(_parent, title, text, *args, **kwargs):
            recorder.records.append((kind, str(title), str(text)))
            if returns_answer:
                return recorder.answer
            return QMessageBox.StandardButton.Ok

        return staticmethod(show)

    for kind in ("warning", "critical", "information"):
        monkeypatch.setattr(QMessageBox, kind, _static(kind, False))
    monkeypatch.setattr(QMessageBox, "question", _static("question", True))
    monkeypatch.setattr(
        QMessageBox, "about",
        staticmethod(lambda _p, title, text: recorder.records.append(("about", title, text))),
    )

    def exec_box(box: QMessageBox) -> int:
        recorder.records.append(("exec", box.windowTitle(), box.text()))
        return int(QMessageBox.StandardButton.Ok)

    monkeypatch.setattr(QMessageBox, "exec", exec_box)
    return recorder


@pytest.fixture
def runner(qapp):
    """A task runner of its own (no window); its threads must stop after the test."""
    from loupe.desktop.workers import TaskRunner

    runner = TaskRunner()
    yield runner
    assert runner.shutdown(10_000)


@pytest.fixture
def window(qtbot):
    """A shown MainWindow; afterwards its workers must all stop within a minute."""
    from PySide6.QtWidgets import QApplication

    from loupe.desktop.context import AppContext
    from loupe.desktop.main_window import MainWindow

    context = AppContext()
    win = MainWindow(context)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    assert context.runner.shutdown(60_000)
    QApplication.processEvents()  # deliver queued results while message boxes are recorded
