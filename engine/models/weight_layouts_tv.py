"""torchvision layouts renamed to timm's keys; see ``engine.models.weight_layouts`` for the why.

torchvision nests its blocks as ``Sequential`` children indexed by number, so a block's
children are identified by what they hold (a conv+BN pair, or an SE with ``fc1``/``fc2``)
in forward order, then matched to the roles of the timm block class at the same place.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from loupe.engine.models.layout_tools import (
    LayoutFit,
    has_se,
    indexed,
    stage_lengths,
    timm_blocks,
)

if TYPE_CHECKING:
    from torch import Tensor, nn

# (conv, bn) names of timm's blocks, in forward order.
_CONV_ROLES = {
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
    "ConvBnAct": (("conv", "bn1"),),
}
_SE_ROLES = {"fc1": "se.conv_reduce", "fc2": "se.conv_expand"}
# torchvision's CNBlock: Sequential(conv_dw, Permute, LayerNorm, Linear, GELU, Linear, Permute).
_CNBLOCK_ROLES = {"0": "conv_dw", "2": "norm", "3": "mlp.fc1", "5": "mlp.fc2"}


# --------------------------------------------------------------------------- efficientnet


def from_torchvision_efficientnet(
    model: nn.Module, state: dict[str, Tensor], fit: LayoutFit
) -> dict[str, Tensor]:
    """features.0 stem, features.1..S stages, features.S+1 head conv, classifier.1."""
    blocks = dict(timm_blocks(model, fit))
    stages = indexed(list(state), r"^features\.(\d+)\.\d+\.block\.")
    foreign = [len(indexed(stages[k], r"^features\.\d+\.(\d+)\.")) for k in sorted(stages)]
    if sorted(stages) != list(range(1, len(foreign) + 1)) or foreign != stage_lengths(model):
        raise fit.error(
            f"stage depths {foreign} in the file, {stage_lengths(model)} in {fit.arch}"
        )
    head = len(foreign) + 1
    top = {"0.0": "conv_stem", "0.1": "bn1", f"{head}.0": "conv_head", f"{head}.1": "bn2"}
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        match = re.match(r"^features\.(\d+)\.(\d+)\.(.+)$", key)
        if match and match.group(3).startswith("block."):
            continue  # renamed per block below, where the whole block is seen
        place = f"{match.group(1)}.{match.group(2)}" if match else ""
        if match and place in top:
            renamed[f"{top[place]}.{match.group(3)}"] = value
        elif key.startswith("classifier.1."):
            renamed["classifier." + key.removeprefix("classifier.1.")] = value
        else:
            raise fit.error(f"unexpected key {key!r}")
    for k in sorted(stages):
        for i, keys in indexed(stages[k], r"^features\.\d+\.(\d+)\.").items():
            prefix = f"blocks.{k - 1}.{i}"
            unit = {key.removeprefix(f"features.{k}.{i}."): state[key] for key in keys}
            renamed.update(_rename_block(unit, prefix, blocks[prefix], fit))
    return renamed


# --------------------------------------------------------------------------- mobilenetv3


def from_torchvision_mobilenetv3(
    model: nn.Module, state: dict[str, Tensor], fit: LayoutFit
) -> dict[str, Tensor]:
    """Flat features.1..N onto timm's flattened blocks; classifier.0 is timm's conv_head."""
    blocks = timm_blocks(model, fit)
    units = indexed([k for k in state if not k.startswith("features.0.")], r"^features\.(\d+)\.")
    if sorted(units) != list(range(1, len(blocks) + 1)):
        raise fit.error(
            f"the file has {len(units)} blocks after the stem, {fit.arch} has "
            f"{len(blocks)} (stages of {stage_lengths(model)})"
        )
    renamed: dict[str, Tensor] = {}
    for n, (prefix, block) in enumerate(blocks, start=1):
        unit = {key.removeprefix(f"features.{n}."): state[key] for key in units[n]}
        renamed.update(_rename_block(unit, prefix, block, fit))
    top = {"features.0.0.": "conv_stem.", "features.0.1.": "bn1.", "classifier.3.": "classifier."}
    for key, value in state.items():
        if key.startswith("features.") and not key.startswith("features.0."):
            continue
        old = next((p for p in top if key.startswith(p)), None)
        if old:
            renamed[top[old] + key.removeprefix(old)] = value
        elif key.startswith("classifier.0."):
            # Linear(960, 1280) after pooling == timm's 1x1 conv_head: same numbers.
            name = key.removeprefix("classifier.0.")
            renamed[f"conv_head.{name}"] = value[..., None, None] if value.ndim == 2 else value
        else:
            raise fit.error(f"unexpected key {key!r}")
    return renamed


# --------------------------------------------------------------------------- shared block rename


def _rename_block(
    unit: dict[str, Tensor], prefix: str, block: nn.Module, fit: LayoutFit
) -> dict[str, Tensor]:
    """One torchvision block (keys relative to it) renamed onto timm ``block`` at ``prefix``.

    A torchvision block is ``block.J.*`` children (a conv+BN ``Conv2dNormActivation`` with
    ``0.``/``1.``, or an SE with ``fc1.``/``fc2.``); a bare ``0.``/``1.`` unit is one
    conv+BN (MobileNetV3's last conv).
    """
    children: dict[str, dict[str, Tensor]] = {}
    for key, value in unit.items():
        match = re.match(r"^block\.(\d+)\.(.+)$", key)
        child, rest = (match.group(1), match.group(2)) if match else ("", key)
        children.setdefault(child, {})[rest] = value
    order = sorted(children, key=lambda c: int(c) if c else -1)
    se = [c for c in order if any(r.startswith("fc1.") for r in children[c])]
    convs = [c for c in order if c not in se]
    kind = type(block).__name__
    roles = _CONV_ROLES.get(kind)
    if roles is None or len(roles) != len(convs):
        raise fit.error(
            f"{prefix} has {len(convs)} conv layers in the file; timm's {kind} there "
            f"has {len(roles) if roles else 'another structure'}"
        )
    if bool(se) != has_se(block):
        raise fit.error(f"{prefix} has squeeze-excite in only one of the file and {fit.arch}")
    renamed: dict[str, Tensor] = {}
    for child, (conv, bn) in zip(convs, roles, strict=True):  # both in forward order
        for rest, value in children[child].items():
            index, _, name = rest.partition(".")
            if index not in ("0", "1"):
                raise fit.error(f"unexpected key {rest!r} in {prefix}")
            renamed[f"{prefix}.{conv if index == '0' else bn}.{name}"] = value
    for child in se:
        for rest, value in children[child].items():
            module, _, name = rest.partition(".")
            if module not in _SE_ROLES:
                raise fit.error(f"unexpected key {rest!r} in {prefix}'s squeeze-excite")
            renamed[f"{prefix}.{_SE_ROLES[module]}.{name}"] = value
    return renamed


# --------------------------------------------------------------------------- convnext


def from_torchvision_convnext(
    model: nn.Module, state: dict[str, Tensor], fit: LayoutFit
) -> dict[str, Tensor]:
    """features: 0 stem, odd k stage (k-1)/2, even k>0 stage k/2's downsample."""
    timm_stages = getattr(model, "stages", None)
    if timm_stages is None or not hasattr(model, "stem") or not hasattr(model.head, "norm"):
        raise fit.error("it is not a ConvNeXt-style timm model")
    if any(block.use_conv_mlp for stage in timm_stages for block in stage.blocks):
        raise fit.error("its blocks use a conv MLP; torchvision's use Linear layers")
    depths = [len(stage.blocks) for stage in timm_stages]
    stages = indexed(list(state), r"^features\.(\d+)\.\d+\.(?:block\.|layer_scale$)")
    foreign = [len(indexed(stages[k], r"^features\.\d+\.(\d+)\.")) for k in sorted(stages)]
    if sorted(stages) != [2 * s + 1 for s in range(len(foreign))] or foreign != depths:
        raise fit.error(f"stage depths {foreign} in the file, {depths} in {fit.arch}")
    renamed = {}
    for key, value in state.items():
        if key.endswith(".layer_scale"):
            value = value.reshape(-1)  # (C, 1, 1) -> timm's gamma (C,): the same numbers
        renamed[_convnext_key(key, fit)] = value
    return renamed


def _convnext_key(key: str, fit: LayoutFit) -> str:
    block = re.match(r"^features\.(\d+)\.(\d+)\.(?:layer_scale|block\.(\d+)\.(.+))$", key)
    if block:
        k, i, child, rest = block.groups()
        prefix = f"stages.{(int(k) - 1) // 2}.blocks.{i}"
        if child is None:
            return f"{prefix}.gamma"
        if child in _CNBLOCK_ROLES:
            return f"{prefix}.{_CNBLOCK_ROLES[child]}.{rest}"
    plain = re.match(r"^features\.(\d+)\.([01])\.(.+)$", key)
    if plain:
        k, child, rest = plain.groups()
        if k == "0":
            return f"stem.{child}.{rest}"  # conv, LayerNorm2d: same order in both
        if int(k) % 2 == 0:
            return f"stages.{int(k) // 2}.downsample.{child}.{rest}"  # LayerNorm2d, conv
    head = {"classifier.0.": "head.norm.", "classifier.2.": "head.fc."}
    for old, new in head.items():
        if key.startswith(old):
            return new + key.removeprefix(old)
    raise fit.error(f"unexpected key {key!r}")


# --------------------------------------------------------------------------- regnet


def from_torchvision_regnet(
    model: nn.Module, state: dict[str, Tensor], fit: LayoutFit
) -> dict[str, Tensor]:
    """timm's own torchvision converter, once the stage depths are known to agree."""
    stages: list[Any] = [getattr(model, f"s{s}", None) for s in range(1, 5)]
    if not hasattr(model, "stem") or None in stages:
        raise fit.error("it is not a RegNet-style timm model")
    timm_depths = [
        sum(1 for name, _ in stage.named_children() if re.fullmatch(r"b\d+", name))
        for stage in stages
    ]
    foreign = indexed(list(state), r"^trunk_output\.block(\d+)\.")
    depths = [
        len(indexed(foreign.get(s, []), rf"^trunk_output\.block{s}\.block{s}-(\d+)\."))
        for s in range(1, max(foreign, default=0) + 1)
    ]
    if depths != timm_depths:
        raise fit.error(f"stage depths {depths} in the file, {timm_depths} in {fit.arch}")
    from timm.models.regnet import _filter_fn

    return dict(_filter_fn(state))
