"""Train / validation / test splits that stay put, plus the warnings that catch leaks.

Random splits are decided per file by a hash of (seed, rel), not by shuffling a list, so
the same files and seed always give the same split and adding files never moves an
existing one. The optional test set is carved first with a fixed salt that ignores the
seed ("locked"): trying another seed cannot leak test images into training. Group splits
hash the group id, so a driver or a boat never sits in two sets; time splits hold out the
newest images. After splitting, the plan checks what fastai users learn the hard way: a
class missing from validation, classes with too few images, and identical files (same
bytes) on both sides of the split.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import PurePosixPath
from typing import Any

from loupe.engine.core.errors import ConfigError, DatasetError
from loupe.engine.core.events import CancelToken
from loupe.engine.core.text import text_bytes
from loupe.engine.data.labels import LabelledItem, Labelling
from loupe.engine.data.split_checks import (
    SETS,
    class_warnings,
    compile_group_regex,
    examples,
    find_leaks,
    group_id,
    group_overlap_warning,
    leak_warning,
)

SPLIT_KINDS: tuple[str, ...] = ("random", "folders", "group", "time")
SPLIT_SPELLINGS = "random:FRACTION | folders | group:REGEX | time:FRACTION"
TEST_SALT = "loupe-locked-test-v1"
_FOLDER_SETS = {
    "train": "train", "training": "train",
    "valid": "valid", "validation": "valid", "val": "valid",
    "test": "test", "testing": "test",
}
_DATE_RE = re.compile(
    r"(?<!\d)((?:19|20)\d{2})([-_]?)(0[1-9]|1[0-2])\2(0[1-9]|[12]\d|3[01])(?!\d)"
)


def _unit(salt: str, key: str) -> float:
    """A uniform number in [0, 1) that depends only on (salt, key): stable across runs,
    machines and Python versions (unlike ``hash()``). The key is hashed as its bytes
    (``core.text.text_bytes``), so a file name that is not UTF-8 hashes too, and a UTF-8
    one gives the digest it always had."""
    digest = hashlib.sha256(text_bytes(f"{salt}\x00{key}")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _parse_fraction(text: str, what: str) -> float:
    text = text.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError as err:
        raise ConfigError(f"{what} must be a number like 0.2 or 20%, got {text!r}") from err
    return value


@dataclass(frozen=True)
class SplitRule:
    """How labelled files go to train / valid / test.

    ``pattern`` is the group regex for ``group`` splits; for the other kinds, when set,
    it names groups to check for overlap between sets (a warning, not a split rule).
    """

    kind: str = "random"
    fraction: float = 0.2
    pattern: str = ""
    test_fraction: float = 0.0
    subset: float = 1.0
    seed: int = 42

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise ConfigError(f"unknown split {self.kind!r}; use one of: {SPLIT_SPELLINGS}")
        if self.kind != "folders" and not 0.0 < self.fraction < 1.0:
            raise ConfigError(
                f"validation fraction must be between 0 and 1 (e.g. 0.2), got {self.fraction}"
            )
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"test fraction must be in [0, 1), got {self.test_fraction}")
        if self.kind != "folders" and self.fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                f"validation ({self.fraction}) plus test ({self.test_fraction}) fractions "
                "leave nothing to train on; their sum must be below 1"
            )
        if self.kind == "folders" and self.test_fraction > 0:
            raise ConfigError(
                "a test fraction does not apply to the folders split; put test images in a "
                "folder named 'test' instead"
            )
        if not 0.0 < self.subset <= 1.0:
            raise ConfigError(f"subset must be in (0, 1] (e.g. 0.1 for 10%), got {self.subset}")
        if self.kind == "group" and not self.pattern:
            raise ConfigError("the group split needs a regex: group:REGEX")
        if self.pattern:
            compile_group_regex(self.pattern)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")

    @property
    def spec(self) -> str:
        """The CLI spelling of the split itself (seed/test/subset are separate options)."""
        if self.kind == "folders":
            return "folders"
        if self.kind == "group":
            return f"group:{self.pattern}"
        return f"{self.kind}:{self.fraction:g}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "fraction": self.fraction,
            "pattern": self.pattern,
            "test_fraction": self.test_fraction,
            "subset": self.subset,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SplitRule:
        if not isinstance(data, dict):
            raise ConfigError(f"split rule must be a JSON object, got {data!r}")
        try:
            return cls(
                kind=str(data.get("kind", "random")),
                fraction=float(data.get("fraction", 0.2)),
                pattern=str(data.get("pattern", "")),
                test_fraction=float(data.get("test_fraction", 0.0)),
                subset=float(data.get("subset", 1.0)),
                seed=int(data.get("seed", 42)),
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"split rule has a non-numeric value: {err}") from err


def parse_split_rule(
    spec: str,
    *,
    seed: int = 42,
    test_fraction: float = 0.0,
    subset: float = 1.0,
    group_check: str = "",
) -> SplitRule:
    """Parse random[:FRACTION] | folders | group:REGEX | time[:FRACTION]."""
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    common: dict[str, Any] = {"seed": seed, "test_fraction": test_fraction, "subset": subset}
    if kind in ("random", "time"):
        fraction = _parse_fraction(arg, f"{kind} split fraction") if sep else 0.2
        return SplitRule(kind, fraction=fraction, pattern=group_check, **common)
    if kind == "folders" and not arg:
        return SplitRule("folders", pattern=group_check, **common)
    if kind == "group" and arg:
        return SplitRule("group", pattern=arg, **common)
    raise ConfigError(f"unknown split {spec!r}; use one of: {SPLIT_SPELLINGS}")


@dataclass(frozen=True)
class SplitPlan:
    """The split: items per set, per-class counts per set, warnings for people.

    ``left_out`` holds labelled items the split could not place (outside train/valid/test
    folders, or not matching the group regex); they are counted in the warnings.
    """

    rule: SplitRule
    classes: tuple[str, ...]
    multi_label: bool
    train: tuple[LabelledItem, ...]
    valid: tuple[LabelledItem, ...]
    test: tuple[LabelledItem, ...]
    counts: dict[str, dict[str, int]]
    warnings: tuple[str, ...]
    left_out: tuple[LabelledItem, ...] = field(default=())

    def sets(self) -> dict[str, tuple[LabelledItem, ...]]:
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def manifest(self) -> dict[str, Any]:
        """JSON for the run folder: rel paths per set and their labels, to reproduce it."""
        out: dict[str, Any] = {
            "format": 1,
            "rule": self.rule.to_json(),
            "classes": list(self.classes),
            "multi_label": self.multi_label,
            "labels": {},
        }
        for name, items in self.sets().items():
            out[name] = [li.item.rel for li in items]
            out["labels"].update({li.item.rel: list(li.labels) for li in items})
        return out


_Assignment = tuple[dict[str, list[LabelledItem]], list[LabelledItem], list[str]]


def _empty_sets() -> dict[str, list[LabelledItem]]:
    return {name: [] for name in SETS}


def _by_hash(items: Sequence[LabelledItem], rule: SplitRule, key: Callable[[LabelledItem], str]):
    """Test first (fixed salt), then valid (seeded) with probability fraction/(1 - test)."""
    sets = _empty_sets()
    valid_p = rule.fraction / (1.0 - rule.test_fraction)
    for li in items:
        k = key(li)
        if rule.test_fraction and _unit(TEST_SALT, k) < rule.test_fraction:
            sets["test"].append(li)
        elif _unit(f"valid:{rule.seed}", k) < valid_p:
            sets["valid"].append(li)
        else:
            sets["train"].append(li)
    return sets


def _split_random(items: Sequence[LabelledItem], rule: SplitRule) -> _Assignment:
    return _by_hash(items, rule, lambda li: li.item.rel), [], []


def _split_group(items: Sequence[LabelledItem], rule: SplitRule) -> _Assignment:
    placed = [li for li in items if group_id(li.item.rel, rule.pattern) is not None]
    left = [li for li in items if group_id(li.item.rel, rule.pattern) is None]
    if not placed:
        example = items[0].item.rel if items else ""
        raise DatasetError(
            f"group regex '{rule.pattern}' matched none of the {len(items)} file paths "
            f"(e.g. {example!r}); it is searched in the path relative to the folder"
        )
    sets = _by_hash(placed, rule, lambda li: f"group:{group_id(li.item.rel, rule.pattern)}")
    notes = []
    if left:
        notes.append(
            f"{len(left)} file(s) left out: their path does not match group regex "
            f"'{rule.pattern}' (e.g. {examples(li.item.rel for li in left)})"
        )
    return sets, left, notes


def _split_folders(items: Sequence[LabelledItem], rule: SplitRule) -> _Assignment:
    sets = _empty_sets()
    left: list[LabelledItem] = []
    for li in items:
        folders = PurePosixPath(li.item.rel).parts[:-1]
        target = next((_FOLDER_SETS[p.lower()] for p in folders if p.lower() in _FOLDER_SETS), None)
        (sets[target] if target else left).append(li)
    notes = []
    if left:
        notes.append(
            f"{len(left)} file(s) left out: not under a folder named train, valid/validation/val "
            f"or test (e.g. {examples(li.item.rel for li in left)})"
        )
    return sets, left, notes


def date_from_name(rel: str) -> date | None:
    """A YYYY-MM-DD, YYYY_MM_DD or YYYYMMDD date in the file name, else in its folders."""
    path = PurePosixPath(rel)
    for text in (path.name, *reversed(path.parts[:-1])):
        for match in _DATE_RE.finditer(text):
            try:
                return date(int(match[1]), int(match[3]), int(match[4]))
            except ValueError:
                continue
    return None


def _split_time(items: Sequence[LabelledItem], rule: SplitRule) -> _Assignment:
    """Newest ``test_fraction`` → test, next newest ``fraction`` → valid, rest → train."""

    def when(li: LabelledItem) -> tuple[int, int, str]:
        day = date_from_name(li.item.rel)
        if day is None:
            return li.item.mtime_ns, li.item.mtime_ns, li.item.rel
        stamp = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        return int(stamp) * 10**9, li.item.mtime_ns, li.item.rel

    ordered = sorted(items, key=when, reverse=True)
    n = len(ordered)
    n_test = round(rule.test_fraction * n)
    n_valid = max(1, round(rule.fraction * n)) if n > 1 else 0
    sets = _empty_sets()
    sets["test"] = ordered[:n_test]
    sets["valid"] = ordered[n_test : n_test + n_valid]
    sets["train"] = ordered[n_test + n_valid :]
    undated = sum(1 for li in items if date_from_name(li.item.rel) is None)
    notes = []
    if 0 < undated < n:
        notes.append(
            f"{undated} of {n} file(s) have no date in their name; their modification time "
            "was used, which may not be comparable with the dates in the other names"
        )
    return sets, [], notes


_SPLITTERS: dict[str, Callable[[Sequence[LabelledItem], SplitRule], _Assignment]] = {
    "random": _split_random,
    "folders": _split_folders,
    "group": _split_group,
    "time": _split_time,
}


def _subset(items: list[LabelledItem], rule: SplitRule, name: str) -> list[LabelledItem]:
    """Keep ``subset`` of each class (at least one image), chosen by a seeded hash."""
    if rule.subset >= 1.0:
        return items
    by_class: dict[tuple[str, ...], list[LabelledItem]] = defaultdict(list)
    for li in items:
        by_class[li.labels].append(li)
    keep: set[str] = set()
    for members in by_class.values():
        members.sort(key=lambda li: _unit(f"subset:{name}:{rule.seed}", li.item.rel))
        keep.update(li.item.rel for li in members[: max(1, math.ceil(rule.subset * len(members)))])
    return [li for li in items if li.item.rel in keep]


def _counts(classes: Sequence[str], sets: dict[str, list[LabelledItem]]):
    counts = {c: dict.fromkeys(SETS, 0) for c in classes}
    for name, items in sets.items():
        for li in items:
            for label in li.labels:
                counts[label][name] += 1
    return counts


def _check_not_empty(sets: dict[str, list[LabelledItem]], rule: SplitRule, n: int) -> None:
    for name in ("train", "valid"):
        if sets[name]:
            continue
        if rule.kind == "folders":
            why = f"no labelled file is under a folder named {name!r}" + (
                " (or validation/val)" if name == "valid" else ""
            )
        elif rule.kind == "group":
            why = f"all groups of '{rule.pattern}' were hashed to the other sets; add groups"
        else:
            hint = "larger" if name == "valid" else "smaller"
            why = (
                f"{rule.spec} (seed {rule.seed}) placed none of the {n} labelled images "
                f"there; with this few images try another seed or a {hint} fraction"
            )
        raise DatasetError(f"the {name} set is empty: {why}")


def make_split(
    labelling: Labelling, rule: SplitRule, *, cancel: CancelToken | None = None
) -> SplitPlan:
    """Split the labelled items; raise DatasetError when train or valid would be empty."""
    items = labelling.labelled
    if not items:
        raise DatasetError("there are no labelled images to split")
    sets, left, warnings = _SPLITTERS[rule.kind](items, rule)
    sets["train"] = _subset(sets["train"], rule, "train")
    sets["valid"] = _subset(sets["valid"], rule, "valid")
    _check_not_empty(sets, rule, len(items))
    counts = _counts(labelling.classes, sets)
    warnings = warnings + class_warnings(counts) + leak_warning(find_leaks(sets, cancel))
    if rule.pattern and rule.kind != "group":
        warnings += group_overlap_warning(sets, rule.pattern)
    return SplitPlan(
        rule=rule,
        classes=labelling.classes,
        multi_label=labelling.multi_label,
        train=tuple(sets["train"]),
        valid=tuple(sets["valid"]),
        test=tuple(sets["test"]),
        counts=counts,
        warnings=tuple(warnings),
        left_out=tuple(left),
    )
