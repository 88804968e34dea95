"""The resize method (crop, squish, pad) through whole runs: the cache, the run config, the
bundle, evaluation of the bundle and the learning-rate finder all use the configured one.
Tiny synthetic folders, as in test_training_trainer.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loupe.engine.core.events import EpochEnded, Started
from loupe.engine.models.bundle import read_bundle_meta
from loupe.engine.training import evaluate, lr_find, train
from tests.engine.test_training_trainer import _config, _make_folder, _prepared, _Recorder


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _make_folder(tmp_path_factory.mktemp("colours"), {"red": 16, "blue": 16})


def test_a_run_caches_validates_saves_and_evaluates_with_its_resize_method(folder):
    """resize="pad" reaches the cache, the bundle and the run config; evaluating the bundle
    (with its own method) reproduces training's last validation loss."""
    prepared = _prepared(folder)
    events = _Recorder()
    result = train(prepared, _config(epochs=1, resize="pad"), on_event=events)
    cache_started = events.of(Started, "cache")[0]
    assert (cache_started.info["resize"], cache_started.info["presize"]) == ("pad", 32)
    assert events.of(Started, "train")[0].info["resize"] == "pad"
    pre = read_bundle_meta(result.bundle_path).preprocessing
    assert (pre.resize, pre.size, pre.presize) == ("pad", 32, 32)
    assert json.loads((result.run_dir / "config.json").read_text())["resize"] == "pad"
    last = events.of(EpochEnded)[-1].metrics
    scored = evaluate(result.bundle_path, prepared, device="cpu")
    assert scored.metrics["loss"] == pytest.approx(last["valid_loss"], rel=1e-4)


def test_lr_find_decodes_with_the_configs_resize_method(folder):
    events = _Recorder()
    lr_find(_prepared(folder), _config(arch="test_resnet", resize="squish"), num_it=3,
            on_event=events)
    cache_started = events.of(Started, "cache")[0]
    assert (cache_started.info["resize"], cache_started.info["presize"]) == ("squish", 32)
