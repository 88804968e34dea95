"""Folder prediction: CSV contents, copies into class folders, sources never touched."""

from __future__ import annotations

import csv
import hashlib

import pytest

from loupe.engine.core.errors import CancelledError, ConfigError
from loupe.engine.core.events import CancelToken, Progress
from loupe.engine.inference.folder import copy_without_overwrite, predict_folder, safe_folder_name
from tests.engine.predict_helpers import BiasNet, ColourNet, predictor_for, save_colour

RED, BLUE = (220, 30, 30), (30, 30, 220)


def _tree(root):
    """root/a.png (red), root/sub/b.png (blue), root/sub/deep/a.png (red), broken, notes."""
    save_colour(root / "a.png", RED)
    save_colour(root / "sub" / "b.png", BLUE)
    save_colour(root / "sub" / "deep" / "a.png", RED, size=(50, 30))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "notes.txt").write_text("not an image")
    return root


def _fingerprint(root):
    return {
        path.relative_to(root): (hashlib.sha256(path.read_bytes()).hexdigest(),
                                 path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*")) if path.is_file()
    }


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


@pytest.fixture
def predictor():
    return predictor_for(ColourNet(), ("blue", "red"))


def test_csv_has_a_row_per_image_with_label_prob_and_topk(tmp_path, predictor):
    root = _tree(tmp_path / "photos").resolve()
    events = []
    result = predict_folder(predictor, root, tmp_path / "out.csv", topk=2,
                            on_event=events.append)
    rows = _read_csv(tmp_path / "out.csv")
    red_a, blue_b = str(root / "a.png"), str(root / "sub" / "b.png")
    assert set(rows) == {red_a, blue_b, str(root / "sub" / "deep" / "a.png"),
                         str(root / "broken.png")}
    assert rows[red_a]["label"] == "red" and float(rows[red_a]["prob"]) > 0.99
    assert rows[blue_b]["label"] == "blue" and rows[blue_b]["unknown"] == "false"
    top = [entry.split(":") for entry in rows[red_a]["top"].split(";")]
    assert [name for name, _ in top] == ["red", "blue"]
    assert float(top[0][1]) == pytest.approx(float(rows[red_a]["prob"]), abs=1e-4)
    assert rows[str(root / "broken.png")]["label"] == ""
    assert rows[str(root / "broken.png")]["error"] != ""
    assert result.counts == {"red": 2, "blue": 1}
    assert any(isinstance(e, Progress) and e.task == "predict-folder" and e.done == e.total
               for e in events)


def test_symlink_loops_in_the_folder_are_rejected_rows_not_a_crash(tmp_path, predictor):
    root = _tree(tmp_path / "photos")
    (root / "loopa.png").symlink_to("loopb.png")
    (root / "loopb.png").symlink_to("loopa.png")
    result = predict_folder(predictor, root, tmp_path / "out.csv", sort_into=tmp_path / "s")
    rows = _read_csv(tmp_path / "out.csv")
    loop = str(root.resolve() / "loopa.png")
    assert loop in rows and rows[loop]["label"] == "" and rows[loop]["error"]
    assert result.counts == {"red": 2, "blue": 1}


def test_multi_label_counts_every_positive_class_like_the_copies(tmp_path):
    predictor = predictor_for(BiasNet([3.0, 3.0, -3.0]), ("a", "b", "c"), multi_label=True)
    root = _tree(tmp_path / "photos")
    result = predict_folder(predictor, root, tmp_path / "out.csv", sort_into=tmp_path / "s")
    assert result.counts == {"a": 3, "b": 3}
    assert len(result.copied) == 6
    assert {p.parent.name for _, p in result.copied} == {"a", "b"}


def test_unknown_threshold_leaves_the_label_empty(tmp_path):
    root = tmp_path.resolve() / "photos"
    save_colour(root / "grey.png", (128, 128, 128))  # both logits 0: p = 0.5
    predictor = predictor_for(ColourNet(), ("blue", "red"), unknown_below=0.8)
    result = predict_folder(predictor, root, tmp_path / "out.csv", sort_into=tmp_path / "s")
    row = _read_csv(tmp_path / "out.csv")[str(root / "grey.png")]
    assert row["label"] == "" and row["unknown"] == "true"
    assert [dest.parent.name for _, dest in result.copied] == ["_unknown"]


def test_sort_into_copies_by_class_and_leaves_sources_untouched(tmp_path, predictor):
    root = _tree(tmp_path / "photos").resolve()
    before = _fingerprint(root)
    target = tmp_path / "sorted"
    (target / "red").mkdir(parents=True)
    (target / "red" / "a.png").write_bytes(b"already here")
    result = predict_folder(predictor, root, tmp_path / "out.csv", sort_into=target)
    assert _fingerprint(root) == before  # nothing moved, renamed or modified
    assert (target / "red" / "a.png").read_bytes() == b"already here"  # never overwritten
    red = sorted(p.name for p in (target / "red").iterdir())
    assert red == ["a-1.png", "a-2.png", "a.png"]
    assert [p.name for p in (target / "blue").iterdir()] == ["b.png"]
    for source, dest in result.copied:
        assert dest.read_bytes() == source.read_bytes()
        assert dest.stat().st_mtime_ns == source.stat().st_mtime_ns  # copy2 semantics
    assert not (target / "_unknown").exists()


def test_sort_folder_inside_the_source_is_refused_before_anything_is_written(
    tmp_path, predictor
):
    root = _tree(tmp_path / "photos").resolve()
    before = _fingerprint(root)
    for target in (root, root / "sorted", root / "sub" / ".."):
        with pytest.raises(ConfigError, match="inside the image folder"):
            predict_folder(predictor, root, tmp_path / "1.csv", sort_into=target)
    # the parent of a folder named like a class: the "red" copies would land in it
    red = _tree(tmp_path / "red").resolve()
    with pytest.raises(ConfigError, match="would be the image folder"):
        predict_folder(predictor, red, tmp_path / "2.csv", sort_into=tmp_path)
    assert _fingerprint(root) == before and not (tmp_path / "1.csv").exists()


def test_cancel_writes_no_csv(tmp_path, predictor):
    root = _tree(tmp_path / "photos").resolve()
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        predict_folder(predictor, root, tmp_path / "out.csv", cancel=token)
    assert not (tmp_path / "out.csv").exists()


def test_copy_without_overwrite_picks_a_free_name(tmp_path):
    source = save_colour(tmp_path / "x.png", RED)
    folder = tmp_path / "dest"
    first = copy_without_overwrite(source, folder)
    second = copy_without_overwrite(source, folder)
    assert (first.name, second.name) == ("x.png", "x-1.png")


@pytest.mark.parametrize(("label", "expected"), [("a/b", "a_b"), ("..", "_"), ("c:d", "c_d")])
def test_class_names_become_safe_folder_names(label, expected):
    assert safe_folder_name(label) == expected
