"""The architecture list as pickers and ``loupe weights list`` show it, with weights status.

It sits above both ``architectures`` and ``weights`` (the last link of the models chain),
so neither of those needs the other to answer "what can I train, and is it pretrained?".
"""

from __future__ import annotations

from typing import Any

from loupe.engine.models import weights
from loupe.engine.models.architectures import ARCHITECTURES


def describe_architectures(*, with_weights: bool = True) -> list[dict[str, Any]]:
    """Rows for pickers and ``loupe weights list``: name, family, params, size, weights.

    With ``with_weights`` the architectures whose weights are on this machine come first
    (in curated order), each row says where from and ``pretrained`` is true for them.
    """
    rows = []
    for info in ARCHITECTURES:
        row: dict[str, Any] = {
            "name": info.name,
            "family": info.family,
            "params": info.params,
            "input_size": info.input_size,
            "speed": info.speed,
            "note": info.note,
        }
        if with_weights:
            # Looked up on the module at call time: the desktop's tests replace it.
            source = weights.find_weights(info.name)
            row["weights"] = weights.status_text(source)
            row["pretrained"] = source is not None
        rows.append(row)
    if with_weights:
        rows.sort(key=lambda r: not r["pretrained"])  # stable: curated order kept within
    return rows
