"""Regenerate the fine-tuning benchmark's image folders from Debian's ``openclipart-png``.

Usage::

    cd /tmp && apt-get download openclipart-png
    python scripts/make_bench_sets.py /tmp/openclipart-png_*.deb [--out /tmp/loupe-bench-sets]

Writes two folders under ``--out`` (outside the repository: they are benchmark inputs,
not shipped), both labelled by their parent folder (label rule ``parent``):

- ``clipart7/``: seven openclipart categories, up to ``--per-class`` (100) images each.
  Categories with at least ~100 distinct images were picked: the brief's plants and
  buildings have only 66 and 68 in the package, so office and geography stand in.
- ``people_vehicles/``: ``people`` vs ``transportation``, up to ``--pair-per-class``
  (150) each: a two-class task unlike the bundled sample's animals vs food.

The .deb reading and the PNG conversion (transparency composited on white, downscaled to
``--long-side`` px, 256 colours) are ``scripts/make_sample.py``'s own functions, imported.
Which sources are used is deterministic: each category's files are ordered by the sha256
of their path in the package (a fixed shuffle that mixes the sub-folders, e.g. birds,
bugs and mammals, and does not depend on Python's ``random``), and taken in that order,
skipping sources above ``--max-source-mpx``, unreadable ones and images identical after
downscaling to one already written (in any category), until the quota is met. Each
output folder is rebuilt from scratch on every run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_sample  # noqa: E402  (scripts/ is not a package)

DEFAULT_OUT = Path("/tmp/loupe-bench-sets")
CLIPART7 = ("animals", "food", "people", "transportation", "tools", "office", "geography")
PEOPLE_VEHICLES = ("people", "transportation")


@dataclass
class SetReport:
    written: dict[str, int] = field(default_factory=dict)
    too_large: int = 0
    unreadable: int = 0
    duplicates: int = 0
    total_bytes: int = 0


@contextlib.contextmanager
def _trees(names: tuple[str, ...]) -> Iterator[None]:
    """Make ``make_sample.read_deb_members`` keep these top-level trees.

    It filters on its module-level ``CLASSES`` (tree -> capitalize?); set it for the call
    and restore it after, rather than copying the function.
    """
    saved = make_sample.CLASSES
    make_sample.CLASSES = {name: False for name in names}
    try:
        yield
    finally:
        make_sample.CLASSES = saved


def read_members(deb: Path, trees: tuple[str, ...]) -> dict[str, bytes]:
    """{path under png/: bytes} of the regular files of ``trees`` (symlinks skipped)."""
    with _trees(trees):
        members = make_sample.read_deb_members(deb)
    members.pop("__symlinks__", None)
    return members


def _order(rel: str) -> str:
    return hashlib.sha256(rel.encode("utf-8")).hexdigest()


def _slug(rel: str) -> str:
    with _trees((rel.split("/", 1)[0],)):
        return make_sample.readable_name(rel)


def build_set(
    members: dict[str, bytes],
    out_dir: Path,
    categories: tuple[str, ...],
    per_class: int,
    long_side: int,
    max_mpx: float,
) -> SetReport:
    """Write ``out_dir/<category>/<NNN>_<name>.png``, up to ``per_class`` per category."""
    if out_dir.exists():
        shutil.rmtree(out_dir)  # our own generated folder, never user data
    report = SetReport()
    seen: set[str] = set()
    for category in categories:
        folder = out_dir / category
        folder.mkdir(parents=True)
        sources = sorted((rel for rel in members if rel.split("/", 1)[0] == category), key=_order)
        count = 0
        for rel in sources:
            if count >= per_class:
                break
            try:
                png = make_sample.convert(members[rel], long_side, int(max_mpx * 1_000_000))
            except (OSError, ValueError, Image.DecompressionBombError):
                report.unreadable += 1
                continue
            if png is None:
                report.too_large += 1
                continue
            digest = hashlib.sha256(png).hexdigest()
            if digest in seen:
                report.duplicates += 1
                continue
            seen.add(digest)
            count += 1
            (folder / f"{count:03d}_{_slug(rel).lower()}.png").write_bytes(png)
            report.total_bytes += len(png)
        report.written[category] = count
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("deb", type=Path, help="openclipart-png_*.deb")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for clipart7/ and people_vehicles/ ({DEFAULT_OUT})")
    parser.add_argument("--per-class", type=int, default=100, help="clipart7 images per class")
    parser.add_argument("--pair-per-class", type=int, default=150,
                        help="people_vehicles images per class")
    parser.add_argument("--long-side", type=int, default=160)
    parser.add_argument("--max-source-mpx", type=float, default=40.0)
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parent.parent
    out = args.out.expanduser().resolve()
    if out == repo or repo in out.parents:
        parser.error(f"--out {out} is inside the repository; write benchmark sets elsewhere")
    members = read_members(args.deb, tuple(dict.fromkeys(CLIPART7 + PEOPLE_VEHICLES)))
    for name, categories, quota in (
        ("clipart7", CLIPART7, args.per_class),
        ("people_vehicles", PEOPLE_VEHICLES, args.pair_per_class),
    ):
        report = build_set(members, out / name, categories, quota, args.long_side,
                           args.max_source_mpx)
        total = sum(report.written.values())
        print(f"{out / name}: {total} images ({report.total_bytes / 1e6:.2f} MB) "
              f"{report.written}; skipped: {report.too_large} > {args.max_source_mpx:g} Mpx, "
              f"{report.unreadable} unreadable, {report.duplicates} duplicates")
        short = [c for c, n in report.written.items() if n < quota]
        if short:
            print(f"  fewer than {quota} usable images in: {', '.join(short)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
