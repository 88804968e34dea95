from __future__ import annotations

import json

import pytest

from loupe.engine.core import atomic


def test_atomic_json_round_trip_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "project.json"
    atomic.atomic_write_json(target, {"a": 1})
    atomic.atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["project.json"]


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    atomic.atomic_write_json(target, {"ok": True})

    def boom(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        atomic.atomic_write_json(target, {"ok": False})
    assert json.loads(target.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_an_unwritable_folder_is_reported_with_the_target_name(tmp_path):
    (tmp_path / "file").write_text("a file where a folder should be")
    target = tmp_path / "file" / "x.json"
    with pytest.raises(OSError) as info:
        atomic.atomic_write_json(target, {})
    assert info.value.filename == str(target)  # not the hidden temp file's name
    with pytest.raises(OSError) as info:
        atomic.atomic_write_with(target, lambda tmp: tmp.write_bytes(b"x"))
    assert info.value.filename == str(target)


def test_atomic_write_with_streams_through_a_temp_file(tmp_path):
    target = tmp_path / "model.bin"
    seen = []

    def write(tmp):
        seen.append(tmp)
        assert tmp.parent.parent == tmp_path and tmp != target  # in a temp folder of ours
        tmp.write_bytes(b"new")

    atomic.atomic_write_with(target, write)
    assert target.read_bytes() == b"new"
    assert not seen[0].exists()


def test_atomic_write_with_failing_writer_keeps_old_file(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")

    def half_write(tmp):
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic.atomic_write_with(target, half_write)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_written_files_get_the_usual_mode_not_mkstemps_private_one(tmp_path):
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    fresh = atomic.atomic_write_text(tmp_path / "preds.csv", "a,b\n")
    assert fresh.stat().st_mode & 0o777 == 0o666 & ~mask
    kept = tmp_path / "shared.json"
    kept.write_text("{}")
    kept.chmod(0o640)
    atomic.atomic_write_json(kept, {"x": 1})
    assert kept.stat().st_mode & 0o777 == 0o640
