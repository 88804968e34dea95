"""Regenerate resources/samples/ from Debian's ``openclipart-png`` package.

Usage::

    cd /tmp && apt-get download openclipart-png
    python scripts/make_sample.py /tmp/openclipart-png_*.deb

The .deb is read with the standard library (ar + tar), so no dpkg is needed and the
script runs on any OS. It takes the ``animals`` and ``food`` trees, skips symlinks (they
duplicate other files in the package) and sources above ``--max-source-mpx``, composites
transparency on white (the same background Loupe's loader uses), rejects "Linked Image
Not Found" placeholders (:func:`is_placeholder`: a clip whose linked bitmap was missing
was rendered as a red frame around a red ✕ and that text; two in these trees were labelled
animal), downscales to at most ``--long-side`` px, and stores 256-colour PNGs, which keep
clip art's flat colours and fit the repository budget. File names follow the Oxford-IIIT
Pets layout from fastai lesson 1: one flat folder, animals Capitalized, food lowercase,
``<name>_<NN>.png``, so both the "upper" rule and the Pets regex ``^(.+)_\\d+\\.\\w+$``
label it.

The output is deterministic for a given package version and Pillow/zlib build: sources are
processed in sorted order and names are numbered in that order. Requires Pillow and numpy.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import sys
import tarfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

PNG_ROOT = "usr/share/openclipart/png/"
CLASSES = {"animals": True, "food": False}  # tree -> Capitalized?
BACKGROUND = (255, 255, 255)
PLACEHOLDER_CHECK_SIDE = 320  # placeholders are judged at this size (thin frame lines survive)


@dataclass
class Report:
    written: Counter = field(default_factory=Counter)
    too_large: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    placeholders: list[str] = field(default_factory=list)
    symlinks: int = 0
    total_bytes: int = 0


def read_deb_members(deb: Path) -> dict[str, bytes]:
    """Regular PNG files of the animals/food trees from the .deb's data archive."""
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise SystemExit(f"{deb} is not a Debian package (no ar header)")
    pos, payload = 8, None
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        if name.startswith("data.tar"):
            payload = data[pos + 60 : pos + 60 + size]
            break
        pos += 60 + size + (size % 2)
    if payload is None:
        raise SystemExit(f"{deb} holds no data.tar.* member")
    members: dict[str, bytes] = {}
    symlinks = 0
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:*") as tar:
        for info in tar:
            rel = info.name.removeprefix("./")
            if not rel.startswith(PNG_ROOT) or not rel.lower().endswith(".png"):
                continue
            if rel[len(PNG_ROOT) :].split("/", 1)[0] not in CLASSES:
                continue
            if info.issym() or info.islnk():
                symlinks += 1
                continue
            if info.isfile():
                handle = tar.extractfile(info)
                assert handle is not None
                members[rel[len(PNG_ROOT) :]] = handle.read()
    members["__symlinks__"] = str(symlinks).encode()
    return members


def readable_name(rel: str) -> str:
    """``animals/bugs/flying_wasp_gerald_g._01.png`` -> ``Flying_wasp_gerald_g``."""
    parts = rel.split("/")
    tree, stem = parts[0], Path(parts[-1]).stem
    name = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")
    previous = None
    while previous != name:  # drop trailing counters and "_r"-style suffixes
        previous = name
        name = re.sub(r"_(\d+[a-z]?|[a-z])$", "", name)
    if not name or not name[0].isalpha():
        folder = parts[-2] if len(parts) > 2 else tree
        name = f"{folder}_{name}".strip("_")
    if len(name) > 32:
        name = name[:32].rsplit("_", 1)[0] or name[:32]
    return name[0].upper() + name[1:] if CLASSES[tree] else name


def is_placeholder(rgb: Image.Image) -> bool:
    """Whether a picture is the "Linked Image Not Found" placeholder, not a drawing.

    That placeholder is what a clip whose linked bitmap went missing was rendered as: on
    a white page, a thin red frame around a red square with a white ✕ (top, centred) and
    the black words below it, nothing else. Judged on the content's bounding box (the
    placeholder sits anywhere on the page, at any size): red on all four edges of the
    box, white just inside them (a thin frame, not a flag's border), mostly white within,
    a little red centred in the upper part, dark text under it. Over the 6,900 images of
    openclipart-png 0.18 this finds exactly the two placeholders, at 160 and 320 px.
    """
    a = np.asarray(rgb.convert("RGB"), dtype=np.int16)
    ink = a.min(axis=2) < 200
    if not ink.any():
        return False
    ys, xs = np.nonzero(ink)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    height, width = bottom - top, right - left
    if height < 24 or width < 24 or not 0.5 <= width / height <= 2.0:
        return False
    box = a[top:bottom, left:right]
    red = (box[..., 0] > 150) & (box[..., 0] - np.maximum(box[..., 1], box[..., 2]) > 60)
    t = max(2, round(min(height, width) * 0.04))  # the frame's band, antialiasing included
    edges = (red[:t].any(axis=0), red[-t:].any(axis=0),
             red[:, :t].any(axis=1), red[:, -t:].any(axis=1))
    if min(edge.mean() for edge in edges) < 0.8:
        return False  # no red frame around the content
    inside = (red[t:2 * t, t:-t], red[-2 * t:-t, t:-t], red[t:-t, t:2 * t],
              red[t:-t, -2 * t:-t])
    if max(band.mean() for band in inside) > 0.3:
        return False  # a thick red border (a flag), not a thin frame
    inner, inner_red = box[2 * t:-2 * t, 2 * t:-2 * t], red[2 * t:-2 * t, 2 * t:-2 * t]
    dark = inner.max(axis=2) < 100
    white = (inner.min(axis=2) > 220).mean()
    if white < 0.45 or not 0.01 < inner_red.mean() < 0.35 or dark.mean() < 0.01:
        return False
    rows, cols = inner_red.shape
    red_y, red_x = (float(c.mean()) for c in np.nonzero(inner_red))
    text_y = float(np.nonzero(dark)[0].mean())
    return red_y < 0.45 * rows and abs(red_x / cols - 0.5) < 0.15 and text_y > red_y


class Placeholder(ValueError):
    """The source is a "Linked Image Not Found" placeholder, not an image."""


def convert(data: bytes, long_side: int, max_pixels: int) -> bytes | None:
    """Composite on white, downscale, quantize; None when the source is too large.

    Raises :class:`Placeholder` for a "Linked Image Not Found" placeholder.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                return None
            rgba = img.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    canvas.alpha_composite(rgba)
    rgb = canvas.convert("RGB")
    check = rgb.copy()
    check.thumbnail((PLACEHOLDER_CHECK_SIDE, PLACEHOLDER_CHECK_SIDE), Image.Resampling.LANCZOS)
    if is_placeholder(check):
        raise Placeholder(f"{rgb.width}×{rgb.height} 'Linked Image Not Found' placeholder")
    rgb.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    small = rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, "PNG", optimize=True)
    return out.getvalue()


def build(deb: Path, out_dir: Path, long_side: int, max_mpx: float) -> Report:
    members = read_deb_members(deb)
    report = Report(symlinks=int(members.pop("__symlinks__")))
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()  # our own generated folder, never user data
    seen: set[str] = set()
    counters: Counter = Counter()
    for rel in sorted(members):
        try:
            png = convert(members[rel], long_side, int(max_mpx * 1_000_000))
        except Placeholder:
            report.placeholders.append(rel)
            continue
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            report.unreadable.append(f"{rel}: {exc}")
            continue
        if png is None:
            report.too_large.append(rel)
            continue
        digest = hashlib.sha256(png).hexdigest()
        if digest in seen:
            report.duplicates.append(rel)
            continue
        seen.add(digest)
        base = readable_name(rel)
        counters[base] += 1
        (out_dir / f"{base}_{counters[base]:02d}.png").write_bytes(png)
        report.written[rel.split("/", 1)[0]] += 1
        report.total_bytes += len(png)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("deb", type=Path, help="openclipart-png_*.deb")
    repo = Path(__file__).resolve().parent.parent
    parser.add_argument("--out", type=Path, default=repo / "resources" / "samples")
    parser.add_argument("--long-side", type=int, default=160)
    parser.add_argument("--max-source-mpx", type=float, default=40.0)
    args = parser.parse_args(argv)
    report = build(args.deb, args.out, args.long_side, args.max_source_mpx)
    print(f"written: {dict(report.written)} ({report.total_bytes / 1e6:.2f} MB) to {args.out}")
    print(f"skipped symlinks: {report.symlinks}")
    print(f"skipped > {args.max_source_mpx:g} Mpx: {len(report.too_large)}")
    for rel in report.too_large:
        print(f"  {rel}")
    print(f"skipped 'Linked Image Not Found' placeholders: {len(report.placeholders)}")
    for rel in report.placeholders:
        print(f"  {rel}")
    print(f"skipped duplicates after downscaling: {len(report.duplicates)}")
    for rel in report.duplicates:
        print(f"  {rel}")
    print(f"unreadable: {len(report.unreadable)}")
    for line in report.unreadable:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
