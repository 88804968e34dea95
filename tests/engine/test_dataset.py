"""The scan → label → split pipeline and the inspect report (engine/data/dataset.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from loupe.engine.core.errors import CancelledError, DatasetError
from loupe.engine.core.events import CancelToken, Progress, WarningEvent
from loupe.engine.data.dataset import DataSpec, inspect_report, prepare_data, prepare_stages
from loupe.engine.data.labels import LabelRule, Overrides, parse_label_rule
from loupe.engine.data.splits import SplitRule


def write_image(path: Path, color=(200, 30, 30), size=(24, 20), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def make_folder(root: Path, per_class: int = 8) -> Path:
    """cat/ and dog/ with distinct images (distinct bytes: no accidental leak warnings)."""
    for i in range(per_class):
        write_image(root / "cat" / f"cat{i}.png", (200, 10 + i, 10))
        write_image(root / "dog" / f"dog{i}.jpg", (10, 10 + 3 * i, 200))
    return root


def test_prepare_data_runs_the_whole_pipeline(tmp_path):
    root = make_folder(tmp_path / "pets")
    write_image(root / "loose.png", (1, 2, 3))
    (root / "dog" / "broken.jpg").write_bytes(b"")
    events = []
    spec = DataSpec(root, LabelRule("parent"), SplitRule("random", 0.3, seed=5))
    prepared = prepare_data(spec, on_event=events.append)
    assert len(prepared.scan.items) == 17
    assert [r.rel for r in prepared.scan.rejected] == ["dog/broken.jpg"]
    assert [u.item.rel for u in prepared.labelling.unmatched] == ["loose.png"]
    plan = prepared.plan
    assert plan.classes == ("cat", "dog")
    assert len(plan.train) + len(plan.valid) == 16
    assert sum(n["train"] + n["valid"] for n in plan.counts.values()) == 16
    assert any(isinstance(e, Progress) and e.task == "scan" for e in events)


def test_warnings_are_reported_and_sent_as_events(tmp_path):
    root = tmp_path / "split"
    for i in range(6):
        write_image(root / "train" / "cat" / f"c{i}.png", (200, 20 * i, 0))
        write_image(root / "train" / "dog" / f"d{i}.png", (0, 20 * i, 200))
    write_image(root / "valid" / "dog" / "v.png", (1, 1, 1))
    write_image(root / "train" / "dog" / "copy.png", (1, 1, 1))  # same bytes as v.png
    events = []
    spec = DataSpec(root, LabelRule("parent"), SplitRule("folders"))
    prepared = prepare_data(spec, on_event=events.append)
    warned = [(e.code, e.message) for e in events if isinstance(e, WarningEvent)]
    assert ("data-split", next(w for w in prepared.warnings if "'cat' is absent" in w)) in warned
    assert any(code == "data-split" and msg.startswith("leak:") for code, msg in warned)
    assert [m for _, m in warned] == list(prepared.warnings)
    assert inspect_report(prepared)["warnings"] == list(prepared.warnings)


def test_inspect_report_shape_and_content(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=6)
    write_image(root / "loose.png", (1, 2, 3))
    (root / "cat" / "notes.jpg").write_text("this is text, not a JPEG")
    spec = DataSpec(root, LabelRule("parent"), SplitRule("random", 0.3, test_fraction=0.2))
    prepared = prepare_data(spec)
    report = inspect_report(prepared)
    assert list(report) == ["classes", "counts", "rejected", "unlabeled", "warnings"]
    assert report["classes"] == ["cat", "dog"]
    for cls in ("cat", "dog"):
        assert list(report["counts"][cls]) == ["train", "valid", "test"]
        assert sum(report["counts"][cls].values()) == 6
        assert report["counts"][cls] == prepared.plan.counts[cls]
    assert [r["path"] for r in report["rejected"]] == ["cat/notes.jpg"]
    assert report["rejected"][0]["reason"]
    assert report["unlabeled"] == ["loose.png"]
    assert report["warnings"] == list(prepared.warnings)


def test_overrides_flow_through(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=6)
    overrides = Overrides(relabel={"cat/cat0.png": ("dog",)}, exclude={"dog/dog0.jpg"})
    spec = DataSpec(root, LabelRule("parent"), SplitRule("random", 0.3), overrides)
    counts = inspect_report(prepare_data(spec))["counts"]
    assert sum(counts["cat"].values()) == 5
    assert sum(counts["dog"].values()) == 6  # 6 - 1 excluded + 1 relabelled


def test_folder_errors(tmp_path):
    rules = (LabelRule("parent"), SplitRule())
    with pytest.raises(DatasetError, match="folder not found"):
        prepare_data(DataSpec(tmp_path / "missing", *rules))
    write_image(tmp_path / "one.png")
    with pytest.raises(DatasetError, match="not a folder"):
        prepare_data(DataSpec(tmp_path / "one.png", *rules))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"")
    with pytest.raises(
        DatasetError, match=r"no usable images in .*bad \(1 file\(s\) rejected: x.jpg: empty file\)"
    ):
        prepare_data(DataSpec(bad, *rules))
    (bad / "x.jpg").unlink()
    with pytest.raises(DatasetError, match=r"no image files found; Loupe reads .jpg"):
        prepare_data(DataSpec(bad, *rules))


def test_nothing_labelled_names_the_rule(tmp_path):
    root = tmp_path / "flat"
    write_image(root / "1cat.png")
    write_image(root / "2dog.png", (0, 0, 0))
    with pytest.raises(DatasetError, match="label rule 'upper' labelled none of the 2"):
        prepare_data(DataSpec(root, LabelRule("upper"), SplitRule()))


def test_stages_keep_what_was_done_before_the_stage_that_failed(tmp_path):
    """The desktop shows the scan and the labelling of a rule that labels nothing."""
    root = make_folder(tmp_path / "pets")
    stages = prepare_stages(DataSpec(root, parse_label_rule("regex:(zebra)"), SplitRule()))
    assert len(stages.scan.items) == 16 and len(stages.labelling.unmatched) == 16
    assert stages.plan is None and stages.prepared is None
    assert "labelled none of the 16" in str(stages.error)
    relabelled = prepare_stages(DataSpec(root, LabelRule("parent"), SplitRule()),
                                scan=stages.scan)
    assert relabelled.error is None and relabelled.prepared.scan is stages.scan


def test_cancel_stops_preparation(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=3)
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        prepare_data(DataSpec(root, LabelRule("parent"), SplitRule()), cancel=token)
