"""Run folders: config, split manifest, per-epoch metrics, checkpoints, test-set looks.

Each run lives in ``loupe.engine.core.paths.runs_dir()/RUN_ID`` — the user data dir, never the
image folder. Layout::

    config.json              TrainConfig
    data.json                how to rebuild the data (root, label/split rules, overrides)
    manifest.json            the split (rel paths per set) the run trained on
    metrics.jsonl            one JSON object per finished epoch
    checkpoint.safetensors   model + optimizer tensors; the scalars as JSON in its header
    checkpoint.json          the same scalars, for people and tools
    run.json                 status, bundle path, test-set looks
    train.lock               held (OS file lock) while a process trains the run; its pid

Checkpoints hold no pickle: tensors go to safetensors, everything else to JSON. Both files
are written atomically; the safetensors header carries the scalars itself, so a kill
between the two writes can never pair weights with the wrong epoch. A kill during a write
leaves a temp folder (``loupe.engine.core.atomic``), removed when the run is next locked.
The free space is checked before each checkpoint, and a full disk stops training with one
line naming the file, the space it needs and which epoch is kept.

Disk use is bounded (:func:`prune_checkpoints`, at the start of every new run): a finished
run's checkpoint is removed (the run cannot be resumed; its model is its bundle), and the
checkpoints of runs that can still be resumed are kept within ``LOUPE_CHECKPOINTS_MAX_GB``,
oldest removed first, the newest always kept. A run being trained is never touched, and
nothing else of a run (bundle, metrics, record, config) is ever removed.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from loupe.engine.core import paths
from loupe.engine.core.atomic import (
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    remove_stale_temps,
)
from loupe.engine.core.disk import (
    CHECKPOINTS_MAX_ENV,
    DEFAULT_CHECKPOINTS_MAX_GB,
    FREE_SOME_SPACE,
    Entry,
    check_free_space,
    limit_from_env,
    oldest_beyond,
    remove_paths,
)
from loupe.engine.core.errors import ConfigError, ModelFileError, TrainingError, WriteError

CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_JSON = "checkpoint.json"
_HEADER_KEY = "loupe.checkpoint"
_MODEL, _OPTIM = "model.", "optimizer."
# The weights of the run's best epoch so far (lowest validation loss), when that is not
# the checkpoint's own epoch: what a stopped run's model is made from (salvage).
_BEST = "best_model."


def new_run_dir(arch: str) -> Path:
    """A fresh, unique run folder named by UTC time, architecture and a random suffix.

    Checkpoints of other runs are pruned first (:func:`prune_checkpoints`), so disk use
    stays bounded however many runs a user starts.
    """
    cap = limit_from_env(CHECKPOINTS_MAX_ENV, DEFAULT_CHECKPOINTS_MAX_GB)  # bad value: now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in arch)[:40]
    path = paths.runs_dir() / f"{stamp}-{safe}-{secrets.token_hex(3)}"
    path.mkdir(parents=True, exist_ok=False)
    prune_checkpoints(cap, keep=path)
    return path


def find_run(run: str | Path) -> Path:
    """Resolve a run given as a folder path or as a run id under the runs dir."""
    candidate = Path(run).expanduser()
    for path in (candidate, paths.runs_dir() / str(run)):
        if (path / "config.json").is_file():
            return path
    known = sorted(p.name for p in paths.runs_dir().iterdir() if p.is_dir())[-5:]
    hint = f"; recent runs: {', '.join(known)}" if known else ""
    raise ConfigError(f"run {str(run)!r} not found (no config.json there){hint}")


def write_json(run_dir: Path, name: str, obj: Any) -> None:
    atomic_write_json(run_dir / name, obj)


def read_json(run_dir: Path, name: str) -> Any:
    path = run_dir / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"run file missing: {path}") from err
    except json.JSONDecodeError as err:
        raise ConfigError(f"run file {path} is not valid JSON: {err}") from err


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """Append one epoch's metrics line (rewritten whole, atomically: files are tiny)."""
    path = run_dir / "metrics.jsonl"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    atomic_write_text(path, old + json.dumps(row, sort_keys=True) + "\n")


def rewrite_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Make metrics.jsonl exactly ``history`` (used on resume, from the checkpoint)."""
    text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in history)
    atomic_write_text(run_dir / "metrics.jsonl", text)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def best_epoch(history: list[dict[str, Any]]) -> int | None:
    """The 1-based epoch with the lowest validation loss, the first on a tie (None when no
    epoch has a finite one): whose weights a stopped run's model is made from."""
    scored = [(row.get("valid_loss"), i) for i, row in enumerate(history)]
    scored = [(v, i) for v, i in scored if isinstance(v, int | float) and math.isfinite(v)]
    return min(scored)[1] + 1 if scored else None


def update_record(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into run.json (status, bundle, test_looks ...)."""
    path = run_dir / "run.json"
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    record.update(fields)
    atomic_write_json(path, record)
    return record


def read_record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _record_or_empty(run_dir: Path) -> dict[str, Any]:
    """run.json for a message or a decision that must not fail on a damaged file."""
    try:
        record = read_record(run_dir)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def refuse_finished(run_dir: Path) -> None:
    """A finished run has nothing left to do: resuming it would only rewrite its model."""
    record = read_record(run_dir)
    if record.get("status") == "finished":
        model = record.get("bundle") or f"in {run_dir}"
        raise ConfigError(
            f"run {run_dir.name} already finished; its model is {model}. "
            "Start a new training instead of resuming it."
        )


# --- the training lock ---------------------------------------------------------------

LOCK = "train.lock"
_LOCK_OFFSET = 1 << 20  # Windows locks a byte range; lock one far past the pid text


class RunLock:
    """An exclusive OS lock on ``run_dir/train.lock`` while one process trains the run.

    Two trainings of one run (two ``--resume`` at once) would interleave metrics.jsonl
    and checkpoints. The lock is ``fcntl.flock`` on POSIX and ``msvcrt.locking`` on
    Windows: the OS drops it when the process dies, so a killed run leaves no stale lock.
    The file holds the holder's pid, for the message the second process gets.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        path = self.run_dir / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_fd(fd)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise TrainingError(
                f"run {self.run_dir.name} is being trained by {who}; wait for it to finish "
                "or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        remove_run_temps(self.run_dir)  # ours now: no other process can be writing here
        return self

    def try_acquire(self) -> bool:
        """Acquire without waiting or raising; False when another process holds it."""
        try:
            self.acquire()
        except (TrainingError, OSError):
            return False
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            _unlock_fd(fd)
        except OSError:
            pass  # closing the descriptor drops the lock anyway
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return int(os.read(fd, 32).decode("ascii").strip() or "0") or None
    except (OSError, ValueError):
        return None


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_fd(fd: int) -> None:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock_fd(fd: int) -> None:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


# safetensors (0.8) writes ``.tmpXXXXXX`` next to the file it was given and renames it;
# Loupe before this version gave it the run folder itself, so a kill left one there.
_SAFETENSORS_TEMP = re.compile(r"^\.tmp[0-9A-Za-z]{6}$")


def remove_run_temps(run_dir: Path) -> list[Path]:
    """Remove what killed writes left in a run folder (the caller holds its lock)."""
    return remove_stale_temps(run_dir, older_than_s=None, extra=_SAFETENSORS_TEMP)


# --- checkpoints -------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into named tensors and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIM}{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = _jsonable(value)
    groups = [{k: _jsonable(v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer` (betas back to tuples as torch expects)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(_OPTIM):
            idx, key = name[len(_OPTIM) :].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    run_dir: Path,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    scalars: dict[str, Any],
    best_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write model + optimizer tensors and ``scalars`` (epoch, history, ...) atomically.

    ``best_state``: the model weights of an earlier, better epoch (``scalars["best_epoch"]``
    says which), kept beside the last epoch's. safetensors writes straight into a temp
    file next to the target (no second in-memory copy of the weights), which is fsynced
    and renamed over the old checkpoint.
    """
    from safetensors.torch import save_file

    tensors = {_MODEL + k: _plain(v) for k, v in model_state.items()}
    tensors.update({_BEST + k: _plain(v) for k, v in (best_state or {}).items()})
    optim_tensors, optim_meta = flatten_optimizer(optimizer_state)
    tensors.update(optim_tensors)
    header = json.dumps(dict(scalars, optimizer=optim_meta))
    size = sum(_nbytes(t) for t in tensors.values()) + len(header) + 8 * (len(tensors) + 1)
    try:
        path = atomic_write_with(
            run_dir / CHECKPOINT,
            lambda tmp: save_file(tensors, tmp, metadata={_HEADER_KEY: header}),
            expected_bytes=size,
        )
        atomic_write_json(run_dir / CHECKPOINT_JSON, scalars)
    except WriteError as err:
        raise _not_saved(err, run_dir, scalars) from err
    return path


def checkpoint_bytes(model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any]) -> int:
    """What a checkpoint of this state takes on disk (tensor bytes; the header is small)."""
    total = sum(_nbytes(t) for t in model_state.values())
    for per_param in optimizer_state.get("state", {}).values():
        total += sum(_nbytes(v) for v in per_param.values() if isinstance(v, torch.Tensor))
    return total


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _not_saved(err: WriteError, run_dir: Path, scalars: dict[str, Any]) -> WriteError:
    """A failed checkpoint write, said with what is kept and how to go on."""
    epoch = int(scalars.get("epochs_done") or 0)
    kept_epoch = _checkpointed_epoch(run_dir)
    if kept_epoch:
        kept = (f"the checkpoint of epoch {kept_epoch} is kept; free some space, then resume "
                f"with --resume {run_dir.name}")
    else:
        kept = "no epoch is saved yet; free some space and start the training again"
    said = str(err).removesuffix(FREE_SOME_SPACE)
    return WriteError(
        f"{said}; the checkpoint of epoch {epoch} was not saved and training stopped: {kept}",
        errno=err.errno, filename=err.filename,
    )


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor with its own storage (copied only when it is not one)."""
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        return tensor.to("cpu").contiguous()
    if tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.nbytes:
        return tensor
    return tensor.contiguous().clone()


def load_checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict]:
    """(model_state, optimizer_state, scalars) of the last finished epoch of a run."""
    from safetensors import safe_open

    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ModelFileError(_no_checkpoint(run_dir))
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = json.loads((handle.metadata() or {})[_HEADER_KEY])
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as err:  # safetensors raises its own SafetensorError; JSON, KeyError
        raise ModelFileError(
            f"checkpoint {path} is damaged or not a Loupe checkpoint: {err}; "
            f"{FRESH_START}"
        ) from err
    model_state = {k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    optimizer_state = unflatten_optimizer(tensors, header.pop("optimizer"))
    best = {k[len(_BEST) :]: v for k, v in tensors.items() if k.startswith(_BEST)}
    if best:
        header["best_model"] = best
    return model_state, optimizer_state, header


FRESH_START = "start a fresh training instead (the same command without --resume)"


def _checkpointed_epoch(run_dir: Path) -> int | None:
    """The epoch the run's checkpoint on disk holds (from checkpoint.json), if any."""
    if not (run_dir / CHECKPOINT).is_file():
        return None
    try:
        done = json.loads((run_dir / CHECKPOINT_JSON).read_text(encoding="utf-8"))["epochs_done"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return done if isinstance(done, int) and done > 0 else None


def _no_checkpoint(run_dir: Path) -> str:
    """Why a run has no checkpoint, truthfully: removed by the disk cap, or never written
    — the run stopped before its first epoch ended, or after epochs whose metrics lines
    are written but before their checkpoint was (a kill while writing it, or before it
    was due)."""
    record = _record_or_empty(run_dir)
    if record.get("checkpoint_removed"):
        return (f"the checkpoint of run {run_dir.name} was removed on "
                f"{record['checkpoint_removed']} to keep checkpoints within "
                f"{CHECKPOINTS_MAX_ENV} (oldest first); it cannot be resumed: {FRESH_START}")
    try:
        listed = len(read_metrics(run_dir))
    except (OSError, ValueError):
        listed = 0
    failure = record.get("checkpoint_error")
    why = f" ({failure})" if isinstance(failure, str) and failure else ""
    if listed:
        return (f"no checkpoint in {run_dir}: its metrics list {listed} finished epoch(s), "
                f"but the run stopped before the checkpoint of epoch {listed} was "
                f"written{why}, so their weights were never saved; there is nothing to "
                f"resume: {FRESH_START}")
    return (f"no checkpoint in {run_dir}: the run stopped before finishing its first "
            f"epoch{why}; there is nothing to resume: {FRESH_START}")


class CheckpointWriter:
    """Writes checkpoints on a background thread so training does not wait for the disk.

    Serialising and fsyncing a ResNet's weights and AdamW moments takes a noticeable
    fraction of a CPU epoch. The caller hands over CPU copies (taken synchronously, so
    they are the epoch's exact state); one write runs at a time, a new one first waits
    for the previous, and :meth:`wait` (called on finish, cancel and failure) makes the
    last checkpoint durable and re-raises a write error.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(
        self,
        model_state: dict[str, torch.Tensor],
        optimizer_state: dict[str, Any],
        scalars: dict[str, Any],
        best_state: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Start writing this epoch's checkpoint; raise now (in the training thread, right
        after the epoch) if the previous write failed or the disk cannot hold this one."""
        self.wait()
        scalars = json.loads(json.dumps(scalars))  # freeze: the caller keeps mutating its lists
        try:
            best_bytes = sum(_nbytes(t) for t in (best_state or {}).values())
            check_free_space(
                self.run_dir / CHECKPOINT,
                checkpoint_bytes(model_state, optimizer_state) + best_bytes,
            )
        except WriteError as err:
            raise _not_saved(err, self.run_dir, scalars) from err

        def write() -> None:
            try:
                save_checkpoint(self.run_dir, model_state, optimizer_state, scalars, best_state)
            except BaseException as err:  # re-raised in the training thread by wait()
                self._error = err

        self._thread = threading.Thread(target=write, name="loupe-checkpoint", daemon=False)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


# --- disk use ----------------------------------------------------------------------------


def prune_checkpoints(cap: int | None = None, *, keep: Path | None = None) -> list[Path]:
    """Remove checkpoints nobody can use, then the oldest resumable ones beyond ``cap``.

    A finished run's checkpoint always goes (a finished run is never resumed; its model is
    its bundle). Checkpoints of runs that could be resumed are kept within ``cap`` bytes
    (default: ``LOUPE_CHECKPOINTS_MAX_GB``), oldest first, the newest always kept. Runs
    being trained (locked) and ``keep`` are skipped. Only ``checkpoint.safetensors`` and
    ``checkpoint.json`` are deleted; run.json records when. Returns the run folders pruned.
    """
    if cap is None:
        cap = limit_from_env(CHECKPOINTS_MAX_ENV, DEFAULT_CHECKPOINTS_MAX_GB)
    finished: list[Path] = []
    resumable: list[Entry] = []
    try:
        folders = [p for p in paths.runs_dir().iterdir() if p.is_dir() and p != keep]
    except OSError:
        return []
    for run_dir in folders:
        try:
            info = (run_dir / CHECKPOINT).stat()
        except OSError:
            continue
        if _record_or_empty(run_dir).get("status") == "finished":
            finished.append(run_dir)
        else:
            files = (run_dir / CHECKPOINT, run_dir / CHECKPOINT_JSON)
            resumable.append(Entry(str(run_dir), info.st_size, info.st_mtime, files))
    newest = max(resumable, key=lambda e: (e.mtime, e.key), default=None)
    doomed = [Path(e.key) for e in oldest_beyond(resumable, cap) if e is not newest]
    return [run_dir for run_dir in (*finished, *doomed) if _remove_checkpoint(run_dir)]


def _remove_checkpoint(run_dir: Path) -> bool:
    lock = RunLock(run_dir)
    if not lock.try_acquire():
        return False  # being trained right now
    try:
        remove_paths((run_dir / CHECKPOINT, run_dir / CHECKPOINT_JSON))
        update_record(run_dir, checkpoint_removed=time.strftime("%Y-%m-%d %H:%M"))
        return True
    except (OSError, ValueError):
        return False
    finally:
        lock.release()
