"""Predict a whole folder (recursively) to a CSV; optionally copy images into class folders.

The user's files are only ever read. ``sort_into`` COPIES (``shutil.copy2`` semantics:
content plus timestamps) into one folder per predicted class and never overwrites: a name
already taken gets a ``-1``, ``-2``, ... suffix, and the destination is created with
exclusive-create so even a concurrent writer cannot be clobbered. ``sort_into`` may not be
the folder, lie inside it, or hold it as one of its class folders (compared by device and
inode, so an alias is caught): Loupe never writes into the folder it reads. The scan uses
``engine.data.scan`` (same notion of "an image" as training).

Phases: scan → predict in batches (cancel checked per batch; nothing written if
cancelled) → CSV written atomically → copies (cancel checked per file).

The CSV is UTF-8 with ``\n`` line ends. A file name that is not UTF-8 is written with its
original bytes (read it back with ``errors="surrogateescape"`` to get the same str as
``os.fsdecode``); a field holding ``\r`` or ``\n`` is quoted, so every row stays one record.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from loupe.engine.core.atomic import atomic_write_bytes
from loupe.engine.core.errors import ConfigError, DatasetError
from loupe.engine.core.events import (
    CancelToken,
    EventCallback,
    Finished,
    Progress,
    Started,
    WarningEvent,
    ignore_event,
)
from loupe.engine.core.text import text_bytes

if TYPE_CHECKING:
    from loupe.engine.inference.predict import Prediction, Predictor

CSV_COLUMNS = ("path", "label", "prob", "unknown", "top", "error")
UNKNOWN_FOLDER = "_unknown"
NO_LABEL_FOLDER = "_no_label"


@dataclass(frozen=True)
class FolderRow:
    """One CSV line: a prediction, or the reason the file could not be predicted."""

    path: Path
    prediction: Prediction | None
    error: str = ""


@dataclass(frozen=True)
class FolderResult:
    csv_path: Path
    rows: tuple[FolderRow, ...]
    rejected: tuple[tuple[Path, str], ...]
    copied: tuple[tuple[Path, Path], ...] = ()
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[FolderRow, ...]:
        return tuple(row for row in self.rows if row.prediction is None)


def predict_folder(
    predictor: Predictor,
    root: str | Path,
    csv_path: str | Path,
    *,
    topk: int = 3,
    batch_size: int = 16,
    sort_into: str | Path | None = None,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> FolderResult:
    """Predict every image under ``root``; write ``csv_path``; optionally copy by class.

    Every image file gets a CSV row: files the scan rejected or that fail to load have an
    empty label and the reason in the ``error`` column.
    """
    root = Path(root).expanduser()
    csv_path = Path(csv_path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    if csv_path.suffix.lower() != ".csv":
        # A typo must not turn into writing a CSV over one of the user's pictures.
        raise ConfigError(f"the CSV file {csv_path} must end in .csv")
    if csv_path.is_dir():
        raise ConfigError(f"the CSV file {csv_path} is a folder; give a file name ending in .csv")
    target = Path(sort_into).expanduser() if sort_into is not None else None
    if target is not None:
        _check_sort_target(predictor, root, target)
    paths, rejected = _list_images(root, csv_path, on_event, cancel)
    rows = _predict_rows(predictor, paths, topk, batch_size, on_event, cancel)
    rows += [FolderRow(path, None, reason) for path, reason in rejected]
    rows.sort(key=lambda row: str(row.path))
    atomic_write_bytes(csv_path, text_bytes(rows_to_csv(rows)))
    counts = Counter(  # every folder an image goes to: all positives when multi-label
        folder for row in rows if row.prediction
        for folder in _folders_for(predictor, row.prediction)
    )
    copied: tuple[tuple[Path, Path], ...] = ()
    if target is not None:
        copied = _sort_copies(predictor, rows, target, on_event, cancel)
    return FolderResult(csv_path, tuple(rows), rejected, copied, dict(counts))


def _check_sort_target(predictor: Predictor, root: Path, target: Path) -> None:
    """Refuse a ``sort_into`` whose copies would land in the folder being predicted."""
    from loupe.engine.core.outputs import is_inside

    if target.exists() and not target.is_dir():
        raise ConfigError(f"--sort-into {target} exists and is not a folder")
    if is_inside(target, root):
        raise ConfigError(
            f"--sort-into {target} is inside the image folder {root}; Loupe never writes "
            "there. Choose a folder outside it."
        )
    names = {safe_folder_name(c) for c in predictor.classes} | {UNKNOWN_FOLDER, NO_LABEL_FOLDER}
    for name in sorted(names):
        if is_inside(target / name, root):
            raise ConfigError(
                f"--sort-into {target}: the class folder {target / name} would be the image "
                f"folder {root} itself; Loupe never writes there. Choose another folder."
            )


def _list_images(
    root: Path,
    csv_path: Path,
    on_event: EventCallback,
    cancel: CancelToken | None,
) -> tuple[list[Path], tuple[tuple[Path, str], ...]]:
    from loupe.engine.data.scan import scan_folder

    scan = scan_folder(root, on_event=on_event, cancel=cancel)
    own_csv = _real(csv_path)

    def wanted(path: Path) -> bool:
        return _real(path) != own_csv

    paths = [item.path for item in scan.items if wanted(item.path)]
    rejected = tuple((r.path, r.reason) for r in scan.rejected if wanted(r.path))
    for path, reason in rejected:
        on_event(WarningEvent("rejected-file", f"{path}: {reason}"))
    return sorted(paths), rejected


def _real(path: Path) -> Path:
    """``Path.resolve`` that never raises: a symlink loop in the folder (which the scan
    reports as a rejected file) raises RuntimeError from ``resolve`` on Python < 3.13."""
    return Path(os.path.realpath(path))


def _predict_rows(
    predictor: Predictor,
    paths: list[Path],
    topk: int,
    batch_size: int,
    on_event: EventCallback,
    cancel: CancelToken | None,
) -> list[FolderRow]:
    rows = []
    for outcome in predictor.iter_batches(
        paths, batch_size=batch_size, topk=topk, on_event=on_event, cancel=cancel,
        task="predict-folder",
    ):
        if isinstance(outcome.result, Exception):
            on_event(WarningEvent("unreadable-image", str(outcome.result)))
            rows.append(FolderRow(outcome.path, None, str(outcome.result)))
        else:
            rows.append(FolderRow(outcome.path, outcome.result))
    return rows


def rows_to_csv(rows: list[FolderRow] | tuple[FolderRow, ...]) -> str:
    """CSV text: path, label, prob, unknown, top ("label:prob;..."), error.

    ``label`` is the answer ("" when unknown or, multi-label, when no class applies;
    several labels are joined with ";"); ``prob`` is the top probability.
    """
    buffer = io.StringIO()
    writer = _CsvLines(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        pred = row.prediction
        if pred is None:
            writer.writerow([str(row.path), "", "", "", "", row.error])
            continue
        if pred.multi_label:
            label = ";".join(name for name, _ in pred.top)
            best = max(pred.probs.values())
        else:
            label = "" if pred.unknown else pred.top[0][0]
            best = pred.top[0][1]
        top = ";".join(f"{name}:{prob:.4f}" for name, prob in pred.top)
        writer.writerow([str(row.path), label, f"{best:.4f}", str(pred.unknown).lower(), top, ""])
    return buffer.getvalue()


class _CsvLines:
    """A csv writer ending rows with ``\n`` that still quotes fields holding ``\r``.

    The csv module quotes a field only when it holds a character of the line terminator
    (or the delimiter / quote): with ``lineterminator="\n"`` a lone ``\r`` in a file name
    would be written bare and split the row for readers. Each row is written with
    ``"\r\n"`` (so both are quoted) and its ending swapped for ``\n``.
    """

    def __init__(self, out: io.StringIO) -> None:
        self.out = out

    def writerow(self, fields) -> None:
        line = io.StringIO()
        csv.writer(line, lineterminator="\r\n").writerow(fields)
        self.out.write(line.getvalue()[:-2] + "\n")


def _folders_for(predictor: Predictor, prediction: Prediction) -> list[str]:
    """Class folder names an image is copied into (all positives for multi-label)."""
    if prediction.multi_label:
        labels = [name for name, _ in prediction.top]
        return [safe_folder_name(n) for n in labels] or [NO_LABEL_FOLDER]
    if prediction.unknown:
        return [UNKNOWN_FOLDER]
    return [safe_folder_name(prediction.top[0][0])]


_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


def safe_folder_name(label: str) -> str:
    """A class name usable as one folder name on every OS (no separators, no '..')."""
    name = _UNSAFE.sub("_", label).strip().strip(".")
    return name or "_"


def _sort_copies(
    predictor: Predictor,
    rows: list[FolderRow],
    target: Path,
    on_event: EventCallback,
    cancel: CancelToken | None,
) -> tuple[tuple[Path, Path], ...]:
    jobs = [
        (row.path, target / folder)
        for row in rows
        if row.prediction is not None
        for folder in _folders_for(predictor, row.prediction)
    ]
    on_event(Started("sort-copy", total=len(jobs)))
    copied = []
    for done, (source, folder) in enumerate(jobs, start=1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        copied.append((source, copy_without_overwrite(source, folder)))
        on_event(Progress("sort-copy", done, len(jobs)))
    on_event(Finished("sort-copy", {"count": len(copied)}))
    return tuple(copied)


def copy_without_overwrite(source: Path, folder: Path) -> Path:
    """Copy ``source`` into ``folder`` (content + timestamps); never replace a file.

    The destination is opened with O_EXCL, so an existing name is never truncated, even
    if another program creates it between our check and our write.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = source.stem, source.suffix
    for attempt in range(10_000):
        name = f"{stem}{suffix}" if attempt == 0 else f"{stem}-{attempt}{suffix}"
        dest = folder / name
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0))
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out)
            shutil.copystat(source, dest)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return dest
    raise ConfigError(f"could not find a free name for {source.name} in {folder}")
