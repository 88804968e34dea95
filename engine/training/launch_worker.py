"""The processes behind :mod:`loupe.engine.training.launch`: torchrun's agent and the
workers it starts, and the JSON-line protocol they speak on stdout.

- ``python -m loupe.engine.training.launch_worker agent N JOB`` runs
  ``torch.distributed.run`` in-process (``--standalone``, one machine, no restarts) and,
  when a worker fails or a signal stops it, says which in one protocol line.
- ``python -m loupe.engine.training.launch_worker worker JOB`` is one rank: it rebuilds
  the job's data (or resumes its run) and trains; rank 0's events go to stdout.

One JSON object per line (the workers inherit the agent's stdout):

- ``{"loupe_event": "EpochEnded", ...}``: an engine event (rank 0 alone sends events);
- ``{"loupe_rank_error": {"rank", "message", "peer_lost"}}``: a worker's own error;
- ``{"loupe_launch_failure": {...}}``: the failed processes, or the signal that stopped
  the agent.

Writing this protocol to stdout is what these entry points are for, as printing is the
CLI's; the library functions they call never print.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from loupe.engine.core.errors import CancelledError
from loupe.engine.core.events import (
    Cancelled,
    CancelToken,
    EpochEnded,
    Event,
    Failed,
    Finished,
    Progress,
    Started,
    WarningEvent,
)

MODULE = "loupe.engine.training.launch_worker"  # this module, also when run as __main__
EVENT_KEY, RANK_ERROR_KEY, FAILURE_KEY = "loupe_event", "loupe_rank_error", "loupe_launch_failure"
EVENT_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (Started, Progress, EpochEnded, WarningEvent, Finished, Failed, Cancelled)
}


# -- the line protocol ----------------------------------------------------------------------


def event_to_line(event: Event) -> str:
    """One JSON line for ``event`` (see the module docstring)."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return json.dumps({EVENT_KEY: type(event).__name__, **fields}, default=str)


def event_from_line(line: str) -> Event | None:
    """The event of a protocol line, or None for any other line."""
    data = json_object(line)
    cls = EVENT_TYPES.get(str(data.get(EVENT_KEY))) if data else None
    if data is None or cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    event: Event = cls(**{k: v for k, v in data.items() if k in names})
    return event


def json_object(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class LineWriter:
    """Protocol lines to a stream, whole lines only (events come from several threads)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream, self._lock = stream, threading.Lock()

    def write(self, obj: dict[str, Any] | str) -> None:
        text = obj if isinstance(obj, str) else json.dumps(obj, default=str)
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()

    def event(self, event: Event) -> None:
        self.write(event_to_line(event))


# -- the agent and worker processes --------------------------------------------------------


@contextlib.contextmanager
def stop_signals(cancel: CancelToken) -> Iterator[None]:
    """In a worker, SIGINT and SIGTERM (how torchrun's agent stops its workers) set
    ``cancel`` instead of killing: the process stops at its next batch and rank 0 writes
    its checkpoint first. A hung worker is still killed by the agent after its grace time.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [signal.SIGINT, signal.SIGTERM]
    previous = {sig: signal.getsignal(sig) for sig in wanted}
    for sig in wanted:
        signal.signal(sig, lambda signum, frame: cancel.cancel())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _quiet_torchrun(level: int) -> None:
    import logging

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(level)
    logging.getLogger("torch.distributed").setLevel(level)


def _agent_main(nproc: int, job_file: str) -> int:
    import logging

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    out = LineWriter(sys.stdout)
    _quiet_torchrun(logging.CRITICAL)  # the caller words the failure itself
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # Loupe sets threads per process itself
    args = torchrun.parse_args([
        "--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc), "--max-restarts",
        "0", "--monitor-interval", "0.5", "--module", MODULE, "worker", job_file,
    ])
    try:
        torchrun.run(args)
        return 0
    except ChildFailedError as err:
        failures = [
            {"rank": rank, "pid": f.pid, "exitcode": f.exitcode,
             "signal": f.signal_name() if f.exitcode < 0 else None}
            for rank, f in sorted(err.failures.items())
        ]
        out.write({FAILURE_KEY: {"failures": failures}})
        return 1
    except SignalException as err:
        out.write({FAILURE_KEY: {"signal": err.sigval.name}})
        return 130


def _worker_main(job_file: str) -> int:
    import traceback

    from loupe.engine.core.errors import LoupeError, describe_error
    from loupe.engine.training import distributed
    from loupe.engine.training.config import TrainConfig
    from loupe.engine.training.setup import rebuild_prepared
    from loupe.engine.training.trainer import resume, train

    out = LineWriter(sys.stdout)
    cancel = CancelToken()
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    with stop_signals(cancel):
        try:
            if job.get("resume"):
                resume(job["resume"], on_event=out.event, cancel=cancel)
            else:
                config = TrainConfig.from_json(job["config"])
                prepared = rebuild_prepared(job["data"], distributed.main_events(out.event), cancel)
                train(prepared, config, on_event=out.event, cancel=cancel)
            return 0
        except CancelledError:
            return 130
        except BaseException as err:
            if not isinstance(err, LoupeError | OSError):
                traceback.print_exc()
            out.write({RANK_ERROR_KEY: {
                "rank": distributed.world().rank, "message": describe_error(err),
                "peer_lost": isinstance(err, distributed.PeerLostError),
            }})
            return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 3 and args[0] == "agent":
        return _agent_main(int(args[1]), args[2])
    if len(args) == 2 and args[0] == "worker":
        return _worker_main(args[1])
    print(f"usage: python -m {MODULE} agent N JOB | worker JOB",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
