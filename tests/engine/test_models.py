"""engine.models: curated architectures, timm configs, pretrained loading, param groups, CAM."""

from __future__ import annotations

import pytest
import timm
import torch

from loupe.engine.core.errors import ConfigError, WeightsError
from loupe.engine.models import anatomy, architectures, catalog, factory

CURATED = [info.name for info in architectures.ARCHITECTURES]


def _meta_model(name: str, num_classes: int = 1000) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, num_classes=num_classes)


def test_curated_list_is_the_one_the_issue_names():
    assert CURATED == [
        "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2",
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "convnext_tiny",
        "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
        "mobilenetv3_large_100", "regnety_016", "vit_small_patch16_224",
    ]


@pytest.mark.parametrize("name", CURATED)
def test_static_parameter_counts_match_the_built_model(name):
    built = sum(p.numel() for p in _meta_model(name).parameters())
    assert architectures.arch_info(name).params == built


@pytest.mark.parametrize("name", CURATED)
def test_input_size_and_statistics_come_from_timm(name):
    cfg = timm.models.get_pretrained_cfg(name)
    data = architectures.model_data_config(name)
    assert architectures.arch_info(name).input_size == cfg.input_size[-1]
    assert data["input_size"] == tuple(cfg.input_size)
    assert data["mean"] == pytest.approx(cfg.mean)
    assert data["std"] == pytest.approx(cfg.std)
    assert data["interpolation"] == cfg.interpolation
    assert data["crop_pct"] == pytest.approx(cfg.crop_pct)


def test_tag_selects_the_preprocessing_of_specific_weights():
    # torchvision's ResNet weights were trained with bilinear resizing, timm's default bicubic.
    assert architectures.model_data_config("resnet18")["interpolation"] == "bicubic"
    assert architectures.model_data_config("resnet18", "tv_in1k")["interpolation"] == "bilinear"
    vit = architectures.model_data_config("vit_small_patch16_224")
    assert vit["mean"] == pytest.approx((0.5,) * 3)


def test_any_timm_model_is_accepted_and_typos_get_suggestions():
    assert architectures.is_known_arch("resnet10t")  # not curated, but timm has it
    info = architectures.arch_info("resnet10t")
    assert info.family == "resnet"
    assert info.params == sum(p.numel() for p in _meta_model("resnet10t").parameters())
    with pytest.raises(ConfigError) as err:
        architectures.resolve_arch("resnet19")
    assert "resnet18" in str(err.value) and "Curated choices" in str(err.value)


def test_create_model_replaces_the_head_and_loads_the_body_exactly():
    torch.manual_seed(0)
    donor = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    state = {k: v + torch.randn_like(v.float()).to(v.dtype) for k, v in donor.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    model = factory.create_model("resnet18", 3, pretrained_state=state)
    got = model.state_dict()
    assert torch.equal(got["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])
    assert torch.equal(got["bn1.running_var"], state["bn1.running_var"])
    assert got["fc.weight"].shape == (3, 512)  # new head, not the donor's 1000 classes
    assert not torch.equal(got["fc.weight"], state["fc.weight"][:3])


def test_create_model_rejects_state_that_does_not_fit():
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    del state["layer1.0.conv1.weight"]
    state["layer2.0.conv1.weight"] = torch.zeros(1, 2, 3, 3)
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as err:
        factory.create_model("resnet18", 2, pretrained_state=state)
    message = str(err.value)
    assert "missing: layer1.0.conv1.weight" in message
    assert "unexpected: extra.weight" in message
    assert "layer2.0.conv1.weight (file (1, 2, 3, 3), model (128, 64, 3, 3))" in message


def test_create_model_validates_num_classes():
    with pytest.raises(ConfigError):
        factory.create_model("resnet18", 0)


@pytest.mark.parametrize(
    ("name", "head"),
    [("resnet18", ["fc.weight", "fc.bias"]), ("convnext_tiny", ["head.fc.weight", "head.fc.bias"]),
     ("efficientnet_b0", ["classifier.weight", "classifier.bias"]),
     ("vit_small_patch16_224", ["head.weight", "head.bias"])],
)
def test_head_and_body_split_the_parameters(name, head):
    model = _meta_model(name, 5)
    names = {id(p): n for n, p in model.named_parameters()}
    head_params = anatomy.head_parameters(model)
    body_params = anatomy.body_parameters(model)
    assert [names[id(p)] for p in head_params] == head
    assert len(head_params) + len(body_params) == len(list(model.parameters()))
    assert not {id(p) for p in head_params} & {id(p) for p in body_params}


def test_norm_parameters_are_body_norms_only():
    model = _meta_model("resnet18", 2)
    names = {id(p): n for n, p in model.named_parameters()}
    norm = [names[id(p)] for p in anatomy.norm_parameters(model)]
    assert "bn1.weight" in norm and "layer4.1.bn2.bias" in norm
    assert not any(n.startswith("fc") or "conv" in n for n in norm)


def test_layer_groups_for_resnet_follow_fastai_split():
    model = _meta_model("resnet18", 2)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [[names[id(p)] for p in g] for g in anatomy.layer_groups(model)]
    assert len(groups) == 3
    assert "conv1.weight" in groups[0] and "layer2.1.bn2.bias" in groups[0]
    assert all(n.startswith(("layer3", "layer4")) for n in groups[1])
    assert groups[2] == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("name", ["efficientnet_b0", "vit_small_patch16_224", "regnety_016",
                                  "convnext_tiny", "mobilenetv3_large_100"])
@pytest.mark.parametrize("n_groups", [2, 3, 5])
def test_layer_groups_cover_every_parameter_once_head_last(name, n_groups):
    model = _meta_model(name, 4)
    groups = anatomy.layer_groups(model, n_groups)
    assert len(groups) == n_groups
    flat = [id(p) for g in groups for p in g]
    assert len(flat) == len(set(flat)) == len(list(model.parameters()))
    assert [id(p) for p in groups[-1]] == [id(p) for p in anatomy.head_parameters(model)]
    order = {id(p): i for i, p in enumerate(model.parameters())}
    first_of_each = [min(order[id(p)] for p in g) for g in groups[:-1]]
    assert first_of_each == sorted(first_of_each)  # early -> late


def test_layer_groups_needs_two():
    with pytest.raises(ConfigError):
        anatomy.layer_groups(_meta_model("resnet18", 2), 1)


@pytest.mark.parametrize(
    ("name", "layer"),
    [("resnet50", "layer4"), ("convnext_tiny", "stages.3"), ("efficientnet_b2", "bn2"),
     ("mobilenetv3_large_100", "blocks.6"), ("mobilenetv3_small_100", "blocks.5"),
     ("regnety_016", "s4"),
     ("vit_small_patch16_224", "blocks.11.norm1"), ("resnet10t", "layer4")],
)
def test_cam_target_layer_per_family(name, layer):
    model = _meta_model(name, 3)
    assert anatomy.cam_target_layer(model, name) == layer
    assert anatomy.cam_target_layer(model) == layer  # found from the model alone too


def test_cam_layer_output_is_spatial_for_a_cnn():
    model = factory.create_model("resnet18", 2).eval()
    seen = {}
    layer = dict(model.named_modules())[anatomy.cam_target_layer(model, "resnet18")]

    def hook(_module, _inputs, output):
        seen["shape"] = tuple(output.shape)

    layer.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    assert seen["shape"] == (1, 512, 2, 2)
    assert anatomy.cam_reshape_transform(model) is None


def test_vit_tokens_fold_back_into_a_map():
    model = _meta_model("vit_small_patch16_224", 3)
    reshape = anatomy.cam_reshape_transform(model)
    tokens = torch.arange(2 * 197 * 4, dtype=torch.float32).reshape(2, 197, 4)
    fmap = reshape(tokens)
    assert fmap.shape == (2, 4, 14, 14)
    assert torch.equal(fmap[1, :, 0, 1], tokens[1, 2])  # class token dropped, row-major grid


def test_describe_architectures_reports_weights_status():
    rows = catalog.describe_architectures()
    assert [r["name"] for r in rows] == CURATED  # the installed lite weights lead already
    assert [r["pretrained"] for r in rows[:4]] == [True, True, True, False]
    assert rows[0]["weights"].startswith("found: installed package efficientnet-lite0")
    assert rows[3]["weights"] == "not found"  # the test's caches are empty
    assert rows[10]["input_size"] == 240
