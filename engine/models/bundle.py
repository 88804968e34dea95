"""The model bundle: ONE ``.loupe`` file, safetensors weights + JSON metadata in its header.

Why this format: a model file is something people download and share, so loading it must
never run code. fastai's ``export.pkl`` is a pickle (loading needs the same code and can
execute anything); a ``.loupe`` file is a safetensors file whose header metadata holds
``{"loupe": "<json>"}``. Loading parses JSON and raw tensors only, then validates the
metadata against the architecture before any weight reaches a model, and every kind of
bad file gets its own message naming the file.

Layout of a safetensors file: 8 bytes little-endian header length N, N bytes of JSON
header (tensor names -> dtype, shape, data offsets; ``__metadata__`` -> str -> str), then
the raw tensor bytes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loupe.engine.core.atomic import atomic_write_with
from loupe.engine.core.errors import ConfigError, ModelFileError, WriteError
from loupe.engine.core.formats import BUNDLE_SUFFIX
from loupe.engine.core.outputs import check_writable  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import torch
    from torch import nn

# 2: preprocessing states its resize method (crop, squish, pad). Version 1 bundles have no
# such field and were all "crop"; they still load. Older Loupes refuse version 2 rather than
# silently center-cropping images for a model trained on squished or padded ones.
FORMAT_VERSION = 2
META_KEY = "loupe"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit

# Bounds on untrusted metadata, checked before anything is built (issue 13). Sizes mirror
# training.config.MIN_SIZE..MAX_SIZE (models may not import training; a test pins them).
MIN_SIZE, MAX_SIZE = 16, 1024
MAX_PRESIZE = 2 * MAX_SIZE
MAX_CLASSES = 100_000
MAX_CLASS_NAME = 1_000
MAX_JSON_DEPTH = 32
MAX_SUMMARY_KEYS = 200  # entries in ``training`` / ``versions``
# Characters of ``training`` / ``versions`` as JSON. Generous: ``training`` holds the
# confusion matrix and per-class report, which grow with the square of the class count.
MAX_SUMMARY_TEXT = 64 * 1024 * 1024
MAX_PARAMETERS = 2_000_000_000  # counted on the meta device before the real build
MAX_TENSOR_DIMS = 8
# Tensor dtypes a bundle may hold. Loupe writes float32 weights and int64 BatchNorm
# counters only; float16/bfloat16/float8/int/bool/complex weights are refused rather than
# converted (a converted half-precision bundle would silently predict differently). After
# this header check each tensor's dtype must also equal the architecture's own.
_DTYPE_BYTES = {"F32": 4, "I64": 8}
# Fields of ``training`` that Loupe reads back (evaluate) and their required JSON types.
_TRAINING_TYPES: dict[str, tuple[type, ...]] = {
    "label_rule": (str,), "split_rule": (str,), "run_dir": (str,), "seed": (int,),
}


@dataclass(frozen=True)
class BundleMeta:
    """What a bundle says about its model; everything needed to predict elsewhere.

    ``preprocessing`` is an ``loupe.engine.data.transforms.Preprocessing`` (size, presize,
    interpolation, mean, std, resize method). ``training`` is a free summary (epochs, final metrics,
    label rule, split rule, seed, run id); ``versions`` records torch/timm/loupe.
    """

    arch: str
    classes: tuple[str, ...]
    preprocessing: Any
    multi_label: bool = False
    thresholds: tuple[float, ...] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def architecture(self) -> str:
        return self.arch

    def to_json(self) -> dict[str, Any]:
        prep = self.preprocessing
        return {
            "format_version": self.format_version,
            "architecture": self.arch,
            "classes": list(self.classes),
            "multi_label": self.multi_label,
            "thresholds": list(self.thresholds) if self.thresholds is not None else None,
            "preprocessing": prep.to_json() if hasattr(prep, "to_json") else dict(prep),
            "training": self.training,
            "versions": self.versions,
        }

    @classmethod
    def from_json(cls, obj: Any, *, source: str = "bundle") -> BundleMeta:
        """Validate untrusted metadata; ModelFileError names ``source`` and the bad field."""
        if not isinstance(obj, dict):
            raise ModelFileError(f"{source}: metadata is not a JSON object")
        version = obj.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ModelFileError(f"{source}: metadata has no integer format_version")
        if version < 1 or version > FORMAT_VERSION:
            raise ModelFileError(
                f"{source}: unsupported bundle format_version {version}; this Loupe reads "
                f"versions 1..{FORMAT_VERSION} (a newer Loupe wrote it?)"
            )
        arch = obj.get("architecture")
        classes = obj.get("classes")
        if not isinstance(arch, str) or not arch or len(arch) > 200:
            raise ModelFileError(f"{source}: metadata has no architecture name")
        if not isinstance(classes, list) or not classes or not all(
            isinstance(c, str) for c in classes
        ):
            raise ModelFileError(f"{source}: metadata 'classes' must be a non-empty list of names")
        if len(classes) > MAX_CLASSES:
            raise ModelFileError(
                f"{source}: metadata lists {len(classes)} classes; at most {MAX_CLASSES} allowed"
            )
        if any(len(c) > MAX_CLASS_NAME for c in classes):
            raise ModelFileError(
                f"{source}: a class name is longer than {MAX_CLASS_NAME} characters"
            )
        multi_label = obj.get("multi_label", False)
        if not isinstance(multi_label, bool):
            raise ModelFileError(f"{source}: metadata 'multi_label' must be true or false")
        thresholds = _thresholds(obj.get("thresholds"), len(classes), source)
        return cls(
            arch=arch,
            classes=tuple(classes),
            preprocessing=_preprocessing(obj.get("preprocessing"), source),
            multi_label=multi_label,
            thresholds=thresholds,
            training=_training(obj.get("training"), source),
            versions=_versions(obj.get("versions"), source),
            format_version=version,
        )


@dataclass
class LoadedBundle:
    path: Path
    model: nn.Module  # eval mode, on the CPU
    meta: BundleMeta


def library_versions() -> dict[str, str]:
    import timm
    import torch

    from loupe.engine import __version__

    return {"torch": torch.__version__, "timm": timm.__version__, "loupe": __version__}


# --------------------------------------------------------------------------- saving


def save_bundle(path: Path | str, model: nn.Module, meta: BundleMeta | dict[str, Any]) -> Path:
    """Write ``model`` and ``meta`` atomically as one ``.loupe`` file; return its path.

    ``meta`` may be a BundleMeta or its JSON dict (``architecture``, ``classes``,
    ``preprocessing``, ...); library versions are filled in when missing.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != BUNDLE_SUFFIX:
        raise ConfigError(f"model file {path} must end in {BUNDLE_SUFFIX}")
    if isinstance(meta, dict):
        meta = BundleMeta.from_json({"format_version": FORMAT_VERSION, **meta}, source=str(path))
    if not meta.versions:
        meta = replace(meta, versions=library_versions())
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    _check_outputs(path, model, meta)
    tensors = {
        name: tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in model.state_dict().items()
    }
    header = {META_KEY: json.dumps(meta.to_json(), sort_keys=True), "format": "pt"}
    size = sum(t.numel() * t.element_size() for t in tensors.values()) + len(header[META_KEY])
    try:
        # save_file streams to disk without the GIL (no bytes copy of the weights), so a
        # GUI thread stays responsive while a bundle is written.
        return atomic_write_with(
            path, lambda tmp: save_file(tensors, tmp, metadata=header), expected_bytes=size
        )
    except WriteError:
        raise  # a full disk: already one line naming the file and the space it needs
    except OSError as err:
        raise ModelFileError(f"cannot write model file {path}: {err.strerror or err}") from err


def _check_outputs(path: Path, model: nn.Module, meta: BundleMeta) -> None:
    """Refuse to write a bundle whose classifier and class list disagree."""
    from loupe.engine.models.anatomy import head_prefixes

    modules = dict(model.named_modules())
    for head in head_prefixes(model):
        out = getattr(modules[head], "out_features", None)
        if out is not None and out != len(meta.classes):
            raise ConfigError(
                f"cannot save {path}: the model has {out} outputs but {len(meta.classes)} "
                "class names were given"
            )


# --------------------------------------------------------------------------- loading


def read_bundle_meta(path: Path | str) -> BundleMeta:
    """Metadata only (reads the header, not the weights): fast enough for model lists."""
    path = Path(path)
    header, _size = _read_header(path)
    return _meta_from_header(header, path)


def load_bundle(path: Path | str) -> LoadedBundle:
    """Load and validate a bundle; never unpickles. ModelFileError says what is wrong."""
    from loupe.engine.models.anatomy import head_prefixes
    from loupe.engine.models.architectures import is_known_arch
    from loupe.engine.models.factory import create_model

    path = Path(path)
    header, _size = _read_header(path)
    meta = _meta_from_header(header, path)
    if not is_known_arch(meta.arch):
        raise ModelFileError(
            f"{path}: unknown architecture {meta.arch!r} (not in this Loupe's timm "
            f"{_timm_version()}); it cannot be rebuilt"
        )
    # Names, shapes and dtypes are checked against the architecture built on the meta
    # device (no memory), so a tiny header naming a huge network or listing a million
    # classes is refused before anything is allocated or read.
    skeleton = _meta_model(path, meta)
    expected = skeleton.state_dict()
    _check_class_count(path, meta, _header_shapes(header), head_prefixes(skeleton))
    _check_names_and_shapes(path, expected, _header_shapes(header))
    tensors = _read_tensors(path)
    _check_dtypes(path, expected, tensors)
    _check_finite(tensors, path)
    model = create_model(meta.arch, len(meta.classes))
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return LoadedBundle(path=path, model=model, meta=meta)


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """Sniff, bounds-check and parse the safetensors header of ``path``."""
    if not path.exists():
        raise ModelFileError(f"model file {path} not found")
    if not path.is_file():
        raise ModelFileError(f"model file {path} is not a file")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        _reject_foreign(path, head)
        if len(head) < 8:
            raise ModelFileError(f"{path} is truncated: {size} bytes is too short for a bundle")
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER:
            _reject_pickle(path)
            raise ModelFileError(f"{path} is not a Loupe bundle (no safetensors header)")
        raw = handle.read(length)
    if len(raw) < length:
        raise ModelFileError(
            f"{path} is truncated: the header needs {length} bytes, the file ends after "
            f"{len(raw)}"
        )
    try:
        header = _parse_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        _reject_pickle(path)
        raise ModelFileError(f"{path}: the bundle header is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the bundle header is not a JSON object")
    _check_header_entries(path, header, size - 8 - length)
    return header, size


def _parse_json(text: str) -> Any:
    """``json.loads`` that refuses nesting deeper than MAX_JSON_DEPTH (never RecursionError)."""
    try:
        value = json.loads(text)
    except RecursionError as err:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from err
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return value


def _check_header_entries(path: Path, header: dict[str, Any], available: int) -> None:
    """Check the safetensors header ourselves before safetensors reads it.

    Every tensor entry needs an allowed dtype, a shape of non-negative ints and
    ``data_offsets`` = [begin, end] of non-negative ints, within the file and exactly as
    long as the shape says.
    """
    extra = header.get("__metadata__")
    if extra is not None and not (
        isinstance(extra, dict) and all(isinstance(v, str) for v in extra.values())
    ):
        raise ModelFileError(f"{path}: the header's __metadata__ must map names to strings")
    needed = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise ModelFileError(f"{path}: tensor {name!r} has no valid header entry")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _DTYPE_BYTES:
            raise ModelFileError(
                f"{path}: tensor {name!r} has dtype {dtype!r}; a Loupe bundle holds float32 "
                "weights (F32) and int64 counters (I64) only"
            )
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_TENSOR_DIMS
            or not all(_is_count(d) for d in shape)
        ):
            raise ModelFileError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_count(o) for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise ModelFileError(
                f"{path}: tensor {name!r} has invalid data_offsets {offsets!r} "
                "(need [begin, end], non-negative integers)"
            )
        if offsets[1] - offsets[0] != math.prod(shape) * _DTYPE_BYTES[dtype]:
            raise ModelFileError(
                f"{path}: tensor {name!r}: data_offsets do not match its shape and dtype"
            )
        needed = max(needed, offsets[1])
    if needed > available:
        raise ModelFileError(
            f"{path} is truncated: the weights need {needed} bytes after the header, "
            f"only {available} are there"
        )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _header_shapes(header: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _reject_foreign(path: Path, head: bytes) -> None:
    """Name pickles and PyTorch zip archives before anything else reads them."""
    if head[:2] == b"PK":
        raise ModelFileError(
            f"{path} is a pickle/PyTorch file, not a Loupe bundle; Loupe never loads "
            "pickles (this one is a torch.save zip archive)"
        )
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        raise ModelFileError(
            f"{path} is a pickle/PyTorch file, not a Loupe bundle; Loupe never loads pickles"
        )


def _reject_pickle(path: Path) -> None:
    """Recognise older pickle protocols (no magic byte) by parsing opcodes, never running them.

    ``pickletools.genops`` only decodes the opcode stream; nothing is imported or called.
    """
    import pickletools

    data = path.read_bytes()[: 16 * 1024 * 1024]
    try:
        for opcode, _arg, _pos in pickletools.genops(data):
            if opcode.name == "STOP":
                raise ModelFileError(
                    f"{path} is a pickle/PyTorch file, not a Loupe bundle; Loupe never "
                    "loads pickles"
                )
    except (ValueError, struct.error, UnicodeDecodeError, IndexError):
        return


def _meta_from_header(header: dict[str, Any], path: Path) -> BundleMeta:
    extra = header.get("__metadata__")
    if not isinstance(extra, dict) or META_KEY not in extra:
        raise ModelFileError(
            f"{path} has no Loupe metadata in its header (a plain safetensors file?); "
            "it is not a Loupe bundle"
        )
    try:
        obj = _parse_json(extra[META_KEY])
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: the Loupe metadata is not valid JSON ({err})") from err
    return BundleMeta.from_json(obj, source=str(path))


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        # safe_open maps the file instead of copying its bytes under the GIL.
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, ValueError, OSError) as err:
        raise ModelFileError(f"{path}: the weights cannot be read ({err})") from err


def _meta_model(path: Path, meta: BundleMeta) -> nn.Module:
    """``meta.arch`` built on the meta device (no memory); refuses an oversized network."""
    import timm
    import torch

    try:
        with torch.device("meta"):
            model = timm.create_model(meta.arch, pretrained=False, num_classes=len(meta.classes))
    except Exception as err:  # noqa: BLE001  (any failure of an untrusted build is one line)
        raise ModelFileError(f"{path}: architecture {meta.arch!r} cannot be built ({err})") from err
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        raise ModelFileError(
            f"{path}: architecture {meta.arch!r} with {len(meta.classes)} classes has "
            f"{count:,} parameters; at most {MAX_PARAMETERS:,} are loaded"
        )
    return model


def _check_dtypes(
    path: Path, expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]
) -> None:
    for name, want in expected.items():
        got = tensors[name]
        if got.dtype != want.dtype:
            raise ModelFileError(
                f"{path}: tensor {name!r} is {got.dtype}, the architecture needs {want.dtype}"
            )


def _check_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    import torch

    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(f"{path}: tensor {name!r} contains NaN or infinite values")


def _check_class_count(
    path: Path, meta: BundleMeta, shapes: dict[str, tuple[int, ...]], heads: tuple[str, ...]
) -> None:
    for head in heads:
        shape = shapes.get(f"{head}.weight")
        if shape and shape[0] != len(meta.classes):
            raise ModelFileError(
                f"{path}: class count mismatch: the metadata lists {len(meta.classes)} "
                f"classes but the classifier {head!r} has {shape[0]} outputs"
            )


def _check_names_and_shapes(
    path: Path, expected: dict[str, torch.Tensor], tensors: dict[str, tuple[int, ...]]
) -> None:
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        raise ModelFileError(
            f"{path}: the weights do not match the architecture: "
            f"missing {_few(missing)}; unexpected {_few(unexpected)}"
        )
    for name, want in expected.items():
        got = tensors[name]
        if tuple(got) != tuple(want.shape):
            raise ModelFileError(
                f"{path}: tensor {name!r} has shape {tuple(got)}, the architecture "
                f"needs {tuple(want.shape)}"
            )


def _few(names: list[str]) -> str:
    if not names:
        return "none"
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _thresholds(value: Any, n_classes: int, source: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n_classes:
        raise ModelFileError(f"{source}: 'thresholds' must list one number per class")
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError, OverflowError) as err:
        raise ModelFileError(f"{source}: 'thresholds' must be numbers ({err})") from err
    if not all(0.0 <= v <= 1.0 and not math.isnan(v) for v in values):
        raise ModelFileError(f"{source}: every threshold must be between 0 and 1")
    return values


def _preprocessing(value: Any, source: str) -> Any:
    """Build ``loupe.engine.data.transforms.Preprocessing``, which validates every field itself."""
    from loupe.engine.data.transforms import Preprocessing

    try:
        prep = Preprocessing.from_json(value)
    except (ConfigError, TypeError, ValueError, OverflowError) as err:
        raise ModelFileError(f"{source}: invalid preprocessing metadata ({err})") from err
    if not MIN_SIZE <= prep.size <= MAX_SIZE:
        raise ModelFileError(
            f"{source}: preprocessing size {prep.size} is outside {MIN_SIZE}..{MAX_SIZE}"
        )
    if prep.presize > MAX_PRESIZE:
        raise ModelFileError(
            f"{source}: preprocessing presize {prep.presize} is above {MAX_PRESIZE}"
        )
    return prep


def _summary(value: Any, name: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ModelFileError(f"{source}: metadata {name!r} must be a JSON object")
    if len(value) > MAX_SUMMARY_KEYS or len(json.dumps(value)) > MAX_SUMMARY_TEXT:
        raise ModelFileError(f"{source}: metadata {name!r} is too large")
    return dict(value)


def _training(value: Any, source: str) -> dict[str, Any]:
    training = _summary(value, "training", source)
    for key, types in _TRAINING_TYPES.items():
        item = training.get(key)
        if item is not None and (not isinstance(item, types) or isinstance(item, bool)):
            raise ModelFileError(
                f"{source}: metadata training.{key} must be a {types[0].__name__}, "
                f"got {type(item).__name__}"
            )
    return training


def _versions(value: Any, source: str) -> dict[str, str]:
    versions = _summary(value, "versions", source)
    if not all(isinstance(v, str) for v in versions.values()):
        raise ModelFileError(f"{source}: metadata 'versions' must map names to strings")
    return versions


def _timm_version() -> str:
    import timm

    return timm.__version__
