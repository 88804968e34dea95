"""Export a bundle to ONNX (dynamic batch) or TorchScript, with a parity check and a sidecar.

Exported models that score worse outside the training tool are the top complaint about
Teachable Machine and Lobe. So every ONNX export is checked: the same images go through
PyTorch and onnxruntime, and the largest absolute difference between their logits is
reported. A JSON sidecar next to the ``.onnx`` (same name, ``.json``) carries the classes,
thresholds and the exact preprocessing, so the model can be fed the same input elsewhere.

onnx and onnxruntime are the optional extra ``loupe[onnx]``; without them the export says
how to install them. The legacy TorchScript-based ONNX exporter is used (``dynamo=False``):
it needs no extra package (the dynamo exporter needs onnxscript) and handles every timm
CNN and ViT we ship.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loupe.engine.core.atomic import atomic_write_json, atomic_write_with
from loupe.engine.core.errors import ConfigError, LoupeError
from loupe.engine.core.events import EventCallback, Finished, Started, WarningEvent, ignore_event

if TYPE_CHECKING:
    import torch

    from loupe.engine.inference.predict import Predictor

INSTALL_HINT = (
    'ONNX export needs the optional packages onnx and onnxruntime: pip install "loupe[onnx]" '
    "(in a source checkout: .venv/bin/pip install onnx onnxruntime)"
)
DEFAULT_OPSET = 17
DEFAULT_TOLERANCE = 1e-4
SIDECAR_FORMAT = "loupe-onnx-sidecar"
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and how closely it matches PyTorch."""

    path: Path
    sidecar: Path | None
    max_abs_diff: float | None
    checked: int
    tolerance: float

    @property
    def parity_ok(self) -> bool:
        return self.max_abs_diff is not None and self.max_abs_diff <= self.tolerance


def require_onnx() -> tuple[Any, Any]:
    """Import onnx and onnxruntime, or raise a LoupeError that says how to install them.

    onnxruntime's telemetry is switched off before any session exists: with onnxruntime
    imported before torch, ``torch.onnx.export`` and a session otherwise lead to DNS
    lookups of the telemetry host compiled into it (mobile.events.data.microsoft.com), and
    Loupe never touches the network unasked. ``ORT_DISABLE_TELEMETRY`` is read when
    onnxruntime is imported, so it is set first; ``disable_telemetry_events()`` covers an
    onnxruntime that someone imported earlier (measured with strace on onnxruntime 1.32:
    the API call alone does not stop the lookups, the variable does).
    """
    if "onnxruntime" not in sys.modules:
        os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise LoupeError(f"{INSTALL_HINT} (missing: {err.name})") from None
    disable = getattr(onnxruntime, "disable_telemetry_events", None)
    if callable(disable):
        disable()
    return onnx, onnxruntime


def export_onnx(
    predictor: Predictor,
    path: str | Path,
    *,
    check_images: Sequence[str | Path] = (),
    check_count: int = 4,
    opset: int = DEFAULT_OPSET,
    tolerance: float = DEFAULT_TOLERANCE,
    on_event: EventCallback = ignore_event,
) -> ExportResult:
    """Write ``path`` (.onnx) and its sidecar; check parity on a few images.

    ``check_images`` are real pictures to compare on (through the same preprocessing);
    without them, ``check_count`` seeded random pictures are used. The batch dimension is
    dynamic, and the check runs the whole batch at once, which exercises that.
    """
    onnx, ort = require_onnx()
    path = Path(path).expanduser()
    if path.suffix.lower() != ".onnx":
        raise ConfigError(f"ONNX file {path} must end in .onnx")
    on_event(Started("export", info={"format": "onnx", "path": str(path)}))
    checked: dict[str, Any] = {}

    def write(tmp: Path) -> None:  # replaces ``path`` only once the file passed its checks
        _torch_onnx_export(predictor, tmp, opset)
        if any(other != tmp for other in tmp.parent.iterdir()):
            # Over 2 GB, ONNX keeps the weights in files beside the model; one file only here.
            raise LoupeError(f"cannot export {path}: the model is too large for one ONNX file")
        onnx.checker.check_model(str(tmp))
        checked["batch"] = batch = _check_batch(predictor, check_images, check_count)
        checked["diff"] = _parity(predictor, ort, tmp, batch)

    _write_new(path, write)
    batch, diff = checked["batch"], checked["diff"]
    sidecar = atomic_write_json(sidecar_path(path), sidecar_json(predictor, diff, len(batch)))
    result = ExportResult(path, sidecar, diff, len(batch), tolerance)
    if not result.parity_ok:
        on_event(WarningEvent(
            "export-parity",
            f"ONNX and PyTorch logits differ by up to {diff:.2e} (tolerance {tolerance:.0e})",
        ))
    on_event(Finished("export", {"path": str(path), "max_abs_diff": diff}))
    return result


def _write_new(path: Path, write: Any) -> None:
    """Write ``path`` atomically through ``write(tmp)`` (core.atomic: the usual file mode,
    a full disk said in one line). An unwritable destination is a plain error naming the
    file, not a traceback."""
    try:
        atomic_write_with(path, write)
    except LoupeError:
        raise
    except OSError as err:
        if err.filename not in (None, str(path)):
            raise  # about another file (an image to check with): its own message
        raise LoupeError(f"cannot write {path}: {err.strerror or err}") from err


def sidecar_path(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".json")


def _torch_onnx_export(predictor: Predictor, path: Path, opset: int) -> None:
    import torch

    size = predictor.preprocessing.size
    dummy = torch.zeros(1, 3, size, size, device=predictor.device)
    with warnings.catch_warnings():
        # The legacy exporter announces its deprecation; it is our deliberate choice.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            torch.onnx.export(
                predictor.model,
                (dummy,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        except (RuntimeError, torch.onnx.errors.OnnxExporterError) as err:
            raise LoupeError(
                f"ONNX export of {predictor.arch or 'the model'} failed (opset {opset}): {err}"
            ) from err


def _check_batch(
    predictor: Predictor, images: Sequence[str | Path], count: int
) -> torch.Tensor:
    """Normalized inputs for the parity check, through the prediction preprocessing
    (``Predictor.prepare``: the bundle's own resize method)."""
    import numpy as np
    import torch
    from PIL import Image

    if images:
        return torch.stack([predictor.prepare(p).tensor for p in images])
    if count < 1:
        raise ConfigError(f"the parity check needs at least one image, got {count}")
    rng = np.random.default_rng(0)
    size = predictor.preprocessing.presize + 7
    pictures = [
        Image.fromarray(rng.integers(0, 256, (size, size + 5, 3), dtype=np.uint8))
        for _ in range(count)
    ]
    return torch.stack([predictor.prepare(p).tensor for p in pictures])


def _parity(predictor: Predictor, ort: Any, path: Path, batch: torch.Tensor) -> float:
    """Largest absolute difference between PyTorch and onnxruntime logits on ``batch``."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = predictor.logits(batch).numpy()
    (onnx_logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch.cpu().numpy()})
    import numpy as np

    return float(np.max(np.abs(onnx_logits - reference)))


def sidecar_json(predictor: Predictor, max_abs_diff: float | None, checked: int) -> dict:
    """Everything needed to feed the model and read its output outside Loupe."""
    pre = predictor.preprocessing
    return {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "architecture": predictor.arch,
        "classes": list(predictor.classes),
        "multi_label": predictor.multi_label,
        "thresholds": [predictor.thresholds[c] for c in predictor.classes]
        if predictor.multi_label
        else None,
        "preprocessing": pre.to_json(),
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, pre.size, pre.size],
            "dtype": "float32",
            "layout": "NCHW, RGB",
            "resize": pre.resize,
            "recipe": (
                f"apply EXIF orientation; convert to RGB; {pre.recipe()}; scale to 0..1; "
                "subtract mean and divide by std per channel"
            ),
        },
        "output": {
            "name": OUTPUT_NAME,
            "activation": "sigmoid" if predictor.multi_label else "softmax",
        },
        "parity": {"max_abs_diff": max_abs_diff, "images": checked},
    }


def export_torchscript(predictor: Predictor, path: str | Path) -> Path:
    """A traced TorchScript file (``torch.jit.load`` elsewhere), plus the same sidecar.

    Optional: PyTorch has deprecated TorchScript in favour of ``torch.export``; ONNX is the
    portable format we recommend. Kept for runtimes that still load TorchScript (LibTorch).
    """
    import torch

    path = Path(path).expanduser()
    if path.suffix.lower() not in (".pt", ".ts", ".torchscript"):
        raise ConfigError(f"TorchScript file {path} must end in .pt, .ts or .torchscript")
    size = predictor.preprocessing.size
    dummy = torch.zeros(1, 3, size, size, device=predictor.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(predictor.model, dummy)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit is deprecated, still works
            torch.jit.save(traced, str(tmp))

    _write_new(path, write)
    atomic_write_json(path.with_suffix(".json"), sidecar_json(predictor, None, 0))
    return path


def read_sidecar(path: str | Path) -> dict:
    """Load a sidecar written by :func:`export_onnx` (for tools and tests)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("format") != SIDECAR_FORMAT:
        raise ConfigError(f"{path} is not a Loupe ONNX sidecar")
    return data
