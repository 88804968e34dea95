"""--install-launcher: a valid freedesktop entry with Loupe's icon, atomically written."""

from __future__ import annotations

import configparser
import os
import plistlib
import shlex
import stat
import sys
from pathlib import Path

import pytest

from loupe.desktop import launcher
from loupe.desktop.app import main
from loupe.engine.core.resources import icon_path


def _read_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive in desktop entries
    parser.read_string(path.read_text(encoding="utf-8"))
    assert parser.sections() == ["Desktop Entry"]
    return dict(parser["Desktop Entry"])


@pytest.mark.skipif(sys.platform != "linux", reason="freedesktop entries are for Linux")
def test_install_launcher_writes_a_valid_desktop_entry(tmp_path, monkeypatch, capsys):
    data_home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    monkeypatch.setattr(launcher, "_refresh_desktop_database", lambda folder: None)
    assert main(["--install-launcher"]) == 0
    entry_path = data_home / "applications" / "loupe.desktop"
    assert f"wrote {entry_path}" in capsys.readouterr().out
    entry = _read_entry(entry_path)
    assert entry["Type"] == "Application"
    assert entry["Name"] == "Loupe"
    assert entry["Terminal"] == "false"
    assert entry["Categories"].endswith(";")
    exec_args = shlex.split(entry["Exec"])
    assert exec_args[-1] == "%f"
    program = Path(exec_args[0])
    assert program.is_absolute() and program.parent == Path(sys.executable).parent.absolute()
    assert os.access(program, os.X_OK) or exec_args[1:3] == ["-m", "loupe.desktop.app"]
    icon = Path(entry["Icon"])
    assert icon.parent == data_home / "icons" / "hicolor" / "256x256" / "apps"
    assert icon.read_bytes() == icon_path().read_bytes()
    assert entry_path.stat().st_mode & stat.S_IXUSR
    leftovers = [p for p in entry_path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_relative_xdg_data_home_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert launcher.xdg_data_home() == tmp_path / ".local" / "share"


def test_exec_arguments_with_spaces_are_quoted():
    text = launcher.desktop_entry(["/opt/my apps/bin/loupe-desktop"], Path("/icons/loupe.png"))
    exec_line = next(line for line in text.splitlines() if line.startswith("Exec="))
    assert exec_line == 'Exec="/opt/my apps/bin/loupe-desktop" %f'


def test_windows_shortcut_script_quotes_for_powershell():
    script = launcher.windows_shortcut_script(
        Path("C:/Users/o'neil/Loupe.lnk"), Path("C:/venv/Scripts/loupe-desktop.exe"), "",
        Path("C:/loupe.ico"),
    )
    assert "CreateShortcut('C:/Users/o''neil/Loupe.lnk')" in script.replace("\\", "/")
    assert script.endswith("$s.Save()")


def test_macos_info_plist_is_valid():
    info = plistlib.loads(launcher.info_plist("Loupe").encode("utf-8"))
    assert info["CFBundleExecutable"] == "Loupe"
    assert info["CFBundlePackageType"] == "APPL"
    assert info["NSHighResolutionCapable"] is True
