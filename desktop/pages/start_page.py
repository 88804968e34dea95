"""The Start page: open a folder, try the sample, or pick up a recent project.

A recent project whose folder is gone (a moved disk, a renamed folder) stays listed as
"(missing)" until the user removes it: Remove from list (button, context menu or Delete),
which forgets the entry only; nothing on disk is touched.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, QSize, Qt
from PySide6.QtGui import QIcon, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from loupe.desktop.context import AppContext
from loupe.desktop.file_dialogs import dialogs
from loupe.engine.core.resources import icon_path

_PATH_ROLE = Qt.ItemDataRole.UserRole
_MISSING_ROLE = Qt.ItemDataRole.UserRole + 1


class StartPage(QWidget):
    """Three ways in, as in Lobe's welcome screen, plus the recent projects list."""

    def __init__(self, context: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        layout = QVBoxLayout(self)
        layout.setContentsMargins(48, 36, 48, 36)
        layout.setSpacing(18)
        layout.addLayout(self._header())
        layout.addLayout(self._buttons())
        recent_row = QHBoxLayout()
        recent_row.addWidget(QLabel("<b>Recent projects</b>"), 1)
        self.remove_button = QPushButton("Remove from list")
        self.remove_button.setToolTip("Forget the selected entry; no file or folder is touched")
        self.remove_button.setEnabled(False)
        self.remove_button.clicked.connect(self.remove_selected)
        recent_row.addWidget(self.remove_button)
        layout.addLayout(recent_row)
        self.recent_list = QListWidget()
        self.recent_list.setIconSize(QSize(20, 20))
        self.recent_list.itemActivated.connect(self._open_recent)
        self.recent_list.itemSelectionChanged.connect(self._on_selection)
        self.recent_list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.recent_list.customContextMenuRequested.connect(self._context_menu)
        remove = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.recent_list)
        remove.setContext(Qt.ShortcutContext.WidgetShortcut)
        remove.activated.connect(self.remove_selected)
        layout.addWidget(self.recent_list, 1)
        hint = QLabel(
            "Tip: drop an image folder anywhere on the window to open it, or drop images "
            "and model files to predict."
        )
        hint.setWordWrap(True)
        hint.setEnabled(False)
        layout.addWidget(hint)
        context.recentChanged.connect(self.refresh_recent)
        self.refresh_recent()

    def _header(self) -> QHBoxLayout:
        row = QHBoxLayout()
        logo = QLabel()
        if icon_path().is_file():
            logo.setPixmap(
                QPixmap(str(icon_path())).scaled(
                    72, 72, Qt.AspectRatioMode.KeepAspectRatio,
                    Qt.TransformationMode.SmoothTransformation,
                )
            )
        row.addWidget(logo)
        text = QLabel(
            "<h1 style='margin:0'>Loupe</h1>"
            "<p>Train an image classifier on your own pictures, watch it learn, then see "
            "what it looks at. Everything stays on this computer.</p>"
        )
        text.setWordWrap(True)
        row.addWidget(text, 1)
        return row

    def _buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.open_button = QPushButton("Open folder…")
        self.open_button.setToolTip("A folder of images, labelled by sub-folder or file name")
        self.open_button.clicked.connect(self.choose_folder)
        self.sample_button = QPushButton("Try the sample")
        self.sample_button.setToolTip(
            "596 clip-art images: animals (Capitalized names) and food (lowercase), "
            "labelled by the first letter as in fastai lesson 1"
        )
        self.sample_button.clicked.connect(self.context.open_sample)
        self.model_button = QPushButton("Open model…")
        self.model_button.clicked.connect(self.choose_model)
        for button in (self.open_button, self.sample_button, self.model_button):
            button.setMinimumHeight(44)
            button.setMinimumWidth(170)
            row.addWidget(button)
        row.addStretch(1)
        return row

    def choose_folder(self) -> None:
        folder = dialogs.folder(self, "Open an image folder")
        if folder is not None:
            self.context.open_folder(folder)

    def choose_model(self) -> None:
        path = dialogs.open_file(self, "Open a Loupe model", "Loupe models (*.loupe)")
        if path is not None:
            self.context.set_model(path)

    def refresh_recent(self) -> None:
        self.recent_list.clear()
        folder_icon = self.style().standardIcon(self.style().StandardPixmap.SP_DirIcon)
        for folder in self.context.recent_folders():
            exists = folder.is_dir()
            label = f"{folder.name}    {folder.parent}" if exists else f"{folder}  (missing)"
            item = QListWidgetItem(folder_icon if exists else QIcon(), label)
            item.setData(_PATH_ROLE, str(folder))
            item.setData(_MISSING_ROLE, not exists)
            item.setToolTip(str(folder) if exists else
                            f"{folder} no longer exists; select it and Remove from list")
            if not exists:
                item.setForeground(self.palette().placeholderText())
            self.recent_list.addItem(item)
        if self.recent_list.count() == 0:
            empty = QListWidgetItem("No recent projects yet: open a folder or try the sample.")
            empty.setFlags(Qt.ItemFlag.NoItemFlags)
            self.recent_list.addItem(empty)

    def _open_recent(self, item: QListWidgetItem) -> None:
        path = item.data(_PATH_ROLE)
        if not path:
            return
        if item.data(_MISSING_ROLE):
            self.context.statusMessage.emit(
                f"{path} no longer exists: Remove from list forgets it")
            return
        self.context.open_folder(Path(path))

    def selected_folders(self) -> list[Path]:
        return [Path(item.data(_PATH_ROLE)) for item in self.recent_list.selectedItems()
                if item.data(_PATH_ROLE)]

    def _on_selection(self) -> None:
        self.remove_button.setEnabled(bool(self.selected_folders()))

    def remove_selected(self) -> None:
        """Forget the selected recent entries (the folders themselves are not touched)."""
        for folder in self.selected_folders():
            self.context.forget_folder(folder)

    def _context_menu(self, position: QPoint) -> None:
        item = self.recent_list.itemAt(position)
        if item is None or not item.data(_PATH_ROLE):
            return
        item.setSelected(True)
        menu = QMenu(self)
        if not item.data(_MISSING_ROLE):
            menu.addAction("Open", lambda: self._open_recent(item))
        menu.addAction("Remove from list", self.remove_selected)
        menu.popup(self.recent_list.viewport().mapToGlobal(position))
