"""Classification metrics as pure functions on tensors.

Single-label: ``logits`` N×C, ``targets`` N class indices. Multi-label: ``logits`` N×C,
``targets`` N×C multi-hot (0/1), predictions are ``sigmoid(logits) >= thresholds``.
Nothing here touches a model or a device, so each is unit-tested on hand-made tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of samples whose arg-max class is the target (fastai's ``accuracy``)."""
    if logits.shape[0] == 0:
        return float("nan")
    return (logits.argmax(dim=1) == targets).float().mean().item()


def error_rate(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """1 - accuracy: the metric fastai lesson 1 prints."""
    return 1.0 - accuracy(logits, targets)


def _thresholds(thresholds: float | Sequence[float] | torch.Tensor, c: int) -> torch.Tensor:
    t = torch.as_tensor(thresholds, dtype=torch.float32)
    return t.expand(c) if t.dim() == 0 else t


def multi_label_predictions(
    logits: torch.Tensor, thresholds: float | Sequence[float] | torch.Tensor = 0.5
) -> torch.Tensor:
    """Multi-hot predictions: each class is on when its probability reaches its threshold."""
    t = _thresholds(thresholds, logits.shape[1]).to(logits.device)
    return (torch.sigmoid(logits.float()) >= t).to(torch.long)


def accuracy_multi(
    logits: torch.Tensor, targets: torch.Tensor, thresholds: float | Sequence[float] = 0.5
) -> float:
    """Fraction of (sample, class) decisions that are right (fastai's ``accuracy_multi``)."""
    if logits.numel() == 0:
        return float("nan")
    preds = multi_label_predictions(logits, thresholds)
    return (preds == targets.to(torch.long)).float().mean().item()


def f1_multi(
    logits: torch.Tensor, targets: torch.Tensor, thresholds: float | Sequence[float] = 0.5
) -> float:
    """Macro-averaged F1 over classes (fastai's ``F1ScoreMulti`` default)."""
    preds = multi_label_predictions(logits, thresholds)
    rows = _prf(preds, targets.to(torch.long))
    return float(sum(r[2] for r in rows) / len(rows)) if rows else float("nan")


def _prf(preds: torch.Tensor, targets: torch.Tensor) -> list[tuple[float, float, float, int]]:
    """(precision, recall, f1, support) per column of multi-hot ``preds``/``targets``.

    A class never predicted has precision 0 (not NaN) so tables and means stay numeric.
    """
    tp = (preds & targets).sum(dim=0).float()
    predicted = preds.sum(dim=0).float()
    support = targets.sum(dim=0)
    rows = []
    for c in range(preds.shape[1]):
        p = (tp[c] / predicted[c]).item() if predicted[c] > 0 else 0.0
        r = (tp[c] / support[c]).item() if support[c] > 0 else 0.0
        f = 2 * p * r / (p + r) if p + r > 0 else 0.0
        rows.append((p, r, f, int(support[c])))
    return rows


def one_hot(indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(indices.to(torch.long), num_classes)


def per_class_report(
    preds: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]
) -> list[dict[str, float | int | str]]:
    """Precision, recall, F1 and support for each class.

    ``preds``/``targets`` are class indices (single-label) or multi-hot N×C (multi-label).
    """
    c = len(classes)
    if preds.dim() == 1:
        preds, targets = one_hot(preds, c), one_hot(targets, c)
    rows = _prf(preds.to(torch.long), targets.to(torch.long))
    return [
        {"class": name, "precision": p, "recall": r, "f1": f, "support": s}
        for name, (p, r, f, s) in zip(classes, rows, strict=True)
    ]


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C×C counts; row = actual class, column = predicted class (fastai's layout)."""
    flat = targets.to(torch.long) * num_classes + preds.to(torch.long)
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def top_losses(losses: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest per-sample losses and their indices, largest first."""
    k = max(0, min(k, losses.numel()))
    values, indices = torch.topk(losses.float(), k)
    return values, indices


def epoch_metrics(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    multi_label: bool,
    thresholds: float | Sequence[float] = 0.5,
) -> dict[str, float]:
    """The per-epoch validation metrics the epoch table and EpochEnded carry."""
    if multi_label:
        acc = accuracy_multi(logits, targets, thresholds)
        return {
            "accuracy_multi": acc,
            "error_rate": 1.0 - acc,
            "f1": f1_multi(logits, targets, thresholds),
        }
    acc = accuracy(logits, targets)
    return {"accuracy": acc, "error_rate": 1.0 - acc}
