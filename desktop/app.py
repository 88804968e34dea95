"""``loupe-desktop``: start the window fast, or install a launcher.

The order of things in :func:`main` matters:

1. parse arguments (``--install-launcher`` and ``--version`` never need a display);
2. on Linux, check the X11 client libraries Qt's xcb plugin links against *before* Qt
   tries to load it, so a machine that lacks them gets "install libxcb-icccm4 ..." instead
   of "could not load the Qt platform plugin xcb";
3. high-DPI policy, then ``QApplication``, style and palette, logging and excepthook;
4. show the window, and only then import torch and the heavy engine modules on a worker
   thread, so the first paint does not wait for them.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import logging.handlers
import os
import shutil
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

log = logging.getLogger("loupe")

# Every shared library Qt's xcb platform plugin (libqxcb + libQt6XcbQpa) needs, with the
# Debian/Ubuntu package that provides it. Names are what ctypes.util.find_library takes.
XCB_LIBRARIES: tuple[tuple[str, str, str], ...] = (
    ("xcb", "libxcb.so.1", "libxcb1"),
    ("X11-xcb", "libX11-xcb.so.1", "libx11-xcb1"),
    ("xcb-cursor", "libxcb-cursor.so.0", "libxcb-cursor0"),
    ("xcb-icccm", "libxcb-icccm.so.4", "libxcb-icccm4"),
    ("xcb-keysyms", "libxcb-keysyms.so.1", "libxcb-keysyms1"),
    ("xcb-image", "libxcb-image.so.0", "libxcb-image0"),
    ("xcb-render-util", "libxcb-render-util.so.0", "libxcb-render-util0"),
    ("xcb-render", "libxcb-render.so.0", "libxcb-render0"),
    ("xcb-randr", "libxcb-randr.so.0", "libxcb-randr0"),
    ("xcb-shape", "libxcb-shape.so.0", "libxcb-shape0"),
    ("xcb-shm", "libxcb-shm.so.0", "libxcb-shm0"),
    ("xcb-sync", "libxcb-sync.so.1", "libxcb-sync1"),
    ("xcb-xfixes", "libxcb-xfixes.so.0", "libxcb-xfixes0"),
    ("xcb-xkb", "libxcb-xkb.so.1", "libxcb-xkb1"),
    ("xcb-util", "libxcb-util.so.1", "libxcb-util1"),
    ("xkbcommon", "libxkbcommon.so.0", "libxkbcommon0"),
    ("xkbcommon-x11", "libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
)

# Platforms that do not use the X11 libraries at all.
_NON_XCB_PLATFORMS = ("offscreen", "minimal", "wayland", "eglfs", "linuxfb", "vnc", "vkkhr")


def _library_loads(name: str, soname: str) -> bool:
    """True if the dynamic loader can find and open the library."""
    if ctypes.util.find_library(name) is None:
        return False
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing_xcb_packages(
    *,
    platform: str | None = None,
    environ: dict[str, str] | None = None,
    loads: Callable[[str, str], bool] = _library_loads,
) -> list[tuple[str, str]]:
    """The (library, Debian package) pairs Qt's xcb plugin needs but this machine lacks.

    Empty when not on Linux or when Qt will not use xcb (offscreen, wayland session).
    """
    env = os.environ if environ is None else environ
    if (platform or sys.platform) != "linux":
        return []
    chosen = env.get("QT_QPA_PLATFORM", "").strip().lower()
    if chosen:
        first = chosen.split(";")[0].split(":")[0]
        if first.startswith(_NON_XCB_PLATFORMS):
            return []
    elif env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE") == "wayland":
        return []  # Qt 6 picks its wayland plugin in a wayland session
    return [(soname, pkg) for name, soname, pkg in XCB_LIBRARIES if not loads(name, soname)]


def xcb_help_text(missing: Sequence[tuple[str, str]]) -> str:
    """What to tell the user, with the exact command that fixes it."""
    libs = ", ".join(soname for soname, _ in missing)
    packages = " ".join(dict.fromkeys(pkg for _, pkg in missing))
    return (
        "Loupe cannot open its window: Qt's X11 (xcb) platform needs libraries this "
        f"machine lacks: {libs}.\n"
        f"On Debian/Ubuntu install them with:\n    sudo apt install {packages}\n"
        "(Fedora: dnf install xcb-util-cursor xcb-util-wm xcb-util-keysyms; "
        "Arch: pacman -S xcb-util-cursor xcb-util-wm xcb-util-keysyms)"
    )


def _show_without_qt(text: str) -> None:
    """Best effort to show ``text`` when Qt cannot: a launcher double-click has no
    terminal, so try the desktop's own dialog tools (without waiting for them)."""
    for tool, args in (
        ("zenity", ["--error", "--no-wrap", f"--text={text}"]),
        ("kdialog", ["--error", text]),
        ("xmessage", ["-center", text]),
    ):
        exe = shutil.which(tool)
        if exe:
            try:
                subprocess.Popen([exe, *args], start_new_session=True)
            except OSError:
                continue
            return


def setup_logging() -> Path:
    """Log to ``<log dir>/loupe.log`` (rotated), which the excepthook also writes to."""
    from loupe.engine.core import paths

    log_file = paths.log_dir() / "loupe.log"
    root = logging.getLogger()
    if not any(getattr(h, "baseFilename", None) == str(log_file) for h in root.handlers):
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=1_000_000, backupCount=3, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    return log_file


def install_excepthook(show_dialog: bool = True) -> None:
    """Unhandled errors go to the log file and to a dialog, never silently to stderr.

    Thread exceptions are logged; worker threads report theirs through signals already.
    """

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        text = "".join(traceback.format_exception(kind, exc, tb))
        log.error("unhandled exception:\n%s", text)
        if show_dialog:
            _exception_dialog(exc, text)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        text = "".join(
            traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
        )
        log.error("unhandled exception in thread %s:\n%s", args.thread, text)

    sys.excepthook = hook
    threading.excepthook = thread_hook


def _exception_dialog(exc: BaseException, details: str) -> None:
    from PySide6.QtCore import QThread
    from PySide6.QtWidgets import QApplication, QMessageBox

    app = QApplication.instance()
    if app is None or QThread.currentThread() is not app.thread():
        return
    from loupe.engine.core import paths

    box = QMessageBox(QMessageBox.Icon.Critical, "Loupe: unexpected error", str(exc) or repr(exc))
    box.setInformativeText(
        "Loupe hit a problem it did not expect. Your images were not changed. "
        f"The details are in {paths.log_dir() / 'loupe.log'}."
    )
    box.setDetailedText(details)
    box.exec()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from loupe.engine import __version__

    parser = argparse.ArgumentParser(
        prog="loupe-desktop", description="Loupe: train and inspect image classifiers."
    )
    parser.add_argument("--sample", action="store_true", help="open the bundled sample")
    parser.add_argument(
        "--install-launcher",
        action="store_true",
        help="add Loupe to the desktop's application menu and exit",
    )
    parser.add_argument("--version", action="version", version=f"loupe {__version__}")
    parser.add_argument("folder", nargs="?", type=Path, help="image folder to open")
    return parser.parse_args(argv)


def use_loupe_home_settings(environ: Mapping[str, str] | None = None) -> Path | None:
    """Keep QSettings under ``LOUPE_HOME/config`` when LOUPE_HOME is set.

    LOUPE_HOME is how tests, scripts (screenshots, benchmarks) and portable installs keep
    Loupe's state apart; without this the window state still went to the user's
    ``~/.config/Loupe``, so an offscreen screenshot run left a geometry the next real
    start could not restore ("settings were damaged"). Returns the folder, or None.
    """
    from PySide6.QtCore import QSettings

    home = (os.environ if environ is None else environ).get("LOUPE_HOME")
    if not home:
        return None
    folder = Path(home) / "config"
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
    return folder


def create_application(argv: Sequence[str]):  # -> QApplication
    """High-DPI policy, QApplication, name, icon, style and palette."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QIcon
    from PySide6.QtWidgets import QApplication

    from loupe.desktop.theme import apply_theme
    from loupe.engine.core.resources import icon_path

    existing = QApplication.instance()
    if existing is not None:
        return existing
    # Qt 6 scales by the screen's factor; pass fractional factors (125 %, 150 %) through
    # instead of rounding them, so text and icons stay crisp and the right size.
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
        Qt.HighDpiScaleFactorRoundingPolicy.PassThrough
    )
    app = QApplication(list(argv))
    app.setApplicationName("Loupe")
    app.setOrganizationName("Loupe")
    app.setApplicationDisplayName("Loupe")
    app.setDesktopFileName("loupe")
    use_loupe_home_settings()
    if icon_path().is_file():
        app.setWindowIcon(QIcon(str(icon_path())))
    apply_theme(app)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``loupe-desktop`` gui-script."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.install_launcher:
        from loupe.desktop.launcher import install_launcher

        for path in install_launcher():
            if sys.stdout is not None:  # None under pythonw (Windows gui-scripts)
                print(f"wrote {path}")
        return 0
    missing = missing_xcb_packages()
    if missing:
        text = xcb_help_text(missing)
        if sys.stderr is not None:
            print(text, file=sys.stderr)
        _show_without_qt(text)
        return 1
    setup_logging()
    install_excepthook()
    app = create_application(sys.argv[:1])
    from loupe.desktop.context import AppContext
    from loupe.desktop.main_window import MainWindow

    context = AppContext()
    window = MainWindow(context)
    window.show()
    window.after_first_paint(sample=args.sample, folder=args.folder)
    code = app.exec()
    context.runner.shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
