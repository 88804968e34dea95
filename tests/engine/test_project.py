"""Projects: JSON under the user data dir, never in the image folder (engine/data/project.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loupe.engine.core import paths
from loupe.engine.core.errors import ConfigError
from loupe.engine.data.labels import LabelRule, Overrides
from loupe.engine.data.project import (
    Project,
    add_recent,
    forget_recent,
    load_project,
    project_file,
    recent_projects,
)
from loupe.engine.data.splits import SplitRule


@pytest.fixture
def images(tmp_path) -> Path:
    root = tmp_path / "images"
    (root / "cats").mkdir(parents=True)
    (root / "cats" / "a.png").write_bytes(b"not really a png")
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_save_and_load_round_trip_outside_the_image_folder(images):
    before = _tree(images)
    project = Project(
        images,
        label=LabelRule("regex", pattern=r"^(.+)_\d+"),
        split=SplitRule("random", 0.25, test_fraction=0.1, seed=3),
        overrides=Overrides(relabel={"cats/a.png": ("dogs",)}, exclude={"x.png"}),
        training={"arch": "resnet18", "epochs": 3, "size": 64},
    )
    saved = project.save()
    assert saved == project_file(images)
    assert saved.parent == paths.projects_dir()
    assert not saved.resolve().is_relative_to(images.resolve())
    assert _tree(images) == before
    loaded, warnings = load_project(images)
    assert warnings == []
    assert loaded == project


def test_project_key_is_the_resolved_root(images, monkeypatch):
    monkeypatch.chdir(images.parent)
    assert project_file("images/cats/..") == project_file(images)
    assert project_file(images) != project_file(images / "cats")


def test_missing_project_gives_defaults(images):
    project, warnings = load_project(images)
    assert warnings == []
    assert project.label == LabelRule("parent")
    assert project.split == SplitRule()
    assert project.overrides == Overrides()
    assert project.training == {}


def test_corrupted_project_file_gives_defaults_and_a_warning(images):
    path = project_file(images)
    path.write_text('{"label": {"kind": "parent"', encoding="utf-8")
    project, warnings = load_project(images)
    assert project == Project(images)
    assert len(warnings) == 1 and "could not be read" in warnings[0]
    assert path.with_name(path.name + ".corrupt").read_text() == '{"label": {"kind": "parent"'


def test_bad_field_is_replaced_but_the_rest_is_kept(images):
    data = Project(images, training={"epochs": 5}).to_json()
    data["label"] = {"kind": "regex", "pattern": "(unclosed"}
    data["split"] = {"kind": "random", "fraction": "lots"}
    project_file(images).write_text(json.dumps(data), encoding="utf-8")
    project, warnings = load_project(images)
    assert project.label == LabelRule("parent")
    assert project.split == SplitRule()
    assert project.training == {"epochs": 5}
    assert any("'label'" in w and "invalid regex" in w for w in warnings)
    assert any("'split'" in w for w in warnings)


def test_json_that_is_not_an_object(images):
    project_file(images).write_text("[1, 2]", encoding="utf-8")
    project, warnings = load_project(images)
    assert project == Project(images)
    assert "not a JSON object" in warnings[0]


def test_training_settings_must_be_json(images):
    with pytest.raises(ConfigError, match="JSON"):
        Project(images, training={"when": object()}).save()


def test_refuses_to_write_inside_the_image_folder(images, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(images / ".loupe"))
    with pytest.raises(ConfigError, match="inside the image folder"):
        Project(images).save()
    assert not list((images / ".loupe").rglob("*.json"))


def test_recent_projects_order_dedupe_and_forget(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    Project(a).save()
    Project(b).save()
    add_recent(a)
    assert recent_projects() == [a.resolve(), b.resolve()]
    forget_recent(a)
    assert recent_projects() == [b.resolve()]


def test_corrupted_recent_list_is_empty(tmp_path):
    (paths.projects_dir() / "recent.json").write_text("{oops", encoding="utf-8")
    assert recent_projects() == []
    add_recent(tmp_path)
    assert recent_projects() == [tmp_path.resolve()]


def test_data_spec_carries_the_project_settings(images):
    project = Project(images, label=LabelRule("top"), overrides=Overrides(exclude={"x"}))
    spec = project.data_spec()
    assert (spec.root, spec.label, spec.split, spec.overrides) == (
        images.resolve(),
        LabelRule("top"),
        SplitRule(),
        Overrides(exclude={"x"}),
    )
