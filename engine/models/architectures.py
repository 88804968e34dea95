"""Which architectures Loupe offers and the preprocessing each one expects (from timm).

Why timm: one ``create_model(name, num_classes=...)`` for every family, and each model
carries its own preprocessing (``pretrained_cfg``: input size, crop, interpolation,
mean/std). Loupe reads those from timm instead of hard-coding them, so the trainer, the
bundle and the predictor all agree with the weights they use.

The curated list holds parameter counts and speed hints as static facts (so listing
architectures builds nothing); tests/engine/test_models.py rebuilds every model on the
``meta`` device and checks the counts. Any other timm model name is accepted too.

The first link of the models chain: architectures -> anatomy -> factory -> weights ->
catalog; nothing here imports the later links.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import Any

from loupe.engine.core.errors import ConfigError


@dataclass(frozen=True)
class ArchInfo:
    """One curated architecture. Preprocessing comes from timm on demand, never copied."""

    name: str
    family: str
    params: int  # with timm's 1000-class ImageNet head, the figure papers quote
    speed: str  # "fastest" | "fast" | "medium" | "slow" (relative training cost per image)
    note: str = ""

    @property
    def data_config(self) -> dict[str, Any]:
        return model_data_config(self.name)

    @property
    def input_size(self) -> int:
        return int(self.data_config["input_size"][-1])


ARCHITECTURES: tuple[ArchInfo, ...] = (
    # ImageNet weights for these three come with the install (loupe.engine.models.weight_packages).
    ArchInfo(
        "tf_efficientnet_lite0", "efficientnet", 4_652_008, "fastest",
        "EfficientNet-Lite0, ImageNet weights installed with Loupe",
    ),
    ArchInfo(
        "tf_efficientnet_lite1", "efficientnet", 5_416_680, "fast",
        "EfficientNet-Lite1, ImageNet weights installed with Loupe",
    ),
    ArchInfo(
        "tf_efficientnet_lite2", "efficientnet", 6_092_072, "fast",
        "EfficientNet-Lite2, ImageNet weights installed with Loupe",
    ),
    ArchInfo("resnet18", "resnet", 11_689_512, "fast", "fastai lesson 1's quick baseline"),
    ArchInfo("resnet34", "resnet", 21_797_672, "fast", "fastai lesson 1's default"),
    ArchInfo("resnet50", "resnet", 25_557_032, "medium", "strong general-purpose CNN"),
    ArchInfo("resnet101", "resnet", 44_549_160, "slow", "deeper ResNet"),
    ArchInfo("resnet152", "resnet", 60_192_808, "slow", "deepest ResNet"),
    ArchInfo("convnext_tiny", "convnext", 28_589_128, "medium", "modern CNN, high accuracy"),
    ArchInfo("efficientnet_b0", "efficientnet", 5_288_548, "fast", "small and accurate"),
    ArchInfo("efficientnet_b1", "efficientnet", 7_794_184, "fast", "240 px default"),
    ArchInfo("efficientnet_b2", "efficientnet", 9_109_994, "medium", "256 px default"),
    ArchInfo("efficientnet_b3", "efficientnet", 12_233_232, "medium", "288 px default"),
    ArchInfo("mobilenetv3_large_100", "mobilenetv3", 5_483_032, "fastest", "for slow machines"),
    ArchInfo("regnety_016", "regnet", 11_202_430, "fast", "efficient RegNet"),
    ArchInfo(
        "vit_small_patch16_224", "vit", 22_050_664, "medium",
        "vision transformer; fixed 224 px input",
    ),
)

_BY_NAME = {info.name: info for info in ARCHITECTURES}


def _timm():
    import timm

    return timm


def is_known_arch(name: str) -> bool:
    """True for a curated name or any model name timm can build."""
    return name in _BY_NAME or bool(_timm().is_model(name))


def resolve_arch(name: str) -> str:
    """Return ``name`` if Loupe can build it, else raise ConfigError with close matches."""
    if is_known_arch(name):
        return name
    curated = [info.name for info in ARCHITECTURES]
    candidates = list(dict.fromkeys(curated + list(_timm().list_models())))
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "."
    raise ConfigError(
        f"unknown architecture {name!r}{hint} Curated choices: {', '.join(curated)} "
        "(any timm model name is also accepted)."
    )


def arch_family(name: str) -> str:
    """Family of a curated or timm architecture (the timm module it lives in)."""
    if name in _BY_NAME:
        return _BY_NAME[name].family
    module = _timm().models.model_entrypoint(resolve_arch(name)).__module__
    family = module.rsplit(".", 1)[-1]
    return "vit" if family == "vision_transformer" else family


@functools.lru_cache(maxsize=64)
def count_parameters(name: str) -> int:
    """Parameters with timm's default head, counted on the meta device (allocates nothing)."""
    import torch

    if name in _BY_NAME:
        return _BY_NAME[name].params
    with torch.device("meta"):
        model = _timm().create_model(resolve_arch(name), pretrained=False)
    return sum(p.numel() for p in model.parameters())


def arch_info(name: str) -> ArchInfo:
    """The curated entry, or one derived from timm for any other model name."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    name = resolve_arch(name)
    return ArchInfo(name, arch_family(name), count_parameters(name), "unknown", "timm model")


@functools.lru_cache(maxsize=128)
def _pretrained_cfg(name: str) -> dict[str, Any]:
    cfg = _timm().models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def pretrained_cfg(arch: str, tag: str | None = None) -> dict[str, Any]:
    """timm's pretrained config for ``arch`` (default tag) or ``arch.tag``; {} if none."""
    base = resolve_arch(arch.split(".", 1)[0]) if "." in arch else resolve_arch(arch)
    if tag:
        cfg = _pretrained_cfg(f"{base}.{tag}")
        if cfg:
            return cfg
    return _pretrained_cfg(arch if "." in arch else base)


def model_data_config(arch: str, tag: str | None = None) -> dict[str, Any]:
    """Input size, interpolation, mean, std, crop_pct for ``arch`` from timm's config.

    ``tag`` selects the preprocessing of specific weights (e.g. ``tv_in1k`` for
    torchvision's files, whose statistics and resize differ from timm's default tag).
    """
    from timm.data import resolve_data_config

    cfg = pretrained_cfg(arch, tag)
    data = resolve_data_config(pretrained_cfg=cfg) if cfg else resolve_data_config({})
    data["mean"] = tuple(float(v) for v in data["mean"])
    data["std"] = tuple(float(v) for v in data["std"])
    data["input_size"] = tuple(int(v) for v in data["input_size"])
    return data
