"""``loupe weights list|import FILE --arch NAME|download NAME``: pretrained weights.

``list`` shows the curated architectures and whether weights for each are on this
machine (no network). ``import`` validates a file against an architecture and copies it
into Loupe's store. ``download`` is the only way Loupe ever goes online for weights:
running it is the user's explicit consent.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from loupe.engine.core.events import Event, Progress, ThrottledCallback, ignore_event
from loupe.engine.core.text import printable


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="list, import or download pretrained weights",
        description="Pretrained weights: what is on this machine, import a file, download.",
    )
    actions = parser.add_subparsers(dest="weights_action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="architectures and whether weights are here")
    listing.add_argument("--json", action="store_true", help="print one JSON object per line")
    listing.set_defaults(func=run_list)

    importing = actions.add_parser(
        "import", help="validate a weights file and copy it into Loupe's store"
    )
    importing.add_argument("file", metavar="FILE", help=".safetensors or torchvision .pth")
    importing.add_argument("--arch", required=True, metavar="NAME", help="architecture name")
    importing.set_defaults(func=run_import)

    download = actions.add_parser(
        "download", help="download an architecture's weights from the Hugging Face hub"
    )
    download.add_argument("arch", metavar="NAME", help="architecture name")
    download.set_defaults(func=run_download)


def run_list(args: argparse.Namespace) -> int:
    from loupe.engine.models.catalog import describe_architectures

    rows = describe_architectures(with_weights=True)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(format_table(rows))
    return 0


def format_table(rows: list[dict]) -> str:
    """A plain aligned table: arch, family, params, input size, speed, weights."""
    header = ("arch", "family", "params", "size", "speed", "weights")
    body = [
        (
            r["name"],
            r["family"],
            f"{r['params'] / 1e6:.1f}M",
            f"{r['input_size']}px",
            r["speed"],
            r.get("weights", ""),
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, *body]]
    return "\n".join(lines)


def run_import(args: argparse.Namespace) -> int:
    from loupe.engine.models.weights import import_weights

    stored = import_weights(args.file, args.arch)
    print(printable(f"imported {args.file} for {args.arch} -> {stored}"))
    return 0


def run_download(args: argparse.Namespace) -> int:
    from loupe.engine.models.weights_download import download_weights

    path = download_weights(args.arch, on_event=_byte_printer(sys.stderr))
    print(printable(f"downloaded weights for {args.arch} -> {path}"))
    return 0


def _byte_printer(stream: TextIO):
    """Download progress on one rewritten stderr line, only when stderr is a terminal."""
    if not stream.isatty():
        return ignore_event

    def show(event: Event) -> None:
        if isinstance(event, Progress):
            end = "\n" if event.done >= event.total else ""
            mib, total = event.done / 2**20, event.total / 2**20
            stream.write(f"\rdownloading: {mib:.1f}/{total:.1f} MiB{end}")
            stream.flush()

    return ThrottledCallback(show, max_per_second=5)
