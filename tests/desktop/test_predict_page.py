"""Predict page: drops (real QDropEvents), activation maps, opacity, unknown, folders."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from loupe.desktop.pages.predict_page import PredictPage
from loupe.desktop.workers import TaskState
from tests.desktop.test_widgets import send_drop
from tests.desktop.views_fixtures import (  # noqa: F401 - fixtures
    bundle_file,
    context,
    dataset_root,
    fresh_predictor,
    loaded_bundle,
    make_image,
    model_context,
)


def count_forwards(predictor) -> list[int]:
    """Count every forward pass of the model (prediction, CAM, warm-up alike)."""
    calls = [0]
    predictor.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.fixture
def page(qtbot, model_context):  # noqa: F811
    page = PredictPage(model_context)
    qtbot.addWidget(page)
    page.resize(900, 600)
    return page


def test_dropping_an_image_shows_prediction_and_map(qtbot, page, tmp_path):
    image = make_image(tmp_path / "photo.png", (200, 50, 50), seed=3, size=80)
    with qtbot.waitSignal(page.predictionShown, timeout=30_000) as blocker:
        drop = send_drop(page, [image])
    assert drop.isAccepted()
    view = blocker.args[0]
    assert view.source == image
    assert page.viewer.has_overlay()
    assert view.base.shape == view.heat.shape == (80, 83, 3)  # full size, not the crop
    assert not np.array_equal(view.base, view.heat)  # the map coloured the image
    labels = [label for label, _ in page.bars.rows()]
    assert sorted(labels) == ["cat", "dog"]
    assert abs(sum(p for _, p in page.bars.rows()) - 1.0) < 1e-4
    assert page.history.items()[0].data is view


def test_opacity_reblends_without_calling_the_model(qtbot, page, tmp_path):
    calls = count_forwards(page._context.predictor)
    image = make_image(tmp_path / "x.png", (20, 50, 220), seed=4)
    with qtbot.waitSignal(page.predictionShown, timeout=30_000):
        page.predict_paths([image])
    after_predict = calls[0]
    assert after_predict >= 1
    first = page.viewer.displayed_array().copy()
    page.viewer.opacity_slider.setValue(90)
    page.viewer.opacity_slider.setValue(10)
    assert calls[0] == after_predict
    assert not np.array_equal(page.viewer.displayed_array(), first)
    with qtbot.waitSignal(page.predictionShown, timeout=30_000) as blocker:
        page.viewer.set_target("dog")  # a new target class does need the model
    assert calls[0] > after_predict
    assert blocker.args[0].result.label == "dog"


def test_unknown_threshold_marks_low_confidence(qtbot, page, tmp_path):
    image = make_image(tmp_path / "u.png", (90, 90, 90), seed=5)
    with qtbot.waitSignal(page.predictionShown, timeout=30_000):
        page.predict_paths([image])
    top = page.bars.rows()[0][1]
    page.unknown_check.setChecked(True)
    page.unknown_spin.setValue(99)
    assert page.bars.is_unknown() == (top < 0.99)
    assert page._context.predictor.unknown_below == pytest.approx(0.99)
    assert top < 0.99  # two classes and a random model: never that sure
    # The history says so too (it kept saying "cat 55%" under an "Unknown" verdict).
    assert page.history.items()[0].caption.startswith("unknown (")
    page.unknown_check.setChecked(False)
    assert not page.bars.is_unknown()
    assert not page.history.items()[0].caption.startswith("unknown")
    assert page._context.predictor.unknown_below is None


def test_dropping_a_model_file_loads_it(qtbot, context, bundle_file):  # noqa: F811
    page = PredictPage(context)
    qtbot.addWidget(page)
    assert context.predictor is None
    with qtbot.waitSignal(context.modelChanged, timeout=30_000):
        send_drop(page, [bundle_file])
    assert context.model_path == bundle_file
    assert tuple(context.predictor.classes) == ("cat", "dog")
    assert "2 classes" in page.model_label.text()


def test_predicting_without_a_model_says_so(qtbot, context, tmp_path):  # noqa: F811
    from PySide6.QtCore import QMimeData, QUrl

    page = PredictPage(context)
    qtbot.addWidget(page)
    image = make_image(tmp_path / "n.png", (1, 2, 3), seed=1)
    with qtbot.waitSignal(context.errorRaised) as blocker:
        page.predict_paths([image])
    assert blocker.args[0] == "No model loaded"
    folder = QMimeData()
    folder.setUrls([QUrl.fromLocalFile(str(tmp_path))])
    assert not page._wants(folder)  # left to the window, which opens it as data


def test_folder_batch_with_csv(qtbot, page, dataset_root, tmp_path):  # noqa: F811
    panel = page.folder_panel
    with qtbot.waitSignal(panel.folderFinished, timeout=60_000) as blocker:
        send_drop(page, [dataset_root])  # a dropped folder, with a model loaded
    result = blocker.args[0]
    assert len(result.rows) == 12 and panel.table.rowCount() == 12
    # Rows name the file under the folder: cat/cat_0.png and dog/dog_0.png, not bare names.
    shown = {panel.table.item(r, 0).text() for r in range(panel.table.rowCount())}
    assert shown == {p.relative_to(dataset_root).as_posix() for p in dataset_root.rglob("*.png")}
    target = panel.save_csv(tmp_path / "out" / "preds.csv")
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and {r["label"] for r in rows} <= {"cat", "dog"}
    assert not list(dataset_root.rglob("*.csv"))  # nothing written into the user's folder
    typed = panel.save_csv(tmp_path / "out" / "typed-without-suffix")  # as in the dialog
    assert typed.name == "typed-without-suffix.csv" and typed.is_file()


def test_dropping_an_image_on_the_main_window_predicts_it(qtbot, model_context, tmp_path):  # noqa: F811
    from loupe.desktop.main_window import MainWindow

    window = MainWindow(model_context)
    qtbot.addWidget(window)
    page = window.predict_page
    image = make_image(tmp_path / "window.png", (30, 200, 30), seed=2)
    with qtbot.waitSignal(page.predictionShown, timeout=30_000) as blocker:
        send_drop(window, [image])
    assert window.tabs.currentWidget() is page
    assert blocker.args[0].source == image and page.viewer.has_overlay()
    assert page.bars.rows()


def test_model_calls_from_pages_take_turns(qtbot, page, tmp_path):
    from loupe.desktop.pages.model_use import using_model

    image = make_image(tmp_path / "turns.png", (120, 120, 0), seed=6)
    runner = page._context.runner
    with using_model(page._context.predictor):  # e.g. an analysis holding the model
        page.predict_paths([image])
        qtbot.waitUntil(lambda: any(t.kind == "predict" and t.state is TaskState.RUNNING
                                    for t in runner.active()))
        qtbot.wait(50)  # let a (wrongly) finished worker deliver its result, if any
        assert page.current_view() is None  # the prediction waits for the model
    with qtbot.waitSignal(page.predictionShown, timeout=30_000):
        pass
    assert page.current_view().source == image


def test_pasting_pixels_predicts_them(qtbot, page):
    from PySide6.QtGui import QColor, QImage
    from PySide6.QtWidgets import QApplication

    image = QImage(70, 50, QImage.Format.Format_RGB32)
    image.fill(QColor(10, 200, 90))
    QApplication.clipboard().setImage(image)
    with qtbot.waitSignal(page.predictionShown, timeout=30_000) as blocker:
        page.paste_button.click()
    view = blocker.args[0]
    assert view.source is None and view.image.size == (70, 50)
    assert tuple(view.base[0, 0]) == (10, 200, 90)
    assert "pasted image" in page.path_label.text()


def test_cancelling_a_folder_run_writes_nothing(qtbot, page, dataset_root):  # noqa: F811
    from loupe.desktop.pages.model_use import using_model
    from loupe.engine.core import paths

    panel = page.folder_panel
    with using_model(page._context.predictor):  # the run waits for the model...
        page.predict_folder(dataset_root)
        assert panel.is_running() and panel.cancel_button.isEnabled()
        task = page._context.runner.current("predict-folder", owner=panel)
        with qtbot.waitSignal(task.cancelled, timeout=10_000):
            panel.cancel_button.click()  # ...and is cancelled while it waits
    assert not panel.is_running() and panel.result() is None
    assert "Cancelled" in panel.title.text() and not panel.save_button.isEnabled()
    assert not list((paths.cache_dir() / "predictions").glob("*.csv"))


def test_save_map_writes_the_full_size_overlay(qtbot, page, tmp_path):
    from PIL import Image

    image = make_image(tmp_path / "big.png", (200, 30, 30), seed=0, size=120)
    with qtbot.waitSignal(page.predictionShown, timeout=30_000):
        page.predict_paths([image])
    before = image.read_bytes()
    page.viewer.opacity_slider.setValue(80)
    with qtbot.waitSignal(page.overlaySaved, timeout=30_000) as blocker:
        page.save_overlay(tmp_path / "out" / "big-map.png")
    saved = Image.open(blocker.args[0])
    assert saved.size == Image.open(image).size
    assert saved.convert("RGB").tobytes() != Image.open(image).convert("RGB").tobytes()
    assert image.read_bytes() == before
    with qtbot.waitSignal(page.overlaySaved, timeout=30_000) as blocker:
        page.save_overlay(tmp_path / "out" / "typed-without-suffix")  # as in the dialog
    assert blocker.args[0].name == "typed-without-suffix.png"
    assert Image.open(blocker.args[0]).format == "PNG"


IMAGENET_CATS = {"tabby, tabby cat", "tiger cat", "Persian cat", "Siamese cat, Siamese",
                 "Egyptian cat"}  # ImageNet classes 281-285


@pytest.fixture
def cat_photo(tmp_path):
    """scikit-image's Chelsea, a real photo of a cat, as a PNG."""
    from PIL import Image
    from skimage import data

    path = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


def test_imagenet_model_from_the_empty_state_names_a_cat(qtbot, context, cat_photo,  # noqa: F811
                                                         bundle_file, fresh_predictor):  # noqa: F811
    from loupe.engine.inference.imagenet import imagenet_class_names

    assert set(imagenet_class_names()[281:286]) == IMAGENET_CATS
    page = PredictPage(context)
    qtbot.addWidget(page)
    page.resize(1200, 800)
    page.show()
    assert page.stack.currentWidget() is page.intro
    assert page.intro.try_button.isVisible() and page.model_label.text() == "No model loaded"
    page.intro.try_button.click()
    # The click only starts a worker: the GUI thread never loads the model itself.
    assert page.imagenet.loading and page.imagenet.predictor is None
    assert page.intro.status.text() == "Loading the ImageNet model…"
    qtbot.waitUntil(lambda: page.predictor() is not None, timeout=180_000)
    assert page.model_label.text() == (
        "ImageNet model: tf_efficientnet_lite0 (1000 classes, not trained on your images)")
    assert page.imagenet_button.isChecked() and not page.intro.try_button.isVisible()
    assert context.predictor is None  # the user's model slot is untouched

    with qtbot.waitSignal(page.predictionShown, timeout=60_000) as blocker:
        send_drop(page, [cat_photo])
    view = blocker.args[0]
    top5 = [label for label, _ in page.bars.rows()]
    assert len(top5) == 5 and IMAGENET_CATS & set(top5), top5
    assert view.result.prediction.top[0][0] in IMAGENET_CATS
    assert page.viewer.has_overlay() and page.stack.currentWidget() is page.viewer
    assert not np.array_equal(view.base, view.heat)  # the activation map coloured it

    # Loading a real model replaces it, as any load does; the image is asked again.
    with qtbot.waitSignal(page.predictionShown, timeout=60_000) as blocker:
        context.set_predictor(bundle_file, fresh_predictor)
    assert page.predictor() is fresh_predictor and not page.imagenet_button.isChecked()
    assert page.model_label.text() == "Model: tiny.loupe (2 classes)"
    assert sorted(label for label, _ in page.bars.rows()) == ["cat", "dog"]
    # ... and the toolbar button asks ImageNet again, at once (the model was kept).
    page.imagenet_button.click()
    assert page.predictor() is page.imagenet.predictor
    assert page.model_label.text().startswith("ImageNet model:")


def test_imagenet_model_unavailable_says_why_without_a_traceback(qtbot, context,  # noqa: F811
                                                                 monkeypatch):
    import loupe.engine.inference.imagenet
    from loupe.engine.core.errors import WeightsError

    def no_weights(*_a, **_k):
        raise WeightsError("no pretrained ImageNet weights for tf_efficientnet_lite0 on this "
                           "machine; the installed ones are listed by `loupe weights list`")

    monkeypatch.setattr(loupe.engine.inference.imagenet, "imagenet_predictor", no_weights)
    page = PredictPage(context)
    qtbot.addWidget(page)
    with qtbot.waitSignal(context.errorRaised, timeout=30_000) as blocker:
        page.intro.try_button.click()
    title, message = blocker.args
    assert title == "ImageNet model unavailable"
    assert message.startswith("The pretrained ImageNet model could not be loaded: no "
                              "pretrained ImageNet weights for tf_efficientnet_lite0")
    assert "Traceback" not in message and "WeightsError" not in message
    assert page.intro.status.text() == message and not page.intro.status.isHidden()
    assert page.predictor() is None and page.intro.try_button.isEnabled()
    assert page.model_label.text() == "No model loaded"
