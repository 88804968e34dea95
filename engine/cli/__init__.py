"""The ``loupe`` command line: also the scripting interface (spellings in design.md).

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds
its parser and sets ``func`` to a ``run(args) -> int``. Library code never prints or
exits; only this package does. Human output passes every class name, file name and
message through ``core.text.printable`` (no raw terminal controls); JSON output passes
strings through ``core.text.json_safe`` (file-name bytes that are not UTF-8 as ``\\xNN``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from loupe.engine.core.errors import CancelledError, LoupeError, describe_error
from loupe.engine.core.text import printable

# Sub-command modules under loupe.engine.cli, in the order ``loupe --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "inspect_cmd",
    "train_cmd",
    "lr_find_cmd",
    "evaluate_cmd",
    "weights_cmd",
    "predict_cmd",
    "predict_folder_cmd",
    "analyze_cmd",
    "export_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loupe",
        description="Train and inspect image classifiers on your own workstation, offline.",
    )
    from loupe.engine import __version__

    parser.add_argument("--version", action="version", version=f"loupe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`loupe ... | head`): not an error worth a traceback.
        # Point stdout at devnull so Python's exit-time flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (KeyboardInterrupt, CancelledError):
        print(f"loupe {args.command}: interrupted", file=sys.stderr)
        return 130
    # An OSError is about a file we were told to write or read: say which, no traceback.
    except (LoupeError, OSError) as err:
        message = printable(describe_error(err), keep_newlines=True)
        print(f"loupe {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
