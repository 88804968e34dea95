"""Scan throughput on many small images: first open vs reopen (files/s, peak RSS).

Usage: .venv/bin/python tests/bench/bench_scan.py [--n 20000] [--workers N]

Generates N small images (32×32, PNG and JPEG alternating) in a temporary folder, then
runs each measured scan in a fresh Python process so each peak RSS is its own:
"first open" validates every file (full decode); "reopen" finds every verdict in the
index and only stats the files. Generation time is not part of the figures. The files
were just written, so both scans read from a warm OS page cache.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FILES_PER_FOLDER = 1000


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def _encoded_variants() -> list[tuple[str, bytes]]:
    """A few distinct small PNGs and JPEGs, encoded once and written many times."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    variants = []
    for index in range(16):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        fmt, suffix = ("PNG", ".png") if index % 2 == 0 else ("JPEG", ".jpg")
        Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
        variants.append((suffix, buffer.getvalue()))
    return variants


def generate(root: Path, count: int) -> float:
    started = time.perf_counter()
    variants = _encoded_variants()
    for number in range(count):
        folder = root / f"class_{number // FILES_PER_FOLDER:03d}"
        if number % FILES_PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        suffix, data = variants[number % len(variants)]
        (folder / f"img_{number:06d}{suffix}").write_bytes(data)
    return time.perf_counter() - started


def child(root: str, workers: int | None) -> None:
    """One measured scan, in its own process; prints one JSON line."""
    sys.path.insert(0, str(REPO))
    from loupe.engine.data import imageio
    from loupe.engine.data.scan import index_path, scan_folder

    validated = 0
    real_validate = imageio.validate_image

    def counting(path, **kwargs):
        nonlocal validated
        validated += 1
        return real_validate(path, **kwargs)

    imageio.validate_image = counting
    rss_before = _peak_rss_mib()
    started = time.perf_counter()
    result = scan_folder(root, workers=workers)
    seconds = time.perf_counter() - started
    figures = {
        "seconds": seconds,
        "items": len(result.items),
        "rejected": len(result.rejected),
        "validated": validated,
        "rss_after_imports_mib": rss_before,
        "peak_rss_mib": _peak_rss_mib(),
        "index_kib": index_path(root).stat().st_size / 1024,
    }
    print(json.dumps(figures))


def _run_child(root: Path, home: Path, workers: int | None) -> dict:
    command = [sys.executable, __file__, "--child", str(root)]
    if workers is not None:
        command += ["--workers", str(workers)]
    env = dict(os.environ, LOUPE_HOME=str(home))
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of image files")
    parser.add_argument("--workers", type=int, default=None, help="validation threads")
    parser.add_argument("--child", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workers)
        return 0
    with tempfile.TemporaryDirectory(prefix="loupe-bench-scan-") as tmp:
        root, home = Path(tmp) / "images", Path(tmp) / "home"
        generation = generate(root, args.n)
        first = _run_child(root, home, args.workers)
        reopen = _run_child(root, home, args.workers)
    print(
        f"scan of {args.n} files (32×32 PNG/JPEG), {os.cpu_count()} CPUs, "
        f"workers={args.workers or 'default'}; generation took {generation:.1f} s (excluded)"
    )
    print()
    print(
        "| scan | seconds | files/s | validated | items | peak RSS (MiB) "
        "| RSS after imports (MiB) | index (KiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in (("first open", first), ("reopen", reopen)):
        rate = args.n / row["seconds"] if row["seconds"] else float("inf")
        print(
            f"| {name} | {row['seconds']:.2f} | {rate:,.0f} | {row['validated']} "
            f"| {row['items']} | {row['peak_rss_mib']:.0f} | {row['rss_after_imports_mib']:.0f} "
            f"| {row['index_kib']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
