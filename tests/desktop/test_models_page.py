"""Models page: the runs list with curves and comparison, saving, loading, ONNX export."""

from __future__ import annotations

from pathlib import Path

import pytest

from loupe.desktop.pages import models_page
from loupe.desktop.pages.models_page import ModelsPage
from tests.desktop.views_fixtures import (  # noqa: F401 - fixtures
    bundle_file,
    context,
    fresh_predictor,
    loaded_bundle,
    model_context,
)


def make_run(arch: str, errors: list[float], bundle=None):
    """A run folder written with the same engine calls a training session uses."""
    from loupe.engine.training import runs
    from loupe.engine.training.config import TrainConfig

    run_dir = runs.new_run_dir(arch)
    runs.write_json(run_dir, "config.json", TrainConfig(arch=arch, epochs=len(errors)).to_json())
    for epoch, error in enumerate(errors):
        runs.append_metrics(run_dir, {"epoch": epoch, "phase": "unfrozen", "seconds": 2.0,
                                      "train_loss": 1.0 - epoch * 0.1,
                                      "valid_loss": 0.9 - epoch * 0.1, "error_rate": error})
    runs.update_record(run_dir, status="finished", **({"bundle": str(bundle)} if bundle else {}))
    return run_dir


def open_page(qtbot, context):  # noqa: F811
    page = ModelsPage(context)
    qtbot.addWidget(page)
    return page


def test_runs_list_shows_a_run_with_its_curves(qtbot, context, bundle_file):  # noqa: F811
    run_dir = make_run("resnet18", [0.5, 0.25, 0.125], bundle=bundle_file)
    page = open_page(qtbot, context)
    with qtbot.waitSignal(page.runsLoaded, timeout=20_000) as blocker:
        page.refresh_runs()
    runs = blocker.args[0]
    assert [r.run_id for r in runs] == [run_dir.name]
    assert page.runs_table.rowCount() == 1
    assert page.runs_table.item(0, 1).text() == "resnet18"
    assert page.runs_table.item(0, 3).text() == "0.1250"
    assert page.selected_runs()[0].run_id == run_dir.name
    assert page.epoch_table.row_count() == 3
    loss_ax, err_ax = page.canvas.figure.axes
    assert len(loss_ax.lines) == 2 and list(err_ax.lines[0].get_ydata()) == [0.5, 0.25, 0.125]
    assert page.use_run_button.isEnabled()
    with qtbot.waitSignal(context.modelChanged, timeout=30_000):
        page.use_run_button.click()
    assert context.model_path == bundle_file


def test_comparing_two_runs_overlays_their_curves(qtbot, context):  # noqa: F811
    make_run("resnet18", [0.4, 0.3])
    make_run("resnet34", [0.6, 0.2, 0.1])
    page = open_page(qtbot, context)
    with qtbot.waitSignal(page.runsLoaded, timeout=20_000):
        page.refresh_runs()
    page.select_runs([0, 1])
    assert len(page.selected_runs()) == 2
    _loss_ax, err_ax = page.canvas.figure.axes
    assert sorted(len(line.get_ydata()) for line in err_ax.lines) == [2, 3]
    assert "Comparing 2 runs" in page.compare_hint.text()


def test_save_copies_the_bundle_byte_for_byte(qtbot, model_context, bundle_file, tmp_path):  # noqa: F811
    page = open_page(qtbot, model_context)
    assert page.save_button.isEnabled()
    with qtbot.waitSignal(page.modelSaved, timeout=20_000) as blocker:
        page.save_model(tmp_path / "kept" / "my-model")
    saved = blocker.args[0]
    assert saved.name == "my-model.loupe"
    assert saved.read_bytes() == bundle_file.read_bytes()
    assert not list(saved.parent.glob("*.tmp"))


def test_onnx_export_or_install_advice(qtbot, model_context, tmp_path):  # noqa: F811
    page = open_page(qtbot, model_context)
    target = tmp_path / "model.onnx"
    if models_page.onnx_available():
        with qtbot.waitSignal(page.exported, timeout=120_000) as blocker:
            page.export_onnx(tmp_path / "model")  # typed without .onnx in the dialog
        assert blocker.args[0].path == target and target.is_file()
    else:
        with qtbot.waitSignal(model_context.errorRaised) as blocker:
            assert page.export_onnx(target) is False
        title, message = blocker.args
        assert title == "ONNX export unavailable"
        assert "pip install onnx onnxruntime" in message
        assert not target.exists()


@pytest.mark.parametrize("present", [True, False])
def test_model_summary_follows_the_context(qtbot, context, bundle_file, fresh_predictor,  # noqa: F811
                                           present):
    page = open_page(qtbot, context)
    assert not page.save_button.isEnabled()
    if present:
        context.set_predictor(bundle_file, fresh_predictor)
        assert "resnet18" in page.model_label.text() and "cat, dog" in page.model_label.text()
        assert page.export_button.isEnabled()
    else:
        assert "No model loaded" in page.model_label.text()


def test_run_curves_have_whole_epoch_ticks_even_for_one_epoch(qtbot, context):  # noqa: F811
    # One epoch: the automatic limits around a single point had no integer in them and
    # the axis showed overlapping ticks 0.945 … 1.050.
    from loupe.desktop.pages.models_data import RunSummary, plot_runs
    from loupe.desktop.widgets.mpl_canvas import MplCanvas

    canvas = MplCanvas()
    qtbot.addWidget(canvas)
    run = RunSummary("20261127-050008-resnet18-5a294d", Path("run"), "resnet18", "finished",
                     None, ({"train_loss": 0.73, "valid_loss": 0.71, "error_rate": 0.5},))
    plot_runs(canvas, [run])
    canvas.resize(600, 300)
    canvas.draw()
    for ax in canvas.figure.axes:
        low, high = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if low <= t <= high]
        assert shown == [1.0]
