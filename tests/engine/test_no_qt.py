"""loupe.engine must stay GUI-free: importing all of it must not load PySide6 or the desktop.

import-linter's forbidden contract (pyproject.toml) checks the same statically; this test
checks what really gets imported, lazy imports inside functions excepted.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import loupe.engine

ENGINE_DIR = Path(loupe.engine.__file__).parent
QT_IMPORTS = (
    "import PySide6",
    "from PySide6",
    "import loupe.desktop",
    "from loupe.desktop",
    "from loupe import desktop",
)


def _engine_modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages([str(ENGINE_DIR)], prefix="loupe.engine.")
        if m.name != "loupe.engine.__main__"
    ]


def test_engine_has_modules_to_check():
    modules = _engine_modules()
    assert "loupe.engine.core.events" in modules
    assert "loupe.engine.models.weights" in modules


def test_importing_every_engine_module_loads_no_qt():
    modules = _engine_modules()
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] in ('PySide6', 'shiboken6')\n"
        "             or m == 'loupe.desktop' or m.startswith('loupe.desktop.'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"engine imported Qt/desktop modules: {out}"


def test_no_engine_source_mentions_qt_imports():
    offenders = []
    for path in ENGINE_DIR.rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped.startswith(QT_IMPORTS):
                offenders.append(f"{path}: {stripped}")
    assert offenders == []
