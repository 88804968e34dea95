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
from loupe.engine.core.errors import ConfigError, ModelFileError
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
        if not isinstance(arch, str) or not arch:
            raise ModelFileError(f"{source}: metadata has no architecture name")
        if not isinstance(classes, list) or not classes or not all(
            isinstance(c, str) for c in classes
        ):
            raise ModelFileError(f"{source}: metadata 'classes' must be a non-empty list of names")
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
            training=dict(obj.get("training") or {}),
            versions={str(k): str(v) for k, v in (obj.get("versions") or {}).items()},
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
    try:
        # save_file streams to disk without the GIL (no bytes copy of the weights), so a
        # GUI thread stays responsive while a bundle is written.
        return atomic_write_with(path, lambda tmp: save_file(tensors, tmp, metadata=header))
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
    tensors = _read_tensors(path)
    _check_finite(tensors, path)
    model = create_model(meta.arch, len(meta.classes))
    expected = model.state_dict()
    _check_class_count(path, meta, tensors, head_prefixes(model))
    _check_names_and_shapes(path, expected, tensors)
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
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        _reject_pickle(path)
        raise ModelFileError(f"{path}: the bundle header is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the bundle header is not a JSON object")
    _check_data_length(path, header, size - 8 - length)
    return header, size


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


def _check_data_length(path: Path, header: dict[str, Any], available: int) -> None:
    ends = [
        entry["data_offsets"][1]
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    needed = max(ends, default=0)
    if needed > available:
        raise ModelFileError(
            f"{path} is truncated: the weights need {needed} bytes after the header, "
            f"only {available} are there"
        )


def _meta_from_header(header: dict[str, Any], path: Path) -> BundleMeta:
    extra = header.get("__metadata__")
    if not isinstance(extra, dict) or META_KEY not in extra:
        raise ModelFileError(
            f"{path} has no Loupe metadata in its header (a plain safetensors file?); "
            "it is not a Loupe bundle"
        )
    try:
        obj = json.loads(extra[META_KEY])
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


def _check_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    import torch

    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(f"{path}: tensor {name!r} contains NaN or infinite values")


def _check_class_count(
    path: Path, meta: BundleMeta, tensors: dict[str, torch.Tensor], heads: tuple[str, ...]
) -> None:
    for head in heads:
        weight = tensors.get(f"{head}.weight")
        if weight is not None and weight.ndim >= 1 and weight.shape[0] != len(meta.classes):
            raise ModelFileError(
                f"{path}: class count mismatch: the metadata lists {len(meta.classes)} "
                f"classes but the classifier {head!r} has {weight.shape[0]} outputs"
            )


def _check_names_and_shapes(
    path: Path, expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]
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
        if tuple(got.shape) != tuple(want.shape):
            raise ModelFileError(
                f"{path}: tensor {name!r} has shape {tuple(got.shape)}, the architecture "
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
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{source}: 'thresholds' must be numbers ({err})") from err
    if not all(0.0 <= v <= 1.0 and not math.isnan(v) for v in values):
        raise ModelFileError(f"{source}: every threshold must be between 0 and 1")
    return values


def _preprocessing(value: Any, source: str) -> Any:
    """Build ``loupe.engine.data.transforms.Preprocessing``, which validates every field itself."""
    from loupe.engine.data.transforms import Preprocessing

    try:
        return Preprocessing.from_json(value)
    except (ConfigError, TypeError, ValueError) as err:
        raise ModelFileError(f"{source}: invalid preprocessing metadata ({err})") from err


def _timm_version() -> str:
    import timm

    return timm.__version__
