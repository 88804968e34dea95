"""Scanning a folder: what is found, what is rejected and why, the index, events, cancel."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from loupe.engine.core.errors import CancelledError, DatasetError
from loupe.engine.core.events import Cancelled, CancelToken, Finished, Progress, Started
from loupe.engine.data import imageio
from loupe.engine.data.scan import ImageItem, index_path, scan_folder
from tests.engine.test_imageio import (
    noisy_rgb,
    truncated_copy,
    write_bilevel_png,
    write_exif_rotated_jpeg,
)


def _symlink(target: str | Path, link: Path, *, directory: bool = False) -> None:
    try:
        os.symlink(target, link, target_is_directory=directory)
    except (OSError, NotImplementedError) as err:  # Windows without the privilege
        pytest.skip(f"symlinks unavailable here: {err}")


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory) -> Path:
    """A valid 30000×20000 PNG (300 KB on disk, 600 MB decoded), written once per module."""
    return write_bilevel_png(tmp_path_factory.mktemp("bomb") / "poster.png", 30000, 20000)


@pytest.fixture
def mixed_folder(tmp_path, bomb_png) -> Path:
    """Good images (nested, upper-case suffix, rotated) and one file of every bad kind."""
    root = tmp_path / "photos"
    (root / "cats" / "indoor").mkdir(parents=True)
    (root / "dogs").mkdir()
    (root / ".thumbnails").mkdir()
    noisy_rgb(32, 24, 1).save(root / "cats" / "a.png")
    noisy_rgb(32, 24, 2).save(root / "cats" / "indoor" / "b.JPG", quality=90)
    noisy_rgb(16, 16, 3).save(root / "dogs" / "c.webp", lossless=True)
    Image.new("L", (10, 12)).save(root / "dogs" / "d.bmp")
    write_exif_rotated_jpeg(root / "dogs" / "rotated.jpeg")
    noisy_rgb(8, 8).save(root / ".hidden.png")
    noisy_rgb(8, 8).save(root / ".thumbnails" / "thumb.png")
    (root / "readme.txt").write_text("not scanned: not named like an image")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("hello, I am text")
    truncated_copy(root / "cats" / "a.png", root / "cut.png", 0.5)
    truncated_copy(root / "cats" / "indoor" / "b.JPG", root / "cut.jpg", 0.5)
    Image.new("RGB", (16, 16)).save(root / "icon.png", format="ICO")
    shutil.copyfile(bomb_png, root / "poster.png")
    return root


def _reasons(result) -> dict[str, str]:
    return {file.rel: file.reason for file in result.rejected}


def _snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Bytes, mtime and mode of every file and link under root (links not followed)."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = os.lstat(path)
        content = b"" if path.is_symlink() or path.is_dir() else path.read_bytes()
        state[path.relative_to(root).as_posix()] = (content, info.st_mtime_ns, info.st_mode)
    return state


@pytest.fixture
def count_validations(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = imageio.validate_image

    def counting(path, **kwargs):
        calls.append(Path(path))
        return real(path, **kwargs)

    monkeypatch.setattr(imageio, "validate_image", counting)
    return calls


# --- what is found and what is rejected -----------------------------------------------


def test_scan_finds_good_images_and_rejects_every_bad_kind(mixed_folder):
    result = scan_folder(mixed_folder)

    assert [item.rel for item in result.items] == [
        "cats/a.png",
        "cats/indoor/b.JPG",
        "dogs/c.webp",
        "dogs/d.bmp",
        "dogs/rotated.jpeg",
    ]
    reasons = _reasons(result)
    assert reasons.keys() == {
        "cut.jpg",
        "cut.png",
        "empty.png",
        "icon.png",
        "notes.jpg",
        "poster.png",
    }
    assert reasons["empty.png"] == "empty file"
    assert reasons["notes.jpg"].startswith("not an image")
    assert reasons["cut.png"] == "truncated"
    assert reasons["cut.jpg"] == "truncated"
    assert reasons["icon.png"].startswith("unsupported format: ICO")
    assert reasons["poster.png"] == (
        "too large: 30000×20000 (600 Mpx) exceeds the safety limit of 89 Mpx"
    )
    assert result.root == mixed_folder.resolve()
    assert all(file.path == mixed_folder.resolve() / file.rel for file in result.rejected)


def test_items_record_size_mtime_and_oriented_dimensions(mixed_folder):
    items = {item.rel: item for item in scan_folder(mixed_folder).items}

    a = items["cats/a.png"]
    info = (mixed_folder / "cats" / "a.png").stat()
    assert a == ImageItem(a.path, "cats/a.png", info.st_size, info.st_mtime_ns, 32, 24)
    assert (items["dogs/rotated.jpeg"].width, items["dogs/rotated.jpeg"].height) == (20, 40)


def test_hidden_files_and_folders_are_skipped(mixed_folder):
    result = scan_folder(mixed_folder)

    seen = [item.rel for item in result.items] + [file.rel for file in result.rejected]
    assert not [rel for rel in seen if "hidden" in rel or "thumb" in rel]


def test_bomb_is_rejected_without_allocating_it(mixed_folder, monkeypatch):
    from PIL import PngImagePlugin

    allocated = []
    original = PngImagePlugin.PngImageFile.load_prepare

    def spy(self):
        allocated.append(self.size)
        return original(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load_prepare", spy)

    result = scan_folder(mixed_folder)

    assert _reasons(result)["poster.png"].startswith("too large")
    assert (30000, 20000) not in allocated
    assert (32, 24) in allocated  # the spy sees the decodes that do happen


def test_broken_link_is_reported(tmp_path):
    noisy_rgb(8, 8).save(tmp_path / "real.png")
    _symlink(tmp_path / "moved-away.png", tmp_path / "link.png")
    _symlink(tmp_path / "real.png", tmp_path / "good-link.png")

    result = scan_folder(tmp_path)

    assert _reasons(result) == {"link.png": "broken link"}
    assert [item.rel for item in result.items] == ["good-link.png", "real.png"]


def test_directory_symlink_loop_is_followed_once(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    noisy_rgb(8, 8).save(root / "sub" / "x.png")
    noisy_rgb(8, 8).save(outside / "y.png")
    _symlink(root, root / "sub" / "loop", directory=True)  # sub/loop -> root: a cycle
    _symlink(outside, root / "more", directory=True)  # a folder outside the root
    _symlink(outside, root / "sub" / "same", directory=True)  # a second way to the same

    result = scan_folder(root)

    assert [item.rel for item in result.items] == ["more/y.png", "sub/x.png"]


def test_a_folder_is_reached_by_its_own_path_before_a_link_to_it(tmp_path):
    """The parent folder is the label: a link sorting first must not rename a class."""
    root = tmp_path / "root"
    (root / "cats" / "indoor").mkdir(parents=True)
    noisy_rgb(8, 8).save(root / "cats" / "indoor" / "c.png")
    _symlink(root / "cats", root / "alias", directory=True)  # "alias" < "cats"
    _symlink(root / "cats" / "indoor", root / "aa-shortcut", directory=True)  # shallower

    result = scan_folder(root, use_index=False)

    assert [item.rel for item in result.items] == ["cats/indoor/c.png"]


def test_missing_root_and_file_root_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="folder not found: .*nowhere"):
        scan_folder(tmp_path / "nowhere")
    file_root = tmp_path / "one.png"
    noisy_rgb(8, 8).save(file_root)
    with pytest.raises(DatasetError, match="not a folder: .*one.png"):
        scan_folder(file_root)


def test_max_pixels_is_configurable(tmp_path):
    noisy_rgb(64, 64).save(tmp_path / "a.png")

    assert len(scan_folder(tmp_path, use_index=False).items) == 1
    strict = scan_folder(tmp_path, max_pixels=1000, use_index=False)
    assert strict.items == ()
    assert _reasons(strict)["a.png"].startswith("too large: 64×64")


def test_parallel_and_serial_scans_agree(mixed_folder):
    serial = scan_folder(mixed_folder, workers=1, use_index=False)
    parallel = scan_folder(mixed_folder, workers=4, use_index=False)

    assert serial == parallel


def test_user_files_are_never_modified(mixed_folder):
    _symlink(mixed_folder / "gone.jpg", mixed_folder / "dangling.jpg")
    before = _snapshot(mixed_folder)

    scan_folder(mixed_folder)
    scan_folder(mixed_folder)  # the second one reads the index

    assert _snapshot(mixed_folder) == before


# --- the index ------------------------------------------------------------------------


def test_second_scan_uses_the_index_and_opens_nothing(mixed_folder, count_validations):
    first = scan_folder(mixed_folder)
    opened_first = len(count_validations)
    count_validations.clear()

    second = scan_folder(mixed_folder)

    assert opened_first == 10  # every non-empty image-named file
    assert count_validations == []
    assert second == first
    stored = json.loads(index_path(mixed_folder).read_text())
    assert stored["entries"]["cats/a.png"][2:] == [32, 24, ""]
    assert index_path(mixed_folder).is_relative_to(Path(os.environ["LOUPE_HOME"]))


def test_changed_file_is_validated_again(mixed_folder, count_validations):
    scan_folder(mixed_folder)
    count_validations.clear()
    target = mixed_folder / "cats" / "a.png"
    info = target.stat()
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns + 5_000_000_000))
    (mixed_folder / "dogs" / "d.bmp").write_text("replaced by text")

    result = scan_folder(mixed_folder)

    assert sorted(p.name for p in count_validations) == ["a.png", "d.bmp"]
    assert "cats/a.png" in [item.rel for item in result.items]
    assert _reasons(result)["dogs/d.bmp"].startswith("not an image")


def test_index_respects_a_changed_pixel_limit(tmp_path, count_validations):
    noisy_rgb(64, 64).save(tmp_path / "a.png")
    scan_folder(tmp_path)
    count_validations.clear()

    strict = scan_folder(tmp_path, max_pixels=1000)  # from the remembered size: no opening
    assert count_validations == []
    assert _reasons(strict)["a.png"].startswith("too large: 64×64")

    relaxed = scan_folder(tmp_path)  # a raised limit must look at the file again
    assert len(count_validations) == 1
    assert [item.rel for item in relaxed.items] == ["a.png"]


def test_use_index_false_neither_reads_nor_writes_it(mixed_folder, count_validations):
    scan_folder(mixed_folder, use_index=False)
    scan_folder(mixed_folder, use_index=False)

    assert len(count_validations) == 20
    assert not index_path(mixed_folder).exists()


def test_damaged_index_is_ignored_and_rewritten(mixed_folder, count_validations):
    path = index_path(mixed_folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{ not json")

    result = scan_folder(mixed_folder)

    assert len(result.items) == 5
    assert len(count_validations) == 10
    assert "entries" in json.loads(path.read_text())


# --- events and cancel ----------------------------------------------------------------


def test_progress_events_are_emitted(mixed_folder):
    events = []

    scan_folder(mixed_folder, on_event=events.append)

    assert isinstance(events[0], Started) and events[0].task == "scan"
    assert isinstance(events[-1], Finished)
    assert events[-1].result == {"items": 5, "rejected": 6}
    progress = [event for event in events if isinstance(event, Progress)]
    assert [event.done for event in progress] == sorted(event.done for event in progress)
    assert (progress[-1].done, progress[-1].total) == (11, 11)


def test_cancel_raises_and_keeps_work_done_so_far(mixed_folder, count_validations):
    token = CancelToken()
    events = []

    def cancel_after_two(event):
        events.append(event)
        if isinstance(event, Progress) and event.done >= 2:
            token.cancel()

    with pytest.raises(CancelledError):
        scan_folder(mixed_folder, workers=1, on_event=cancel_after_two, cancel=token)

    assert isinstance(events[-1], Cancelled)
    assert not any(isinstance(event, Finished) for event in events)
    checked_before_cancel = len(count_validations)
    assert checked_before_cancel < 10
    count_validations.clear()
    scan_folder(mixed_folder)
    assert len(count_validations) < 10  # what was checked before the cancel was kept


def test_cancel_before_start_stops_the_walk(mixed_folder, count_validations):
    token = CancelToken()
    token.cancel()

    with pytest.raises(CancelledError):
        scan_folder(mixed_folder, cancel=token)

    assert count_validations == []
