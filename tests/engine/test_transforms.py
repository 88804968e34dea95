"""Evaluation transform (validation == prediction) and normalization statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine.cache import ImageCache, presize_for
from engine.errors import ConfigError, DatasetError
from engine.stats import IMAGENET_MEAN, IMAGENET_STD, MIN_STD, compute_mean_std
from engine.transforms import (
    Preprocessing,
    eval_tensor_from_cached,
    eval_tensor_from_image,
    eval_tensor_from_path,
    normalize,
)
from tests.engine.cache_items import Item, item_for


def gradient(w: int, h: int) -> Image.Image:
    """Neighbouring pixels differ, so any off-by-one in resize or crop changes the result."""
    img = Image.new("RGB", (w, h))
    img.putdata(
        [((x * 7) % 256, (y * 11) % 256, (x * y) % 256) for y in range(h) for x in range(w)]
    )
    return img


@pytest.fixture()
def varied_files(tmp_path) -> list[Path]:
    files = []
    wide = tmp_path / "wide.png"
    gradient(61, 33).save(wide)
    tall = tmp_path / "tall.jpg"
    gradient(29, 70).save(tall, quality=90)
    rgba = tmp_path / "alpha.png"
    transparent = gradient(40, 40).convert("RGBA")
    transparent.putalpha(Image.linear_gradient("L").resize((40, 40)))
    transparent.save(rgba)
    grey = tmp_path / "grey.png"
    gradient(45, 38).convert("L").save(grey)
    small = tmp_path / "small.png"
    gradient(12, 9).save(small)  # upscaled to the presize
    files += [wide, tall, rgba, grey, small]
    return files


def test_prediction_path_equals_validation_path_exactly(tmp_path, varied_files):
    size = 24
    presize = presize_for(size)
    cache = ImageCache(presize=presize, disk_dir=tmp_path / "spill")
    for path in varied_files:
        from_cache = eval_tensor_from_cached(cache.get(item_for(path)), size)
        from_path = eval_tensor_from_path(path, size, presize)
        assert from_path.shape == (3, size, size) and from_path.dtype == torch.float32
        assert torch.equal(from_path, from_cache), path.name
        assert 0.0 <= float(from_path.min()) and float(from_path.max()) <= 1.0


def test_spilled_cache_gives_the_same_eval_tensor(tmp_path, varied_files):
    pre = Preprocessing.for_size(20)
    cache = ImageCache(presize=pre.presize, ram_budget_bytes=0, disk_dir=tmp_path / "spill")
    for path in varied_files:
        cache.get(item_for(path))  # decode, spill
        assert torch.equal(
            pre.eval_input_from_cached(cache.get(item_for(path))),  # from the spill file
            pre.eval_input_from_path(path),
        )


def test_eval_tensor_from_image_matches_the_file(tmp_path):
    path = tmp_path / "rgb.png"
    gradient(50, 31).save(path)
    with Image.open(path) as img:
        from_image = eval_tensor_from_image(img, 16, presize_for(16))
    assert torch.equal(from_image, eval_tensor_from_path(path, 16, presize_for(16)))


def test_center_crop_takes_the_middle_and_scales_to_unit_range():
    u8 = torch.arange(3 * 6 * 9, dtype=torch.int64).remainder(256).to(torch.uint8)
    u8 = u8.view(3, 6, 9)
    before = u8.clone()
    out = eval_tensor_from_cached(u8, 4)
    expected = u8[:, 1:5, 2:6].to(torch.float32) / 255.0
    assert out.shape == (3, 4, 4)
    assert torch.equal(out, expected)
    assert torch.equal(u8, before), "the cached tensor must not be modified"


def test_center_crop_rejects_impossible_requests():
    u8 = torch.zeros(3, 10, 12, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="short side"):
        eval_tensor_from_cached(u8, 11)
    with pytest.raises(ConfigError, match="uint8"):
        eval_tensor_from_cached(u8.float(), 8)


def test_normalize_per_channel_for_images_and_batches():
    x = torch.full((3, 2, 2), 0.5)
    out = normalize(x, (0.5, 0.25, 0.0), (1.0, 0.5, 0.25))
    assert out[:, 0, 0].tolist() == [0.0, 0.5, 2.0]
    batch = normalize(torch.stack([x, x]), (0.5, 0.25, 0.0), (1.0, 0.5, 0.25))
    assert torch.equal(batch[1], out)
    with pytest.raises(ConfigError, match="3×H×W"):
        normalize(torch.zeros(4, 2, 2), IMAGENET_MEAN, IMAGENET_STD)


def test_preprocessing_json_round_trip():
    pre = Preprocessing.for_size(64, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    assert pre.presize == 74 and pre.interpolation == "bilinear"
    back = Preprocessing.from_json(json.loads(json.dumps(pre.to_json())))
    assert back == pre
    assert Preprocessing.for_size(224).mean == IMAGENET_MEAN


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 64, "presize": 60}, "presize"),
        ({"size": 0, "presize": 10}, "size"),
        ({"size": 8, "presize": 10, "interpolation": "nearest"}, "allowed: bilinear"),
        ({"size": 8, "presize": 10, "std": (0.2, 0.0, 0.2)}, "std"),
        ({"size": 8, "presize": 10, "mean": (0.2, 0.2)}, "mean"),
    ],
)
def test_preprocessing_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Preprocessing(**kwargs)


def test_preprocessing_from_json_names_missing_fields():
    with pytest.raises(ConfigError, match="missing presize, std"):
        Preprocessing.from_json({"size": 8, "mean": [0, 0, 0]})


def _solid(folder: Path, name: str, colour: tuple[int, int, int]) -> Item:
    path = folder / name
    Image.new("RGB", (30, 20), colour).save(path)
    return item_for(path)


def test_mean_std_of_known_images(tmp_path):
    items = [_solid(tmp_path, "r.png", (255, 0, 0)), _solid(tmp_path, "b.png", (0, 0, 255))]
    cache = ImageCache(presize=10, disk_dir=tmp_path / "spill")
    mean, std = compute_mean_std(cache, items)
    assert mean == pytest.approx((0.5, 0.0, 0.5))
    assert std == pytest.approx((0.5, MIN_STD, 0.5))


def test_mean_std_sample_is_deterministic_and_order_free(tmp_path):
    colours = [(10 * i, 200 - 15 * i, 40 + 20 * i) for i in range(8)]
    items = [_solid(tmp_path, f"{i}.png", c) for i, c in enumerate(colours)]
    cache = ImageCache(presize=10, disk_dir=tmp_path / "spill")
    first = compute_mean_std(cache, items, sample=3, seed=5)
    assert cache.decode_count == 3, "only the sample is decoded"
    again = compute_mean_std(cache, list(reversed(items)), sample=3, seed=5)
    assert again == first
    seeds = {compute_mean_std(cache, items, sample=3, seed=s) for s in range(6)}
    assert len(seeds) > 1, "the seed chooses the sample"
    everything = compute_mean_std(cache, items, sample=100)
    assert everything[0] == pytest.approx(
        tuple(sum(c[k] for c in colours) / 8 / 255 for k in range(3))
    )


def test_mean_std_of_nothing_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="no images"):
        compute_mean_std(ImageCache(presize=10, disk_dir=tmp_path), [])
