"""``loupe train`` on several processes: ``--nproc N`` here, or each process under torchrun.

Two spellings of one thing (README, "Distributed training"):

- ``loupe train ROOT ... --nproc N|gpus`` starts N local processes through
  ``torch.distributed.run`` (:mod:`loupe.engine.training.launch`) and prints their run
  exactly as a one-process run prints (table or ``--json`` lines), from rank 0's events.
- ``torchrun ... -m loupe.engine train ROOT ...`` runs this command in every process;
  rank 0 prints and writes, the others train silently (``streams``, ``is_main``), and
  SIGTERM from torchrun's agent stops a process at its next batch instead of killing it
  before rank 0's checkpoint is written (``worker_signals``).

This module reads torchrun's environment without importing torch, so ``loupe --help``
stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from loupe.engine.core.events import CancelToken

NPROC_HELP = (
    "train on N processes of this machine through torch.distributed.run (DDP): a number, "
    "or 'gpus' for one per CUDA GPU; --bs is per process. Under torchrun leave it out"
)


def add_options(group: argparse._ActionsContainer) -> None:
    group.add_argument("--nproc", metavar="N|gpus", default=None, help=NPROC_HELP)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def under_torchrun() -> bool:
    """This process is one of several that torchrun (or a launcher like it) started."""
    return _env_int("WORLD_SIZE", 1) > 1


def is_main() -> bool:
    """Rank 0, or any process that is not one of several: the one that prints."""
    return _env_int("RANK", 0) == 0


def streams() -> tuple[TextIO, TextIO]:
    """Where the epoch printer writes: the terminal on rank 0, nowhere on the others."""
    if is_main():
        return sys.stdout, sys.stderr
    return io.StringIO(), io.StringIO()


@contextlib.contextmanager
def worker_signals(cancel: CancelToken) -> Iterator[None]:
    """Under torchrun, SIGTERM/SIGINT from the agent cancel (see launch_worker.stop_signals)."""
    if not under_torchrun():
        yield
        return
    from loupe.engine.training.launch_worker import stop_signals

    with stop_signals(cancel):
        yield


def _pass_through(line: str) -> None:
    sys.stderr.write(line if line.endswith("\n") else line + "\n")
    sys.stderr.flush()


def launch(
    args: argparse.Namespace, printer: Any, cancel: CancelToken, config: Any = None
) -> int:
    """Run this ``loupe train`` (a new run with ``config``, or ``--resume``) on
    ``--nproc`` local processes, printing their events with ``printer``."""
    from loupe.engine.core.errors import ConfigError
    from loupe.engine.training.launch import resolve_nproc, train_processes

    if under_torchrun():
        raise ConfigError("--nproc starts the processes itself; under torchrun leave it out")
    if args.resume:
        from loupe.engine.training import runs
        from loupe.engine.training.builders import load_run_config

        device = load_run_config(runs.find_run(args.resume)).device
        job: dict[str, Any] = {"resume": args.resume}
    else:
        from loupe.engine.cli.common import data_spec_from_args
        from loupe.engine.training.setup import data_spec_json

        device = config.device
        job = {"data": data_spec_json(data_spec_from_args(args)), "config": config.to_json()}
    nproc = resolve_nproc(args.nproc, device)
    train_processes(job, nproc, on_event=printer, cancel=cancel, log=_pass_through)
    return 0
