"""The parts of a built network: head vs body, layer groups, the activation-map layer.

The head/body split drives the frozen phase of ``fine_tune`` and the zero-initialised
head; layer groups (early -> late, head last) get discriminative learning rates; the
activation-map layer is what Grad-CAM and kin hook (``cam_target_layer``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loupe.engine.core.errors import ConfigError
from loupe.engine.models.architectures import arch_family

if TYPE_CHECKING:
    import torch
    from torch import nn

# Module whose output activation maps use, per family (the last spatial stage).
_CAM_LAYERS = {
    "resnet": "layer4",
    "convnext": "stages.3",
    "efficientnet": "bn2",  # conv_head + BN + activation: the last spatial features
    "regnet": "s4",
}


def classifier_layer(model: nn.Module) -> nn.Module | None:
    """The final classification layer, whose input is the penultimate embedding.

    timm's ``get_classifier()`` (None when the model was built without a head, which
    timm marks with an Identity); for a network without that method, its last Linear.
    """
    from torch import nn

    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        return head if isinstance(head, nn.Module) and not isinstance(head, nn.Identity) else None
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Module names of the classifier head(s), from timm's config or :func:`classifier_layer`."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier")
    names = (names,) if isinstance(names, str) else tuple(names or ())
    modules = dict(model.named_modules())
    found = tuple(n for n in names if n in modules)
    if found:
        return found
    classifier = classifier_layer(model)
    for name, module in modules.items():
        if module is classifier and name:
            return (name,)
    raise ConfigError(f"cannot find the classifier head of {type(model).__name__}")


def is_under(name: str, prefixes: tuple[str, ...]) -> bool:
    """True when ``name`` is one of ``prefixes`` or a parameter or module inside one."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def head_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    """The new classifier's parameters: the only ones trained in the frozen phase."""
    heads = head_prefixes(model)
    return [p for n, p in model.named_parameters() if is_under(n, heads)]


def body_parameters(model: nn.Module) -> list[torch.nn.Parameter]:
    """Everything but the classifier head (the pretrained part that gets frozen)."""
    heads = head_prefixes(model)
    return [p for n, p in model.named_parameters() if not is_under(n, heads)]


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
        if isinstance(module, norm_types) and not is_under(name, heads):
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
    named = [(n, p) for n, p in model.named_parameters() if not is_under(n, heads)]
    group_matcher: Any = getattr(model, "group_matcher", None)  # timm API, not typed
    if group_matcher is not None:
        from timm.models._manipulate import group_with_matcher

        try:
            matcher = group_matcher(coarse=True)
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
    blocks: Any = getattr(model, "blocks", None)  # timm attributes are dynamic: not typed
    feature_info: Any = getattr(model, "feature_info", None)
    if family == "vit" and blocks is not None:
        name = f"blocks.{len(blocks) - 1}.norm1"
    elif family == "mobilenetv3" and blocks is not None:
        # The last block stage; conv_head runs after pooling, so it is not spatial.
        # Counted, not fixed: the small variants have one stage fewer than large.
        name = f"blocks.{len(blocks) - 1}"
    elif family in _CAM_LAYERS:
        name = _CAM_LAYERS[family]
    elif feature_info:
        name = feature_info[-1]["module"]
    else:
        raise ConfigError(f"no activation-map layer known for architecture {arch or family!r}")
    if name not in modules:
        raise ConfigError(f"activation-map layer {name!r} not found in {arch or family!r}")
    return name


def cam_reshape_transform(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For token models (ViT): tokens (B, N, C) -> feature map (B, C, H, W); else None."""
    patch_embed: Any = getattr(model, "patch_embed", None)  # timm attributes: not typed
    if patch_embed is None or not hasattr(model, "blocks"):
        return None
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    grid = tuple(int(v) for v in patch_embed.grid_size)

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
