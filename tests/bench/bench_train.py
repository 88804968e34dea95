"""Benchmark: Loupe's trainer vs a plain hand-written PyTorch/timm loop, same everything.

Both train timm's resnet18 from random init on the same images (the bundled sample by
default, animals vs food, split by Loupe's planner so both see the same train/valid
files), at the same size, batch size, epochs, learning rate, optimizer (AdamW, fused),
one-cycle schedule and torch thread count, in one process, one after the other.

The plain loop is what a person writes from the PyTorch tutorial: a Dataset that opens
each file with PIL every epoch, RandomResizedCrop + horizontal flip, a DataLoader
(``num_workers=0``: the same threads do everything, as in Loupe), AdamW + OneCycleLR.
Loupe decodes each image once (epoch 1, or while warming its cache) and afterwards
only crops cached uint8 tensors, and also applies rotation and lighting augmentation,
writes a checkpoint every epoch and sends events. Epoch times are wall-clock between
epoch ends (Loupe's first includes warming the cache; its data scan is reported apart).

Prints the per-epoch seconds of both, the first-epoch ratio, the later-epoch ratio (the
requirement: Loupe ≤ 1.0× the plain loop after epoch 1) and the final error rates.
Exit status 1 when the later-epoch ratio exceeds 1.0.

Usage: ``python tests/bench/bench_train.py [--images DIR --label RULE] [--size 64]
[--bs 32] [--epochs 3] [--threads N] [--arch resnet18]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ARCH, SIZE, BS, EPOCHS, LR = "resnet18", 64, 32, 3, 1e-3


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=None, help="image folder (sample)")
    parser.add_argument("--label", default=None, help="label rule (upper for the sample)")
    parser.add_argument("--arch", default=ARCH)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--bs", type=int, default=BS)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--threads", type=int, default=0, help="0: all cores but one")
    return parser.parse_args()


def plain_loop(train_items, valid_items, classes, args, threads: int) -> dict:
    """The tutorial loop: PIL decode + torchvision transforms every epoch."""
    import timm
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    index = {c: i for i, c in enumerate(classes)}
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_tf = T.Compose([T.RandomResizedCrop(args.size, scale=(0.35, 1.0)),
                          T.RandomHorizontalFlip(), T.ToTensor(), norm])
    valid_tf = T.Compose([T.Resize(int(args.size * 1.15 + 0.999)), T.CenterCrop(args.size),
                          T.ToTensor(), norm])

    class Files(Dataset):
        def __init__(self, items, tf):
            self.items, self.tf = items, tf

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            li = self.items[i]
            with Image.open(li.item.path) as img:
                x = self.tf(img.convert("RGB"))
            return x, index[li.labels[0]]

    train_dl = DataLoader(Files(train_items, train_tf), batch_size=args.bs, shuffle=True,
                          drop_last=True, num_workers=0)
    valid_dl = DataLoader(Files(valid_items, valid_tf), batch_size=args.bs, num_workers=0)
    model = timm.create_model(args.arch, num_classes=len(classes))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, total_steps=args.epochs * len(train_dl), pct_start=0.25
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    seconds, cpu, errors = [], [], []
    for _epoch in range(args.epochs):
        start, start_cpu = time.perf_counter(), time.process_time()
        model.train()
        for x, y in train_dl:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
            sched.step()
        model.eval()
        wrong = total = 0
        with torch.no_grad():
            for x, y in valid_dl:
                wrong += int((model(x).argmax(1) != y).sum())
                total += len(y)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        errors.append(wrong / total)
    return {"seconds": seconds, "cpu": cpu, "error_rate": errors[-1]}


def loupe_run(prepared, args, threads: int) -> dict:
    from loupe.engine.core.events import EpochEnded, Started
    from loupe.engine.training import TrainConfig, train

    marks: list[tuple[float, float]] = []

    def on_event(event) -> None:
        if (isinstance(event, Started) and event.task == "train") or isinstance(
            event, EpochEnded
        ):
            marks.append((time.perf_counter(), time.process_time()))

    config = TrainConfig(arch=args.arch, epochs=args.epochs, freeze_epochs=0, size=args.size,
                         batch_size=args.bs, lr=LR, pretrained="none", seed=0, threads=threads)
    result = train(prepared, config, on_event=on_event)
    seconds = [b[0] - a[0] for a, b in zip(marks, marks[1:], strict=False)]
    cpu = [b[1] - a[1] for a, b in zip(marks, marks[1:], strict=False)]
    return {"seconds": seconds, "cpu": cpu, "error_rate": result.metrics["error_rate"]}


def main() -> int:
    args = _args()
    home = tempfile.mkdtemp(prefix="loupe-bench-train-")
    os.environ["LOUPE_HOME"] = home  # a cold cache, and the user's data dir untouched
    os.environ["HF_HUB_OFFLINE"] = "1"
    from loupe.engine.core.device import default_threads
    from loupe.engine.core.resources import sample_dir
    from loupe.engine.data.dataset import DataSpec, prepare_data
    from loupe.engine.data.labels import parse_label_rule
    from loupe.engine.data.splits import parse_split_rule

    root = args.images or sample_dir()
    label = args.label or ("upper" if args.images is None else "parent")
    threads = args.threads or default_threads()
    start = time.perf_counter()
    prepared = prepare_data(DataSpec(root, parse_label_rule(label), parse_split_rule("random:0.2")))
    scan_s = time.perf_counter() - start
    plan = prepared.plan
    print(f"# bench_train: {args.arch} at {args.size} px, batch {args.bs}, {args.epochs} epochs, "
          f"{threads} thread(s), {len(plan.train)} train / {len(plan.valid)} valid images "
          f"from {root} (label {label}); Loupe's scan+label+split took {scan_s:.2f} s")
    plain = plain_loop(plan.train, plan.valid, plan.classes, args, threads)
    loupe = loupe_run(prepared, args, threads)
    print("\n| epoch | plain wall s | Loupe wall s | ratio | plain CPU s | Loupe CPU s | ratio |")
    print("|---|---|---|---|---|---|---|")
    rows = zip(plain["seconds"], loupe["seconds"], plain["cpu"], loupe["cpu"], strict=True)
    for i, (p, q, pc, qc) in enumerate(rows, 1):
        print(f"| {i} | {p:.2f} | {q:.2f} | {q / p:.2f}× | {pc:.2f} | {qc:.2f} | {qc / pc:.2f}× |")
    first = loupe["seconds"][0] / plain["seconds"][0]
    later = sum(loupe["seconds"][1:]) / max(1e-9, sum(plain["seconds"][1:]))
    later_cpu = sum(loupe["cpu"][1:]) / max(1e-9, sum(plain["cpu"][1:]))
    print(f"\nfirst-epoch ratio (Loupe / plain, wall): {first:.2f}×")
    print(f"later-epoch ratio (Loupe / plain, wall, epochs 2..{args.epochs}): {later:.2f}× "
          f"(requirement ≤ 1.00×); CPU-time ratio {later_cpu:.2f}× (Loupe's CPU time "
          "includes its prefetch and checkpoint threads; wall time is what the user waits)")
    print(f"final error rate: plain loop {plain['error_rate']:.3f}, "
          f"Loupe {loupe['error_rate']:.3f}")
    return 0 if later <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
