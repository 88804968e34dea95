"""Small decisions made once at the start of a run: weights, batch size, targets,
warnings, and the JSON that lets ``resume`` rebuild the run's data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from loupe.engine.core.device import DeviceInfo
from loupe.engine.core.errors import DatasetError
from loupe.engine.core.events import CancelToken, EventCallback
from loupe.engine.training.config import AUTO_ARCH, DEFAULT_FINE_TUNE_LR, DEFAULT_LR, TrainConfig

IMBALANCE_RATIO = 5


def resolve_arch_choice(config: TrainConfig) -> TrainConfig:
    """``arch="auto"`` becomes the best architecture with installed pretrained weights."""
    if config.arch != AUTO_ARCH:
        return config
    from loupe.engine.models.weights import best_installed_arch

    return replace(config, arch=best_installed_arch())


def resolve_lr(config: TrainConfig, *, pretrained: bool) -> TrainConfig:
    """``lr=None`` becomes fastai's default: ``fine_tune``'s 2e-3 with pretrained weights,
    ``fit_one_cycle``'s 1e-3 from random init. Recorded in the run's config."""
    if config.lr is not None:
        return config
    return replace(config, lr=DEFAULT_FINE_TUNE_LR if pretrained else DEFAULT_LR)


def load_pretrained(config: TrainConfig) -> tuple[dict[str, torch.Tensor] | None, str, str | None]:
    """(state dict or None, description for people, timm tag of the weights).

    ``auto`` looks only on this machine (weights store, HF cache, torchvision cache); it
    never downloads. ``none`` and "nothing found" both mean random initialisation.
    """
    from loupe.engine.models import weights

    if config.pretrained == "none":
        return None, "random init", None
    if config.pretrained == "auto":
        source = weights.find_weights(config.arch)
        if source is None:
            return None, "random init", None
        return weights.load_weights(source), source.describe(), source.tag
    path = Path(config.pretrained).expanduser()
    return weights.read_weights_file(path, config.arch), f"file {path}", None


def random_init_message(config: TrainConfig) -> str:
    why = (
        "as asked (pretrained: none)"
        if config.pretrained == "none"
        else f"because no pretrained weights for {config.arch} were found on this machine"
    )
    return (
        f"TRAINING FROM RANDOM INITIALISATION {why}. Expect far lower accuracy than "
        "fine-tuning pretrained weights, especially on small datasets; no frozen phase, "
        "normalization computed from your images. To fine-tune instead, import or "
        "download the weights (the Train page's Import…/Download… buttons, or "
        f"`loupe weights import FILE --arch {config.arch}` / "
        f"`loupe weights download {config.arch}`)."
    )


def auto_batch_size(device: DeviceInfo, size: int) -> int:
    """fastai's bs=64 on a GPU at 224 px, scaled down for larger images; 32 on a CPU."""
    if device.kind == "cpu":
        return 32
    base = 64 if device.kind == "cuda" else 32
    scale = (224 / size) ** 2
    return int(max(8, min(512, base * scale)))


def build_targets(items: Sequence[Any], classes: Sequence[str], multi_label: bool) -> torch.Tensor:
    """Class indices (single-label) or a multi-hot float matrix (multi-label) of the
    LabelledItems ``items``, in order: the targets of training, evaluation and analysis.

    A label that is not one of ``classes``, or a single-label item without exactly one
    label, is a DatasetError naming the file (scoring a model on data it was not made for).
    """
    index = {c: i for i, c in enumerate(classes)}
    for li in items:
        missing = [label for label in li.labels if label not in index]
        if missing:
            raise DatasetError(
                f"{li.item.path}: label {missing[0]!r} is not a class of this model "
                f"(classes: {', '.join(classes)}); use the data the model was trained on"
            )
        if not multi_label and len(li.labels) != 1:
            raise DatasetError(
                f"{li.item.path}: {len(li.labels)} labels for a single-label model"
            )
    if multi_label:
        targets = torch.zeros(len(items), len(classes))
        for row, li in enumerate(items):
            for label in li.labels:
                targets[row, index[label]] = 1.0
        return targets
    return torch.tensor([index[li.labels[0]] for li in items], dtype=torch.long)


def imbalance_warning(plan: Any) -> str | None:
    """A message when the largest class has > 5× the training images of the smallest."""
    counts = {c: plan.counts[c]["train"] for c in plan.classes if c in plan.counts}
    present = {c: n for c, n in counts.items() if n > 0}
    if len(present) < 2:
        return None
    big = max(present, key=present.__getitem__)
    small = min(present, key=present.__getitem__)
    if present[big] <= IMBALANCE_RATIO * present[small]:
        return None
    return (
        f"classes are imbalanced: {big!r} has {present[big]} training images, {small!r} only "
        f"{present[small]} (over {IMBALANCE_RATIO}×); the model will favour {big!r}. "
        "Check per-class recall after training, or add images of the small classes."
    )


def data_spec_json(spec: Any) -> dict[str, Any]:
    """What ``rebuild_prepared`` needs to scan, label and split the same way again."""
    return {
        "root": str(Path(spec.root).resolve()),
        "label": spec.label.to_json(),
        "split": spec.split.to_json(),
        "overrides": spec.overrides.to_json() if spec.overrides is not None else None,
        "max_pixels": spec.max_pixels,
    }


def rebuild_prepared(
    data: dict[str, Any], events: EventCallback, cancel: CancelToken | None
) -> Any:
    from loupe.engine.data.dataset import DataSpec, prepare_data
    from loupe.engine.data.labels import LabelRule, Overrides
    from loupe.engine.data.splits import SplitRule

    overrides = Overrides.from_json(data["overrides"]) if data.get("overrides") else None
    spec = DataSpec(
        root=Path(data["root"]),
        label=LabelRule.from_json(data["label"]),
        split=SplitRule.from_json(data["split"]),
        overrides=overrides,
        max_pixels=int(data["max_pixels"]),
    )
    return prepare_data(spec, on_event=events, cancel=cancel)
