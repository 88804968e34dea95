"""Opening any image in the viewer: its pixels and map in a worker, its corrections.

Every tab calls :func:`open_preview` with the images it shows (a grid's items, the data
table's rows, the embedding map's points) and the one that was double-clicked. One
:class:`ImagePreview` per context owns the viewer window (``widgets.image_viewer``):
it loads the picture, the prediction and the activation map off the GUI thread (the
Predict page's ``predict_with_cam``, with Score-CAM's progress and Cancel), and sends
Relabel / Exclude / Include / Undo to the shared :class:`Corrections`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QWidget

from loupe.desktop.pages.image_corrections import Corrections, corrections_for
from loupe.desktop.pages.predict_work import METHOD_LABELS, CamView, predict_with_cam, verdict
from loupe.desktop.widgets.cam_viewer import display_layers
from loupe.desktop.widgets.image_viewer import ImageViewer
from loupe.engine.core.events import Progress

_INSTANCES: weakref.WeakKeyDictionary[Any, ImagePreview] = weakref.WeakKeyDictionary()
KIND = "preview"


@dataclass(frozen=True)
class PreviewItem:
    """One image a tab can open: a file (``path``) or a computed prediction (``view``).

    ``label`` is what the data says ("food", "actual dog"); ``detail`` adds what the tab
    knows (its set, its loss).
    """

    path: Path | None
    label: str = ""
    detail: str = ""
    view: CamView | None = None


@dataclass(frozen=True)
class PreviewContent:
    """What a worker hands the viewer: display layers, and the model's verdict."""

    base: Any  # H×W×3 uint8 at display size
    heat: Any  # same shape, the map at full strength (None: no model)
    region: tuple[float, float, float, float] | None  # the model's center crop, if any
    view: CamView | None


def load_preview(predictor: Any, source: Path | Any, *, method: str, target: str | None,
                 on_event: Any = None, cancel: Any = None) -> PreviewContent:
    """Worker body: the image at display size and, with a model, its prediction and map.

    ``source`` is a file or a PIL image (a pasted picture from the Predict page).
    """
    if predictor is None:
        from loupe.desktop.widgets.cam_viewer import DISPLAY_MAX_SIDE
        from loupe.engine.data.imageio import load_rgb

        picture = (load_rgb(Path(source), min_short_side=DISPLAY_MAX_SIDE)
                   if isinstance(source, str | Path) else source.convert("RGB"))
        base, _ = display_layers(picture, None)
        return PreviewContent(base, None, None, None)
    view = predict_with_cam(predictor, source, method=method, target=target, topk=5,
                            on_event=on_event, cancel=cancel)
    return content_of(view)


def content_of(view: CamView) -> PreviewContent:
    from loupe.engine.inference.cam import input_outline

    return PreviewContent(view.base, view.heat, input_outline(view.result.crop_box), view)


def preview_for(context: Any, anchor: QWidget) -> ImagePreview:
    """The context's viewer controller (its window is made on first use)."""
    found = _INSTANCES.get(context)
    if found is None or not found.alive():  # the window it belonged to is gone
        if found is not None:
            found.deleteLater()
        found = _INSTANCES[context] = ImagePreview(context, anchor.window())
    return found


def open_preview(context: Any, anchor: QWidget, items: Sequence[PreviewItem], index: int, *,
                 predictor: Any = None, after_change: Callable[[], Any] | None = None
                 ) -> ImagePreview:
    """Show ``items[index]`` in the viewer (Left/Right walk through ``items``).

    ``predictor`` defaults to the context's model; ``after_change`` runs after a
    correction made in the viewer (the Data tab re-applies its labels).
    """
    preview = preview_for(context, anchor)
    preview.open(items, index, predictor=predictor, after_change=after_change)
    return preview


class ImagePreview(QObject):
    """Loads what the viewer shows and carries out its requests.

    ``shown(PreviewContent)`` fires when an image (with its map, if a model is loaded)
    is on screen.
    """

    shown = Signal(object)

    def __init__(self, context: Any, parent_window: QWidget | None) -> None:
        super().__init__(context if isinstance(context, QObject) else None)
        self._context = context
        self._items: list[PreviewItem] = []
        self._index = 0
        self._predictor: Any = None
        self._after_change: Callable[[], Any] | None = None
        self._classes: tuple[str, ...] = ()
        self.corrections: Corrections = corrections_for(context)
        self.viewer = ImageViewer(parent_window)
        self.viewer.cam.set_methods(METHOD_LABELS, "gradcam")
        self.viewer.navigateRequested.connect(self.navigate)
        self.viewer.relabelRequested.connect(
            lambda label: self._correct(lambda p: self.corrections.relabel([p], label)))
        self.viewer.excludeRequested.connect(
            lambda: self._correct(lambda p: self.corrections.exclude([p])))
        self.viewer.includeRequested.connect(
            lambda: self._correct(lambda p: self.corrections.clear([p])))
        self.viewer.undoRequested.connect(lambda: self._correct(self.corrections.undo))
        self.viewer.cam.methodChanged.connect(lambda _m: self._load(recompute=True))
        self.viewer.cam.targetChanged.connect(lambda _t: self._load(recompute=True))
        self.viewer.cam.cancelRequested.connect(self.cancel)
        self.corrections.changed.connect(self._on_corrections)
        context.modelChanged.connect(self._on_model_changed)

    # -- opening --------------------------------------------------------------------------
    def open(self, items: Sequence[PreviewItem], index: int, *, predictor: Any = None,
             after_change: Callable[[], Any] | None = None) -> None:
        if not items:
            return
        self._items = list(items)
        self._index = max(0, min(index, len(self._items) - 1))
        self._predictor = predictor
        self._after_change = after_change
        self.viewer.show()
        self.viewer.raise_()
        self.viewer.activateWindow()
        self._load()

    def navigate(self, step: int) -> None:
        target = self._index + step
        if 0 <= target < len(self._items):
            self._index = target
            self._load()

    def current(self) -> PreviewItem | None:
        return self._items[self._index] if self._items else None

    def predictor(self) -> Any:
        return self._predictor if self._predictor is not None else self._context.predictor

    def alive(self) -> bool:
        """False once the viewer's window was deleted with the window it belonged to."""
        return shiboken6.isValid(self.viewer)

    def _on_model_changed(self) -> None:
        self._predictor = None  # a new model answers from now on
        if self.alive() and self.viewer.isVisible() and self._items:
            self._load(recompute=True)

    def _on_corrections(self, _rels: list[str]) -> None:
        if self.alive():
            self._show_corrections()

    # -- loading --------------------------------------------------------------------------
    def _load(self, *, recompute: bool = False) -> Any:
        item = self.current()
        if item is None:
            return None
        predictor = self.predictor()
        if predictor is not None and tuple(predictor.classes) != self._classes:
            self._classes = tuple(predictor.classes)  # (keeps a chosen class otherwise)
            self.viewer.cam.set_classes(predictor.classes)
        self._show_facts(item)
        self._show_corrections()
        if item.view is not None and not recompute:
            self._on_content(content_of(item.view))
            return None
        source = item.path if item.path is not None else getattr(item.view, "image", None)
        if source is None:
            return None
        cam = self.viewer.cam
        method = cam.method() if predictor is not None else ""
        label = dict(METHOD_LABELS).get(method, method)
        cam.set_busy(True, f"Computing {label}…" if predictor is not None else "Loading…",
                     cancellable=predictor is not None)
        return self._context.runner.start(  # the previous image's load is superseded
            load_preview, predictor, source, method=method or "gradcam",
            target=cam.target(), owner=self, kind=KIND, on_result=self._on_content,
            on_event=self._on_event, on_cancel=self._on_cancelled,
            error_title=f"Cannot show {getattr(source, 'name', 'the image')}")

    def cancel(self) -> None:
        self._context.runner.cancel(KIND, owner=self)

    def _on_event(self, event: Any) -> None:
        if self.alive() and isinstance(event, Progress) and event.total > 1:
            label = dict(METHOD_LABELS).get(event.message, event.message or "map")
            self.viewer.cam.set_progress(event.done, event.total, f"Computing {label}")

    def _on_cancelled(self) -> None:
        if not self.alive():
            return
        self.viewer.cam.set_busy(False)
        self.viewer.set_prediction("Activation map cancelled; choose a map to try again.")

    def _on_content(self, content: PreviewContent) -> None:
        if not self.alive():
            return
        cam = self.viewer.cam
        view = content.view
        if view is None:
            cam.set_layers(content.base, None, "")
            self.viewer.set_prediction(
                "No model loaded: load or train one to see its prediction and map.")
        else:
            result = view.result
            method = dict(METHOD_LABELS).get(result.method, result.method)
            caption = (f"Where the model looked for “{result.label}” ({method}, "
                       f"layer {result.layer})")
            cam.set_layers(content.base, content.heat, caption, content.region)
            self.viewer.set_prediction(self._prediction_text(view))
        self.shown.emit(content)

    @staticmethod
    def _prediction_text(view: CamView) -> str:
        prediction = view.prediction
        others = ", ".join(f"{name} {p:.0%}" for name, p in list(prediction.top)[1:3])
        text = f"Prediction: {verdict(prediction, None)}"
        return text + (f" (then {others})" if others else "")

    # -- facts and corrections -------------------------------------------------------------
    def _show_facts(self, item: PreviewItem) -> None:
        path = item.path
        title = path.name if path is not None else "pasted image"
        label = " · ".join(part for part in (item.label, item.detail) if part)
        self.viewer.show_facts(title=title, path=str(path) if path else "",
                               label=label, position=(self._index, len(self._items)))

    def _show_corrections(self) -> None:
        item = self.current()
        if item is None:
            return
        path = item.path
        editable = path is not None and self.corrections.editable(path)
        state = self.corrections.state(path) if path is not None else None
        self.viewer.set_corrections(
            classes=self.corrections.classes(), editable=editable,
            override=self.corrections.describe(path) if path is not None else "",
            excluded=state is not None and state[0] == "exclude",
            can_undo=editable and self.corrections.can_undo(path),
            reason="Not in the project's folder: nothing to correct."
            if self._context.project is not None else "Open the image folder to correct it.")

    def _correct(self, change: Callable[[Path], Any]) -> None:
        item = self.current()
        if item is None or item.path is None:
            return
        if change(item.path) and self._after_change is not None:
            self._after_change()
        self._show_corrections()

