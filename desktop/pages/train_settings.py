"""The Train page's settings form: architecture, schedule, augmentation, device (and,
on a machine with several GPUs, "all N GPUs").

It turns widgets into an ``loupe.engine.training.TrainConfig`` (whose ``__post_init__`` is the
one place settings are validated) and back from the project's saved ``training`` dict.
Facts that need torch or the file system (weights found? which GPU?) are filled in by the
page from workers. This module must not import ``loupe.engine.training`` at import time: that
package imports torch, and the window is built before torch is loaded (first paint). The
config module is imported when first needed (:meth:`TrainSettings.load_limits`).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QLocale, Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from loupe.desktop.pages.train_arch import (
    RoomyItems,
    fill_arch_combo,
    format_params,
    show_start,
    static_rows,
)
from loupe.engine.core.device import DEVICES
from loupe.engine.core.errors import ConfigError
from loupe.engine.data.resize import DEFAULT_RESIZE, RESIZE_HELP, RESIZE_METHODS
from loupe.engine.models.architectures import ARCHITECTURES

if TYPE_CHECKING:
    from loupe.engine.training.config import TrainConfig


# The engine's device names (TrainConfig.device values), in the order DEVICES lists them.
AUTO, CPU, CUDA, MPS = DEVICES


def probe_devices() -> list[tuple[str, str]]:
    """(TrainConfig.device value, label) for each device this machine has.

    Imports torch: call it in a worker. Shows the GPU's name and memory so the user knows
    what "auto" will pick.
    """
    import torch

    devices = [(AUTO, "Automatic (best available)")]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        more = torch.cuda.device_count() - 1
        extra = f" (+{more} more)" if more > 0 else ""
        devices.append(
            (CUDA, f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB{extra}")
        )
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append((MPS, "Apple GPU (MPS)"))
    devices.append((CPU, f"CPU ({os.cpu_count() or 1} cores)"))
    return devices


def probe_hardware() -> tuple[list[tuple[str, str]], int]:
    """The device probe and the number of CUDA GPUs ("all N GPUs" needs 2 or more), in
    one worker call: both import torch."""
    from loupe.engine.training import launch

    return probe_devices(), launch.gpu_count()


def format_lr(lr: float) -> str:
    return f"{lr:.2e}".replace("e-0", "e-").replace("e+0", "e+")


def _resize_combo() -> QComboBox:
    """Crop / Squish / Pad, from the engine's one list, each item explained in a tooltip."""
    combo = QComboBox()
    for name in RESIZE_METHODS:
        combo.addItem(name.capitalize(), name)
    combo.setCurrentIndex(combo.findData(DEFAULT_RESIZE))
    combo.setToolTip(
        "How each image becomes the model's square input (training, validation, prediction "
        "and export all do the same):\n"
        + "\n".join(f"{name.capitalize()}: {RESIZE_HELP[name]}" for name in RESIZE_METHODS)
    )
    return combo


def _spin(low: int, high: int, value: int, step: int = 1, special: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    if special:
        box.setSpecialValueText(special)
    return box


class TrainSettings(QWidget):
    """Every setting of a run. Signals ask the page to do the slow parts in workers."""

    archChanged = Signal(str)
    importRequested = Signal(str)
    downloadRequested = Signal(str)
    findLrRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._arch_group())
        layout.addWidget(self._schedule_group())
        layout.addWidget(self._augment_group())
        layout.addStretch(1)

    # Groups -------------------------------------------------------------------------
    def _arch_group(self) -> QGroupBox:
        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.arch = QComboBox()
        self.arch.setEditable(True)  # any timm model name is accepted too
        self.arch.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.arch.setMinimumContentsLength(18)
        self.arch.setItemDelegate(RoomyItems(self.arch))
        # Built before torch is loaded, from the static list (installed weights first);
        # set_architectures() re-orders and marks it once a worker has looked.
        fill_arch_combo(self.arch, static_rows(), ARCHITECTURES[0].name)
        # The best installed architecture replaces the static default once, when it is
        # known, unless the user or the project's settings chose one before.
        self._default_pending = True
        self._best_arch = ""  # the best architecture whose weights are here, once known
        self.arch.activated.connect(lambda _i: self._choose_arch())
        self.arch.lineEdit().textEdited.connect(lambda _t: self._choose_arch())
        self.arch.currentIndexChanged.connect(lambda _i: show_start(self.arch))
        self.arch.currentIndexChanged.connect(lambda _i: self.archChanged.emit(self.arch_name()))
        self.arch_note = QLabel()
        self.arch_note.setWordWrap(True)
        self.weights_label = QLabel("Pretrained weights: checking…")
        self.weights_label.setWordWrap(True)
        self.import_button = QPushButton("Import…")
        self.import_button.setToolTip("Use a weights file (.safetensors or torchvision .pth)")
        self.import_button.clicked.connect(lambda: self.importRequested.emit(self.arch_name()))
        self.download_button = QPushButton("Download…")
        self.download_button.setToolTip("Fetch the weights from the internet (asks first)")
        self.download_button.clicked.connect(
            lambda: self.downloadRequested.emit(self.arch_name())
        )
        weights_row = QHBoxLayout()
        weights_row.addWidget(self.import_button)
        weights_row.addWidget(self.download_button)
        weights_row.addStretch(1)
        self.pretrained = QComboBox()
        self.pretrained.addItem("Use weights found on this computer", "auto")
        self.pretrained.addItem("None: train from random initialisation", "none")
        self.pretrained.currentIndexChanged.connect(lambda _i: self._pretrained_changed())
        form.addRow("Architecture", self.arch)
        form.addRow("", self.arch_note)
        form.addRow("", self.weights_label)
        form.addRow("", weights_row)
        form.addRow("Pretrained", self.pretrained)
        self._update_note()
        self.arch.currentIndexChanged.connect(lambda _i: self._update_note())
        return box

    def _schedule_group(self) -> QGroupBox:
        box = QGroupBox("Training")
        form = QFormLayout(box)
        self.epochs = _spin(1, 1000, 4)
        self.freeze_epochs = _spin(0, 100, 1)
        self.freeze_epochs.setToolTip("Epochs with the pretrained body frozen (fine_tune)")
        self.size = _spin(1, 4096, 224, step=32)  # engine limits: load_limits()
        self.size.setSuffix(" px")
        self.resize_method = _resize_combo()
        self.batch_size = _spin(0, 4096, 0, special="auto")
        self.lr = QLineEdit()
        self.lr.setPlaceholderText("default")
        validator = QDoubleValidator(1e-8, 10.0, 10, self.lr)
        validator.setLocale(QLocale.c())  # "1e-3" and "0.001" whatever the user's locale
        self.lr.setValidator(validator)
        self.lr.setToolTip("Peak learning rate of the one-cycle schedule")
        self.find_lr_button = QPushButton("Find")
        self.find_lr_button.setToolTip("Run the learning-rate finder; click its plot to choose")
        self.find_lr_button.clicked.connect(self.findLrRequested)
        lr_row = QHBoxLayout()
        lr_row.addWidget(self.lr, 1)
        lr_row.addWidget(self.find_lr_button)
        self.device = QComboBox()
        self.device.addItem("Automatic (best available)", AUTO)
        self.device.addItem("CPU", CPU)
        self.device.currentIndexChanged.connect(lambda _i: self._device_changed())
        # One process per GPU (torch.distributed), offered once the probe finds two or more.
        self.gpus = QComboBox()
        self.gpus.addItem("1 GPU", 1)
        self.gpus.setToolTip("All GPUs: one training process per GPU, each with the batch "
                             "size above (torch.distributed)")
        self._want_all_gpus = False  # the user's or project's choice, kept across probes
        self.gpus.currentIndexChanged.connect(lambda _i: self._choose_gpus())
        self.seed = _spin(0, 2**31 - 1, 42)
        form.addRow("Epochs", self.epochs)
        form.addRow("Frozen epochs", self.freeze_epochs)
        form.addRow("Image size", self.size)
        form.addRow("Resize", self.resize_method)
        form.addRow("Batch size", self.batch_size)
        form.addRow("Learning rate", lr_row)
        form.addRow("Device", self.device)
        form.addRow("GPUs", self.gpus)
        form.setRowVisible(self.gpus, False)
        self._schedule_form = form
        form.addRow("Seed", self.seed)
        return box

    def _augment_group(self) -> QGroupBox:
        box = QGroupBox("Augmentation")
        form = QFormLayout(box)
        self.flip = QCheckBox("random horizontal flips")
        self.flip.setChecked(True)
        self.rotate = QDoubleSpinBox()
        self.rotate.setRange(0, 45)
        self.rotate.setValue(10)
        self.rotate.setSuffix("°")
        self.lighting = QDoubleSpinBox()
        self.lighting.setRange(0, 0.9)
        self.lighting.setSingleStep(0.05)
        self.lighting.setValue(0.2)
        self.progressive = QCheckBox("progressive resizing (small images first)")
        form.addRow("Flip", self.flip)
        form.addRow("Rotate up to", self.rotate)
        form.addRow("Lighting", self.lighting)
        form.addRow("", self.progressive)
        return box

    def _pretrained_changed(self) -> None:
        """From random init there is no frozen phase (fit_one_cycle, not fine_tune)."""
        scratch = self.pretrained.currentData() == "none"
        self.freeze_epochs.setEnabled(not scratch)
        self.freeze_epochs.setToolTip(
            "No frozen phase when training from random initialisation" if scratch
            else "Epochs with the pretrained body frozen (fine_tune)"
        )

    def load_limits(self) -> None:
        """Take size limits and the default learning rate from the engine's config.

        Called once torch is loaded (the page's first show), so the import is free."""
        from loupe.engine.training.config import (
            DEFAULT_FINE_TUNE_LR,
            DEFAULT_LR,
            MAX_SIZE,
            MIN_SIZE,
        )

        self.size.setRange(MIN_SIZE, MAX_SIZE)
        # Empty means the engine's default for the run, which depends on the weights found:
        # fastai's fine_tune rate with pretrained weights, fit_one_cycle's from scratch.
        self.lr.setPlaceholderText(
            f"default: {format_lr(DEFAULT_FINE_TUNE_LR)} fine-tuning, "
            f"{format_lr(DEFAULT_LR)} from scratch"
        )

    # Values -------------------------------------------------------------------------
    def arch_name(self) -> str:
        index = self.arch.currentIndex()
        data = self.arch.itemData(index) if index >= 0 else None
        text = self.arch.currentText().strip()
        if data and text == self.arch.itemText(index):
            return str(data)
        return text.split()[0] if text else ""

    def _update_note(self, size: int | None = None) -> None:
        name = self.arch_name()
        info = next((i for i in ARCHITECTURES if i.name == name), None)
        text = (f"{info.family} · {format_params(info.params)} · {info.speed} · {info.note}"
                if info else "a timm model name (not in the curated list)")
        if size:
            text += f" · pretrained at {size} px"
        self.arch_note.setText(text)

    def _choose_arch(self) -> None:
        self._default_pending = False

    def set_architectures(self, rows: list[dict[str, Any]], best: str) -> None:
        """Re-order and mark the combo from ``describe_architectures`` (a worker's result).

        Architectures with weights on this machine come first, marked; the selection
        becomes ``best`` unless the user or the project's settings chose one already."""
        current = self.arch_name()
        installed = any(r["name"] == best and r.get("pretrained") for r in rows)
        self._best_arch = best if installed else ""
        select = best if self._default_pending and best else current
        self._default_pending = False
        fill_arch_combo(self.arch, rows, select)
        self._update_note()
        if self.arch_name() != current:
            self.archChanged.emit(self.arch_name())

    def set_weights_status(self, arch: str, status: str, size: int | None = None) -> None:
        """Show what the engine found for ``arch`` (ignored if the user moved on)."""
        if arch != self.arch_name():
            return
        self._update_note(size)
        found = status.startswith("found")
        other = (f", or choose {self._best_arch}, whose weights came with Loupe"
                 if self._best_arch and self._best_arch != arch else "")
        self.weights_label.setText(
            f"✓ {status.removeprefix('found: ')}" if found else
            "Pretrained weights: not found on this computer — training would start from "
            f"random initialisation (much less accurate). Import or download them{other}."
        )
        self.import_button.setVisible(not found)
        self.download_button.setVisible(not found)

    def set_devices(self, devices: list[tuple[str, str]]) -> None:
        """(value, label) pairs from the page's device probe; keeps the current choice."""
        current = self.device.currentData()
        self.device.clear()
        for value, label in devices:
            self.device.addItem(label, value)
        self.device.setCurrentIndex(max(0, self.device.findData(current)))

    def set_gpu_count(self, count: int) -> None:
        """Offer "all N GPUs" when the probe found ``count`` >= 2 CUDA GPUs."""
        self.gpus.blockSignals(True)  # refilling is not the user's choice
        while self.gpus.count() > 1:
            self.gpus.removeItem(1)
        if count >= 2:
            self.gpus.addItem(f"all {count} GPUs", count)
        self.gpus.setCurrentIndex(self.gpus.count() - 1 if self._want_all_gpus else 0)
        self.gpus.blockSignals(False)
        self._schedule_form.setRowVisible(self.gpus, count >= 2)

    def _choose_gpus(self) -> None:
        self._want_all_gpus = self.gpus.currentIndex() > 0

    def _device_changed(self) -> None:
        """The CPU and Apple's GPU train in one process: the GPUs choice does not apply."""
        self.gpus.setEnabled(self.device.currentData() in (AUTO, CUDA))

    def processes(self) -> int:
        """How many processes the run trains on: N for "all N GPUs", else 1."""
        if self.device.currentData() not in (AUTO, CUDA):
            return 1
        return int(self.gpus.currentData() or 1)

    def gpus_setting(self) -> str | int:
        """The GPUs choice as the project saves it: "all" or 1 (N differs by machine)."""
        return "all" if self._want_all_gpus else 1

    def set_lr(self, lr: float) -> None:
        if math.isfinite(lr) and lr > 0:
            self.lr.setText(format_lr(lr))

    def config(self, **overrides: Any) -> TrainConfig:
        """The TrainConfig the form describes; ConfigError names what is wrong."""
        from loupe.engine.training.config import TrainConfig

        try:
            lr = float(self.lr.text().strip()) if self.lr.text().strip() else None
        except ValueError as exc:
            raise ConfigError(f"learning rate {self.lr.text()!r} is not a number") from exc
        values: dict[str, Any] = {
            "arch": self.arch_name(),
            "epochs": self.epochs.value(),
            "freeze_epochs": self.freeze_epochs.value(),
            "size": self.size.value(),
            "resize": str(self.resize_method.currentData()),
            "batch_size": self.batch_size.value(),
            "lr": lr,
            "pretrained": str(self.pretrained.currentData()),
            "device": str(self.device.currentData() or AUTO),
            "seed": self.seed.value(),
            "flip": self.flip.isChecked(),
            "rotate": float(self.rotate.value()),
            "lighting": float(self.lighting.value()),
            "progressive_resize": self.progressive.isChecked(),
        }
        values.update(overrides)
        return TrainConfig(**values)

    def apply_saved(self, saved: dict[str, Any]) -> None:
        """Restore a project's saved settings; unknown or bad values keep the defaults."""
        from loupe.engine.training.config import TrainConfig

        try:
            config = TrainConfig.from_json(
                {k: v for k, v in saved.items() if k not in ("out", "gpus")})
        except (ConfigError, TypeError, ValueError):
            return
        self._want_all_gpus = saved.get("gpus") == "all"
        if self.gpus.count() > 1:
            self.gpus.setCurrentIndex(1 if self._want_all_gpus else 0)
        if config.arch == "auto":  # the best installed one, as the engine resolves it
            if self._best_arch:
                self.arch.setCurrentIndex(max(0, self.arch.findData(self._best_arch)))
        else:
            self._default_pending = False
            index = self.arch.findData(config.arch)
            if index >= 0:
                self.arch.setCurrentIndex(index)
            else:
                self.arch.setEditText(config.arch)
        self.epochs.setValue(config.epochs)
        self.freeze_epochs.setValue(config.freeze_epochs)
        self.size.setValue(config.size)
        self.resize_method.setCurrentIndex(max(0, self.resize_method.findData(config.resize)))
        self.batch_size.setValue(config.batch_size)
        if config.lr is None:
            self.lr.clear()
        else:
            self.set_lr(config.lr)
        self.pretrained.setCurrentIndex(max(0, self.pretrained.findData(config.pretrained)))
        self.device.setCurrentIndex(max(0, self.device.findData(config.device)))
        self.seed.setValue(config.seed)
        self.flip.setChecked(config.flip)
        self.rotate.setValue(config.rotate)
        self.lighting.setValue(config.lighting)
        self.progressive.setChecked(config.progressive_resize)

    def set_running(self, running: bool) -> None:
        for widget in (self.arch, self.pretrained, self.epochs, self.freeze_epochs, self.size,
                       self.resize_method, self.batch_size, self.lr, self.find_lr_button,
                       self.device, self.gpus, self.seed, self.flip, self.rotate, self.lighting,
                       self.progressive, self.import_button, self.download_button):
            widget.setEnabled(not running)
        if not running:
            self._pretrained_changed()
            self._device_changed()
