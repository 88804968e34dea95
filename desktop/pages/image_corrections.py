"""Relabel / Exclude / Undo: the one correction mechanism every tab and the viewer use.

A correction never touches an image: it is a project override keyed by the file's path
relative to the data folder (``engine.data.labels.Overrides``), saved in the project
file. The Results grids, the Data table's context menu and the image viewer all call
the same :class:`Corrections` (one per :class:`AppContext`, from :func:`corrections_for`),
so an exclusion made in one place shows, and can be undone, in every other.

"Corrections since the last training" counts images whose override differs from the
one in the data the next training uses (labels re-applied: Retrain, a Data-tab edit, a
rescan), not clicks (``pages.corrections.net_corrections``): exclude, relabel, then
clear the same image is none.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from loupe.desktop.pages.corrections import net_corrections

# An image's override: ("relabel", labels), ("exclude", ()) or None (as the rule says).
State = tuple[str, tuple[str, ...]] | None

_INSTANCES: weakref.WeakKeyDictionary[Any, Corrections] = weakref.WeakKeyDictionary()


def corrections_for(context: Any) -> Corrections:
    """The context's one :class:`Corrections` (made on first use)."""
    found = _INSTANCES.get(context)
    if found is None:
        found = _INSTANCES[context] = Corrections(context)
    return found


class Corrections(QObject):
    """Overrides of the current project: edit, describe, undo, count.

    ``changed(list[str])`` carries the rels whose override changed (after saving).
    """

    changed = Signal(list)

    def __init__(self, context: Any) -> None:
        super().__init__(context if isinstance(context, QObject) else None)
        self._context = context
        self._rels: tuple[Any, dict[Path, str]] = (None, {})
        self._undo: list[tuple[str, State]] = []  # (rel, its state before an edit)
        self._baseline: Any = None  # the Overrides the current data was labelled with
        self._baseline_project: Any = None
        context.projectChanged.connect(self._on_project)
        # New labels were applied (rescan, relabel): they include every override so far.
        context.dataChanged.connect(self.mark_applied)
        self._on_project()

    # -- reading ----------------------------------------------------------------------------
    def classes(self) -> list[str]:
        """Classes an image can be relabelled as: the data's, else the model's."""
        for source in (self._context.prepared, self._context.data):
            plan = getattr(source, "plan", None)
            if plan is not None and plan.classes:
                return list(plan.classes)
        labelling = getattr(self._context.data, "labelling", None)
        if labelling is not None and labelling.classes:
            return list(labelling.classes)
        predictor = self._context.predictor
        return list(predictor.classes) if predictor is not None else []

    def rel_of(self, path: Path | str) -> str | None:
        """The image's key for overrides: its path relative to the data folder (None
        when it is not in the project's folder: a predicted image from elsewhere)."""
        project = self._context.project
        if project is None:
            return None
        rel = self._known_rels().get(Path(path))
        if rel is not None:
            return rel
        try:
            return Path(path).resolve().relative_to(Path(project.root).resolve()).as_posix()
        except (ValueError, OSError):
            return None

    def _known_rels(self) -> dict[Path, str]:
        """path -> rel from the latest labelling and split (cached per data state)."""
        data, prepared = self._context.data, self._context.prepared
        cached = self._rels[0]
        if cached is None or cached[0] is not data or cached[1] is not prepared:
            rels: dict[Path, str] = {}
            labelling = getattr(data, "labelling", None)
            if labelling is not None:
                rels.update((li.item.path, li.item.rel) for li in labelling.labelled)
                rels.update((u.item.path, u.item.rel) for u in labelling.unmatched)
                rels.update((item.path, item.rel) for item in labelling.excluded)
            if prepared is not None:
                for part in (prepared.plan.train, prepared.plan.valid, prepared.plan.test):
                    rels.update((li.item.path, li.item.rel) for li in part)
            self._rels = ((data, prepared), rels)
        return self._rels[1]

    def state(self, path: Path | str) -> State:
        rel = self.rel_of(path)
        return None if rel is None else self._state_of_rel(rel)

    def _state_of_rel(self, rel: str) -> State:
        project = self._context.project
        if project is None:
            return None
        if rel in project.overrides.exclude:
            return ("exclude", ())
        if rel in project.overrides.relabel:
            return ("relabel", tuple(project.overrides.relabel[rel]))
        return None

    def note(self, path: Path | str) -> str:
        """A caption line for the image's override ("" when it has none)."""
        state = self.state(path)
        if state is None:
            return ""
        if state[0] == "exclude":
            return "\n[excluded]"
        return f"\n[→ {';'.join(state[1])}]"

    def describe(self, path: Path | str) -> str:
        """The override in words, for the viewer ("" when none)."""
        state = self.state(path)
        if state is None:
            return ""
        if state[0] == "exclude":
            return "Excluded from training (project override; the file is unchanged)"
        return f"Relabelled as {', '.join(state[1])} (project override; the file is unchanged)"

    def editable(self, path: Path | str) -> bool:
        """Whether the image belongs to the project folder (so it can be corrected)."""
        return self.rel_of(path) is not None

    # -- editing ---------------------------------------------------------------------------
    def relabel(self, paths: Sequence[Path | str], label: str) -> int:
        """Record ``label`` for each image as a project override (files untouched)."""
        if label not in self.classes():
            self._context.errorRaised.emit(
                "Unknown class", f"{label!r} is not a class; choose one of: "
                + ", ".join(self.classes()))
            return 0
        return self._edit(paths, ("relabel", (label,)))

    def exclude(self, paths: Sequence[Path | str]) -> int:
        """Leave these images out of training from now on (a project override)."""
        return self._edit(paths, ("exclude", ()))

    def clear(self, paths: Sequence[Path | str]) -> int:
        """Back to what the label rule says (include again, drop a relabel)."""
        return self._edit(paths, None)

    def can_undo(self, path: Path | str) -> bool:
        rel = self.rel_of(path)
        return rel is not None and any(entry[0] == rel for entry in self._undo)

    def undo(self, path: Path | str) -> bool:
        """Put back the override the image had before its latest correction."""
        rel = self.rel_of(path)
        for index in range(len(self._undo) - 1, -1, -1):
            if self._undo[index][0] == rel:
                _, previous = self._undo.pop(index)
                self._apply({rel: previous}, record=False)
                return True
        return False

    def _edit(self, paths: Sequence[Path | str], state: State) -> int:
        wanted: dict[str, State] = {}
        for path in paths:
            rel = self.rel_of(path)
            if rel is not None:
                wanted[rel] = state
        return self._apply(wanted, record=True)

    def _apply(self, wanted: dict[str, State], *, record: bool) -> int:
        from loupe.engine.data.labels import Overrides

        project = self._context.project
        changed = [rel for rel, state in wanted.items() if self._state_of_rel(rel) != state]
        if project is None or not changed:
            return 0
        self._check_baseline()
        relabel = dict(project.overrides.relabel)
        exclude = set(project.overrides.exclude)
        for rel in changed:
            if record:
                self._undo.append((rel, self._state_of_rel(rel)))
            relabel.pop(rel, None)
            exclude.discard(rel)
            state = wanted[rel]
            if state is not None and state[0] == "exclude":
                exclude.add(rel)
            elif state is not None:
                relabel[rel] = state[1]
        project.overrides = Overrides(relabel=relabel, exclude=exclude)
        self._context.save_project()
        self._context.statusMessage.emit(
            f"{len(changed)} correction(s) saved in the project; the image files are "
            "unchanged.")
        self.changed.emit(changed)
        return len(changed)

    # -- since the last training -------------------------------------------------------------
    def pending(self) -> int:
        """Images whose override differs from the one the current data was labelled with."""
        project = self._context.project
        if project is None:
            return 0
        self._check_baseline()
        return net_corrections(self._baseline, project.overrides)

    def mark_applied(self) -> None:
        """The current overrides are in the data (labels were re-applied)."""
        from loupe.engine.data.labels import Overrides

        project = self._context.project
        self._baseline_project = project
        current = project.overrides if project is not None else Overrides()
        self._baseline = Overrides(relabel=dict(current.relabel), exclude=set(current.exclude))

    def _check_baseline(self) -> None:
        if self._context.project is not self._baseline_project:
            self._on_project()

    def _on_project(self) -> None:
        if self._context.project is not self._baseline_project or self._baseline is None:
            self._undo.clear()
            self.mark_applied()
