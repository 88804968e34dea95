"""Prediction benchmarks (``make bench``): a plain script that prints a markdown table.

1. One 12-megapixel JPEG, resnet18 at 224 px, after warm-up: ``Predictor.predict`` vs the
   floor (the same JPEG decoded with draft mode + a bare ``model(x)``), measured
   interleaved in the same process. Target: predict p50 ≤ 1.3 × floor p50.
2. Prediction + Grad-CAM (one forward, backward only from the target layer) vs plain
   prediction. Target: ≤ 1.5 ×. Also the 12-MP overlay render, reported separately.
3. Folder throughput (images/s): batch 1 vs batch 16, and ``predict_folder`` end to end
   (scan + predict + CSV), first run and with the scan index warm.

Run: ``.venv/bin/python tests/bench/bench_predict.py [--repeats N] [--threads N]``.
Figures go to docs/benchmarks.md by hand. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A photo-like JPEG: smooth gradients plus sensor-like noise, quality 90."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    channels = [
        180 * xs + 40 * ys + 20,
        90 + 80 * np.sin(6.0 * xs + 3.0 * ys + seed),
        200 * ys * (1 - xs) + 30,
    ]
    picture = np.stack([np.broadcast_to(c, (height, width)) for c in channels], axis=-1)
    picture = picture + rng.normal(0.0, 12.0, picture.shape).astype(np.float32)
    Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p95 * 1000


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3):
    """Time each function ``repeats`` times, alternating, so load changes hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(_timed(fn))
    return {name: _percentiles(values) for name, values in samples.items()}


def _floor(photo: Path, model, size: int, presize: int):
    """The floor: draft-decode the JPEG and run the bare model on a 224 px tensor."""
    import torch
    from PIL import Image

    x = torch.zeros(1, 3, size, size)

    def run() -> None:
        with Image.open(photo) as img:
            img.draft("RGB", (presize, presize))
            img.convert("RGB")
        with torch.inference_mode():
            model(x)

    return run


def bench_single(work: Path, repeats: int) -> list[tuple[str, float, float, str]]:
    import torch

    from loupe.engine.data.transforms import Preprocessing
    from loupe.engine.inference.cam import compute_cam, render_overlay
    from loupe.engine.inference.predict import Predictor
    from loupe.engine.models.bundle import save_bundle
    from loupe.engine.models.factory import create_model

    torch.manual_seed(0)
    photo = _photo(work / "photo_12mp.jpg", 4000, 3000)
    model = create_model("resnet18", 10)
    bundle = save_bundle(work / "resnet18.loupe", model, {
        "architecture": "resnet18",
        "classes": [f"class{i}" for i in range(10)],
        "preprocessing": Preprocessing.for_size(224).to_json(),
    })
    predictor = Predictor.from_file(bundle)
    pre = predictor.preprocessing
    floor = _floor(photo, predictor.model, pre.size, pre.presize)
    timings = _interleaved({
        "floor": floor,
        "predict": lambda: predictor.predict(photo),
        "predict+cam": lambda: compute_cam(predictor, photo),
    }, repeats)
    result = compute_cam(predictor, photo)
    overlay = _interleaved({"overlay": lambda: render_overlay(result, opacity=0.5)},
                           max(5, repeats // 3), warmup=1)["overlay"]
    base, pred, cam = timings["floor"], timings["predict"], timings["predict+cam"]
    return [
        ("draft decode + bare model(x) (floor)", *base, ""),
        ("Predictor.predict", *pred, f"{pred[0] / base[0]:.2f}× floor (target ≤ 1.3×)"),
        ("predict + Grad-CAM (compute_cam)", *cam,
         f"{cam[0] / pred[0]:.2f}× predict (target ≤ 1.5×)"),
        ("12-MP overlay render (full decode + blend)", *overlay, "separate, on demand"),
    ]


def bench_folder(work: Path, count: int) -> list[tuple[str, float, str]]:
    from loupe.engine.inference.folder import predict_folder
    from loupe.engine.inference.predict import Predictor

    folder = work / "folder"
    folder.mkdir()
    paths = [_photo(folder / f"img{i:03d}.jpg", 1600, 1200, seed=i) for i in range(count)]
    predictor = Predictor.from_file(work / "resnet18.loupe")
    rows = []
    for batch in (1, 16):
        seconds = _timed(lambda b=batch: predictor.predict_many(paths, batch_size=b))
        rows.append((f"predict_many, batch {batch}", count / seconds, "2-MP JPEGs"))
    for run in ("first run (scan validates)", "second run (scan index warm)"):
        seconds = _timed(lambda: predict_folder(predictor, folder, work / "out.csv",
                                                batch_size=16))
        rows.append((f"predict_folder, batch 16, {run}", count / seconds, "scan + predict + CSV"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--images", type=int, default=48, help="images for the folder bench")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("LOUPE_HOME", str(Path(tmp) / "home"))
        work = Path(tmp)
        single = bench_single(work, args.repeats)
        folder = bench_folder(work, args.images)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"\nCPU: {os.cpu_count()} cores (load average {load}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.repeats} runs after warm-up\n")
    print("| 12-MP JPEG, resnet18 @ 224 px | p50 ms | p95 ms | ratio |")
    print("|---|---:|---:|---|")
    for name, p50, p95, note in single:
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {note} |")
    print("\n| folder prediction | images/s | note |")
    print("|---|---:|---|")
    for name, rate, note in folder:
        print(f"| {name} | {rate:.1f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
