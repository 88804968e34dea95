"""A training on N local processes, started from a program: ``loupe train --nproc N`` and
the desktop's "all N GPUs" both come through :func:`launch_events`.

Three levels of processes, each with one job::

    caller (CLI / desktop worker thread)   reads the event stream, forwards Stop
      └─ agent: python -m loupe.engine.training.launch_worker agent N JOB
           torch.distributed.run in-process (torchrun's own elastic agent), in its own
           session, so a terminal's Ctrl+C reaches only the caller, which forwards it once
           └─ N workers: python -m loupe.engine.training.launch_worker worker JOB
                train() or resume() under torch.distributed (see distributed.py)

The caller never holds the workers' torch state and never blocks a GUI: it reads the
JSON lines of :mod:`launch_worker`'s protocol from the agent's stdout and passes every
other line, and the processes' stderr, to ``log``. The job is a small JSON file,
``{"data": data.json's content, "config": TrainConfig}`` or ``{"resume": RUN}``: the
same records a run folder keeps, so the workers rebuild exactly the data the caller
chose, and nothing is pickled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from loupe.engine.core.errors import CancelledError, ConfigError, TrainingError
from loupe.engine.core.events import (
    Cancelled,
    CancelToken,
    Event,
    EventCallback,
    Failed,
    Finished,
    Started,
    ignore_event,
)
from loupe.engine.training.launch_worker import (
    FAILURE_KEY,
    MODULE,
    RANK_ERROR_KEY,
    event_from_line,
    json_object,
)

STOP_GRACE_S = 60  # after Stop: how long the workers get to write their checkpoint
_LOG_TAIL = 200


# -- choosing N -----------------------------------------------------------------------------


def gpu_count() -> int:
    """CUDA GPUs on this machine (what "all N GPUs" offers; 0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_nproc(value: str | int, device: str = "auto") -> int:
    """``--nproc``'s value: a number of processes, or ``gpus`` for one per CUDA GPU."""
    text = str(value).strip().lower()
    gpus = gpu_count()
    if text == "gpus":
        if device not in ("auto", "cuda") or gpus == 0:
            raise ConfigError(
                "--nproc gpus starts one process per CUDA GPU, and "
                + ("this machine has none" if gpus == 0 else f"--device is {device}")
                + "; give a number of processes instead (e.g. --nproc 2 on the CPU)"
            )
        return gpus
    try:
        count = int(text)
    except ValueError:
        raise ConfigError(
            f"--nproc {value!r} must be a number of processes or 'gpus'"
        ) from None
    if count < 1:
        raise ConfigError(f"--nproc {count}: at least one process")
    if (device == "cuda" or (device == "auto" and gpus)) and count > gpus:
        raise ConfigError(
            f"--nproc {count}: each process trains on its own GPU and this machine has "
            f"{gpus}; use --nproc gpus, fewer processes, or --device cpu"
        )
    return count


# -- the caller's side ----------------------------------------------------------------------


@dataclasses.dataclass
class _Outcome:
    """What the caller learnt from the stream about how the run ended."""

    nproc: int
    run_dir: str | None = None
    final: Event | None = None  # rank 0's Finished / Failed / Cancelled
    rank_errors: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    stopped_by: str | None = None  # the signal that stopped the agent


def job_for(prepared: Any, config: Any) -> dict[str, Any]:
    """The job of a new run: how to rebuild ``prepared``'s data, and the config."""
    from loupe.engine.training.setup import data_spec_json

    return {"data": data_spec_json(prepared.spec), "config": config.to_json()}


def launch_events(
    job: dict[str, Any],
    nproc: int,
    *,
    cancel: CancelToken | None = None,
    log: Callable[[str], None] | None = None,
) -> Iterator[Event]:
    """Run ``job`` on ``nproc`` local processes and yield rank 0's events as they come.

    The last event is the run's outcome: rank 0's Finished, Failed or Cancelled, or, when
    a process died without saying why, a Failed naming it, with where the checkpoint is.
    Setting ``cancel`` stops every process (each writes nothing more; rank 0 keeps its
    checkpoint). ``log`` receives the processes' other output, line by line.
    """
    outcome = _Outcome(nproc)
    tail: deque[str] = deque(maxlen=_LOG_TAIL)
    with tempfile.TemporaryDirectory(prefix="loupe-launch-") as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps(job), encoding="utf-8")
        agent = _start_agent(nproc, job_file)
        threads = [
            _thread(_pump_text, agent.stderr, tail, log),
            _thread(_forward_stop, agent, cancel, outcome),
        ]
        try:
            assert agent.stdout is not None
            for line in agent.stdout:
                event = _take_line(line, outcome, tail, log)
                if event is not None:
                    yield event
            agent.wait()
        finally:
            _stop_agent(agent)
            for thread in threads:
                thread.join(timeout=5)
    yield _final_event(outcome, cancel, list(tail))


def _start_agent(nproc: int, job_file: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", MODULE, "agent", str(nproc), str(job_file)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    new_group: dict[str, Any] = (
        {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
        if os.name == "nt" else {"start_new_session": True}
    )
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True, encoding="utf-8", errors="replace", env=env, **new_group,
    )


def _thread(target: Callable[..., None], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name="loupe-launch", daemon=True)
    thread.start()
    return thread


def _pump_text(stream: IO[str] | None, tail: deque[str], log: Callable[[str], None] | None):
    for line in stream or ():
        tail.append(line.rstrip("\n"))
        if log is not None:
            log(line)


def _interrupt(agent: subprocess.Popen[str]) -> None:
    """What Ctrl+C is to torchrun: the agent tells every worker to stop."""
    with contextlib.suppress(OSError):
        if os.name == "nt":
            agent.send_signal(getattr(signal, "CTRL_BREAK_EVENT", signal.SIGINT))
        else:
            agent.send_signal(signal.SIGINT)


def _forward_stop(agent: subprocess.Popen[str], cancel: CancelToken | None, outcome: _Outcome):
    while cancel is not None and agent.poll() is None:
        if cancel.cancelled:
            outcome.stopped_by = outcome.stopped_by or "stop"
            _interrupt(agent)
            return
        threading.Event().wait(0.1)


def _stop_agent(agent: subprocess.Popen[str]) -> None:
    """The caller stopped reading (or failed): the processes must not outlive it."""
    if agent.poll() is None:
        _interrupt(agent)
        try:
            agent.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()


def _take_line(
    line: str, outcome: _Outcome, tail: deque[str], log: Callable[[str], None] | None
) -> Event | None:
    """Record what a stdout line says; return it if it is an event to pass on now."""
    event = event_from_line(line)
    if event is not None:
        if isinstance(event, Started) and event.task == "train":
            outcome.run_dir = str(event.info.get("run_dir") or "") or None
        if isinstance(event, Finished | Failed | Cancelled) and event.task == "train":
            outcome.final = event  # held until every process has exited
            return None
        return event
    data = json_object(line) or {}
    if isinstance(data.get(RANK_ERROR_KEY), dict):
        error = data[RANK_ERROR_KEY]
        outcome.rank_errors[int(error.get("rank", 0))] = error
    elif isinstance(data.get(FAILURE_KEY), dict):
        failure = data[FAILURE_KEY]
        outcome.failures.extend(failure.get("failures", []))
        outcome.stopped_by = failure.get("signal") or outcome.stopped_by
    else:
        tail.append(line.rstrip("\n"))
        if log is not None:
            log(line)
    return None


def _final_event(outcome: _Outcome, cancel: CancelToken | None, tail: list[str]) -> Event:
    """Rank 0's outcome, unless another process's end is the real story."""
    final = outcome.final
    last = next((line for line in reversed(tail) if line.strip()), "")
    user_stop = (cancel is not None and cancel.cancelled) or outcome.stopped_by is not None
    root = _root_cause(outcome)
    if isinstance(final, Finished):
        return final
    if isinstance(final, Cancelled) and (user_stop or root is None):
        return final
    if isinstance(final, Failed) and (root is None or int(root.get("rank", 0)) == 0):
        return final
    if root is not None:
        why = _describe(root, outcome, last)
        return Failed("train", f"training stopped: {why}{_kept(outcome)}")
    if user_stop:
        return Cancelled("train", "stopped" + _kept(outcome))
    return Failed("train", "the distributed run ended without a result: "
                  f"{last or 'no output'}{_kept(outcome)}")


def _root_cause(outcome: _Outcome) -> dict[str, Any] | None:
    """The failed process that was not just a victim of another one's end (a peer lost,
    stopped by the agent, or cancelled)."""
    victims = {r for r, e in outcome.rank_errors.items() if e.get("peer_lost")}
    for failure in sorted(outcome.failures, key=lambda f: int(f.get("rank", 0))):
        if int(failure.get("rank", 0)) in victims or failure.get("exitcode") == 130:
            continue
        if failure.get("signal") not in ("SIGTERM", "SIGINT"):
            return failure
    return None


def _describe(failure: dict[str, Any], outcome: _Outcome, last: str) -> str:
    rank = int(failure.get("rank", 0))
    who = f"process {rank} of {outcome.nproc} (pid {failure.get('pid')})"
    error = outcome.rank_errors.get(rank, {}).get("message")
    if error:
        return error if rank == 0 else f"{who} failed: {error}"
    if failure.get("signal"):
        return f"{who} was killed by {failure['signal']}"
    said = f" (last output: {last.strip()})" if last else ""
    return f"{who} exited with code {failure.get('exitcode')}{said}"


def _kept(outcome: _Outcome) -> str:
    """Where the run can go on from: the checkpoint rank 0 left on disk, read back."""
    if not outcome.run_dir:
        return ""
    run_dir = Path(outcome.run_dir)
    try:
        done = int(json.loads((run_dir / "checkpoint.json").read_text("utf-8"))["epochs_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"; no epoch finished, so there is no checkpoint (run folder {run_dir})"
    return (f"; the checkpoint of epoch {done} is kept in {run_dir}; continue with "
            f"--resume {run_dir.name}")


def train_processes(
    job: dict[str, Any],
    nproc: int,
    *,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
    log: Callable[[str], None] | None = None,
) -> Any:
    """:func:`launch_events` as :func:`trainer.train` behaves: events to ``on_event``, a
    :class:`~loupe.engine.training.trainer.TrainResult`, or TrainingError / CancelledError."""
    finished: Finished | None = None
    started: dict[str, Any] = {}
    for event in launch_events(job, nproc, cancel=cancel, log=log):
        on_event(event)
        if isinstance(event, Started) and event.task == "train":
            started = dict(event.info)
        elif isinstance(event, Failed) and event.task == "train":
            error = TrainingError(event.message)
            error.advice = event.advice  # type: ignore[attr-defined]
            raise error
        elif isinstance(event, Cancelled) and event.task == "train":
            raise CancelledError(event.message)
        elif isinstance(event, Finished) and event.task == "train":
            finished = event
    assert finished is not None  # launch_events always ends with an outcome
    return _result(finished, started)


def _result(finished: Finished, info: dict[str, Any]) -> Any:
    from loupe.engine.models.bundle import read_bundle_meta
    from loupe.engine.training import runs
    from loupe.engine.training.trainer import TrainResult

    bundle, run_dir = Path(finished.result["model"]), Path(finished.result["run_dir"])
    training = dict(read_bundle_meta(bundle).training or {})
    report = {key: training.get(key) for key in ("per_class", "confusion", "top_losses")}
    metrics = dict(finished.result.get("metrics", {}))
    return TrainResult(
        bundle_path=bundle, run_dir=run_dir, metrics=metrics,
        history=tuple(runs.read_metrics(run_dir)), report={"metrics": metrics, **report},
        info=info,
    )


def train_distributed(prepared: Any, config: Any, nproc: int, **kwargs: Any) -> Any:
    """:func:`trainer.train` of ``prepared`` with ``config`` on ``nproc`` local processes."""
    return train_processes(job_for(prepared, config), nproc, **kwargs)


def resume_distributed(run: str | Path, nproc: int, **kwargs: Any) -> Any:
    """:func:`trainer.resume` of ``run`` on ``nproc`` local processes."""
    return train_processes({"resume": str(run)}, nproc, **kwargs)
