"""Labelling rules: turn scanned files into (file, labels) without touching the files.

The rules are the ones fastai users know (parent folder, regex on the file name, the Pets
"first letter uppercase" rule, a CSV of filename,labels) plus ``top`` (first folder under
the root). Every file the rule cannot label is kept as :class:`Unmatched` with a reason,
because a silently dropped file is a bug the user never sees. Per-file :class:`Overrides`
(kept in the project, keyed by ``rel``) win over the rule: that is how a user cleans
labels without renaming or moving a single image.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import regex

from loupe.engine.core.errors import ConfigError, DatasetError
from loupe.engine.data.scan import ImageItem, ScanResult

LABEL_KINDS: tuple[str, ...] = ("parent", "top", "upper", "regex", "csv")
RULE_SPELLINGS = "parent | top | upper[:NAME_UPPER,NAME_LOWER] | regex:PATTERN | csv:FILE"
_HEADER_FILE = {"filename", "file", "fname", "name", "path", "image", "image_name", "id"}
_HEADER_LABEL = {"label", "labels", "class", "classes", "tag", "tags", "category", "y"}
_LABEL_SPLIT = re.compile(r"[;\s]+")
# What is trimmed around CSV cells: spaces and tabs only. str.strip() would also eat
# \f, \x85, \u2028 ..., which are legal (if rare) at the ends of file names.
_CSV_BLANKS = " \t"
# A user's pattern gets this long on one file name: a pattern that backtracks
# catastrophically (``(a|aa)+$`` on a long name) would otherwise hang the scan.
REGEX_TIMEOUT_S = 0.1


def compile_with_group(
    pattern: str, *, name: str, part: str, example: str
) -> regex.Pattern[str]:
    """Compile a user's regex that must capture something (a label, a group id).

    The error says where the pattern is invalid, or that it captures nothing, with an
    example; ``name`` is how the message calls the pattern ("regex", "group regex").
    Compiled with the ``regex`` package, whose searches take a timeout (Python's ``re``
    cannot be interrupted); search through :func:`search_bounded`.
    """
    try:
        re.compile(pattern)  # re's errors point at the culprit (an unclosed parenthesis)
        compiled = regex.compile(pattern)
    except (re.error, regex.error) as err:
        where = f" at position {err.pos}" if err.pos is not None else ""
        raise ConfigError(f"invalid {name} '{pattern}'{where}: {err.msg}") from err
    if compiled.groups == 0:
        raise ConfigError(
            f"{name} '{pattern}' has no capture group; put {part} in parentheses, "
            f"e.g. '{example}'"
        )
    return compiled


def search_bounded(
    compiled: regex.Pattern[str], text: str, *, rule: str
) -> regex.Match[str] | None:
    """``compiled.search(text)`` bounded by :data:`REGEX_TIMEOUT_S`; a pattern that takes
    longer is a ConfigError naming ``rule`` (how the user spelled it) and the text."""
    try:
        return compiled.search(text, timeout=REGEX_TIMEOUT_S)
    except TimeoutError as err:
        raise ConfigError(
            f"{rule} took over {REGEX_TIMEOUT_S:g} s on {text!r}: the pattern backtracks "
            "catastrophically; simplify it"
        ) from err


@lru_cache(maxsize=64)
def compile_label_regex(pattern: str) -> regex.Pattern[str]:
    """Compile a regex rule, saying where it is invalid and insisting on one label group.

    One capture group is the label (fastai's RegexLabeller). With several groups, the one
    named ``label`` is used, so ``(?P<label>...)`` keeps helper groups possible.
    """
    compiled = compile_with_group(
        pattern, name="regex", part="the label part", example=r"^(.+)_\d+\.\w+$"
    )
    if compiled.groups > 1 and "label" not in compiled.groupindex:
        raise ConfigError(
            f"regex '{pattern}' has {compiled.groups} capture groups; use exactly one, "
            "or name the label group (?P<label>...) and make the others (?:...)"
        )
    return compiled


@dataclass(frozen=True)
class LabelRule:
    """How a file's label is derived. ``multi`` forces multi-label for CSV rules."""

    kind: str
    pattern: str = ""
    csv_path: Path | None = None
    names: tuple[str, str] = ("upper", "lower")
    multi: bool = False

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise ConfigError(f"unknown label rule {self.kind!r}; use one of: {RULE_SPELLINGS}")
        if self.kind == "regex":
            compile_label_regex(self.pattern)
        if self.kind == "csv" and self.csv_path is None:
            raise ConfigError("the csv label rule needs a file: csv:FILE")
        if self.csv_path is not None and not isinstance(self.csv_path, Path):
            object.__setattr__(self, "csv_path", Path(self.csv_path))
        names = tuple(self.names)
        if len(names) != 2 or not all(isinstance(n, str) and n.strip() for n in names):
            raise ConfigError(f"upper rule needs two non-empty label names, got {self.names!r}")
        if names[0] == names[1]:
            raise ConfigError(f"upper rule label names must differ, got {names[0]!r} twice")
        object.__setattr__(self, "names", names)

    @property
    def spec(self) -> str:
        """The CLI spelling of this rule (round-trips through :func:`parse_label_rule`)."""
        if self.kind == "regex":
            return f"regex:{self.pattern}"
        if self.kind == "csv":
            return f"{'csv+multi' if self.multi else 'csv'}:{self.csv_path}"
        if self.kind == "upper" and self.names != ("upper", "lower"):
            return f"upper:{self.names[0]},{self.names[1]}"
        return self.kind

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "pattern": self.pattern,
            "csv_path": str(self.csv_path) if self.csv_path is not None else None,
            "names": list(self.names),
            "multi": self.multi,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabelRule:
        if not isinstance(data, dict):
            raise ConfigError(f"label rule must be a JSON object, got {data!r}")
        csv_path = data.get("csv_path")
        return cls(
            kind=str(data.get("kind", "")),
            pattern=str(data.get("pattern", "")),
            csv_path=Path(csv_path) if csv_path else None,
            names=tuple(data.get("names", ("upper", "lower"))),
            multi=bool(data.get("multi", False)),
        )


def parse_label_rule(spec: str) -> LabelRule:
    """Parse the CLI spelling: parent | top | upper[:A,B] | regex:PAT | csv[+multi]:FILE."""
    spec = spec.strip()
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("parent", "top") and not arg:
        return LabelRule(kind)
    if kind == "upper":
        if not sep:
            return LabelRule("upper")
        names = [n.strip() for n in arg.split(",")]
        if len(names) != 2:
            raise ConfigError(f"upper rule takes two names, e.g. upper:cat,dog; got {spec!r}")
        return LabelRule("upper", names=(names[0], names[1]))
    if kind == "regex" and sep:
        return LabelRule("regex", pattern=arg)
    if kind in ("csv", "csv+multi") and arg.strip():
        return LabelRule("csv", csv_path=Path(arg.strip()), multi=kind == "csv+multi")
    raise ConfigError(f"unknown label rule {spec!r}; use one of: {RULE_SPELLINGS}")


@dataclass
class Overrides:
    """Per-file corrections stored in the project: ``relabel`` and ``exclude`` by ``rel``."""

    relabel: dict[str, tuple[str, ...]] = field(default_factory=dict)
    exclude: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {
            "relabel": {rel: list(labels) for rel, labels in sorted(self.relabel.items())},
            "exclude": sorted(self.exclude),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Overrides:
        if not isinstance(data, dict):
            raise ConfigError(f"overrides must be a JSON object, got {type(data).__name__}")
        relabel_raw = data.get("relabel")
        exclude_raw = data.get("exclude")
        relabel_raw = {} if relabel_raw is None else relabel_raw
        exclude_raw = [] if exclude_raw is None else exclude_raw
        if not isinstance(relabel_raw, dict) or not isinstance(exclude_raw, list):
            raise ConfigError("overrides need 'relabel' as an object and 'exclude' as a list")
        relabel: dict[str, tuple[str, ...]] = {}
        for rel, labels in relabel_raw.items():
            if isinstance(labels, str):
                labels = [labels]
            clean = tuple(str(lab).strip() for lab in labels if str(lab).strip())
            if not clean:
                raise ConfigError(f"override for {rel!r} has no label")
            relabel[str(rel)] = clean
        return cls(relabel=relabel, exclude={str(rel) for rel in exclude_raw})


@dataclass(frozen=True)
class LabelledItem:
    item: ImageItem
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Unmatched:
    item: ImageItem
    reason: str


@dataclass(frozen=True)
class Labelling:
    """The rule's result: labelled items, unmatched ones with reasons, excluded ones.

    ``warnings`` carries non-fatal findings (CSV rows naming files not found, overrides
    for files no longer in the folder) for the report.
    """

    rule: LabelRule
    labelled: tuple[LabelledItem, ...]
    unmatched: tuple[Unmatched, ...]
    excluded: tuple[ImageItem, ...]
    classes: tuple[str, ...]
    multi_label: bool
    warnings: tuple[str, ...] = ()


def _label_parent(item: ImageItem) -> tuple[str, ...] | str:
    parts = PurePosixPath(item.rel).parts
    if len(parts) < 2:
        return "directly in the folder root; the parent rule needs one sub-folder per class"
    return (parts[-2],)


def _label_top(item: ImageItem) -> tuple[str, ...] | str:
    parts = PurePosixPath(item.rel).parts
    if len(parts) < 2:
        return "directly in the folder root; the top rule needs one top-level folder per class"
    return (parts[0],)


def _label_upper(item: ImageItem, names: tuple[str, str]) -> tuple[str, ...] | str:
    first = PurePosixPath(item.rel).name[:1]
    if not first.isalpha():
        return f"file name starts with {first!r}, not a letter; the upper rule needs a letter"
    if first.isupper():
        return (names[0],)
    if first.islower():
        return (names[1],)
    return f"file name starts with {first!r}, a letter without upper or lower case"


def _label_regex(item: ImageItem, pattern: str) -> tuple[str, ...] | str:
    compiled = compile_label_regex(pattern)
    name = PurePosixPath(item.rel).name
    match = search_bounded(compiled, name, rule=f"label rule regex:{pattern}")
    if match is None:
        return f"file name does not match regex '{pattern}'"
    label = match.group("label") if "label" in compiled.groupindex else match.group(1)
    if not label:
        return f"regex '{pattern}' matched but its label group is empty"
    return (label,)


def _split_labels(cell: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for part in _LABEL_SPLIT.split(cell.strip()):
        if part:
            seen.setdefault(part, None)
    return tuple(seen)


def _read_csv_rows(path: Path) -> list[tuple[int, str, str]]:
    """(line number, filename, label cell) rows; a first row that looks like a header is
    skipped. Tab-separated files are accepted too (a common spreadsheet export).

    Read with ``newline=""`` as the csv module wants: a quoted file name may hold ``\n``,
    ``\r``, ``\f``, U+0085 or U+2028 (all legal in file names), and only the csv module
    decides where a record ends. The line number is the record's first physical line.
    """
    if not path.is_file():
        raise ConfigError(f"label CSV not found: {path}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read label CSV {path}: {err}") from err
    first = next((line for line in re.split(r"\r\n|\r|\n", text) if line.strip()), "")
    delimiter = "\t" if "\t" in first and "," not in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, str, str]] = []
    seen_first = False
    number = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:  # a field over the csv module's limit (131,072 chars)
            raise ConfigError(f"label CSV {path} line {number}: {err}") from err
        line, number = number, reader.line_num + 1
        cells = [c.strip(_CSV_BLANKS) for c in row]
        if not any(cells):
            continue
        if not seen_first:
            seen_first = True
            if _looks_like_header(cells):
                continue
        rows.append((line, row[0], cells[1] if len(cells) > 1 else ""))
    return rows


def _looks_like_header(cells: list[str]) -> bool:
    first = cells[0].lower()
    second = cells[1].lower() if len(cells) > 1 else ""
    return first in _HEADER_FILE or second in _HEADER_LABEL


class _CsvIndex:
    """Find scanned items by rel path or bare name, each with or without the extension."""

    def __init__(self, items: Iterable[ImageItem]) -> None:
        self.by_rel: dict[str, list[ImageItem]] = {}
        self.by_name: dict[str, list[ImageItem]] = {}
        for item in items:
            rel = PurePosixPath(item.rel)
            self.by_rel.setdefault(item.rel, []).append(item)
            self.by_rel.setdefault(str(rel.with_suffix("")), []).append(item)
            self.by_name.setdefault(rel.name, []).append(item)
            self.by_name.setdefault(rel.stem, []).append(item)

    def find(self, name: str, path: Path, line: int) -> ImageItem | None:
        """The item ``name`` (a CSV cell as written) names; spaces around it are
        forgiven when the name itself does not match (``a.jpg, cat``)."""
        found = self._find(name, path, line)
        stripped = name.strip(_CSV_BLANKS)
        if found is None and stripped != name:
            found = self._find(stripped, path, line)
        return found

    def _find(self, name: str, path: Path, line: int) -> ImageItem | None:
        key = name.replace("\\", "/").removeprefix("./")
        found = self.by_rel.get(key, [])
        if not found and "/" not in key:
            found = self.by_name.get(key, [])
        unique = {item.rel: item for item in found}
        if len(unique) > 1:
            rels = ", ".join(sorted(unique)[:5])
            raise DatasetError(
                f"{path} line {line}: file name {name!r} is ambiguous, it matches "
                f"{len(unique)} files ({rels}); write the path relative to the folder instead"
            )
        return next(iter(unique.values()), None)


def _csv_labels(
    scan: ScanResult, rule: LabelRule
) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Labels by ``rel`` from the CSV, plus warnings for rows that could not be used."""
    assert rule.csv_path is not None
    index = _CsvIndex(scan.items)
    labels: dict[str, tuple[str, ...]] = {}
    missing: list[str] = []
    warnings: list[str] = []
    for line, name, cell in _read_csv_rows(rule.csv_path):
        item = index.find(name, rule.csv_path, line)
        if item is None:
            missing.append(name)
            continue
        row_labels = _split_labels(cell)
        if not row_labels:
            warnings.append(f"{rule.csv_path.name} line {line}: {name!r} has no label")
            continue
        if item.rel in labels:
            row_labels = tuple(dict.fromkeys(labels[item.rel] + row_labels))
            warnings.append(f"{rule.csv_path.name}: {item.rel!r} is listed twice; labels merged")
        labels[item.rel] = row_labels
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        warnings.insert(
            0,
            f"{rule.csv_path.name}: {len(missing)} row(s) name files not found in the folder: "
            f"{shown}{more}",
        )
    return labels, warnings


def _rule_labeller(scan: ScanResult, rule: LabelRule):
    """A function item -> labels tuple or a reason string, plus rule-level warnings."""
    if rule.kind == "parent":
        return _label_parent, []
    if rule.kind == "top":
        return _label_top, []
    if rule.kind == "upper":
        return (lambda item: _label_upper(item, rule.names)), []
    if rule.kind == "regex":
        return (lambda item: _label_regex(item, rule.pattern)), []
    table, warnings = _csv_labels(scan, rule)
    name = rule.csv_path.name if rule.csv_path else "the CSV"
    return (lambda item: table.get(item.rel, f"not listed in {name}")), warnings


def apply_label_rule(
    scan: ScanResult, rule: LabelRule, overrides: Overrides | None = None
) -> Labelling:
    """Label every scanned item; overrides (exclude, then relabel) win over the rule."""
    overrides = overrides or Overrides()
    labeller, warnings = _rule_labeller(scan, rule)
    labelled: list[LabelledItem] = []
    unmatched: list[Unmatched] = []
    excluded: list[ImageItem] = []
    for item in scan.items:
        if item.rel in overrides.exclude:
            excluded.append(item)
            continue
        result = overrides.relabel.get(item.rel) or labeller(item)
        if isinstance(result, str):
            unmatched.append(Unmatched(item, result))
        else:
            labelled.append(LabelledItem(item, result))
    known = {item.rel for item in scan.items}
    stale = sorted((set(overrides.relabel) | overrides.exclude) - known)
    if stale:
        shown = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        warnings.append(f"{len(stale)} override(s) name files no longer in the folder: {shown}")
    classes = tuple(sorted({lab for li in labelled for lab in li.labels}))
    multi = rule.multi or any(len(li.labels) > 1 for li in labelled)
    return Labelling(
        rule=rule,
        labelled=tuple(labelled),
        unmatched=tuple(unmatched),
        excluded=tuple(excluded),
        classes=classes,
        multi_label=multi,
        warnings=tuple(warnings),
    )
