"""How Loupe installs and imports: one ``loupe`` name, no generic top-level names, light imports.

The wheel itself (its top-level names, entry points, resources) is checked by
tests/engine/test_resources.py, which builds it once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {"loupe.engine": "engine", "loupe.desktop": "desktop", "loupe.resources": "resources"}


def _run(args: list[str], *, cwd: Path, path: Path | None = None):
    """``python ARGS`` in ``cwd``; ``path`` goes first on sys.path (as PYTHONPATH)."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    env.pop("PYTHONPATH", None)
    if path is not None:
        env["PYTHONPATH"] = str(path)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=120,
    )


def test_pyproject_lists_every_package_folder():
    """setuptools cannot discover packages through package-dir renames: the list is by
    hand, so a new subpackage missing from it would silently be left out of the wheel."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = config["tool"]["setuptools"]
    assert setuptools["package-dir"] == FOLDERS
    on_disk = {
        ".".join([name, *init.parent.relative_to(REPO / folder).parts])
        for name, folder in FOLDERS.items()
        for init in (REPO / folder).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert sorted(setuptools["packages"]) == sorted(on_disk)


def _shadowing_packages(root: Path) -> Path:
    """Someone else's ``engine``, ``desktop`` and ``resources``, first on sys.path."""
    for name in ("engine", "desktop", "resources"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(
            f"raise ImportError('this is another project\\'s {name!r}, not Loupe\\'s')\n"
        )
    return root


def test_foreign_engine_desktop_resources_packages_do_not_break_loupe(tmp_path):
    shadow = _shadowing_packages(tmp_path / "shadow")
    help_run = _run(["-m", "loupe.engine", "--help"], cwd=shadow, path=shadow)
    assert help_run.returncode == 0, help_run.stderr
    assert "usage: loupe" in help_run.stdout
    probe = _run(
        ["-c", "import sys, loupe.engine.core.resources as r, loupe.desktop.app\n"
               "assert r.sample_dir().is_dir() and r.icon_path().is_file()\n"
               "print(sorted(m for m in ('engine', 'desktop', 'resources') if m in sys.modules))"],
        cwd=shadow, path=shadow,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"


def test_training_package_and_config_import_without_torch(tmp_path):
    """The desktop builds a TrainConfig on the UI thread before torch is loaded."""
    code = (
        "import sys\n"
        "import loupe.engine.training.config\n"
        "import loupe.engine.training\n"
        "from loupe.engine.training import TrainConfig\n"
        "TrainConfig(arch='resnet18')\n"
        "print('torch' in sys.modules)\n"
    )
    run = _run(["-c", code], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


def test_training_functions_are_not_shadowed_by_modules(tmp_path):
    """lr_find and evaluate are functions of ``loupe.engine.training``, also after every
    training module has been imported (their modules are lr_finder and scoring)."""
    code = (
        "import importlib, pkgutil, loupe.engine.training as t\n"
        "for m in pkgutil.iter_modules(t.__path__):\n"
        "    importlib.import_module(f'loupe.engine.training.{m.name}')\n"
        "from loupe.engine.training import evaluate, lr_find, resume, train\n"
        "print(' '.join(f.__module__ for f in (lr_find, evaluate, train, resume)))\n"
    )
    run = _run(["-c", code], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [
        "loupe.engine.training.lr_finder",
        "loupe.engine.training.scoring",
        "loupe.engine.training.trainer",
        "loupe.engine.training.trainer",
    ]
