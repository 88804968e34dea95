"""Fusion style with a palette that follows the system's light/dark setting.

Qt reports the desktop's colour scheme through ``QStyleHints.colorScheme`` (and a signal
when the user flips it). Some platform themes (plain X11, many window managers) still
hand Fusion a light palette in dark mode; in that case we set a dark palette ourselves,
and go back to the platform's palette when the scheme turns light again.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory


def dark_palette() -> QPalette:
    """A readable dark palette (the colours of Qt's own Fusion dark scheme)."""
    palette = QPalette()
    role = QPalette.ColorRole
    colours = {
        role.Window: "#2b2b2b",
        role.WindowText: "#e6e6e6",
        role.Base: "#1e1e1e",
        role.AlternateBase: "#262626",
        role.ToolTipBase: "#3a3a3a",
        role.ToolTipText: "#e6e6e6",
        role.PlaceholderText: "#8c8c8c",
        role.Text: "#e6e6e6",
        role.Button: "#353535",
        role.ButtonText: "#e6e6e6",
        role.BrightText: "#ff6b6b",
        role.Link: "#6cb4ff",
        role.Highlight: "#3d7edb",
        role.HighlightedText: "#ffffff",
        role.Light: "#454545",
        role.Midlight: "#3a3a3a",
        role.Mid: "#2f2f2f",
        role.Dark: "#1a1a1a",
        role.Shadow: "#000000",
    }
    for key, value in colours.items():
        palette.setColor(key, QColor(value))
    disabled = QPalette.ColorGroup.Disabled
    for key in (role.WindowText, role.Text, role.ButtonText):
        palette.setColor(disabled, key, QColor("#7a7a7a"))
    return palette


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def sync_palette(app: QApplication) -> None:
    """Make the application palette agree with the system colour scheme."""
    scheme = QGuiApplication.styleHints().colorScheme()
    standard = app.style().standardPalette()
    if scheme == Qt.ColorScheme.Dark and not is_dark(standard):
        app.setPalette(dark_palette())
    else:
        app.setPalette(standard)


def apply_theme(app: QApplication) -> None:
    """Fusion everywhere (same look on Linux, Windows, macOS) + live scheme changes."""
    if "Fusion" in QStyleFactory.keys():
        app.setStyle("Fusion")
    sync_palette(app)
    QGuiApplication.styleHints().colorSchemeChanged.connect(lambda _scheme: sync_palette(app))
