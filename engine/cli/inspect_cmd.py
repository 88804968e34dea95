"""``loupe inspect ROOT``: what Loupe sees in a folder, before any training.

Prints a classes × sets table, the warnings (missing classes, leaks, ...), every rejected
file with its reason and the unlabelled files; ``--json`` prints the one stable object of
:func:`loupe.engine.data.dataset.inspect_report`. Exit 0 whenever the folder could be read, even
with rejected files; a folder that cannot be used at all raises a LoupeError, which
``loupe.engine.cli.main`` prints as one line with a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from loupe.engine.cli.common import add_data_options, data_spec_from_args
from loupe.engine.core.events import Event, Progress, ThrottledCallback, ignore_event
from loupe.engine.core.text import json_safe, printable

UNLABELLED_SHOWN = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show classes, split counts, warnings and rejected files of an image folder",
        description="Scan an image folder, label and split it, and report what Loupe sees.",
    )
    parser.add_argument("root", metavar="ROOT", help="the folder of images")
    add_data_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _progress_printer(stream: TextIO):
    """Scan progress on one rewritten stderr line, only when stderr is a terminal."""
    if not stream.isatty():
        return ignore_event

    def show(event: Event) -> None:
        if isinstance(event, Progress):
            end = "\n" if event.done >= event.total else ""
            stream.write(f"\r{event.task}: {event.done}/{event.total} files{end}")
            stream.flush()

    return ThrottledCallback(show, max_per_second=5)


def run(args: argparse.Namespace) -> int:
    from loupe.engine.data.dataset import inspect_report, prepare_data

    spec = data_spec_from_args(args)
    prepared = prepare_data(spec, on_event=_progress_printer(sys.stderr))
    report = inspect_report(prepared)
    if args.json:
        print(json.dumps(json_safe(report), indent=2, ensure_ascii=False))
    else:
        reasons = {u.item.rel: u.reason for u in prepared.labelling.unmatched}
        print(format_report(report, header=_header(prepared), reasons=reasons))
    return 0


def _header(prepared) -> str:
    spec = prepared.spec
    split = spec.split
    extras = [f"seed {split.seed}"]
    if split.test_fraction:
        extras.append(f"test {split.test_fraction:g}")
    if split.subset < 1:
        extras.append(f"subset {split.subset:g}")
    kind = "multi-label" if prepared.labelling.multi_label else "single-label"
    return (
        f"Folder: {printable(spec.root)}\n"
        f"Images: {len(prepared.scan.items)} usable, {len(prepared.scan.rejected)} rejected; "
        f"{len(prepared.labelling.labelled)} labelled ({kind}), "
        f"{len(prepared.labelling.unmatched)} unlabelled, "
        f"{len(prepared.labelling.excluded)} excluded\n"
        f"Label rule: {printable(spec.label.spec)}    Split: {printable(split.spec)} "
        f"({', '.join(extras)})"
    )


def _table(report: dict) -> list[str]:
    sets = ("train", "valid", "test")
    names = {cls: printable(cls) for cls in report["classes"]}
    width = max([len("class"), len("total")] + [len(n) for n in names.values()])
    lines = [f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in (*sets, "total"))]
    totals = dict.fromkeys(sets, 0)
    for cls in report["classes"]:
        n = report["counts"][cls]
        for s in sets:
            totals[s] += n[s]
        row = "  ".join(f"{n[s]:>6}" for s in sets) + f"  {sum(n.values()):>6}"
        lines.append(f"{names[cls]:<{width}}  {row}")
    lines.append("-" * len(lines[0]))
    row = "  ".join(f"{totals[s]:>6}" for s in sets) + f"  {sum(totals.values()):>6}"
    lines.append(f"{'total':<{width}}  {row}")
    return lines


def format_report(
    report: dict, *, header: str = "", reasons: dict[str, str] | None = None
) -> str:
    """The human-readable report (the same facts as the JSON object, plus the reason
    each unlabelled file was not matched when ``reasons`` is given). Names and messages
    are passed through ``core.text.printable``: no terminal control is printed raw."""
    reasons = reasons or {}
    lines = [header, ""] if header else []
    lines += _table(report)
    if report["warnings"]:
        lines += ["", f"Warnings ({len(report['warnings'])}):"]
        lines += [f"  - {printable(w, keep_newlines=True)}" for w in report["warnings"]]
    if report["rejected"]:
        lines += ["", f"Rejected files ({len(report['rejected'])}):"]
        lines += [f"  {printable(r['path'])}: {printable(r['reason'], keep_newlines=True)}"
                  for r in report["rejected"]]
    unlabeled = report["unlabeled"]
    if unlabeled:
        lines += ["", f"Unlabelled files ({len(unlabeled)}):"]
        for path in unlabeled[:UNLABELLED_SHOWN]:
            shown = printable(path)
            lines.append(f"  {shown}: {printable(reasons[path], keep_newlines=True)}"
                         if path in reasons else f"  {shown}")
        if len(unlabeled) > UNLABELLED_SHOWN:
            lines.append(f"  ... and {len(unlabeled) - UNLABELLED_SHOWN} more")
    return "\n".join(lines)
