"""Maps that read well: legend, capped opacity, the crop outlined, and a slow Score-CAM
with progress and Cancel that never runs on the GUI thread."""

from __future__ import annotations

import copy
import dataclasses
import threading

import numpy as np
import pytest

from loupe.desktop.pages.predict_page import PredictPage
from loupe.desktop.widgets.cam_viewer import MAX_OPACITY, CamViewer, display_layers
from loupe.desktop.workers import TaskState
from loupe.engine.inference.cam import scorecam_chunk
from tests.desktop.views_fixtures import (  # noqa: F401 - fixtures
    bundle_file,
    context,
    fresh_predictor,
    loaded_bundle,
    make_image,
    model_context,
)


def test_the_map_has_a_perceptual_legend_and_never_hides_the_image(qtbot):
    from loupe.engine.inference.cam import colormap_lut

    viewer = CamViewer()
    qtbot.addWidget(viewer)
    viewer.show()
    base = np.full((40, 60, 3), 200, np.uint8)
    heat = np.zeros((40, 60, 3), np.uint8)
    base, heat = display_layers(base, heat)
    viewer.set_layers(base, heat, "cat")
    assert viewer.colour_bar.isVisible()  # a legend whenever a map is shown
    colours = viewer.colour_bar.colours()
    assert np.array_equal(colours, colormap_lut())
    lightness = colours.astype(float) @ np.array([0.2126, 0.7152, 0.0722])
    assert lightness[-1] > lightness[0] + 150  # dark = low, bright = high ("low → high")
    viewer.set_opacity(1.0)  # asked for full strength: capped
    assert viewer.opacity() == pytest.approx(MAX_OPACITY) and MAX_OPACITY < 1.0
    assert viewer.opacity_slider.maximum() == round(MAX_OPACITY * 100)
    shown = viewer.displayed_array()
    assert not np.array_equal(shown, heat)
    assert shown.min() >= round(200 * (1 - MAX_OPACITY)) - 1  # the picture shows through
    viewer.clear()
    assert not viewer.colour_bar.isVisible()


@pytest.fixture
def page(qtbot, model_context):  # noqa: F811
    page = PredictPage(model_context)
    qtbot.addWidget(page)
    page.resize(1000, 650)
    page.show()
    return page


def test_a_center_crop_model_shows_its_crop_outlined_on_the_whole_image(qtbot, page, tmp_path):
    """The test bundle resizes by ``crop``: the map covers the crop, outlined on the full
    picture (the wide image's edges the model never saw stay visible, uncoloured)."""
    image = make_image(tmp_path / "wide.png", (200, 60, 40), seed=2, size=60)
    from PIL import Image

    Image.open(image).resize((180, 60)).save(image)
    with qtbot.waitSignal(page.predictionShown, timeout=30_000) as blocker:
        page.predict_paths([image])
    view = blocker.args[0]
    assert view.base.shape == (60, 180, 3)  # the whole picture, not the square crop
    region = page.viewer.region()
    assert region is not None
    left, top, right, bottom = region
    assert 0.3 < left < right < 0.7 and top > 0.0 and bottom < 1.0
    rect = page.viewer.view.region_rect()
    image_rect = page.viewer.view.image_rect()
    assert image_rect.contains(rect.toRect().adjusted(1, 1, -1, -1))
    edge = view.base[:, : round(left * 180) - 1]
    assert np.array_equal(view.heat[:, : round(left * 180) - 1], edge)  # never coloured


def test_squish_and_pad_models_map_the_whole_image_without_an_outline(
        qtbot, model_context, fresh_predictor, bundle_file, tmp_path):  # noqa: F811
    from loupe.engine.inference.predict import Predictor

    image = make_image(tmp_path / "tall.png", (30, 160, 60), seed=4, size=50)
    for resize in ("squish", "pad"):
        pre = dataclasses.replace(fresh_predictor.preprocessing, resize=resize)
        predictor = Predictor(copy.deepcopy(fresh_predictor.model),
                              classes=fresh_predictor.classes, preprocessing=pre)
        model_context.set_predictor(bundle_file, predictor)
        page = PredictPage(model_context)
        qtbot.addWidget(page)
        with qtbot.waitSignal(page.predictionShown, timeout=30_000) as blocker:
            page.predict_paths([image])
        view = blocker.args[0]
        assert page.viewer.region() is None
        changed = np.abs(view.heat.astype(int) - view.base.astype(int)).sum(axis=2) > 0
        assert changed.any(axis=0).all() and changed.any(axis=1).all(), resize


class _Gate:
    """A forward hook that parks the worker on its third forward until released, so a
    test can look at the page while Score-CAM is half done (no timing involved)."""

    def __init__(self, model) -> None:
        self.forwards = 0
        self.threads: set[int] = set()
        self.parked = threading.Event()
        self.release = threading.Event()
        self.handle = model.register_forward_hook(self)

    def __call__(self, *_args) -> None:
        self.forwards += 1
        self.threads.add(threading.get_ident())
        if self.forwards == 3:
            self.parked.set()
            self.release.wait(30)


def test_score_cam_shows_progress_hides_the_old_map_and_cancels(qtbot, page, tmp_path):
    first = make_image(tmp_path / "first.png", (200, 40, 40), seed=1)
    with qtbot.waitSignal(page.predictionShown, timeout=30_000):
        page.predict_paths([first])
    viewer = page.viewer
    old_map = viewer.displayed_array().copy()
    assert viewer.map_shown()
    gate = _Gate(page._context.predictor.model)
    try:
        viewer.set_method("scorecam")  # a new map of the same image: Score-CAM, slow
        qtbot.waitUntil(gate.parked.is_set, timeout=30_000)
        qtbot.waitUntil(lambda: viewer.progress.maximum() > 1, timeout=10_000)
        # Computing: a bar with its steps and Cancel; the old map is hidden, not passed
        # off as the new one, and the picture says so.
        assert viewer.is_busy() and viewer.progress.isVisible()
        assert viewer.cancel_button.isVisible()
        assert viewer.progress.value() >= 1  # (throttled: not every step is drawn)
        total = viewer.progress.maximum()
        assert total == 2 + 512 // scorecam_chunk("cpu")  # resnet18's layer4: 512 channels
        assert not viewer.map_shown() and "Score-CAM" in viewer.view.veil()
        assert np.array_equal(viewer.displayed_array(), viewer._base)
        task = page._context.runner.current("predict", owner=page)
        assert task is not None
        viewer.cancel_button.click()
    finally:
        gate.release.set()
    qtbot.waitUntil(lambda: not task.state.active, timeout=30_000)
    assert task.state is TaskState.CANCELLED
    assert gate.forwards < total  # stopped early, not run to the end
    qtbot.waitUntil(lambda: not viewer.is_busy(), timeout=5_000)
    assert not viewer.progress.isVisible() and viewer.view.veil() == ""
    assert np.array_equal(viewer.displayed_array(), old_map)  # the last real map again
    # All of it ran on a worker thread: the GUI thread stayed free for tab switches.
    assert threading.get_ident() not in gate.threads
    gate.handle.remove()
