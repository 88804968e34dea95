"""A 2-D map of images from their penultimate-layer features (the analysis "embedding").

Similar-looking images (to the model) land close together, so clusters of one class, an
island of mistakes, or two classes that overlap are visible at a glance. PCA (through
``torch.pca_lowrank``, seeded so the map is the same every time) needs nothing extra;
t-SNE is used only when scikit-learn is installed, because it is an optional dependency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loupe.engine.core.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch

EMBEDDING_METHODS = ("pca", "tsne", "auto")


@dataclass(frozen=True)
class EmbeddingMap:
    """2-D coordinates of the validation images from their penultimate features."""

    method: str
    coords: np.ndarray  # N×2
    actual: tuple[str, ...]
    predicted: tuple[str, ...]
    paths: tuple[Path, ...]


def embedding_map(
    features: torch.Tensor,
    *,
    actual: Sequence[str],
    predicted: Sequence[str],
    paths: Sequence[Path],
    method: str = "pca",
) -> EmbeddingMap | None:
    """Project N×D ``features`` to 2-D; None with fewer than 3 images (nothing to map)."""
    import numpy as np

    if method not in EMBEDDING_METHODS:
        raise ConfigError(
            f"unknown embedding map {method!r}; choose one of: {', '.join(EMBEDDING_METHODS)}"
        )
    if features.shape[0] < 3:
        return None
    chosen = _embedding_method(method, features.shape[0])
    if chosen == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (features.shape[0] - 1) // 3)))
        coords = TSNE(n_components=2, perplexity=perplexity, init="pca",
                      random_state=0).fit_transform(features.numpy())
    else:
        coords = _pca_2d(features)
    return EmbeddingMap(
        method=chosen,
        coords=np.asarray(coords, dtype=np.float32),
        actual=tuple(actual),
        predicted=tuple(predicted),
        paths=tuple(paths),
    )


def _embedding_method(method: str, count: int) -> str:
    import importlib.util

    has_sklearn = importlib.util.find_spec("sklearn") is not None
    if method == "tsne" and not has_sklearn:
        raise ConfigError(
            "t-SNE needs scikit-learn, which is not installed: "
            "pip install scikit-learn (or use the PCA map)"
        )
    if method == "auto":
        return "tsne" if has_sklearn and count >= 10 else "pca"
    return method


def _pca_2d(features: torch.Tensor) -> np.ndarray:
    """Project centred features on their two main directions (torch.pca_lowrank)."""
    import numpy as np
    import torch

    x = features.double()
    centred = x - x.mean(dim=0, keepdim=True)
    q = min(2, *centred.shape)
    with torch.random.fork_rng():  # pca_lowrank is randomized: same map every time
        torch.manual_seed(0)
        _, _, v = torch.pca_lowrank(centred, q=q, center=False)
    coords = (centred @ v[:, :q]).numpy()
    if q < 2:  # one feature or two images: pad so callers always get N×2
        coords = np.concatenate([coords, np.zeros((coords.shape[0], 2 - q))], axis=1)
    return coords.astype(np.float32)
