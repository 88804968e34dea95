"""Results cosmetics: every image the Filters tab counts is on screen; no one-entry
drop-down pretending to be a choice."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication

from loupe.desktop.pages import results_page
from loupe.desktop.pages.results_filters import TOP_COUNT
from loupe.desktop.pages.results_page import ResultsPage
from tests.desktop.views_fixtures import (  # noqa: F401 - fixtures
    bundle_file,
    context,
    data_context,
    dataset_root,
    fresh_predictor,
    loaded_bundle,
    make_dataset,
    model_context,
)


def test_filters_tab_shows_every_image_it_counts_at_1200_by_800(
        qtbot, model_context, tmp_path):  # noqa: F811
    from loupe.engine.inference.activations import ChannelActivation

    root = make_dataset(tmp_path / "many", per_class=6)
    paths = sorted(root.rglob("*.png"))[:TOP_COUNT]
    page = ResultsPage(model_context)
    qtbot.addWidget(page)
    page.resize(1180, 690)  # what the page gets inside a 1200×800 window
    page.show()
    page.tabs.setCurrentWidget(page.filters)
    panel = page.filters
    found = [ChannelActivation(path, float(10 - i)) for i, path in enumerate(paths)]
    panel._on_found("layer4.1.conv2", 0, found)
    QApplication.processEvents()
    grid = panel.grid
    grid.doItemsLayout()
    assert f"The {TOP_COUNT} validation images" in panel.title.text()
    viewport = grid.viewport().rect()
    shown = [row for row in range(len(grid.items()))
             if viewport.contains(grid.visualRect(grid.grid_model.index(row)))]
    assert len(shown) == len(grid.items()) == TOP_COUNT  # none hidden below the fold


def test_the_embedding_method_is_a_drop_down_only_when_there_is_a_choice(
        qtbot, context, monkeypatch):  # noqa: F811
    page = ResultsPage(context)
    qtbot.addWidget(page)
    if page.embedding_combo.count() == 1:  # no scikit-learn: PCA only, said in words
        assert page.embedding_combo.isHidden() and not page.embedding_label.isHidden()
        assert "PCA" in page.embedding_label.text()
    monkeypatch.setattr(results_page, "_sklearn_available", lambda: True)
    with_tsne = ResultsPage(context)
    qtbot.addWidget(with_tsne)
    assert with_tsne.embedding_combo.count() == 2
    assert not with_tsne.embedding_combo.isHidden() and with_tsne.embedding_label.isHidden()
