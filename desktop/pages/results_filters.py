"""The Results page's "what the network learned" tab: first-layer filters, and the
validation images that excite one channel of any convolution most.

The filters are drawn from the data the analysis worker already extracted; the
top-activating images need one pass over the validation images with a hook on the chosen
layer (``loupe.engine.inference.cam.top_activating``), run in a worker that holds the model.
The picture sits beside the images, not above them: under it, one row of thumbnails held
8 of the 9 images at 1200 px, the ninth hidden on a second row while the title said 9.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from loupe.desktop.pages import results_plots as plots
from loupe.desktop.pages.model_use import using_model
from loupe.desktop.widgets.image_grid import GridItem, ImageGrid
from loupe.desktop.widgets.mpl_canvas import MplCanvas

TOP_COUNT = 9


def top_activating_images(predictor: Any, paths: Sequence[Path], layer: str, channel: int, *,
                          on_event: Any = None, cancel: Any = None) -> list[Any]:
    """Worker body: loupe.engine.inference.cam.top_activating while holding the model."""
    from loupe.engine.core.events import ignore_event
    from loupe.engine.inference.cam import top_activating

    with using_model(predictor, cancel):
        return top_activating(predictor, list(paths), layer, channel, count=TOP_COUNT,
                              on_event=on_event or ignore_event, cancel=cancel)


class FiltersPanel(QWidget):
    """Filters picture on the left; layer/channel picker and its top images on the right.

    ``topFound(list[ChannelActivation])`` fires when the images are listed.
    """

    topFound = Signal(list)

    def __init__(self, context: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._context = context
        self._paths: list[Path] = []
        self.canvas = MplCanvas(self, width=6, height=4)
        self.layer_combo = QComboBox(self)
        self.layer_combo.setMinimumContentsLength(14)
        self.channel_spin = QSpinBox(self)
        self.channel_spin.setPrefix("channel ")
        self.find_button = QPushButton("Show images that excite it most", self)
        self.find_button.setEnabled(False)
        self.title = QLabel("Pick a layer and a channel to see what it responds to.", self)
        self.grid = ImageGrid(self, runner=context.runner, thumb_size=112)
        self.layer_combo.currentIndexChanged.connect(self._on_layer)
        self.find_button.clicked.connect(self.find_top)
        self.title.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(QLabel("Layer:", self))
        row.addWidget(self.layer_combo, 1)
        second = QHBoxLayout()
        second.addWidget(self.channel_spin)
        second.addWidget(self.find_button)
        second.addStretch(1)
        side = QWidget(self)
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addLayout(row)
        side_layout.addLayout(second)
        side_layout.addWidget(self.title)
        side_layout.addWidget(self.grid, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.canvas)
        splitter.addWidget(side)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([450, 650])  # in proportion: room for 4 thumbnails a row
        self._auto_pending = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    def show_data(self, data: plots.ResultsData, paths: Sequence[Path]) -> None:
        plots.draw_filters(self.canvas, data.filters, data.filters_error)
        self._paths = list(paths)
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        for name, channels in data.layers:
            self.layer_combo.addItem(f"{name} ({channels} channels)", (name, channels))
        self.layer_combo.setCurrentIndex(max(0, self.layer_combo.count() - 1))
        self.layer_combo.blockSignals(False)
        self._on_layer()
        self.grid.set_items([])
        self._auto_pending = bool(self._paths) and self.layer_combo.count() > 0
        if self.isVisible():
            self._auto_find()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self._auto_find()

    def _auto_find(self) -> None:
        """The first time the tab is seen after an analysis, show the last layer's first
        channel, so the panel opens with an example instead of an empty grid."""
        if self._auto_pending:
            self._auto_pending = False
            self.find_top()

    def _on_layer(self, *_args: Any) -> None:
        data = self.layer_combo.currentData()
        self.channel_spin.setRange(0, max(0, (data[1] if data else 1) - 1))
        self.find_button.setEnabled(data is not None and bool(self._paths))

    def find_top(self) -> Any:
        """List the validation images with the highest mean activation of the channel."""
        data = self.layer_combo.currentData()
        predictor = self._context.predictor
        if data is None or predictor is None or not self._paths:
            return None
        layer, channel = data[0], self.channel_spin.value()
        self.title.setText(f"Looking through {len(self._paths)} images for {layer} "
                           f"channel {channel}…")
        return self._context.runner.start(  # a channel asked for before is superseded
            top_activating_images, predictor, self._paths, layer, channel, owner=self,
            kind="top-activating", error_title="Cannot rank the images",
            on_result=lambda found: self._on_found(layer, channel, found))

    def _on_found(self, layer: str, channel: int, found: list[Any]) -> None:
        self.title.setText(f"The {len(found)} validation images that excite {layer} "
                           f"channel {channel} most")
        self.grid.set_items([
            GridItem(path=a.path, caption=f"{a.score:.3g}", data=a.path,
                     tooltip=f"{a.path}\nmean activation {a.score:.4g}")
            for a in found
        ])
        self.topFound.emit(found)
