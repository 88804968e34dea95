"""``loupe predict MODEL IMAGE...``: top-k labels per image, optionally an activation map.

``loupe predict --imagenet IMAGE...`` asks the installed pretrained model itself (1000
ImageNet classes, ``loupe.engine.inference.imagenet``): what transfer learning starts from.

Text output is one line per image; ``--json`` prints one JSON object per line per image:
``{"path", "top": [{"label", "prob"}]}`` plus ``"unknown"`` when ``--unknown-below`` is
set and ``"cam"`` (the overlay's path) when ``--cam`` is given. Text output escapes control
characters (``core.text.printable``); JSON spells file-name bytes that are not UTF-8
``\\xNN`` (``core.text.json_safe``). ``--cam FILE`` with
several images writes FILE-1.png, FILE-2.png, ... in the order the images were given.
An image that cannot be read is reported (``"error"`` in JSON) and the others still run;
the exit code is then 1. A model file that is not a valid bundle stops before any image.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from loupe.engine.core.device import DEVICES
from loupe.engine.core.errors import ConfigError, LoupeError
from loupe.engine.core.text import json_safe, printable


def _probability(text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a probability like 0.6, got {text!r}") from err
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1], got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    from loupe.engine.inference.cam import CAM_METHODS, DEFAULT_METHOD

    parser = subparsers.add_parser(
        "predict",
        help="predict the class of one or more images with a trained model",
        description="Predict images with a .loupe model: top-k labels and probabilities.",
    )
    parser.add_argument("model", metavar="MODEL",
                        help="the .loupe model file (with --imagenet: the first image)")
    parser.add_argument("images", metavar="IMAGE", nargs="*", help="image files")
    parser.add_argument("--imagenet", action="store_true",
                        help="no MODEL: ask the installed pretrained ImageNet model "
                        "(1000 classes) what it sees, before any training")
    parser.add_argument("--topk", type=_positive, default=3, metavar="K",
                        help="how many classes to show per image (default 3)")
    parser.add_argument("--cam", metavar="FILE",
                        help="write the activation-map overlay (PNG/JPEG) to FILE")
    parser.add_argument("--cam-method", choices=tuple(CAM_METHODS), default=DEFAULT_METHOD,
                        help=f"activation-map method (default {DEFAULT_METHOD})")
    parser.add_argument("--cam-class", metavar="LABEL",
                        help="draw the map for this class instead of the predicted one")
    parser.add_argument("--opacity", type=_probability, default=0.5, metavar="A",
                        help="overlay opacity 0..1 (default 0.5)")
    parser.add_argument("--unknown-below", type=_probability, metavar="P",
                        help='answer "unknown" when the top probability is below P')
    parser.add_argument("--device", default="cpu", choices=DEVICES,
                        help="where to run the model (default cpu)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.set_defaults(func=run)


def cam_file_for(base: Path, index: int, count: int) -> Path:
    """``--cam FILE`` for image ``index`` (0-based) of ``count``: FILE itself, or FILE-N."""
    if count == 1:
        return base
    return base.with_name(f"{base.stem}-{index + 1}{base.suffix or '.png'}")


def run(args: argparse.Namespace) -> int:
    if args.imagenet:
        args.images = [args.model, *args.images]
    elif not args.images:
        raise ConfigError(
            f"give at least one IMAGE after the model {args.model} "
            "(or use --imagenet IMAGE... to ask the pretrained ImageNet model)"
        )
    if args.cam:
        _check_cam_files(args)
    predictor = _load_predictor(args)
    failures = 0
    for index, image in enumerate(args.images):
        try:
            obj = _predict_one(predictor, Path(image), index, args)
        except LoupeError as err:
            failures += 1
            if args.json:
                print(json.dumps(json_safe({"path": image, "error": str(err)}),
                                 ensure_ascii=False))
            else:
                print(_error_line(image, err), file=sys.stderr)
            continue
        print(json.dumps(json_safe(obj), ensure_ascii=False) if args.json else _line(obj))
    return 1 if failures else 0


def _load_predictor(args: argparse.Namespace):
    from loupe.engine.inference.predict import Predictor

    if args.imagenet:
        from loupe.engine.inference.imagenet import imagenet_predictor

        return imagenet_predictor(device=args.device, unknown_below=args.unknown_below)
    return Predictor.from_file(args.model, unknown_below=args.unknown_below, device=args.device)


def _check_cam_files(args: argparse.Namespace) -> None:
    """Never let an overlay (FILE or FILE-N) overwrite the model or an image being predicted."""
    from loupe.engine.core.outputs import check_output

    inputs = [*args.images, None if args.imagenet else args.model]
    base = Path(args.cam).expanduser()
    for index in range(len(args.images)):
        out = cam_file_for(base, index, len(args.images))
        check_output(out, inputs=inputs, option="--cam")


def _predict_one(predictor, image: Path, index: int, args: argparse.Namespace) -> dict:
    include_unknown = args.unknown_below is not None or predictor.multi_label
    if not args.cam:
        prediction = predictor.predict(image, topk=args.topk)
        return prediction.to_json(include_unknown=include_unknown)
    from loupe.engine.inference.cam import compute_cam, save_overlay

    result = compute_cam(
        predictor, image, method=args.cam_method, target=args.cam_class, topk=args.topk
    )
    out = cam_file_for(Path(args.cam).expanduser(), index, len(args.images))
    save_overlay(result, out, opacity=args.opacity)
    obj = result.prediction.to_json(include_unknown=include_unknown)
    obj["cam"] = str(out)
    obj["cam_class"] = result.label
    return obj


def _error_line(image: str, err: LoupeError) -> str:
    """``IMAGE: error: reason`` — the image named once, even when the reason names it too."""
    message = str(err)
    if message.startswith(f"{image}: "):
        message = message[len(image) + 2:]
    return f"{printable(image)}: error: {printable(message, keep_newlines=True)}"


def _line(obj: dict) -> str:
    """``path: label 93.1%, other 5.0%`` (+ unknown / activation-map notes)."""
    tops = ", ".join(f"{printable(t['label'])} {t['prob']:.1%}" for t in obj["top"])
    text = f"{printable(obj['path'])}: {tops or '(no label)'}"
    if obj.get("unknown"):
        text += "  -> unknown (below the --unknown-below threshold)"
    if "cam" in obj:
        text += f"  [map of {printable(obj['cam_class'])}: {printable(obj['cam'])}]"
    return text
