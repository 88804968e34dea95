"""No output ever replaces an input or lands in the image folder (issue 13, item 1).

Each case runs the CLI in-process on files built here and checks: exit code 1, one error
line naming the file, and the input's bytes unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from loupe.engine.cli import main
from loupe.engine.core.errors import ConfigError
from loupe.engine.core.outputs import check_distinct, check_output, is_inside, same_file
from tests.engine.predict_helpers import make_bundle, save_noise


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(capsys, argv, *needles):
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert str(needle) in err, err
    return err


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "imgs"
    for label in ("cat", "dog"):
        for i in range(2):
            save_noise(root / label / f"{i}.png", seed=i)
    return root


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "model.loupe", classes=("cat", "dog"), size=64)


def _as(bundle, path):
    shutil.copyfile(bundle, path)
    return path


# --------------------------------------------------------------------------- lr-find


def test_lr_find_plot_onto_a_training_image_is_refused(tmp_path, images, capsys):
    image = images / "cat" / "0.png"
    before = _digest(image)
    _refused(capsys, ["lr-find", images, "--plot", image], "--plot", image, "image folder")
    assert _digest(image) == before


def test_lr_find_plot_through_a_symlinked_alias_of_the_folder_is_refused(
    tmp_path, images, capsys
):
    alias = tmp_path / "alias"
    alias.symlink_to(images, target_is_directory=True)
    image = images / "dog" / "1.png"
    before = _digest(image)
    _refused(capsys, ["lr-find", images, "--plot", alias / "dog" / "1.png"], "image folder")
    _refused(capsys, ["lr-find", images, "--plot", alias / "new.png"], "image folder")
    assert _digest(image) == before and not (images / "new.png").exists()


def test_lr_find_plot_onto_the_pretrained_weights_is_refused(tmp_path, images, capsys):
    weights = tmp_path / "weights.png"
    weights.write_bytes(b"weights")
    _refused(capsys, ["lr-find", images, "--pretrained", weights, "--plot", weights],
             "would overwrite the input file", weights)
    assert weights.read_bytes() == b"weights"


# --------------------------------------------------------------------------- models


def test_predict_cam_onto_the_model_is_refused(tmp_path, bundle, capsys):
    model = _as(bundle, tmp_path / "model.png")
    picture = save_noise(tmp_path / "pic.png")
    before = _digest(model), _digest(picture)
    _refused(capsys, ["predict", model, picture, "--cam", model],
             "--cam", "would overwrite the input file", model)
    assert (_digest(model), _digest(picture)) == before


def test_export_onnx_onto_the_model_is_refused(tmp_path, bundle, capsys):
    model = _as(bundle, tmp_path / "model.onnx")
    before = _digest(model)
    _refused(capsys, ["export", model, "--onnx", model], "--onnx", "would overwrite", model)
    assert _digest(model) == before


def test_export_sidecar_onto_the_model_is_refused(tmp_path, bundle, capsys):
    model = _as(bundle, tmp_path / "s.json")
    before = _digest(model)
    _refused(capsys, ["export", model, "--onnx", tmp_path / "s.onnx"],
             "sidecar", "would overwrite the input file", model)
    assert _digest(model) == before and not (tmp_path / "s.onnx").exists()


def test_export_torchscript_onto_the_model_is_refused(tmp_path, bundle, capsys):
    model = _as(bundle, tmp_path / "model.pt")
    before = _digest(model)
    _refused(capsys, ["export", model, "--torchscript", model], "--torchscript", model)
    assert _digest(model) == before


def test_export_onto_a_check_image_is_refused(tmp_path, bundle, capsys):
    picture = save_noise(tmp_path / "pic.png").rename(tmp_path / "pic.onnx")
    before = _digest(picture), _digest(bundle)
    _refused(capsys, ["export", bundle, "--onnx", picture, "--check-images", picture],
             "would overwrite the input file", picture)
    assert (_digest(picture), _digest(bundle)) == before


def test_export_two_outputs_on_one_file_are_refused(tmp_path, bundle, capsys):
    out = tmp_path / "x.onnx"
    _refused(capsys, ["export", bundle, "--onnx", out, "--torchscript", out], "same file")
    assert not out.exists()


def test_predict_folder_csv_onto_the_model_is_refused(tmp_path, bundle, images, capsys):
    model = _as(bundle, tmp_path / "model.csv")
    before = _digest(model)
    _refused(capsys, ["predict-folder", model, images, "--csv", model], "--csv", model)
    assert _digest(model) == before


# --------------------------------------------------------------------------- train


def test_resuming_a_finished_run_is_refused(tmp_path, images, capsys):
    model = tmp_path / "out.loupe"
    model.write_bytes(b"the finished model")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    (run_dir / "data.json").write_text(json.dumps({"root": str(images.resolve())}))
    (run_dir / "run.json").write_text(json.dumps({"status": "finished", "bundle": str(model)}))
    _refused(capsys, ["train", images, "--resume", run_dir], "already finished", model)
    assert model.read_bytes() == b"the finished model"


def test_train_out_onto_an_existing_file_needs_overwrite(tmp_path, images, capsys):
    out = tmp_path / "a.loupe"
    out.write_bytes(b"an earlier model")
    _refused(capsys, ["train", images, "--out", out], "already exists", "--overwrite", out)
    assert out.read_bytes() == b"an earlier model"
    # with --overwrite the guard lets it through (here the folder is then missing)
    err = _refused(capsys, ["train", tmp_path / "missing", "--out", out, "--overwrite"])
    assert "folder not found" in err


def test_train_out_inside_the_image_folder_is_refused(tmp_path, images, capsys):
    image = images / "cat" / "1.png"
    before = _digest(image)
    _refused(capsys, ["train", images, "--out", image, "--overwrite"], "image folder", image)
    _refused(capsys, ["train", images, "--out", images / "model.loupe"], "image folder")
    assert _digest(image) == before and not (images / "model.loupe").exists()


def test_loupe_home_inside_the_image_folder_is_refused_before_scanning(
    tmp_path, images, capsys, monkeypatch
):
    home = images / "loupe-home"
    monkeypatch.setenv("LOUPE_HOME", str(home))
    listing = sorted(p.relative_to(images) for p in images.rglob("*"))
    _refused(capsys, ["train", images], "LOUPE_HOME", home, images)
    assert sorted(p.relative_to(images) for p in images.rglob("*")) == listing


# --------------------------------------------------------------------------- the helper


def test_helper_compares_files_not_spellings(tmp_path):
    source = tmp_path / "a.png"
    source.write_bytes(b"x")
    link = tmp_path / "hard.png"
    os.link(source, link)
    assert same_file(link, source) and not same_file(tmp_path / "none", source)
    with pytest.raises(ConfigError, match="would overwrite the input file"):
        check_output(tmp_path / "sub" / ".." / "hard.png", inputs=(source,))
    check_output(tmp_path / "b.png", inputs=(source, None))  # a new file is fine
    assert is_inside(tmp_path / "x" / "y" / "z.png", tmp_path)
    assert not is_inside(tmp_path / "x", tmp_path / "x-other")
    with pytest.raises(ConfigError, match="same file"):
        check_distinct([("--a", source), ("--b", link)])
