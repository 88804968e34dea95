"""Build a network for N classes, optionally on a pretrained body (timm underneath)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loupe.engine.core.errors import ConfigError, WeightsError
from loupe.engine.models.anatomy import head_prefixes, is_under
from loupe.engine.models.architectures import resolve_arch

if TYPE_CHECKING:
    import torch
    from torch import nn


def create_model(
    arch: str, num_classes: int, *, pretrained_state: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """Build ``arch`` with a fresh ``num_classes`` head; load a pretrained body if given.

    The pretrained state's own classifier (usually 1000 ImageNet classes) is dropped; every
    other tensor must match the model by name and shape, or WeightsError lists what does
    not. BatchNorm's ``num_batches_tracked`` counters may be absent (timm omits them).
    """
    import timm

    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    name = resolve_arch(arch)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
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
            if is_under(name, heads):
                param.zero_()


def check_pretrained_state(
    model: nn.Module, state: dict[str, torch.Tensor], *, arch: str
) -> dict[str, torch.Tensor]:
    """Validate ``state`` against ``model`` ignoring heads; return the body tensors.

    Raises WeightsError naming missing, unexpected and wrongly shaped tensors.
    """
    heads = head_prefixes(model)
    own = {k: v for k, v in model.state_dict().items() if not is_under(k, heads)}
    given = {k: v for k, v in state.items() if not is_under(k, heads)}
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
