"""loupe.desktop.app: the xcb-libraries check, --version, the excepthook and its log file."""

from __future__ import annotations

import ctypes.util
import logging
import sys
from pathlib import Path

import pytest

from loupe.desktop import app as app_module
from loupe.engine import __version__
from loupe.engine.core import paths


def test_missing_xcb_libraries_are_named_with_their_debian_packages(monkeypatch):
    present = {"xcb", "X11-xcb", "xcb-cursor", "xcb-image"}
    monkeypatch.setattr(
        ctypes.util, "find_library", lambda name: f"lib{name}.so" if name in present else None
    )
    monkeypatch.setattr(ctypes, "CDLL", lambda soname: object())
    missing = app_module.missing_xcb_packages(platform="linux", environ={"DISPLAY": ":0"})
    packages = [pkg for _, pkg in missing]
    assert "libxcb-icccm4" in packages and "libxcb-keysyms1" in packages
    assert "libxcb-cursor0" not in packages and "libxcb1" not in packages
    text = app_module.xcb_help_text(missing)
    assert "sudo apt install" in text and "libxcb-icccm4" in text
    assert "libxcb-icccm.so.4" in text


def test_a_library_that_is_found_but_does_not_load_counts_as_missing(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: f"lib{name}.so")

    def cdll(soname):
        if soname == "libxcb-cursor.so.0":
            raise OSError("wrong ELF class")
        return object()

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    missing = app_module.missing_xcb_packages(platform="linux", environ={})
    assert missing == [("libxcb-cursor.so.0", "libxcb-cursor0")]


@pytest.mark.parametrize(
    ("platform", "environ"),
    [
        ("linux", {"QT_QPA_PLATFORM": "offscreen"}),
        ("linux", {"QT_QPA_PLATFORM": "wayland"}),
        ("linux", {"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"}),
        ("win32", {}),
        ("darwin", {}),
    ],
)
def test_no_xcb_check_where_qt_does_not_use_xcb(monkeypatch, platform, environ):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert app_module.missing_xcb_packages(platform=platform, environ=environ) == []


def test_main_exits_1_and_prints_the_packages_before_creating_qt(monkeypatch, capsys):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(app_module, "_show_without_qt", lambda text: None)

    def no_qt(argv):
        raise AssertionError("QApplication must not be created without the xcb libraries")

    monkeypatch.setattr(app_module, "create_application", no_qt)
    assert app_module.main([]) == 1
    err = capsys.readouterr().err
    assert "libxcb-cursor0" in err and "libxcb-icccm4" in err and "libxcb-keysyms1" in err


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        app_module.main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_excepthook_logs_to_the_log_dir_and_shows_a_dialog(monkeypatch, qapp, messages):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    import threading

    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # restored after the test
    monkeypatch.setattr(root, "level", root.level)
    log_file = app_module.setup_logging()
    assert log_file.parent == paths.log_dir()
    handler = next(h for h in root.handlers if getattr(h, "baseFilename", "") == str(log_file))
    app_module.install_excepthook()
    try:
        raise ValueError("boom in a slot")
    except ValueError:
        sys.excepthook(*sys.exc_info())
    handler.flush()
    text = log_file.read_text(encoding="utf-8")
    assert "boom in a slot" in text and "Traceback" in text
    assert ("exec", "Loupe: unexpected error", "boom in a slot") in messages.records
    handler.close()


def test_window_settings_live_under_loupe_home(tmp_path, qapp):
    # Scripts and tests isolate Loupe with LOUPE_HOME; the window state went to the user's
    # ~/.config/Loupe all the same, so an offscreen screenshot run left a geometry that
    # the next real start reported as "settings were damaged".
    from PySide6.QtCore import QSettings

    folder = app_module.use_loupe_home_settings({"LOUPE_HOME": str(tmp_path)})
    assert folder == tmp_path / "config"
    assert Path(QSettings().fileName()).is_relative_to(tmp_path / "config")
    assert app_module.use_loupe_home_settings({}) is None
