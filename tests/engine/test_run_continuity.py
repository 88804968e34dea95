"""Runs that stopped are usable and resumable, runs can be deleted safely, models have
names, and a project remembers its model (issue 12, continuity)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from loupe.engine.core.errors import CancelledError, ConfigError, ModelFileError, TrainingError
from loupe.engine.core.events import CancelToken, EpochEnded, Started
from loupe.engine.data.dataset import DataSpec, prepare_data
from loupe.engine.data.labels import parse_label_rule
from loupe.engine.data.splits import parse_split_rule
from loupe.engine.training import TrainConfig, resume, runs, train
from loupe.engine.training.run_admin import (
    bundle_name,
    delete_run,
    disk_size,
    format_size,
    model_name,
)
from loupe.engine.training.salvage import salvage_bundle

CONFIG = TrainConfig(arch="test_resnet", epochs=3, size=32, batch_size=4, pretrained="none",
                     threads=1)


@pytest.fixture
def pets(tmp_path) -> Path:
    root = tmp_path / "pets"
    rng = random.Random(3)
    for name, base in (("cat", (210, 60, 50)), ("dog", (50, 70, 210))):
        (root / name).mkdir(parents=True)
        for i in range(8):
            colour = tuple(min(255, max(0, c + rng.randint(-40, 40))) for c in base)
            Image.new("RGB", (32, 32), colour).save(root / name / f"{name}{i}.png")
    return root


def _prepared(root: Path):
    return prepare_data(DataSpec(root, parse_label_rule("parent"),
                                 parse_split_rule("random:0.25")))


def _stopped_run(root: Path) -> Path:
    """A run stopped by the user after its first epoch (cancel token, as the GUI's Stop)."""
    from loupe.engine.core import paths

    token = CancelToken()
    before = set(paths.runs_dir().iterdir())

    def on_event(event):
        if isinstance(event, EpochEnded):
            token.cancel()

    with pytest.raises(CancelledError):
        train(_prepared(root), CONFIG, on_event=on_event, cancel=token)
    (run_dir,) = set(paths.runs_dir().iterdir()) - before
    return run_dir


def test_a_stopped_run_gives_a_bundle_of_its_last_finished_epoch_and_can_resume(pets):
    from loupe.engine.inference.predict import Predictor
    from loupe.engine.models.bundle import read_bundle_meta

    run_dir = _stopped_run(pets)
    record = runs.read_record(run_dir)
    assert record["status"] == "cancelled" and not record.get("bundle")
    bundle = salvage_bundle(run_dir.name)
    assert bundle == run_dir / "model.loupe" and bundle.is_file()
    assert runs.read_record(run_dir)["bundle"] == str(bundle)
    assert runs.read_record(run_dir)["status"] == "cancelled"  # still a stopped run
    meta = read_bundle_meta(bundle)
    assert meta.classes == ("cat", "dog") and meta.arch == "test_resnet"
    assert meta.training["stopped_early"] is True and meta.training["epochs_run"] == 1
    assert meta.training["total_epochs"] == 3 and meta.training["label_rule"] == "parent"
    # Its weights are the checkpoint's: the same predictions as the checkpoint's model.
    model_state, _opt, _scalars = runs.load_checkpoint(run_dir)
    predictor = Predictor.from_file(bundle)
    loaded = predictor.model.state_dict()
    assert all((loaded[k].cpu() == v).all() for k, v in model_state.items())
    assert salvage_bundle(run_dir) == bundle  # asked again: the same file, not a new one
    # A used stopped run can still be resumed to the end of its schedule.
    result = resume(run_dir.name)
    assert len(result.history) == 3
    assert runs.read_record(run_dir)["status"] == "finished"


def test_a_run_without_a_finished_epoch_says_so(pets, tmp_path):
    from loupe.engine.core import paths

    run_dir = runs.new_run_dir("test_resnet")
    runs.write_json(run_dir, "config.json", CONFIG.to_json())
    runs.update_record(run_dir, status="cancelled")
    with pytest.raises(ModelFileError, match="before finishing its first epoch"):
        salvage_bundle(run_dir)
    assert run_dir.parent == paths.runs_dir()


def test_delete_frees_the_run_and_never_touches_the_images(pets):
    run_dir = _stopped_run(pets)
    images = sorted(p.relative_to(pets) for p in pets.rglob("*"))
    size = disk_size(run_dir)
    assert size > 0
    assert delete_run(run_dir.name) == size
    assert not run_dir.exists()
    assert sorted(p.relative_to(pets) for p in pets.rglob("*")) == images


def test_delete_refuses_what_is_not_a_run_folder(pets, tmp_path):
    fake = tmp_path / "not-a-run"
    fake.mkdir()
    (fake / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a run folder"):
        delete_run(fake)
    assert fake.exists()


def test_delete_refuses_while_the_run_trains(pets):
    run_dir = _stopped_run(pets)
    lock = runs.RunLock(run_dir).acquire()
    try:
        with pytest.raises(TrainingError, match="being trained"):
            delete_run(run_dir)
    finally:
        lock.release()
    assert run_dir.exists()


def test_models_get_names_people_can_tell_apart(pets):
    training = {"run_id": "20261127-101500-resnet18-abc123",
                "final_metrics": {"error_rate": 0.059}}
    name = model_name("resnet18", training, "pets")
    assert name.title == "pets · resnet18 · 27 Nov 2026 · 94.1% accuracy"
    assert name.file_name == "pets-resnet18-2026-11-27-acc94.1.loupe"
    stopped = model_name("resnet18", {**training, "stopped_early": True, "epochs_run": 2,
                                      "total_epochs": 5}, None)
    assert stopped.title.endswith("stopped at epoch 2 of 5")
    assert model_name("", {}, None, fallback="imported").title == "imported"
    bundle = salvage_bundle(_stopped_run(pets))
    named = bundle_name(bundle)
    assert named.title.startswith("pets · test_resnet · ")
    assert named.file_name.startswith("pets-test_resnet-") and named.file_name != "model.loupe"
    assert format_size(134 * 2**20) == "134 MB" and format_size(512) == "512 bytes"


def test_a_project_remembers_its_model_pinned_first(pets, tmp_path):
    from loupe.engine.data.project_model import (
        forget_model,
        pin_model,
        project_model,
        record_path,
    )

    assert project_model(pets) is None
    run_dir = _stopped_run(pets)
    bundle = salvage_bundle(run_dir)
    assert project_model(pets) is None  # a stopped run is not "the newest finished run"
    result = train(_prepared(pets), CONFIG)
    newest = project_model(pets)
    assert newest is not None and newest.path == result.bundle_path
    assert newest.reason == "newest run"

    from loupe.engine.data.project_model import remember_model

    remember_model(pets, bundle)
    assert project_model(pets).path == bundle.absolute()
    assert project_model(pets).reason == "last used"
    pin_model(pets, result.bundle_path)
    remember_model(pets, bundle)  # used later, but the pinned one wins
    assert project_model(pets).path == result.bundle_path.absolute()
    assert project_model(pets).pinned
    pin_model(pets, None)
    assert project_model(pets).path == bundle.absolute()
    forget_model(pets, bundle)
    assert project_model(pets).reason == "newest run"
    # Kept beside the project file, never in the image folder.
    assert not record_path(pets).is_relative_to(pets)
    assert json.loads(record_path(pets).read_text())["last"] is None


def test_a_stopped_run_becomes_the_model_of_its_best_epoch_not_its_last(pets, monkeypatch):
    """Validation loss is steered so that epoch 2 of 4 is the best; the run is stopped
    in epoch 4. The model made from it holds epoch 2's weights and metrics, also after
    the run was resumed and stopped again."""
    import torch

    from loupe.engine.models.bundle import load_bundle
    from loupe.engine.training import session as session_module

    monkeypatch.setattr(session_module, "CHECKPOINT_INTERVAL_S", 3600.0)  # only on stop
    factors = {0: 1.0, 1: 0.25, 2: 2.0, 3: 3.0, 4: 4.0}  # epoch index -> loss scale
    real_validate = session_module.Session.validate

    def steered(self, epoch, size):
        scores = real_validate(self, epoch, size)
        scores.losses = scores.losses * factors[epoch]
        return scores

    monkeypatch.setattr(session_module.Session, "validate", steered)
    weights: dict[int, dict] = {}
    real_save = session_module.Session.save_checkpoint

    def record(self, total):
        real_save(self, total)
        weights[self.epochs_done] = {k: v.clone() for k, v in self.snapshot["model"].items()}

    monkeypatch.setattr(session_module.Session, "save_checkpoint", record)
    token = CancelToken()
    started: list[Path] = []

    def stop_after(epoch):
        def on_event(event):
            if isinstance(event, Started) and event.task == "train":
                started.append(Path(event.info["run_dir"]))
            if isinstance(event, EpochEnded) and event.epoch == epoch:
                token.cancel()
        return on_event

    config = TrainConfig(**{**CONFIG.__dict__, "epochs": 5})
    with pytest.raises(CancelledError):
        train(_prepared(pets), config, on_event=stop_after(3), cancel=token)
    run_dir = started[0]
    _model, _optim, scalars = runs.load_checkpoint(run_dir)
    assert scalars["epochs_done"] == 3 and scalars["best_epoch"] == 2
    assert set(scalars["best_model"]) == set(weights[2])

    bundle = salvage_bundle(run_dir)
    loaded = load_bundle(bundle)
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], weights[2][k]) for k in weights[2])
    assert not all(torch.equal(state[k], weights[3][k]) for k in weights[3])
    training = loaded.meta.training
    assert training["model_epoch"] == 2 and training["final_metrics"]["epoch"] == 2

    # Resumed, it still knows epoch 2 is its best, and a stop after epoch 4 keeps it.
    bundle.unlink()
    runs.update_record(run_dir, bundle=None)
    token = CancelToken()
    with pytest.raises(CancelledError):
        resume(run_dir, on_event=stop_after(4), cancel=token)
    _model, _optim, scalars = runs.load_checkpoint(run_dir)
    assert scalars["epochs_done"] == 4 and scalars["best_epoch"] == 2
    state = load_bundle(salvage_bundle(run_dir)).model.state_dict()
    assert all(torch.equal(state[k], weights[2][k]) for k in weights[2])
