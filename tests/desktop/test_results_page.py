"""Results page: analysis in a worker, confusion-cell clicks, overrides that never touch files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt

from loupe.desktop.pages.results_page import ResultsPage
from tests.desktop.views_fixtures import (  # noqa: F401 - fixtures
    bundle_file,
    context,
    data_context,
    dataset_root,
    fresh_predictor,
    loaded_bundle,
    model_context,
)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def analysed(qtbot, data_context):  # noqa: F811
    page = ResultsPage(data_context)
    qtbot.addWidget(page)
    page.resize(1000, 700)
    with qtbot.waitSignal(page.analysisReady, timeout=60_000) as blocker:
        page.analyse()
    return page, blocker.args[0]


def test_analysis_fills_every_view(analysed):
    page, data = analysed
    result = data.analysis
    assert result.count == len(page._context.prepared.plan.valid) == 6
    assert sum(map(sum, result.confusion.counts)) == 6
    assert page.per_class.table.rowCount() == 2
    assert {page.per_class.cell_text(r, 0) for r in range(2)} == {"cat", "dog"}
    assert len(page.loss_grid.items()) == len(result.top_losses) > 0
    assert all(o is not None for o in data.loss_overlays)
    assert data.filters is not None and data.filters.shape[-1] == 3
    assert page.embedding_canvas.figure.axes[0].collections  # the scatter was drawn


def expected_cell(ctx, actual: str, predicted: str) -> set:
    """The cell's images found independently: labelled ``actual``, predicted ``predicted``."""
    return {li.item.path for li in ctx.prepared.plan.valid
            if li.labels == (actual,) and ctx.predictor.predict(li.item.path).label == predicted}


def click_cell(qtbot, page, row: int, column: int) -> list:
    """A real mouse click on the matrix cell; returns the images the page shows for it."""
    page.tabs.setCurrentIndex(0)
    page.show()
    canvas = page.confusion_canvas
    canvas.draw()
    x, y = page.matrix_axes().transData.transform((column, row))
    ratio = canvas.devicePixelRatioF()
    point = QPoint(int(x / ratio), int(canvas.height() - y / ratio))
    with qtbot.waitSignal(page.cellShown, timeout=60_000) as blocker:
        qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=point)
    return blocker.args[0]


def test_clicking_a_confusion_cell_lists_its_images(qtbot, analysed):
    page, data = analysed
    confusion = data.analysis.confusion
    row, column = max(((i, j) for i in range(2) for j in range(2)),
                      key=lambda ij: confusion.counts[ij[0]][ij[1]])
    images = click_cell(qtbot, page, row, column)
    assert len(images) == confusion.counts[row][column] > 0
    classes = data.analysis.classes
    assert {im.actual for im in images} == {classes[row]}
    assert {im.prediction.top[0][0] for im in images} == {classes[column]}
    assert len(page.cell_grid.items()) == len(images)
    assert all(im.overlay.ndim == 3 for im in images)
    assert str(confusion.counts[row][column]) in page.cell_title.text()
    paths = [im.path for im in images]
    assert len(set(paths)) == len(paths)  # each image once
    assert set(paths) == expected_cell(page._context, classes[row], classes[column])
    assert {item.data for item in page.cell_grid.items()} == set(paths)


def test_a_clicked_cell_lists_its_own_images_while_the_maps_compute(qtbot, analysed):
    page, data = analysed
    runner = page._context.runner
    qtbot.waitUntil(lambda: not runner.is_running("cell-images", owner=page.confusion),
                    timeout=60_000)  # first cell
    shown = {Path(item.data) for item in page.cell_grid.items()}
    classes, counts = data.analysis.classes, data.analysis.confusion.counts
    row, column = next((i, j) for i in range(2) for j in range(2)
                       if counts[i][j] and expected_cell(page._context, classes[i],
                                                         classes[j]) != shown)
    expected = expected_cell(page._context, classes[row], classes[column])
    with qtbot.waitSignal(page.cellShown, timeout=60_000):
        page.show_cell(row, column)
        # Before the maps: already this cell's images, and the title says maps are coming
        # (the previous cell's images used to stay under the new title for seconds).
        assert {Path(item.data) for item in page.cell_grid.items()} == expected
        assert "computing" in page.cell_title.text()
    assert "computing" not in page.cell_title.text()
    assert {Path(item.data) for item in page.cell_grid.items()} == expected


def test_cell_lists_images_with_only_two_validation_images(
        qtbot, model_context, tmp_path):  # noqa: F811
    from loupe.engine.data.dataset import prepare_data
    from loupe.engine.data.labels import LabelRule
    from loupe.engine.data.project import Project
    from loupe.engine.data.splits import SplitRule
    from tests.desktop.views_fixtures import make_dataset

    root = make_dataset(tmp_path / "few", per_class=2)
    project = Project(root, label=LabelRule("parent"), split=SplitRule("random", 0.5))
    model_context.project = project
    model_context.set_prepared(prepare_data(project.data_spec()))
    assert len(model_context.prepared.plan.valid) == 2
    page = ResultsPage(model_context)
    qtbot.addWidget(page)
    page.resize(1000, 700)
    with qtbot.waitSignal(page.analysisReady, timeout=60_000) as blocker:
        page.analyse()
    result = blocker.args[0].analysis
    assert result.embedding is None  # no map from 2 images; the cell must list regardless
    classes, counts = result.classes, result.confusion.counts
    row, column = max(((i, j) for i in range(2) for j in range(2)),
                      key=lambda ij: counts[ij[0]][ij[1]])
    images = click_cell(qtbot, page, row, column)
    assert len(images) == counts[row][column] > 0
    assert {im.path for im in images} == expected_cell(model_context, classes[row],
                                                       classes[column])
    assert {im.actual for im in images} == {classes[row]}
    assert len(page.cell_grid.items()) == len(images)


def test_relabel_and_exclude_are_overrides_not_file_edits(qtbot, analysed):
    from loupe.engine.data.project import load_project

    page, data = analysed
    ctx = page._context
    first, second = (loss.path for loss in data.analysis.top_losses[:2])
    before = {p: digest(p) for p in (first, second)}
    other = next(c for c in data.analysis.classes if c != data.analysis.top_losses[0].actual)
    page.loss_grid.select_rows([0])
    page.relabel_combo.setCurrentText(other)
    with qtbot.waitSignal(page.overridesChanged):
        page.relabel_button.click()
    page.loss_grid.select_rows([1])
    with qtbot.waitSignal(page.overridesChanged):
        page.exclude_button.click()
    root = ctx.project.root
    rel_first = first.relative_to(root).as_posix()
    rel_second = second.relative_to(root).as_posix()
    ctx.flush_project()  # saves are written by a task: wait for them
    saved, warnings = load_project(root)
    assert not warnings
    assert saved.overrides.relabel == {rel_first: (other,)}
    assert saved.overrides.exclude == {rel_second}
    assert {p: digest(p) for p in (first, second)} == before
    assert "[excluded]" in page.loss_grid.items()[1].caption
    assert "2 correction(s)" in page.changes_label.text()
    # The note is a fourth caption line: the cell must be tall enough to show it, not "…".
    grid = page.loss_grid
    needed = grid.sizeHintForIndex(grid.grid_model.index(1)).height()
    assert needed <= grid.visualRect(grid.grid_model.index(1)).height() <= grid.gridSize().height()


def test_retrain_reapplies_labels_then_asks_for_training(qtbot, analysed):
    page, data = analysed
    ctx = page._context
    loss = data.analysis.top_losses[0]
    page.exclude([loss.path])
    old_prepared = ctx.prepared
    with qtbot.waitSignal(page.retrainRequested, timeout=30_000):
        page.retrain_button.click()
    assert ctx.prepared is not old_prepared
    used = [li.item.path for part in (ctx.prepared.plan.train, ctx.prepared.plan.valid)
            for li in part]
    assert loss.path not in used
    assert page.changes_label.text() == ""


def test_test_set_evaluation_counts_looks_and_warns(qtbot, data_context, messages):  # noqa: F811
    from loupe.engine.data.dataset import prepare_data
    from loupe.engine.data.splits import SplitRule

    project = data_context.project
    project.split = SplitRule("random", 0.34, test_fraction=0.34)
    data_context.set_prepared(prepare_data(project.data_spec()))
    page = ResultsPage(data_context)
    qtbot.addWidget(page)
    panel = page.test_panel
    qtbot.waitUntil(lambda: panel.looks() == 0, timeout=20_000)
    assert "has never been looked at" in panel.warning.text()
    with qtbot.waitSignal(panel.evaluated, timeout=60_000) as first:
        panel.button.click()
    assert first.args[0].test_looks == 1 and first.args[0].split == "test"
    assert "looked at once" in panel.warning.text()
    assert not [r for r in messages.records if r[0] == "question"]  # no question first time
    with qtbot.waitSignal(panel.evaluated, timeout=60_000) as second:
        panel.button.click()
    assert [r[0] for r in messages.records] == ["question"]  # asked before the second look
    assert second.args[0].test_looks == 2
    assert "2 times" in panel.warning.text() and "Warning" in panel.result_label.text()


def test_filters_tab_finds_the_images_a_channel_likes(qtbot, analysed):
    page, data = analysed
    panel = page.filters
    assert data.filters is not None and panel.canvas.figure.axes  # filters drawn
    names = [panel.layer_combo.itemData(i)[0] for i in range(panel.layer_combo.count())]
    assert "conv1" in names and len(names) == len(data.layers)
    panel.layer_combo.setCurrentIndex(names.index("conv1"))
    panel.channel_spin.setValue(3)
    with qtbot.waitSignal(panel.topFound, timeout=30_000) as blocker:
        panel.find_button.click()
    found = blocker.args[0]
    valid = {li.item.path for li in page._context.prepared.plan.valid}
    assert len(found) == len(valid) == len(panel.grid.items())
    assert {a.path for a in found} == valid
    scores = [a.score for a in found]
    assert scores == sorted(scores, reverse=True)


def test_confusion_cell_text_contrasts_with_its_cell(qtbot):
    # imshow scaled colours from the smallest count, so a cell just above half the peak
    # was drawn white and its (white) count was invisible.
    from matplotlib.colors import to_rgb

    from loupe.desktop.pages.results_plots import draw_confusion
    from loupe.desktop.widgets.mpl_canvas import MplCanvas
    from loupe.engine.evaluation.analysis import ConfusionData

    def luminance(rgb) -> float:
        r, g, b = to_rgb(rgb)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    canvas = MplCanvas()
    qtbot.addWidget(canvas)
    counts = [[32, 33], [21, 37]]
    ax = draw_confusion(canvas, ConfusionData(("animal", "food"), counts, [[0.5] * 2] * 2))
    image = ax.images[0]
    for text in ax.texts:
        col, row = (round(v) for v in text.get_position())
        cell = image.cmap(image.norm(counts[row][col]))
        assert abs(luminance(text.get_color()) - luminance(cell)) > 0.35, text.get_text()


def test_per_class_legend_does_not_cover_the_bars(qtbot):
    from loupe.desktop.pages.results_tables import _draw_prf
    from loupe.desktop.widgets.mpl_canvas import MplCanvas

    canvas = MplCanvas()
    qtbot.addWidget(canvas)
    canvas.resize(700, 400)
    rows = [{"class": name, "precision": 0.9, "recall": 0.95, "f1": 0.92}
            for name in ("animal", "food")]
    _draw_prf(canvas, rows)
    canvas.draw()
    renderer = canvas.figure.canvas.get_renderer()
    ax = canvas.figure.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    for bar in ax.patches:
        assert not legend.overlaps(bar.get_window_extent(renderer))
