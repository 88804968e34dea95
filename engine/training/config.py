"""The training settings, as one frozen, validated, JSON-able value.

A run's ``config.json`` is this object; ``loupe train`` flags, the desktop's Train page
and ``resume`` all build it, so validation lives here once (``__post_init__``) and every
message names the bad value and the allowed options.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from loupe.engine.core.device import DEVICES
from loupe.engine.core.errors import ConfigError
from loupe.engine.core.formats import BUNDLE_SUFFIX
from loupe.engine.data.resize import DEFAULT_RESIZE, LEGACY_RESIZE, check_resize

PRETRAINED_CHOICES = ("auto", "none")
DEFAULT_LR = 1e-3  # fastai's default ``lr_max`` for fit_one_cycle (training from scratch)
DEFAULT_FINE_TUNE_LR = 2e-3  # fastai's ``fine_tune(base_lr=2e-3)`` for pretrained runs
AUTO_ARCH = "auto"  # the best architecture whose pretrained weights are installed
MIN_SIZE, MAX_SIZE = 16, 1024


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run does (not what data it sees).

    ``arch == "auto"`` means the best architecture whose pretrained weights are on this
    machine (``loupe.engine.models.weights.best_installed_arch``; resolved when the run starts and
    recorded in the run's config); ``batch_size == 0`` means "pick for the device";
    ``lr is None`` means fastai's default for the run: ``DEFAULT_FINE_TUNE_LR`` when
    pretrained weights are used, ``DEFAULT_LR`` from random init (also resolved at start);
    ``pretrained`` is ``"auto"`` (use weights found on this machine, else random init),
    ``"none"`` (random init on purpose) or a weights file path; ``threads == 0`` means
    all cores (``loupe.engine.core.device.default_threads``); ``out`` is where the bundle goes
    (``None``: inside the run folder). ``resize`` is fastai's resize method, one of
    ``loupe.engine.data.resize.RESIZE_METHODS`` (crop, squish, pad).
    """

    arch: str = AUTO_ARCH
    epochs: int = 1
    freeze_epochs: int = 1
    size: int = 224
    batch_size: int = 0
    lr: float | None = None
    pretrained: str = "auto"
    device: str = "auto"
    seed: int = 42
    flip: bool = True
    rotate: float = 10.0
    lighting: float = 0.2
    progressive_resize: bool = False
    threads: int = 0
    wd: float = 0.01
    out: str | None = None
    resize: str = DEFAULT_RESIZE

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or not self.arch.strip():
            raise ConfigError(
                f"arch {self.arch!r} is not a model name (e.g. tf_efficientnet_lite0, "
                f"resnet34, or {AUTO_ARCH!r})"
            )
        _check_int("epochs", self.epochs, 1, 10_000)
        _check_int("freeze_epochs", self.freeze_epochs, 0, 10_000)
        _check_int("size", self.size, MIN_SIZE, MAX_SIZE)
        _check_int("batch_size", self.batch_size, 0, 65_536, note=" (0 means automatic)")
        _check_int("seed", self.seed, 0, 2**32 - 1)
        _check_int("threads", self.threads, 0, 4096, note=" (0 means all cores)")
        if self.lr is not None and not (_is_number(self.lr) and 0 < self.lr <= 10):
            raise ConfigError(f"lr {self.lr!r} must be a number in (0, 10], e.g. 1e-3")
        if self.device not in DEVICES:
            raise ConfigError(f"device {self.device!r} is not one of: {', '.join(DEVICES)}")
        if not isinstance(self.pretrained, str) or not self.pretrained:
            raise ConfigError(
                f"pretrained {self.pretrained!r} must be 'auto', 'none' or a weights file"
            )
        if self.pretrained not in PRETRAINED_CHOICES and not Path(self.pretrained).is_file():
            raise ConfigError(
                f"pretrained {self.pretrained!r} is neither 'auto', 'none' nor an existing "
                "weights file (.safetensors or torchvision .pth)"
            )
        if not isinstance(self.flip, bool) or not isinstance(self.progressive_resize, bool):
            raise ConfigError("flip and progressive_resize must be true or false")
        if not (_is_number(self.rotate) and 0 <= self.rotate <= 45):
            raise ConfigError(f"rotate {self.rotate!r} must be degrees in [0, 45]")
        if not (_is_number(self.lighting) and 0 <= self.lighting <= 0.9):
            raise ConfigError(f"lighting {self.lighting!r} must be in [0, 0.9]")
        if not (_is_number(self.wd) and 0 <= self.wd <= 1):
            raise ConfigError(f"wd {self.wd!r} (weight decay) must be in [0, 1]")
        check_resize(self.resize)
        if self.out is not None and not str(self.out).endswith(BUNDLE_SUFFIX):
            raise ConfigError(f"out {self.out!r}: a model file must end in {BUNDLE_SUFFIX}")

    @property
    def max_lr(self) -> float:
        """The peak learning rate (``lr``; runs resolve ``None`` when they start, so
        ``DEFAULT_LR`` here only serves a config that was never resolved)."""
        return DEFAULT_LR if self.lr is None else float(self.lr)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys by name (a typo is not ignored).

        A dict without ``resize`` was written before the choice existed (an old run's
        ``config.json``, an old project): those runs trained with ``crop``, so resuming or
        retraining them keeps it rather than silently switching to the new default.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"training config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown training setting(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(known))}"
            )
        return cls(**{"resize": LEGACY_RESIZE, **data})

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> TrainConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"training config is not valid JSON: {err}") from err
        return cls.from_json(data)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _check_int(name: str, value: object, low: int, high: int, note: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} {value!r} must be a whole number in [{low}, {high}]{note}")
