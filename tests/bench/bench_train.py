"""Benchmark: Loupe's trainer vs the plain PyTorch loop at its best vs the compute ceiling.

Three measurements of the same model, images, size, batch size, epochs, optimizer (AdamW,
fused) and one-cycle schedule, in one process, one after the other:

- **plain**: what a person writes from the PyTorch tutorial, at its best settings: a
  Dataset that opens each file with PIL every epoch, RandomResizedCrop + horizontal flip,
  a ``DataLoader`` with ``num_workers = os.cpu_count()`` (decoding in worker processes, in
  parallel with the model), torch's default intra-op thread count (all cores).
- **Loupe**: ``loupe.engine.training.train`` with the CLI's defaults (all cores). It
  decodes each image once, overlapping that with epoch 1's batches, then crops cached
  uint8 tensors; it also applies rotation and lighting augmentation, checkpoints every
  epoch and sends events. Epoch times are wall-clock between epoch ends; the first starts
  at the run's ``Started`` event (after the scan, which is reported apart), so it
  includes decoding.
- **ceiling**: the same model's forward+backward+step throughput on a synthetic batch
  already in memory (random tensors, no data pipeline at all), and its forward-only
  throughput for the validation pass: what the hardware allows (best of three timings).
  An epoch at the ceiling takes ``n_train_batches × bs / train_ips + n_valid / eval_ips``
  seconds. With
  ``--finetune`` its BatchNorm layers keep their statistics (eval mode) as Loupe's
  fine-tuning does, so the ceiling is the computation Loupe runs; the plain loop trains
  them as the tutorial does.

Every file is read once before anything is timed, so that neither loop's first epoch
pays for reading the disk (the plain loop runs first and would otherwise).

Default: resnet18 from random init at 64 px, batch 64, 3 epochs. ``--finetune``: the
pretrained fine-tune, EfficientNet-Lite0 at 128 px from the installed ImageNet weights
(the same tensors for all three, read through Loupe's ``load_weights``), every epoch
unfrozen (``freeze_epochs=0``) so that all three do the same work per epoch.

Prints a table of per-epoch seconds (plain, Loupe, ceiling), and the ratios the
performance issue sets: Loupe's later epochs ≤ 0.8× plain and ≥ 0.85× the ceiling's
throughput; Loupe's first epoch ≤ 1.1× plain's first. Exit status 1 when a target is
missed (it is a report: the figures are what matter).

Usage: ``python tests/bench/bench_train.py [--images DIR --label RULE] [--size 64]
[--bs 64] [--epochs 3] [--threads N] [--arch resnet18] [--finetune]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ARCH, SIZE, BS, EPOCHS, LR = "resnet18", 64, 64, 3, 1e-3
FT_ARCH, FT_SIZE, FT_LR = "tf_efficientnet_lite0", 128, 2e-3


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=None, help="image folder (sample)")
    parser.add_argument("--label", default=None, help="label rule (upper for the sample)")
    parser.add_argument("--arch", default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--bs", type=int, default=BS)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--threads", type=int, default=0,
                        help="0: torch's default (all cores), as the CLI")
    parser.add_argument("--finetune", action="store_true",
                        help="pretrained EfficientNet-Lite0 at 128 px instead of resnet18")
    args = parser.parse_args()
    args.arch = args.arch or (FT_ARCH if args.finetune else ARCH)
    args.size = args.size or (FT_SIZE if args.finetune else SIZE)
    args.lr = FT_LR if args.finetune else LR
    return args


def new_model(args, n_classes: int):
    """timm's model; with ``--finetune`` the installed ImageNet body and a new head."""
    import timm

    model = timm.create_model(args.arch, num_classes=n_classes)
    if args.finetune:
        from loupe.engine.models.weights import find_weights, load_weights

        source = find_weights(args.arch)
        if source is None:
            raise SystemExit(f"no installed weights for {args.arch}")
        state = load_weights(source)
        head = {k for k in model.state_dict() if k.startswith(model.default_cfg["classifier"])}
        model.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
    return model


def plain_loop(train_items, valid_items, classes, args) -> dict:
    """The tutorial loop at its best: PIL decode in DataLoader workers every epoch."""
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

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

    workers = os.cpu_count() or 1
    train_dl = DataLoader(Files(train_items, train_tf), batch_size=args.bs, shuffle=True,
                          drop_last=True, num_workers=workers)
    valid_dl = DataLoader(Files(valid_items, valid_tf), batch_size=args.bs,
                          num_workers=workers)
    model = new_model(args, len(classes))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * len(train_dl), pct_start=0.25
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    seconds, errors = [], []
    for _epoch in range(args.epochs):
        start = time.perf_counter()
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
        errors.append(wrong / total)
    return {"seconds": seconds, "error_rate": errors[-1], "workers": workers}


def ceiling(n_train: int, n_valid: int, n_classes: int, args) -> dict:
    """Forward+backward+step and forward-only images/s on synthetic in-memory batches."""
    import torch

    torch.manual_seed(0)
    model = new_model(args, n_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(args.bs, 3, args.size, args.size)
    y = torch.randint(0, n_classes, (args.bs,))

    def steps(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
        return time.perf_counter() - start

    def forwards(n: int) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(n):
                model(x)
        return time.perf_counter() - start

    n = max(4, min(12, n_train // args.bs))
    model.train()
    if args.finetune:  # as Loupe fine-tunes: BatchNorm keeps the pretrained statistics
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
    steps(2)  # warm-up: allocator, kernels
    train_ips = max(n * args.bs / steps(n) for _ in range(3))  # best of three
    model.eval()
    forwards(1)
    eval_ips = max(n * args.bs / forwards(n) for _ in range(3))
    batches = n_train // args.bs
    epoch = batches * args.bs / train_ips + n_valid / eval_ips
    return {"train_ips": train_ips, "eval_ips": eval_ips, "epoch_s": epoch}


def loupe_run(prepared, args) -> dict:
    from loupe.engine.core.events import EpochEnded, Started
    from loupe.engine.training import TrainConfig, train

    marks: list[float] = []

    def on_event(event) -> None:
        if (isinstance(event, Started) and event.task == "train") or isinstance(
            event, EpochEnded
        ):
            marks.append(time.perf_counter())

    import torch

    config = TrainConfig(
        arch=args.arch, epochs=args.epochs, freeze_epochs=0, size=args.size,
        batch_size=args.bs, lr=args.lr, pretrained="auto" if args.finetune else "none",
        seed=0, threads=args.threads or torch.get_num_threads(),
    )
    result = train(prepared, config, on_event=on_event)
    seconds = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {"seconds": seconds, "error_rate": result.metrics["error_rate"],
            "threads": config.threads}


def main() -> int:
    args = _args()
    home = tempfile.mkdtemp(prefix="loupe-bench-train-")
    os.environ["LOUPE_HOME"] = home  # a cold cache, and the user's data dir untouched
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from loupe.engine.core.resources import sample_dir
    from loupe.engine.data.dataset import DataSpec, prepare_data
    from loupe.engine.data.labels import parse_label_rule
    from loupe.engine.data.splits import parse_split_rule

    root = args.images or sample_dir()
    label = args.label or ("upper" if args.images is None else "parent")
    for path in Path(root).rglob("*"):  # the OS file cache warm for both: no disk reads timed
        if path.is_file():
            path.read_bytes()
    start = time.perf_counter()
    prepared = prepare_data(DataSpec(root, parse_label_rule(label), parse_split_rule("random:0.2")))
    scan_s = time.perf_counter() - start
    plan = prepared.plan
    what = "pretrained fine-tune" if args.finetune else "random init"
    print(f"# bench_train: {args.arch} ({what}) at {args.size} px, batch {args.bs}, "
          f"{args.epochs} epochs, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores, {len(plan.train)} train / {len(plan.valid)} valid images "
          f"from {root} (label {label}); Loupe's scan+label+split took {scan_s:.2f} s")
    plain = plain_loop(plan.train, plan.valid, plan.classes, args)
    loupe = loupe_run(prepared, args)
    top = ceiling(len(plan.train), len(plan.valid), len(plan.classes), args)
    print(f"plain loop: DataLoader num_workers={plain['workers']}, "
          f"{torch.get_num_threads()} torch threads; Loupe: {loupe['threads']} threads")
    print(f"ceiling: {top['train_ips']:.1f} img/s forward+backward+step, "
          f"{top['eval_ips']:.1f} img/s forward only → {top['epoch_s']:.2f} s per epoch")
    print("\n| epoch | plain s | Loupe s | ceiling s | Loupe / plain | ceiling / Loupe |")
    print("|---|---|---|---|---|---|")
    for i, (p, q) in enumerate(zip(plain["seconds"], loupe["seconds"], strict=True), 1):
        print(f"| {i} | {p:.2f} | {q:.2f} | {top['epoch_s']:.2f} | {q / p:.2f}× | "
              f"{top['epoch_s'] / q:.2f} |")
    first = loupe["seconds"][0] / plain["seconds"][0]
    later_loupe = sum(loupe["seconds"][1:]) / max(1, args.epochs - 1)
    later = later_loupe / max(1e-9, sum(plain["seconds"][1:]) / max(1, args.epochs - 1))
    of_ceiling = top["epoch_s"] / later_loupe
    print(f"\nfirst epoch, Loupe / plain: {first:.2f}× (target ≤ 1.10×)")
    print(f"later epochs, Loupe / plain: {later:.2f}× (target ≤ 0.80×)")
    print(f"later epochs, Loupe's throughput / ceiling: {of_ceiling:.2f} (target ≥ 0.85)")
    print(f"final error rate: plain loop {plain['error_rate']:.3f}, "
          f"Loupe {loupe['error_rate']:.3f}")
    return 0 if first <= 1.10 and later <= 0.80 and of_ceiling >= 0.85 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
