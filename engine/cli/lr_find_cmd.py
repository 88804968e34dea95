"""``loupe lr-find ROOT``: fastai's learning-rate finder; prints the suggested rate.

``--plot FILE`` also saves the loss-vs-rate curve as PNG. The sweep uses the model as
``loupe train`` would start it (same --arch, --size, --bs, --pretrained).
"""

from __future__ import annotations

import argparse
import json
import sys

from loupe.engine.cli.common import add_data_options, data_spec_from_args
from loupe.engine.cli.train_cmd import EpochPrinter, add_model_options, config_from_args
from loupe.engine.core.text import json_safe, printable


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "lr-find",
        help="suggest a learning rate (loss vs rate sweep)",
        description="Train briefly with a growing learning rate and suggest a good one.",
    )
    parser.add_argument("root", metavar="ROOT", help="the folder of images")
    add_data_options(parser)
    add_model_options(parser)
    parser.add_argument("--plot", metavar="FILE", default=None, help="save the curve as PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from loupe.engine.data.dataset import prepare_data
    from loupe.engine.training import lr_find
    from loupe.engine.training.lr_finder import plot_lr_find

    if args.plot:
        from loupe.engine.core.outputs import check_output

        pretrained = args.pretrained if args.pretrained not in ("auto", "none") else None
        check_output(args.plot, inputs=(pretrained,), folders=(args.root,), option="--plot")
    printer = EpochPrinter(sys.stdout, sys.stderr, as_json=args.json)
    prepared = prepare_data(data_spec_from_args(args), on_event=printer)
    result = lr_find(prepared, config_from_args(args), on_event=printer)
    plot = str(plot_lr_find(result, args.plot)) if args.plot else None
    if args.json:
        print(json.dumps({"suggestion": result.suggestion, "steep": result.steep,
                          "plot": json_safe(plot),
                          "lrs": list(result.lrs), "losses": list(result.losses)}))
        return 0
    print(f"Suggested learning rate: {result.suggestion:.2e} (valley); "
          f"steepest descent at {result.steep:.2e}")
    print(f"Use it with: loupe train {printable(args.root)} --lr {result.suggestion:.2g}")
    if plot:
        print(f"Plot saved: {printable(plot)}")
    return 0
