"""Benchmark: the decoded-image cache, epoch 1 (decode) vs epoch 2 (cache) data time.

Runs the bundled sample (or ``--images DIR``, or ``--generate N`` photo-sized JPEGs)
through ImageCache at 64 px and 224 px training size, once with everything in RAM and
once with a zero RAM budget so every image goes through the on-disk spill files, then a
fresh cache on the same spill folder (a new session). Reports seconds, images/s and
decoder calls per epoch; epoch 2 must decode nothing, and the script exits non-zero if
it does. Prints a markdown table.

Usage: ``python tests/bench/bench_cache.py [--images DIR | --generate N] [--sizes 64 224]
[--workers N]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from loupe.engine.core.resources import sample_dir
from loupe.engine.data.cache import ImageCache, presize_for

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass(frozen=True)
class Item:
    """What ImageCache reads from loupe.engine.data.scan.ImageItem."""

    path: Path
    size: int
    mtime_ns: int


def list_items(folder: Path) -> list[Item]:
    items = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in SUFFIXES and path.is_file():
            st = path.stat()
            items.append(Item(path, st.st_size, st.st_mtime_ns))
    return items


def generate(folder: Path, count: int) -> Path:
    """``count`` 1024×768 JPEGs with photo-like noise, so decoding costs what photos cost."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 160, 1024, dtype=np.float32)[None, :, None]
    for i in range(count):
        noise = rng.normal(0, 40, (768, 1024, 3)).astype(np.float32)
        pixels = np.clip(ramp + noise + (i * 37) % 90, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"photo_{i:05d}.jpg", quality=90)
    return folder


def epoch(cache: ImageCache, items: list[Item]) -> tuple[float, int]:
    """One pass in training order (one thread, like the batch loader): seconds, decodes."""
    before = cache.decode_count
    start = time.perf_counter()
    for item in items:
        cache.get(item)
    return time.perf_counter() - start, cache.decode_count - before


def run_mode(items: list[Item], size: int, mode: str, spill: Path, workers: int) -> list[dict]:
    budget = 2 * 1024**3 if mode == "RAM" else 0
    presize = presize_for(size)
    rows = []
    cache = ImageCache(presize, ram_budget_bytes=budget, disk_dir=spill)
    if workers > 1:
        start = time.perf_counter()
        cache.warm(items, workers=workers)
        rows.append((f"1 (warm, {workers} threads)", time.perf_counter() - start,
                     cache.decode_count, False))
    else:
        rows.append(("1", *epoch(cache, items), False))
    rows.append(("2", *epoch(cache, items), True))
    rows.append(("3", *epoch(cache, items), True))
    ram_mb = cache.stats()["ram_bytes"] / 1e6
    if mode != "RAM":
        fresh = ImageCache(presize, ram_budget_bytes=budget, disk_dir=spill)
        rows.append(("new session, 1", *epoch(fresh, items), True))
    spill_mb = sum(p.stat().st_size for p in spill.rglob("*.npy")) / 1e6 if spill.exists() else 0
    return [
        {"size": size, "presize": presize, "mode": mode, "epoch": name, "seconds": secs,
         "rate": len(items) / secs if secs > 0 else float("inf"), "decodes": decodes,
         "ram_mb": ram_mb, "spill_mb": spill_mb, "must_be_cached": cached}
        for name, secs, decodes, cached in rows
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=Path, default=None, help="default: bundled sample")
    parser.add_argument("--generate", type=int, default=0, metavar="N",
                        help="benchmark N generated 1024×768 JPEGs instead")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--workers", type=int, default=1,
                        help="decode epoch 1 with ImageCache.warm on N threads (default: 1)")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="loupe-bench-cache-") as tmp:
        if args.generate:
            folder = generate(Path(tmp) / "generated", args.generate)
        else:
            folder = args.images or sample_dir()
        items = list_items(folder)
        if not items:
            print(f"no images in {folder}", file=sys.stderr)
            return 2
        for size in args.sizes:
            for mode in ("RAM", "spill"):
                rows += run_mode(items, size, mode, Path(tmp) / f"{size}-{mode}", args.workers)
    print(f"ImageCache: {len(items)} images from {folder}, {os.cpu_count()} CPUs\n")
    print("| size | presize | mode | epoch | seconds | images/s | decodes | RAM MB | spill MB |")
    print("|---:|---:|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']} | {r['presize']} | {r['mode']} | {r['epoch']} | "
              f"{r['seconds']:.3f} | {r['rate']:.0f} | {r['decodes']} | {r['ram_mb']:.1f} | "
              f"{r['spill_mb']:.1f} |")
    bad = [r for r in rows if r["must_be_cached"] and r["decodes"]]
    if bad:
        print(f"\nFAIL: epochs after the first decoded images: {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
