"""Views benchmark: what the Predict and Results pages cost on the GUI thread.

    QT_QPA_PLATFORM=offscreen .venv/bin/python tests/bench/bench_views.py

1. Opacity re-blend: the CAM viewer blends two cached display-sized layers (1024×768)
   with numpy and repaints; no model call. Target: well under a 16 ms frame.
2. Thumbnail grid: 200 PNG files (600×400) decoded on the pool into 128 px thumbnails;
   wall time until the grid is idle, and the worst GUI-thread stall meanwhile, measured by
   a 10 ms QTimer (decoding must not happen on the GUI thread).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def bench_reblend(app) -> None:
    import numpy as np

    from loupe.desktop.widgets.cam_viewer import CamViewer

    viewer = CamViewer()
    viewer.resize(900, 700)
    viewer.show()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    heat = rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    viewer.set_layers(base, heat)
    app.processEvents()
    times = []
    for step in range(60):
        start = time.perf_counter()
        viewer.opacity_slider.setValue(step % 100)
        viewer.view.repaint()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    print(f"opacity re-blend + repaint, 1024x768: median {statistics.median(times):.1f} ms, "
          f"p95 {times[int(len(times) * 0.95) - 1]:.1f} ms, max {times[-1]:.1f} ms "
          f"({len(times)} changes, no model call)")


def bench_grid(app, folder: Path) -> None:
    from PIL import Image
    from PySide6.QtCore import QElapsedTimer, QTimer

    from loupe.desktop.widgets.image_grid import DECODE_TASKS, GridItem, ImageGrid
    from loupe.desktop.workers import TaskRunner

    paths = []
    for i in range(200):
        path = folder / f"img{i:03d}.png"
        Image.new("RGB", (600, 400), (i % 256, (i * 7) % 256, 90)).save(path)
        paths.append(path)
    runner = TaskRunner()
    grid = ImageGrid(runner=runner, thumb_size=128)
    grid.resize(1000, 700)
    grid.show()
    lateness: list[float] = []
    clock = QElapsedTimer()
    timer = QTimer()
    timer.setInterval(10)
    last = [0.0]

    def tick() -> None:
        now = clock.nsecsElapsed() / 1e6
        if last[0]:
            lateness.append(max(0.0, now - last[0] - 10.0))
        last[0] = now

    timer.timeout.connect(tick)
    clock.start()
    timer.start()
    start = time.perf_counter()
    grid.set_items([GridItem(path=p, caption=p.name) for p in paths])
    while grid.grid_model.pending() > 0:
        app.processEvents()
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    timer.stop()
    lateness.sort()
    p99 = lateness[int(len(lateness) * 0.99) - 1] if lateness else 0.0
    print(f"thumbnail grid: 200 PNGs 600x400 -> 128 px in {elapsed:.2f} s "
          f"({200 / elapsed:.0f}/s, {DECODE_TASKS} decode tasks); GUI timer lateness p99 "
          f"{p99:.1f} ms, "
          f"max {lateness[-1] if lateness else 0.0:.1f} ms")
    runner.shutdown()


def main() -> int:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    bench_reblend(app)
    with tempfile.TemporaryDirectory(prefix="loupe-bench-views-") as tmp:
        bench_grid(app, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
