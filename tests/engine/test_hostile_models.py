"""Issue 13 (items 4, 5): model files and weights from strangers.

Every hostile file gets one error line naming it (ModelFileError / WeightsError, exit 1
through the CLI), never a traceback, and nothing large is built or allocated before the
metadata and the safetensors header have been checked.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from loupe.engine.cli import main
from loupe.engine.core.errors import ModelFileError, WeightsError
from loupe.engine.models import bundle, factory, weights
from loupe.engine.training import config as train_config
from tests.engine.test_bundle import _rewrite, trained  # noqa: F401  (fixture)
from tests.engine.test_weights import _random_state


def _raw(path: Path, header: dict, data: bytes = b"") -> Path:
    """A file with exactly this safetensors header (no validation by safetensors)."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _meta_header(meta: dict) -> dict:
    return {"__metadata__": {"loupe": json.dumps(meta)}}


def _valid_meta(**changes) -> dict:
    meta = {
        "format_version": 2,
        "architecture": "resnet18",
        "classes": ["a", "b"],
        "preprocessing": {"size": 32, "presize": 37, "mean": [0.5] * 3, "std": [0.2] * 3},
    }
    meta.update(changes)
    return meta


def _no_build(monkeypatch) -> None:
    """Fail the test if a real (memory-using) network is built."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was built before the file was refused")

    monkeypatch.setattr(factory, "create_model", refuse)


def _cli_refuses(path: Path, capsys, *args: str) -> str:
    code = main(["predict", str(path), *args])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert path.name in lines[0]
    return lines[0]


# --------------------------------------------------------------------------- headers


def _tensor_entry(dtype, shape, offsets):
    """A maker of a valid-metadata file with one tensor entry ``w`` as given."""

    def make(path: Path) -> Path:
        entry = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
        return _raw(path, {**_meta_header(_valid_meta()), "w": entry}, b"\0" * 8)

    return make


def _deep(n: int) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize(
    "make",
    [
        # deep nesting in the safetensors header itself
        lambda p: p.write_bytes(
            struct.pack("<Q", 200_004) + b'{"a":' + _deep(100_000).encode() + b"}"
        ),
        # deep nesting in the Loupe metadata
        lambda p: _raw(p, {"__metadata__": {"loupe": _deep(100_000)}}),
        lambda p: _raw(p, _meta_header(_valid_meta(training={"x": json.loads(_deep(60))}))),
        # data_offsets of every wrong kind
        *[
            _tensor_entry("F32", [1], off)
            for off in (3, None, ["0", "4"], [], [4, 0], [-4, 0], [0, 1 << 70], [0, 8])
        ],
        # dtypes outside float32 (and int64 counters)
        *[
            _tensor_entry(dt, [1], [0, 1])
            for dt in ("F8_E4M3", "F8_E5M2", "BOOL", "U8", "I32", "F16", "BF16", "C64", 7, [])
        ],
        # shapes that are not lists of counts
        lambda p: _raw(p, {**_meta_header(_valid_meta()),
                           "w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}}),
        lambda p: _raw(p, {**_meta_header(_valid_meta()),
                           "w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}),
        lambda p: _raw(p, {"__metadata__": {"loupe": 5}}),
    ],
)
def test_hostile_headers_are_one_line(tmp_path, capsys, monkeypatch, make):
    _no_build(monkeypatch)
    path = tmp_path / "hostile.loupe"
    make(path)
    with pytest.raises(ModelFileError, match="hostile.loupe"):
        bundle.load_bundle(path)
    _cli_refuses(path, capsys)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"training": 5}, "'training' must be a JSON object"),
        ({"training": ["x"]}, "'training' must be a JSON object"),
        ({"versions": "1.0"}, "'versions' must be a JSON object"),
        ({"versions": {"torch": [1]}}, "'versions' must map names to strings"),
        ({"training": {f"k{i}": i for i in range(1000)}}, "'training' is too large"),
        ({"training": {"label_rule": 3}}, "training.label_rule must be a str"),
        ({"training": {"split_rule": ["a"]}}, "training.split_rule must be a str"),
        ({"training": {"seed": "7"}}, "training.seed must be a int"),
        ({"classes": [str(i) for i in range(1_000_001)]}, "1000001 classes"),
        ({"classes": ["x" * 5000, "b"]}, "class name is longer"),
        ({"thresholds": [10**400, 0.5]}, "thresholds"),
        ({"multi_label": True, "thresholds": [float("nan"), 0.5]}, "threshold"),
    ],
)
def test_bad_metadata_fields_are_refused_before_building(
    tmp_path, capsys, monkeypatch, changes, message
):
    _no_build(monkeypatch)
    path = _raw(tmp_path / "meta.loupe", _meta_header(_valid_meta(**changes)))
    with pytest.raises(ModelFileError, match=message):
        bundle.load_bundle(path)
    _cli_refuses(path, capsys)


@pytest.mark.parametrize(
    "prep",
    [
        {"size": 10**9, "presize": 10**9},
        {"size": 20000, "presize": 23000},
        {"size": 8, "presize": 10},
        {"size": 224, "presize": 10**7},
        {"size": 32, "presize": 37, "mean": [10**400, 0, 0]},
        {"size": 32, "presize": 37, "std": [float("inf"), 1, 1]},
    ],
)
def test_preprocessing_out_of_bounds_is_refused_fast(tmp_path, capsys, monkeypatch, prep):
    _no_build(monkeypatch)
    full = {"mean": [0.5] * 3, "std": [0.2] * 3, **prep}
    path = _raw(tmp_path / "prep.loupe", _meta_header(_valid_meta(preprocessing=full)))
    started = time.monotonic()
    with pytest.raises(ModelFileError, match="prep.loupe: .*preprocessing"):
        bundle.read_bundle_meta(path)
    _cli_refuses(path, capsys)
    assert time.monotonic() - started < 5


def test_size_bounds_mirror_the_training_config():
    assert (bundle.MIN_SIZE, bundle.MAX_SIZE) == (train_config.MIN_SIZE, train_config.MAX_SIZE)


@pytest.mark.parametrize(
    ("arch", "n_classes"),
    [("vit_giant_patch14_224", 2), ("resnet18", 100_000), ("convnext_xxlarge", 2)],
)
def test_tiny_header_naming_a_huge_network_is_refused_before_building(
    tmp_path, capsys, monkeypatch, arch, n_classes
):
    _no_build(monkeypatch)
    meta = _valid_meta(architecture=arch, classes=[str(i) for i in range(n_classes)])
    path = _raw(tmp_path / "huge.loupe", _meta_header(meta))
    with pytest.raises(ModelFileError, match="huge.loupe: the weights do not match"):
        bundle.load_bundle(path)
    _cli_refuses(path, capsys)


def test_parameter_cap_is_checked_on_the_meta_device(tmp_path, monkeypatch):
    _no_build(monkeypatch)
    monkeypatch.setattr(bundle, "MAX_PARAMETERS", 1000)
    path = _raw(tmp_path / "big.loupe", _meta_header(_valid_meta()))
    with pytest.raises(ModelFileError, match="big.loupe: architecture 'resnet18' .* parameters"):
        bundle.load_bundle(path)


# --------------------------------------------------------------------------- tensors


@pytest.mark.parametrize(
    "dtype",
    [torch.bool, torch.int32, torch.int64, torch.uint8, torch.float16, torch.bfloat16,
     torch.float64, torch.complex64, torch.float8_e4m3fn],
)
def test_bundle_weights_of_the_wrong_dtype_are_refused(trained, tmp_path, capsys, dtype):  # noqa: F811
    _model, _meta, path = trained

    def cast(tensors):
        tensors["fc.weight"] = tensors["fc.weight"].to(dtype)

    bad = _rewrite(path, tmp_path / "dtype.loupe", tensor_edit=cast)
    with pytest.raises(ModelFileError, match=r"dtype.loupe: tensor 'fc.weight'"):
        bundle.load_bundle(bad)
    _cli_refuses(bad, capsys)


def test_a_valid_bundle_still_loads_and_predicts(trained, tmp_path, capsys):  # noqa: F811
    _model, _meta, path = trained
    loaded = bundle.load_bundle(path)
    assert loaded.meta.arch == "resnet18"


# --------------------------------------------------------------------------- weights


def _write(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file(state, str(path))
    return path


@pytest.mark.parametrize(
    ("poison", "message"),
    [
        (lambda t: t.fill_(float("nan")), "contains NaN or infinite"),
        (lambda t: t.fill_(float("inf")), "contains NaN or infinite"),
        (lambda t: t.to(torch.int32), "is int32"),
        (lambda t: t.to(torch.uint8), "is uint8"),
        (lambda t: t.to(torch.bool), "is bool"),
        (lambda t: t.to(torch.complex64), "is complex64"),
        (lambda t: t.to(torch.float8_e5m2), "is float8_e5m2"),
    ],
)
def test_weights_import_refuses_bad_tensors_and_keeps_the_store(
    tmp_path, capsys, poison, message
):
    good = _write(_random_state(seed=3), tmp_path / "good.safetensors")
    stored = Path(weights.import_weights(good, "resnet18"))
    before = stored.read_bytes()
    state = _random_state(seed=4)
    state["conv1.weight"] = poison(state["conv1.weight"].clone())
    bad = _write(state, tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError, match=f"bad.safetensors.*'conv1.weight' {message}"):
        weights.import_weights(bad, "resnet18")
    code = main(["weights", "import", str(bad), "--arch", "resnet18"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "bad.safetensors" in err and "conv1.weight" in err
    assert stored.read_bytes() == before


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_are_converted_to_float32(tmp_path, dtype):
    state = {k: v.to(dtype) if v.is_floating_point() else v
             for k, v in _random_state(seed=5).items()}
    loaded = weights.read_weights_file(_write(state, tmp_path / "half.safetensors"), "resnet18")
    assert all(v.dtype in (torch.float32, torch.int64) for v in loaded.values())
    assert torch.equal(loaded["conv1.weight"], state["conv1.weight"].float())


def test_validate_state_refuses_non_float_and_non_finite():
    state = _random_state(seed=6)
    state["fc.bias"] = torch.full_like(state["fc.bias"], float("nan"))
    with pytest.raises(WeightsError, match="'fc.bias' contains NaN"):
        weights.validate_state("resnet18", state)
    state = _random_state(seed=6)
    state["fc.bias"] = state["fc.bias"].to(torch.int64)
    with pytest.raises(WeightsError, match="'fc.bias' is torch.int64"):
        weights.validate_state("resnet18", state)


# --------------------------------------------------------------------------- fuzz


FUZZ_CASES = 3000
FUZZ_RSS_BOUND = 256 * 1024 * 1024  # the stated bound: peak memory growth over all cases


def test_fuzzed_bundles_load_or_fail_with_one_model_file_error_line(tmp_path):
    """3000 seeded mutations of a tiny valid bundle (tests/engine/fuzz_bundle.py), in a
    fresh process so its peak RSS is the loop's own: each one loads or is refused with a
    one-line ModelFileError, no other exception, and the whole loop never raises the peak
    memory by more than 256 MB, although some cases name a giant network, 100,000 classes
    or a 10^9-pixel input (each once allocated gigabytes). A hang fails by the timeout."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "tests.engine.fuzz_bundle", str(tmp_path), str(FUZZ_CASES), "1234"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["unexpected_count"] == 0, "\n".join(result["unexpected"])
    assert result["cases"] == FUZZ_CASES
    assert result["refused"] > FUZZ_CASES // 2 and result["loaded"] > 0, result
    assert result["rss_growth"] < FUZZ_RSS_BOUND, result
