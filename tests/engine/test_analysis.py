"""Error analysis: confusion matrix, confused pairs, per-class report, top losses, map."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from loupe.engine.core.errors import DatasetError
from loupe.engine.core.events import WarningEvent
from loupe.engine.data.labels import LabelledItem
from loupe.engine.data.scan import ImageItem
from loupe.engine.evaluation.analysis import analyze, collect_outputs
from loupe.engine.evaluation.analysis_plots import write_report
from tests.engine.predict_helpers import ColourNet, predictor_for

RED, BLUE = (220, 30, 30), (30, 30, 220)


def _item(tmp_path, name, rgb, labels, seed=0):
    rng = np.random.default_rng(seed)
    array = np.clip(np.array(rgb) + rng.integers(-20, 20, (40, 40, 3)), 0, 255)
    path = tmp_path / f"{name}.png"
    Image.fromarray(array.astype(np.uint8)).save(path)
    stat = path.stat()
    item = ImageItem(path, path.name, stat.st_size, stat.st_mtime_ns, 40, 40)
    return LabelledItem(item, tuple(labels))


def _validation_set(tmp_path):
    """4 red "red", 3 blue "blue", 2 red pictures labelled "blue", 1 blue labelled "red"."""
    spec = ([("r", RED, "red")] * 4 + [("b", BLUE, "blue")] * 3
            + [("wrong_rb", RED, "blue")] * 2 + [("wrong_br", BLUE, "red")])
    return [_item(tmp_path, f"{name}{i}", rgb, [label], seed=i)
            for i, (name, rgb, label) in enumerate(spec)]


@pytest.fixture
def colour_predictor():
    return predictor_for(ColourNet(), ("blue", "red"))


def test_confusion_pairs_and_per_class_report(tmp_path, colour_predictor):
    analysis = analyze(colour_predictor, _validation_set(tmp_path), cam_layer="features",
                       top_k=3)
    assert analysis.count == 10
    assert analysis.confusion.counts == [[3, 2], [1, 4]]  # rows actual (blue, red)
    assert np.allclose(analysis.confusion.normalized, [[0.6, 0.4], [0.2, 0.8]])
    pairs = [(p.actual, p.predicted, p.count) for p in analysis.most_confused]
    assert pairs == [("blue", "red", 2), ("red", "blue", 1)]
    blue, red = analysis.per_class
    assert blue["class"] == "blue" and blue["support"] == 5
    assert blue["precision"] == pytest.approx(0.75) and blue["recall"] == pytest.approx(0.6)
    assert red["precision"] == pytest.approx(4 / 6) and red["recall"] == pytest.approx(0.8)
    assert red["f1"] == pytest.approx(2 * (4 / 6) * 0.8 / (4 / 6 + 0.8))
    assert analysis.metrics["error_rate"] == pytest.approx(0.3)


def test_image_rows_match_the_confusion_matrix_cell_by_cell(tmp_path, colour_predictor):
    from collections import Counter

    items = _validation_set(tmp_path)
    analysis = analyze(colour_predictor, items, cam_method=None, top_k=3)
    rows = analysis.rows
    assert [r.path for r in rows] == [li.item.path for li in items]
    assert [r.rel for r in rows] == [li.item.rel for li in items]
    assert [r.actual for r in rows] == [li.labels[0] for li in items]
    cells = Counter((r.actual_index, r.predicted_index) for r in rows)
    counts = analysis.confusion.counts
    assert {(i, j): counts[i][j] for i in range(2) for j in range(2) if counts[i][j]} == cells
    # ColourNet says "red" for red pictures, "blue" for blue ones, whatever the label.
    for row, li in zip(rows, items, strict=True):
        expected = "red" if li.item.path.name.startswith(("r", "wrong_rb")) else "blue"
        assert row.predicted == expected
        assert analysis.classes[row.predicted_index] == expected
        assert analysis.classes[row.actual_index] == li.labels[0]
        assert 0.5 < row.prob <= 1.0 and row.loss >= 0.0
    mislabelled_red = [li.item.path for li in items if li.item.path.name.startswith("wrong_rb")]
    assert [r.path for r in analysis.cell(0, 1)] == mislabelled_red  # actual blue, said red
    assert [r.path for r in analysis.cell(1, 0)] == [items[-1].item.path]
    assert sum(len(analysis.cell(i, j)) for i in range(2) for j in range(2)) == 10
    # Rows, top losses and the mean loss come from the same numbers.
    assert analysis.metrics["valid_loss"] == pytest.approx(np.mean([r.loss for r in rows]))
    by_path = {r.path: r for r in rows}
    for loss in analysis.top_losses:
        row = by_path[loss.path]
        assert (row.actual, row.predicted, row.prob) == (loss.actual, loss.predicted, loss.prob)
        assert row.loss == pytest.approx(loss.loss)
        assert row.actual != row.predicted and row.loss > 5


def test_rows_list_cells_with_only_two_validation_images(tmp_path, colour_predictor):
    right = _item(tmp_path, "right", RED, ["red"])
    wrong = _item(tmp_path, "wrong", RED, ["blue"], seed=1)
    analysis = analyze(colour_predictor, [right, wrong], cam_method=None)
    assert analysis.embedding is None  # too few images for a map, yet cells still list
    assert analysis.confusion.counts == [[0, 1], [0, 1]]
    assert [r.path for r in analysis.cell(0, 1)] == [wrong.item.path]
    assert [r.path for r in analysis.cell(1, 1)] == [right.item.path]
    assert analysis.cell(0, 0) == [] and analysis.cell(1, 0) == []
    assert [(r.actual, r.predicted) for r in analysis.rows] == [("red", "red"), ("blue", "red")]


def test_top_losses_are_the_mislabelled_images_with_maps(tmp_path, colour_predictor):
    analysis = analyze(colour_predictor, _validation_set(tmp_path), cam_layer="features",
                       top_k=3)
    names = sorted(loss.path.stem.rstrip("0123456789") for loss in analysis.top_losses)
    assert names == ["wrong_br", "wrong_rb", "wrong_rb"]
    losses = [loss.loss for loss in analysis.top_losses]
    assert losses == sorted(losses, reverse=True) and losses[-1] > 5
    first = analysis.top_losses[0]
    assert first.actual != first.predicted and first.prob > 0.99
    assert all(loss.heatmap is not None and loss.heatmap.shape == (32, 32)
               for loss in analysis.top_losses)


def test_embedding_map_separates_red_from_blue_pictures(tmp_path, colour_predictor):
    items = _validation_set(tmp_path)
    analysis = analyze(colour_predictor, items, cam_method=None)
    coords = analysis.embedding.coords
    assert coords.shape == (10, 2) and np.isfinite(coords).all()
    reddish = np.array([item.item.path.name.startswith(("r", "wrong_rb")) for item in items])
    first = coords[:, 0]
    assert np.sign(first[reddish]).min() == np.sign(first[reddish]).max()
    assert np.sign(first[~reddish]).min() == -np.sign(first[reddish]).max()
    assert analysis.embedding.method == "pca"
    assert analysis.embedding.actual[-1] == "red" and analysis.embedding.predicted[-1] == "blue"


def test_tsne_without_scikit_learn_says_how_to_install(tmp_path, colour_predictor, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real(name, *a))
    from loupe.engine.core.errors import ConfigError

    with pytest.raises(ConfigError, match="scikit-learn"):
        analyze(colour_predictor, _validation_set(tmp_path), cam_method=None, embedding="tsne")


def test_multi_label_analysis_uses_thresholds_and_has_no_confusion_matrix(tmp_path):
    predictor = predictor_for(ColourNet(), ("blue", "red"), multi_label=True,
                              thresholds=(0.5, 0.5))
    items = [_item(tmp_path, "r", RED, ["red"]), _item(tmp_path, "b", BLUE, ["blue"]),
             _item(tmp_path, "both", RED, ["blue", "red"], seed=3)]
    analysis = analyze(predictor, items, cam_layer="features", top_k=1)
    assert analysis.confusion is None and analysis.most_confused == []
    blue = analysis.per_class[0]
    assert blue["support"] == 2 and blue["recall"] == pytest.approx(0.5)
    assert analysis.top_losses[0].path.name == "both.png"
    assert analysis.top_losses[0].actual == "blue;red"
    assert analysis.top_losses[0].predicted == "red"
    assert 0.0 < analysis.metrics["accuracy_multi"] < 1.0
    both = analysis.rows[2]
    assert (both.actual, both.predicted) == ("blue;red", "red")
    assert both.actual_index is None and both.predicted_index is None
    assert analysis.cell(0, 0) == []


def test_unreadable_file_is_skipped_with_a_warning(tmp_path, colour_predictor):
    items = _validation_set(tmp_path)
    items[0].item.path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    events = []
    outputs, skipped = collect_outputs(colour_predictor, items, on_event=events.append)
    assert skipped == [str(items[0].item.path)]
    assert len(outputs.paths) == 9 and outputs.features.shape == (9, 2)
    assert any(isinstance(e, WarningEvent) and "r0.png" in e.message for e in events)


def test_a_label_the_model_does_not_know_is_an_error(tmp_path, colour_predictor):
    items = [_item(tmp_path, "g", (30, 200, 30), ["green"])]
    with pytest.raises(DatasetError, match="'green' is not a class of this model"):
        analyze(colour_predictor, items)


def test_write_report_saves_figures_and_metrics(tmp_path, colour_predictor):
    analysis = analyze(colour_predictor, _validation_set(tmp_path), cam_layer="features",
                       top_k=4)
    written = write_report(analysis, colour_predictor, tmp_path / "report")
    names = sorted(p.name for p in written)
    assert names == ["confusion.png", "embedding.png", "first_conv_filters.png",
                     "metrics.json", "per_class.png", "top_losses.png"]
    for path in written:
        if path.suffix == ".png":
            with Image.open(path) as image:
                assert image.format == "PNG" and image.width > 100
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["confusion"]["counts"] == [[3, 2], [1, 4]]
    assert metrics["per_class"] == analysis.per_class
    assert [t["path"] for t in metrics["top_losses"]] == [
        str(t.path) for t in analysis.top_losses
    ]


@pytest.mark.parametrize(("resize", "other"), [("crop", "pad"), ("squish", "crop"),
                                               ("pad", "squish")])
def test_an_image_cache_of_the_models_method_gives_the_files_inputs_and_boxes(
    tmp_path, resize, other
):
    """Analysis may read the training cache, but only one made with the model's method,
    and the map's box still comes from the picture's own shape (a square cache has none)."""
    import torch

    from loupe.engine.data.cache import ImageCache
    from loupe.engine.data.transforms import Preprocessing
    from tests.engine.predict_helpers import save_noise

    pre = Preprocessing.for_size(32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), resize=resize)
    predictor = predictor_for(ColourNet(), ("blue", "red"), preprocessing=pre)
    path = save_noise(tmp_path / "wide.png", size=(90, 40))
    stat = path.stat()
    items = [LabelledItem(ImageItem(path, path.name, stat.st_size, stat.st_mtime_ns, 90, 40),
                          ("red",))]
    from_files, _ = collect_outputs(predictor, items)
    cache = ImageCache(pre.presize, disk_dir=tmp_path / "spill", resize=resize)
    from_cache, _ = collect_outputs(predictor, items, cache=cache)
    assert cache.decode_count == 1, "the cache was used"
    assert torch.equal(from_cache.logits, from_files.logits)
    assert from_cache.crop_boxes == from_files.crop_boxes
    mismatched = ImageCache(pre.presize, disk_dir=tmp_path / "spill2", resize=other)
    collect_outputs(predictor, items, cache=mismatched)
    assert mismatched.decode_count == 0, "a cache of another method is never read"
