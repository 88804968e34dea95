"""``loupe-desktop --install-launcher``: put Loupe in the desktop's application menu.

People start Loupe with a double-click, so the installed ``loupe-desktop`` script (next to
the Python that runs this, i.e. inside the virtualenv or the user's install) gets:

- Linux/BSD: a freedesktop ``loupe.desktop`` entry in ``$XDG_DATA_HOME/applications``
  and the icon in the hicolor theme under ``$XDG_DATA_HOME/icons``;
- Windows: a Start-menu shortcut made by PowerShell's ``WScript.Shell`` COM object;
- macOS: a minimal ``~/Applications/Loupe.app`` bundle whose executable is a shell script.

Every file is written atomically, so a re-install never leaves half an entry behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from loupe.engine.core.atomic import atomic_write_bytes, atomic_write_text
from loupe.engine.core.resources import icon_path

APP_ID = "loupe"
APP_NAME = "Loupe"
COMMENT = "Train and inspect image classifiers on your own workstation, offline"


def gui_script() -> Path:
    """The installed ``loupe-desktop`` launcher next to the running interpreter.

    ``sys.executable`` is not resolved: in a virtualenv it is ``.venv/bin/python``, a link
    whose folder (not the target's) holds the scripts.
    """
    bin_dir = Path(sys.executable).parent
    name = "loupe-desktop.exe" if sys.platform == "win32" else "loupe-desktop"
    return (bin_dir / name).absolute()


def _launch_command() -> list[str]:
    script = gui_script()
    if script.exists():
        return [str(script)]
    # No gui-script next to the interpreter (an install without scripts): run the module.
    return [str(Path(sys.executable).absolute()), "-m", "loupe.desktop.app"]


def _desktop_quote(arg: str) -> str:
    """Quote one Exec argument as the Desktop Entry spec requires."""
    if not any(ch in arg for ch in ' \t\n"\'\\><~|&;$*?#()`%'):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    escaped = escaped.replace("$", "\\$").replace("%", "%%")
    return f'"{escaped}"'


def xdg_data_home() -> Path:
    value = os.environ.get("XDG_DATA_HOME", "").strip()
    # The spec: a relative path is invalid and must be ignored.
    if value and Path(value).is_absolute():
        return Path(value)
    return Path.home() / ".local" / "share"


def desktop_entry(exec_args: list[str], icon: Path) -> str:
    """The text of ``loupe.desktop`` (Desktop Entry Specification 1.5)."""
    exec_line = " ".join(_desktop_quote(a) for a in exec_args) + " %f"
    return "\n".join(
        [
            "[Desktop Entry]",
            "Type=Application",
            "Version=1.5",
            f"Name={APP_NAME}",
            "GenericName=Image classifier trainer",
            f"Comment={COMMENT}",
            f"Exec={exec_line}",
            f"TryExec={exec_args[0]}",
            f"Icon={icon}",
            "Terminal=false",
            "StartupNotify=true",
            f"StartupWMClass={APP_ID}",
            "Categories=Graphics;Science;Education;",
            "Keywords=machine learning;deep learning;image;classifier;fastai;",
            "",
        ]
    )


def install_linux() -> list[Path]:
    """Write the icon into the hicolor theme and the .desktop entry; return both paths."""
    data_home = xdg_data_home()
    icon_dest = data_home / "icons" / "hicolor" / "256x256" / "apps" / f"{APP_ID}.png"
    atomic_write_bytes(icon_dest, icon_path().read_bytes())
    entry = data_home / "applications" / f"{APP_ID}.desktop"
    atomic_write_text(entry, desktop_entry(_launch_command(), icon_dest))
    entry.chmod(0o755)  # some file managers only trust executable entries
    _refresh_desktop_database(entry.parent)
    return [entry, icon_dest]


def _refresh_desktop_database(folder: Path) -> None:
    tool = shutil.which("update-desktop-database")
    if tool:
        subprocess.run([tool, str(folder)], check=False, capture_output=True, timeout=30)


def _ps_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def windows_shortcut_script(link: Path, target: Path, args: str, icon: Path) -> str:
    """The PowerShell one-liner that creates a .lnk through WScript.Shell."""
    return (
        f"$s=(New-Object -ComObject WScript.Shell).CreateShortcut({_ps_quote(str(link))});"
        f"$s.TargetPath={_ps_quote(str(target))};"
        f"$s.Arguments={_ps_quote(args)};"
        f"$s.IconLocation={_ps_quote(str(icon))};"
        f"$s.Description={_ps_quote(COMMENT)};"
        "$s.Save()"
    )


def install_windows() -> list[Path]:
    """A Start-menu shortcut (``%APPDATA%/Microsoft/Windows/Start Menu/Programs``)."""
    from PIL import Image

    from loupe.engine.core import paths

    programs = Path(os.environ["APPDATA"]) / "Microsoft" / "Windows" / "Start Menu" / "Programs"
    programs.mkdir(parents=True, exist_ok=True)
    icon = paths.data_dir() / "loupe.ico"
    with Image.open(icon_path()) as img:
        tmp = icon.with_suffix(".ico.tmp")
        img.save(tmp, format="ICO", sizes=[(16, 16), (32, 32), (48, 48), (256, 256)])
        os.replace(tmp, icon)
    command = _launch_command()
    target = Path(command[0])
    args = " ".join(f'"{a}"' for a in command[1:])
    link = programs / f"{APP_NAME}.lnk"
    script = windows_shortcut_script(link, target, args, icon)
    subprocess.run(
        ["powershell", "-NoProfile", "-NonInteractive", "-Command", script],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return [link]


def info_plist(executable: str) -> str:
    from loupe.engine import __version__

    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>CFBundleName</key><string>{APP_NAME}</string>
  <key>CFBundleDisplayName</key><string>{APP_NAME}</string>
  <key>CFBundleIdentifier</key><string>org.loupe.desktop</string>
  <key>CFBundleVersion</key><string>{__version__}</string>
  <key>CFBundleShortVersionString</key><string>{__version__}</string>
  <key>CFBundlePackageType</key><string>APPL</string>
  <key>CFBundleExecutable</key><string>{executable}</string>
  <key>CFBundleIconFile</key><string>loupe.icns</string>
  <key>NSHighResolutionCapable</key><true/>
</dict>
</plist>
"""


def install_macos() -> list[Path]:
    """``~/Applications/Loupe.app``: Info.plist, a launcher script and the icon."""
    import shlex

    from PIL import Image

    contents = Path.home() / "Applications" / f"{APP_NAME}.app" / "Contents"
    script = contents / "MacOS" / APP_NAME
    command = " ".join(shlex.quote(a) for a in _launch_command())
    atomic_write_text(script, f'#!/bin/sh\nexec {command} "$@"\n')
    script.chmod(0o755)
    atomic_write_text(contents / "Info.plist", info_plist(APP_NAME))
    icns = contents / "Resources" / "loupe.icns"
    icns.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(icon_path()) as img:
        tmp = icns.with_suffix(".icns.tmp")
        img.save(tmp, format="ICNS")
        os.replace(tmp, icns)
    return [contents.parent]


def install_launcher() -> list[Path]:
    """Install the launcher for this OS and return what was written."""
    if sys.platform == "win32":
        return install_windows()
    if sys.platform == "darwin":
        return install_macos()
    return install_linux()
