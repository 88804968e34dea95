"""The Data page: choose a folder, see what the scan found, edit how it is labelled and
split, and watch the result update as you type.

Everything the page shows comes from :attr:`AppContext.data` (scan, labelling, split);
edits go into the project and :meth:`AppContext.relabel` recomputes them in a worker,
debounced so typing a regex does not relabel on every keystroke.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from loupe.desktop.context import AppContext
from loupe.desktop.file_dialogs import dialogs
from loupe.desktop.pages.data_actions import DataImageActions
from loupe.desktop.pages.data_advice import data_problem, valid_share_note
from loupe.desktop.pages.data_editors import LabelRuleEditor, SplitEditor
from loupe.desktop.pages.data_views import (
    SET_NAMES,
    CountsChart,
    PreviewFilter,
    PreviewModel,
    RejectedModel,
    sample_items,
)
from loupe.desktop.widgets.drop_zone import DropZone
from loupe.desktop.widgets.image_grid import ImageGrid
from loupe.desktop.workers import Task
from loupe.engine.core.errors import LoupeError
from loupe.engine.core.events import Progress

DEBOUNCE_MS = 300


def _table(model: Any) -> QTableView:
    view = QTableView()
    view.setModel(model)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.verticalHeader().setVisible(False)
    view.horizontalHeader().setStretchLastSection(True)
    view.setWordWrap(False)
    view.verticalHeader().setDefaultSectionSize(view.fontMetrics().height() + 8)
    return view


class DataPage(QWidget):
    """Folder, scan progress, rule editors with live preview, counts, samples, rejects."""

    def __init__(self, context: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.apply_rules)
        self._shown_problem = ""
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self._build_left())
        splitter.addWidget(self._build_right())
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([380, 800])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(splitter)
        context.projectChanged.connect(self._on_project)
        context.scanStarted.connect(self._on_scan_started)
        context.dataChanged.connect(self._on_data)
        self._on_project()

    # Layout -------------------------------------------------------------------------
    def _build_left(self) -> QWidget:
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(0, 0, 6, 0)
        self.folder_label = QLabel("No folder open")
        self.folder_label.setWordWrap(True)
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QHBoxLayout()
        self.choose_button = QPushButton("Choose folder…")
        self.choose_button.clicked.connect(self.choose_folder)
        self.rescan_button = QPushButton("Rescan")
        self.rescan_button.clicked.connect(self._rescan)
        buttons.addWidget(self.choose_button)
        buttons.addWidget(self.rescan_button)
        self.drop_zone = DropZone("Drop an image folder here")
        self.drop_zone.dropped.connect(self._on_drop)
        self.progress = QProgressBar()
        self.progress.setFormat("Scanning %v / %m")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_scan)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.cancel_button)
        self._set_scanning(False)
        self.label_editor = LabelRuleEditor()
        self.label_editor.changed.connect(self._debounce.start)
        self.split_editor = SplitEditor()
        self.split_editor.changed.connect(self._debounce.start)
        self.rule_error = QLabel()
        self.rule_error.setWordWrap(True)
        self.rule_error.setStyleSheet("color: #d0453a;")
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.warnings = QListWidget()
        self.warnings.setWordWrap(True)
        layout.addWidget(self.folder_label)
        layout.addLayout(buttons)
        layout.addWidget(self.drop_zone)
        layout.addLayout(progress_row)
        layout.addWidget(self._group("How images are labelled", self.label_editor))
        layout.addWidget(self._group("How images are split", self.split_editor))
        layout.addWidget(self.rule_error)
        layout.addWidget(self.summary)
        layout.addWidget(QLabel("<b>Warnings</b>"))
        layout.addWidget(self.warnings, 1)
        return panel

    @staticmethod
    def _group(title: str, widget: QWidget) -> QGroupBox:
        box = QGroupBox(title)
        inner = QVBoxLayout(box)
        inner.addWidget(widget)
        return box

    def _build_right(self) -> QWidget:
        self.views = QTabWidget()
        self.preview_model = PreviewModel(self)
        self.preview_proxy = PreviewFilter(self)
        self.preview_proxy.setSourceModel(self.preview_model)
        preview = QWidget()
        preview_layout = QVBoxLayout(preview)
        filter_row = QHBoxLayout()
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter files, labels, sets…")
        self.filter_edit.textChanged.connect(self.preview_proxy.setFilterFixedString)
        self.only_unmatched = QCheckBox("only unmatched")
        self.only_unmatched.toggled.connect(self.preview_proxy.set_only_unmatched)
        filter_row.addWidget(self.filter_edit, 1)
        filter_row.addWidget(self.only_unmatched)
        preview_layout.addLayout(filter_row)
        self.preview_table = _table(self.preview_proxy)
        self.preview_table.setSortingEnabled(True)
        self.preview_table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.preview_table.horizontalHeader().setSectionResizeMode(
            0, QHeaderView.ResizeMode.Stretch)
        preview_layout.addWidget(self.preview_table)
        counts = QWidget()
        counts_layout = QVBoxLayout(counts)
        self.chart = CountsChart()
        self.counts_table = QTableWidget(0, 4)
        self.counts_table.setHorizontalHeaderLabels(["Class", *SET_NAMES])
        self.counts_table.verticalHeader().setVisible(False)
        self.counts_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.counts_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.Stretch)
        counts_layout.addWidget(self.chart, 3)
        counts_layout.addWidget(self.counts_table, 2)
        self.samples = ImageGrid(runner=self.context.runner, thumb_size=112)
        self.rejected_model = RejectedModel(self)
        self.rejected_table = _table(self.rejected_model)
        self.rejected_table.horizontalHeader().setSectionResizeMode(  # names not cut to "…"
            0, QHeaderView.ResizeMode.ResizeToContents)
        self.views.addTab(preview, "Labels")
        self.views.addTab(counts, "Counts")
        self.views.addTab(self.samples, "Samples")
        self.views.addTab(self.rejected_table, "Rejected")
        # Double-click/Space opens the image viewer; right-click relabels or excludes.
        self.image_actions = DataImageActions(self.context, self.preview_table,
                                              self.preview_proxy, self.preview_model,
                                              self.samples, self)
        return self.views

    # Folder and scan ------------------------------------------------------------------
    def choose_folder(self) -> None:
        folder = dialogs.folder(self, "Open an image folder")
        if folder is not None:
            self.context.open_folder(folder)

    def _on_drop(self, plan: Any) -> None:
        if plan.folder is not None:
            self.context.open_folder(plan.folder)

    def _rescan(self) -> None:
        if self.context.project is not None:
            self.context.scan()

    def _on_scan_started(self, task: Task) -> None:
        """Progress and Cancel for this scan; a superseded scan says nothing more, so the
        newest one hides them when it ends."""
        self.progress.setRange(0, 0)
        self._set_scanning(True)
        task.event.connect(self._on_scan_event)
        task.done.connect(lambda: self._set_scanning(False))

    def _on_scan_event(self, event: Any) -> None:
        if isinstance(event, Progress) and event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.done)

    def cancel_scan(self) -> None:
        self.context.cancel_scan()

    def _set_scanning(self, scanning: bool) -> None:
        self.progress.setVisible(scanning)
        self.cancel_button.setVisible(scanning)
        self.rescan_button.setEnabled(not scanning and self.context.project is not None)

    # Project and rules ----------------------------------------------------------------
    def _on_project(self) -> None:
        project = self.context.project
        self.drop_zone.setVisible(project is None)
        if project is None:
            self.folder_label.setText("No folder open: choose one, drop one, or try the sample.")
            return
        self.folder_label.setText(f"<b>{project.name}</b><br>{project.root}")
        self.label_editor.set_rule(project.label)
        self.split_editor.set_rule(project.split)
        self.rule_error.clear()
        self.rescan_button.setEnabled(True)

    def apply_rules(self) -> None:
        """Take the editors' rules into the project and recompute (in a worker)."""
        self._debounce.stop()
        project = self.context.project
        if project is None:
            return
        try:
            label = self.label_editor.rule()
            split = self.split_editor.rule()
        except LoupeError as exc:
            self.rule_error.setText(str(exc))
            return
        self.rule_error.clear()
        if label == project.label and split == project.split:
            return
        project.label = label
        project.split = split
        self.context.relabel()

    # Results --------------------------------------------------------------------------
    def _on_data(self) -> None:
        state = self.context.data
        self.preview_model.set_data(state.labelling, state.plan, self.palette())
        self.rejected_model.set_scan(state.scan)
        self.views.setTabText(3, f"Rejected ({len(state.scan.rejected) if state.scan else 0})")
        counts = state.plan.counts if state.plan is not None else {}
        self.chart.show_counts(counts)
        self._fill_counts(counts)
        self.samples.set_items(sample_items(state.plan))
        self.summary.setText(self._summary_text(state))
        # What is wrong, in words that say what to do (an empty folder, one class, ...);
        # a rule the editors could not parse keeps its own message.
        problem = data_problem(state)
        if problem:
            self.rule_error.setText(problem)
        elif self.rule_error.text() == self._shown_problem:
            self.rule_error.clear()  # fixed (not a rule the editors could not parse)
        self._shown_problem = problem
        self.warnings.clear()
        # A damaged project file (defaults used) stays listed, not only 8 s in the status bar.
        self.warnings.addItems(list(self.context.project_warnings))
        if state.labelling is not None:
            self.warnings.addItems(list(state.labelling.warnings))
        if state.plan is not None:
            self.warnings.addItems(list(state.plan.warnings))
        if self.warnings.count() == 0 and state.scan is not None:
            # "No warnings." beside a red "no usable images" read as "all is well".
            self.warnings.addItem("None: see the message above." if problem else "No warnings.")
        if state.prepared is not None:
            self.context.save_project()

    def _fill_counts(self, counts: dict[str, dict[str, int]]) -> None:
        self.counts_table.setRowCount(len(counts))
        for row, (name, per_set) in enumerate(counts.items()):
            self.counts_table.setItem(row, 0, QTableWidgetItem(name))
            for col, set_name in enumerate(SET_NAMES, start=1):
                item = QTableWidgetItem(str(per_set.get(set_name, 0)))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.counts_table.setItem(row, col, item)

    @staticmethod
    def _summary_text(state: Any) -> str:
        if state.scan is None:
            return ""
        parts = [_count(len(state.scan.items), "image"), f"{len(state.scan.rejected)} rejected"]
        if state.labelling is not None:
            lab = state.labelling
            parts += [f"{len(lab.labelled)} labelled", f"{len(lab.unmatched)} unmatched",
                      _count(len(lab.classes), "class", "classes")]
            if lab.excluded:
                parts.append(f"{len(lab.excluded)} excluded")
        if state.plan is not None:
            plan = state.plan
            parts.append(f"train {len(plan.train)} / valid {len(plan.valid)} / test "
                         f"{len(plan.test)}")
            share = valid_share_note(plan)
            if share:
                parts.append(share)
        return " · ".join(parts)


def _count(n: int, one: str, many: str = "") -> str:
    """'1 image', '2 images' (the summary read "1 images · 1 classes")."""
    return f"{n} {one if n == 1 else (many or one + 's')}"
