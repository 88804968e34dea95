"""Data options shared by every sub-command that reads an image folder.

``inspect`` and ``train`` must read the same options the same way, so both build their
:class:`engine.dataset.DataSpec` here. Overrides saved in the folder's project (from the
desktop) apply by default, so the CLI trains on the labels the user cleaned there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.labels import RULE_SPELLINGS, parse_label_rule
from engine.splits import SPLIT_SPELLINGS, parse_split_rule


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


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Add --label, --split, --seed, --test-fraction, --subset, --group-check, --max-pixels."""
    group = parser.add_argument_group("data options")
    group.add_argument(
        "--label", metavar="RULE", default="parent",
        help=f"how files get their label: {RULE_SPELLINGS} (default: parent)",
    )
    group.add_argument(
        "--split", metavar="SPLIT", default="random:0.2",
        help=f"how files are split: {SPLIT_SPELLINGS} (default: random:0.2)",
    )
    group.add_argument("--seed", type=int, default=42, help="seed of the random split (42)")
    group.add_argument(
        "--test-fraction", type=_fraction, default=0.0, metavar="F",
        help="hold out this fraction as a test set, locked against seed changes (default 0)",
    )
    group.add_argument(
        "--subset", type=_fraction, default=1.0, metavar="F",
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


def data_spec_from_args(args: argparse.Namespace):
    """Build the :class:`engine.dataset.DataSpec` from parsed options (ConfigError if bad)."""
    from engine.dataset import DataSpec
    from engine.imageio import DEFAULT_MAX_PIXELS
    from engine.project import load_project, project_file

    root = Path(args.root).expanduser()
    label = parse_label_rule(args.label)
    split = parse_split_rule(
        args.split,
        seed=args.seed,
        test_fraction=args.test_fraction,
        subset=args.subset,
        group_check=args.group_check,
    )
    overrides = None
    if not args.no_overrides and root.is_dir() and project_file(root).exists():
        overrides = load_project(root)[0].overrides
    max_pixels = args.max_pixels if args.max_pixels is not None else DEFAULT_MAX_PIXELS
    return DataSpec(root, label, split, overrides, max_pixels=max_pixels)
