"""``loupe predict-folder MODEL DIR --csv FILE [--sort-into DIR]``.

Predicts every image under DIR (recursively) into a CSV (path, label, prob, unknown, top,
error). ``--sort-into`` COPIES images into one folder per predicted class; nothing is ever
moved, and an existing file is never overwritten (a clash gets a -1, -2... suffix).
"""

from __future__ import annotations

import argparse
import sys

from loupe.engine.cli.predict_cmd import _positive, _probability
from loupe.engine.core.device import DEVICES
from loupe.engine.core.events import Event, Progress, ThrottledCallback, WarningEvent
from loupe.engine.core.text import printable


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict-folder",
        help="predict every image in a folder into a CSV (optionally copy into class folders)",
        description="Predict a folder of images recursively and write the results as CSV.",
    )
    parser.add_argument("model", metavar="MODEL", help="the .loupe model file")
    parser.add_argument("folder", metavar="DIR", help="folder of images (searched recursively)")
    parser.add_argument("--csv", required=True, metavar="FILE", help="CSV file to write")
    parser.add_argument("--sort-into", metavar="DIR",
                        help="also COPY each image into DIR/<predicted class>/ (never moves)")
    parser.add_argument("--topk", type=_positive, default=3, metavar="K",
                        help="classes listed in the 'top' column (default 3)")
    parser.add_argument("--bs", type=_positive, default=16, metavar="N",
                        help="images per batch (default 16)")
    parser.add_argument("--unknown-below", type=_probability, metavar="P",
                        help='label "unknown" when the top probability is below P')
    parser.add_argument("--device", default="cpu", choices=DEVICES,
                        help="where to run the model (default cpu)")
    parser.set_defaults(func=run)


def _reporter():
    """Progress on one stderr line when it is a terminal; warnings always (stderr)."""
    tty = sys.stderr.isatty()

    def show(event: Event) -> None:
        if isinstance(event, WarningEvent):
            print(f"warning: {printable(event.message, keep_newlines=True)}", file=sys.stderr)
        elif tty and isinstance(event, Progress):
            end = "\n" if event.done >= event.total else ""
            sys.stderr.write(f"\r{event.task}: {event.done}/{event.total}{end}")
            sys.stderr.flush()

    return ThrottledCallback(show, max_per_second=5)


def run(args: argparse.Namespace) -> int:
    from loupe.engine.core.outputs import check_output
    from loupe.engine.inference.folder import predict_folder
    from loupe.engine.inference.predict import Predictor

    check_output(args.csv, inputs=(args.model,), option="--csv")
    predictor = Predictor.from_file(
        args.model, unknown_below=args.unknown_below, device=args.device
    )
    result = predict_folder(
        predictor, args.folder, args.csv, topk=args.topk, batch_size=args.bs,
        sort_into=args.sort_into, on_event=_reporter(),
    )
    done = len(result.rows) - len(result.failed)
    print(f"{done} images predicted -> {printable(result.csv_path)}")
    for label, count in sorted(result.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {printable(label)}: {count}")
    if result.copied:
        print(f"{len(result.copied)} copies written under {printable(args.sort_into)} "
              "(originals untouched)")
    if result.failed:  # rejected files are failed rows too: count each once
        unreadable = len(result.failed) - len(result.rejected)
        print(f"{unreadable} unreadable, {len(result.rejected)} rejected "
              "(see the CSV's error column and the warnings above)")
    return 0
