"""Benchmark: training throughput on 1 process vs N processes (torch.distributed, DDP).

Every measurement goes through the launcher ``loupe train --nproc`` uses
(:func:`loupe.engine.training.launch.launch_events`), so each pays the same process
start-up, and reads rank 0's epoch events. The batch size is per process, as in any DDP
run: N processes train N times as many images per step.

- **CPU** (default, gloo): three runs: one process on all cores (what a person runs
  without ``--nproc``), one process on ``cores / N`` threads (one rank's share of the
  machine: the unit of scaling), and N processes (each on ``cores / N`` threads, as
  ``distributed.cap_threads`` gives them).
- **GPU** (``--device cuda``, NCCL, when this machine has several): one process on one
  GPU, then one process per GPU.

img/s is training images per second over the epochs after the first (the first decodes
every image and is reported apart): images an epoch trains (``steps × batch × N``)
divided by the epoch's wall time, which includes the (sharded) validation pass. Scaling
efficiency = img/s of N processes / (N × img/s of one rank's share).

Usage: ``python tests/bench/bench_distributed.py [--nproc 2] [--device cpu|cuda]
[--images DIR --label RULE] [--n-images 640] [--arch resnet18] [--size 64] [--bs 32]
[--epochs 3]``. Do not run it while another benchmark or a test suite runs: it measures
the machine.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
from pathlib import Path
from typing import Any


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=0,
                        help="processes (default: 2 on the CPU, every GPU with --device cuda)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--images", type=Path, default=None,
                        help="image folder (default: generated colour images)")
    parser.add_argument("--label", default="parent")
    parser.add_argument("--n-images", type=int, default=640, help="generated images")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--bs", type=int, default=32, help="batch size per process")
    parser.add_argument("--epochs", type=int, default=3)
    return parser.parse_args()


def _make_images(root: Path, count: int) -> Path:
    from PIL import Image

    rng = random.Random(0)
    for i in range(count):
        name = ("warm", "cool")[i % 2]
        base = (160, 100, 90) if name == "warm" else (90, 100, 160)
        (root / name).mkdir(parents=True, exist_ok=True)
        colour = tuple(min(255, max(0, c + rng.randint(-80, 80))) for c in base)
        img = Image.new("RGB", (96, 80), colour)
        for _ in range(200):
            img.putpixel((rng.randrange(96), rng.randrange(80)),
                         tuple(rng.randrange(256) for _ in range(3)))
        img.save(root / name / f"{name}_{i:04d}.png")
    return root


def _measure(prepared: Any, args: argparse.Namespace, nproc: int, threads: int) -> dict:
    from loupe.engine.core.events import EpochEnded, Failed, Started
    from loupe.engine.training import TrainConfig
    from loupe.engine.training.launch import job_for, launch_events

    config = TrainConfig(arch=args.arch, epochs=args.epochs, freeze_epochs=0, size=args.size,
                         batch_size=args.bs, lr=1e-3, pretrained="none", seed=1,
                         threads=threads, device=args.device)
    seconds: list[float] = []
    info: dict = {}
    for event in launch_events(job_for(prepared, config), nproc):
        if isinstance(event, Started) and event.task == "train":
            info = dict(event.info)
        elif isinstance(event, EpochEnded):
            seconds.append(float(event.metrics["seconds"]))
        elif isinstance(event, Failed):
            raise SystemExit(f"run failed: {event.message}")
    n_train = int(info["n_train"])
    per_epoch = n_train // (args.bs * nproc) * args.bs * nproc
    later = seconds[1:] or seconds
    return {"img_s": per_epoch / statistics.median(later), "first_s": seconds[0],
            "epoch_s": statistics.median(later), "images": per_epoch,
            "world_size": info.get("world_size")}


def main() -> int:
    args = _args()
    cores = os.cpu_count() or 1
    if args.device == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        nproc = args.nproc or gpus
        if gpus < 2 or nproc > gpus:
            raise SystemExit(f"--device cuda needs at least 2 GPUs (and --nproc <= {gpus})")
    else:
        nproc = args.nproc or 2
    share = max(1, cores // nproc)
    with tempfile.TemporaryDirectory(prefix="loupe-bench-dist-") as tmp:
        os.environ["LOUPE_HOME"] = str(Path(tmp) / "home")  # the workers inherit it
        from loupe.engine.data.dataset import DataSpec, prepare_data
        from loupe.engine.data.labels import parse_label_rule
        from loupe.engine.data.splits import parse_split_rule

        root = args.images or _make_images(Path(tmp) / "images", args.n_images)
        prepared = prepare_data(DataSpec(root, parse_label_rule(args.label),
                                         parse_split_rule("random:0.2")))
        print(f"{args.arch} at {args.size} px, batch {args.bs} per process, {args.epochs} "
              f"epochs, {len(prepared.plan.train)} training images, {args.device}, "
              f"{cores} cores")
        rows = []
        if args.device == "cpu":
            rows.append((f"1 process, {cores} threads", 1, _measure(prepared, args, 1, cores)))
        unit = (f"1 process, {share} thread(s)" if args.device == "cpu" else "1 process, 1 GPU")
        rows.append((unit, 1, _measure(prepared, args, 1, share)))
        many = f"{nproc} processes" + (f", {share} thread(s) each" if args.device == "cpu"
                                       else ", 1 GPU each")
        rows.append((many, nproc, _measure(prepared, args, nproc, share)))
    print(f"\n{'':34}{'img/s':>9}{'epoch s':>9}{'epoch 1 s':>11}{'world':>7}")
    for name, _, m in rows:
        print(f"{name:34}{m['img_s']:9.1f}{m['epoch_s']:9.2f}{m['first_s']:11.2f}"
              f"{m['world_size']:>7}")
    base, scaled = rows[-2][2]["img_s"], rows[-1][2]["img_s"]
    print(f"\nscaling efficiency ({nproc} processes vs {nproc} x one share): "
          f"{scaled / (nproc * base):.2f}")
    if args.device == "cpu":
        print(f"speed-up over one process on all {cores} cores: "
              f"{scaled / rows[0][2]['img_s']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
