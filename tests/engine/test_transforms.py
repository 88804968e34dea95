"""Evaluation transform (validation == prediction) and normalization statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from loupe.engine.core.errors import ConfigError, DatasetError
from loupe.engine.data.cache import ImageCache, presize_for
from loupe.engine.data.imageio import load_rgb
from loupe.engine.data.stats import IMAGENET_MEAN, IMAGENET_STD, MIN_STD, compute_mean_std
from loupe.engine.data.transforms import (
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


# -- resize methods (crop, squish, pad) -----------------------------------------------------

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def edged(path: Path) -> Path:
    """60×30: a red left quarter, a blue right quarter, white between (the edges matter)."""
    img = Image.new("RGB", (60, 30), WHITE)
    img.paste(RED, (0, 0, 15, 30))
    img.paste(BLUE, (45, 0, 60, 30))
    img.save(path)
    return path


def _view(path: Path, resize: str, size: int = 16) -> torch.Tensor:
    pre = Preprocessing.for_size(size, resize=resize)
    return eval_tensor_from_path(path, pre.size, pre.presize, resize=resize)


def _is_colour(pixels: torch.Tensor, rgb: tuple[int, int, int]) -> bool:
    """Every pixel of a 3×… tensor within 0.1 of ``rgb``."""
    want = torch.tensor(rgb, dtype=torch.float32).div(255).view(3, *[1] * (pixels.ndim - 1))
    return bool((pixels - want).abs().max() < 0.1)


def test_crop_loses_the_edges_of_a_wide_image(tmp_path):
    x = _view(edged(tmp_path / "e.png"), "crop")
    assert x.shape == (3, 16, 16)
    assert _is_colour(x, WHITE), "the center crop of this image is all white"


def test_squish_keeps_both_edges_and_fills_the_square(tmp_path):
    x = _view(edged(tmp_path / "e.png"), "squish")
    assert x.shape == (3, 16, 16)
    assert _is_colour(x[:, :, :3], RED) and _is_colour(x[:, :, -3:], BLUE)
    assert _is_colour(x[:, :, 6:10], WHITE)


def test_pad_keeps_both_edges_inside_a_constant_black_border(tmp_path):
    x = _view(edged(tmp_path / "e.png"), "pad")
    assert x.shape == (3, 16, 16)
    # 60×30 fits as 16×8, centred: rows 0-3 and 12-15 are padding, exactly zero
    assert float(x[:, :4].abs().max()) == 0.0 and float(x[:, 12:].abs().max()) == 0.0
    assert _is_colour(x[:, 5:11, :3], RED) and _is_colour(x[:, 5:11, -3:], BLUE)


def test_pad_border_is_left_and_right_for_a_tall_image(tmp_path):
    path = tmp_path / "tall.png"
    Image.new("RGB", (10, 40), WHITE).save(path)
    x = _view(path, "pad")
    assert float(x[:, :, :6].max()) == 0.0 and float(x[:, :, 10:].max()) == 0.0
    assert _is_colour(x[:, :, 7:9], WHITE)


def test_squish_and_pad_cache_the_input_square_crop_a_larger_short_side():
    assert Preprocessing.for_size(16, resize="crop").presize == presize_for(16) == 19
    for method in ("squish", "pad"):
        assert Preprocessing.for_size(16, resize=method).presize == 16
        assert presize_for(16, method) == 16


@pytest.mark.parametrize("resize", ["crop", "squish", "pad"])
def test_every_method_is_the_same_from_the_cache_and_from_a_file(tmp_path, varied_files, resize):
    """Validation (cache) and prediction (file, loaded image) agree exactly for each method."""
    pre = Preprocessing.for_size(24, resize=resize)
    cache = ImageCache(pre.presize, ram_budget_bytes=0, disk_dir=tmp_path / "spill",
                       resize=resize)
    for path in varied_files:
        cache.get(item_for(path))  # decode, spill: the second get reads the spill file
        from_cache = pre.eval_input_from_cached(cache.get(item_for(path)))
        assert from_cache.shape == (3, 24, 24)
        assert torch.equal(pre.eval_input_from_path(path), from_cache), path.name
        image = load_rgb(path, min_short_side=pre.presize)  # what Predictor.prepare does
        from_image = eval_tensor_from_image(image, 24, pre.presize, resize)
        assert torch.equal(normalize(from_image, pre.mean, pre.std), from_cache), path.name


def test_square_methods_reject_a_crop_cache_entry():
    with pytest.raises(ConfigError, match="squish image must be square"):
        eval_tensor_from_cached(torch.zeros(3, 10, 12, dtype=torch.uint8), 8, "squish")


def test_square_view_is_resized_for_a_smaller_progressive_size():
    u8 = torch.zeros(3, 16, 16, dtype=torch.uint8)
    u8[0, :, :8] = 255  # left half red
    x = eval_tensor_from_cached(u8, 8, "squish")
    assert x.shape == (3, 8, 8)
    assert _is_colour(x[:, :, :3], RED) and _is_colour(x[:, :, -3:], (0, 0, 0))


@pytest.mark.parametrize(
    ("resize", "words"),
    [("crop", "center-crop 32×32"), ("squish", "ignoring its aspect ratio"),
     ("pad", "pad to 32×32 with the constant colour RGB(0, 0, 0)")],
)
def test_preprocessing_json_round_trip_keeps_the_resize_method(resize, words):
    pre = Preprocessing.for_size(32, resize=resize)
    data = json.loads(json.dumps(pre.to_json()))
    assert data["resize"] == resize
    assert Preprocessing.from_json(data) == pre
    assert words in pre.recipe()


def test_preprocessing_without_a_resize_field_is_an_old_crop_bundle():
    old = {"size": 32, "presize": 37, "interpolation": "bilinear",
           "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}
    assert Preprocessing.from_json(old).resize == "crop"


def test_preprocessing_rejects_an_unknown_resize_method_naming_the_choices():
    with pytest.raises(ConfigError, match="'stretch' is not one of: crop, squish, pad"):
        Preprocessing(size=8, presize=8, resize="stretch")
    with pytest.raises(ConfigError, match="'fit'.*crop, squish, pad"):
        Preprocessing.from_json({**Preprocessing.for_size(8).to_json(), "resize": "fit"})
