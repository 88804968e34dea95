"""engine.models.bundle: exact round trip, and a specific error for every kind of hostile file.

The pickle canaries would create a file when unpickled; each test asserts the file is
still absent, so "no code ran" is checked, not assumed.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors
from safetensors.torch import save_file

from loupe.engine.core.errors import ConfigError, ModelFileError
from loupe.engine.data.transforms import Preprocessing
from loupe.engine.models import bundle, factory

CLASSES = ["cat", "dog", "newt"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[torch.nn.Module, dict, Path]:
    """A resnet18 with 3 classes and non-default BN statistics, saved as a bundle (once)."""
    tmp_path = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    model = factory.create_model("resnet18", len(CLASSES))
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 32, 32))  # moves BN running stats away from the defaults
    model.eval()
    meta = {
        "architecture": "resnet18",
        "classes": CLASSES,
        "multi_label": False,
        "thresholds": None,
        "preprocessing": Preprocessing(32, 37, "bilinear", (0.4, 0.5, 0.6), (0.2, 0.3, 0.4))
        .to_json(),
        "training": {"epochs": 2, "error_rate": 0.125, "label_rule": "parent", "seed": 7},
    }
    path = bundle.save_bundle(tmp_path / "pets.loupe", model, meta)
    return model, meta, path


def _rewrite(path: Path, out: Path, *, meta_edit=None, tensor_edit=None, raw_meta=None) -> Path:
    """Copy a bundle, changing its metadata or tensors, written as plain safetensors."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta_text = handle.metadata()["loupe"]
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    meta = json.loads(meta_text)
    if meta_edit:
        meta_edit(meta)
    if tensor_edit:
        tensor_edit(tensors)
    text = raw_meta if raw_meta is not None else json.dumps(meta)
    out.write_bytes(save_safetensors(tensors, metadata={"loupe": text}))
    return out


def test_round_trip_predicts_exactly_the_same(trained):
    model, meta, path = trained
    loaded = bundle.load_bundle(path)
    assert not loaded.model.training
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert loaded.meta.arch == loaded.meta.architecture == "resnet18"
    assert loaded.meta.classes == tuple(CLASSES)
    assert loaded.meta.preprocessing == Preprocessing.from_json(meta["preprocessing"])
    assert loaded.meta.training["error_rate"] == 0.125
    assert set(loaded.meta.versions) == {"torch", "timm", "loupe"}
    assert loaded.meta.versions["torch"] == torch.__version__


def test_file_is_one_safetensors_with_json_metadata(trained):
    _model, _meta, path = trained
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta = json.loads(handle.metadata()["loupe"])
    assert meta["format_version"] == bundle.FORMAT_VERSION
    assert meta["classes"] == CLASSES and meta["preprocessing"]["size"] == 32
    assert sorted(p.name for p in path.parent.iterdir()) == ["pets.loupe"]  # no temp left


def test_read_bundle_meta_reads_only_the_header(trained, tmp_path):
    _model, _meta, path = trained
    meta = bundle.read_bundle_meta(path)
    assert meta.classes == tuple(CLASSES) and meta.arch == "resnet18"
    # weights that would fail a full load (NaN) do not matter to the header reader
    bad = _rewrite(path, tmp_path / "nan.loupe",
                   tensor_edit=lambda t: t["fc.bias"].fill_(float("nan")))
    assert bundle.read_bundle_meta(bad).classes == tuple(CLASSES)


def test_multi_label_thresholds_round_trip(tmp_path):
    model = factory.create_model("resnet18", 2).eval()
    meta = {"architecture": "resnet18", "classes": ["a", "b"], "multi_label": True,
            "thresholds": [0.3, 0.7], "preprocessing": Preprocessing.for_size(32).to_json()}
    loaded = bundle.load_bundle(bundle.save_bundle(tmp_path / "m.loupe", model, meta))
    assert loaded.meta.multi_label is True and loaded.meta.thresholds == (0.3, 0.7)


@pytest.mark.parametrize("resize", ["crop", "squish", "pad"])
def test_the_resize_method_round_trips_through_a_bundle(trained, tmp_path, resize):
    model, meta, _path = trained
    pre = Preprocessing.for_size(32, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4), resize=resize)
    path = bundle.save_bundle(tmp_path / f"{resize}.loupe", model,
                              {**meta, "preprocessing": pre.to_json()})
    loaded = bundle.read_bundle_meta(path)
    assert loaded.preprocessing == pre and loaded.preprocessing.resize == resize
    assert loaded.format_version == bundle.FORMAT_VERSION == 2


def test_an_old_bundle_without_a_resize_method_loads_as_crop(trained, tmp_path):
    """Bundles written before the choice existed (format 1, no field) were all crop."""
    _model, meta, path = trained
    old_prep = {k: v for k, v in meta["preprocessing"].items() if k != "resize"}
    old_meta = {**meta, "format_version": 1, "preprocessing": old_prep}
    assert bundle.BundleMeta.from_json(old_meta).preprocessing.resize == "crop"

    def make_old(m: dict) -> None:
        m["format_version"] = 1
        del m["preprocessing"]["resize"]

    loaded = bundle.load_bundle(_rewrite(path, tmp_path / "old.loupe", meta_edit=make_old))
    assert loaded.meta.format_version == 1
    assert loaded.meta.preprocessing.resize == "crop"
    assert loaded.meta.preprocessing.presize == 37


def test_a_bad_resize_method_is_a_model_file_error(trained, tmp_path):
    bad = _rewrite(trained[2], tmp_path / "bad.loupe",
                   meta_edit=lambda m: m["preprocessing"].update(resize="zoom"))
    with pytest.raises(ModelFileError, match="'zoom' is not one of: crop, squish, pad"):
        bundle.load_bundle(bad)


def test_save_refuses_wrong_class_count_and_suffix(tmp_path, trained):
    model, meta, _path = trained
    with pytest.raises(ConfigError, match="3 outputs but 2 class names"):
        bundle.save_bundle(tmp_path / "x.loupe", model, {**meta, "classes": ["a", "b"]})
    with pytest.raises(ConfigError, match="must end in .loupe"):
        bundle.save_bundle(tmp_path / "x.pt", model, meta)


def test_an_unwritable_destination_is_a_model_file_error_naming_it(tmp_path, trained):
    model, meta, _path = trained
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    target = blocker / "x.loupe"
    with pytest.raises(ModelFileError, match="cannot write model file .*not-a-folder/x.loupe"):
        bundle.check_writable(target)
    with pytest.raises(ModelFileError, match="cannot write model file .*not-a-folder/x.loupe"):
        bundle.save_bundle(target, model, meta)
    bundle.check_writable(tmp_path / "new" / "y.loupe")  # a folder to create is fine
    assert list((tmp_path / "new").iterdir()) == []  # and the probe is gone


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="nope.loupe not found"):
        bundle.load_bundle(tmp_path / "nope.loupe")


class _Canary:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("kind", ["torch.save", "pickle-4", "pickle-2", "pickle-0"])
def test_pickles_renamed_to_loupe_are_refused_without_running_them(tmp_path, kind):
    canary = tmp_path / "canary"
    path = tmp_path / "evil.loupe"
    payload = {"state": _Canary(canary)}
    if kind == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(kind[-1])))
    assert not canary.exists()
    for reader in (bundle.load_bundle, bundle.read_bundle_meta):
        with pytest.raises(ModelFileError) as err:
            reader(path)
        assert str(path) in str(err.value)
        assert "is a pickle/PyTorch file, not a Loupe bundle; Loupe never loads pickles" in str(
            err.value
        )
    assert not canary.exists()


def test_truncated_file(trained, tmp_path):
    _model, _meta, path = trained
    data = path.read_bytes()
    cut = tmp_path / "cut.loupe"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cut.loupe is truncated: the weights need"):
        bundle.load_bundle(cut)
    cut.write_bytes(data[:100])
    with pytest.raises(ModelFileError, match=r"is truncated: the header needs"):
        bundle.load_bundle(cut)
    cut.write_bytes(data[:5])
    with pytest.raises(ModelFileError, match="is truncated"):
        bundle.load_bundle(cut)


def test_header_that_is_not_json(tmp_path):
    path = tmp_path / "garbage.loupe"
    path.write_bytes((20).to_bytes(8, "little") + b"{this is not json!!}" + b"\0" * 64)
    with pytest.raises(ModelFileError, match="garbage.loupe: the bundle header is not valid JSON"):
        bundle.load_bundle(path)


def test_plain_safetensors_without_metadata(tmp_path):
    path = tmp_path / "plain.loupe"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ModelFileError, match="plain.loupe has no Loupe metadata"):
        bundle.load_bundle(path)


def test_metadata_that_is_not_json(trained, tmp_path):
    bad = _rewrite(trained[2], tmp_path / "badmeta.loupe", raw_meta="{'classes': oops")
    with pytest.raises(ModelFileError, match="badmeta.loupe: the Loupe metadata is not valid JSON"):
        bundle.load_bundle(bad)


def test_unsupported_format_version(trained, tmp_path):
    bad = _rewrite(trained[2], tmp_path / "future.loupe",
                   meta_edit=lambda m: m.update(format_version=99))
    with pytest.raises(ModelFileError, match="unsupported bundle format_version 99"):
        bundle.load_bundle(bad)


def test_unknown_architecture(trained, tmp_path):
    bad = _rewrite(trained[2], tmp_path / "arch.loupe",
                   meta_edit=lambda m: m.update(architecture="resnet_9000"))
    with pytest.raises(ModelFileError, match="arch.loupe: unknown architecture 'resnet_9000'"):
        bundle.load_bundle(bad)


def test_wrong_shape_names_the_tensor_and_both_shapes(trained, tmp_path):
    def shrink(tensors):
        tensors["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)

    bad = _rewrite(trained[2], tmp_path / "shape.loupe", tensor_edit=shrink)
    with pytest.raises(ModelFileError) as err:
        bundle.load_bundle(bad)
    assert str(err.value) == (
        f"{bad}: tensor 'layer2.0.conv1.weight' has shape (128, 64, 1, 1), the architecture "
        "needs (128, 64, 3, 3)"
    )


def test_missing_tensor(trained, tmp_path):
    bad = _rewrite(trained[2], tmp_path / "missing.loupe",
                   tensor_edit=lambda t: t.pop("layer3.1.bn2.weight"))
    with pytest.raises(ModelFileError, match="missing layer3.1.bn2.weight"):
        bundle.load_bundle(bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_name_the_tensor(trained, tmp_path, value):
    def poison(tensors):
        tensors["layer4.1.conv2.weight"][0, 0, 0, 0] = value

    bad = _rewrite(trained[2], tmp_path / "nan.loupe", tensor_edit=poison)
    with pytest.raises(ModelFileError,
                       match="tensor 'layer4.1.conv2.weight' contains NaN or infinite values"):
        bundle.load_bundle(bad)


def test_class_count_mismatch(trained, tmp_path):
    bad = _rewrite(trained[2], tmp_path / "classes.loupe",
                   meta_edit=lambda m: m.update(classes=["a", "b", "c", "d"]))
    with pytest.raises(ModelFileError, match="class count mismatch: the metadata lists 4 classes "
                                             "but the classifier 'fc' has 3 outputs"):
        bundle.load_bundle(bad)


@pytest.mark.parametrize(
    ("edit", "message"),
    [(lambda m: m.update(classes=[]), "'classes' must be a non-empty list"),
     (lambda m: m.update(multi_label="yes"), "'multi_label' must be true or false"),
     (lambda m: m.update(thresholds=[0.5]), "one number per class"),
     (lambda m: m["preprocessing"].update(size=-3), "invalid preprocessing metadata"),
     (lambda m: m.pop("format_version"), "no integer format_version")],
)
def test_invalid_metadata_fields(trained, tmp_path, edit, message):
    bad = _rewrite(trained[2], tmp_path / "fields.loupe", meta_edit=edit)
    with pytest.raises(ModelFileError, match=message):
        bundle.read_bundle_meta(bad)
