"""The state every page shares, and the signals that tell pages it changed.

Pages never talk to each other directly: the Data page sets ``prepared`` and emits
``dataPrepared``, the Train page listens; training sets the model and emits
``modelChanged``, the Predict page listens. All engine work goes through ``runner``
(desktop/workers.py), so nothing here blocks the GUI thread for long.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from loupe.desktop.file_dialogs import dialogs
from loupe.desktop.gui_words import in_gui_words
from loupe.desktop.workers import Task, TaskRunner, ignore_error
from loupe.engine.core.errors import LoupeError, describe_error

log = logging.getLogger(__name__)

# The sample is laid out like fastai's Oxford-IIIT Pets: animals Capitalized, food
# lowercase, so lesson 1's "first letter uppercase" rule labels it.
SAMPLE_LABEL_SPEC = "upper:animal,food"


@dataclass(frozen=True)
class DataState:
    """What the Data page shows: each stage's result so far, and why the next failed."""

    scan: Any = None  # loupe.engine.data.scan.ScanResult
    labelling: Any = None  # loupe.engine.data.labels.Labelling
    plan: Any = None  # loupe.engine.data.splits.SplitPlan
    error: str = ""
    prepared: Any = None  # loupe.engine.data.dataset.PreparedData, when train/valid are usable
    # Files that are not images, counted only when the scan found no image file at all:
    # "0 images" must say whether the folder is empty or holds only other files.
    other_files: int = 0


def _data_state(stages: Any) -> DataState:
    """The engine's pipeline result (``engine.data.dataset.DataStages``) as the page's state."""
    error = str(stages.error) if stages.error is not None else ""
    return DataState(stages.scan, stages.labelling, stages.plan, error, stages.prepared)


def label_and_split(
    scan: Any, spec: Any, *, on_event: Any = None, cancel: Any = None
) -> DataState:
    """Label and split an existing scan (``engine.data.dataset.prepare_stages``); a rule or
    split that fails is reported in the state (the page shows it next to the editor)
    instead of raised."""
    from loupe.engine.core.events import ignore_event
    from loupe.engine.data.dataset import prepare_stages

    return _data_state(
        prepare_stages(spec, scan=scan, on_event=on_event or ignore_event, cancel=cancel)
    )


def scan_and_prepare(spec: Any, *, on_event: Any, cancel: Any) -> DataState:
    """Scan the folder (progress, cancel), then label and split it, as the engine's
    ``prepare_data`` does (``prepare_stages``: the same steps, stopping where it fails)."""
    from loupe.engine.data.dataset import prepare_stages

    state = _data_state(prepare_stages(spec, on_event=on_event, cancel=cancel))
    scan = state.scan
    if scan is not None and not scan.items and not scan.rejected:
        state = replace(state, other_files=count_files(Path(spec.root), cancel=cancel))
    return state


def count_files(root: Path, *, limit: int = 100_000, cancel: Any = None) -> int:
    """Visible files under ``root`` (as the scan walks: hidden ones skipped), up to ``limit``."""
    count = 0
    for _base, dirs, files in os.walk(root):
        if cancel is not None:
            cancel.raise_if_cancelled()
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        count += sum(1 for name in files if not name.startswith("."))
        if count >= limit:
            return limit
    return count


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded by a worker, with the name to show and to save it as."""

    path: Path
    predictor: Any  # loupe.engine.inference.predict.Predictor
    title: str
    file_name: str
    pinned: bool = False
    reason: str = ""  # why a project reopened with it: "pinned", "last used", "newest run"


def load_model(path: Path, project_root: Path | None = None) -> LoadedModel:
    """Worker body: the bundle as a Predictor, named from its metadata (run, accuracy)."""
    from loupe.engine.data.project_model import pinned_model
    from loupe.engine.inference.predict import Predictor
    from loupe.engine.training.run_admin import bundle_name

    predictor = Predictor.from_file(path)
    try:
        name = bundle_name(path)
        title, file_name = name.title, name.file_name
    except (LoupeError, OSError, ValueError):  # the header loaded above; be safe anyway
        title, file_name = path.name, path.name
    pinned = project_root is not None and pinned_model(project_root) == Path(path).absolute()
    return LoadedModel(Path(path), predictor, title, file_name, pinned=pinned)


def load_project_model(root: Path) -> LoadedModel | None:
    """Worker body: the project's model (pinned, last used or newest run), loaded; None if
    the project has none."""
    from loupe.engine.data.project_model import project_model

    found = project_model(root)
    if found is None:
        return None
    return replace(load_model(found.path, root), reason=found.reason)


class AppContext(QObject):
    """Shared state: project, prepared data, model, training flag, the task runner.

    ``prepared`` is set only when the data can be trained on; ``data`` always holds the
    latest scan/labelling/split, including a rule that labels nothing (with ``error``).
    """

    projectChanged = Signal()
    dataPrepared = Signal()
    modelChanged = Signal()
    trainingStateChanged = Signal(bool)
    trainingFinished = Signal(dict)
    statusMessage = Signal(str)
    errorRaised = Signal(str, str)
    # A folder scan started (its Task): the Data page shows its progress and Cancel.
    scanStarted = Signal(object)
    # Scan/labelling/split results changed, usable or not (``data``): the Data page.
    dataChanged = Signal()
    recentChanged = Signal()
    # The project file was written (saves run in a task: see save_project).
    projectSaved = Signal()
    # torch and the training engine are imported (after the first paint, in a worker);
    # pages defer what needs them until then.
    engineReady = Signal()

    def __init__(self, runner: TaskRunner | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.runner = runner or TaskRunner(self)
        self.runner.set_error_reporter(self.report_error)  # a failed task: the dialog
        self.project: Any = None  # loupe.engine.data.project.Project
        self._save_lock = threading.Lock()
        self._pending_save: tuple[Any, bytes] | None = None  # (project, file bytes)
        self.prepared: Any = None  # loupe.engine.data.dataset.PreparedData
        self.model_path: Path | None = None
        self.predictor: Any = None  # loupe.engine.inference.predict.Predictor
        # How the model is shown ("pets · resnet18 · 27 Nov 2026 · 94.1% accuracy"), the
        # file name "Save model as…" suggests, and whether the project pins it.
        self.model_title = ""
        self.model_file_name = ""
        self.model_pinned = False
        self._restore_pending = False
        self.training_running = False
        self.engine_ready = False
        self.data = DataState()
        self.project_warnings: list[str] = []
        me = weakref.ref(self)
        dialogs.project_folder = lambda: _project_root(me())

    # Projects and data --------------------------------------------------------------
    def open_folder(self, path: Path | str, label_spec: str | None = None) -> Task | None:
        """Make ``path`` the current project (its saved settings, or defaults), scan it,
        and bring back its model (:meth:`restore_model`).

        ``label_spec`` applies only to a folder without a saved project (the sample's
        preconfigured rule). A damaged project file gives defaults and a warning. A path
        that is not a folder opens nothing: the error says so (returns None).
        """
        from loupe.engine.core.resources import sample_dir
        from loupe.engine.data.labels import parse_label_rule
        from loupe.engine.data.project import load_project, project_file

        root = Path(path).expanduser().absolute()
        if not root.is_dir():
            # Not a project: a missing folder (a typo on the command line, a recent entry
            # whose disk is gone) must not become the window title and the current project.
            what = "does not exist" if not root.exists() else "is not a folder"
            self.errorRaised.emit(
                "Cannot open the folder",
                f"{root} {what}. Nothing was opened; choose an image folder with "
                "File → Open folder… or the Start page.")
            return None
        if label_spec is None and root.resolve() == sample_dir().resolve():
            # However the sample is opened (reopened at start-up, Open folder…), a lost
            # or damaged project gives it its own rule back, not "parent" (labels nothing).
            label_spec = SAMPLE_LABEL_SPEC
        self.flush_project()  # the previous settings on disk before any file is read
        fresh = not project_file(root).exists()
        project, warnings = load_project(root)
        for warning in warnings:
            self.statusMessage.emit(warning)
        self.project_warnings = list(warnings)
        if label_spec is not None and (fresh or warnings):
            project.label = parse_label_rule(label_spec)
        self.project = project
        self.projectChanged.emit()
        # Forget the previous folder's results at once (and say so): otherwise the pages
        # showed its files, counts and "Ready: N images" under the new folder's name
        # until the scan finished, and for good when the scan was cancelled.
        self.set_data(DataState())
        task = self.scan()
        self.save_project()  # also puts the folder at the top of the recent list
        self.restore_model()
        return task

    def open_sample(self) -> Task | None:
        """The bundled sample with lesson 1's rule: upper-case first letter = animal."""
        from loupe.engine.core.resources import sample_dir

        return self.open_folder(sample_dir(), label_spec=SAMPLE_LABEL_SPEC)

    def scan(self) -> Task:
        """Scan the project folder, then label and split it, in a task.

        A newer scan (another folder opened) supersedes a running one, silently; an edit
        still being applied to the previous scan is dropped too.
        """
        self.runner.drop("relabel", owner=self)
        task = self.runner.start(
            scan_and_prepare, self.project.data_spec(), owner=self, kind="scan",
            on_result=self._on_scanned, on_cancel=lambda: self.statusMessage.emit(
                "Scan cancelled"), error_title="Cannot read the folder")
        self.scanStarted.emit(task)
        return task

    def cancel_scan(self) -> None:
        self.runner.cancel("scan", owner=self)

    def _on_scanned(self, state: DataState) -> None:
        self.runner.drop("relabel", owner=self)  # an edit of the previous scan's rules
        self.set_data(state)

    def relabel(self) -> Task | None:
        """Re-apply the project's (edited) label and split rules to the last scan.

        Cheap for small folders, but the split hashes files to find leaks, so it runs in a
        task; a newer edit supersedes an older one, whose result is then never used.
        """
        if self.project is None or self.data.scan is None:
            return None
        return self.runner.start(
            label_and_split, self.data.scan, self.project.data_spec(), owner=self,
            kind="relabel", on_result=self.set_data, error_title="Cannot apply the rules")

    def set_data(self, state: DataState) -> None:
        """New scan/labelling/split results; ``dataPrepared`` when they are usable."""
        self.data = state
        self.prepared = state.prepared  # before dataChanged: its listeners read it
        self.dataChanged.emit()
        if state.prepared is not None:
            self.dataPrepared.emit()

    def set_prepared(self, prepared: Any) -> None:
        """Usable data from elsewhere (e.g. after relabelling in Results)."""
        self.set_data(
            DataState(prepared.scan, prepared.labelling, prepared.plan, prepared=prepared)
        )

    def save_project(self, *, wait: bool = False) -> None:
        """Save the project's settings; errors become a message, not a crash.

        The file is written atomically and synced to disk, which takes tens of
        milliseconds: on the GUI thread that was a visible stall at every Start click.
        So the settings are snapshotted here and written by a task; saves are
        serialised and the newest snapshot is the one that ends up on disk (a task that
        finds nothing pending has nothing to do). ``wait`` writes now (closing the
        window); opening a project first writes what is pending (:meth:`flush_project`).
        ``projectSaved`` and ``recentChanged`` follow each write.
        """
        if self.project is None:
            return
        try:
            data = self.project.encode()
        except LoupeError as exc:
            self.report_error("Cannot save the project", exc)
            return
        with self._save_lock:
            self._pending_save = (self.project, data)
        if wait:
            self.flush_project()
            return
        self.runner.start(
            self._write_pending_save, events=False, kind="save-project", owner=self,
            supersede=False, on_result=self._after_save, error_title="Cannot save the project")

    def flush_project(self) -> None:
        """Write a pending project save now, on this thread (it is one small file)."""
        try:
            written = self._write_pending_save()
        except (OSError, LoupeError) as exc:
            self.report_error("Cannot save the project", exc)
            return
        self._after_save(written)

    def _write_pending_save(self) -> bool:
        with self._save_lock:
            pending, self._pending_save = self._pending_save, None
            if pending is None:
                return False
            project, data = pending
            project.write(data)
            return True

    def _after_save(self, written: bool) -> None:
        if written:
            self.projectSaved.emit()
            self.recentChanged.emit()

    # Models -------------------------------------------------------------------------
    def set_model(self, path: Path | str, *, remember: bool = True) -> Task:
        """Load a model bundle in a task; ``modelChanged`` once it is ready. A newer
        load supersedes one still running (the last model asked for wins). The open
        project remembers it (``remember``) and reopens with it next time."""
        path = Path(path)
        root = self.project.root if self.project is not None else None
        task = self.runner.start(
            load_model, path, root, events=False, owner=self, kind="load-model",
            on_result=lambda loaded: self._on_model_loaded(loaded, remember),
            error_title=f"Cannot load {path.name}")
        self.statusMessage.emit(f"Loading model {path.name}…")
        return task

    def _on_model_loaded(self, loaded: LoadedModel, remember: bool) -> None:
        self.set_predictor(loaded.path, loaded.predictor, title=loaded.title,
                           file_name=loaded.file_name, pinned=loaded.pinned)
        if remember and self.project is not None:
            from loupe.engine.data.project_model import remember_model

            self.runner.start(remember_model, self.project.root, loaded.path, events=False,
                              owner=self, kind="remember-model", on_error=ignore_error)

    def set_predictor(self, path: Path, predictor: Any, *, title: str | None = None,
                      file_name: str | None = None, pinned: bool = False) -> None:
        self.model_path = Path(path)
        self.predictor = predictor
        self.model_title = title or self.model_path.name
        self.model_file_name = file_name or self.model_path.name
        self.model_pinned = pinned
        self.statusMessage.emit(f"Loaded model: {self.model_title}")
        self.modelChanged.emit()

    def clear_model(self) -> None:
        """No model (its file was deleted with its run)."""
        self.model_path = None
        self.predictor = None
        self.model_title = self.model_file_name = ""
        self.model_pinned = False
        self.modelChanged.emit()

    def restore_model(self) -> Task | None:
        """Load the open project's model (pinned, last used or its newest run) in a task.

        Waits for the engine warm-up when it is still running (start-up): loading a
        model imports torch, and two threads importing it at once only slow both.
        """
        if self.project is None:
            return None
        if not self.engine_ready:
            self._restore_pending = True
            return None
        self._restore_pending = False
        root = self.project.root
        return self.runner.start(
            load_project_model, root, events=False, owner=self, kind="load-model",
            on_result=lambda loaded: self._on_restored(root, loaded),
            on_error=lambda exc: self.statusMessage.emit(
                f"The project's model could not be loaded: {describe_error(exc)}"))

    def _on_restored(self, root: Path, loaded: LoadedModel | None) -> None:
        if loaded is None or self.project is None or self.project.root != root:
            return
        self.set_predictor(loaded.path, loaded.predictor, title=loaded.title,
                           file_name=loaded.file_name, pinned=loaded.pinned)
        self.statusMessage.emit(f"Reopened {self.project.name} with its model "
                                f"({loaded.reason}): {loaded.title}")

    def pin_model(self, pinned: bool) -> Task | None:
        """Pin the current model to the open project (always reopen with it) or unpin."""
        if self.project is None or self.model_path is None:
            return None
        from loupe.engine.data.project_model import pin_model

        self.model_pinned = pinned
        return self.runner.start(
            pin_model, self.project.root, self.model_path if pinned else None, events=False,
            owner=self, kind="pin-model", error_title="Cannot pin the model")

    def mark_engine_ready(self) -> None:
        if not self.engine_ready:
            self.engine_ready = True
            self.engineReady.emit()
            if self._restore_pending:
                self.restore_model()

    # Training state (the Train page owns the task) ----------------------------------
    def set_training(self, running: bool) -> None:
        if running != self.training_running:
            self.training_running = running
            self.trainingStateChanged.emit(running)

    # Messages -----------------------------------------------------------------------
    def report_error(self, title: str, exc: BaseException) -> None:
        log.warning("%s: %r", title, exc)
        self.errorRaised.emit(title, in_gui_words(describe_error(exc)))

    # Recent projects (kept by the engine, shared with the CLI) ---------------------
    def recent_folders(self) -> list[Path]:
        from loupe.engine.data.project import recent_projects

        return recent_projects()

    def forget_folder(self, root: Path) -> None:
        from loupe.engine.data.project import forget_recent

        forget_recent(root)
        self.recentChanged.emit()


def _project_root(context: AppContext | None) -> Path | None:
    project = getattr(context, "project", None) if context is not None else None
    return getattr(project, "root", None)
