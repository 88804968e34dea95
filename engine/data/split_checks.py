"""Checks run on a finished split: the mistakes that make validation numbers lie.

A class missing from validation is never measured; a class with a handful of training
images is not learned; the same photo on both sides of the split (fastai users' favourite
silent leak, e.g. duplicates in scraped sets) inflates accuracy; a group (driver, boat,
patient) in two sets does the same. Kept apart from the split rules themselves.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import regex

from loupe.engine.core.digest import sha256_file
from loupe.engine.core.events import CancelToken
from loupe.engine.data.labels import LabelledItem, compile_with_group, search_bounded

SETS: tuple[str, ...] = ("train", "valid", "test")
FEW_IMAGES = 5


@lru_cache(maxsize=32)
def compile_group_regex(pattern: str) -> regex.Pattern[str]:
    return compile_with_group(
        pattern, name="group regex", part="the group id", example=r"driver_(\d+)/"
    )


def group_id(rel: str, pattern: str) -> str | None:
    """The group a file belongs to: the regex's group named ``group``, else group 1,
    searched in the rel path (so folders can carry the id); None when it does not match."""
    compiled = compile_group_regex(pattern)
    match = search_bounded(compiled, rel, rule=f"group regex '{pattern}'")
    if match is None:
        return None
    value = match.group("group") if "group" in compiled.groupindex else match.group(1)
    return value or None


def examples(rels: Iterable[str], limit: int = 3) -> str:
    """A short 'a, b, c and N more' list: warnings must stay one readable line."""
    rels = list(rels)
    shown = ", ".join(rels[:limit])
    return shown + (f" and {len(rels) - limit} more" if len(rels) > limit else "")


def class_warnings(counts: dict[str, dict[str, int]]) -> list[str]:
    """Classes missing from train or validation, and classes with too few images."""
    out = []
    for cls, n in counts.items():
        if n["train"] == 0:
            out.append(f"class {cls!r} has no training images; the model cannot learn it")
        elif n["valid"] == 0:
            out.append(
                f"class {cls!r} is absent from validation ({n['train']} in train); "
                "its accuracy will not be measured"
            )
    few = [f"{c} ({n['train']})" for c, n in counts.items() if 0 < n["train"] < FEW_IMAGES]
    if few:
        out.append(f"classes with fewer than {FEW_IMAGES} training images: {', '.join(few)}")
    return out


def _file_digest(path: Path, cancel: CancelToken | None) -> str | None:
    """The file's sha256, or None when it cannot be read (then it cannot leak either)."""
    if cancel is not None:
        cancel.raise_if_cancelled()
    try:
        return sha256_file(path)
    except OSError:
        return None


def find_leaks(
    sets: Mapping[str, Sequence[LabelledItem]], cancel: CancelToken | None = None
) -> list[tuple[str, str, str]]:
    """(train rel, other set, other rel) for files with the same bytes across train and
    valid/test. Sizes prune first, so only same-size files are ever read."""
    by_size: dict[int, list[tuple[str, LabelledItem]]] = defaultdict(list)
    for name, items in sets.items():
        for li in items:
            by_size[li.item.size].append((name, li))
    leaks: list[tuple[str, str, str]] = []
    for group in by_size.values():
        names = {name for name, _ in group}
        if "train" not in names or names == {"train"}:
            continue
        by_digest: dict[str, list[tuple[str, LabelledItem]]] = defaultdict(list)
        for name, li in group:
            digest = _file_digest(li.item.path, cancel)
            if digest is not None:
                by_digest[digest].append((name, li))
        for same in by_digest.values():
            trains = [li.item.rel for name, li in same if name == "train"]
            for name, li in same:
                if trains and name != "train":
                    leaks.append((trains[0], name, li.item.rel))
    return sorted(leaks)


def leak_warning(leaks: list[tuple[str, str, str]]) -> list[str]:
    if not leaks:
        return []
    pairs = [f"{a} = {b}" for a, _, b in leaks]
    sets = "/".join(sorted({s for _, s, _ in leaks}))
    return [
        f"leak: {len(leaks)} file(s) in {sets} have an identical copy (same bytes) in train: "
        f"{examples(pairs)}; exclude one of each pair"
    ]


def group_overlap_warning(sets: dict[str, list[LabelledItem]], pattern: str) -> list[str]:
    where: dict[str, set[str]] = defaultdict(set)
    for name, items in sets.items():
        for li in items:
            gid = group_id(li.item.rel, pattern)
            if gid is not None:
                where[gid].add(name)
    shared = sorted(g for g, names in where.items() if len(names) > 1)
    if not shared:
        return []
    shown = [f"{g} ({', '.join(n for n in SETS if n in where[g])})" for g in shared]
    return [
        f"group overlap: {len(shared)} group(s) of '{pattern}' appear in more than one set: "
        f"{examples(shown)}; use --split group:REGEX to keep each group in one set"
    ]
