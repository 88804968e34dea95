"""One image viewer everywhere: grids, confusion cells, embedding points, the data table,
recent predictions; its Relabel / Exclude / Undo are the project's overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from loupe.desktop.pages.image_preview import preview_for
from loupe.desktop.pages.results_page import ResultsPage
from tests.desktop.views_fixtures import (  # noqa: F401 - fixtures
    bundle_file,
    context,
    data_context,
    dataset_root,
    fresh_predictor,
    loaded_bundle,
    make_image,
    model_context,
)


@pytest.fixture
def analysed(qtbot, data_context):  # noqa: F811
    page = ResultsPage(data_context)
    qtbot.addWidget(page)
    page.resize(1100, 750)
    page.show()
    with qtbot.waitSignal(page.analysisReady, timeout=60_000) as blocker:
        page.analyse()
    qtbot.waitUntil(lambda: not page._context.runner.is_running(
        "cell-images", owner=page.confusion), timeout=60_000)
    return page, blocker.args[0]


def grid_point(grid, row: int) -> QPoint:
    return grid.visualRect(grid.grid_model.index(row)).center()


def double_click(qtbot, widget, pos: QPoint) -> None:
    """A user's double-click: a click, then the double-click (QTest's mouseDClick alone
    sends no first press, which item views need to know which item is clicked)."""
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseDClick(widget, Qt.MouseButton.LeftButton, pos=pos)


def test_double_click_on_a_top_loss_opens_the_viewer_with_its_facts_and_map(qtbot, analysed):
    page, data = analysed
    page.tabs.setCurrentIndex(1)
    grid = page.loss_grid
    loss = data.analysis.top_losses[1]
    preview = preview_for(page._context, page)
    with qtbot.waitSignal(preview.shown, timeout=60_000) as blocker:
        double_click(qtbot, grid.viewport(), grid_point(grid, 1))
    viewer = preview.viewer
    assert viewer.isVisible()
    assert viewer.path_label.text() == str(loss.path)
    assert viewer.title.text() == loss.path.name
    assert f"Actual: {loss.actual}" in viewer.label_label.text()
    # The prediction is the model's own, computed in the worker.
    expected = page._context.predictor.predict(loss.path)
    assert viewer.prediction_label.text().startswith(f"Prediction: {expected.label}")
    content = blocker.args[0]
    assert content.view is not None and content.view.source == loss.path
    cam = viewer.cam
    assert cam.has_overlay() and cam.map_shown()
    assert not np.array_equal(cam.displayed_array(), content.base)
    cam.map_check.setChecked(False)  # the map toggle: the plain picture, no recomputation
    assert np.array_equal(cam.displayed_array(), content.base)
    cam.map_check.setChecked(True)
    other = next(c for c in data.analysis.classes if c != content.view.result.label)
    with qtbot.waitSignal(preview.shown, timeout=60_000) as again:
        cam.set_target(other)  # the map for another class: computed again, in a worker
    assert again.args[0].view.result.label == other and cam.target() == other
    assert viewer.position.text() == f"2 / {len(grid.items())}"


def test_viewer_corrections_are_the_project_overrides_and_undo_restores(qtbot, analysed):
    page, data = analysed
    ctx = page._context
    grid = page.loss_grid
    loss = data.analysis.top_losses[0]
    rel = loss.path.relative_to(ctx.project.root).as_posix()
    preview = preview_for(ctx, page)
    grid.select_rows([0])
    with qtbot.waitSignal(preview.shown, timeout=60_000):
        qtbot.keyClick(grid, Qt.Key.Key_Space)  # Space opens it as a double-click does
    viewer = preview.viewer
    assert not viewer.undo_button.isEnabled()
    other = next(c for c in data.analysis.classes if c != loss.actual)
    viewer.relabel_combo.setCurrentText(other)
    with qtbot.waitSignal(page.overridesChanged):
        viewer.relabel_button.click()
    assert ctx.project.overrides.relabel == {rel: (other,)}
    assert f"[→ {other}]" in grid.items()[0].caption  # the grid's note, same mechanism
    assert "Relabelled as" in viewer.override_label.text()
    with qtbot.waitSignal(page.overridesChanged):
        viewer.exclude_button.click()
    assert ctx.project.overrides.exclude == {rel} and not ctx.project.overrides.relabel
    assert viewer.exclude_button.text() == "Include again"
    assert "1 correction(s)" in page.changes_label.text()  # one image, not two clicks
    with qtbot.waitSignal(page.overridesChanged):
        viewer.undo_button.click()  # back to the relabel
    assert ctx.project.overrides.relabel == {rel: (other,)} and not ctx.project.overrides.exclude
    with qtbot.waitSignal(page.overridesChanged):
        viewer.undo_button.click()  # back to no override at all
    assert not ctx.project.overrides.relabel and not ctx.project.overrides.exclude
    assert not viewer.undo_button.isEnabled()
    assert page.changes_label.text() == ""


def test_viewer_walks_the_grid_with_the_arrow_keys(qtbot, analysed):
    page, _ = analysed
    grid = page.loss_grid
    assert len(grid.items()) >= 2
    preview = preview_for(page._context, page)
    with qtbot.waitSignal(preview.shown, timeout=60_000):
        grid.itemActivated.emit(grid.items()[0])
    with qtbot.waitSignal(preview.shown, timeout=60_000):
        qtbot.keyClick(preview.viewer, Qt.Key.Key_Right)
    assert preview.viewer.path_label.text() == str(grid.items()[1].data)
    qtbot.keyClick(preview.viewer, Qt.Key.Key_Space)  # Space closes it again
    assert not preview.viewer.isVisible()


def test_the_clicked_confusion_cell_is_outlined(qtbot, analysed):
    page, data = analysed
    panel = page.confusion
    counts = data.analysis.confusion.counts
    row, column = next((i, j) for i in range(2) for j in range(2)
                       if counts[i][j] and (i, j) != panel.highlighted_cell())
    with qtbot.waitSignal(page.cellShown, timeout=60_000):
        page.show_cell(row, column)
    assert panel.highlighted_cell() == (row, column)
    marker = panel.marker()
    assert marker in page.matrix_axes().patches
    assert marker.get_xy() == (column - 0.5, row - 0.5)
    assert (marker.get_width(), marker.get_height()) == (1.0, 1.0)
    panel.normalize_check.setChecked(True)  # redrawn matrix: the outline stays
    assert panel.marker() in page.matrix_axes().patches
    assert panel.highlighted_cell() == (row, column)


def test_embedding_points_show_their_image_on_hover_and_open_on_click(qtbot, analysed):
    page, data = analysed
    page.tabs.setCurrentWidget(page.embedding)
    panel = page.embedding
    canvas = panel.canvas
    canvas.draw()
    embedding = data.analysis.embedding
    index = len(embedding.paths) - 1
    x, y = panel.point_position(index)
    ratio = canvas.devicePixelRatioF()
    point = QPoint(int(x / ratio), int(canvas.height() - y / ratio))
    with qtbot.waitSignal(panel.insetShown, timeout=30_000) as hover:
        qtbot.mouseMove(canvas, point)
    assert hover.args == [index] and panel.inset_shown()
    assert Path(embedding.paths[index]).name in canvas.toolTip()
    preview = preview_for(page._context, page)
    with qtbot.waitSignal(preview.shown, timeout=60_000):
        qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=point)
    assert preview.viewer.path_label.text() == str(embedding.paths[index])
    away = QPoint(2, 2)  # outside the axes: the inset goes
    qtbot.mouseMove(canvas, away)
    qtbot.waitUntil(lambda: not panel.inset_shown(), timeout=5_000)


def test_data_table_has_a_preview_and_a_menu_that_excludes_and_includes(
        qtbot, data_context):  # noqa: F811
    from loupe.desktop.pages.data_page import DataPage

    ctx = data_context
    page = DataPage(ctx)
    qtbot.addWidget(page)
    page.resize(1100, 700)
    page.show()
    ctx.dataChanged.emit()
    table, proxy, model = page.preview_table, page.preview_proxy, page.preview_model
    assert proxy.rowCount() == 12
    preview = preview_for(ctx, page)
    # Double-click a row: the viewer shows that file (no model needed for the picture).
    index = proxy.index(3, 0)
    with qtbot.waitSignal(preview.shown, timeout=60_000):
        double_click(qtbot, table.viewport(), table.visualRect(index).center())
    rel = proxy.index(3, 0).data()
    path = ctx.project.root / rel
    assert preview.viewer.path_label.text() == str(path)
    preview.viewer.close()
    table.setCurrentIndex(proxy.index(5, 0))
    with qtbot.waitSignal(preview.shown, timeout=60_000):
        qtbot.keyClick(table, Qt.Key.Key_Space)
    assert preview.viewer.path_label.text() == str(ctx.project.root / proxy.index(5, 0).data())
    # The context menu: exclude, then the row says so and offers "Include again".
    table.selectRow(3)
    menu = page.image_actions.build_menu(page.image_actions.selected_paths(), 3)
    actions = {a.text(): a for a in menu.actions()}
    assert {"Open (Space)", "Relabel as", "Exclude from training"} <= set(actions)
    assert "Include again (clear the override)" not in actions
    with qtbot.waitSignal(ctx.dataChanged, timeout=30_000):
        actions["Exclude from training"].trigger()
    assert ctx.project.overrides.exclude == {rel}

    def row_of(rel_name: str) -> int:
        return next(r for r in range(model.rowCount()) if model.row_values(r)[0] == rel_name)

    assert model.row_values(row_of(rel))[2] == "excluded (project override)"
    assert model.is_excluded(row_of(rel))
    proxy_row = proxy.mapFromSource(model.index(row_of(rel), 0)).row()
    table.selectRow(proxy_row)
    menu = page.image_actions.build_menu(page.image_actions.selected_paths(), proxy_row)
    actions = {a.text(): a for a in menu.actions()}
    assert "Exclude from training" not in actions
    with qtbot.waitSignal(ctx.dataChanged, timeout=30_000):
        actions["Include again (clear the override)"].trigger()  # undone from the Data tab
    assert not ctx.project.overrides.exclude
    assert model.row_values(row_of(rel))[2] in ("train", "valid")


def test_recent_predictions_show_on_one_click_and_open_on_double_click(
        qtbot, model_context, tmp_path):  # noqa: F811
    from loupe.desktop.pages.predict_page import PredictPage

    page = PredictPage(model_context)
    qtbot.addWidget(page)
    page.resize(1000, 650)
    page.show()
    images = [make_image(tmp_path / f"p{i}.png", (40 * i, 90, 160), seed=i) for i in range(2)]
    for image in images:
        with qtbot.waitSignal(page.predictionShown, timeout=30_000):
            page.predict_paths([image])
    grid = page.history
    assert page.current_view().source == images[1]
    older = next(i for i, item in enumerate(grid.items()) if item.data.source == images[0])
    with qtbot.waitSignal(page.predictionShown, timeout=5_000):
        qtbot.mouseClick(grid.viewport(), Qt.MouseButton.LeftButton,
                         pos=grid_point(grid, older))
    assert page.current_view().source == images[0]
    preview = preview_for(model_context, page)
    with qtbot.waitSignal(preview.shown, timeout=30_000) as blocker:
        double_click(qtbot, grid.viewport(), grid_point(grid, older))
    assert blocker.args[0].view is grid.items()[older].data  # no second computation
    assert preview.viewer.path_label.text() == str(images[0])
    # Not in a project folder: nothing to correct, and the viewer says why.
    assert not preview.viewer.exclude_button.isEnabled()
    assert preview.viewer.correction_hint.text()
