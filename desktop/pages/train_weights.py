"""The Train page's weights actions (Import…, Download…) and their messages in GUI words.

The engine's messages are written for the command line ("import a file instead with
`loupe weights import FILE --arch NAME`"); a person looking at the Train page has the
Import… and Download… buttons right there, so the messages here point at those. A file
that is not weights at all (a renamed document, a damaged download) gets one plain
sentence instead of the safetensors parser's "header too large".
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QMessageBox

from loupe.desktop.file_dialogs import dialogs
from loupe.desktop.pages.train_arch import architectures_on_this_machine, weights_status_of
from loupe.engine.core.errors import WeightsError

WEIGHTS_FILTER = "Weights (*.safetensors *.pth *.pt *.bin);;All files (*)"
CLI_HINT_MARK = "`loupe weights"  # where the engine's CLI advice starts


def random_init_banner(arch: str, asked: bool) -> str:
    """The warning shown when a run starts from random weights."""
    if asked:
        return ("Training from random initialisation, as chosen (Pretrained: None). Expect far "
                "lower accuracy than fine-tuning pretrained weights on a small dataset.")
    return (f"No pretrained weights for {arch} on this computer: this run starts from random "
            "initialisation and will be far less accurate. To fine-tune instead, Stop, then "
            "use Import… (a .safetensors or .pth file) or Download… under Architecture on "
            "the left, or choose an architecture marked “pretrained, installed”.")


def gui_message(exc: BaseException, arch: str) -> str:
    """An engine weights error with its command-line advice replaced by the buttons'."""
    text = str(exc)
    cut = text.find(CLI_HINT_MARK)
    if cut < 0:
        return text
    head = text[:cut].rstrip(" ;,:(")
    for tail in ("import a file instead with", "instead with", "with"):
        if head.endswith(tail):
            head = head[: -len(tail)].rstrip(" ;,:(")
    return (f"{head}. Use Import… beside the architecture to add a weights file for {arch} "
            "(.safetensors or .pth) instead.")


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    if not 2 <= length <= size - 8:
        return False
    return head[8:9] == b"{"


def check_weights_file(path: Path) -> None:
    """Raise WeightsError in plain words when ``path`` is neither safetensors nor a
    PyTorch file (zip or pickle), before the engine's parsers say it their way."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as err:
        raise WeightsError(f"cannot read {path.name}: {err.strerror or err}") from err
    torch_file = head[:2] == b"PK" or head[:1] == b"\x80"
    if torch_file or _looks_like_safetensors(head, size):
        return
    if head[:1] in (b"{", b"["):
        try:
            json.loads(path.read_text(encoding="utf-8"))
            kind = "a JSON text file"
        except (OSError, ValueError):
            kind = "not a weights file"
    else:
        kind = "not a weights file"
    raise WeightsError(
        f"“{path.name}” is {kind}: Loupe can import model weights saved as .safetensors "
        "or as a PyTorch .pth state dict, and this file is neither (it may be damaged, "
        "incomplete, or another kind of file renamed). Choose the weights file again."
    )


def import_weights_file(path: Path, arch: str) -> Any:
    """Worker body for Import…: a plain check, then the engine's import (which validates
    the tensors against ``arch`` and stores them with a checksum)."""
    from loupe.engine.models.weights import import_weights

    check_weights_file(path)
    return import_weights(path, arch)


class WeightsActions:
    """The Train page's weights half: which architectures have weights here, Import…,
    Download… (asked first) and what the page says when they fail.

    A mix-in of :class:`~loupe.desktop.pages.train_page.TrainPage`, which provides
    ``context``, ``runner``, ``settings``, ``status``, ``progress``, ``ready_text()``,
    ``is_running()``, ``lr_finding()`` and ``_on_event()``; kept here so the page file
    reads as training and the learning-rate finder.
    """

    context: Any
    runner: Any
    settings: Any
    status: Any
    progress: Any

    def refresh_architectures(self) -> None:
        """Look for every curated architecture's weights (a worker), then re-order and
        mark the picker; the weights note follows the (possibly new) selection."""
        self.runner.start(
            architectures_on_this_machine, events=False, owner=self, kind="architectures",
            on_result=lambda facts: self._on_architectures(*facts),
            on_error=lambda _exc: self.refresh_weights_status(self.settings.arch_name()))

    def _on_architectures(self, rows: list[dict[str, Any]], best: str) -> None:
        before = self.settings.arch_name()
        self.settings.set_architectures(rows, best)  # a new selection refreshes by itself
        if self.settings.arch_name() == before:
            self.refresh_weights_status(before)

    def refresh_weights_status(self, arch: str) -> None:
        if not arch:
            return
        self.runner.start(
            weights_status_of, arch, events=False, owner=self, kind="weights",
            on_result=lambda facts: self.settings.set_weights_status(*facts),
            on_error=lambda exc: self.settings.set_weights_status(arch, f"unknown ({exc})"))

    def import_weights(self, arch: str) -> None:
        path = dialogs.open_file(self, f"Weights for {arch}", WEIGHTS_FILTER)
        if path is None:
            return
        self.runner.start(
            import_weights_file, path, arch, events=False, owner=self, kind="import-weights",
            supersede=False, error_title="Cannot import",
            on_result=lambda stored: self._weights_ready(arch, f"imported to {stored}"))

    def download_weights(self, arch: str) -> None:
        answer = QMessageBox.question(
            self,
            "Download pretrained weights?",
            f"Loupe will connect to the internet (huggingface.co) to download the "
            f"ImageNet weights for {arch} into your Hugging Face cache. Nothing else is "
            "sent or downloaded. Continue?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        from loupe.engine.models.weights_download import download_weights

        self.runner.start(
            download_weights, arch, owner=self, kind="download-weights", supersede=False,
            on_event=self._on_event, on_error=lambda exc: self._download_failed(arch, exc),
            on_done=lambda _task: self._download_done(),
            on_result=lambda path: self._weights_ready(arch, f"downloaded to {path}"))
        self.status.setText(f"Downloading weights for {arch}…")
        self.progress.setRange(0, 0)
        self.progress.setFormat(f"downloading weights for {arch}")
        self.progress.show()

    def _download_failed(self, arch: str, exc: BaseException) -> None:
        message = gui_message(exc, arch)
        self.context.errorRaised.emit("Download failed", message)
        self.status.setText(f"The weights for {arch} were not downloaded. {self.ready_text()}")

    def _download_done(self) -> None:
        """Whatever happened, the page no longer says "Downloading…"."""
        if self.status.text().startswith("Downloading weights"):
            self.status.setText(self.ready_text())
        if not (self.is_running() or self.lr_finding()):
            self.progress.hide()

    def _weights_ready(self, arch: str, what: str) -> None:
        self.context.statusMessage.emit(f"Weights for {arch} {what}")
        self.refresh_architectures()  # the new weights move it up, marked; status follows

