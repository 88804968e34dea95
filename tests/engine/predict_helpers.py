"""Small models, bundles and images shared by the prediction / CAM / analysis tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from loupe.engine.data.transforms import Preprocessing
from loupe.engine.inference.predict import Predictor

PLAIN = Preprocessing(size=32, presize=37, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class BiasNet(nn.Module):
    """Outputs exactly ``logits`` for any input (zero weights): probabilities are known.

    It still has a convolution and a spatial stage, so the prediction code path is real.
    """

    def __init__(self, logits: Sequence[float]) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, len(logits))
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.tensor(list(logits)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class ColourNet(nn.Module):
    """Logit of class 0 is 10×(mean blue − mean red), of class 1 the opposite.

    Classes ("blue", "red"): a red picture is "red" with high confidence. The 1×1 conv
    keeps a spatial map (for activation maps) and its channels are the embeddings.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].bias.zero_()
            self.features[0].weight[0, 0] = 1.0  # channel 0: red
            self.features[0].weight[1, 2] = 1.0  # channel 1: blue
            self.fc.weight.copy_(torch.tensor([[-10.0, 10.0], [10.0, -10.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def predictor_for(model: nn.Module, classes: Sequence[str], **kwargs) -> Predictor:
    kwargs.setdefault("preprocessing", PLAIN)
    return Predictor(model, classes=classes, **kwargs)


def save_noise(path: Path, size: tuple[int, int] = (48, 40), seed: int = 0) -> Path:
    """A random RGB picture of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def save_colour(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


def save_rotated_jpeg(path: Path, image: Image.Image, orientation: int = 6) -> Path:
    """Save ``image`` as a JPEG carrying an EXIF orientation tag (camera-style)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def make_bundle(
    path: Path,
    *,
    arch: str = "test_resnet",
    classes: Sequence[str] = ("cat", "dog"),
    size: int = 64,
    multi_label: bool = False,
    thresholds: Sequence[float] | None = None,
    seed: int = 0,
    training: dict | None = None,
    resize: str = "crop",
) -> Path:
    """A real ``.loupe`` bundle of a tiny timm model (random weights, seeded).

    The head gets random weights too, as a trained model's would have: a new head starts
    at zero (every class equally likely), which would make every prediction identical.
    """
    from loupe.engine.models.anatomy import head_parameters
    from loupe.engine.models.bundle import save_bundle
    from loupe.engine.models.factory import create_model

    torch.manual_seed(seed)
    model = create_model(arch, len(classes))
    with torch.no_grad():
        for param in head_parameters(model):
            param.normal_(0.0, 0.5)
    meta = {
        "architecture": arch,
        "classes": list(classes),
        "multi_label": multi_label,
        "thresholds": list(thresholds) if thresholds is not None else None,
        "preprocessing": Preprocessing.for_size(size, resize=resize).to_json(),
        "training": dict(training or {}),
    }
    return save_bundle(path, model, meta)
