"""What every weight-layout mapping reads from timm's side: the fit, the block structure.

Shared by ``weight_layouts`` (detection, dispatch, EfficientNet-PyTorch) and
``weight_layouts_tv`` (torchvision); both import this module, neither imports the other
backwards (``weight_layouts`` imports ``weight_layouts_tv``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loupe.engine.core.errors import WeightsError

if TYPE_CHECKING:
    from torch import Tensor, nn


@dataclass(frozen=True)
class LayoutFit:
    """Which layout is being fitted onto which arch; builds the errors that say so."""

    layout: str
    arch: str

    def error(self, detail: str) -> WeightsError:
        return WeightsError(
            f"weights in the {self.layout} layout do not fit {self.arch!r}: {detail}"
        )


def meta_model(arch: str) -> nn.Module:
    """``arch`` built on the meta device: its structure, with no memory for weights."""
    import timm
    import torch

    with torch.device("meta"):
        return timm.create_model(arch, pretrained=False)


def timm_blocks(model: nn.Module, fit: LayoutFit) -> list[tuple[str, nn.Module]]:
    """(key prefix, block) of an EfficientNet/MobileNet-style model, flattened in order."""
    from torch import nn

    stages: Any = getattr(model, "blocks", None)
    ok = hasattr(model, "conv_stem") and isinstance(stages, nn.Sequential)
    if not ok or not all(isinstance(stage, nn.Sequential) for stage in stages):
        raise fit.error("it is not an EfficientNet/MobileNet-style timm model")
    return [
        (f"blocks.{s}.{i}", block)
        for s, stage in enumerate(stages)
        for i, block in enumerate(stage)
    ]


def stage_lengths(model: Any) -> list[int]:
    """Blocks per stage of an EfficientNet/MobileNet-style timm model (``model.blocks``)."""
    return [len(stage) for stage in model.blocks]


def has_se(block: nn.Module) -> bool:
    from torch import nn

    se = getattr(block, "se", None)
    return se is not None and not isinstance(se, nn.Identity)


def require_padding(model: nn.Module, fit: LayoutFit, *, same: bool) -> None:
    """TensorFlow-style 'same' padding changes the network: the layout must agree."""
    uses_same = any(
        type(module).__name__.startswith(("Conv2dSame", "PadDynamicSame", "MaxPool2dSame"))
        for module in model.modules()
    )
    if uses_same == same:
        return
    import timm

    other = fit.arch.removeprefix("tf_") if uses_same else f"tf_{fit.arch}"
    hint = f"; use {other!r} instead" if timm.is_model(other) else ""
    if same:
        raise fit.error(
            f"these are TensorFlow-ported weights ('same' padding) for timm's tf_ models{hint}"
        )
    raise fit.error(f"it pads like TensorFlow ('same'), the torchvision network does not{hint}")


def match_bn_eps(
    model: nn.Module, state: dict[str, Tensor], source_eps: float
) -> dict[str, Tensor]:
    """Shift ``running_var`` so timm's BN eps gives what ``source_eps`` gave: exact in eval."""
    from torch import nn

    out = dict(state)
    for key, value in state.items():
        if not key.endswith(".running_var"):
            continue
        try:
            module = model.get_submodule(key.rsplit(".", 1)[0])
        except AttributeError:
            continue  # not in the model: the caller's name check reports it
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.eps != source_eps:
            out[key] = value + (source_eps - module.eps)
    return out


def indexed(keys: list[str], pattern: str) -> dict[int, list[str]]:
    """Keys matching ``pattern`` (its first group an int) grouped by that int."""
    regex = re.compile(pattern)
    groups: dict[int, list[str]] = {}
    for key in keys:
        match = regex.match(key)
        if match:
            groups.setdefault(int(match.group(1)), []).append(key)
    return groups
