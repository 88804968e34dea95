"""``loupe export MODEL --onnx FILE``: a portable model plus a JSON sidecar, parity-checked.

Writes FILE (ONNX, dynamic batch) and FILE's ``.json`` sidecar (classes, thresholds,
preprocessing), then reports the largest absolute difference between onnxruntime's and
PyTorch's logits; above ``--tolerance`` the export is kept but the exit code is 1.
``--torchscript FILE`` writes a traced TorchScript file as well (optional).
"""

from __future__ import annotations

import argparse
import json

from loupe.engine.cli.predict_cmd import _positive
from loupe.engine.core.text import json_safe, printable


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number like 1e-4, got {text!r}") from err
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive tolerance, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    from loupe.engine.inference.export import DEFAULT_OPSET, DEFAULT_TOLERANCE

    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX (with a parity check) or TorchScript",
        description="Export a .loupe model for use outside Loupe.",
    )
    parser.add_argument("model", metavar="MODEL", help="the .loupe model file")
    parser.add_argument("--onnx", metavar="FILE", help="write an ONNX model (and FILE.json)")
    parser.add_argument("--torchscript", metavar="FILE", help="write a TorchScript file (.pt)")
    parser.add_argument("--check-images", nargs="+", metavar="IMAGE", default=[],
                        help="images for the parity check (default: 4 seeded random images)")
    parser.add_argument("--opset", type=_positive, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--tolerance", type=_tolerance, default=DEFAULT_TOLERANCE,
                        help=f"largest acceptable logit difference (default {DEFAULT_TOLERANCE})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from loupe.engine.core.errors import ConfigError
    from loupe.engine.inference.export import export_onnx, export_torchscript, require_onnx
    from loupe.engine.inference.predict import Predictor

    if not args.onnx and not args.torchscript:
        raise ConfigError("say what to export: --onnx FILE and/or --torchscript FILE")
    _check_outputs(args)
    if args.onnx:
        require_onnx()  # before loading the model: fail fast with the install hint
    predictor = Predictor.from_file(args.model, warm_up=False)
    report: dict = {"model": str(args.model)}
    status = 0
    if args.onnx:
        result = export_onnx(predictor, args.onnx, check_images=args.check_images,
                             opset=args.opset, tolerance=args.tolerance)
        report.update(onnx=str(result.path), sidecar=str(result.sidecar),
                      max_abs_diff=result.max_abs_diff, checked_images=result.checked,
                      parity_ok=result.parity_ok)
        status = 0 if result.parity_ok else 1
    if args.torchscript:
        report["torchscript"] = str(export_torchscript(predictor, args.torchscript))
    if args.json:
        print(json.dumps(json_safe(report)))
        return status
    if args.onnx:
        verdict = "ok" if report["parity_ok"] else f"ABOVE tolerance {args.tolerance:g}"
        print(f"ONNX: {printable(report['onnx'])} (+ {printable(report['sidecar'])})")
        print(f"parity on {report['checked_images']} images: largest |ONNX - PyTorch| logit "
              f"difference {report['max_abs_diff']:.2e} ({verdict})")
    if args.torchscript:
        print(f"TorchScript: {printable(report['torchscript'])}")
    return status


def _check_outputs(args: argparse.Namespace) -> None:
    """No output (the ONNX file, its JSON sidecar, the TorchScript file) may replace the
    model, a check image or another output: a model loads whatever its extension."""
    from pathlib import Path

    from loupe.engine.core.outputs import check_distinct, check_output
    from loupe.engine.inference.export import sidecar_path

    outputs = []
    if args.onnx:
        onnx = Path(args.onnx).expanduser()
        outputs += [("--onnx", onnx), ("the --onnx sidecar", sidecar_path(onnx))]
    if args.torchscript:
        outputs.append(("--torchscript", Path(args.torchscript).expanduser()))
    inputs = [args.model, *args.check_images]
    for option, path in outputs:
        check_output(path, inputs=inputs, option=option)
    check_distinct(outputs)
