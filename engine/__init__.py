"""Loupe's engine: everything that is not Qt, installed as ``loupe.engine``.

Subpackages by stage, each importing only the ones listed before it (import-linter
contracts in pyproject.toml check it): ``core`` <- ``data`` <- ``models`` <-
(``training`` | ``inference``) <- ``evaluation`` <- ``cli``. See docs/architecture.md.

Importing ``loupe.engine`` is cheap on purpose (no torch, no PIL): the desktop imports it
on the UI thread before the first paint, and heavy modules are imported where they are
used. This package never imports PySide6 or ``loupe.desktop``.
"""

__version__ = "0.1.0"
