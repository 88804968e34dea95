"""Draw Loupe's application icon (a magnifying glass) as resources/icons/loupe.png.

Drawn at 4x and downsampled so the edges are antialiased; the SVG next to it is the same
shape for launchers that prefer vectors. Usage: ``python scripts/make_icon.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 256
SCALE = 4
RIM = (38, 70, 120, 255)
GLASS = (170, 215, 245, 255)
SHINE = (255, 255, 255, 200)
HANDLE = (120, 72, 36, 255)


def draw_icon(size: int = SIZE) -> Image.Image:
    big = size * SCALE
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)

    def s(v: float) -> int:
        return round(v * big / 256)

    # Handle first, so the rim covers its inner end.
    draw.line([(s(150), s(150)), (s(232), s(232))], fill=HANDLE, width=s(34))
    draw.ellipse([s(215), s(215), s(249), s(249)], fill=HANDLE)
    draw.ellipse([s(14), s(14), s(182), s(182)], fill=RIM)
    draw.ellipse([s(34), s(34), s(162), s(162)], fill=GLASS)
    draw.arc([s(52), s(52), s(144), s(144)], start=190, end=260, fill=SHINE, width=s(12))
    return img.resize((size, size), Image.Resampling.LANCZOS)


def main() -> int:
    out = Path(__file__).resolve().parent.parent / "resources" / "icons" / "loupe.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_icon().save(out, "PNG", optimize=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
