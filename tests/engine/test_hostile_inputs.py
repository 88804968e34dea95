"""Issue 13 (item 11): smaller hostile inputs, each through the CLI.

Each case ends in one clear line naming the file or value and a non-zero exit (or a
correct success), with no traceback, and the user's folder hashed before and after.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from loupe.engine.cli import main
from loupe.engine.core import outputs
from loupe.engine.data.project import project_file
from tests.engine.predict_helpers import make_bundle, save_colour


def _hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(os.fsencode(path.relative_to(root)))
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _one_error(capsys, command: str, *argv: str) -> str:
    code = main([command, *argv])
    _out, err = capsys.readouterr()
    assert code != 0 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"loupe {command}: error: "), err
    return lines[0]


def _csv_text(rows: list[list[str]]) -> str:
    """Every field quoted (as spreadsheets do for such names): the csv module would
    leave a lone \r unquoted with a \n line terminator."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows(rows)
    return buffer.getvalue()


# --------------------------------------------------------------------------- label CSV


def test_a_csv_field_over_the_csv_modules_limit_is_one_line_naming_file_and_line(
    tmp_path, capsys
):
    images = tmp_path / "images"
    save_colour(images / "a.png", (200, 0, 0))
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\na.png,red\n" + "x" * 140_000 + ",blue\n", encoding="utf-8")
    before = _hash(images)
    line = _one_error(capsys, "inspect", str(images), "--label", f"csv:{labels}")
    assert f"label CSV {labels} line 3" in line and "field larger than field limit" in line
    assert _hash(images) == before


NAMES = ["new\nline.png", "line\u2028sep.png", "next\x85line.png", "form\x0cfeed.png",
         "carriage\rreturn.png", " spaced .png"]


def test_csv_names_with_line_breaks_and_form_feeds_match_their_files(tmp_path, capsys):
    images = tmp_path / "images"
    names = [f"{prefix}{name}" for prefix in ("a ", "b ") for name in NAMES]
    for i, name in enumerate(names):
        save_colour(images / name, (20 * i, 100, 100))
    labels = tmp_path / "labels.csv"
    rows = [["file", "label"]] + [[name, f"class{i % 2}"] for i, name in enumerate(names)]
    labels.write_text(_csv_text(rows), encoding="utf-8", newline="")
    before = _hash(images)
    code = main(["inspect", str(images), "--label", f"csv:{labels}", "--split", "random:0.5",
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["unlabeled"] == [] and report["rejected"] == []
    counts = {name: sum(c.values()) for name, c in report["counts"].items()}
    assert counts == {"class0": len(NAMES), "class1": len(NAMES)}
    assert not any("not found" in w for w in report["warnings"]), report["warnings"]
    assert _hash(images) == before


# --------------------------------------------------------------------------- --sort-into


@pytest.fixture
def model(tmp_path) -> Path:
    return make_bundle(tmp_path / "m.loupe", size=32, classes=("blue", "red"))


@pytest.mark.parametrize("inside", ["", "sorted", "sub/../sorted"])
def test_sort_into_the_input_folder_is_refused(tmp_path, capsys, model, inside):
    images = tmp_path / "images"
    save_colour(images / "a.png", (200, 0, 0))
    save_colour(images / "sub" / "b.png", (0, 0, 200))
    before = _hash(images)
    line = _one_error(capsys, "predict-folder", str(model), str(images),
                      "--csv", str(tmp_path / "p.csv"), "--sort-into", str(images / inside))
    assert "--sort-into" in line and "inside the image folder" in line and str(images) in line
    assert _hash(images) == before and not (tmp_path / "p.csv").exists()


# --------------------------------------------------------------------------- pickles


class _Payload:
    """What a hostile .pth holds: a call to os.system that would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_weights_file_is_refused_in_one_line_without_torchs_advice(tmp_path, capsys):
    import torch

    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(marker)}, evil)
    line = _one_error(capsys, "weights", "import", str(evil), "--arch", "resnet18")
    assert str(evil) in line and "Python objects" in line and "never loads" in line
    assert "weights_only=False" not in line and "re-run" not in line.lower()
    assert "add_safe_globals" not in line and "trust" not in line
    assert not marker.exists()


# --------------------------------------------------------------------------- analyze --out


def test_analyze_out_through_an_alias_of_the_folder_is_refused(tmp_path, capsys, model):
    images = tmp_path / "images"
    save_colour(images / "red" / "a.png", (200, 0, 0))
    save_colour(images / "blue" / "b.png", (0, 0, 200))
    alias = tmp_path / "alias"
    alias.symlink_to(images, target_is_directory=True)
    before = _hash(images)
    line = _one_error(capsys, "analyze", str(model), str(images), "--out", str(alias / "report"))
    assert "inside the image folder" in line
    assert _hash(images) == before


def test_an_alias_that_resolves_to_another_path_is_caught_by_device_and_inode(
    tmp_path, monkeypatch
):
    """A bind mount is a second path to the same folder that no realpath can see through:
    with realpath made blind, only the (st_dev, st_ino) comparison can catch the alias."""
    images = tmp_path / "images"
    images.mkdir()
    alias = tmp_path / "mounted"
    alias.symlink_to(images, target_is_directory=True)
    monkeypatch.setattr(outputs.os.path, "realpath", lambda p: os.path.abspath(p))
    assert outputs.is_inside(alias / "report" / "x.png", images)
    assert outputs.is_inside(alias, images)
    assert not outputs.is_inside(tmp_path / "elsewhere", images)


# --------------------------------------------------------------------------- project file


def test_a_corrupt_project_file_is_one_warning_line_naming_it(tmp_path, capsys):
    images = tmp_path / "images"
    save_colour(images / "red" / "a.png", (200, 0, 0))
    save_colour(images / "blue" / "b.png", (0, 0, 200))
    target = project_file(images)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b'{"label": {"kind": "parent"}, "overrides": ')  # cut short
    code = main(["inspect", str(images)])
    _out, err = capsys.readouterr()
    assert code == 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("loupe inspect: warning: project file ")
    assert str(target) in lines[0] and "using default settings" in lines[0]


def test_a_project_file_with_a_bad_field_names_the_file_and_the_field(tmp_path, capsys):
    images = tmp_path / "images"
    save_colour(images / "red" / "a.png", (200, 0, 0))
    save_colour(images / "blue" / "b.png", (0, 0, 200))
    target = project_file(images)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"format": 1, "overrides": ["not", "an", "object"]}))
    assert main(["inspect", str(images)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(target) in lines[0] and "'overrides'" in lines[0]
