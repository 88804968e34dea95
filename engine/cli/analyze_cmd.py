"""``loupe analyze MODEL ROOT [data options] --out DIR``: the error workbench, on disk.

Rebuilds the validation set from ROOT with the same data options as training (label rule,
split, seed), runs the model over it once, and writes into DIR: confusion.png (counts and
normalized), per_class.png, top_losses.png (with activation maps), embedding.png (PCA, or
t-SNE with --embedding tsne and scikit-learn installed), first_conv_filters.png, and
metrics.json (per-class precision/recall/F1/support, most-confused pairs, top losses).
"""

from __future__ import annotations

import argparse
import json
import sys

from loupe.engine.cli.common import add_data_options, apply_model_defaults, data_spec_from_args
from loupe.engine.cli.predict_cmd import _positive, _probability
from loupe.engine.core.device import DEVICES
from loupe.engine.core.text import json_safe, printable


def register(subparsers: argparse._SubParsersAction) -> None:
    from loupe.engine.evaluation.analysis import EMBEDDING_METHODS
    from loupe.engine.inference.cam import CAM_METHODS, DEFAULT_METHOD

    parser = subparsers.add_parser(
        "analyze",
        help="error analysis of a model on its validation set (figures + metrics.json)",
        description="Confusion matrix, top losses, per-class metrics and an embedding map.",
    )
    parser.add_argument("model", metavar="MODEL", help="the .loupe model file")
    parser.add_argument("root", metavar="ROOT", help="the image folder the model was trained on")
    add_data_options(parser, model_defaults=True)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the figures")
    parser.add_argument("--top-losses", type=_positive, default=9, metavar="K",
                        help="how many top-loss images to show (default 9)")
    parser.add_argument("--cam-method", choices=tuple(CAM_METHODS), default=DEFAULT_METHOD,
                        help=f"activation-map method for top losses (default {DEFAULT_METHOD})")
    parser.add_argument("--opacity", type=_probability, default=0.5, metavar="A",
                        help="overlay opacity (default 0.5)")
    parser.add_argument("--embedding", choices=EMBEDDING_METHODS, default="pca",
                        help="2-D map method (default pca; tsne needs scikit-learn)")
    parser.add_argument("--test", action="store_true",
                        help="analyse the held-out test set instead of the validation set")
    parser.add_argument("--bs", type=_positive, default=32, metavar="N",
                        help="images per batch (default 32)")
    parser.add_argument("--device", default="cpu", choices=DEVICES,
                        help="where to run the model (default cpu)")
    parser.add_argument("--json", action="store_true", help="print metrics.json to stdout too")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from loupe.engine.core.errors import DatasetError
    from loupe.engine.core.outputs import check_output
    from loupe.engine.data.dataset import prepare_data
    from loupe.engine.evaluation.analysis import analyze
    from loupe.engine.evaluation.analysis_plots import write_report
    from loupe.engine.inference.predict import Predictor

    check_output(args.out, folders=(args.root,), option="--out")
    predictor = Predictor.from_file(args.model, device=args.device)
    for warning in apply_model_defaults(args, args.model):
        print(f"loupe {args.command}: warning: {printable(warning)}", file=sys.stderr)
    prepared = prepare_data(data_spec_from_args(args))
    items = prepared.plan.test if args.test else prepared.plan.valid
    if not items:
        which = "test" if args.test else "validation"
        raise DatasetError(
            f"the {which} set of {args.root} is empty with split {args.split!r}"
            + (" and no --test-fraction; the model was trained without a test set"
               if args.test and not args.test_fraction else
               "; choose a split that leaves images for it")
        )
    analysis = analyze(
        predictor, items, top_k=args.top_losses, cam_method=args.cam_method,
        embedding=args.embedding, batch_size=args.bs,
    )
    written = write_report(analysis, predictor, args.out, opacity=args.opacity)
    if args.json:
        print(json.dumps(json_safe(analysis.to_json()), ensure_ascii=False))
        return 0
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(analysis.metrics.items()))
    print(f"{analysis.count} images: {metrics}")
    for pair in analysis.most_confused[:5]:
        print(f"  {printable(pair.actual)} -> {printable(pair.predicted)}: {pair.count}")
    for skipped in analysis.skipped:
        print(f"skipped (unreadable): {printable(skipped)}", file=sys.stderr)
    print("wrote: " + ", ".join(printable(p) for p in written))
    return 0

