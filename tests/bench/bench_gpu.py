"""Benchmark: Loupe on a CUDA GPU, one prepared script, at most about 8 minutes.

Measures, and prints as one table:

1. **Training**: Loupe's trainer (``loupe.engine.training.train``: AMP, channels_last,
   pinned memory, non-blocking copies, augmentation on the GPU) on a generated folder of
   JPEGs, for resnet18 and resnet50 at 224 px from random init, against the **ceiling**:
   the same model's forward+backward+step throughput on a synthetic batch already on the
   GPU, with the same AMP dtype, channels_last and fused AdamW (best of three timings).
   Loupe's img/s is over its epochs after the first (images decoded and cached), as an
   epoch at the ceiling (training images at the training rate plus validation images at
   the forward-only rate). The issue's target: Loupe ≥ 0.8× the ceiling.
2. **JPEG decode**: ``torchvision.io.decode_jpeg`` on the GPU (batched) vs Pillow on the
   CPU (one thread, and all cores in a thread pool), images/s.
3. **Prediction latency**: a saved ``.loupe`` bundle through ``Predictor.from_file`` on the
   GPU: median and p95 milliseconds for one image file (decode + preprocess + forward),
   and for the forward pass alone.

``--dry-run`` runs every step on the CPU at toy sizes (32 px, a few dozen images,
resnet18 only) so the script is proven to work where no GPU is; ``make bench`` runs it
that way on a machine without CUDA. The figures of a dry run mean nothing.

Running it on a lent GPU machine (which has torch, torchvision and timm but may lack
Loupe's other dependencies): from the repository root,
``python tests/bench/bench_gpu.py`` imports the engine straight from ``engine/`` when
Loupe is not installed; platformdirs, safetensors and regex must be importable (install
their wheels from a carried folder with ``pip install --no-index --find-links DIR``).

Usage: ``python tests/bench/bench_gpu.py [--dry-run] [--images N] [--epochs 3]
[--arch resnet18,resnet50] [--size 224] [--bs 128]``
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: check only")
    parser.add_argument("--images", type=int, default=None, help="generated JPEGs (2560)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (3)")
    parser.add_argument("--arch", default=None, help="comma-separated (resnet18,resnet50)")
    parser.add_argument("--size", type=int, default=None, help="image size (224)")
    parser.add_argument("--bs", type=int, default=None, help="batch size (128)")
    args = parser.parse_args()
    dry = args.dry_run
    args.images = args.images or (48 if dry else 2560)
    args.epochs = args.epochs or (2 if dry else 3)
    args.arch = (args.arch or ("resnet18" if dry else "resnet18,resnet50")).split(",")
    args.size = args.size or (32 if dry else 224)
    args.bs = args.bs or (8 if dry else 128)
    return args


def import_loupe() -> None:
    """Make ``loupe.engine`` importable from this checkout when Loupe is not installed."""
    try:
        import loupe.engine  # noqa: F401

        return
    except ImportError:
        pass
    shim = Path(tempfile.mkdtemp(prefix="loupe-shim-")) / "loupe"
    atexit.register(shutil.rmtree, shim.parent, ignore_errors=True)
    shim.mkdir()
    (shim / "engine").symlink_to(REPO / "engine")
    (shim / "resources").symlink_to(REPO / "resources")
    sys.path.insert(0, str(shim.parent))
    import loupe.engine  # noqa: F401


def make_folder(root: Path, n: int, side: int) -> Path:
    """``n`` JPEGs in two class folders: smooth colour fields with noise, ``side`` px."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    for i in range(n):
        name = ("warm", "cool")[i % 2]
        (root / name).mkdir(parents=True, exist_ok=True)
        base = np.array((200, 90, 40) if name == "warm" else (40, 90, 200), np.float32)
        field = base + 60 * np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), xx * yy], -1)
        noisy = field + rng.normal(0, 25, field.shape)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(
            root / name / f"{name}_{i:05d}.jpg", quality=90
        )
    return root


def ceiling(arch: str, args, device, n_classes: int) -> dict:
    """Synthetic forward+backward+step and forward-only images/s, best of three."""
    import timm
    import torch

    from loupe.engine.core.device import resolve_device

    info = resolve_device(device)
    model = timm.create_model(arch, num_classes=n_classes).to(info.device)
    if info.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=info.kind in ("cpu", "cuda"))
    scaler = info.make_scaler()
    x = torch.randn(args.bs, 3, args.size, args.size, device=info.device)
    if info.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, n_classes, (args.bs,), device=info.device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def sync() -> None:
        if info.kind == "cuda":
            torch.cuda.synchronize()

    def train_steps(n: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            with info.autocast():
                out = model(x)
            scaler.scale(loss_fn(out.float(), y)).backward()
            scaler.step(opt)
            scaler.update()
        sync()
        return time.perf_counter() - start

    def eval_steps(n: int) -> float:
        sync()
        start = time.perf_counter()
        with torch.inference_mode(), info.autocast():
            for _ in range(n):
                model(x)
        sync()
        return time.perf_counter() - start

    n = 3 if args.dry_run else 20
    model.train()
    train_steps(2)
    train_ips = max(n * args.bs / train_steps(n) for _ in range(3))
    model.eval()
    eval_steps(2)
    eval_ips = max(n * args.bs / eval_steps(n) for _ in range(3))
    return {"train_ips": train_ips, "eval_ips": eval_ips}


def loupe_training(arch: str, prepared, args, device) -> dict:
    """Loupe's trainer; epoch wall times from its events (the first includes decoding)."""
    from loupe.engine.core.events import EpochEnded, Started
    from loupe.engine.training import TrainConfig, train

    marks: list[float] = []

    def on_event(event) -> None:
        if (isinstance(event, Started) and event.task == "train") or isinstance(
            event, EpochEnded
        ):
            marks.append(time.perf_counter())

    config = TrainConfig(arch=arch, epochs=args.epochs, freeze_epochs=0, size=args.size,
                         batch_size=args.bs, lr=1e-3, pretrained="none", device=device,
                         seed=0)
    result = train(prepared, config, on_event=on_event)
    seconds = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {"seconds": seconds, "bundle": result.bundle_path, "info": result.info}


def jpeg_decode(files: list[Path], device: str, dry: bool) -> dict:
    """Images/s: Pillow (1 thread, all cores) and torchvision's decode_jpeg on ``device``."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from PIL import Image
    from torchvision.io import decode_jpeg, read_file

    def pil(path: Path) -> None:
        with Image.open(path) as img:
            img.convert("RGB").load()

    def rate(fn) -> float:
        start = time.perf_counter()
        fn()
        return len(files) / (time.perf_counter() - start)

    out = {"pillow_1": rate(lambda: [pil(p) for p in files])}
    threads = os.cpu_count() or 1
    with ThreadPoolExecutor(threads) as pool:
        out["pillow_all"] = rate(lambda: list(pool.map(pil, files)))
    data = [read_file(str(p)) for p in files]
    if device == "cuda":
        decode_jpeg(data[:4], device="cuda")  # warm-up: nvjpeg handles
        torch.cuda.synchronize()

        def gpu() -> None:
            for i in range(0, len(data), 64):
                decode_jpeg(data[i : i + 64], device="cuda")
            torch.cuda.synchronize()

        out["gpu"] = max(rate(gpu) for _ in range(3))
    else:
        out["gpu"] = rate(lambda: [decode_jpeg(d) for d in data])  # dry run: the CPU path
    out["threads"] = threads
    return out


def prediction_latency(bundle: Path, files: list[Path], device: str, dry: bool) -> dict:
    """Median/p95 ms per image: file → prediction, and the forward pass alone."""
    import torch

    from loupe.engine.inference.predict import Predictor

    predictor = Predictor.from_file(bundle, device=device)
    sample = files[: 8 if dry else 100]
    whole, forward = [], []
    for path in sample:
        start = time.perf_counter()
        predictor.predict(path)
        if device == "cuda":
            torch.cuda.synchronize()
        whole.append((time.perf_counter() - start) * 1000)
    x = predictor.prepare(sample[0]).tensor.unsqueeze(0)
    for _ in range(len(sample)):
        start = time.perf_counter()
        predictor.logits(x)
        if device == "cuda":
            torch.cuda.synchronize()
        forward.append((time.perf_counter() - start) * 1000)

    def p95(values: list[float]) -> float:
        return sorted(values)[max(0, round(0.95 * len(values)) - 1)]

    return {"median": statistics.median(whole), "p95": p95(whole),
            "forward_median": statistics.median(forward)}


def main() -> int:
    args = _args()
    started = time.perf_counter()
    home = tempfile.mkdtemp(prefix="loupe-bench-gpu-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ["LOUPE_HOME"] = home
    os.environ["HF_HUB_OFFLINE"] = "1"
    import_loupe()
    import torch

    import loupe.engine
    from loupe.engine.data.dataset import DataSpec, prepare_data
    from loupe.engine.data.labels import parse_label_rule
    from loupe.engine.data.splits import parse_split_rule

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("# bench_gpu: no CUDA device here; running the CPU dry run instead")
        sys.argv.append("--dry-run")
        args = _args()
    device = "cuda" if cuda and not args.dry_run else "cpu"
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (dry run)"
    side = max(48, int(args.size * 1.25))
    root = make_folder(Path(home) / "images", args.images, side)
    files = sorted(root.rglob("*.jpg"))
    prepared = prepare_data(
        DataSpec(root, parse_label_rule("parent"), parse_split_rule("random:0.2"))
    )
    n_train, n_valid = len(prepared.plan.train), len(prepared.plan.valid)
    print(f"# bench_gpu on {name}: torch {torch.__version__}, {args.images} JPEGs of {side} px "
          f"({n_train} train / {n_valid} valid), {args.size} px, batch {args.bs}, "
          f"{args.epochs} epochs; engine from {Path(loupe.engine.__file__).parent}")
    rows = []
    bundle = None
    for arch in args.arch:
        top = ceiling(arch, args, device, len(prepared.plan.classes))
        run = loupe_training(arch, prepared, args, device)
        bundle = bundle or run["bundle"]
        later = run["seconds"][1:] or run["seconds"]
        batches = n_train // args.bs
        ceiling_epoch = batches * args.bs / top["train_ips"] + n_valid / top["eval_ips"]
        loupe_epoch = sum(later) / len(later)
        rows.append((f"train {arch} (img/s, epochs 2+)", batches * args.bs / loupe_epoch,
                     batches * args.bs / ceiling_epoch, ceiling_epoch / loupe_epoch))
        print(f"  {arch}: Loupe epochs {[round(s, 2) for s in run['seconds']]} s; ceiling "
              f"{top['train_ips']:.0f} img/s train, {top['eval_ips']:.0f} img/s eval; "
              f"amp {run['info'].get('amp')}, channels_last {run['info'].get('channels_last')}")
    decode = jpeg_decode(files, device, args.dry_run)
    assert bundle is not None
    latency = prediction_latency(bundle, files, device, args.dry_run)
    print("\n| measurement | Loupe | reference | Loupe / reference |")
    print("|---|---|---|---|")
    for label, ours, ref, ratio in rows:
        print(f"| {label} | {ours:.0f} | {ref:.0f} (AMP ceiling) | {ratio:.2f} |")
    gpu_label = "decode_jpeg on GPU" if device == "cuda" else "decode_jpeg on CPU"
    print(f"| JPEG decode (img/s) | {decode['gpu']:.0f} ({gpu_label}) | "
          f"{decode['pillow_all']:.0f} (Pillow, {decode['threads']} threads); "
          f"{decode['pillow_1']:.0f} (Pillow, 1 thread) | "
          f"{decode['gpu'] / decode['pillow_all']:.2f} |")
    print(f"| prediction latency, file → result (ms) | median {latency['median']:.1f}, p95 "
          f"{latency['p95']:.1f} | forward pass alone {latency['forward_median']:.1f} | — |")
    elapsed = time.perf_counter() - started
    note = " (dry run: the figures mean nothing)" if args.dry_run else ""
    print(f"\n# {elapsed:.0f} s in all{note}")
    if args.dry_run:
        return 0
    return 0 if all(ratio >= 0.8 for *_, ratio in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
