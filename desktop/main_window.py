"""The main window: assembles the pages, menus, shortcuts, status bar and drop routing.

It holds no workflow logic: pages do their own work through the shared
:class:`~loupe.desktop.context.AppContext`. What lives here is what belongs to the whole window:
where a drop goes, what closing means while training runs, and window state in QSettings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMessageBox,
    QTabWidget,
    QWidget,
)

from loupe.desktop.context import AppContext
from loupe.desktop.file_dialogs import dialogs
from loupe.desktop.pages.data_page import DataPage
from loupe.desktop.pages.models_page import ModelsPage
from loupe.desktop.pages.predict_page import PredictPage
from loupe.desktop.pages.results_page import ResultsPage
from loupe.desktop.pages.start_page import StartPage
from loupe.desktop.pages.train_page import TrainPage
from loupe.desktop.routing import classify_paths, local_paths
from loupe.engine.core.formats import BUNDLE_SUFFIX

log = logging.getLogger(__name__)

TAB_NAMES = ("Start", "Data", "Train", "Results", "Predict", "Models")


# The engine modules behind the Train, Results and Predict pages' first calls.
WARM_MODULES = (
    "loupe.engine.training.trainer",
    "loupe.engine.training.lr_finder",
    "loupe.engine.training.scoring",
    "loupe.engine.inference.predict",
    "loupe.engine.inference.cam",
)


def _warm_up() -> dict[str, str]:
    """Import torch and the training engine off the GUI thread; describe the device.

    Runs after the first paint, so the window appears before torch is loaded and later
    imports on the GUI thread are instant. ``loupe.engine.training`` exports its functions
    lazily, so the modules behind them are imported here by name: left to the first
    ``start_training()`` they took ~40 ms of the GUI thread (PySide6's import hook reads
    each new module's source), a visible stall at the Start click.
    """
    import importlib

    from loupe.engine.core.device import resolve_device

    for module in WARM_MODULES:
        importlib.import_module(module)
    info = resolve_device("auto")
    return {"kind": info.kind, "name": info.name}


def _is_qt_geometry(value: Any) -> bool:
    """A well-formed ``QWidget.saveGeometry()`` blob (Qt's magic number leads it)."""
    return isinstance(value, QByteArray) and bytes(value[:4]) == b"\x01\xd9\xd0\xcb"


class MainWindow(QMainWindow):
    """Tabs Start, Data, Train, Results, Predict, Models; drops go where they make sense."""

    def __init__(self, context: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.setWindowTitle("Loupe")
        self.setAcceptDrops(True)
        self.setMinimumSize(900, 620)
        self._close_pending = False
        self._reopening = False
        self._quick_start: Any = None
        self.tabs = QTabWidget(self)
        self.tabs.setDocumentMode(True)
        self.start_page = StartPage(context)
        self.data_page = DataPage(context)
        self.train_page = TrainPage(context)
        self.results_page = ResultsPage(context)
        self.predict_page = PredictPage(context)
        self.models_page = ModelsPage(context)
        pages = (
            self.start_page,
            self.data_page,
            self.train_page,
            self.results_page,
            self.predict_page,
            self.models_page,
        )
        for name, page in zip(TAB_NAMES, pages, strict=True):
            self.tabs.addTab(page, name)
        self.setCentralWidget(self.tabs)
        self._build_status_bar()
        self._build_menus()
        self._connect_context()
        self._restore_state()

    # Construction -------------------------------------------------------------------
    def _build_status_bar(self) -> None:
        self.state_label = QLabel("Ready")
        self.device_label = QLabel("Device: detecting…")
        bar = self.statusBar()
        bar.addPermanentWidget(self.state_label)
        bar.addPermanentWidget(self.device_label)

    def _action(self, menu: Any, text: str, slot: Any, shortcut: Any = None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "&Open folder…", self.choose_folder, QKeySequence.StandardKey.Open)
        self._action(file_menu, "Open &model…", self.choose_model, "Ctrl+Shift+O")
        self._action(file_menu, "Try the &sample", self.context.open_sample)
        self._action(file_menu, "&Save project", lambda: self.context.save_project(), "Ctrl+S")
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.quit_action = file_menu.actions()[-1]
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        edit_menu = bar.addMenu("&Edit")
        self._action(edit_menu, "&Paste image", self.paste, QKeySequence.StandardKey.Paste)
        train_menu = bar.addMenu("&Training")
        self.train_action = self._action(train_menu, "&Train", self.start_training, "Ctrl+T")
        self.stop_action = self._action(train_menu, "&Stop", self.stop_training, "Ctrl+.")
        self.stop_action.setEnabled(False)
        view_menu = bar.addMenu("&View")
        for index, name in enumerate(TAB_NAMES):
            self._action(
                view_menu, name, lambda _=False, i=index: self.tabs.setCurrentIndex(i),
                f"Ctrl+{index + 1}",
            )
        help_menu = bar.addMenu("&Help")
        self.quick_start_action = self._action(help_menu, "&Quick start", self.show_quick_start,
                                               QKeySequence.StandardKey.HelpContents)
        self._action(help_menu, "&About Loupe", self._about)

    def _connect_context(self) -> None:
        ctx = self.context
        ctx.statusMessage.connect(lambda text: self.statusBar().showMessage(text, 8000))
        ctx.errorRaised.connect(self.show_error)
        ctx.trainingStateChanged.connect(self._on_training_state)
        ctx.scanStarted.connect(self._on_scan_started)
        ctx.projectChanged.connect(self._on_project_changed)
        self.train_page.viewResultsRequested.connect(
            lambda: self.tabs.setCurrentWidget(self.results_page))
        self.models_page.resumeRequested.connect(self.resume_run)
        self.results_page.retrainRequested.connect(self.start_training)

    # Startup ------------------------------------------------------------------------
    def after_first_paint(self, *, sample: bool = False, folder: Path | None = None) -> None:
        """Once the window is on screen: warm up torch, then open what was asked for."""
        # A short delay lets the first expose/paint events through before the warm-up
        # thread starts competing for the GIL.
        QTimer.singleShot(50, lambda: self._start_up(sample, folder))

    def _start_up(self, sample: bool, folder: Path | None) -> None:
        self.context.runner.start(_warm_up, events=False, owner=self, kind="warm-up",
                                  on_result=self._on_device, on_error=self._on_device_error)
        if folder is not None:
            # A folder that does not exist opens nothing (the context says so) and the
            # window stays on its tab, titled "Loupe".
            if self.context.open_folder(folder) is not None:
                self.tabs.setCurrentWidget(self.data_page)
        elif sample:
            self.context.open_sample()
            self.tabs.setCurrentWidget(self.data_page)
        else:
            self._reopen_last_project()

    def _reopen_last_project(self) -> None:
        """Pick up where the user left off: the last project, with its saved rules and
        settings, loaded in the background while the restored tab stays in front."""
        recent = self.context.recent_folders()
        if recent and recent[0].is_dir():
            self._reopening = True
            try:
                self.context.open_folder(recent[0])
            finally:
                self._reopening = False

    def _on_device(self, info: dict[str, str]) -> None:
        self.device_label.setText(f"Device: {info['name']}")
        self.device_label.setToolTip(f"Training runs on {info['kind']} by default")
        self.context.mark_engine_ready()

    def _on_device_error(self, exc: BaseException) -> None:
        """Not a dialog at start-up: the status bar says it, and training reports it."""
        self.device_label.setText("Device: unavailable")
        self.device_label.setToolTip(str(exc))
        self.context.mark_engine_ready()  # pages report their own errors from here on

    # Actions ------------------------------------------------------------------------
    def choose_folder(self) -> None:
        folder = dialogs.folder(self, "Open an image folder")
        if folder is not None:
            self.open_folder(folder)

    def open_folder(self, folder: Path) -> None:
        if self.context.open_folder(folder) is not None:
            self.tabs.setCurrentWidget(self.data_page)

    def choose_model(self) -> None:
        path = dialogs.open_file(self, "Open a Loupe model", f"Loupe models (*{BUNDLE_SUFFIX})")
        if path is not None:
            self.context.set_model(path)
            self.tabs.setCurrentWidget(self.predict_page)

    def start_training(self) -> None:
        self.tabs.setCurrentWidget(self.train_page)
        self.train_page.start_training()

    def stop_training(self) -> None:
        self.train_page.stop_training()

    def resume_run(self, run_dir: Path) -> None:
        """Models page → Resume: continue the run on the Train page."""
        self.tabs.setCurrentWidget(self.train_page)
        self.train_page.resume_run(run_dir)

    def paste(self) -> None:
        """Ctrl+V: copied image files/URLs go through drop routing; raw pixels are saved
        to a file in the cache dir and predicted."""
        mime = QGuiApplication.clipboard().mimeData()
        if mime is None:
            return
        paths = local_paths(mime)
        if paths:
            self.route_paths(paths)
            return
        if mime.hasImage():
            self._predict_pasted_image(mime.imageData())
            return
        self.statusBar().showMessage("Nothing to paste: copy an image or an image file", 5000)

    def _predict_pasted_image(self, image: Any) -> None:
        import time

        from loupe.engine.core import paths

        target = paths.cache_dir() / "pasted" / f"pasted-{time.strftime('%Y%m%d-%H%M%S')}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if image is None or image.isNull() or not image.save(str(target), "PNG"):
            self.statusBar().showMessage("The clipboard image could not be read", 5000)
            return
        self.route_paths([target])

    # Drops --------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if local_paths(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: Any) -> None:
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = local_paths(event.mimeData())
        if paths:
            event.acceptProposedAction()
            self.route_paths(paths)

    def route_paths(self, paths: list[Path]) -> None:
        """Model file → load it; images → Predict; folder → Predict (a model is loaded
        and the user says so) or open as the data folder."""
        plan = classify_paths(paths)
        if plan.model is not None:
            self.context.set_model(plan.model)
            self.tabs.setCurrentWidget(self.predict_page)
        elif plan.images:
            self.tabs.setCurrentWidget(self.predict_page)
            self.predict_page.predict_paths(list(plan.images))
        elif plan.folder is not None:
            self._route_folder(plan.folder)
        else:
            self.statusBar().showMessage(
                "Drop images, an image folder or a .loupe model file", 5000
            )

    def _route_folder(self, folder: Path) -> None:
        if self.context.predictor is not None:
            box = QMessageBox(self)
            box.setWindowTitle("Dropped a folder")
            box.setText(f"What should Loupe do with {folder.name}?")
            predict = box.addButton("Predict every image", QMessageBox.ButtonRole.AcceptRole)
            box.addButton("Open as training data", QMessageBox.ButtonRole.ActionRole)
            box.exec()
            if box.clickedButton() is predict:
                self.tabs.setCurrentWidget(self.predict_page)
                self.predict_page.predict_folder(folder)
                return
        self.open_folder(folder)

    # Status -------------------------------------------------------------------------
    def show_error(self, title: str, message: str) -> None:
        self.statusBar().showMessage(f"{title}: {message}", 10000)
        QMessageBox.warning(self, title, message)

    def _on_training_state(self, running: bool) -> None:
        self.state_label.setText("Training…" if running else "Ready")
        self.train_action.setEnabled(not running)
        self.stop_action.setEnabled(running)

    def _on_scan_started(self, task: Any) -> None:
        self.state_label.setText("Scanning…")
        task.done.connect(lambda: self._on_training_state(self.context.training_running))

    def _on_project_changed(self) -> None:
        project = self.context.project
        root = getattr(project, "root", None)
        # Qt appends the application display name to a title that does not end with it,
        # so "Loupe — pets" was shown as "Loupe — pets — Loupe".
        self.setWindowTitle(f"{Path(root).name} — Loupe" if root else "Loupe")
        if self.tabs.currentWidget() is self.start_page and not self._reopening:
            self.tabs.setCurrentWidget(self.data_page)

    def show_quick_start(self) -> None:
        """Help → Quick start: a small window beside the main one (not modal)."""
        from loupe.desktop.quick_start import QuickStartDialog

        if self._quick_start is None:
            self._quick_start = QuickStartDialog(self)
        self._quick_start.show()
        self._quick_start.raise_()

    def _about(self) -> None:
        from loupe.engine import __version__

        QMessageBox.about(
            self,
            "About Loupe",
            f"Loupe {__version__}\nTrain and inspect image classifiers on your own "
            "workstation, offline.",
        )

    # Window state and closing ---------------------------------------------------------
    def _restore_state(self) -> None:
        """Geometry, dock state and tab from QSettings; anything unreadable → defaults."""
        settings = QSettings()
        problems = []
        unreadable = settings.status() != QSettings.Status.NoError
        if unreadable:
            settings.clear()
        geometry = settings.value("window/geometry")
        if not (isinstance(geometry, QByteArray) and self.restoreGeometry(geometry)):
            self._default_size()
            # Qt also refuses a sound geometry saved on a larger screen (a laptop taken
            # off its monitor): that is not damage, so say nothing about it.
            if geometry is not None and not _is_qt_geometry(geometry):
                problems.append("window geometry")
        state = settings.value("window/state")
        if state is not None and not (isinstance(state, QByteArray) and self.restoreState(state)):
            problems.append("window layout")
        tab = settings.value("window/tab", 0)
        try:
            self.tabs.setCurrentIndex(max(0, min(int(tab), len(TAB_NAMES) - 1)))
        except (TypeError, ValueError):
            problems.append("last tab")
        if unreadable:  # (it read "using defaults for the settings file could not be read")
            self.settings_warning = (
                f"Settings were damaged (the file {settings.fileName()} could not be read); "
                "using defaults")
        elif problems:
            self.settings_warning = "Settings were damaged; using defaults for " + ", ".join(
                problems
            )
        if problems or unreadable:
            self.statusBar().showMessage(self.settings_warning, 15000)
            log.warning(self.settings_warning)
        else:
            self.settings_warning = ""

    def _default_size(self) -> None:
        """1200×800, or less on a smaller screen (never larger than what is available)."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        width, height = 1200, 800
        if screen is not None:
            available = screen.availableGeometry()
            width, height = min(width, available.width()), min(height, available.height())
        self.resize(max(width, self.minimumWidth()), max(height, self.minimumHeight()))

    def save_state(self) -> None:
        settings = QSettings()
        settings.setValue("window/geometry", self.saveGeometry())
        settings.setValue("window/state", self.saveState())
        settings.setValue("window/tab", self.tabs.currentIndex())
        settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Ask while training; then cancel every task and close once they stopped.

        The wait is asynchronous (the runner's ``idle`` signal closes the window), so the
        window keeps painting while training finishes its batch and saves its checkpoint.
        """
        runner = self.context.runner
        if self.context.training_running and not self._close_pending:
            answer = QMessageBox.question(
                self,
                "Training is running",
                "Stop training and quit? The last finished epoch stays saved in the run.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No,
            )
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        if runner.active():
            if not self._close_pending:
                self._close_pending = True
                runner.idle.connect(self.close, Qt.ConnectionType.QueuedConnection)
                self.state_label.setText("Stopping…")
                runner.cancel_all()
            event.ignore()
            return
        self.context.save_project(wait=True)
        self.save_state()
        event.accept()
