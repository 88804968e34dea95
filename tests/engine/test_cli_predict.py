"""``loupe predict``, ``predict-folder``, ``analyze`` and ``export`` end to end (in-process)."""

from __future__ import annotations

import json
import pathlib
import pickle

import pytest
from PIL import Image

from loupe.engine.cli import main
from tests.engine.predict_helpers import make_bundle, save_noise, save_rotated_jpeg


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "model.loupe", classes=("cat", "dog"), size=64)


FORMATS = "Loupe reads JPEG, PNG, BMP, GIF, WebP, TIFF"


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_predict_json_one_object_per_image(tmp_path, bundle, capsys):
    images = [save_noise(tmp_path / f"{i}.png", seed=i) for i in range(2)]
    assert main(["predict", str(bundle), *map(str, images), "--topk", "2", "--json"]) == 0
    objects = _json_lines(capsys.readouterr().out)
    assert [o["path"] for o in objects] == [str(p) for p in images]
    for obj in objects:
        assert set(obj) == {"path", "top"}  # "unknown" only when a threshold is set
        assert [t["label"] for t in obj["top"]] in (["cat", "dog"], ["dog", "cat"])
        assert sum(t["prob"] for t in obj["top"]) == pytest.approx(1.0, abs=1e-5)
        assert obj["top"][0]["prob"] >= obj["top"][1]["prob"]


def test_predict_unknown_flag_when_threshold_is_set(tmp_path, bundle, capsys):
    image = save_noise(tmp_path / "x.png")
    assert main(["predict", str(bundle), str(image), "--unknown-below", "0.999", "--json"]) == 0
    (obj,) = _json_lines(capsys.readouterr().out)
    assert obj["unknown"] is True  # an untrained two-class model is never 99.9% sure


def test_predict_text_output(tmp_path, bundle, capsys):
    image = save_noise(tmp_path / "x.png")
    assert main(["predict", str(bundle), str(image)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{image}: ") and "cat" in line and "%" in line


def test_predict_cam_writes_one_overlay_per_image_at_original_size(tmp_path, bundle, capsys):
    plain = save_noise(tmp_path / "wide.png", size=(150, 90))
    rotated = save_rotated_jpeg(tmp_path / "phone.jpg",
                                Image.open(save_noise(tmp_path / "raw.png", size=(120, 80))))
    cam = tmp_path / "maps" / "cam.png"
    code = main(["predict", str(bundle), str(plain), str(rotated), "--cam", str(cam),
                 "--cam-method", "gradcampp", "--json"])
    assert code == 0
    objects = _json_lines(capsys.readouterr().out)
    assert [o["cam"] for o in objects] == [str(cam.with_name("cam-1.png")),
                                           str(cam.with_name("cam-2.png"))]
    with Image.open(objects[0]["cam"]) as first, Image.open(objects[1]["cam"]) as second:
        assert first.size == (150, 90)
        assert second.size == (80, 120)  # EXIF orientation applied
    assert objects[0]["cam_class"] == objects[0]["top"][0]["label"]


def test_predict_cam_single_image_uses_the_name_as_given(tmp_path, bundle):
    image = save_noise(tmp_path / "x.png")
    cam = tmp_path / "heat.jpg"
    assert main(["predict", str(bundle), str(image), "--cam", str(cam),
                 "--cam-class", "dog"]) == 0
    with Image.open(cam) as written:
        assert written.format == "JPEG" and written.size == (48, 40)


def test_predict_cam_refuses_to_overwrite_an_input_image(tmp_path, bundle, capsys):
    first, second = save_noise(tmp_path / "x.png"), save_noise(tmp_path / "x-2.png", seed=2)
    before = (first.read_bytes(), second.read_bytes())
    assert main(["predict", str(bundle), str(first), "--cam", str(first)]) == 1
    assert "would overwrite the input file" in capsys.readouterr().err
    # FILE-N naming for several images must not land on an input either
    assert main(["predict", str(bundle), str(first), str(second), "--cam",
                 str(tmp_path / "x.png")]) == 1
    assert f"overwrite the input file {second}" in capsys.readouterr().err
    assert (first.read_bytes(), second.read_bytes()) == before


def test_an_unwritable_output_is_one_line_naming_it(tmp_path, bundle, capsys):
    image = save_noise(tmp_path / "x.png")
    (tmp_path / "file").write_text("not a folder")
    cam = tmp_path / "file" / "cam.png"
    assert main(["predict", str(bundle), str(image), "--cam", str(cam)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"loupe predict: error: {cam}:") and len(err.splitlines()) == 1


def test_predict_reports_a_bad_image_and_continues(tmp_path, bundle, capsys):
    good = save_noise(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["predict", str(bundle), str(bad), str(good), "--json"]) == 1
    first, second = _json_lines(capsys.readouterr().out)
    assert first["path"] == str(bad) and "bad.png" in first["error"]
    assert second["path"] == str(good) and second["top"]
    assert main(["predict", str(bundle), str(bad)]) == 1
    assert capsys.readouterr().err == f"{bad}: error: not an image ({FORMATS})\n"


class _Canary:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_hostile_pickle_bundle_is_refused_without_running_code(tmp_path, capsys, protocol):
    canary = tmp_path / "canary"
    payload = pickle.dumps({"state_dict": _Canary(canary)}, protocol=protocol)
    pickle.loads(payload)  # the payload is live: loading it really would run code
    assert canary.exists()
    canary.unlink()

    evil = tmp_path / "model.loupe"
    evil.write_bytes(payload)
    image = save_noise(tmp_path / "x.png")
    assert main(["predict", str(evil), str(image)]) == 1
    err = capsys.readouterr().err
    assert str(evil) in err and "pickle" in err and "never loads pickles" in err
    assert not canary.exists()


def test_hostile_torch_save_file_is_refused(tmp_path, capsys):
    import torch

    canary = tmp_path / "canary"
    evil = tmp_path / "model.loupe"
    torch.save({"x": _Canary(canary)}, evil)
    assert main(["predict", str(evil), str(save_noise(tmp_path / "x.png"))]) == 1
    assert "never loads pickles" in capsys.readouterr().err
    assert not canary.exists()


def test_predict_folder_writes_csv_and_copies(tmp_path, bundle, capsys):
    root = tmp_path / "incoming"
    for i in range(3):
        save_noise(root / ("sub" if i else ".") / f"{i}.png", seed=i)
    sort = tmp_path / "sorted"
    code = main(["predict-folder", str(bundle), str(root), "--csv", str(tmp_path / "p.csv"),
                 "--sort-into", str(sort), "--bs", "2"])
    assert code == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "path,label,prob,unknown,top,error" and len(lines) == 4
    assert len([p for p in sort.rglob("*.png")]) == 3
    assert len(list(root.rglob("*.png"))) == 3  # the originals are all still there
    assert "3 images predicted" in capsys.readouterr().out


def test_predict_folder_csv_must_end_in_csv_so_it_cannot_replace_a_picture(
    tmp_path, bundle, capsys
):
    root = tmp_path / "incoming"
    picture = save_noise(root / "ok.png", seed=1)
    before = picture.read_bytes()
    assert main(["predict-folder", str(bundle), str(root), "--csv", str(picture)]) == 1
    assert "must end in .csv" in capsys.readouterr().err
    assert picture.read_bytes() == before


def test_predict_folder_summary_counts_a_rejected_file_once(tmp_path, bundle, capsys):
    root = tmp_path / "incoming"
    save_noise(root / "ok.png", seed=1)
    (root / "empty.png").write_bytes(b"")
    code = main(["predict-folder", str(bundle), str(root), "--csv", str(tmp_path / "p.csv")])
    assert code == 0
    assert "0 unreadable, 1 rejected" in capsys.readouterr().out


def test_analyze_writes_figures_and_metrics(tmp_path, bundle, capsys):
    root = tmp_path / "data"
    for part, count in (("train", 2), ("valid", 2)):
        for label in ("cat", "dog"):
            for i in range(count):
                seed = i + (10 if label == "dog" else 0) + (100 if part == "valid" else 0)
                save_noise(root / part / label / f"{label}{i}.png", seed=seed)
    out = tmp_path / "report"
    code = main(["analyze", str(bundle), str(root), "--split", "folders", "--out", str(out),
                 "--top-losses", "2"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["cat", "dog"] and metrics["count"] == 4
    assert sum(map(sum, metrics["confusion"]["counts"])) == 4
    for name in ("confusion.png", "per_class.png", "top_losses.png", "embedding.png"):
        assert (out / name).stat().st_size > 1000
    assert "4 images" in capsys.readouterr().out

    inside = root / "valid" / "cat"
    before = sorted((p.name, p.read_bytes()) for p in inside.iterdir())
    code = main(["analyze", str(bundle), str(root), "--split", "folders", "--out", str(inside)])
    assert code == 1 and "inside the image folder" in capsys.readouterr().err
    assert sorted((p.name, p.read_bytes()) for p in inside.iterdir()) == before


def test_analyze_and_evaluate_default_to_the_split_the_model_was_trained_with(
    tmp_path, capsys
):
    """Another split would score training images as validation ones: a flattering lie."""
    root = tmp_path / "data"
    for part, count in (("train", 6), ("valid", 1)):
        for label in ("cat", "dog"):
            for i in range(count):
                save_noise(root / part / label / f"{label}{part}{i}.png", seed=i)
    training = {"label_rule": "parent", "split_rule": "folders", "seed": 3}
    model = make_bundle(tmp_path / "m.loupe", classes=("cat", "dog"), training=training)
    code = main(["analyze", str(model), str(root), "--out", str(tmp_path / "r"), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["count"] == 2  # valid/ only
    assert main(["evaluate", str(model), str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 2
    # options given on the command line still win
    assert main(["evaluate", str(model), str(root), "--split", "random:0.5", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n_images"] != 2
    assert "--split random:0.5 differs from the folders" in captured.err  # ...and say so


def test_export_cli_reports_parity(tmp_path, bundle, capsys):
    import onnxruntime  # noqa: F401  (the dev extra installs loupe[onnx])
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(bundle), "--onnx", str(onnx_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parity_ok"] and report["max_abs_diff"] < 1e-4
    assert onnx_path.is_file() and (tmp_path / "m.json").is_file()


def test_export_cli_needs_a_format(bundle, capsys):
    assert main(["export", str(bundle)]) == 1
    assert "--onnx" in capsys.readouterr().err
