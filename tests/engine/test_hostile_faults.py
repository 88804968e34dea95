"""Issue 13 (item 9): a full disk and kill -9 during checkpoint and model writes.

A full disk is simulated where the engine meets it: the free space the disk reports
(``shutil.disk_usage``), safetensors' own write error (a SafetensorError, not an OSError),
a real file-size limit in a child process, and kill -9 of a real child in the middle of a
write. Each ends in one error line naming the file (and the space it needs), a non-zero
exit, no traceback, nothing of the user's changed, and no temp file left for good.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from loupe.engine.cli import main
from loupe.engine.core import atomic, disk, paths
from loupe.engine.core.errors import WriteError
from loupe.engine.models import bundle, factory
from loupe.engine.training import runs
from tests.engine.predict_helpers import make_bundle
from tests.engine.test_training_trainer import _make_folder

ROOT = Path(__file__).resolve().parents[2]
ARCH = "test_resnet"
TRAIN = ("--label", "parent", "--split", "random:0.25", "--arch", ARCH, "--pretrained", "none",
         "--size", "32", "--bs", "8", "--threads", "1", "--freeze-epochs", "0")
ENOSPC_TEXT = "Error while serializing: I/O error: No space left on device (os error 28)"
Usage = namedtuple("Usage", "total used free")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _make_folder(tmp_path_factory.mktemp("colours"), {"red": 12, "blue": 12})


def _hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _error_lines(err: str, command: str = "train") -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith(f"loupe {command}: error")]


def _only_run() -> Path:
    (run_dir,) = [p for p in paths.runs_dir().iterdir() if p.is_dir()]
    return run_dir


def _little_free_space(monkeypatch, free: int = 999) -> None:
    """The disk holding Loupe's data has ``free`` bytes left; other disks as they are."""
    real = shutil.disk_usage
    home = Path(os.environ["LOUPE_HOME"]).resolve()

    def usage(path):
        if Path(path).resolve().is_relative_to(home):
            return Usage(10**12, 10**12 - free, free)
        return real(path)

    monkeypatch.setattr(disk.shutil, "disk_usage", usage)


# --------------------------------------------------------------------------- full disk


def test_full_disk_at_the_first_checkpoint_is_one_line_and_the_epoch_is_not_kept(
    folder, monkeypatch, capsys
):
    before = _hash(folder)
    _little_free_space(monkeypatch)
    code = main(["train", str(folder), *TRAIN, "--epochs", "1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "\n1      " in out  # the epoch's row was printed ...
    (line,) = _error_lines(err)  # ... and the failure right after it, not silence
    run_dir = _only_run()
    assert str(run_dir / runs.CHECKPOINT) in line
    assert "not enough disk space" in line and "it needs" in line and "999 bytes free" in line
    assert "the checkpoint of epoch 1 was not saved" in line
    assert "no epoch is saved yet" in line
    assert "Saved model" not in out
    assert not (run_dir / runs.CHECKPOINT).exists()
    assert runs.read_metrics(run_dir) == []  # no metrics line for an epoch that is not kept
    assert runs.read_record(run_dir)["status"] == "failed"
    assert _hash(folder) == before


def test_disk_full_while_safetensors_writes_is_one_line(folder, monkeypatch, capsys):
    """The write itself fails (on the checkpoint thread): SafetensorError is not an
    OSError; it surfaces in the training thread as one line, not a traceback."""
    import safetensors.torch

    def full(*_args, **_kwargs):
        raise SafetensorError(ENOSPC_TEXT)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    code = main(["train", str(folder), *TRAIN, "--epochs", "1"])
    _out, err = capsys.readouterr()
    assert code == 1
    (line,) = _error_lines(err)
    run_dir = _only_run()
    assert f"not enough disk space to write {run_dir / runs.CHECKPOINT}" in line
    assert "the checkpoint of epoch 1 was not saved" in line
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []


def test_a_model_file_on_a_full_disk_is_one_line_and_the_old_one_is_kept(
    tmp_path, monkeypatch
):
    model = factory.create_model(ARCH, 2)
    meta = {"architecture": ARCH, "classes": ["a", "b"],
            "preprocessing": {"size": 32, "presize": 37, "mean": [0.5] * 3, "std": [0.2] * 3}}
    target = bundle.save_bundle(tmp_path / "m.loupe", model, meta)
    old = target.read_bytes()

    monkeypatch.setattr(disk.shutil, "disk_usage", lambda _p: Usage(10**9, 10**9 - 5, 5))
    with pytest.raises(WriteError, match=r"m\.loupe: it needs [\d.]+ (KB|MB), 5 bytes free"):
        bundle.save_bundle(target, model, meta)
    monkeypatch.undo()

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file",
                        lambda *a, **k: (_ for _ in ()).throw(SafetensorError(ENOSPC_TEXT)))
    with pytest.raises(WriteError) as info:
        bundle.save_bundle(target, model, meta)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert "\n" not in str(info.value) and "not enough disk space" in str(info.value)
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["m.loupe"]


def test_small_writes_on_a_full_disk_name_the_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.jsonl"
    target.write_text("kept\n")

    def no_space(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(WriteError, match=f"not enough disk space to write {target}"):
        atomic.atomic_write_text(target, "new\n")
    assert target.read_text() == "kept\n" and [p.name for p in tmp_path.iterdir()] == [target.name]


SIZE_LIMIT = """
    import resource, signal, sys
    from pathlib import Path
    from loupe.engine.core.errors import WriteError
    from loupe.engine.models import bundle, factory
    model = factory.create_model("test_resnet", 2)
    meta = {"architecture": "test_resnet", "classes": ["a", "b"],
            "preprocessing": {"size": 32, "presize": 37, "mean": [0.5] * 3, "std": [0.2] * 3}}
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit: EFBIG, not a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    try:
        bundle.save_bundle(Path(sys.argv[1]), model, meta)
    except WriteError as err:
        print(str(err))
        sys.exit(1)
"""


def test_a_real_write_failure_from_safetensors_is_one_line(tmp_path):
    """No monkeypatching: a file-size limit makes safetensors' Rust writer fail for real."""
    target = tmp_path / "m.loupe"
    target.write_bytes(b"the old model")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SIZE_LIMIT), str(target)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stdout.strip().startswith(f"cannot write {target}: ")
    assert "File too large" in done.stdout and len(done.stdout.strip().splitlines()) == 1
    assert target.read_bytes() == b"the old model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.loupe"]


# --------------------------------------------------------------------------- kill -9

KILLED_WRITER = """
    import sys, time
    from pathlib import Path
    from loupe.engine.core.atomic import atomic_write_with

    def write(tmp):
        tmp.write_bytes(b"x" * 1_000_000)  # half a checkpoint
        Path(sys.argv[2]).write_text("writing")
        time.sleep(120)

    atomic_write_with(Path(sys.argv[1]), write)
"""


def test_kill_during_a_write_leaves_the_old_file_and_a_temp_the_next_open_removes(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    target, marker = run_dir / runs.CHECKPOINT, tmp_path / "marker"
    target.write_bytes(b"epoch 1")
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_WRITER),
                              str(target), str(marker)], cwd=ROOT)
    try:
        for _ in range(1200):  # wait for the write to be under way (a hang guard, no timing)
            if marker.exists() or child.poll() is not None:
                break
            time.sleep(0.05)
        assert marker.exists(), "the writer never started"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert target.read_bytes() == b"epoch 1"  # never empty, never half written
    (leftover,) = [p for p in run_dir.iterdir() if p != target]
    assert atomic.TEMP_NAME.match(leftover.name) and leftover.is_dir()
    assert (leftover / runs.CHECKPOINT).stat().st_size == 1_000_000
    with runs.RunLock(run_dir):
        assert sorted(p.name for p in run_dir.iterdir()) == [runs.CHECKPOINT, runs.LOCK]
    assert target.read_bytes() == b"epoch 1"


def test_locking_a_run_removes_only_temps_of_our_naming(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".checkpoint.safetensors.0badf00d.tmp").mkdir(parents=True)
    (run_dir / ".checkpoint.safetensors.0badf00d.tmp" / ".tmpAb12Cd").write_bytes(b"x" * 4096)
    (run_dir / ".checkpoint.safetensors.0badf00d.tmp" / runs.CHECKPOINT).write_bytes(b"")
    (run_dir / ".metrics.jsonl.k2_9xq1z.tmp").write_bytes(b"")  # mkstemp's, older versions
    (run_dir / ".tmpQ7w8E9").write_bytes(b"y" * 4096)  # safetensors' own, older versions
    keep = ["checkpoint.json", "metrics.jsonl", "notes.tmp", ".hidden", ".a.b.tmp", "run.json"]
    for name in keep:
        (run_dir / name).write_text("{}")
    with runs.RunLock(run_dir):
        assert sorted(p.name for p in run_dir.iterdir()) == sorted([*keep, runs.LOCK])


def test_the_weights_store_drops_stale_temps_and_spares_a_write_in_progress(tmp_path):
    from loupe.engine.models import weights
    from tests.engine.test_weights import _random_state

    store = weights.store_dir("resnet18")
    store.mkdir(parents=True, exist_ok=True)
    stale = store / f".{weights.STORE_FILE}.deadbeef.tmp"
    fresh = store / f".{weights.STORE_FILE}.cafe0123.tmp"  # another import, writing now
    stale.write_bytes(b"z" * 1000)
    fresh.write_bytes(b"z" * 1000)
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    source = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file(_random_state(seed=1), str(source))
    weights.import_weights(source, "resnet18")
    assert not stale.exists() and fresh.exists()


# --------------------------------------------------------------------------- resume after a kill


@pytest.fixture(scope="module")
def finished_run(folder, tmp_path_factory) -> Path:
    """A real run of one epoch (test_resnet, 32 px), trained once for the module."""
    saved = {k: os.environ.get(k) for k in ("LOUPE_HOME",)}
    os.environ["LOUPE_HOME"] = str(tmp_path_factory.mktemp("fixture_home"))
    try:
        assert main(["train", str(folder), *TRAIN, "--epochs", "1"]) == 0
        return _only_run()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _copy_run(run: Path, name: str | None = None) -> Path:
    copy = paths.runs_dir() / (name or run.name)
    shutil.copytree(run, copy)
    return copy


def test_resume_after_a_kill_during_the_first_checkpoint_says_what_happened(
    folder, finished_run, capsys
):
    run_dir = _copy_run(finished_run)
    (run_dir / runs.CHECKPOINT).unlink()
    (run_dir / runs.CHECKPOINT_JSON).unlink()
    leftover = run_dir / ".checkpoint.safetensors.0badf00d.tmp"
    leftover.mkdir()
    (leftover / ".tmpAb12Cd").write_bytes(b"x" * 100_000)
    runs.update_record(run_dir, status="running")
    assert len(runs.read_metrics(run_dir)) == 1  # the metrics line of epoch 1 is there
    capsys.readouterr()
    code = main(["train", str(folder), "--resume", run_dir.name])
    _out, err = capsys.readouterr()
    assert code == 1
    (line,) = _error_lines(err)
    assert "its metrics list 1 finished epoch(s)" in line
    assert "before the checkpoint of epoch 1 was written" in line
    assert "start a fresh training instead" in line
    assert "before finishing its first epoch" not in line
    assert not leftover.exists()


def test_resume_after_a_kill_during_a_later_write_cleans_up_and_finishes(
    folder, finished_run, capsys
):
    run_dir = _copy_run(finished_run)
    leftover = run_dir / ".checkpoint.safetensors.0badf00d.tmp"
    leftover.mkdir()
    (leftover / runs.CHECKPOINT).write_bytes(b"")
    (run_dir / ".tmpAb12Cd").write_bytes(b"x" * 100_000)
    runs.update_record(run_dir, status="running")
    code = main(["train", str(folder), "--resume", run_dir.name])
    _out, err = capsys.readouterr()
    assert code == 0, err
    assert runs.read_record(run_dir)["status"] == "finished"
    assert not leftover.exists() and not (run_dir / ".tmpAb12Cd").exists()


def test_a_pruned_checkpoint_is_named_when_resuming(folder, finished_run, capsys):
    run_dir = _copy_run(finished_run)
    runs.update_record(run_dir, status="cancelled")
    assert runs.prune_checkpoints(0, keep=None) == []  # the newest resumable run is kept
    older = _copy_run(finished_run, "20000101-000000-old")
    runs.update_record(older, status="cancelled")
    os.utime(older / runs.CHECKPOINT, (1, 1))
    assert runs.prune_checkpoints(0) == [older]
    code = main(["train", str(folder), "--resume", older.name])
    (line,) = _error_lines(capsys.readouterr().err)
    assert code == 1 and "was removed" in line and "LOUPE_CHECKPOINTS_MAX_GB" in line


# --------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("mask", [0o027, 0o002])
def test_models_exports_and_checkpoints_get_the_usual_mode(tmp_path, mask):
    old = os.umask(mask)
    try:
        model = make_bundle(tmp_path / "m.loupe", size=32)
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        net = factory.create_model(ARCH, 2)
        optimizer = torch.optim.AdamW(net.parameters())
        checkpoint = runs.save_checkpoint(run_dir, net.state_dict(), optimizer.state_dict(),
                                          {"epochs_done": 1, "history": []})
        from loupe.engine.inference.export import export_onnx, export_torchscript
        from loupe.engine.inference.predict import Predictor

        predictor = Predictor.from_file(model)
        onnx = export_onnx(predictor, tmp_path / "m.onnx").path
        script = export_torchscript(predictor, tmp_path / "m.pt")
    finally:
        os.umask(old)
    for path in (model, checkpoint, run_dir / runs.CHECKPOINT_JSON, onnx, script,
                 tmp_path / "m.json"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path.name
