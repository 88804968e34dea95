"""Loupe's engine: everything that is not Qt.

Importing ``engine`` is cheap on purpose (no torch, no PIL): the desktop imports it on
the UI thread before the first paint, and heavy modules are imported where they are used.
This package never imports PySide6 or ``desktop`` (tests/engine/test_no_qt.py enforces it).
"""

__version__ = "0.1.0"
