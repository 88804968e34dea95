"""ONNX export: parity with PyTorch, dynamic batch, sidecar; the missing-extra message."""

from __future__ import annotations

import builtins
import json

import numpy as np
import onnxruntime  # the dev extra installs the optional loupe[onnx]
import pytest
import torch
from PIL import Image

from loupe.engine.core.errors import ConfigError, LoupeError
from loupe.engine.inference.export import (
    export_onnx,
    export_torchscript,
    read_sidecar,
    require_onnx,
)
from loupe.engine.inference.predict import Predictor
from tests.engine.predict_helpers import make_bundle, save_noise


@pytest.fixture
def predictor(tmp_path):
    return Predictor.from_file(
        make_bundle(tmp_path / "m.loupe", classes=("ant", "bee", "cat"), size=64)
    )


def test_onnx_matches_pytorch_on_real_images_with_a_dynamic_batch(tmp_path, predictor):
    images = [save_noise(tmp_path / f"{i}.png", size=(90, 70 + i), seed=i) for i in range(3)]
    result = export_onnx(predictor, tmp_path / "out" / "model.onnx", check_images=images)
    assert result.path.is_file() and result.checked == 3
    assert result.max_abs_diff < 1e-4 and result.parity_ok

    # Independently of the export's own check: run onnxruntime on batches of 1 and 5.
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for count in (1, 5):
        batch = torch.randn(count, 3, 64, 64)
        (onnx_out,) = session.run(None, {"input": batch.numpy()})
        reference = predictor.logits(batch).numpy()
        assert onnx_out.shape == (count, 3)
        assert np.abs(onnx_out - reference).max() < 1e-4


def test_sidecar_carries_classes_and_preprocessing(tmp_path, predictor):
    result = export_onnx(predictor, tmp_path / "model.onnx", check_count=2)
    assert result.sidecar == tmp_path / "model.json"
    sidecar = read_sidecar(result.sidecar)
    assert sidecar["classes"] == ["ant", "bee", "cat"]
    assert sidecar["preprocessing"] == predictor.preprocessing.to_json()
    assert sidecar["input"]["shape"] == ["batch", 3, 64, 64]
    assert sidecar["output"]["activation"] == "softmax"
    assert sidecar["parity"] == {"max_abs_diff": result.max_abs_diff, "images": 2}
    assert not list(tmp_path.glob(".model.onnx.*"))  # no temp files left behind


def test_a_squish_model_exports_its_method_and_a_recipe_anyone_can_follow(tmp_path):
    predictor = Predictor.from_file(make_bundle(tmp_path / "s.loupe", size=32, resize="squish"))
    image = save_noise(tmp_path / "wide.png", size=(90, 40))
    result = export_onnx(predictor, tmp_path / "s.onnx", check_images=[image])
    assert result.parity_ok
    sidecar = read_sidecar(result.sidecar)
    assert sidecar["input"]["resize"] == sidecar["preprocessing"]["resize"] == "squish"
    assert "resize the whole image to 32×32 px ignoring its aspect ratio" in (
        sidecar["input"]["recipe"]
    )
    # Follow the recipe with nothing but Pillow and numpy, as a user elsewhere would.
    with Image.open(image) as img:
        squished = img.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
    pixels = np.asarray(squished, dtype=np.float32) / 255
    mean, std = (np.array(sidecar["preprocessing"][k], dtype=np.float32) for k in ("mean", "std"))
    x = ((pixels - mean) / std).transpose(2, 0, 1)
    assert np.abs(x - predictor.prepare(image).tensor.numpy()).max() < 1e-5


def test_multi_label_sidecar_has_thresholds(tmp_path):
    bundle = make_bundle(tmp_path / "ml.loupe", classes=("a", "b"), multi_label=True,
                         thresholds=(0.3, 0.7))
    result = export_onnx(Predictor.from_file(bundle), tmp_path / "ml.onnx", check_count=1)
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["thresholds"] == [0.3, 0.7] and sidecar["output"]["activation"] == "sigmoid"


def test_wrong_suffix_is_refused(tmp_path, predictor):
    with pytest.raises(ConfigError, match=r"\.onnx"):
        export_onnx(predictor, tmp_path / "model.bin")


def test_an_unwritable_destination_is_an_error_naming_the_file(tmp_path, predictor):
    (tmp_path / "file").write_text("a file where a folder should be")
    with pytest.raises(LoupeError, match="cannot write .*file/model.onnx"):
        export_onnx(predictor, tmp_path / "file" / "model.onnx")
    with pytest.raises(LoupeError, match="cannot write .*file/model.pt"):
        export_torchscript(predictor, tmp_path / "file" / "model.pt")


def test_missing_onnx_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name in ("onnx", "onnxruntime"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(LoupeError) as info:
        require_onnx()
    assert 'pip install "loupe[onnx]"' in str(info.value)
    assert ".venv/bin/pip install onnx onnxruntime" in str(info.value)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_reproduces_the_model(tmp_path, predictor):
    path = export_torchscript(predictor, tmp_path / "model.pt")
    loaded = torch.jit.load(str(path))
    batch = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(loaded(batch), predictor.logits(batch), atol=1e-5)
    assert json.loads(path.with_suffix(".json").read_text())["classes"] == ["ant", "bee", "cat"]
