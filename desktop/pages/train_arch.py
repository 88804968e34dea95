"""The Train page's architecture picker: which architectures have weights here, and how
to say where those weights came from.

The combo is built before torch is imported (first paint), from the static
``engine.models.architectures.ARCHITECTURES`` list, which already puts the architectures
whose weights come with the install first. The facts that need torch, timm or the file system
(``describe_architectures``, ``best_installed_arch``, ``find_weights``) are read by the
worker functions below; the page hands their results back to the form, which re-orders
and marks the combo without losing the user's choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QModelIndex, QSize, Qt
from PySide6.QtGui import QPainter, QPalette
from PySide6.QtWidgets import QComboBox, QStyledItemDelegate, QStyleOptionViewItem

from loupe.engine.models.architectures import ARCHITECTURES

if TYPE_CHECKING:
    from loupe.engine.models.weights import WeightsSource

INSTALLED_MARK = "pretrained, installed"


def format_params(params: int) -> str:
    """Parameters and the float32 weights' size on disk, e.g. '11.7 M params (45 MB)'."""
    return f"{params / 1e6:.1f} M params ({params * 4 / 2**20:.0f} MB)"


def static_rows() -> list[dict[str, Any]]:
    """The curated list as picker rows, before anyone has looked for weights."""
    return [
        {"name": i.name, "params": i.params, "speed": i.speed, "pretrained": None}
        for i in ARCHITECTURES
    ]


def item_text(row: dict[str, Any]) -> str:
    """'name — pretrained, installed  ·  4.7 M params (18 MB)  ·  fastest'.

    The mark sits right after the name so a narrow combo cuts the figures, not the mark.
    """
    mark = f" — {INSTALLED_MARK}" if row.get("pretrained") else ""
    return f"{row['name']}{mark}  ·  {format_params(row['params'])}  ·  {row['speed']}"


def fill_arch_combo(combo: QComboBox, rows: Sequence[dict[str, Any]], select: str) -> None:
    """Replace the combo's items by ``rows`` (in order) and select ``select``.

    Rows with weights on this machine come first; a separator divides them from the
    rest. A name that is not in the list (a typed timm model name) is kept as typed.
    Emits no signal: the caller decides whether the choice changed.
    """
    combo.blockSignals(True)
    try:
        combo.clear()
        previous_pretrained: bool | None = None
        for row in rows:
            pretrained = bool(row.get("pretrained"))
            if previous_pretrained and not pretrained:
                combo.insertSeparator(combo.count())
            previous_pretrained = pretrained
            combo.addItem(item_text(row), row["name"])
            where = str(row.get("weights", "")).removeprefix("found: ")
            if pretrained and where:
                combo.setItemData(combo.count() - 1, f"Weights: {where}",
                                  Qt.ItemDataRole.ToolTipRole)
        index = combo.findData(select)
        if index >= 0:
            combo.setCurrentIndex(index)
        else:
            combo.setEditText(select)
    finally:
        combo.blockSignals(False)
    show_start(combo)
    widen_popup(combo)


class RoomyItems(QStyledItemDelegate):
    """Rows with air around the text in the architecture list (the style's default rows
    were cramped, the figures of one row touching the next), and a thin line for the
    separator between installed and other architectures."""

    def _separator(self, index: QModelIndex) -> bool:
        return index.data(Qt.ItemDataRole.AccessibleDescriptionRole) == "separator"

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:  # noqa: N802
        size = super().sizeHint(option, index)
        if self._separator(index):
            return QSize(size.width(), 9)
        return QSize(size.width() + 16, max(size.height() + 10, option.fontMetrics.height() + 12))

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex) -> None:
        if self._separator(index):
            y = option.rect.center().y()
            painter.save()
            painter.setPen(option.palette.color(QPalette.ColorRole.Mid))
            painter.drawLine(option.rect.left() + 4, y, option.rect.right() - 4, y)
            painter.restore()
            return
        option.rect = option.rect.adjusted(6, 0, 0, 0)  # text off the popup's edge
        super().paint(painter, option, index)


def show_start(combo: QComboBox) -> None:
    """Scroll an editable combo's text to its start: the name and the mark, which a
    narrow combo would otherwise cut (a line edit shows the end of a long text)."""
    if combo.lineEdit() is not None:
        combo.lineEdit().setCursorPosition(0)


def widen_popup(combo: QComboBox) -> None:
    """Let the drop-down list be as wide as its longest item (the combo may be narrow)."""
    metrics = combo.fontMetrics()
    texts = (combo.itemText(i) for i in range(combo.count()))
    width = max((metrics.horizontalAdvance(text) for text in texts), default=0)
    combo.view().setMinimumWidth(width + 40)  # item margins and the scroll bar


# Workers (import torch/timm: never call these on the GUI thread) -------------------


def architectures_on_this_machine() -> tuple[list[dict[str, Any]], str]:
    """(picker rows with ``pretrained`` and ``weights``, the best installed architecture)."""
    from loupe.engine.models.catalog import describe_architectures
    from loupe.engine.models.weights import best_installed_arch

    return describe_architectures(with_weights=True), best_installed_arch()


def weights_status_of(arch: str) -> tuple[str, str, int | None]:
    """(arch, 'found: <a sentence for people>' | 'not found', default input size in px).

    Looks at the disk and timm's model config (no network); call it in a worker."""
    from loupe.engine.models.architectures import arch_info
    from loupe.engine.models.weights import find_weights

    source = find_weights(arch)
    status = f"found: {weights_where(source)}" if source is not None else "not found"
    try:
        size: int | None = arch_info(arch).input_size
    except Exception:  # noqa: BLE001 - the size is a hint; the status is what matters
        size = None
    return arch, status, size


def weights_where(source: WeightsSource) -> str:
    """Where the weights came from, for the note under the combo (not a raw path).

    Weights from a package installed with Loupe read the same whether they are still in
    the package or already converted into Loupe's weights store (which happens on first
    use), so the user sees one stable sentence.
    """
    from loupe.engine.models.weight_packages import find_installed, package_for

    package = package_for(source.arch)
    origin = source.origin or ""
    if package is not None and (
        source.kind == "package" or origin.startswith(package.distribution)
    ):
        installed = find_installed(source.arch)
        if installed is not None:
            what = f"{package.distribution} {installed.version}, {package.licence}"
            return f"Pretrained on ImageNet, installed with Loupe ({what})"
        return f"Pretrained on ImageNet, kept in Loupe's weights store (from {origin})"
    if source.kind == "loupe":
        return "Pretrained weights in Loupe's weights store" + (
            f" (from {origin})" if origin else " (imported)"
        )
    return f"Pretrained weights found in the {source.describe()}"
