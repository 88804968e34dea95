"""Seeded fuzzing of the bundle reader, run in a fresh process by test_hostile_models.py.

``python -m tests.engine.fuzz_bundle FOLDER CASES SEED`` saves a tiny valid ``.loupe``
(timm's ``test_efficientnet``, 100k parameters) in FOLDER, then for each case writes one
random mutation of it — header bytes flipped, a metadata field or a tensor entry replaced
by junk (including values that once made the reader allocate gigabytes: a giant
architecture, 100,000 classes, a 10^9-pixel input size), the file cut or extended — and
reads it the way every command does: ``read_bundle_meta`` (header and metadata schema),
then, when that passes, ``load_bundle`` (tensor checks, the real model). The outcome of
each must be a loaded bundle or a ModelFileError; anything else is recorded with its
traceback. It prints one JSON line: counts, unexpected errors, the peak-RSS growth over
the loop (``ru_maxrss``; a fresh process, so the high-water mark is this loop's), the
slowest case and the total time.
"""

from __future__ import annotations

import json
import random
import resource
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ARCH = "test_efficientnet"
JUNK: list[Any] = [None, -1, 0, 10**12, 1.5, "x", [], {}, [1, 2], True, "F8_E4M3",
                   float("nan"), "\x1b]0;title\x07", {"a": [[[[]]]]}]
# Per metadata field, values that once allocated gigabytes before being refused.
EXPENSIVE: dict[str, list[Any]] = {
    "architecture": ["vit_giant_patch14_224", "convnext_xxlarge", "resnet18"],
    "classes": [[str(i) for i in range(100_000)], ["a"] * 3, ["a", "b", "c"]],
    "preprocessing.size": [10**9, 20000, 8],
    "preprocessing.presize": [10**7, 23000],
}
PREPROCESSING = {"size": 32, "presize": 37, "mean": [0.5] * 3, "std": [0.2] * 3}


def _max_rss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _with_header(header: dict[str, Any], body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


class Mutator:
    """Random mutations of one valid bundle's bytes."""

    def __init__(self, data: bytes, rng: random.Random) -> None:
        self.data, self.rng = data, rng
        (self.length,) = struct.unpack("<Q", data[:8])
        self.header = json.loads(data[8 : 8 + self.length])
        self.meta = json.loads(self.header["__metadata__"]["loupe"])
        self.body = data[8 + self.length :]

    def __call__(self) -> bytes:
        # Cutting or extending mostly tests one check (the length), and an extended file
        # costs a full load: it is drawn less often than the header mutations.
        kinds = [self.flip, self.field, self.entry, self.cut]
        return self.rng.choices(kinds, weights=(4, 3, 2, 1))[0]()

    def flip(self) -> bytes:
        raw = bytearray(self.data[: 8 + self.length])
        for _ in range(self.rng.randint(1, 4)):
            raw[self.rng.randrange(len(raw))] = self.rng.randrange(256)
        return bytes(raw) + self.body

    def field(self) -> bytes:
        edited = json.loads(json.dumps(self.meta))
        key = self.rng.choice([*edited, *EXPENSIVE, "training.label_rule", "preprocessing.mean"])
        value = self.rng.choice(JUNK + EXPENSIVE.get(key, []))
        target, _, sub = key.partition(".")
        if sub and isinstance(edited.get(target), dict):
            edited[target][sub] = value
        else:
            edited[target] = value
        meta = json.dumps(edited, allow_nan=True)
        return _with_header({**self.header, "__metadata__": {"loupe": meta}}, self.body)

    def entry(self) -> bytes:
        edited = json.loads(json.dumps(self.header))
        name = self.rng.choice([k for k in edited if k != "__metadata__"])
        edited[name][self.rng.choice(["dtype", "shape", "data_offsets"])] = self.rng.choice(JUNK)
        return _with_header(edited, self.body)

    def cut(self) -> bytes:
        at = self.rng.randrange(len(self.data))
        return self.data[:at] if self.rng.random() < 0.5 else self.data + b"\0" * at


def run(folder: Path, cases: int, seed: int) -> dict[str, Any]:
    from loupe.engine.core.errors import ModelFileError
    from loupe.engine.models import bundle, factory

    good = bundle.save_bundle(folder / "good.loupe", factory.create_model(ARCH, 2), {
        "architecture": ARCH, "classes": ["a", "b"], "preprocessing": PREPROCESSING,
    })
    bundle.load_bundle(good)  # warm: imports, timm's registry, the first build
    mutate = Mutator(good.read_bytes(), random.Random(seed))
    path = folder / "case.loupe"
    outcome = {"loaded": 0, "refused": 0, "full_loads": 0}
    unexpected: list[str] = []
    slowest = 0.0
    baseline = _max_rss_bytes()
    started = time.perf_counter()
    for case in range(cases):
        path.write_bytes(mutate())
        began = time.perf_counter()
        try:
            bundle.read_bundle_meta(path)
            outcome["full_loads"] += 1
            bundle.load_bundle(path)
            outcome["loaded"] += 1
        except ModelFileError as err:
            outcome["refused"] += 1
            if "\n" in str(err) or "Traceback" in str(err):
                unexpected.append(f"case {case}: a ModelFileError of several lines: {err!r}")
        except BaseException as err:  # noqa: BLE001 - recording is the point
            unexpected.append(f"case {case}: {type(err).__name__}: {err}\n"
                              + "".join(traceback.format_exc(limit=6)))
        slowest = max(slowest, time.perf_counter() - began)
    return {
        **outcome, "cases": cases, "unexpected": unexpected[:10],
        "unexpected_count": len(unexpected),
        "rss_growth": _max_rss_bytes() - baseline,
        "slowest_case_s": round(slowest, 3), "seconds": round(time.perf_counter() - started, 2),
    }


if __name__ == "__main__":
    result = run(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
    print(json.dumps(result))
