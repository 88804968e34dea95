"""The reusable widgets: epoch table, plot canvas, thumbnail grid, CAM viewer, bars, drops."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QFontMetrics, QPalette
from PySide6.QtWidgets import QApplication

from loupe.desktop.widgets import image_grid
from loupe.desktop.widgets.cam_viewer import CamViewer, blend, display_layers
from loupe.desktop.widgets.drop_zone import DropZone
from loupe.desktop.widgets.epoch_table import EpochTable, format_seconds
from loupe.desktop.widgets.image_grid import GridItem, ImageGrid
from loupe.desktop.widgets.mpl_canvas import MplCanvas
from loupe.desktop.widgets.topk_bars import TopKBars
from loupe.engine.core.events import EpochEnded
from tests.desktop.views_fixtures import make_image


def send_drop(widget, paths: list[Path]) -> QDropEvent:
    """A real drag-enter + drop carrying file URLs, delivered with sendEvent."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime,
                      Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return drop


def test_epoch_table_rows_columns_and_time(qtbot):
    table = EpochTable()
    qtbot.addWidget(table)
    table.add_epoch_event(EpochEnded(0, 2, "frozen", {
        "train_loss": 0.5, "valid_loss": 0.25, "error_rate": 0.125, "seconds": 65.2,
        "batch_size": 32.0, "size": 64.0}))
    table.add_epoch_event(EpochEnded(1.0, 2, "unfrozen", {
        "train_loss": 0.3, "valid_loss": 0.2, "error_rate": 0.0625, "accuracy": 0.9375,
        "seconds": 4}))
    model = table.table_model
    assert table.row_count() == 2
    assert model.columns() == ["epoch", "phase", "train_loss", "valid_loss", "error_rate",
                               "accuracy", "time"]
    assert [model.cell_text(0, c) for c in range(model.columnCount())] == [
        "0", "frozen", "0.500000", "0.250000", "0.125000", "", "01:05"]
    assert model.cell_text(1, 5) == "0.937500" and model.cell_text(1, 0) == "1"
    assert format_seconds(3725) == "1:02:05"
    table.set_history([{"epoch": 0, "train_loss": 1.0, "valid_loss": 0.9, "error_rate": 0.5}])
    assert table.row_count() == 1 and model.columns()[1] == "train_loss"


def test_mpl_canvas_follows_palette_and_draws(qtbot):
    canvas = MplCanvas()
    qtbot.addWidget(canvas)
    ax = canvas.axes()
    ax.plot([0, 1, 2], [2, 1, 0])
    canvas.resize(320, 200)
    canvas.draw()
    window = QApplication.palette().color(QPalette.ColorRole.Window)
    r, g, b, _a = canvas.figure.get_facecolor()
    assert (round(r * 255), round(g * 255), round(b * 255)) == (
        window.red(), window.green(), window.blue())
    assert len(canvas.figure.axes) == 1 and ax.lines


def test_image_grid_decodes_off_the_ui_thread(qtbot, runner, tmp_path, monkeypatch):
    paths = [make_image(tmp_path / f"img{i}.png", (10 * i, 100, 50), seed=i) for i in range(3)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    threads: list[str] = []
    real = image_grid.load_thumbnail

    def spy(item, size):
        threads.append(threading.current_thread().name)
        return real(item, size)

    monkeypatch.setattr(image_grid, "load_thumbnail", spy)
    grid = ImageGrid(runner=runner, thumb_size=32)
    qtbot.addWidget(grid)
    items = [GridItem(path=p, caption=p.name, data=i) for i, p in enumerate(paths)]
    items.append(GridItem(path=broken, caption="broken"))
    items.append(GridItem(image=np.full((20, 40, 3), 255, np.uint8), caption="array"))
    with qtbot.waitSignal(grid.grid_model.idle, timeout=10_000):
        grid.set_items(items)
    model = grid.grid_model
    assert threads and threading.main_thread().name not in threads
    for row in (0, 1, 2, 4):
        pixmap = model.thumbnail(row)
        assert pixmap is not None and max(pixmap.width(), pixmap.height()) == 32
    assert model.thumbnail(3) is None and "broken.png" in model.error(3)
    assert model.data(model.index(0), Qt.ItemDataRole.DisplayRole) == "img0.png"


def test_new_items_drop_the_old_items_thumbnails(qtbot, runner, monkeypatch):
    release = threading.Event()
    real = image_grid.load_thumbnail

    def slow_for_old(item, size):
        if item.caption == "old":
            release.wait(10)
        return real(item, size)

    monkeypatch.setattr(image_grid, "load_thumbnail", slow_for_old)
    grid = ImageGrid(runner=runner, thumb_size=16)
    qtbot.addWidget(grid)
    model = grid.grid_model
    grid.set_items([GridItem(image=np.zeros((8, 8, 3), np.uint8), caption="old")])
    qtbot.waitUntil(lambda: runner.is_running("thumbnails", owner=model), timeout=5_000)
    with qtbot.waitSignal(model.idle, timeout=10_000):
        grid.set_items([GridItem(image=np.full((8, 8, 3), 255, np.uint8), caption="new")])
    release.set()  # the old decode ends now; its black thumbnail must not reach row 0
    qtbot.waitUntil(lambda: not runner.active(), timeout=10_000)
    assert model.thumbnail(0).toImage().pixelColor(8, 8).getRgb()[:3] == (255, 255, 255)


def test_image_grid_cells_do_not_take_the_first_thumbnails_shape(qtbot, runner):
    # A wide first image used to fix every cell's size (uniform item sizes): tall
    # thumbnails were then cut in half and captions drawn over the images.
    grid = ImageGrid(runner=runner, thumb_size=48)
    qtbot.addWidget(grid)
    grid.resize(600, 300)
    grid.show()
    wide = GridItem(image=np.full((8, 40, 3), 50, np.uint8), caption="wide")
    tall = [GridItem(image=np.full((40, 12, 3), 200, np.uint8), caption="tall") for _ in range(3)]
    with qtbot.waitSignal(grid.grid_model.idle, timeout=10_000):
        grid.set_items([wide, *tall])
    grid.doItemsLayout()
    for row in range(4):
        assert grid.grid_model.thumbnail(row).size().toTuple() == (48, 48)
        rect = grid.visualRect(grid.grid_model.index(row))
        assert rect.width() >= 48 and rect.height() >= 48


def test_image_grid_selection_and_context_menu(qtbot, runner, tmp_path):
    paths = [make_image(tmp_path / f"s{i}.png", (0, 0, 200), seed=i) for i in range(3)]
    grid = ImageGrid(runner=runner, thumb_size=24)
    qtbot.addWidget(grid)
    grid.set_items([GridItem(path=p, caption=p.name, data=p) for p in paths])
    seen: list[list[Path]] = []
    grid.set_menu_builder(lambda menu, items: (
        seen.append([i.data for i in items]), menu.addAction("Exclude")))
    with qtbot.waitSignal(grid.itemsSelected) as blocker:
        grid.select_rows([0, 2])
    assert [i.data for i in blocker.args[0]] == [paths[0], paths[2]]
    menu = grid.build_menu(grid.selected_items())
    assert [a.text() for a in menu.actions()] == ["Exclude"]
    assert seen == [[paths[0], paths[2]]]


def test_cam_viewer_reblends_without_new_layers(qtbot):
    viewer = CamViewer(opacity=0.0)
    qtbot.addWidget(viewer)
    base, heat = display_layers(np.zeros((30, 50, 3), np.uint8),
                                np.full((15, 25, 3), 200, np.uint8))
    assert heat.shape == base.shape == (30, 50, 3)
    viewer.set_layers(base, heat, "cat")
    assert viewer.has_overlay()
    assert viewer.displayed_array().max() == 0
    before = viewer.blend_count
    viewer.opacity_slider.setValue(50)
    shown = viewer.displayed_array()
    assert viewer.blend_count == before + 1
    assert np.array_equal(shown, blend(base, heat, 0.5)) and shown[0, 0, 0] == 100
    assert viewer.view.image().width() == 50


def test_cam_viewer_controls_emit_requests(qtbot):
    viewer = CamViewer()
    qtbot.addWidget(viewer)
    viewer.set_methods([("gradcam", "Grad-CAM"), ("layercam", "Layer-CAM")], "gradcam")
    viewer.set_classes(["cat", "dog"])
    assert viewer.target() is None
    with qtbot.waitSignal(viewer.methodChanged) as method:
        viewer.set_method("layercam")
    assert method.args == ["layercam"] and viewer.method() == "layercam"
    with qtbot.waitSignal(viewer.targetChanged) as target:
        viewer.set_target("dog")
    assert target.args == ["dog"]


def test_topk_bars_show_rows_and_unknown(qtbot):
    bars = TopKBars()
    qtbot.addWidget(bars)
    bars.set_predictions([("cat", 0.55), ("dog", 0.45)], unknown=True, threshold=0.6)
    assert bars.rows() == [("cat", 0.55), ("dog", 0.45)]
    assert bars.headline().startswith("Unknown (below 60%): best guess cat")
    bars.resize(300, 120)
    assert not bars.grab().isNull()
    # A narrow panel: the painted headline is elided to fit (it was cut off mid-word),
    # still says "Unknown", and the whole text is the tooltip.
    bars.resize(200, 120)
    bold = bars.font()
    bold.setBold(True)
    shown = bars.shown_headline()
    assert QFontMetrics(bold).horizontalAdvance(shown) <= 200
    assert shown.startswith("Unknown") and shown != bars.headline()
    assert bars.toolTip() == bars.headline()
    bars.set_predictions([("dog", 0.9)])
    assert bars.headline() == "dog  90.0%"


def test_drop_zone_sorts_a_real_drop(qtbot, tmp_path):
    zone = DropZone()
    qtbot.addWidget(zone)
    image = make_image(tmp_path / "a.png", (1, 2, 3), seed=1)
    model = tmp_path / "m.loupe"
    model.write_bytes(b"x")
    with qtbot.waitSignal(zone.dropped) as blocker:
        send_drop(zone, [image])
    assert blocker.args[0].images == (image,)
    with qtbot.waitSignal(zone.dropped) as blocker:
        send_drop(zone, [model, image])
    assert blocker.args[0].model == model


def test_mpl_canvas_recolours_on_a_palette_switch(qtbot):
    from loupe.desktop.theme import dark_palette

    light = QApplication.palette()
    canvas = MplCanvas()
    qtbot.addWidget(canvas)
    ax = canvas.axes()
    light_face = tuple(round(c * 255) for c in canvas.figure.get_facecolor()[:3])
    dark = dark_palette()
    QApplication.setPalette(dark)
    try:
        qtbot.waitUntil(lambda: tuple(
            round(c * 255) for c in canvas.figure.get_facecolor()[:3]) != light_face)
        window = dark.color(QPalette.ColorRole.Window)
        r, g, b, _a = canvas.figure.get_facecolor()
        assert (round(r * 255), round(g * 255), round(b * 255)) == (
            window.red(), window.green(), window.blue())
        text = dark.color(QPalette.ColorRole.WindowText).name()
        assert ax.xaxis.label.get_color() == text
    finally:
        QApplication.setPalette(light)


def test_hidden_mpl_canvas_renders_only_when_painted(qtbot, monkeypatch):
    """A plot in a hidden tab costs nothing until it is shown (or grabbed)."""
    canvas = MplCanvas()
    qtbot.addWidget(canvas)
    canvas.resize(320, 200)
    renders = []
    original = MplCanvas.draw
    monkeypatch.setattr(MplCanvas, "draw", lambda self: (renders.append(1), original(self)))
    canvas.axes().plot([0, 1], [1, 0])
    canvas.redraw()
    qtbot.wait(50)
    assert renders == []
    canvas.grab()  # painting a stale canvas renders it first
    assert len(renders) == 1
    canvas.show()
    qtbot.waitExposed(canvas)
    canvas.redraw()
    qtbot.waitUntil(lambda: len(renders) >= 2)


def test_live_chart_legend_avoids_the_lines(qtbot):
    from loupe.desktop.pages.live_chart import LiveChart, Series

    chart = LiveChart("loss")
    qtbot.addWidget(chart)
    chart.resize(400, 300)
    rising = chart.add_series(Series("train", "#1f77b4"))
    flat = chart.add_series(Series("valid", "#ff7f0e"))
    for x in range(1, 9):
        rising.add(x, x * x)  # ends in the top right, where the legend used to sit
        flat.add(x, 30.0)
    box = chart.legend_rect()
    plot, bounds = chart.plot_rect(), chart._bounds()
    points = [chart._map(plot, bounds, x, y) for s in (rising, flat)
              for x, y in zip(s.xs, s.ys, strict=True)]
    assert box is not None and not any(box.contains(p) for p in points)
    assert not chart.grab().isNull()


def test_epoch_table_widens_a_column_for_a_longer_row(qtbot):
    """ResizeToContents does not re-measure when a row is appended to a shown table: the
    fine-tune's "unfrozen" under "frozen" was cut to "unfro…"."""
    from PySide6.QtWidgets import QApplication

    table = EpochTable()
    qtbot.addWidget(table)
    table.resize(600, 300)
    table.show()
    table.add_epoch(1, {"train_loss": 0.1, "valid_loss": 0.2, "seconds": 3}, "frozen")
    QApplication.processEvents()
    table.add_epoch(2, {"train_loss": 0.1, "valid_loss": 0.2, "seconds": 3}, "unfrozen")
    QApplication.processEvents()
    assert table.columnWidth(1) >= table.sizeHintForColumn(1)
