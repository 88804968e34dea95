"""Every file dialog of the app, starting where the user works and remembering where they went.

Qt's static dialogs open in the process's working directory unless told otherwise, which
for a double-clicked app is the home folder or the install folder. Here every dialog
starts in the last folder the user chose one in (QSettings ``dialogs/last_folder``, so it
survives a restart), and before that in the project's image folder. Save dialogs never
start inside the image folder: Loupe never writes there (``engine.core.outputs``), so they
start beside it instead.

The window's :class:`~loupe.desktop.context.AppContext` tells :data:`dialogs` the project
folder; pages call ``dialogs.open_file(...)`` and friends instead of ``QFileDialog``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QFileDialog, QWidget

LAST_FOLDER_KEY = "dialogs/last_folder"


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


class FileDialogs:
    """Open/save/folder dialogs that start in the right folder and remember the last one."""

    def __init__(self) -> None:
        self.project_folder: Callable[[], Path | None] = lambda: None

    # Where a dialog starts -----------------------------------------------------------
    def last_folder(self) -> Path | None:
        value = QSettings().value(LAST_FOLDER_KEY)
        if isinstance(value, str) and value and Path(value).is_dir():
            return Path(value)
        return None

    def remember(self, chosen: Path | str) -> None:
        """Keep the folder of ``chosen`` (a file or a folder) for the next dialog."""
        path = Path(chosen)
        folder = path if path.is_dir() else path.parent
        settings = QSettings()
        settings.setValue(LAST_FOLDER_KEY, str(folder))
        settings.sync()

    def start_folder(self, *, saving: bool = False) -> Path:
        """The last folder used, else the project folder, else home. A save dialog never
        starts inside the image folder: beside it instead."""
        project = self.project_folder()
        last = self.last_folder()
        if saving and project is not None:
            if last is not None and not _inside(last, project):
                return last
            return project.parent
        if last is not None:
            return last
        if project is not None and project.is_dir():
            return project
        return Path.home()

    # Dialogs (each returns None / [] when cancelled) ------------------------------------
    def open_file(self, parent: QWidget | None, title: str, filters: str) -> Path | None:
        name, _ = QFileDialog.getOpenFileName(parent, title, str(self.start_folder()), filters)
        return self._chosen(name)

    def open_files(self, parent: QWidget | None, title: str, filters: str) -> list[Path]:
        names, _ = QFileDialog.getOpenFileNames(parent, title, str(self.start_folder()),
                                                filters)
        if names:
            self.remember(names[0])
        return [Path(name) for name in names]

    def save_file(self, parent: QWidget | None, title: str, name: str,
                  filters: str) -> Path | None:
        """``name`` is the suggested file name, shown in the start folder."""
        start = self.start_folder(saving=True) / name
        chosen, _ = QFileDialog.getSaveFileName(parent, title, str(start), filters)
        return self._chosen(chosen)

    def folder(self, parent: QWidget | None, title: str) -> Path | None:
        """A folder; the next dialog starts beside it (where its siblings are)."""
        chosen = QFileDialog.getExistingDirectory(parent, title, str(self.start_folder()))
        if not chosen:
            return None
        self.remember(Path(chosen).parent)
        return Path(chosen)

    def _chosen(self, name: str) -> Path | None:
        if not name:
            return None
        self.remember(name)
        return Path(name)


# The app's one instance; the context points it at the open project.
dialogs = FileDialogs()
