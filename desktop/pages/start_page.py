"""The Start page: open a folder, try the sample, or pick up a recent project."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from loupe.desktop.context import AppContext
from loupe.engine.core.resources import icon_path

_PATH_ROLE = Qt.ItemDataRole.UserRole


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
        recent_title = QLabel("<b>Recent projects</b>")
        layout.addWidget(recent_title)
        self.recent_list = QListWidget()
        self.recent_list.setIconSize(QSize(20, 20))
        self.recent_list.itemActivated.connect(self._open_recent)
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
            "598 clip-art images: animals (Capitalized names) and food (lowercase), "
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
        folder = QFileDialog.getExistingDirectory(self, "Open an image folder")
        if folder:
            self.context.open_folder(Path(folder))

    def choose_model(self) -> None:
        name, _ = QFileDialog.getOpenFileName(
            self, "Open a Loupe model", "", "Loupe models (*.loupe)"
        )
        if name:
            self.context.set_model(Path(name))

    def refresh_recent(self) -> None:
        self.recent_list.clear()
        folder_icon = self.style().standardIcon(self.style().StandardPixmap.SP_DirIcon)
        for folder in self.context.recent_folders():
            exists = folder.is_dir()
            label = f"{folder.name}    {folder.parent}" if exists else f"{folder}  (missing)"
            item = QListWidgetItem(folder_icon if exists else QIcon(), label)
            item.setData(_PATH_ROLE, str(folder))
            item.setToolTip(str(folder))
            if not exists:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
            self.recent_list.addItem(item)
        if self.recent_list.count() == 0:
            empty = QListWidgetItem("No recent projects yet: open a folder or try the sample.")
            empty.setFlags(Qt.ItemFlag.NoItemFlags)
            self.recent_list.addItem(empty)

    def _open_recent(self, item: QListWidgetItem) -> None:
        path = item.data(_PATH_ROLE)
        if path:
            self.context.open_folder(Path(path))
