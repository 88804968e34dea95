"""``loupe train ROOT``: fine-tune (or train from scratch) and save a ``.loupe`` bundle.

Without ``--json`` it prints fastai's epoch table (epoch, train_loss, valid_loss,
error_rate, time) with a one-line progress bar on stderr (when stderr is a terminal) and
prints warnings loudly — above all "training from random initialisation". With ``--json``
stdout carries only JSON lines: one per epoch ``{"epoch", "train_loss", "valid_loss",
"error_rate", "seconds"}`` and a last one ``{"model": PATH, ...final metrics}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from loupe.engine.cli import distributed_train  # H10 distributed
from loupe.engine.cli.common import add_data_options, data_spec_from_args, sigint_cancels
from loupe.engine.core.device import DEVICES
from loupe.engine.core.errors import CancelledError, ConfigError
from loupe.engine.core.events import EpochEnded, Event, Finished, Progress, Started, WarningEvent
from loupe.engine.core.text import json_safe, printable
from loupe.engine.data.resize import DEFAULT_RESIZE, RESIZE_HELP, RESIZE_METHODS

EPOCH_KEYS = ("epoch", "train_loss", "valid_loss", "error_rate", "seconds")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a classifier on an image folder and save a .loupe model",
        description="Fine-tune a pretrained model (fastai's fine_tune) on an image folder.",
    )
    parser.add_argument("root", metavar="ROOT", help="the folder of images")
    add_data_options(parser)
    add_model_options(parser)
    opts = parser.add_argument_group("training options")
    opts.add_argument("--epochs", type=int, default=1, help="epochs after unfreezing (1)")
    opts.add_argument(
        "--freeze-epochs", type=int, default=1, help="epochs with the body frozen first (1)"
    )
    opts.add_argument(
        "--lr", type=float, default=None,
        help="peak learning rate (2e-3 fine-tuning pretrained weights, 1e-3 from random init)",
    )
    opts.add_argument("--out", metavar="FILE", default=None, help="where to save the .loupe model")
    opts.add_argument("--overwrite", action="store_true",
                      help="let --out replace an existing file (refused otherwise)")
    opts.add_argument(
        "--progressive-resize", action="store_true",
        help="train the first half of the epochs at half the size",
    )
    opts.add_argument("--resume", metavar="RUN", default=None,
                      help="continue an interrupted run (its folder or id)")
    distributed_train.add_options(opts)  # H10 distributed: --nproc
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.set_defaults(func=run)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--arch, --size, --resize, --bs, --pretrained, --device, --threads (train, lr-find)."""
    group = parser.add_argument_group("model options")
    group.add_argument("--arch", default="auto", metavar="NAME",
                       help="architecture (loupe weights list); default auto: the best one "
                       "whose pretrained weights are installed (tf_efficientnet_lite0)")
    group.add_argument("--size", type=int, default=224, metavar="PX", help="input size (224)")
    group.add_argument(
        "--resize", default=DEFAULT_RESIZE, choices=RESIZE_METHODS,
        help=f"how images become squares ({DEFAULT_RESIZE}): "
        + "; ".join(f"{name}: {RESIZE_HELP[name]}" for name in RESIZE_METHODS),
    )
    group.add_argument("--bs", type=int, default=0, metavar="N", help="batch size (0: automatic)")
    group.add_argument("--pretrained", default="auto", metavar="auto|none|FILE",
                       help="pretrained weights: found on this machine (auto), none, or a file")
    group.add_argument("--device", default="auto", choices=DEVICES)
    group.add_argument("--threads", type=int, default=0,
                       help="CPU threads (default 0: all cores)")


def config_from_args(args: argparse.Namespace, **extra):
    from loupe.engine.training import TrainConfig

    return TrainConfig(
        arch=args.arch, size=args.size, resize=args.resize, batch_size=args.bs,
        pretrained=args.pretrained, device=args.device, seed=args.seed,
        threads=args.threads, **extra,
    )


class EpochPrinter:
    """Turns training events into the epoch table (or JSON lines) and a progress bar."""

    def __init__(self, out: TextIO, err: TextIO, *, as_json: bool) -> None:
        self.out, self.err, self.as_json = out, err, as_json
        self.bar = err.isatty()
        self.phase: str | None = None
        self.run_dir: str | None = None
        self.epochs_done = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, Started) and event.task == "train":
            self._started(event)
        elif isinstance(event, WarningEvent):
            self._warning(event)
        elif isinstance(event, Progress) and self.bar:
            self._progress(event)
        elif isinstance(event, EpochEnded):
            self._epoch(event)
        elif isinstance(event, Finished) and event.task == "train":
            self._finished(event)

    def _started(self, event: Started) -> None:
        self.run_dir = event.info.get("run_dir")
        self.epochs_done = int(event.info.get("resumed_at_epoch") or 0)
        if self.as_json:
            return
        i = {key: printable(value) if isinstance(value, str) else value
             for key, value in event.info.items()}
        self.out.write(
            f"Training {i.get('arch')} on {i.get('device_name')} | weights: {i.get('pretrained')}"
            f" | {i.get('n_train')} train / {i.get('n_valid')} valid images, "
            f"{len(i.get('classes', []))} classes | {i.get('size')} px {i.get('resize')}, "
            f"batch {i.get('batch_size')}"
            f"\nRun folder: {i.get('run_dir')}\n"
        )
        self.out.flush()

    def _warning(self, event: WarningEvent) -> None:
        self._clear_bar()
        message = printable(event.message, keep_newlines=True)
        if event.code == "random-init":
            rule = "!" * 78
            self.err.write(f"{rule}\nWARNING: {message}\n{rule}\n")
        else:
            self.err.write(f"warning ({printable(event.code)}): {message}\n")
        self.err.flush()

    def _progress(self, event: Progress) -> None:
        width = 30
        filled = int(width * event.done / max(1, event.total))
        loss = f" loss {event.loss:.4f}" if event.loss is not None else ""
        eta = f" eta {_mmss(event.eta_seconds)}" if event.eta_seconds is not None else ""
        epoch = f"epoch {event.epoch} " if event.epoch is not None else ""
        self.err.write(
            f"\r{event.task} {epoch}[{'#' * filled}{'.' * (width - filled)}] "
            f"{event.done}/{event.total}{loss}{eta}\x1b[K"
        )
        self.err.flush()

    def _clear_bar(self) -> None:
        if self.bar:
            self.err.write("\r\x1b[K")
            self.err.flush()

    def _epoch(self, event: EpochEnded) -> None:
        self.epochs_done = event.epoch
        m = event.metrics
        row = {"epoch": event.epoch, "train_loss": m["train_loss"], "valid_loss": m["valid_loss"],
               "error_rate": m["error_rate"], "seconds": round(m["seconds"], 3)}
        if self.as_json:
            self.out.write(json.dumps(row) + "\n")
        else:
            self._clear_bar()
            if event.phase != self.phase:
                self.phase = event.phase
                self.out.write(f"\n[{event.phase}]\n{'epoch':<7}{'train_loss':<12}"
                               f"{'valid_loss':<12}{'error_rate':<12}time\n")
            self.out.write(
                f"{event.epoch:<7}{row['train_loss']:<12.6f}{row['valid_loss']:<12.6f}"
                f"{row['error_rate']:<12.6f}{_mmss(m['seconds'])}\n"
            )
        self.out.flush()

    def _finished(self, event: Finished) -> None:
        result = event.result
        metrics = {k: v for k, v in dict(result.get("metrics", {})).items() if k != "phase"}
        if self.as_json:
            self.out.write(json.dumps(json_safe({"model": result["model"], **metrics})) + "\n")
        else:
            self._clear_bar()
            err = metrics.get("error_rate")
            tail = f" (error_rate {err:.4f})" if isinstance(err, float) else ""
            self.out.write(f"\nSaved model: {printable(result['model'])}{tail}\n")
        self.out.flush()


def _mmss(seconds: float | None) -> str:
    seconds = max(0, int(round(seconds or 0)))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def run(args: argparse.Namespace) -> int:
    from loupe.engine.data.dataset import prepare_data
    from loupe.engine.training import resume, train

    printer = EpochPrinter(*distributed_train.streams(), as_json=args.json)  # H10: rank 0 prints
    with sigint_cancels() as cancel, distributed_train.worker_signals(cancel):  # H10 distributed
        try:
            if args.resume:
                _check_resume_root(args)
                if args.nproc:  # H10 distributed: N local processes, printed from here
                    return distributed_train.launch(args, printer, cancel)
                resume(args.resume, on_event=printer, cancel=cancel)
                return 0
            if args.out:
                _check_out(args)
            config = config_from_args(
                args, epochs=args.epochs, freeze_epochs=args.freeze_epochs, lr=args.lr,
                out=args.out, progressive_resize=args.progressive_resize,
            )
            if args.nproc:  # H10 distributed: N local processes, printed from here
                return distributed_train.launch(args, printer, cancel, config)
            prepared = prepare_data(data_spec_from_args(args), on_event=printer, cancel=cancel)
            train(prepared, config, on_event=printer, cancel=cancel)
        except CancelledError:
            if distributed_train.is_main():  # H10 distributed: rank 0 alone reports
                sys.stderr.write(_stopped_line(args, printer) + "\n")
            return 130
    return 0


def _check_out(args: argparse.Namespace) -> None:
    """Before scanning: --out never replaces an input or an earlier model unasked."""
    from loupe.engine.core.outputs import check_output

    pretrained = args.pretrained if args.pretrained not in ("auto", "none") else None
    check_output(args.out, inputs=(pretrained,), folders=(args.root,), option="--out",
                 overwrite=args.overwrite)


def _stopped_line(args: argparse.Namespace, printer: EpochPrinter) -> str:
    """Say what was kept and how to go on, so an interrupted run is not a lost one."""
    return printable(_stopped_text(args, printer))


def _stopped_text(args: argparse.Namespace, printer: EpochPrinter) -> str:
    printer._clear_bar()
    if printer.run_dir is None:
        return "loupe train: interrupted before training started; nothing was saved"
    run_id = Path(printer.run_dir).name
    if not printer.epochs_done:
        return (f"loupe train: interrupted before the first epoch finished; no checkpoint "
                f"(run folder {printer.run_dir})")
    nproc = getattr(args, "nproc", None)
    again = f" --nproc {nproc}" if nproc else ""  # the same processes again, if launched so
    return (f"loupe train: interrupted; the checkpoint of epoch {printer.epochs_done} is kept "
            f"in {printer.run_dir}; continue with: loupe train {args.root} --resume {run_id}"
            f"{again}")


def _check_resume_root(args: argparse.Namespace) -> None:
    """A resumed run uses its own saved data options; ROOT must be the same folder."""
    from loupe.engine.training import runs

    run_dir = runs.find_run(args.resume)
    runs.refuse_finished(run_dir)
    saved = Path(runs.read_json(run_dir, "data.json")["root"])
    if Path(args.root).expanduser().resolve() != saved:
        raise ConfigError(
            f"run {run_dir.name} trained on {saved}, not {args.root}; "
            "resume it with that folder (its label and split options are reused)"
        )
    from loupe.engine.cli.common import DATA_DEFAULTS

    ignored = [f"--{key.replace('_', '-')} {getattr(args, key)}"
               for key, default in DATA_DEFAULTS.items() if getattr(args, key, default) != default]
    if ignored:
        print(printable(f"loupe train: warning: {', '.join(ignored)} ignored: a resumed run "
                        f"keeps the label and split options of run {run_dir.name}"),
              file=sys.stderr)
