"""Architectures Loupe offers, built through timm, and the seams the trainer needs.

Why timm: one ``create_model(name, num_classes=...)`` for every family, and each model
carries its own preprocessing (``pretrained_cfg``: input size, crop, interpolation,
mean/std). Loupe reads those from timm instead of hard-coding them, so the trainer, the
bundle and the predictor all agree with the weights they use.

The curated list holds parameter counts and speed hints as static facts (so listing
architectures builds nothing); tests/engine/test_models.py rebuilds every model on the
``meta`` device and checks the counts. Any other timm model name is accepted too.

Also here: the head/body split used for the frozen phase of ``fine_tune``, layer groups
for discriminative learning rates (early -> late, head last), and the layer that
activation maps hook (``cam_target_layer``).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError, WeightsError

if TYPE_CHECKING:
    import torch
    from torch import nn


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
    # ImageNet weights for these three come with the install (engine.weight_packages).
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

# Module whose output activation maps use, per family (the last spatial stage).
_CAM_LAYERS = {
    "resnet": "layer4",
    "convnext": "stages.3",
    "efficientnet": "bn2",  # conv_head + BN + activation: the last spatial features
    "regnet": "s4",
}


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


def create_model(
    arch: str, num_classes: int, *, pretrained_state: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """Build ``arch`` with a fresh ``num_classes`` head; load a pretrained body if given.

    The pretrained state's own classifier (usually 1000 ImageNet classes) is dropped; every
    other tensor must match the model by name and shape, or WeightsError lists what does
    not. BatchNorm's ``num_batches_tracked`` counters may be absent (timm omits them).
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    name = resolve_arch(arch)
    model = _timm().create_model(name, pretrained=False, num_classes=num_classes)
    zero_init_head(model)
    if pretrained_state is not None:
        body_state = check_pretrained_state(model, pretrained_state, arch=name)
        model.load_state_dict(body_state, strict=False)
    return model


def zero_init_head(model: nn.Module) -> None:
    """Start the new classifier at zero, so every class starts equally likely.

    Why: timm initialises EfficientNet/MobileNet classifiers uniformly in
    ±1/sqrt(num_classes), which for 2 classes gives weights of std 0.41 and an initial
    loss of about 4.4 on pretrained features (ln 2 = 0.69): the frozen epoch then spends
    itself undoing the initialisation and fine-tuning ends worse than random init. With
    a zero head (as Big Transfer does) the initial loss is exactly ln(num_classes) for
    every architecture; the head's gradient, (softmax - onehot) x features, is non-zero
    from the first step, and the body is reached from the second.
    """
    import torch

    heads = head_prefixes(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if _under(name, heads):
                param.zero_()


def check_pretrained_state(
    model: nn.Module, state: dict[str, torch.Tensor], *, arch: str
) -> dict[str, torch.Tensor]:
    """Validate ``state`` against ``model`` ignoring heads; return the body tensors.

    Raises WeightsError naming missing, unexpected and wrongly shaped tensors.
    """
    heads = head_prefixes(model)
    own = {k: v for k, v in model.state_dict().items() if not _under(k, heads)}
    given = {k: v for k, v in state.items() if not _under(k, heads)}
    missing = [k for k in own if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in own]
    wrong = [
        f"{k} (file {tuple(given[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in given and tuple(given[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    missing, unexpected = sorted(missing, key=_buffers_last), sorted(unexpected, key=_buffers_last)
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            shown = ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise WeightsError(
            f"the weights do not fit architecture {arch!r}: " + "; ".join(problems)
        )
    return given


def _buffers_last(key: str) -> bool:
    """Sort key: list real weights before BatchNorm counters in error messages."""
    return key.endswith("num_batches_tracked")


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Module names of the classifier head(s), from timm's config or ``get_classifier``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier")
    names = (names,) if isinstance(names, str) else tuple(names or ())
    modules = dict(model.named_modules())
    found = tuple(n for n in names if n in modules)
    if found:
        return found
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    for name, module in modules.items():
        if module is classifier and name:
            return (name,)
    raise ConfigError(f"cannot find the classifier head of {type(model).__name__}")


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def head_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    """The new classifier's parameters: the only ones trained in the frozen phase."""
    heads = head_prefixes(model)
    return [p for n, p in model.named_parameters() if _under(n, heads)]


def body_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    """Everything but the classifier head (the pretrained part that gets frozen)."""
    heads = head_prefixes(model)
    return [p for n, p in model.named_parameters() if not _under(n, heads)]


def norm_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    """Parameters of normalization layers outside the head.

    fastai keeps these trainable while the body is frozen (``train_bn=True``): the
    statistics of a new dataset differ from ImageNet's, and they are cheap to adapt.
    """
    from torch import nn

    norm_types = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
    heads = head_prefixes(model)
    params: list[nn.Parameter] = []
    for name, module in model.named_modules():
        if isinstance(module, norm_types) and not _under(name, heads):
            params.extend(module.parameters(recurse=False))
    return params


def layer_groups(model: nn.Module, n_groups: int = 3) -> list[list[torch.nn.Parameter]]:
    """Parameters in ``n_groups`` groups ordered early -> late, the head always last.

    Body stages come from timm's ``group_matcher(coarse=True)`` (stem, stage 1..N), merged
    into ``n_groups - 1`` consecutive chunks, earlier chunks larger: for a ResNet and the
    default 3 that is [stem..layer2], [layer3, layer4], [head] as in fastai. The trainer
    gives each group its own learning rate (smallest first).
    """
    if n_groups < 2:
        raise ConfigError(f"n_groups must be at least 2 (body and head), got {n_groups}")
    heads = head_prefixes(model)
    stages = _body_stages(model, heads)
    n_body = min(n_groups - 1, len(stages))
    base, extra = divmod(len(stages), n_body)
    groups: list[list[torch.nn.Parameter]] = []
    start = 0
    for i in range(n_body):
        stop = start + base + (1 if i < extra else 0)
        groups.append([p for stage in stages[start:stop] for p in stage])
        start = stop
    groups.append(head_parameters(model))
    return groups


def _body_stages(model: nn.Module, heads: tuple[str, ...]) -> list[list[torch.nn.Parameter]]:
    """Body parameters split into ordered stages (timm's coarse grouping when it has one)."""
    named = [(n, p) for n, p in model.named_parameters() if not _under(n, heads)]
    if hasattr(model, "group_matcher"):
        from timm.models._manipulate import group_with_matcher

        try:
            matcher = model.group_matcher(coarse=True)
            mapping = group_with_matcher(iter(named), matcher, reverse=True)
        except (NotImplementedError, TypeError):
            mapping = None
        if mapping:
            by_group: dict[int, list[torch.nn.Parameter]] = {}
            params = dict(named)
            for name, lid in mapping.items():
                by_group.setdefault(int(lid), []).append(params[name])
            return [by_group[k] for k in sorted(by_group)]
    by_child: dict[str, list[torch.nn.Parameter]] = {}
    for name, param in named:
        by_child.setdefault(name.split(".", 1)[0], []).append(param)
    return list(by_child.values())


def cam_target_layer(model: nn.Module, arch: str | None = None) -> str:
    """Name of the module whose output activation maps (Grad-CAM and kin) should hook.

    CNN families: the last spatial stage (``layer4`` for ResNets). Vision transformers:
    the last block's first norm, whose output is tokens (B, 1 + H*W, C), not a feature
    map; pair it with ``cam_reshape_transform(model)`` to drop the class token and fold
    the patch tokens back into (B, C, H, W). Other timm models: the last stage timm lists
    in ``feature_info``.
    """
    family = arch_family(arch) if arch else _family_of_model(model)
    modules = dict(model.named_modules())
    if family == "vit" and hasattr(model, "blocks"):
        name = f"blocks.{len(model.blocks) - 1}.norm1"
    elif family == "mobilenetv3" and hasattr(model, "blocks"):
        # The last block stage; conv_head runs after pooling, so it is not spatial.
        # Counted, not fixed: the small variants have one stage fewer than large.
        name = f"blocks.{len(model.blocks) - 1}"
    elif family in _CAM_LAYERS:
        name = _CAM_LAYERS[family]
    elif getattr(model, "feature_info", None):
        name = model.feature_info[-1]["module"]
    else:
        raise ConfigError(f"no activation-map layer known for architecture {arch or family!r}")
    if name not in modules:
        raise ConfigError(f"activation-map layer {name!r} not found in {arch or family!r}")
    return name


def cam_reshape_transform(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For token models (ViT): tokens (B, N, C) -> feature map (B, C, H, W); else None."""
    if not hasattr(model, "patch_embed") or not hasattr(model, "blocks"):
        return None
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    grid = tuple(int(v) for v in model.patch_embed.grid_size)

    def to_map(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix:, :]
        height, width = grid
        return patches.reshape(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2)

    return to_map


def _family_of_model(model: nn.Module) -> str:
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if arch:
        return arch_family(arch)
    return type(model).__module__.rsplit(".", 1)[-1]


def describe_architectures(*, with_weights: bool = True) -> list[dict[str, Any]]:
    """Rows for pickers and ``loupe weights list``: name, family, params, size, weights.

    With ``with_weights`` the architectures whose weights are on this machine come first
    (in curated order), each row says where from and ``pretrained`` is true for them.
    """
    rows = []
    for info in ARCHITECTURES:
        row: dict[str, Any] = {
            "name": info.name,
            "family": info.family,
            "params": info.params,
            "input_size": info.input_size,
            "speed": info.speed,
            "note": info.note,
        }
        if with_weights:
            from engine.weights import find_weights, status_text

            source = find_weights(info.name)
            row["weights"] = status_text(source)
            row["pretrained"] = source is not None
        rows.append(row)
    if with_weights:
        rows.sort(key=lambda r: not r["pretrained"])  # stable: curated order kept within
    return rows
