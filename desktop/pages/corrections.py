"""How many corrections the user has made since the last training: net, not clicks.

Excluding an image, relabelling it and then clearing its override is no correction at
all; relabelling one image three times is one. The Results page keeps the project's
overrides as they were when the model was trained and counts the images whose override
differs now.
"""

from __future__ import annotations

from typing import Any


def _state(overrides: Any, rel: str) -> tuple[tuple[str, ...], bool]:
    return tuple(overrides.relabel.get(rel, ())), rel in overrides.exclude


def net_corrections(before: Any, after: Any) -> int:
    """Images whose override (relabel and/or exclude) differs between two
    ``engine.data.labels.Overrides``."""
    rels = set(before.relabel) | set(after.relabel) | set(before.exclude) | set(after.exclude)
    return sum(1 for rel in rels if _state(before, rel) != _state(after, rel))
