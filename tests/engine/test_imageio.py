"""The one image loader: sniffing, modes to RGB, orientation, frames, draft, bomb limit."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from loupe.engine.core.errors import DatasetError
from loupe.engine.data import imageio
from loupe.engine.data.imageio import (
    BACKGROUND,
    DEFAULT_MAX_PIXELS,
    UnreadableImage,
    center_crop,
    load_rgb,
    open_image,
    resize_short_side,
    to_rgb,
    to_uint8_tensor,
    validate_image,
)

# --- file makers (also used by test_scan) ---------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bilevel_png(path: Path, width: int, height: int) -> Path:
    """A real, valid 1-bit black PNG of width×height, built without allocating its pixels.

    30000×20000 compresses to about 300 KB; decoding it would allocate 600 MB.
    """
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(1)
    rows_per_block = 500
    parts = [
        compressor.compress(row * min(rows_per_block, height - start))
        for start in range(0, height, rows_per_block)
    ]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )
    return path


def noisy_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    """Noise, so truncating the file really cuts pixel data (flat images compress to nothing)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def truncated_copy(source: Path, target: Path, keep: float | int) -> Path:
    data = source.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else len(data) - keep
    target.write_bytes(data[:cut])
    return target


def write_exif_rotated_jpeg(path: Path, width: int = 40, height: int = 20) -> Path:
    """Stored landscape (left half red, right half blue) with EXIF orientation 6."""
    img = Image.new("RGB", (width, height), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, width // 2, height))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, "JPEG", exif=exif, quality=95)
    return path


@pytest.fixture
def spy_png_allocations(monkeypatch):
    """Record every PNG whose pixel buffer Pillow is about to allocate."""
    allocated: list[tuple[int, int]] = []
    original = PngImagePlugin.PngImageFile.load_prepare

    def spy(self):
        allocated.append(self.size)
        return original(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load_prepare", spy)
    return allocated


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int32)


# --- modes to RGB ---------------------------------------------------------------------


def test_16bit_png_is_scaled_to_8bit_not_clipped(tmp_path):
    levels = np.arange(256, dtype=np.uint16) * 257  # 0, 257, ..., 65535
    path = tmp_path / "deep.png"
    Image.fromarray(levels.reshape(4, 64)).save(path)
    assert Image.open(path).mode == "I;16"

    rgb = load_rgb(path)

    assert rgb.mode == "RGB"
    values = _pixels(rgb)
    expected = np.arange(256).reshape(4, 64)
    for channel in range(3):
        np.testing.assert_array_equal(values[:, :, channel], expected)


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_big_endian_and_32bit_greyscale_holding_16bit_values_are_scaled(mode):
    levels = np.arange(256, dtype=np.uint32) * 257
    if mode == "I;16B":
        img = Image.frombytes(mode, (256, 1), levels.astype(">u2").tobytes())
    else:
        img = Image.fromarray(levels.astype(np.int32).reshape(1, 256), mode="I")
    assert img.mode == mode

    np.testing.assert_array_equal(_pixels(to_rgb(img))[0, :, 1], np.arange(256))


def test_float_image_in_unit_range_is_scaled_and_others_stretched():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    wide = Image.fromarray(np.array([[-10.0, 0.0, 10.0]], dtype=np.float32), mode="F")

    np.testing.assert_array_equal(_pixels(to_rgb(unit))[0, :, 0], [0, 128, 255])
    np.testing.assert_array_equal(_pixels(to_rgb(wide))[0, :, 0], [0, 128, 255])


def test_alpha_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (3, 1))
    img.putdata([(255, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128)])
    path = tmp_path / "alpha.png"
    img.save(path)

    values = _pixels(load_rgb(path))[0]

    assert BACKGROUND == (255, 255, 255)
    assert tuple(values[0]) == (255, 255, 255)  # fully transparent red shows the background
    assert tuple(values[1]) == (255, 0, 0)
    assert all(abs(v - 127) <= 1 for v in values[2])  # half black over white is mid grey


def test_palette_transparency_and_la_are_composited_on_white(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putdata([0, 1])
    gif = tmp_path / "trans.gif"
    palette.save(gif, transparency=0)
    grey_alpha = Image.new("LA", (2, 1))
    grey_alpha.putdata([(0, 0), (0, 255)])
    pa = Image.new("PA", (1, 1))
    pa.putpalette([0, 0, 0] * 256)
    pa.putdata([(0, 0)])

    assert tuple(_pixels(load_rgb(gif))[0, 0]) == (255, 255, 255)
    assert tuple(_pixels(load_rgb(gif))[0, 1]) == (0, 255, 0)
    assert [tuple(p) for p in _pixels(to_rgb(grey_alpha))[0]] == [(255, 255, 255), (0, 0, 0)]
    assert tuple(_pixels(to_rgb(pa))[0, 0]) == (255, 255, 255)


def test_cmyk_and_bilevel_become_rgb(tmp_path):
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putdata([(0, 0, 0, 0), (255, 0, 0, 0)])  # white, cyan
    tiff = tmp_path / "cmyk.tif"
    cmyk.save(tiff)
    bilevel = Image.new("1", (2, 1))
    bilevel.putdata([0, 255])
    png = tmp_path / "bw.png"
    bilevel.save(png)

    assert [tuple(p) for p in _pixels(load_rgb(tiff))[0]] == [(255, 255, 255), (0, 255, 255)]
    assert [tuple(p) for p in _pixels(load_rgb(png))[0]] == [(0, 0, 0), (255, 255, 255)]


# --- orientation, frames, draft -------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    path = write_exif_rotated_jpeg(tmp_path / "rotated.jpg")
    assert Image.open(path).size == (40, 20)

    rgb = load_rgb(path)

    assert rgb.size == (20, 40)
    top, bottom = _pixels(rgb)[2, 10], _pixels(rgb)[37, 10]
    assert top[0] > 200 and top[2] < 60  # the stored left (red) is the displayed top
    assert bottom[2] > 200 and bottom[0] < 60
    assert validate_image(path) == (20, 40)


def test_first_frame_of_animated_gif_webp_and_multipage_tiff(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    for name in ("anim.gif", "anim.webp", "pages.tif"):
        path = tmp_path / name
        frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
        assert Image.open(path).n_frames == 2

        red, green, blue = _pixels(load_rgb(path))[4, 4]

        assert red > 240 and blue < 15, name


def test_jpeg_draft_decodes_at_reduced_scale_but_never_below_the_request(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 1200), (10, 120, 200)).save(path, quality=70)

    assert load_rgb(path).size == (1600, 1200)
    assert load_rgb(path, min_short_side=100).size == (200, 150)  # 1/8 scale
    assert load_rgb(path, min_short_side=400).size == (800, 600)  # 1/2: 1/4 would be 300
    assert load_rgb(path, min_short_side=1200).size == (1600, 1200)


def test_png_ignores_min_short_side(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (400, 300)).save(path)

    assert load_rgb(path, min_short_side=50).size == (400, 300)


# --- sniffing and bad files -----------------------------------------------------------


def test_content_is_sniffed_not_trusted_from_the_extension(tmp_path):
    png_named_jpg = tmp_path / "photo.jpg"
    Image.new("RGB", (6, 4), (0, 255, 0)).save(png_named_jpg, format="PNG")

    with open_image(png_named_jpg) as img:
        assert img.format == "PNG"
    assert load_rgb(png_named_jpg).size == (6, 4)


def test_file_like_input(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (5, 3), (1, 2, 3)).save(buffer, format="PNG")

    rgb = load_rgb(io.BytesIO(buffer.getvalue()))

    assert rgb.size == (5, 3) and rgb.getpixel((0, 0)) == (1, 2, 3)


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good_png = tmp_path / "good.png"
    noisy_rgb(64, 48).save(good_png)
    good_jpg = tmp_path / "good.jpg"
    noisy_rgb(64, 48).save(good_jpg, quality=90)
    good_webp = tmp_path / "good.webp"
    noisy_rgb(64, 48).save(good_webp, lossless=True)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("these are my notes, not a photo\n")
    ico = tmp_path / "icon.jpg"
    Image.new("RGB", (16, 16)).save(ico, format="ICO")
    pcx = tmp_path / "old.png"
    Image.new("RGB", (16, 16)).save(pcx, format="PCX")
    return {
        "empty": (empty, "empty file"),
        "text": (text, "not an image"),
        "png cut in the middle": (truncated_copy(good_png, tmp_path / "t1.png", 0.5), "truncated"),
        "png without IEND": (truncated_copy(good_png, tmp_path / "t2.png", 6), "truncated"),
        "jpeg cut in the middle": (truncated_copy(good_jpg, tmp_path / "t3.jpg", 0.5), "truncated"),
        "jpeg without EOI": (truncated_copy(good_jpg, tmp_path / "t4.jpg", 2), "truncated"),
        "webp cut": (truncated_copy(good_webp, tmp_path / "t5.webp", 0.5), "truncated"),
        "ico renamed": (ico, "unsupported format: ICO"),
        "pcx renamed": (pcx, "unsupported format: PCX"),
    }


def test_every_bad_file_kind_gets_its_reason(tmp_path):
    for kind, (path, reason) in _bad_files(tmp_path).items():
        with pytest.raises(UnreadableImage) as caught:
            validate_image(path)
        assert caught.value.reason.startswith(reason), (kind, caught.value.reason)
        assert str(path) in str(caught.value)
        assert isinstance(caught.value, DatasetError)
        with pytest.raises(DatasetError):
            load_rgb(path)


def test_unsupported_and_not_an_image_list_the_accepted_formats(tmp_path):
    files = _bad_files(tmp_path)
    for kind in ("text", "ico renamed"):
        with pytest.raises(UnreadableImage) as caught:
            open_image(files[kind][0])
        assert "JPEG, PNG, BMP, GIF, WebP, TIFF" in caught.value.reason


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(UnreadableImage) as caught:
        load_rgb(tmp_path / "gone.png")
    assert caught.value.reason == "unreadable: file not found"


# --- decompression bombs --------------------------------------------------------------


def test_600_megapixel_png_is_rejected_from_its_header(tmp_path, spy_png_allocations):
    bomb = write_bilevel_png(tmp_path / "poster.png", 30000, 20000)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's own bomb warning must not leak
        with pytest.raises(UnreadableImage) as caught:
            load_rgb(bomb)

    assert caught.value.reason == (
        "too large: 30000×20000 (600 Mpx) exceeds the safety limit of 89 Mpx"
    )
    assert caught.value.size == (30000, 20000)
    assert spy_png_allocations == []


def test_image_between_pillows_warning_and_error_limits_is_ours_to_reject(
    tmp_path, monkeypatch, spy_png_allocations
):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    big = write_bilevel_png(tmp_path / "big.png", 10000, 10000)  # 100 Mpx: Pillow would warn

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UnreadableImage) as caught:
            open_image(big)
        assert caught.value.reason.startswith("too large: 10000×10000 (100 Mpx)")
        with open_image(big, max_pixels=200_000_000) as img:  # a raised limit is honoured
            assert img.size == (10000, 10000)

    assert Image.MAX_IMAGE_PIXELS >= 200_000_000
    assert spy_png_allocations == []


def test_max_pixels_is_configurable(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (64, 64)).save(path)

    assert validate_image(path) == (64, 64)
    with pytest.raises(UnreadableImage) as caught:
        validate_image(path, max_pixels=1000)
    assert caught.value.reason.startswith("too large: 64×64")
    assert DEFAULT_MAX_PIXELS == 89_478_485


# --- resize, crop, tensor -------------------------------------------------------------


def test_resize_short_side_keeps_aspect():
    assert resize_short_side(Image.new("RGB", (300, 200)), 100).size == (150, 100)
    assert resize_short_side(Image.new("RGB", (200, 300)), 100).size == (100, 150)
    assert resize_short_side(Image.new("RGB", (20, 10)), 40).size == (80, 40)


def test_center_crop_takes_the_middle_with_floor_offsets():
    img = Image.new("RGB", (7, 4))
    img.putpixel((1, 0), (255, 0, 0))  # (7 - 4) // 2 == 1: the crop's top-left

    cropped = center_crop(img, 4)

    assert cropped.size == (4, 4)
    assert cropped.getpixel((0, 0)) == (255, 0, 0)
    assert center_crop(Image.new("RGB", (3, 6)), 4).size == (4, 4)  # upsized, never padded


def test_to_uint8_tensor_is_channels_first_and_owns_its_memory():
    img = Image.new("RGB", (3, 2))
    img.putpixel((2, 1), (10, 20, 30))

    tensor = to_uint8_tensor(img)

    assert tuple(tensor.shape) == (3, 2, 3)
    assert str(tensor.dtype) == "torch.uint8"
    assert tensor[:, 1, 2].tolist() == [10, 20, 30]
    assert tensor.is_contiguous()
    tensor[0, 0, 0] = 99
    assert img.getpixel((0, 0)) == (0, 0, 0)


def test_module_exposes_the_reasons_the_scan_reports():
    assert imageio.too_large_reason(30000, 20000, DEFAULT_MAX_PIXELS).startswith(
        "too large: 30000×20000 (600 Mpx)"
    )
