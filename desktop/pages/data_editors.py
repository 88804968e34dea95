"""The Data page's two editors: the label rule and the split.

Each editor only turns widgets into an engine rule (``LabelRule`` / ``SplitRule``) and
back; validation is the engine's (its ``ConfigError`` message is shown next to the
editor). ``changed`` fires on every edit; the page debounces it.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from loupe.engine.data.labels import LabelRule
from loupe.engine.data.splits import SplitRule

LABEL_KINDS = (
    ("parent", "Parent folder name"),
    ("top", "First folder under the root"),
    ("upper", "First letter upper/lower case"),
    ("regex", "Regex on the file path"),
    ("csv", "CSV file: filename,label(s)"),
)
_LABEL_HINTS = {
    "parent": "cats/001.jpg → cats",
    "top": "animals/birds/x.png → animals",
    "upper": "names for Upper,lower (e.g. animal,food)",
    "regex": r"one capture group, e.g. ^(.+)_\d+\.\w+$",
    "csv": "CSV file kept outside the image folder",
}
SPLIT_KINDS = (
    ("random", "Random fraction"),
    ("folders", "By folder names (train/valid/test)"),
    ("group", "By group (regex) — no group in two sets"),
    ("time", "By time — newest go to validation"),
)


def _combo(items: tuple[tuple[str, str], ...]) -> QComboBox:
    combo = QComboBox()
    for key, text in items:
        combo.addItem(text, key)
    return combo


class LabelRuleEditor(QWidget):
    """Kind + pattern (+ CSV file and multi-label switch)."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.kind = _combo(LABEL_KINDS)
        self.pattern = QLineEdit()
        self.pattern.setClearButtonEnabled(True)
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._browse_csv)
        self.multi = QCheckBox("several labels per image (multi-label)")
        row = QHBoxLayout()
        row.addWidget(self.pattern, 1)
        row.addWidget(self.browse)
        form.addRow("Label by", self.kind)
        form.addRow("Pattern", row)
        form.addRow("", self.multi)
        # Each kind keeps its own pattern: "animal,food" (upper) is not a regex, and a
        # half-typed regex is not label names, so switching kinds used to greet the user
        # with an error about the other kind's text.
        self._patterns: dict[str, str] = {}
        self._shown_kind = self.current_kind()
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.pattern.textChanged.connect(self.changed)
        self.multi.toggled.connect(self.changed)
        self._kind_changed()

    def current_kind(self) -> str:
        return str(self.kind.currentData())

    def _kind_changed(self) -> None:
        kind = self.current_kind()
        if kind != self._shown_kind:
            self._patterns[self._shown_kind] = self.pattern.text()
            self._shown_kind = kind
            blocked = self.pattern.blockSignals(True)
            self.pattern.setText(self._patterns.get(kind, ""))
            self.pattern.blockSignals(blocked)
        self.pattern.setEnabled(kind in ("upper", "regex", "csv"))
        self.pattern.setPlaceholderText(_LABEL_HINTS[kind])
        self.pattern.setToolTip(_LABEL_HINTS[kind])
        self.browse.setVisible(kind == "csv")
        self.multi.setVisible(kind == "csv")
        self.changed.emit()

    def _browse_csv(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Labels CSV", "", "CSV files (*.csv *.txt)")
        if name:
            self.pattern.setText(name)

    def rule(self) -> LabelRule:
        """The rule the widgets describe; raises the engine's ConfigError if invalid."""
        kind = self.current_kind()
        text = self.pattern.text().strip()
        if kind == "upper":
            if not text:
                return LabelRule("upper")
            names = [n.strip() for n in text.split(",")]
            return LabelRule("upper", names=tuple(names))  # type: ignore[arg-type]
        if kind == "regex":
            return LabelRule("regex", pattern=text)
        if kind == "csv":
            return LabelRule(
                "csv", csv_path=Path(text) if text else None, multi=self.multi.isChecked()
            )
        return LabelRule(kind)

    def set_rule(self, rule: LabelRule) -> None:
        """Show ``rule`` without emitting ``changed`` (loading a project is not an edit)."""
        self.blockSignals(True)
        try:
            self.kind.setCurrentIndex(max(0, self.kind.findData(rule.kind)))
            self._kind_changed()
            if rule.kind == "upper":
                text = "" if rule.names == ("upper", "lower") else ",".join(rule.names)
            elif rule.kind == "regex":
                text = rule.pattern
            elif rule.kind == "csv":
                text = str(rule.csv_path or "")
            else:
                text = ""
            self._patterns = {}  # another project's patterns are not this one's
            self.pattern.setText(text)
            self.multi.setChecked(rule.multi)
        finally:
            self.blockSignals(False)


class SplitEditor(QWidget):
    """Kind, validation fraction, group regex, seed, locked test fraction, subset."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.kind = _combo(SPLIT_KINDS)
        self.fraction = self._fraction_box(0.01, 0.9, 0.2, "of the images go to validation")
        self.pattern = QLineEdit()
        self.pattern.setPlaceholderText(r"group regex, e.g. ^(\w+)_ (driver, patient, boat id)")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(42)
        self.test_fraction = self._fraction_box(0.0, 0.5, 0.0, "held out and locked")
        self.subset = QSpinBox()
        self.subset.setRange(1, 100)
        self.subset.setValue(100)
        self.subset.setSuffix(" % per class")
        self.subset.setToolTip("Train on a random part first for quick experiments")
        form.addRow("Split", self.kind)
        form.addRow("Validation", self.fraction)
        form.addRow("Group regex", self.pattern)
        form.addRow("Seed", self.seed)
        form.addRow("Test set", self.test_fraction)
        form.addRow("Use", self.subset)
        self.kind.currentIndexChanged.connect(self._kind_changed)
        for signal in (
            self.fraction.valueChanged,
            self.pattern.textChanged,
            self.seed.valueChanged,
            self.test_fraction.valueChanged,
            self.subset.valueChanged,
        ):
            signal.connect(self.changed)
        self._kind_changed()

    @staticmethod
    def _fraction_box(low: float, high: float, value: float, tip: str) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(low, high)
        box.setSingleStep(0.05)
        box.setDecimals(2)
        box.setValue(value)
        box.setToolTip(tip)
        return box

    def current_kind(self) -> str:
        return str(self.kind.currentData())

    def _kind_changed(self) -> None:
        kind = self.current_kind()
        self.fraction.setEnabled(kind != "folders")
        self.test_fraction.setEnabled(kind != "folders")
        self.changed.emit()

    def rule(self) -> SplitRule:
        """The split the widgets describe; raises the engine's ConfigError if invalid."""
        kind = self.current_kind()
        return SplitRule(
            kind=kind,
            fraction=round(self.fraction.value(), 4),
            pattern=self.pattern.text().strip(),
            test_fraction=0.0 if kind == "folders" else round(self.test_fraction.value(), 4),
            subset=self.subset.value() / 100.0,
            seed=self.seed.value(),
        )

    def set_rule(self, rule: SplitRule) -> None:
        self.blockSignals(True)
        try:
            self.kind.setCurrentIndex(max(0, self.kind.findData(rule.kind)))
            self._kind_changed()
            self.fraction.setValue(rule.fraction)
            self.pattern.setText(rule.pattern)
            self.seed.setValue(rule.seed)
            self.test_fraction.setValue(rule.test_fraction)
            self.subset.setValue(max(1, round(rule.subset * 100)))
        finally:
            self.blockSignals(False)
