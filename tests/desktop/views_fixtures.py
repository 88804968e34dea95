"""Fixtures for the Results, Predict and Models page tests: tiny data, a tiny bundle.

The bundle is a real ``.loupe`` file (timm resnet18, 2 classes, random weights, 64 px)
written by ``loupe.engine.models.bundle.save_bundle``, so the pages load it the way a user's model
is loaded. Images are small PNGs made with Pillow, two colours of classes so a model
has something to tell apart.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

CLASSES = ("cat", "dog")
SIZE = 64


def make_image(path: Path, colour: tuple[int, int, int], seed: int, size: int = 48) -> Path:
    """A noisy picture of one dominant colour (PNG), distinct per seed."""
    rng = random.Random(seed)
    img = Image.new("RGB", (size + seed % 7, size), colour)
    pixels = img.load()
    for _ in range(size * 4):
        x, y = rng.randrange(img.width), rng.randrange(img.height)
        pixels[x, y] = tuple(rng.randrange(256) for _ in range(3))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def make_dataset(root: Path, per_class: int = 6) -> Path:
    """root/cat/*.png and root/dog/*.png (parent-folder labels)."""
    colours = {"cat": (200, 60, 40), "dog": (40, 80, 200)}
    for name in CLASSES:
        for i in range(per_class):
            make_image(root / name / f"{name}_{i}.png", colours[name], seed=i)
    return root


def write_bundle(path: Path, seed: int = 0) -> Path:
    """A real bundle: resnet18 with a 2-class head, random weights, 64 px input."""
    import torch

    from loupe.engine.models.bundle import save_bundle
    from loupe.engine.models.factory import create_model

    torch.manual_seed(seed)
    model = create_model("resnet18", len(CLASSES))
    meta = {
        "architecture": "resnet18",
        "classes": list(CLASSES),
        "preprocessing": {"size": SIZE, "presize": 74, "interpolation": "bilinear",
                          "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "training": {"epochs": 0, "note": "random weights for tests"},
    }
    return save_bundle(path, model, meta)


@pytest.fixture(scope="session")
def bundle_file(tmp_path_factory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("bundle") / "tiny.loupe")


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "pets")


@pytest.fixture
def context(qtbot):
    """A real AppContext; its workers are stopped politely after the test."""
    from loupe.desktop.context import AppContext

    ctx = AppContext()
    yield ctx
    assert ctx.runner.shutdown(20_000), "a worker did not stop"


@pytest.fixture(scope="session")
def loaded_bundle(bundle_file):
    """The bundle loaded once per session (through the real loader)."""
    from loupe.engine.models.bundle import load_bundle

    return load_bundle(bundle_file)


@pytest.fixture
def fresh_predictor(loaded_bundle):
    """A Predictor with its own copy of the model: tests may hook it or change it."""
    import copy

    from loupe.engine.inference.predict import Predictor

    meta = loaded_bundle.meta
    return Predictor(copy.deepcopy(loaded_bundle.model), classes=meta.classes,
                     preprocessing=meta.preprocessing, multi_label=meta.multi_label,
                     thresholds=meta.thresholds, arch=meta.arch, source=loaded_bundle.path)


@pytest.fixture
def model_context(context, bundle_file, fresh_predictor):
    """The context with the tiny bundle loaded (synchronously: tests need it now)."""
    context.set_predictor(bundle_file, fresh_predictor)
    return context


@pytest.fixture
def data_context(model_context, dataset_root):
    """Model plus the prepared dataset (parent labels, 50 % validation)."""
    from loupe.engine.data.dataset import prepare_data
    from loupe.engine.data.labels import LabelRule
    from loupe.engine.data.project import Project
    from loupe.engine.data.splits import SplitRule

    project = Project(dataset_root, label=LabelRule("parent"), split=SplitRule("random", 0.5))
    model_context.project = project
    model_context.set_prepared(prepare_data(project.data_spec()))
    return model_context
