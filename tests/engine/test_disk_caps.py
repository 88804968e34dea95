"""Issue 13: disk use is bounded — the image cache's spill files and old checkpoints.

Fake spill files and run folders with set sizes and modification times; the tests check
what is pruned (oldest first, within the cap) and what never is (a run being trained,
the newest resumable checkpoint, bundles, metrics, run records).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from loupe.engine.core import disk, paths
from loupe.engine.core.errors import ConfigError
from loupe.engine.data.cache import ImageCache, cache_key
from loupe.engine.data.cache_prune import prune_spill_folder
from loupe.engine.data.scan import scan_folder
from loupe.engine.training import runs
from tests.engine.predict_helpers import save_colour

KB = 1000


def _spill(folder: Path, key: str, size: int, mtime: float) -> Path:
    path = folder / key[:2] / f"{key}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    os.utime(path, (mtime, mtime))
    return path


def test_spill_files_are_pruned_oldest_first_down_to_the_cap(tmp_path):
    files = {key: _spill(tmp_path, key, 10 * KB, mtime)
             for key, mtime in (("aa01", 100), ("ab02", 300), ("ba03", 200), ("bb04", 400))}
    freed = prune_spill_folder(tmp_path, 25 * KB)
    assert freed == 20 * KB
    assert sorted(k for k, p in files.items() if p.exists()) == ["ab02", "bb04"]  # the newest


def test_this_sessions_spill_files_go_last(tmp_path):
    old_mine = _spill(tmp_path, "aa01", 10 * KB, 100)
    newer_other = _spill(tmp_path, "bb02", 10 * KB, 900)
    prune_spill_folder(tmp_path, 10 * KB, protect={"aa01"})
    assert old_mine.exists() and not newer_other.exists()
    prune_spill_folder(tmp_path, 0, protect={"aa01"})  # alone over the cap: it goes too
    assert not old_mine.exists()


def test_stale_spill_temp_files_are_removed_and_fresh_ones_kept(tmp_path):
    stale = tmp_path / "aa" / ".aa01.k2_9xq1z.tmp"
    fresh = tmp_path / "aa" / ".aa02.abcdefgh.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (1, 1))
    prune_spill_folder(tmp_path, 10**9)
    assert not stale.exists() and fresh.exists()


def test_warming_the_cache_prunes_old_spill_files_and_keeps_its_own(tmp_path):
    images = tmp_path / "images"
    for i in range(3):
        save_colour(images / f"{i}.png", (10 * i, 20, 30), size=(24, 24))
    items = scan_folder(images).items
    spill = tmp_path / "spill"
    old = [_spill(spill, f"{i:02d}old", 50 * KB, 1000 + i) for i in range(4)]
    cache = ImageCache(16, ram_budget_bytes=0, disk_dir=spill, disk_cap_bytes=60 * KB)
    cache.warm(items, workers=1)
    ours = [spill / k[:2] / f"{k}.npy" for k in (cache_key(it, 16) for it in items)]
    assert all(p.exists() for p in ours)  # written this session, small: all kept
    assert [p.exists() for p in old] == [False, False, False, True]  # the newest old one fits
    assert cache.stats()["disk_items"] == 3


def test_a_new_cache_prunes_its_folder_before_it_spills(tmp_path):
    """Training decodes through ``ImageCache.get`` in background threads (no warm()): the
    cache made for a run prunes what earlier runs left."""
    spill = tmp_path / "spill"
    old = [_spill(spill, f"{i:02d}old", 50 * KB, 1000 + i) for i in range(4)]
    ImageCache(16, disk_dir=spill, disk_cap_bytes=120 * KB)
    assert [p.exists() for p in old] == [False, False, True, True]


def test_a_spill_file_read_counts_as_recently_used(tmp_path):
    images = tmp_path / "images"
    save_colour(images / "a.png", (200, 20, 30), size=(24, 24))
    (item,) = scan_folder(images).items
    spill = tmp_path / "spill"
    ImageCache(16, 0, spill).get(item)
    path = spill / cache_key(item, 16)[:2] / f"{cache_key(item, 16)}.npy"
    os.utime(path, (5, 5))
    ImageCache(16, 0, spill).get(item)  # a disk hit
    assert path.stat().st_mtime > 5


@pytest.mark.parametrize("value", ["lots", "-1", "nan", "inf"])
def test_a_bad_cap_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(disk.CACHE_MAX_ENV, value)
    with pytest.raises(ConfigError, match=f"LOUPE_CACHE_MAX_GB='{value}' must be a number"):
        ImageCache(16)


def test_caps_are_read_in_gigabytes_with_defaults(monkeypatch):
    monkeypatch.delenv(disk.CHECKPOINTS_MAX_ENV, raising=False)
    assert disk.limit_from_env(disk.CHECKPOINTS_MAX_ENV, 10) == 10 * 10**9
    monkeypatch.setenv(disk.CHECKPOINTS_MAX_ENV, "0.5")
    assert disk.limit_from_env(disk.CHECKPOINTS_MAX_ENV, 10) == 5 * 10**8
    monkeypatch.setenv(disk.CHECKPOINTS_MAX_ENV, "0")
    assert disk.limit_from_env(disk.CHECKPOINTS_MAX_ENV, 10) == 0


# --------------------------------------------------------------------------- checkpoints


def _run(name: str, status: str, size: int, mtime: float, *, bundle: bool = False) -> Path:
    run_dir = paths.runs_dir() / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (run_dir / "run.json").write_text(json.dumps({"status": status}))
    (run_dir / runs.CHECKPOINT).write_bytes(b"\0" * size)
    (run_dir / runs.CHECKPOINT_JSON).write_text("{}")
    if bundle:
        (run_dir / "model.loupe").write_bytes(b"model")
    for name_ in (runs.CHECKPOINT, runs.CHECKPOINT_JSON):
        os.utime(run_dir / name_, (mtime, mtime))
    return run_dir


def _has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / runs.CHECKPOINT).exists() or (run_dir / runs.CHECKPOINT_JSON).exists()


def test_finished_runs_lose_their_checkpoint_and_keep_everything_else():
    done = _run("20260101-000000-a", "finished", 10 * KB, 100, bundle=True)
    stopped = _run("20260102-000000-b", "cancelled", 10 * KB, 50)
    pruned = runs.prune_checkpoints(10**9)
    assert pruned == [done]
    assert not _has_checkpoint(done) and _has_checkpoint(stopped)
    assert sorted(p.name for p in done.iterdir()) == [
        "config.json", "metrics.jsonl", "model.loupe", "run.json", runs.LOCK]
    assert runs.read_record(done)["checkpoint_removed"]
    assert runs.read_record(done)["status"] == "finished"


def test_resumable_checkpoints_beyond_the_cap_go_oldest_first_and_the_newest_stays():
    old = _run("20260101-000000-a", "cancelled", 40 * KB, 100)
    middle = _run("20260102-000000-b", "failed", 40 * KB, 200)
    new = _run("20260103-000000-c", "running", 40 * KB, 300)  # killed: no lock held
    assert runs.prune_checkpoints(90 * KB) == [old]
    assert [_has_checkpoint(r) for r in (old, middle, new)] == [False, True, True]
    assert runs.prune_checkpoints(0) == [middle]
    assert _has_checkpoint(new)  # the run stopped last can always be resumed


def test_a_run_being_trained_is_never_pruned():
    done = _run("20260101-000000-a", "finished", 10 * KB, 100)
    old = _run("20260101-000000-b", "cancelled", 10 * KB, 100)
    _run("20260103-000000-c", "cancelled", 10 * KB, 300)
    with runs.RunLock(done), runs.RunLock(old):
        assert runs.prune_checkpoints(0) == []
    assert _has_checkpoint(done) and _has_checkpoint(old)


def test_a_new_run_prunes_within_the_configured_cap(monkeypatch):
    old = _run("20200101-000000-a", "cancelled", 30 * KB, 100)
    newer = _run("20200102-000000-b", "cancelled", 30 * KB, 200)
    done = _run("20200103-000000-c", "finished", 30 * KB, 300)
    monkeypatch.setenv(disk.CHECKPOINTS_MAX_ENV, "0.00004")  # 40 KB
    fresh = runs.new_run_dir("resnet18")
    assert fresh.is_dir() and not any(fresh.iterdir())
    assert [_has_checkpoint(r) for r in (old, newer, done)] == [False, True, False]


def test_a_bad_checkpoint_cap_stops_a_new_run_before_its_folder_exists(monkeypatch):
    monkeypatch.setenv(disk.CHECKPOINTS_MAX_ENV, "ten")
    with pytest.raises(ConfigError, match="LOUPE_CHECKPOINTS_MAX_GB='ten'"):
        runs.new_run_dir("resnet18")
    assert list(paths.runs_dir().iterdir()) == []
