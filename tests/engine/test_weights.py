"""engine.models.weights: fake caches with random weights prove discovery order and exact loading.

conftest.py points LOUPE_HOME, HF_HOME, HF_HUB_CACHE and TORCH_HOME at an empty temp
folder per test, so every cache here is one the test built.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from loupe.engine.core.errors import WeightsError
from loupe.engine.models import factory, weights, weights_download


def _random_state(arch: str = "resnet18", seed: int = 0) -> dict[str, torch.Tensor]:
    """A full timm state dict with values no initialiser would produce."""
    import timm

    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    return {
        k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else torch.zeros(v.shape,
                                                                                       dtype=v.dtype)
        for k, v in model.state_dict().items()
    }


def _write_hf_cache(state: dict[str, torch.Tensor], hub_id: str = "timm/resnet18.a1_in1k") -> Path:
    """The real hub layout: blob named by its sha256, snapshot symlink, refs/main."""
    repo = Path(os.environ["HF_HUB_CACHE"]) / ("models--" + hub_id.replace("/", "--"))
    tmp = repo / "tmp.safetensors"
    repo.mkdir(parents=True)
    save_file(state, str(tmp))
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    blob = repo / "blobs" / digest
    blob.parent.mkdir()
    tmp.rename(blob)
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot / "model.safetensors"


def _write_torchvision_cache(seed: int = 1) -> dict:
    """A real torchvision resnet18 state dict (torchvision's own key names), randomised."""
    torch.manual_seed(seed)
    state = {k: v.clone() for k, v in torchvision.models.resnet18().state_dict().items()}
    folder = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / "resnet18-f37072fd.pth")
    return state


def test_nothing_found_in_empty_caches():
    assert weights.find_weights("resnet18") is None
    assert weights.weights_status("resnet18") == "not found"


def test_hf_cache_is_found_and_loaded_exactly():
    state = _random_state(seed=3)
    path = _write_hf_cache(state)
    source = weights.find_weights("resnet18")
    assert source.kind == "hf-cache" and source.path == path
    assert source.tag == "a1_in1k" and source.sha256 == path.resolve().name
    loaded = weights.load_weights(source)
    assert torch.equal(loaded["layer2.0.conv1.weight"], state["layer2.0.conv1.weight"])
    assert weights.weights_status("resnet18") == (
        "found: Hugging Face cache (timm/resnet18.a1_in1k)"
    )


def test_hf_cache_other_tag_is_found_after_the_default():
    _write_hf_cache(_random_state(seed=4), hub_id="timm/resnet18.tv_in1k")
    source = weights.find_weights("resnet18")
    assert source.kind == "hf-cache" and source.tag == "tv_in1k"


def test_corrupted_hf_blob_is_refused():
    path = _write_hf_cache(_random_state(seed=5))
    blob = path.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupted: sha256"):
        weights.load_weights(weights.find_weights("resnet18"))


def test_torchvision_cache_is_found_and_fits_timm_resnet():
    state = _write_torchvision_cache()
    source = weights.find_weights("resnet18")
    assert source.kind == "torchvision-cache" and source.tag == "tv_in1k"
    assert source.path.name == "resnet18-f37072fd.pth"
    loaded = weights.load_weights(source)
    assert torch.equal(loaded["layer4.1.bn2.running_mean"], state["layer4.1.bn2.running_mean"])
    model = factory.create_model("resnet18", 4, pretrained_state=loaded)
    assert torch.equal(model.state_dict()["conv1.weight"], state["conv1.weight"])


def test_torchvision_regnet_is_converted_to_timm_names(tmp_path):
    torch.manual_seed(2)
    state = torchvision.models.regnet_y_1_6gf().state_dict()
    folder = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / "regnet_y_1_6gf-0d7bc02a.pth")
    loaded = weights.load_weights(weights.find_weights("regnety_016"))
    assert torch.equal(loaded["stem.conv.weight"], state["stem.0.weight"])
    factory.create_model("regnety_016", 2, pretrained_state=loaded)  # strict on the body


def test_priority_is_store_then_hf_then_torchvision():
    _write_torchvision_cache()
    _write_hf_cache(_random_state(seed=6))
    stored_state = _random_state(seed=7)
    file = Path(os.environ["LOUPE_HOME"]) / "mine.safetensors"
    save_file(stored_state, str(file))
    weights.import_weights(file, "resnet18")
    kinds = [s.kind for s in weights.find_all_weights("resnet18")]
    assert kinds == ["loupe", "hf-cache", "torchvision-cache"]
    loaded = weights.load_weights(weights.find_weights("resnet18"))
    assert torch.equal(loaded["layer1.0.bn1.weight"], stored_state["layer1.0.bn1.weight"])


def test_import_stores_safetensors_with_checksum_and_verifies_it():
    state = _write_torchvision_cache()
    pth = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    stored = weights.import_weights(pth, "resnet18")
    sidecar = json.loads((stored.parent / "weights.json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert sidecar["tag"] == "tv_in1k"  # torchvision's file name tells whose preprocessing
    assert stored.read_bytes()[8:9] == b"{"  # safetensors header, not a pickle
    source = weights.find_weights("resnet18")
    assert source.kind == "loupe" and source.tag == "tv_in1k"
    assert torch.equal(weights.load_weights(source)["fc.weight"], state["fc.weight"])
    data = bytearray(stored.read_bytes())
    data[-4] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupted"):
        weights.load_weights(weights.find_weights("resnet18"))
    (stored.parent / "weights.json").unlink()
    with pytest.raises(WeightsError, match="has no checksum record"):
        weights.load_weights(weights.find_weights("resnet18"))


def test_import_rejects_weights_of_another_architecture(tmp_path):
    file = tmp_path / "resnet34.safetensors"
    save_file(_random_state("resnet34"), str(file))
    with pytest.raises(WeightsError) as err:
        weights.import_weights(file, "resnet18")
    message = str(err.value)
    assert str(file) in message and "'resnet18'" in message
    assert "unexpected: layer1.2." in message  # blocks resnet18 does not have
    assert not (weights.store_dir("resnet18") / "model.safetensors").exists()


class _Canary:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_import_never_unpickles_code(tmp_path):
    canary = tmp_path / "canary"
    file = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Canary(canary)}, file)
    with pytest.raises(WeightsError, match="weights_only=True"):
        weights.import_weights(file, "resnet18")
    assert not canary.exists()
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(_Canary(canary)))
    with pytest.raises(WeightsError):
        weights.import_weights(plain, "resnet18")
    assert not canary.exists()


def test_import_of_a_missing_or_garbage_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        weights.import_weights(tmp_path / "nope.safetensors", "resnet18")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(WeightsError, match="not valid safetensors"):
        weights.import_weights(junk, "resnet18")


@pytest.fixture
def blocked_network(monkeypatch):
    """Every socket connect and DNS lookup fails and is recorded: nothing leaves the machine."""
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_download_in_offline_mode_fails_clearly_without_a_socket(blocked_network):
    with pytest.raises(WeightsError) as err:
        weights_download.download_weights("resnet18")
    message = str(err.value)
    assert "could not download timm/resnet18.a1_in1k" in message
    assert "loupe weights import FILE --arch NAME" in message
    assert blocked_network == []


def test_download_without_network_fails_fast_and_clearly(monkeypatch, blocked_network):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(WeightsError) as err:
        weights_download.download_weights("resnet18")
    message = str(err.value)
    assert "could not download timm/resnet18.a1_in1k: no network" in message
    assert "import a file instead with `loupe weights import FILE --arch NAME`" in message
    assert blocked_network  # it really tried, and the test's block stopped it
    assert weights.find_weights("resnet18") is None


def test_cli_list_import_and_download(tmp_path, capsys, blocked_network):
    import argparse

    from loupe.engine.cli import weights_cmd

    parser = argparse.ArgumentParser(prog="loupe")
    weights_cmd.register(parser.add_subparsers(dest="command"))
    file = tmp_path / "r18.safetensors"
    save_file(_random_state(seed=9), str(file))

    args = parser.parse_args(["weights", "import", str(file), "--arch", "resnet18"])
    assert args.func(args) == 0
    args = parser.parse_args(["weights", "list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("resnet18 "))
    assert "11.7M" in row and "224px" in row and "found: Loupe weights store" in row
    assert next(line for line in out.splitlines() if line.startswith("resnet34 ")).endswith(
        "not found"
    )
    args = parser.parse_args(["weights", "download", "resnet34"])
    with pytest.raises(WeightsError, match="could not download"):
        args.func(args)


def test_download_progress_reports_bytes_and_honours_cancel():
    from loupe.engine.core.errors import CancelledError
    from loupe.engine.core.events import CancelToken, Progress

    events: list = []
    cancel = CancelToken()
    bar = weights_download._progress_class(events.append, cancel)(total=1000, unit="B")
    bar.update(400)
    bar.update(600)
    assert events == [Progress("download", 400, 1000, message="bytes"),
                      Progress("download", 1000, 1000, message="bytes")]
    cancel.cancel()
    with pytest.raises(CancelledError):
        bar.update(1)
