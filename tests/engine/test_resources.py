"""Bundled resources: found from the checkout and from an installed wheel; the sample set.

The wheel test builds the real wheel from a copy of the project (so no build/ or
egg-info lands in the checkout), checks that it claims no top-level name but ``loupe``,
unzips it as an installer would, and imports Loupe from there in a subprocess with ``-S``
(no site-packages, so neither the editable install nor the checkout can answer) and a
working directory outside the checkout.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from PIL import Image

from loupe.engine.core import resources

REPO = Path(__file__).resolve().parents[2]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
PETS_REGEX = re.compile(r"^(.+)_\d+\.\w+$")


def _sample_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def test_resources_found_from_checkout():
    assert resources.resources_root() == REPO / "resources"  # editable: the checkout's folder
    assert resources.sample_dir() == REPO / "resources" / "samples"
    assert len(_sample_images(resources.sample_dir())) >= 300
    with Image.open(resources.icon_path()) as icon:
        assert icon.size == (256, 256)


def test_sample_folder_is_labelled_by_the_upper_rule():
    files = [p for p in resources.sample_dir().iterdir()]
    assert files, "the bundled sample is empty"
    # Nothing but images, nothing hidden: the scanner would list anything else.
    assert all(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in files)
    assert not [p for p in files if p.name.startswith(".")]
    upper = [p for p in files if p.name[0].isupper()]
    lower = [p for p in files if p.name[0].islower()]
    assert len(upper) + len(lower) == len(files), "every name must start with a letter"
    assert len(upper) >= 200 and len(lower) >= 200
    assert 2 / 3 <= len(upper) / len(lower) <= 3 / 2, "classes should be roughly balanced"
    assert all(PETS_REGEX.match(p.name) for p in files), "Pets layout: <name>_<n>.<ext>"
    assert sum(p.stat().st_size for p in files) <= 5 * 1024 * 1024


def test_sample_images_are_small_real_images():
    for path in _sample_images(resources.sample_dir()):
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            assert max(img.size) <= 160, f"{path.name} is {img.size}"
            assert min(img.size) >= 8, f"{path.name} is {img.size}"


def _copy_project(dest: Path) -> Path:
    """What a source distribution holds; build artefacts of the checkout are left out."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in ("engine", "desktop", "resources"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for extra in ("LICENSE", "LICENSE.txt", "MANIFEST.in"):
        if (REPO / extra).exists():
            shutil.copy2(REPO / extra, dest / extra)
    return dest


_PROBE = """
import json, loupe.engine, loupe.engine.core.resources as r
root, samples = r.resources_root(), r.sample_dir()
print(json.dumps({
    "engine": loupe.engine.__file__,
    "root": str(root),
    "samples": str(samples),
    "images": sorted(p.name for p in samples.iterdir() if p.suffix == ".png"),
    "icon": r.icon_path().is_file(),
}))
"""


def test_resources_found_from_installed_wheel(tmp_path):
    src = _copy_project(tmp_path / "src")
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(dist), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("loupe-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        top_level = {name.split("/", 1)[0] for name in zf.namelist()}
        dist_info = next(name for name in top_level if name.endswith(".dist-info"))
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
        zf.extractall(site)
    # Only Loupe's own name in site-packages: no generic engine/desktop/resources.
    assert top_level == {"loupe", dist_info}
    assert not (site / "loupe" / "__init__.py").exists()  # a namespace: nothing to shadow
    assert "loupe = loupe.engine.cli:main" in entry_points
    assert "loupe-desktop = loupe.desktop.app:main" in entry_points
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = subprocess.run(
        [sys.executable, "-S", "-c", _PROBE],
        cwd=elsewhere, env={"PYTHONPATH": str(site), "PATH": ""},
        capture_output=True, text=True, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert Path(found["engine"]) == site / "loupe" / "engine" / "__init__.py"
    assert Path(found["root"]) == site / "loupe" / "resources"
    assert Path(found["samples"]) == site / "loupe" / "resources" / "samples"
    checkout = sorted(p.name for p in _sample_images(REPO / "resources" / "samples"))
    assert found["images"] == checkout
    assert found["icon"] is True
