"""Render every page of Loupe to docs/screenshots/*.png, headless (``make screenshots``).

It runs the real workflow on the bundled sample: ask the pretrained ImageNet model about
a photo of a cat (lesson 1's first moment, before any training), open the sample, find a
learning rate, fine-tune the installed pretrained EfficientNet-Lite0, then predict one
image, grabbing each page with ``QWidget.grab()`` along the way; then restart the window
and grab the Predict page of the reopened project, its model restored. The image viewer
(a top loss opened as a double-click does) is grabbed as its own window, and the
embedding map with a hovered point's picture. Loupe's data goes to a temporary
LOUPE_HOME unless ``--home`` says otherwise, so the user's runs are untouched.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py [--epochs N]
    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py --only predict-imagenet
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def wait_until(app, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Process events until ``predicate()`` holds; fail loudly after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def settle(app, window, seconds: float = 0.6, *, idle: bool = True) -> None:
    """Let tasks (unless ``idle`` is False), thumbnail loads and redraws finish."""
    runner = window.context.runner
    if idle:
        wait_until(app, lambda: not runner.active(), 600, "background work")
    wait_until(app, lambda: not any(t.kind == "thumbnails" for t in runner.active()), 30,
               "thumbnails")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def shoot(app, window, out: Path, name: str, *, idle: bool = True) -> Path:
    settle(app, window, idle=idle)
    path = out / f"{name}.png"
    if not window.grab().save(str(path)):
        raise SystemExit(f"screenshots: could not write {path}")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


def shoot_imagenet(app, window, out: Path) -> None:
    """The Predict page answering with the pretrained ImageNet model (scikit-image's cat
    photo, a dev dependency), before any model is trained."""
    from PIL import Image
    from skimage import data

    page = window.predict_page
    folder = Path(tempfile.gettempdir()) / "loupe-screenshots"  # a path that reads well
    folder.mkdir(exist_ok=True)
    photo = folder / "chelsea.png"
    Image.fromarray(data.chelsea()).save(photo)
    try:
        window.tabs.setCurrentWidget(page)
        page.use_imagenet()
        wait_until(app, lambda: page.predictor() is not None or page.imagenet.error, 300,
                   "the ImageNet model")
        if page.imagenet.error:
            raise SystemExit(f"screenshots: {page.imagenet.error}")
        page.predict_paths([photo])
        wait_until(app, lambda: page.current_view() is not None, 300, "the ImageNet answer")
        shoot(app, window, out, "predict-imagenet")
    finally:
        photo.unlink(missing_ok=True)
    page.use_imagenet(False)


def shoot_widget(app, window, widget, out: Path, name: str) -> Path:
    """Grab a window of its own (the image viewer), after the same settling."""
    settle(app, window)
    path = out / f"{name}.png"
    if not widget.grab().save(str(path)):
        raise SystemExit(f"screenshots: could not write {path}")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


def hover_embedding_point(app, window, results) -> None:
    """Hover a misclassified point (or the first) so its picture shows beside it."""
    panel = results.embedding
    embedding = panel.embedding()
    if embedding is None:
        return
    wrong = [i for i, (a, p) in enumerate(zip(embedding.actual, embedding.predicted,
                                              strict=True)) if a != p]
    settle(app, window)
    panel.canvas.draw()
    panel._hover(wrong[0] if wrong else 0)
    wait_until(app, panel.inset_shown, 30, "the embedding point's picture")


def shoot_viewer(app, window, out: Path) -> None:
    """The image viewer on the worst top loss: facts, map with its legend, corrections."""
    from loupe.desktop.pages.image_preview import preview_for

    results = window.results_page
    window.tabs.setCurrentWidget(results)
    results.tabs.setCurrentIndex(1)
    grid = results.loss_grid
    if not grid.items():
        raise SystemExit("screenshots: no top losses to open in the viewer")
    preview = preview_for(window.context, results)
    shown: list = []
    preview.shown.connect(shown.append)
    results.open_image(grid, grid.items()[0])
    wait_until(app, lambda: bool(shown), 120, "the image viewer")
    preview.viewer.resize(960, 800)
    shoot_widget(app, window, preview.viewer, out, "viewer")
    preview.viewer.close()


def run(out: Path, epochs: int, size: int, only: str = "") -> None:
    from loupe.desktop.app import create_application
    from loupe.desktop.context import AppContext
    from loupe.desktop.main_window import MainWindow
    from loupe.engine.core.resources import sample_dir

    app = create_application([sys.argv[0]])
    context = AppContext()
    window = MainWindow(context)
    window.resize(1280, 820)
    window.show()
    window.after_first_paint()
    ctx_errors: list[str] = []
    context.errorRaised.connect(lambda title, text: ctx_errors.append(f"{title}: {text}"))
    wait_until(app, lambda: context.engine_ready, 300, "the engine to load")
    shoot_imagenet(app, window, out)
    if only == "predict-imagenet":
        window.close()
        context.runner.shutdown()
        return

    context.open_sample()
    wait_until(app, lambda: context.prepared is not None, 120, "the sample to load")
    window.tabs.setCurrentWidget(window.start_page)
    shoot(app, window, out, "start")

    page = window.data_page
    window.tabs.setCurrentWidget(page)
    for index, name in enumerate(("data-labels", "data-counts", "data-samples")):
        page.views.setCurrentIndex(index)
        shoot(app, window, out, name)
    page.views.setCurrentIndex(0)
    # The live preview with a rule that leaves files unmatched (highlighted), then back.
    lesson1 = context.project.label
    page.label_editor.kind.setCurrentIndex(page.label_editor.kind.findData("regex"))
    page.label_editor.pattern.setText(r"^([a-c])")
    page.apply_rules()
    settle(app, window)
    shoot(app, window, out, "data-preview-unmatched")
    page.label_editor.set_rule(lesson1)
    page.apply_rules()
    wait_until(app, lambda: context.prepared is not None
               and context.prepared.spec.label == lesson1, 60, "the lesson-1 rule again")

    train = window.train_page
    window.tabs.setCurrentWidget(train)
    settle(app, window)
    # What a newcomer gets: the installed pretrained EfficientNet-Lite0, fine-tuned (one
    # frozen epoch, then ``epochs``) at the engine's default learning rate.
    train.settings.arch.setCurrentIndex(train.settings.arch.findData("tf_efficientnet_lite0"))
    train.settings.size.setValue(size)
    train.settings.epochs.setValue(epochs)
    train.settings.pretrained.setCurrentIndex(train.settings.pretrained.findData("auto"))
    train.find_lr()
    settle(app, window)
    shoot(app, window, out, "train-lr-find")
    train.plots.setCurrentWidget(train.curves)
    worker = train.start_training()
    if worker is None:
        raise SystemExit(f"screenshots: training did not start: {ctx_errors}")
    wait_until(app, lambda: train.table.row_count() >= 1, 600, "the first epoch")
    shoot(app, window, out, "train-running", idle=False)
    wait_until(app, lambda: not worker.state.active, 1800, "training to finish")
    if worker.state.value != "finished":
        raise SystemExit(f"screenshots: training {worker.state.value}: {ctx_errors}")
    wait_until(app, lambda: context.predictor is not None, 120, "the model to load")
    window.tabs.setCurrentWidget(train)
    shoot(app, window, out, "train")

    results = window.results_page
    window.tabs.setCurrentWidget(results)  # showing it starts the validation analysis
    settle(app, window, 1.0)
    for index in range(results.tabs.count()):
        results.tabs.setCurrentIndex(index)
        label = results.tabs.tabText(index).lower().replace(" ", "-")
        if results.tabs.currentWidget() is results.embedding:
            hover_embedding_point(app, window, results)
        shoot(app, window, out, f"results-{label}")
    shoot_viewer(app, window, out)

    window.tabs.setCurrentWidget(window.predict_page)
    image = sorted(sample_dir().glob("*.png"))[0]
    window.predict_page.predict_paths([image])
    shoot(app, window, out, "predict")

    window.tabs.setCurrentWidget(window.models_page)
    shoot(app, window, out, "models")

    # A restart: the same project reopens with its model, no visit to the Models page.
    window.tabs.setCurrentWidget(window.predict_page)
    window.close()
    context.runner.shutdown()
    context = AppContext()
    window = MainWindow(context)
    window.resize(1280, 820)
    window.show()
    window.after_first_paint()
    context.errorRaised.connect(lambda title, text: ctx_errors.append(f"{title}: {text}"))
    wait_until(app, lambda: context.predictor is not None, 300, "the project's model to return")
    window.tabs.setCurrentWidget(window.predict_page)
    window.predict_page.predict_paths([image])
    shoot(app, window, out, "predict-restored")
    page = window.data_page
    wait_until(app, lambda: context.prepared is not None, 120, "the sample to load again")

    from loupe.desktop.theme import dark_palette

    app.setPalette(dark_palette())
    window.tabs.setCurrentWidget(window.data_page)
    page.views.setCurrentIndex(1)
    page.chart.show_counts(context.prepared.plan.counts)
    shoot(app, window, out, "data-dark")
    if ctx_errors:
        print("errors shown during the run:\n  " + "\n  ".join(ctx_errors))
    window.close()
    context.runner.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--home", type=Path, help="LOUPE_HOME to use (default: a temp dir)")
    parser.add_argument("--only", choices=("predict-imagenet",), default="",
                        help="render only this screenshot (no training)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="loupe-shots-") as tmp:
        home = args.home or Path(tmp)
        os.environ["LOUPE_HOME"] = str(home)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        run(args.out, args.epochs, args.size, args.only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
