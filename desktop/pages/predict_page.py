"""Predict: drop, open or paste images and see the answer and where the model looked.

One worker call gives both the prediction and the activation map (``loupe.engine.inference.cam.
compute_cam`` shares the forward pass), then prepares two display-sized layers: the
image, and the image fully coloured by the map (``engine.inference.cam.render_overlay`` at opacity
1, so the part the model never saw stays uncoloured). The opacity slider blends those two
arrays; it never calls the model. A slow map (Score-CAM) shows its progress with Cancel
and hides the previous map meanwhile. Recent predictions: a click shows one again, a
double-click (or Space) opens it in the image viewer. A dropped folder is predicted in
batches by ``loupe.engine.inference.folder`` with progress, cancel and "Save CSV…".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QImage
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from loupe.desktop.pages.image_preview import PreviewItem, open_preview
from loupe.desktop.pages.predict_folder import FolderPanel
from loupe.desktop.pages.predict_imagenet import ImageNetSwitch, PredictIntro, imagenet_toggle
from loupe.desktop.pages.predict_work import (
    HISTORY_LIMIT,
    IMAGE_FILTER,
    METHOD_LABELS,
    CamView,
    predict_with_cam,
    qimage_to_pil,
    verdict,
)
from loupe.desktop.widgets.cam_viewer import CamViewer, blend
from loupe.desktop.widgets.drop_zone import mime_is_usable, plan_for
from loupe.desktop.widgets.image_grid import GridItem, ImageGrid
from loupe.desktop.widgets.topk_bars import TopKBars
from loupe.desktop.workers import Task, TaskState
from loupe.engine.core.events import Progress


class PredictPage(QWidget):
    """The "play" page: prediction, top-k bars, activation map, history, folder runs.

    The main window routes drops to :meth:`predict_paths` and :meth:`predict_folder`;
    the page also accepts drops itself. ``predictionShown(CamView)`` fires each time a
    result is displayed.
    """

    predictionShown = Signal(object)
    overlaySaved = Signal(Path)

    def __init__(self, context: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._context = context
        self._queue: list[Path | Any] = []
        self._current: CamView | None = None
        self._history: list[CamView] = []
        self._refresh_pending = False
        self.imagenet = ImageNetSwitch(context, self)
        self._shown_predictor: Any = None
        self.setAcceptDrops(True)
        self._build()
        self._wire()
        self._on_model_changed()

    # -- layout -----------------------------------------------------------------------------
    def _build(self) -> None:
        self.open_button = QPushButton("Open images…", self)
        self.folder_button = QPushButton("Predict folder…", self)
        self.paste_button = QPushButton("Paste", self)
        self.save_button = QPushButton("Save map…", self)
        self.save_button.setToolTip("Save the image with its activation map, full size")
        self.save_button.setEnabled(False)
        self.topk_spin = QSpinBox(self)
        self.topk_spin.setRange(1, 20)
        self.topk_spin.setValue(5)
        self.topk_spin.setPrefix("top ")
        self.unknown_check = QCheckBox("“Unknown” below", self)
        self.unknown_spin = QSpinBox(self)
        self.unknown_spin.setRange(1, 99)
        self.unknown_spin.setValue(60)
        self.unknown_spin.setSuffix(" %")
        self.unknown_spin.setEnabled(False)
        self.unknown_check.setToolTip(
            "Answer “unknown” when the best class is less likely than this")
        self.imagenet_button = imagenet_toggle(self)
        self.model_label = QLabel(self)  # which model answers: its own line, never cut
        bold = self.model_label.font()
        bold.setBold(True)
        self.model_label.setFont(bold)  # a font, not a style sheet: palette changes apply
        bar = QHBoxLayout()
        for widget in (self.open_button, self.folder_button, self.paste_button,
                       self.save_button, self.imagenet_button):
            bar.addWidget(widget)
        bar.addSpacing(12)
        bar.addWidget(self.topk_spin)
        bar.addWidget(self.unknown_check)
        bar.addWidget(self.unknown_spin)
        bar.addStretch(1)

        self.viewer = CamViewer(self)
        self.viewer.set_methods(METHOD_LABELS, "gradcam")
        self.bars = TopKBars(self)
        self.path_label = QLabel(self)
        self.path_label.setWordWrap(True)
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.history = ImageGrid(self, runner=self._context.runner, thumb_size=72)
        side = QWidget(self)
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(self.bars)
        side_layout.addWidget(self.path_label)
        side_layout.addWidget(QLabel("Recent predictions", side))
        side_layout.addWidget(self.history, 1)
        self.intro = PredictIntro(self)  # until the first prediction is shown
        self.stack = QStackedWidget(self)
        self.stack.addWidget(self.intro)
        self.stack.addWidget(self.viewer)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.stack)
        splitter.addWidget(side)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        self.folder_panel = FolderPanel(self._context, self)
        self.folder_panel.setVisible(False)

        self.vertical = QSplitter(Qt.Orientation.Vertical, self)
        self.vertical.addWidget(splitter)
        self.vertical.addWidget(self.folder_panel)
        self.vertical.setStretchFactor(0, 3)
        self.vertical.setStretchFactor(1, 1)
        self.vertical.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addWidget(self.model_label)
        layout.addLayout(bar)
        layout.addWidget(self.vertical, 1)

    def _wire(self) -> None:
        self.open_button.clicked.connect(self._ask_images)
        self.folder_button.clicked.connect(self._ask_folder)
        self.paste_button.clicked.connect(self.paste_from_clipboard)
        self.save_button.clicked.connect(self._ask_save)
        self.viewer.methodChanged.connect(lambda _m: self._recompute_current())
        self.viewer.targetChanged.connect(lambda _t: self._recompute_current())
        self.unknown_check.toggled.connect(self._on_unknown_changed)
        self.unknown_spin.valueChanged.connect(lambda _v: self._on_unknown_changed())
        self.topk_spin.valueChanged.connect(lambda _v: self._show_bars())
        self.history.itemClicked.connect(lambda item: self.show_view(item.data))
        self.history.itemActivated.connect(self.open_in_viewer)
        self.viewer.cancelRequested.connect(self.cancel_map)
        self._context.modelChanged.connect(self._on_model_changed)
        self.intro.tryRequested.connect(self.imagenet.request)
        self.imagenet_button.toggled.connect(self.use_imagenet)
        self.imagenet.changed.connect(self._on_predictor_changed)

    # -- model --------------------------------------------------------------------------------
    def predictor(self) -> Any:
        """The model that answers: the ImageNet one while it is switched on, else the
        context's (loaded or just trained) model."""
        return self.imagenet.predictor if self.imagenet.active else self._context.predictor

    def use_imagenet(self, on: bool = True) -> None:
        """Switch to the pretrained ImageNet model (loaded in a worker the first time),
        or back to the user's model."""
        if on:
            self.imagenet.request()
        else:
            self.imagenet.release()
            self._on_predictor_changed()

    def _on_model_changed(self) -> None:
        """A model was loaded or trained: it replaces the ImageNet model, as any load."""
        self.imagenet.release()
        self._on_predictor_changed()

    def _on_predictor_changed(self) -> None:
        predictor, previous = self.predictor(), self._shown_predictor
        self._shown_predictor = predictor
        self.imagenet_button.blockSignals(True)
        self.imagenet_button.setChecked(self.imagenet.active)
        self.imagenet_button.blockSignals(False)
        self.imagenet_button.setEnabled(not self.imagenet.loading)
        self.intro.show_state(has_model=self._context.predictor is not None,
                              switch=self.imagenet)
        if predictor is None:
            self.model_label.setText("No model loaded")
            self.viewer.clear("Load a model first: drop a .loupe file here, or train one.")
            self.bars.clear("No model loaded")
            self._current = None
            self.save_button.setEnabled(False)
            self.stack.setCurrentWidget(self.intro)
            return
        if self.imagenet.active:
            self.model_label.setText(self.imagenet.label())
        else:
            name = (getattr(self._context, "model_title", "")
                    or (self._context.model_path.name if self._context.model_path else "model"))
            self.model_label.setText(f"Model: {name} ({len(predictor.classes)} classes)")
        self.viewer.set_classes(predictor.classes)
        self._on_unknown_changed()
        if self._current is None:
            self.viewer.clear("Drop an image here, open one, or paste one (Ctrl+V).")
            self.bars.clear("Waiting for an image")
        elif predictor is not previous:
            self._recompute_current()

    def unknown_threshold(self) -> float | None:
        return self.unknown_spin.value() / 100.0 if self.unknown_check.isChecked() else None

    def _on_unknown_changed(self, *_args: Any) -> None:
        self.unknown_spin.setEnabled(self.unknown_check.isChecked())
        predictor = self.predictor()
        if predictor is not None and not predictor.multi_label:
            predictor.unknown_below = self.unknown_threshold()
        self._show_bars()
        self._refresh_history()

    # -- entry points -----------------------------------------------------------------------------
    def predict_paths(self, paths: Sequence[Path]) -> None:
        """Predict images (queued, one worker at a time); the first one is shown first."""
        if not self._require_model():
            return
        self._queue.extend(Path(p) for p in paths)
        self._start_next()

    def predict_image(self, image: Any) -> None:
        """Predict an in-memory PIL image (pasted or dragged pixels)."""
        if not self._require_model():
            return
        self._queue.append(image)
        self._start_next()

    def predict_folder(self, folder: Path) -> None:
        """Batch-predict every image under ``folder`` with progress, cancel and CSV."""
        if not self._require_model():
            return
        self.folder_panel.setVisible(True)
        self.folder_panel.start(Path(folder), topk=self.topk_spin.value(),
                                predictor=self.predictor())

    def paste_from_clipboard(self) -> None:
        mime = QApplication.clipboard().mimeData()
        if not self.handle_mime(mime) and mime is not None and mime.hasImage():
            self.predict_image(qimage_to_pil(QImage(mime.imageData())))

    def handle_mime(self, mime: Any) -> bool:
        """Act on dropped/pasted files: a model loads, images predict, a folder batches."""
        plan = plan_for(mime)
        if plan.model is not None:
            self._context.set_model(plan.model)
        elif plan.images:
            self.predict_paths(list(plan.images))
        elif plan.folder is not None:
            self.predict_folder(plan.folder)
        else:
            return False
        return True

    def _require_model(self) -> bool:
        if self.predictor() is not None:
            return True
        self._context.errorRaised.emit(
            "No model loaded",
            "Load a model first: drop a .loupe file on the window, use Models › Load, "
            "or train one on the Train page. Or try the pretrained ImageNet model "
            "(Predict page).")
        return False

    # -- drag and drop ----------------------------------------------------------------------------
    def _wants(self, mime: Any) -> bool:
        """Accept what this page can act on; a folder without a model is left to the
        main window, which opens it as training data."""
        plan = plan_for(mime)
        if plan.folder is not None and plan.model is None and not plan.images:
            return self.predictor() is not None
        return mime_is_usable(mime)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self._wants(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if self._wants(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        mime = event.mimeData()
        if self.handle_mime(mime):
            event.acceptProposedAction()
        elif mime.hasImage():
            event.acceptProposedAction()
            self.predict_image(qimage_to_pil(QImage(mime.imageData())))
        else:
            event.ignore()

    # -- tasks -----------------------------------------------------------------------------------
    def _busy(self) -> bool:
        return self._context.runner.is_running("predict", owner=self)

    def _start_next(self) -> None:
        if self._busy() or not self._queue:
            return
        source = self._queue.pop(0)
        self._run(source, replace=False)

    def _recompute_current(self) -> None:
        """Method or target changed: a new map for the image on screen (latest wins)."""
        if self._current is None or self.predictor() is None:
            return
        if self._busy():
            self._refresh_pending = True
            return
        current = self._current
        source = current.source if current.source is not None else current.image
        self._run(source, replace=True)

    def _run(self, source: Any, *, replace: bool) -> None:
        from loupe.engine.inference.cam import DEFAULT_METHOD

        predictor = self.predictor()
        method = self.viewer.method() or DEFAULT_METHOD
        name = getattr(source, "name", "image")
        label = dict(METHOD_LABELS).get(method, method)
        # The map on screen is not the one being computed: hidden under a veil until then.
        self.viewer.set_busy(True, f"Computing {label} for {name}…")
        self._context.runner.start(
            predict_with_cam, predictor, source,
            method=method, target=self.viewer.target(),
            topk=max(self.topk_spin.value(), 1), owner=self, kind="predict",
            on_result=lambda view: self._on_result(view, replace, predictor),
            on_event=self._on_map_progress, on_done=self._on_done,
            error_title=f"Cannot predict {getattr(source, 'name', 'the image')}")
        self._context.statusMessage.emit(f"Predicting {name}…")

    def _on_map_progress(self, event: Any) -> None:
        if isinstance(event, Progress) and event.total > 1:
            label = dict(METHOD_LABELS).get(event.message, event.message or "map")
            self.viewer.set_progress(event.done, event.total, f"Computing {label}")

    def cancel_map(self) -> None:
        """Cancel: stop the map being computed (and the images queued after it)."""
        self._context.runner.cancel("predict", owner=self)

    def _on_result(self, view: CamView, replace: bool, predictor: Any = None) -> None:
        if predictor is not None and predictor is not self.predictor():
            # Asked of a model that is no longer the active one (switched while this ran):
            # ask the one now active instead, once this task is done.
            if self.predictor() is None:
                self._queue.clear()
                self._refresh_pending = False
            elif replace:
                self._refresh_pending = True
            else:
                self._queue.insert(0, view.source if view.source is not None else view.image)
            return
        if replace and self._current in self._history:
            self._history[self._history.index(self._current)] = view
        else:
            self._history.insert(0, view)
            del self._history[HISTORY_LIMIT:]
        self.show_view(view)
        self._refresh_history()
        text = verdict(view.prediction, self.unknown_threshold())
        self._context.statusMessage.emit(f"{view.name}: {text}")

    def _on_done(self, task: Task) -> None:
        """After any outcome (an error was shown by the runner): the next image."""
        if not self._busy():
            self.viewer.set_busy(False)  # the previous map is current again (or replaced)
        if task.state is TaskState.CANCELLED:  # Cancel, or the window is closing
            self._queue.clear()
            self._refresh_pending = False
            self._context.statusMessage.emit("Activation map cancelled")
        elif self._refresh_pending:
            self._refresh_pending = False
            self._recompute_current()
        else:
            self._start_next()

    # -- display --------------------------------------------------------------------------------
    def show_view(self, view: CamView) -> None:
        """Display a computed result: overlay, caption, bars."""
        from loupe.engine.inference.cam import input_outline

        self._current = view
        result = view.result
        method = dict(METHOD_LABELS).get(result.method, result.method)
        caption = (f"{view.name} · where the model looked for “{result.label}” "
                   f"({method}, layer {result.layer})")
        self.viewer.set_layers(view.base, view.heat, caption, input_outline(result.crop_box))
        self.stack.setCurrentWidget(self.viewer)
        self.path_label.setText(str(view.source) if view.source else "pasted image")
        self.save_button.setEnabled(True)
        self._show_bars()
        self.predictionShown.emit(view)

    def current_view(self) -> CamView | None:
        return self._current

    def open_in_viewer(self, item: GridItem) -> None:
        """The recent predictions in the image viewer, this one first."""
        views = [grid_item.data for grid_item in self.history.items()]
        if item.data not in views:
            return
        self.show_view(item.data)
        items = [PreviewItem(view.source, detail="recent prediction", view=view)
                 for view in views]
        open_preview(self._context, self, items, views.index(item.data),
                     predictor=self.predictor())

    def _show_bars(self) -> None:
        if self._current is None:
            return
        prediction = self._current.prediction
        threshold = None if prediction.multi_label else self.unknown_threshold()
        if prediction.multi_label:
            top = list(prediction.top)
        else:
            ranked = sorted(prediction.probs.items(), key=lambda kv: kv[1], reverse=True)
            top = ranked[: self.topk_spin.value()]
        self.bars.set_predictions(top, unknown=prediction.unknown_at(threshold),
                                  threshold=threshold)

    def _refresh_history(self) -> None:
        items = []
        for view in self._history:
            caption = verdict(view.prediction, self.unknown_threshold(), digits=0)
            items.append(GridItem(image=blend(view.base, view.heat, 0.4), caption=caption,
                                  tooltip=str(view.source or "pasted image"), data=view))
        self.history.set_items(items)

    def _ask_images(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Predict images", "", IMAGE_FILTER)
        if files:
            self.predict_paths([Path(f) for f in files])

    def save_overlay(self, target: Path) -> Any:
        """Write the shown image with its map at full size and the slider's opacity
        (``engine.inference.cam.save_overlay``, atomic) in a worker; ``overlaySaved(Path)``
        after."""
        from loupe.engine.inference.cam import save_overlay

        view = self._current
        if view is None:
            return None
        target = Path(target)
        if target.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
            target = target.with_name(target.name + ".png")  # typed without a suffix
        return self._context.runner.start(
            save_overlay, view.result, target, view.image, opacity=self.viewer.opacity(),
            events=False, owner=self, kind="save-overlay", supersede=False,
            on_result=self._on_overlay_saved, error_title="Cannot save the map")

    def _on_overlay_saved(self, path: Path) -> None:
        self._context.statusMessage.emit(f"Saved {path}")
        self.overlaySaved.emit(Path(path))

    def _ask_save(self) -> None:
        if self._current is None:
            return
        stem = self._current.source.stem if self._current.source else "pasted"
        name, _ = QFileDialog.getSaveFileName(
            self, "Save image with activation map", f"{stem}-map.png",
            "PNG (*.png);;JPEG (*.jpg *.jpeg);;WebP (*.webp)")
        if name:
            self.save_overlay(Path(name))

    def _ask_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Predict every image in a folder")
        if folder:
            self.predict_folder(Path(folder))
