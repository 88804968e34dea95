"""Data options shared by every sub-command that reads an image folder.

``inspect`` and ``train`` must read the same options the same way, so both build their
:class:`loupe.engine.data.dataset.DataSpec` here. Overrides saved in the folder's project (from the
desktop) apply by default, so the CLI trains on the labels the user cleaned there.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loupe.engine.core.errors import ConfigError, LoupeError
from loupe.engine.core.events import CancelToken
from loupe.engine.core.text import printable
from loupe.engine.data.labels import RULE_SPELLINGS, parse_label_rule
from loupe.engine.data.splits import SPLIT_SPELLINGS, parse_split_rule


def _fraction(text: str) -> float:
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected a number like 0.1 or 10%, got {text!r}"
        ) from err


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from err
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


DATA_DEFAULTS = {"label": "parent", "split": "random:0.2", "seed": 42,
                 "test_fraction": 0.0, "subset": 1.0}


def add_data_options(parser: argparse.ArgumentParser, *, model_defaults: bool = False) -> None:
    """Add --label, --split, --seed, --test-fraction, --subset, --group-check, --max-pixels.

    With ``model_defaults`` (evaluate, analyze) the label and split options left out are
    taken from the model (:func:`apply_model_defaults`): scoring with another split or seed
    than training used would put training images in the "validation" set and report a
    flattering, wrong accuracy.
    """
    def default(key: str):
        return None if model_defaults else DATA_DEFAULTS[key]

    def shown(key: str) -> str:
        return "as the model was trained" if model_defaults else str(DATA_DEFAULTS[key])

    group = parser.add_argument_group("data options")
    group.add_argument(
        "--label", metavar="RULE", default=default("label"),
        help=f"how files get their label: {RULE_SPELLINGS} (default: {shown('label')})",
    )
    group.add_argument(
        "--split", metavar="SPLIT", default=default("split"),
        help=f"how files are split: {SPLIT_SPELLINGS} (default: {shown('split')})",
    )
    group.add_argument("--seed", type=int, default=default("seed"),
                       help=f"seed of the random split (default: {shown('seed')})")
    group.add_argument(
        "--test-fraction", type=_fraction, default=default("test_fraction"), metavar="F",
        help="hold out this fraction as a test set, locked against seed changes "
        f"(default: {shown('test_fraction')})",
    )
    group.add_argument(
        "--subset", type=_fraction, default=default("subset"), metavar="F",
        help="keep this fraction of each class for a quick first experiment (default 1)",
    )
    group.add_argument(
        "--group-check", metavar="REGEX", default="",
        help="warn when a group (the regex's capture group on the path) is in two sets",
    )
    group.add_argument(
        "--max-pixels", type=_positive_int, default=None, metavar="N",
        help="reject images larger than N pixels (default: Pillow's safety limit)",
    )
    group.add_argument(
        "--no-overrides", action="store_true",
        help="ignore per-file corrections saved in this folder's project",
    )


def apply_model_defaults(args: argparse.Namespace, model: str | Path) -> list[str]:
    """Fill the data options the user left out with those the model was trained with.

    Returns a warning for each option the user gave that differs from training: the
    "validation" images may then include images the model trained on.

    The bundle records the label rule, split and seed; the run folder, when it is still on
    this machine, also has the test fraction and the resolved CSV path. Reads only the
    bundle's header, so a bad model file is reported before the folder is scanned.
    """
    import json

    from loupe.engine.data.labels import LabelRule
    from loupe.engine.data.splits import SplitRule
    from loupe.engine.models.bundle import read_bundle_meta

    training = dict(read_bundle_meta(model).training or {})
    recorded: dict[str, object] = {
        "label": training.get("label_rule"), "split": training.get("split_rule"),
        "seed": training.get("seed"),
    }
    data_file = Path(str(training.get("run_dir", ""))) / "data.json"
    if training.get("run_dir") and data_file.is_file():
        try:
            data = json.loads(data_file.read_text(encoding="utf-8"))
            split = SplitRule.from_json(data["split"])
            recorded.update(label=LabelRule.from_json(data["label"]).spec, split=split.spec,
                            seed=split.seed, test_fraction=split.test_fraction)
        except (OSError, ValueError, KeyError, TypeError, LoupeError):
            pass  # the bundle's own record is enough
    warnings = []
    for key, fallback in DATA_DEFAULTS.items():
        given, value = getattr(args, key, None), recorded.get(key) if key != "subset" else None
        if given is None:
            setattr(args, key, fallback if value is None else value)
        elif value is not None and given != value:
            option = "--" + key.replace("_", "-")
            warnings.append(
                f"{option} {given} differs from the {value} {model} was trained with: "
                "the images scored may include images it trained on"
            )
    trained_test = recorded.get("test_fraction")
    if getattr(args, "test", False) and trained_test is not None \
            and args.test_fraction != trained_test:
        raise ConfigError(
            f"{model} was trained with --test-fraction {trained_test:g}; a test set of "
            f"{args.test_fraction:g} would hold images it trained on; leave --test-fraction out"
        )
    return warnings


def data_spec_from_args(args: argparse.Namespace):
    """Build the :class:`engine.data.dataset.DataSpec` from parsed options (ConfigError if bad)."""
    from loupe.engine.core.outputs import check_home_outside
    from loupe.engine.data.dataset import DataSpec
    from loupe.engine.data.imageio import DEFAULT_MAX_PIXELS
    from loupe.engine.data.project import load_project, project_file

    root = Path(args.root).expanduser()
    label = parse_label_rule(args.label)
    split = parse_split_rule(
        args.split,
        seed=args.seed,
        test_fraction=args.test_fraction,
        subset=args.subset,
        group_check=args.group_check,
    )
    check_home_outside(root)  # before anything creates Loupe's folders there
    overrides = None
    if not args.no_overrides and root.is_dir() and project_file(root).exists():
        project, warnings = load_project(root)
        overrides = project.overrides
        for warning in warnings:  # a damaged project file is said, not silently ignored
            print(f"loupe {getattr(args, 'command', '')}: warning: {printable(warning)}",
                  file=sys.stderr)
    max_pixels = args.max_pixels if args.max_pixels is not None else DEFAULT_MAX_PIXELS
    return DataSpec(root, label, split, overrides, max_pixels=max_pixels)


@contextmanager
def sigint_cancels() -> Iterator[CancelToken]:
    """Turn the first Ctrl+C into a cancel request, so long work stops cleanly.

    Without this, SIGINT raises KeyboardInterrupt wherever Python happens to be (inside a
    checkpoint write, a worker join...), and the run is recorded as failed. With it, the
    engine sees a cancelled token at its next batch, keeps its checkpoint and raises
    CancelledError. A second Ctrl+C still interrupts at once, for a user who cannot wait.
    """
    token = CancelToken()
    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield token  # not ours to handle (worker thread, or launched with SIGINT ignored)
        return

    def _handler(signum: int, frame: object) -> None:
        if token.cancelled:
            raise KeyboardInterrupt
        token.cancel()

    previous = signal.signal(signal.SIGINT, _handler)
    try:
        yield token
    finally:
        signal.signal(signal.SIGINT, previous)
