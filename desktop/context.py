"""The state every page shares, and the signals that tell pages it changed.

Pages never talk to each other directly: the Data page sets ``prepared`` and emits
``dataPrepared``, the Train page listens; training sets the model and emits
``modelChanged``, the Predict page listens. All engine work goes through ``runner``
(desktop/workers.py), so nothing here blocks the GUI thread for long.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from loupe.desktop.workers import Task, TaskRunner
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

    return _data_state(prepare_stages(spec, on_event=on_event, cancel=cancel))


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
    # torch and the training engine are imported (after the first paint, in a worker);
    # pages defer what needs them until then.
    engineReady = Signal()

    def __init__(self, runner: TaskRunner | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.runner = runner or TaskRunner(self)
        self.runner.set_error_reporter(self.report_error)  # a failed task: the dialog
        self.project: Any = None  # loupe.engine.data.project.Project
        self.prepared: Any = None  # loupe.engine.data.dataset.PreparedData
        self.model_path: Path | None = None
        self.predictor: Any = None  # loupe.engine.inference.predict.Predictor
        self.training_running = False
        self.engine_ready = False
        self.data = DataState()
        self.project_warnings: list[str] = []

    # Projects and data --------------------------------------------------------------
    def open_folder(self, path: Path | str, label_spec: str | None = None) -> Task:
        """Make ``path`` the current project (its saved settings, or defaults) and scan it.

        ``label_spec`` applies only to a folder without a saved project (the sample's
        preconfigured rule). A damaged project file gives defaults and a warning.
        """
        from loupe.engine.core.resources import sample_dir
        from loupe.engine.data.labels import parse_label_rule
        from loupe.engine.data.project import load_project, project_file

        root = Path(path).expanduser().absolute()
        if label_spec is None and root.resolve() == sample_dir().resolve():
            # However the sample is opened (reopened at start-up, Open folder…), a lost
            # or damaged project gives it its own rule back, not "parent" (labels nothing).
            label_spec = SAMPLE_LABEL_SPEC
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
        self.recentChanged.emit()
        return task

    def open_sample(self) -> Task:
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

    def save_project(self) -> Path | None:
        """Write the project file atomically; errors become a message, not a crash."""
        if self.project is None:
            return None
        try:
            return self.project.save()
        except (OSError, LoupeError) as exc:
            self.report_error("Cannot save the project", exc)
            return None

    # Models -------------------------------------------------------------------------
    def set_model(self, path: Path | str) -> Task:
        """Load a model bundle in a task; ``modelChanged`` once it is ready. A newer
        load supersedes one still running (the last model asked for wins)."""
        from loupe.engine.inference.predict import Predictor

        path = Path(path)
        task = self.runner.start(
            Predictor.from_file, path, events=False, owner=self, kind="load-model",
            on_result=lambda predictor: self.set_predictor(path, predictor),
            error_title=f"Cannot load {path.name}")
        self.statusMessage.emit(f"Loading model {path.name}…")
        return task

    def set_predictor(self, path: Path, predictor: Any) -> None:
        self.model_path = Path(path)
        self.predictor = predictor
        self.statusMessage.emit(f"Model {self.model_path.name} loaded")
        self.modelChanged.emit()

    def mark_engine_ready(self) -> None:
        if not self.engine_ready:
            self.engine_ready = True
            self.engineReady.emit()

    # Training state (the Train page owns the task) ----------------------------------
    def set_training(self, running: bool) -> None:
        if running != self.training_running:
            self.training_running = running
            self.trainingStateChanged.emit(running)

    # Messages -----------------------------------------------------------------------
    def report_error(self, title: str, exc: BaseException) -> None:
        log.warning("%s: %r", title, exc)
        self.errorRaised.emit(title, describe_error(exc))

    # Recent projects (kept by the engine, shared with the CLI) ---------------------
    def recent_folders(self) -> list[Path]:
        from loupe.engine.data.project import recent_projects

        return recent_projects()

    def forget_folder(self, root: Path) -> None:
        from loupe.engine.data.project import forget_recent

        forget_recent(root)
        self.recentChanged.emit()
