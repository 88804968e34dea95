"""``loupe evaluate MODEL ROOT``: score a saved model on the validation set.

``--test`` scores the locked test set instead; each such look is counted in the run
record and a second look is flagged, because a test set chosen against stops being one.
"""

from __future__ import annotations

import argparse
import json
import sys

from loupe.engine.cli.common import add_data_options, apply_model_defaults, data_spec_from_args
from loupe.engine.core.device import DEVICES
from loupe.engine.core.text import json_safe, printable


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a .loupe model on the validation (or locked test) set",
        description="Score a saved model on an image folder's validation or test set.",
    )
    parser.add_argument("model", metavar="MODEL", help="the .loupe model file")
    parser.add_argument("root", metavar="ROOT", help="the folder of images")
    add_data_options(parser, model_defaults=True)
    parser.add_argument("--test", action="store_true",
                        help="score the locked test set (each look is counted)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from loupe.engine.data.dataset import prepare_data
    from loupe.engine.training import evaluate

    for warning in apply_model_defaults(args, args.model):
        print(f"loupe {args.command}: warning: {printable(warning)}", file=sys.stderr)
    prepared = prepare_data(data_spec_from_args(args))
    result = evaluate(args.model, prepared, test=args.test, device=args.device)
    if args.json:
        print(json.dumps(json_safe(result.to_json()), ensure_ascii=False))
        return 0
    for warning in result.warnings:
        print(f"warning: {printable(warning, keep_newlines=True)}", file=sys.stderr)
    print(f"{result.split} set: {result.n_images} images")
    for key, value in result.metrics.items():
        print(f"  {key:<16}{value:.4f}")
    print(f"\n{'class':<24}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for row in result.per_class:
        print(f"{printable(row['class'])[:23]:<24}{row['precision']:>10.3f}{row['recall']:>10.3f}"
              f"{row['f1']:>10.3f}{row['support']:>9}")
    if result.confusion is not None:
        names = [printable(row["class"])[:10] for row in result.per_class]
        print("\nconfusion (rows: actual, columns: predicted)")
        print(" " * 12 + "".join(f"{n:>11}" for n in names))
        for name, counts in zip(names, result.confusion, strict=True):
            print(f"{name:<12}" + "".join(f"{c:>11}" for c in counts))
    if result.test_looks is not None:
        print(f"\ntest-set looks with this model: {result.test_looks}")
    return 0
