"""Hostile names (issue 13): file names that are not UTF-8, and names or class names with
terminal control characters, through the CLI's text, JSON and CSV output."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from loupe.engine.cli import main
from loupe.engine.core.text import display_name, json_safe, printable, text_bytes
from tests.engine.predict_helpers import make_bundle

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or sys.getfilesystemencoding() != "utf-8",
    reason="file names with arbitrary bytes need a POSIX UTF-8 file system",
)

CAFE = os.fsdecode(b"caf\xe9")  # "caf\udce9": the byte 0xE9 is not UTF-8 on its own


def _png(colour: tuple[int, int, int], seed: int = 0) -> bytes:
    image = Image.new("RGB", (40, 36), colour)
    image.putpixel((seed % 40, seed % 36), (seed % 256, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _write(folder: Path, name: bytes, data: bytes) -> str:
    """Create ``folder/name`` from raw bytes; return its path as Python sees it."""
    path = os.path.join(os.fsencode(str(folder)), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return os.fsdecode(path)


def test_text_helpers():
    assert text_bytes("café.png") == "café.png".encode()  # UTF-8 names hash as before
    assert text_bytes(os.fsdecode(b"caf\xe9.png")) == b"caf\xe9.png"
    assert display_name(os.fsdecode(b"caf\xe9.png")) == "caf\\xe9.png"
    assert display_name("café.png") == "café.png"
    assert printable("\x1b]0;pwned\x07 a\rb\nc\x9b") == "\\x1b]0;pwned\\x07 a\\rb\\nc\\x9b"
    assert printable("line\nnext\r", keep_newlines=True) == "line\nnext\\r"
    assert printable(os.fsdecode(b"caf\xe9")) == "caf\\xe9"
    assert json_safe({CAFE: [CAFE, 1]}) == {"caf\\xe9": ["caf\\xe9", 1]}


def test_split_hash_of_utf8_names_is_unchanged():
    import hashlib

    from loupe.engine.data.splits import _unit

    old = hashlib.sha256("valid:42\x00dogs/café.png".encode()).digest()
    assert _unit("valid:42", "dogs/café.png") == int.from_bytes(old[:8], "big") / 2**64
    assert 0 <= _unit("valid:42", f"dogs/{CAFE}.png") < 1


@pytest.fixture
def images(tmp_path) -> Path:
    """Two classes, one of them a folder name that is not UTF-8; file names alike."""
    root = tmp_path / "images"
    for i in range(8):
        _write(root, b"caf\xe9/img\xe9%d.png" % i, _png((200, 60, 40), i))
        _write(root, b"dog/d\xff%d.png" % i, _png((40, 60, 200), i))
    return root


def test_inspect_json_with_undecodable_names(images, capsys):
    _write(images, b"loose\xe9.png", _png((9, 9, 9)))  # at the top: no parent label
    _write(images, b"dog/broken\xfe.png", b"not an image")
    assert main(["inspect", str(images), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == ["caf\\xe9", "dog"]
    assert report["counts"]["caf\\xe9"]["train"] + report["counts"]["caf\\xe9"]["valid"] == 8
    assert [r["path"] for r in report["rejected"]] == ["dog/broken\\xfe.png"]
    assert "loose\\xe9.png" in report["unlabeled"]


def test_inspect_text_escapes_controls(tmp_path, capsys):
    root = tmp_path / "images"
    for i in range(4):
        _write(root, b"evil\rclass/%d.png" % i, _png((200, 60, 40), i))
        _write(root, b"dog/\x1b[2J%d.png" % i, _png((40, 60, 200), i))
    _write(root, b"top\r\x1b]0;pwned\x07.png", _png((9, 9, 9)))
    _write(root, b"dog/bad\r.png", b"not an image")
    assert main(["inspect", str(root)]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b" not in out and "\x07" not in out
    assert "evil\\rclass" in out
    assert "dog/bad\\r.png" in out
    assert "top\\r\\x1b]0;pwned\\x07.png" in out


def test_train_with_undecodable_names(images, tmp_path, capsys):
    out = tmp_path / "model.loupe"
    code = main(["train", str(images), "--arch", "resnet18", "--size", "32", "--pretrained",
                 "none", "--epochs", "1", "--freeze-epochs", "0", "--bs", "8", "--threads", "1",
                 "--split", "random:0.25", "--seed", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert out.is_file()
    text = capsys.readouterr().out
    assert "Saved model" in text

    from loupe.engine.models.bundle import read_bundle_meta

    assert list(read_bundle_meta(out).classes) == [CAFE, "dog"]  # the name itself survives


def test_predict_folder_csv_keeps_names(tmp_path, capsys):
    bundle = make_bundle(tmp_path / "m.loupe", size=32)
    root = tmp_path / "incoming"
    paths = [
        _write(root, b"caf\xe9.png", _png((1, 2, 3))),
        _write(root, b"line\rbreak.png", _png((4, 5, 6))),
        _write(root, b"new\nline.png", _png((7, 8, 9))),
        _write(root, b"plain.png", _png((10, 11, 12))),
    ]
    target = tmp_path / "p.csv"
    assert main(["predict-folder", str(bundle), str(root), "--csv", str(target)]) == 0
    printed = capsys.readouterr().out
    assert "4 images predicted" in printed
    with open(target, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", "label", "prob", "unknown", "top", "error"]
    assert sorted(row[0] for row in rows[1:]) == sorted(paths)
    assert all(row[1] in ("cat", "dog") for row in rows[1:])
    raw = target.read_bytes()
    assert b"caf\xe9.png" in raw  # the file name's own bytes
    assert raw.count(b"\n") == 6  # 5 lines, plus the one inside the quoted "new\nline"


def test_rows_to_csv_quotes_carriage_returns():
    from loupe.engine.inference.folder import FolderRow, rows_to_csv

    rows = [FolderRow(Path("a\rb.png"), None, "bad\r\nthing"), FolderRow(Path("c.png"), None)]
    text = rows_to_csv(rows)
    assert text.endswith("\n") and "\r\n" not in text.replace("bad\r\nthing", "")
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed[1] == ["a\rb.png", "", "", "", "", "bad\r\nthing"]
    assert parsed[2][0] == "c.png" and len(parsed) == 3


def test_predict_text_escapes_class_names(tmp_path, capsys):
    evil = "\x1b]0;pwned\x07\x1b[2J\rOK"
    bundle = make_bundle(tmp_path / "m.loupe", classes=(evil, "dog"), size=32)
    image = _write(tmp_path, b"x\x1b[31m.png", _png((1, 2, 3)))
    assert main(["predict", str(bundle), image, "--topk", "2"]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in "\x1b\x07\r")
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\rOK" in out
    assert main(["predict", str(bundle), image, "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert evil in [t["label"] for t in obj["top"]]
