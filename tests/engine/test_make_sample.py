"""The bundled sample is built without "Linked Image Not Found" placeholders.

scripts/make_sample.py rejects them (``is_placeholder``); these tests draw placeholders
the way openclipart's renderer did (a thin red frame, a red square with a white ✕, the
words in black on a white page), run the script on a small .deb made here, and check
that no image of the bundled sample is one.
"""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from loupe.engine.core.resources import sample_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def make_sample():
    spec = importlib.util.spec_from_file_location("make_sample", REPO / "scripts" /
                                                  "make_sample.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["make_sample"] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("make_sample", None)


def placeholder(page=(744, 1052), box=(175, 278, 515, 620), alpha=False) -> Image.Image:
    """The placeholder as the package has it: anywhere on a page, any size."""
    img = Image.new("RGBA" if alpha else "RGB", page,
                    (0, 0, 0, 0) if alpha else (255, 255, 255))
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = box
    side = right - left
    draw.rectangle(box, fill=(255, 255, 255, 255), outline=(230, 0, 0, 255),
                   width=max(2, side // 70))
    square = (left + side * 0.35, top + side * 0.1, left + side * 0.65, top + side * 0.4)
    draw.rectangle(square, fill=(240, 0, 0, 255))
    inset = side * 0.08
    for a, b in (((square[0] + inset, square[1] + inset), (square[2] - inset, square[3] - inset)),
                 ((square[0] + inset, square[3] - inset), (square[2] - inset, square[1] + inset))):
        draw.line((a, b), fill=(255, 255, 255, 255), width=max(2, side // 40))
    font = ImageFont.load_default(size=max(8, side // 7))
    draw.multiline_text((left + side / 2, top + side * 0.47), "Linked\nImage\nNot Found",
                        fill=(0, 0, 0, 255), font=font, anchor="ma", align="center")
    return img


def on_white(img: Image.Image, side: int) -> Image.Image:
    canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
    canvas.alpha_composite(img.convert("RGBA"))
    rgb = canvas.convert("RGB")
    rgb.thumbnail((side, side), Image.Resampling.LANCZOS)
    return rgb


@pytest.mark.parametrize("side", [160, 320])
def test_placeholders_are_recognised_wherever_they_sit(make_sample, side):
    cases = [placeholder(), placeholder(box=(20, 30, 360, 372)),
             placeholder(page=(400, 300), box=(140, 60, 300, 220), alpha=True)]
    for case in cases:
        assert make_sample.is_placeholder(on_white(case, side))


def test_pictures_with_red_frames_or_red_centres_are_not_placeholders(make_sample):
    flag = Image.new("RGB", (600, 400), (230, 0, 0))  # a thick red border around a motif
    ImageDraw.Draw(flag).rectangle((40, 40, 560, 360), fill=(255, 255, 255))
    ImageDraw.Draw(flag).ellipse((250, 150, 350, 250), fill=(0, 0, 0))
    eye = Image.new("RGB", (300, 300), (255, 255, 255))  # red corners, red iris in the middle
    draw = ImageDraw.Draw(eye)
    draw.rectangle((40, 40, 260, 260), fill=(240, 0, 0), outline=(0, 0, 0))
    draw.ellipse((45, 45, 255, 255), fill=(255, 255, 255))
    draw.ellipse((110, 110, 190, 190), fill=(240, 60, 60))
    draw.ellipse((135, 135, 165, 165), fill=(0, 0, 0))
    blank = Image.new("RGB", (200, 200), (255, 255, 255))
    for picture in (flag, eye, blank):
        assert not make_sample.is_placeholder(on_white(picture, 320))


def test_the_bundled_sample_holds_no_placeholder(make_sample):
    images = sorted(sample_dir().glob("*.png"))
    assert len(images) >= 300
    found = []
    for path in images:
        with Image.open(path) as img:
            if make_sample.is_placeholder(on_white(img, 320)):
                found.append(path.name)
    assert found == []


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def _deb(path: Path, files: dict[str, bytes]) -> Path:
    """A minimal Debian package (ar archive with a data.tar.xz) holding ``files``."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"./usr/share/openclipart/png/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    members = [("debian-binary", b"2.0\n"), ("data.tar.xz", data.getvalue())]
    blob = bytearray(b"!<arch>\n")
    for name, content in members:
        header = (f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(content):<10}`\n")
        blob += header.encode("ascii") + content + (b"\n" if len(content) % 2 else b"")
    path.write_bytes(bytes(blob))
    return path


def test_the_sample_script_leaves_placeholders_out(make_sample, tmp_path):
    cat = Image.new("RGB", (300, 200), (250, 250, 250))
    ImageDraw.Draw(cat).ellipse((60, 30, 240, 180), fill=(90, 60, 30))
    apple = Image.new("RGB", (200, 200), (255, 255, 255))
    ImageDraw.Draw(apple).ellipse((30, 30, 170, 170), fill=(200, 20, 20))
    deb = _deb(tmp_path / "openclipart-png_test_all.deb", {
        "animals/mammals/cat_01.png": _png(cat),
        "animals/birds/penguin/tux_missing_01.png": _png(placeholder(alpha=True)),
        "food/fruit/apple_01.png": _png(apple),
    })
    out = tmp_path / "samples"
    report = make_sample.build(deb, out, long_side=160, max_mpx=40.0)
    assert report.placeholders == ["animals/birds/penguin/tux_missing_01.png"]
    assert sorted(p.name for p in out.iterdir()) == ["Cat_01.png", "apple_01.png"]
    assert dict(report.written) == {"animals": 1, "food": 1}
