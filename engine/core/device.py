"""Where torch runs and how: device choice, mixed precision, memory layout, threads.

CUDA first, then Apple's MPS, then the CPU, unless the user names one. On CUDA we use
automatic mixed precision (bf16 when the card supports it, which needs no loss scaling;
otherwise fp16 with a GradScaler), channels_last (faster convolutions on tensor cores),
pinned host memory and non-blocking copies. On the CPU we train in fp32: CPU autocast
is slower than fp32 on most desktop processors. Training and prediction both resolve their
device here, which is why it sits in ``core`` and not in ``training``.

torch is imported by the functions that need it, not by this module: the device choices
(:data:`DEVICES`) are read by the torch-free training config, the CLI's options and the
desktop's settings before torch is loaded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loupe.engine.core.errors import ConfigError

if TYPE_CHECKING:
    import torch

# The devices torch may run on here, and what a user may ask for: one of them or "auto".
DEVICE_KINDS: tuple[str, ...] = ("cpu", "cuda", "mps")
DEVICES: tuple[str, ...] = ("auto", *DEVICE_KINDS)


@dataclass(frozen=True)
class DeviceInfo:
    """The resolved device and the speed features that go with it."""

    device: torch.device
    name: str
    amp_dtype: torch.dtype | None
    use_scaler: bool
    channels_last: bool
    pin_memory: bool

    @property
    def kind(self) -> str:
        return self.device.type

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward passes (a no-op when AMP is off)."""
        import torch

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def make_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that is active only for fp16 on CUDA."""
        import torch

        return torch.amp.GradScaler("cuda", enabled=self.use_scaler)

    def describe(self) -> dict[str, object]:
        return {
            "device": self.kind,
            "device_name": self.name,
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            "channels_last": self.channels_last,
        }


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(preference: str = "auto") -> DeviceInfo:
    """Pick the device for ``preference`` ('auto', 'cpu', 'cuda', 'mps').

    Asking for a device this machine lacks is an error naming what is available, not a
    silent fall-back: the user asked for it.
    """
    import torch

    available = ["cpu"]
    if torch.cuda.is_available():
        available.insert(0, "cuda")
    if _mps_available():
        available.insert(-1, "mps")
    if preference == "auto":
        preference = available[0]
    if preference not in DEVICE_KINDS:
        raise ConfigError(f"device {preference!r} is not one of: {', '.join(DEVICES)}")
    if preference not in available:
        raise ConfigError(
            f"device {preference!r} is not available on this machine; "
            f"available: auto, {', '.join(available)}"
        )
    if preference == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return DeviceInfo(
            device=torch.device("cuda"),
            name=torch.cuda.get_device_name(0),
            amp_dtype=torch.bfloat16 if bf16 else torch.float16,
            use_scaler=not bf16,
            channels_last=True,
            pin_memory=True,
        )
    if preference == "mps":
        return DeviceInfo(torch.device("mps"), "Apple GPU (MPS)", None, False, False, False)
    return DeviceInfo(torch.device("cpu"), _cpu_name(), None, False, False, False)


def _cpu_name() -> str:
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count() or 1} cores)"


def default_threads() -> int:
    """All cores, for the command line and the desktop app alike.

    Chosen by measurement for the desktop (``tests/bench/bench_gui.py --threads 1`` vs
    ``--threads 2`` on a 2-core machine, resnet18 at 64 px on the sample): all cores
    trained at 159 images/s against 97 with one left free, and the window stayed within
    its targets either way (GUI timer lateness p99 7.4 ms vs 3.7 ms, target ≤ 16 ms): the
    GUI thread needs a slice of a core now and then, not a core of its own, and the OS
    scheduler gives it that. docs/benchmarks.md has the figures.
    """
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Set torch's intra-op thread count for the duration, then restore it.

    ``threads == 0`` means :func:`default_threads`. Restoring matters because the
    desktop runs training in-process and the rest of the app shares torch's pool.
    """
    import torch

    wanted = threads or default_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(previous)
