"""ImageCache: decode once, RAM within a budget, spill to disk, never decode in epoch 2."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from loupe.engine.core.errors import CancelledError, ConfigError, DatasetError
from loupe.engine.core.events import CancelToken, Finished, Progress, Started, WarningEvent
from loupe.engine.data import cache as cache_mod
from loupe.engine.data.cache import ImageCache, cache_key, presize_for
from tests.engine.cache_items import Item, item_for


def make_images(folder: Path, n: int = 8) -> list[Item]:
    """Small images of varied sizes, aspect ratios and formats, each with distinct pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        w, h = 24 + 5 * i, 40 - 2 * i
        img = Image.new("RGB", (w, h), (20 * i, 255 - 20 * i, 7 * i))
        img.putpixel((i, i), (255, 255, 255))
        path = folder / (f"img_{i}.png" if i % 2 else f"img_{i}.jpg")
        img.save(path)
        items.append(item_for(path))
    return items


def spill_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.npy")) if folder.exists() else []


def test_presize_is_ceil_of_115_percent():
    assert presize_for(64) == 74
    assert presize_for(224) == 258
    assert presize_for(20) == 23
    assert presize_for(100) == 115
    assert presize_for(1) == 2
    for bad in (0, -5, 1.5, True, "64"):
        with pytest.raises(ConfigError, match="positive whole number"):
            presize_for(bad)


def test_epoch_two_decodes_nothing_in_ram(tmp_path):
    items = make_images(tmp_path / "imgs")
    cache = ImageCache(presize=20, disk_dir=tmp_path / "spill")
    first = [cache.get(it) for it in items]
    assert cache.decode_count == len(items)
    for t in first:
        assert t.dtype == torch.uint8 and t.ndim == 3 and t.shape[0] == 3
        assert min(t.shape[1:]) == 20
    second = [cache.get(it) for it in items]
    assert cache.decode_count == len(items)
    assert all(a is b for a, b in zip(first, second, strict=True))
    stats = cache.stats()
    assert stats["ram_items"] == len(items) and stats["ram_hits"] == len(items)
    assert stats["ram_bytes"] == sum(t.numel() for t in first)
    assert spill_files(tmp_path / "spill") == []  # everything fits: nothing written


def test_epoch_two_decodes_nothing_when_spilling(tmp_path):
    items = make_images(tmp_path / "imgs")
    cache = ImageCache(presize=20, ram_budget_bytes=0, disk_dir=tmp_path / "spill")
    first = [cache.get(it).clone() for it in items]
    assert cache.decode_count == len(items)
    assert len(spill_files(tmp_path / "spill")) == len(items)
    assert cache.stats()["ram_items"] == 0
    second = [cache.get(it) for it in items]
    assert cache.decode_count == len(items)
    assert cache.stats()["disk_hits"] == len(items)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_lru_stays_within_budget_and_spills_the_rest(tmp_path):
    items = make_images(tmp_path / "imgs")
    probe = ImageCache(presize=20, disk_dir=tmp_path / "probe")
    sizes = [probe.get(it).numel() for it in items]
    budget = sum(sizes[:3])
    cache = ImageCache(presize=20, ram_budget_bytes=budget, disk_dir=tmp_path / "spill")
    for epoch in range(3):
        for it in items:
            cache.get(it)
            assert cache.stats()["ram_bytes"] <= budget
        assert cache.decode_count == len(items), f"epoch {epoch + 1} decoded again"
    stats = cache.stats()
    assert 0 < stats["ram_items"] < len(items)
    assert stats["spill_writes"] == len(spill_files(tmp_path / "spill")) > 0
    assert stats["disk_hits"] > 0


def test_spill_files_serve_a_new_session(tmp_path):
    items = make_images(tmp_path / "imgs")
    spill = tmp_path / "spill"
    first = [ImageCache(20, 0, spill).get(it).clone() for it in items]
    later = ImageCache(presize=20, disk_dir=spill)
    again = [later.get(it) for it in items]
    assert later.decode_count == 0
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_default_disk_dir_is_in_the_user_cache(isolated_user_dirs):
    cache = ImageCache(presize=16)
    assert cache.disk_dir == isolated_user_dirs / "cache" / "images"


def test_changed_file_is_decoded_again(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (30, 30), (255, 0, 0)).save(path)
    old = item_for(path)
    cache = ImageCache(presize=16, ram_budget_bytes=0, disk_dir=tmp_path / "spill")
    assert cache.get(old)[:, 0, 0].tolist() == [255, 0, 0]
    Image.new("RGB", (30, 30), (0, 0, 255)).save(path)
    os.utime(path, ns=(old.mtime_ns + 10**9, old.mtime_ns + 10**9))
    new = item_for(path)
    assert cache_key(new, 16) != cache_key(old, 16)
    assert cache.get(new)[:, 0, 0].tolist() == [0, 0, 255]
    assert cache.decode_count == 2


def test_presize_is_part_of_the_key(tmp_path):
    (item,) = make_images(tmp_path / "imgs", n=1)
    spill = tmp_path / "spill"
    assert min(ImageCache(20, 0, spill).get(item).shape[1:]) == 20
    other = ImageCache(30, 0, spill)
    assert min(other.get(item).shape[1:]) == 30
    assert other.decode_count == 1


def test_damaged_spill_file_is_decoded_again(tmp_path):
    (item,) = make_images(tmp_path / "imgs", n=1)
    spill = tmp_path / "spill"
    good = ImageCache(20, 0, spill).get(item).clone()
    (npy,) = spill_files(spill)
    npy.write_bytes(npy.read_bytes()[:40])  # truncated, as after a crash mid-write
    cache = ImageCache(20, 0, spill)
    assert torch.equal(cache.get(item), good)
    assert cache.decode_count == 1
    assert torch.equal(ImageCache(20, 0, spill).get(item), good)  # rewritten, valid


def test_unreadable_file_raises_dataset_error_naming_it(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png at all")
    cache = ImageCache(presize=16, disk_dir=tmp_path / "spill")
    with pytest.raises(DatasetError, match="broken.png"):
        cache.get(item_for(bad))
    with pytest.raises(DatasetError, match="broken.png"):
        cache.warm([item_for(bad)], workers=1)


def test_warm_decodes_in_parallel_with_events(tmp_path):
    items = make_images(tmp_path / "imgs", n=10)
    cache = ImageCache(presize=20, disk_dir=tmp_path / "spill")
    events = []
    stats = cache.warm(items, workers=3, on_event=events.append)
    assert cache.decode_count == len(items) == stats["decode_count"]
    assert isinstance(events[0], Started) and events[0].task == "cache"
    progress = [e for e in events if isinstance(e, Progress)]
    assert [e.done for e in progress] == list(range(1, len(items) + 1))
    assert all(e.total == len(items) for e in progress)
    assert isinstance(events[-1], Finished)
    for it in items:
        cache.get(it)
    assert cache.decode_count == len(items)
    cache.warm(items, workers=3)
    assert cache.decode_count == len(items)


def test_warm_cancelled_before_start_decodes_nothing(tmp_path):
    items = make_images(tmp_path / "imgs", n=4)
    cache = ImageCache(presize=20, disk_dir=tmp_path / "spill")
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        cache.warm(items, cancel=token)
    assert cache.decode_count == 0


def test_warm_cancelled_midway_stops_early(tmp_path):
    items = make_images(tmp_path / "imgs", n=12)
    cache = ImageCache(presize=20, disk_dir=tmp_path / "spill")
    token = CancelToken()

    def on_event(event):
        if isinstance(event, Progress):
            token.cancel()

    with pytest.raises(CancelledError):
        cache.warm(items, workers=1, on_event=on_event, cancel=token)
    assert 1 <= cache.decode_count < len(items)


def test_concurrent_gets_decode_each_image_once(tmp_path, monkeypatch):
    items = make_images(tmp_path / "imgs", n=4)
    real = cache_mod.load_presized

    def slow(*args, **kwargs):
        time.sleep(0.05)  # widen the race window: all threads miss at once
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "load_presized", slow)
    cache = ImageCache(presize=20, disk_dir=tmp_path / "spill")
    barrier = threading.Barrier(6)
    results: list[list[torch.Tensor]] = []

    def worker():
        barrier.wait()
        results.append([cache.get(it) for it in items])

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    assert cache.decode_count == len(items)
    for got in results[1:]:
        assert all(a is b for a, b in zip(results[0], got, strict=True))


def test_spill_failure_is_reported_not_fatal(tmp_path):
    items = make_images(tmp_path / "imgs", n=3)
    blocked = tmp_path / "not_a_dir"
    blocked.write_text("a file where the cache folder should be")
    cache = ImageCache(presize=20, ram_budget_bytes=0, disk_dir=blocked)
    events = []
    cache.warm(items, workers=1, on_event=events.append)
    warnings = [e for e in events if isinstance(e, WarningEvent)]
    assert [w.code for w in warnings] == ["cache-spill-failed"]
    assert str(blocked) in warnings[0].message
    assert all(min(cache.get(it).shape[1:]) == 20 for it in items)
    assert cache.decode_count == 2 * len(items)  # nothing could be kept: decoded again


def test_bad_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="presize"):
        ImageCache(presize=0, disk_dir=tmp_path)
    with pytest.raises(ConfigError, match="budget"):
        ImageCache(presize=16, ram_budget_bytes=-1, disk_dir=tmp_path)


def test_resize_method_is_part_of_the_key(tmp_path):
    (item,) = make_images(tmp_path / "imgs", n=1)
    keys = {m: cache_key(item, 20, m) for m in ("crop", "squish", "pad")}
    assert len(set(keys.values())) == 3
    assert keys["crop"] == cache_key(item, 20), "crop keys are spelled as before the methods"
    with pytest.raises(ConfigError, match="'fit' is not one of: crop, squish, pad"):
        cache_key(item, 20, "fit")


def test_a_cache_of_one_method_is_never_reused_for_another(tmp_path):
    (item,) = make_images(tmp_path / "imgs", n=1)  # 24×40, portrait
    spill = tmp_path / "spill"
    views = {}
    for method in ("crop", "squish", "pad"):
        cache = ImageCache(20, 0, spill, resize=method)
        views[method] = cache.get(item)
        assert cache.decode_count == 1, f"{method} must decode, not read another's spill file"
        assert cache.stats()["resize"] == method
    assert tuple(views["crop"].shape) == (3, 33, 20)
    assert tuple(views["squish"].shape) == tuple(views["pad"].shape) == (3, 20, 20)
    assert int(views["pad"][:, :, :4].max()) == 0, "pad's side borders are black"
    assert int(views["squish"][1, :, :4].min()) > 200, "squish has no border (green image)"
    assert len(spill_files(spill)) == 3


@pytest.mark.parametrize("method", ["squish", "pad"])
def test_square_methods_spill_and_read_back(tmp_path, method):
    items = make_images(tmp_path / "imgs", n=3)
    spill = tmp_path / "spill"
    first = [ImageCache(20, 0, spill, resize=method).get(it).clone() for it in items]
    later = ImageCache(20, 0, spill, resize=method)
    assert all(torch.equal(later.get(it), t) for it, t in zip(items, first, strict=True))
    assert later.decode_count == 0 and later.stats()["disk_hits"] == 3


def test_a_square_cache_refuses_a_spill_file_that_is_not_square(tmp_path):
    (item,) = make_images(tmp_path / "imgs", n=1)
    spill = tmp_path / "spill"
    cache = ImageCache(20, 0, spill, resize="squish")
    cache.get(item)
    (npy,) = spill_files(spill)
    np.save(npy, np.zeros((3, 20, 31), dtype=np.uint8))  # a crop-shaped entry
    again = ImageCache(20, 0, spill, resize="squish")
    assert tuple(again.get(item).shape) == (3, 20, 20) and again.decode_count == 1


def test_an_unknown_resize_method_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'stretch' is not one of: crop, squish, pad"):
        ImageCache(20, disk_dir=tmp_path, resize="stretch")
