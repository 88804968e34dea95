"""``loupe inspect`` end to end (engine/cli/inspect_cmd.py, engine/cli/common.py)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from loupe.engine.cli import main
from loupe.engine.data.labels import Overrides
from loupe.engine.data.project import Project
from tests.engine.test_dataset import make_folder, write_image


def _bad_kinds(root: Path) -> dict[str, str]:
    """Every bad-file kind the issue lists, with a word its reason must contain."""
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "cat" / "text.jpg").write_text("hello, I am not a JPEG\n" * 20)
    full = io.BytesIO()
    Image.new("RGB", (48, 48), (5, 90, 160)).save(full, format="PNG")
    (root / "dog" / "truncated.png").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    write_image(root / "dog" / "huge.png", (3, 3, 3), size=(64, 64))
    os.symlink(root / "nowhere.png", root / "cat" / "dangling.png")
    return {
        "cat/empty.jpg": "empty",
        "cat/text.jpg": "not an image",
        "dog/truncated.png": "truncated",
        "dog/huge.png": "too large",
        "cat/dangling.png": "broken",
    }


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["inspect", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_mixed_folder_lists_bad_files_counts_rest_exits_0(tmp_path, capsys):
    root = make_folder(tmp_path / "pets", per_class=6)
    bad = _bad_kinds(root)
    write_image(root / "loose.png", (9, 9, 9))
    code, out, _ = _run(capsys, str(root), "--max-pixels", "3000")
    assert code == 0
    for rel, word in bad.items():
        line = next(line for line in out.splitlines() if line.strip().startswith(rel + ":"))
        assert word in line.lower(), line
    table = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert sum(map(int, table["cat"][:3])) == 6 and table["cat"][3] == "6"
    assert table["total"][3] == "12"
    assert "Unlabelled files (1):" in out and "loose.png: directly in the folder root" in out


def test_inspect_json_shape_is_exact(tmp_path, capsys):
    root = make_folder(tmp_path / "pets", per_class=10)
    bad = _bad_kinds(root)
    write_image(root / "loose.png", (9, 9, 9))
    code, out, _ = _run(
        capsys, str(root), "--json", "--max-pixels", "3000", "--test-fraction", "0.2"
    )
    assert code == 0
    report = json.loads(out)
    assert list(report) == ["classes", "counts", "rejected", "unlabeled", "warnings"]
    assert report["classes"] == ["cat", "dog"]
    assert {c: sum(n.values()) for c, n in report["counts"].items()} == {"cat": 10, "dog": 10}
    assert all(list(n) == ["train", "valid", "test"] for n in report["counts"].values())
    assert all(list(r) == ["path", "reason"] for r in report["rejected"])
    assert sorted(r["path"] for r in report["rejected"]) == sorted(bad)
    assert report["unlabeled"] == ["loose.png"]
    assert isinstance(report["warnings"], list)


def test_inspect_upper_rule_on_flat_folder(tmp_path, capsys):
    root = tmp_path / "flat"
    for i in range(6):
        write_image(root / f"Cat_{i}.png", (200, 20 * i, 0))
        write_image(root / f"apple_{i}.png", (0, 20 * i, 200))
    code, out, _ = _run(capsys, str(root), "--json", "--label", "upper:animal,food")
    assert code == 0
    report = json.loads(out)
    assert report["classes"] == ["animal", "food"]
    assert {c: sum(n.values()) for c, n in report["counts"].items()} == {"animal": 6, "food": 6}


def test_many_unlabelled_files_are_truncated(tmp_path, capsys):
    root = make_folder(tmp_path / "pets", per_class=10)
    for i in range(23):
        write_image(root / f"z{i:02d}.png", (i, i, i))
    code, out, _ = _run(capsys, str(root))
    assert code == 0
    assert "Unlabelled files (23):" in out
    assert "z19.png" in out and "z20.png" not in out
    assert "... and 3 more" in out


@pytest.mark.parametrize(
    ("make", "argv", "message"),
    [
        (lambda p: None, [], "folder not found"),
        (lambda p: write_image(p, (1, 1, 1), fmt="PNG"), [], "not a folder"),
        (lambda p: (p.mkdir(), (p / "e.jpg").write_bytes(b"")), [], "no usable images"),
        (make_folder, ["--label", "regex:(oops"], "invalid regex '(oops' at position 0"),
        (make_folder, ["--split", "shuffle"], "use one of: random:FRACTION"),
        (make_folder, ["--split", "folders"], "the train set is empty"),
    ],
)
def test_unusable_folder_exits_1_with_one_line(tmp_path, capsys, make, argv, message):
    root = tmp_path / "target"
    make(root)
    code, out, err = _run(capsys, str(root), *argv)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("loupe inspect: error: ")
    assert message in err


def test_project_overrides_apply_unless_disabled(tmp_path, capsys):
    root = make_folder(tmp_path / "pets", per_class=10)
    Project(root, overrides=Overrides(exclude={"cat/cat0.png", "cat/cat1.png"})).save()
    _, out, _ = _run(capsys, str(root), "--json")
    assert sum(json.loads(out)["counts"]["cat"].values()) == 8
    _, out, _ = _run(capsys, str(root), "--json", "--no-overrides")
    assert sum(json.loads(out)["counts"]["cat"].values()) == 10


def test_human_output_shows_warnings(tmp_path, capsys):
    root = tmp_path / "split"
    for i in range(6):
        write_image(root / "train" / "cat" / f"c{i}.png", (200, 20 * i, 0))
        write_image(root / "valid" / "dog" / f"d{i}.png", (0, 20 * i, 200))
    code, out, _ = _run(capsys, str(root), "--split", "folders")
    assert code == 0
    warnings = out.split("Warnings (")[1]
    assert "'cat' is absent from validation (6 in train)" in warnings
    assert "'dog' has no training images" in warnings
