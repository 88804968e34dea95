"""Issue 13: embedded ICC colour profiles are converted to sRGB when images are decoded.

A phone photo in Display P3 holds numbers that mean more saturated colours than the same
numbers in sRGB. The test writes its own ICC v2 matrix/TRC profile with Display P3's
primaries (the format is small and fixed; Pillow can only create sRGB, LAB and XYZ), so
no binary is checked in.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms

from loupe.engine.data.cache import load_presized
from loupe.engine.data.imageio import load_rgb

D50 = (0.9642, 1.0, 0.8249)
# Display P3's colorants, chromatically adapted to D50 (as Apple's own profile has them)
P3 = ((0.5151, 0.2412, -0.0011), (0.2919, 0.6922, 0.0419), (0.1572, 0.0666, 0.7841))
ORANGE, GREY = (200, 100, 50), (128, 128, 128)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def _curve(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"


def _desc(text: str) -> bytes:
    ascii_ = text.encode() + b"\0"
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_)) + ascii_ + b"\0" * (8 + 3 + 67)


def matrix_profile(name: str, red, green, blue, gamma: float = 2.2) -> bytes:
    """An ICC v2 display profile: colorants, one gamma curve per channel, D50 white."""
    tags = [(b"desc", _desc(name)), (b"wtpt", _xyz(*D50)), (b"rXYZ", _xyz(*red)),
            (b"gXYZ", _xyz(*green)), (b"bXYZ", _xyz(*blue)), (b"rTRC", _curve(gamma)),
            (b"gTRC", _curve(gamma)), (b"bTRC", _curve(gamma)),
            (b"cprt", b"text\0\0\0\0none\0")]
    start = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        data += b"\0" * (-(start + len(data)) % 4)  # tags start on 4-byte boundaries
        table += signature + struct.pack(">II", start + len(data), len(body))
        data += body
    header = (struct.pack(">I", start + len(data)) + b"\0" * 4 + struct.pack(">I", 0x02100000)
              + b"mntrRGB XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 28
              + _s15(D50[0]) + _s15(D50[1]) + _s15(D50[2]) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def _picture(path, icc: bytes | None):
    """Row 0: orange; row 1: grey, P3 red, P3 green, orange."""
    img = Image.new("RGB", (4, 2), ORANGE)
    for x, colour in enumerate((GREY, (255, 0, 0), (0, 255, 0))):
        img.putpixel((x, 1), colour)
    img.save(path, "PNG", **({"icc_profile": icc} if icc is not None else {}))
    return path


def _raw(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(int)


def test_a_display_p3_picture_is_converted_to_srgb(tmp_path):
    path = _picture(tmp_path / "p3.png", matrix_profile("Display P3 (test)", *P3))
    raw, decoded = _raw(path), np.asarray(load_rgb(path)).astype(int)
    assert (raw[0, 0] == ORANGE).all()  # stored as written
    r, g, b = decoded[0, 0]
    # P3's orange is more saturated than sRGB's: red rises, green and blue fall
    assert r >= ORANGE[0] + 10 and g < ORANGE[1] and b <= ORANGE[2] - 15, decoded[0, 0]
    grey = decoded[1, 0]
    assert grey.max() - grey.min() <= 1 and abs(int(grey[0]) - GREY[0]) <= 3  # stays grey
    assert tuple(decoded[1, 1]) == (255, 0, 0)  # P3's red is beyond sRGB: clipped to it
    assert tuple(decoded[1, 2]) == (0, 255, 0)


def test_the_training_and_prediction_decoder_converts_too(tmp_path):
    path = _picture(tmp_path / "p3.png", matrix_profile("Display P3 (test)", *P3))
    plain = _picture(tmp_path / "plain.png", None)
    tagged = load_presized(path, 2, resize="squish").numpy()
    untagged = load_presized(plain, 2, resize="squish").numpy()
    assert tagged[0].sum() > untagged[0].sum() and tagged[2].sum() < untagged[2].sum()


def test_srgb_tagged_and_untagged_pictures_are_unchanged(tmp_path):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for name, icc in (("srgb.png", srgb), ("none.png", None)):
        path = _picture(tmp_path / name, icc)
        assert (np.asarray(load_rgb(path)).astype(int) == _raw(path)).all(), name


@pytest.mark.parametrize(
    "icc",
    [
        b"not a colour profile at all",
        matrix_profile("Display P3 (test)", *P3)[:200],  # truncated
        matrix_profile("Display P3 (test)", *P3).replace(b"RGB XYZ ", b"CMYKXYZ "),
        b"\0" * 128 + b"\xff\xff\xff\xff",
    ],
)
def test_a_broken_profile_leaves_the_pixels_as_stored(tmp_path, icc):
    path = _picture(tmp_path / "broken.png", icc)
    assert (np.asarray(load_rgb(path)).astype(int) == _raw(path)).all()


def test_a_profile_on_a_picture_with_transparency_is_applied_after_compositing(tmp_path):
    img = Image.new("RGBA", (2, 1), (*ORANGE, 255))
    img.putpixel((1, 0), (0, 0, 0, 0))  # transparent: composited on white
    buffer = io.BytesIO()
    img.save(buffer, "PNG", icc_profile=matrix_profile("Display P3 (test)", *P3))
    decoded = np.asarray(load_rgb(io.BytesIO(buffer.getvalue()))).astype(int)
    assert decoded[0, 0, 0] >= ORANGE[0] + 10
    assert (decoded[0, 1] >= 254).all()  # white stays white
